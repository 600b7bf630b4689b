"""Property tests of the circuit breaker over random schedules, against an oracle written from its documentation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

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


@pytest.mark.parametrize("drain", [None, True])
async def test_cut_short_pull_leaves_input_unaccounted(drain: bool | None, caplog: pytest.LogCaptureFixture) -> None:
    # Item 0 fails while the second worker waits for the input to produce item 1. The trip cancels that wait,
    # which closes the async generator, so the rest of the input cannot be read or counted any more.
    producing = asyncio.Event()

    class Numbers:
        """An async collection without len(), whose every iteration is a new async generator."""

        async def numbers(self) -> AsyncIterator[int]:
            yield 0
            producing.set()
            await asyncio.Event().wait()
            for i in range(1, 5):
                yield i

        def __aiter__(self) -> AsyncIterator[int]:
            return self.numbers()

    async def fail_first(i: int) -> int:
        await producing.wait()
        raise ValueError(i)

    with caplog.at_level(logging.WARNING, logger="flyte_patterns.circuit_breaker"):
        result = await circuit_breaker(fail_first, Numbers(), max_failures=0, concurrency=2, drain=drain)

    assert result.tripped
    assert [outcome.status.value for outcome in result.outcomes] == ["failed"]
    assert not result.input_exhausted
    assert "cancelled a pull from the async input" in caplog.text
