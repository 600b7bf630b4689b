"""Property tests of the circuit breaker over random schedules, against an oracle written from its documentation."""

from __future__ import annotations

import asyncio

from flyte_patterns import TripRule, circuit_breaker

# ---------------------------------------------------------------- cases the property test found


async def test_ratio_uses_exact_count_after_small_hint() -> None:
    # Ten items and a hint of two. Once the input has ended, the ratio 0.5 allows 5 failures of 10, not 1 of 2.
    all_started = asyncio.Event()
    started: list[int] = []

    async def fail(i: int) -> int:
        started.append(i)
        if len(started) == 10:
            all_started.set()
        await all_started.wait()
        raise ValueError(i)

    result = await circuit_breaker(fail, (i for i in range(10)), max_failure_ratio=0.5, total=2, concurrency=10)

    assert result.trip is not None
    assert result.trip.rule is TripRule.MAX_FAILURE_RATIO
    assert result.trip.message == "6 failures exceeded max_failure_ratio=0.5 of 10 items (5 allowed)"
    assert result.failed == 6
    assert result.cancelled == 4
    assert result.input_exhausted
