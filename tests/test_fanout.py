"""Tests for the fan-out engine itself: its contract for patterns, its result types, and property tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import flyte
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from flyte_patterns import FanOutResult, Outcome, OutcomeStatus, RollingWindow, TripRule
from flyte_patterns._fanout import DEFAULT_CONCURRENCY, TripPolicy, fan_out

from .fanout_support import Probe, async_items, new_tasks

# ---------------------------------------------------------------- the engine's contract


async def test_fan_out_runs_every_item_in_order() -> None:
    async def call(batch: list[int]) -> int:
        await asyncio.sleep(0)
        return sum(batch)

    batches = ([i, i + 1] for i in range(0, 10, 2))
    result = await fan_out(call, batches, concurrency=2)

    assert result.values() == [1, 5, 9, 13, 17]
    assert result.input_exhausted


async def test_fan_out_defaults() -> None:
    async def call(i: int) -> int:
        return i

    result = await fan_out(call, range(3))

    assert DEFAULT_CONCURRENCY == 32
    assert not result.tripped
    assert result.values() == [0, 1, 2]


async def test_fan_out_creates_no_more_workers_than_items() -> None:
    before = asyncio.all_tasks()
    seen: list[int] = []

    async def call(i: int) -> int:
        seen.append(len(asyncio.all_tasks() - before))
        await asyncio.sleep(0)
        return i

    await fan_out(call, [1, 2, 3], concurrency=100)

    assert max(seen) == 3


async def test_fan_out_policy_rules() -> None:
    async def call(i: int) -> int:
        raise ValueError(i)

    result = await fan_out(call, range(10), concurrency=1, policy=TripPolicy(max_failures=1))

    assert result.trip is not None
    assert result.trip.rule is TripRule.MAX_FAILURES
    assert result.trip.failed == 2


async def test_fan_out_group_outside_task_is_harmless() -> None:
    contexts: list[bool] = []

    def call(i: int) -> int:
        contexts.append(bool(flyte.ctx()))
        return i

    result = await fan_out(call, range(3), group_name="outside")

    assert result.values() == [0, 1, 2]
    assert contexts == [False, False, False]


async def test_fan_out_rejects_bad_policy() -> None:
    async def call(i: int) -> int:
        return i

    with pytest.raises(TypeError, match="policy must be a TripPolicy"):
        await fan_out(call, range(3), policy={"max_failures": 1})  # type: ignore[call-overload]


async def test_item_pulled_after_trip_not_started() -> None:
    second_pull_waiting = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        yield 0
        second_pull_waiting.set()
        # The trip cancels the worker waiting here. This generator swallows the cancellation and yields anyway,
        # so the worker receives an item after the trip.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        yield 1

    async def call(i: int) -> int:
        await second_pull_waiting.wait()
        raise ValueError(i)

    result = await fan_out(call, source(), concurrency=2, policy=TripPolicy(max_failures=0))

    assert [o.status for o in result.outcomes] == [OutcomeStatus.FAILED, OutcomeStatus.NOT_STARTED]
    assert result.not_started == 1


async def test_fan_out_input_cancelled_error_propagates() -> None:
    async def source() -> AsyncIterator[int]:
        yield 0
        raise asyncio.CancelledError("the input's own")

    async def call(i: int) -> int:
        return i

    with pytest.raises(asyncio.CancelledError):
        await fan_out(call, source(), concurrency=1)


async def test_progress_hook_interrupt_stops_everything() -> None:
    def hook(event: Any) -> None:
        raise KeyboardInterrupt

    async def call(i: int) -> int:
        await asyncio.sleep(0)
        return i

    with pytest.raises(KeyboardInterrupt):
        await fan_out(call, range(10), concurrency=2, on_progress=hook)


# ---------------------------------------------------------------- result types


async def test_outcomes_sequence_access() -> None:
    async def call(i: int) -> int:
        if i == 1:
            raise KeyError(i)
        return i

    result = await fan_out(call, range(4), concurrency=1, policy=TripPolicy(max_failures=0))
    outcomes = result.outcomes

    assert len(outcomes) == 4
    assert outcomes[-1] == Outcome(3, OutcomeStatus.NOT_STARTED)
    assert outcomes[0:2] == [Outcome(0, OutcomeStatus.SUCCEEDED, 0), outcomes[1]]
    assert outcomes[1].status is OutcomeStatus.FAILED
    with pytest.raises(IndexError, match="outcome index 4 out of range for 4 items"):
        outcomes[4]
    assert list(outcomes) == [outcomes[i] for i in range(4)]
    assert result.total == 4
    assert str(OutcomeStatus.NOT_STARTED) == "not_started"


async def test_result_repr_is_short() -> None:
    async def call(i: int) -> int:
        return i

    result = await fan_out(call, range(100_000))

    assert len(repr(result)) < 300
    assert "succeeded=100000" in repr(result)


def test_result_helpers_on_plain_outcome_list() -> None:
    error = KeyError(1)
    result: FanOutResult[int] = FanOutResult(
        outcomes=[Outcome(0, OutcomeStatus.SUCCEEDED, 5), Outcome(1, OutcomeStatus.FAILED, error=error)],
        succeeded=1,
        failed=1,
        cancelled=0,
        not_started=0,
        trip=None,
        input_exhausted=True,
        first_failure_index=1,
    )

    assert result.values() == [5, None]
    assert result.values(default=0) == [5, 0]
    assert result.errors() == {1: error}
    assert result.indices(OutcomeStatus.SUCCEEDED) == [0]
    assert result.first_error is error


# ---------------------------------------------------------------- property tests


@dataclass(frozen=True)
class Rules:
    max_failures: int | None
    max_failure_ratio: float | None
    window: RollingWindow | None


def _first_trip(completions: Iterable[tuple[int, bool]], items: int, rules: Rules) -> tuple[TripRule, int] | None:
    """Replay completions through the documented rules and return where the first one fires."""
    failures = 0
    recent: deque[bool] = deque(maxlen=rules.window.size if rules.window else 1)
    for completed, (index, failed) in enumerate(completions, start=1):
        failures += failed
        recent.append(failed)
        if failed and rules.max_failures is not None and failures > rules.max_failures:
            return TripRule.MAX_FAILURES, index
        ratio = rules.max_failure_ratio
        if failed and ratio is not None and failures > Fraction(repr(ratio)) * items:
            return TripRule.MAX_FAILURE_RATIO, index
        window = rules.window
        if (
            window is not None
            and completed >= window.effective_min_completed
            and Fraction(sum(recent), len(recent)) >= Fraction(repr(window.failure_rate))
        ):
            return TripRule.ROLLING_WINDOW, index
    return None


windows = st.none() | st.builds(
    RollingWindow,
    size=st.integers(1, 6),
    failure_rate=st.sampled_from([0.2, 0.5, 0.75, 1.0]),
    min_completed=st.none() | st.integers(1, 8),
)
rules_strategy = st.builds(
    Rules,
    max_failures=st.none() | st.integers(0, 6),
    max_failure_ratio=st.none() | st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 1.0]),
    window=windows,
)
schedules = st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=30)


@settings(deadline=None, max_examples=300)
@given(
    schedule=schedules,
    rules=rules_strategy,
    concurrency=st.integers(1, 6),
    source_kind=st.sampled_from(["list", "generator", "async"]),
)
def test_fan_out_properties(schedule: list[tuple[bool, int]], rules: Rules, concurrency: int, source_kind: str) -> None:
    """Every item is accounted for once, in input order; trips are exact; nothing starts after a trip."""
    errors = [ValueError(i) for i in range(len(schedule))]
    probe = Probe()

    async def call(i: int) -> int:
        async def body() -> int:
            fails, steps = schedule[i]
            for _ in range(steps):
                await asyncio.sleep(0)
            if fails:
                raise errors[i]
            return i * 2

        return await probe.run(i, body)

    async def scenario() -> FanOutResult[int]:
        items: Any = list(range(len(schedule)))
        if source_kind == "generator":
            items = iter(items)
        elif source_kind == "async":
            items = async_items(items)
        policy = TripPolicy(rules.max_failures, rules.max_failure_ratio, rules.window)
        total = len(schedule) if source_kind != "list" else None
        before = asyncio.all_tasks()
        result = await fan_out(call, items, concurrency=concurrency, policy=policy, total=total)
        assert new_tasks(before) == set()
        return result

    result = asyncio.run(scenario())
    outcomes = list(result.outcomes)
    event(f"tripped by {result.trip.rule.value}" if result.trip else "not tripped")

    # Accounted for once each, in input order.
    assert [outcome.index for outcome in outcomes] == list(range(len(outcomes)))
    if source_kind == "list" or not result.tripped:
        assert len(outcomes) == len(schedule)
    assert result.succeeded + result.failed + result.cancelled + result.not_started == len(outcomes)
    for outcome in outcomes:
        if outcome.status is OutcomeStatus.SUCCEEDED:
            assert outcome.value == outcome.index * 2
        elif outcome.status is OutcomeStatus.FAILED:
            assert outcome.error is errors[outcome.index]
    assert sorted(probe.started) == [o.index for o in outcomes if o.status is not OutcomeStatus.NOT_STARTED]
    assert sorted(probe.cancelled) == [o.index for o in outcomes if o.status is OutcomeStatus.CANCELLED]

    # The bound holds.
    assert probe.max_running <= concurrency

    # The trip fires exactly where the documented rules put it, given the order in which items completed.
    completions = [(index, kind == "failed") for kind, index in probe.log if kind in ("succeeded", "failed")]
    expected = _first_trip(completions, len(schedule), rules)
    if expected is None:
        assert result.trip is None
    else:
        assert result.trip is not None
        assert (result.trip.rule, result.trip.index) == expected
        # Nothing started, and nothing else completed, after the completion that tripped it.
        kind = "failed" if schedule[expected[1]][0] else "succeeded"
        after_trip = probe.log[probe.log.index((kind, expected[1])) + 1 :]
        assert all(entry[0] == "cancelled" for entry in after_trip)
