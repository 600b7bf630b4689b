"""Tests for the circuit breaker on plain async callables: every trip rule, cancellation, interrupts, scale."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from flyte_patterns import (
    CircuitBreakerError,
    FanOutInputError,
    FanOutProgress,
    Outcome,
    OutcomeStatus,
    RollingWindow,
    TripRule,
    circuit_breaker,
    circuit_breaker_execute,
)

from .fanout_support import CountingIterator, LoopErrors, Probe, async_items, new_tasks

SUCCEEDED = OutcomeStatus.SUCCEEDED
FAILED = OutcomeStatus.FAILED
CANCELLED = OutcomeStatus.CANCELLED
NOT_STARTED = OutcomeStatus.NOT_STARTED


@pytest.fixture
async def loop_errors() -> AsyncIterator[LoopErrors]:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors = LoopErrors()
    loop.set_exception_handler(errors)
    yield errors
    errors.messages()
    loop.set_exception_handler(previous)


async def test_loop_errors_catches_lost_exception(loop_errors: LoopErrors) -> None:
    async def fail() -> None:
        raise ValueError("lost")

    task = asyncio.create_task(fail())
    await asyncio.sleep(0)
    del task

    # The check used by the cancellation tests below does see an exception that nobody retrieved.
    assert loop_errors.messages() == ["Task exception was never retrieved"]
    loop_errors.contexts.clear()


def statuses(outcomes: Any) -> list[str]:
    return [outcome.status.value for outcome in outcomes]


# ---------------------------------------------------------------- max_failures: the threshold is exact


async def test_fourth_failure_trips_max_failures_3() -> None:
    probe = Probe()
    errors = [OSError(i) for i in range(10)]

    async def task(i: int) -> int:
        async def body() -> int:
            raise errors[i]

        return await probe.run(i, body)

    result = await circuit_breaker(task, range(10), max_failures=3, concurrency=1)

    assert result.tripped
    assert result.trip is not None
    assert result.trip.rule is TripRule.MAX_FAILURES
    assert result.trip.index == 3
    assert result.trip.message == "4 failures exceeded max_failures=3"
    assert probe.started == [0, 1, 2, 3]
    assert statuses(result.outcomes) == ["failed"] * 4 + ["not_started"] * 6
    assert (result.succeeded, result.failed, result.cancelled, result.not_started) == (0, 4, 0, 6)
    assert result.input_exhausted


async def test_original_errors_survive_trip() -> None:
    errors = [OSError(i) for i in range(10)]

    async def task(i: int) -> int:
        raise errors[i]

    result = await circuit_breaker(task, range(10), max_failures=3, concurrency=1)

    for i in range(4):
        assert result.outcomes[i].error is errors[i]
    assert result.errors() == {i: errors[i] for i in range(4)}
    assert result.first_error is errors[0]


async def test_trip_error_chains_first_failure() -> None:
    errors = [OSError(i) for i in range(10)]

    async def task(i: int) -> int:
        raise errors[i]

    with pytest.raises(CircuitBreakerError) as caught:
        await circuit_breaker(task, range(10), max_failures=3, concurrency=1, raise_on_trip=True)

    assert caught.value.__cause__ is errors[0]
    assert caught.value.result.outcomes[3].error is errors[3]
    assert "4 failures exceeded max_failures=3" in str(caught.value)
    assert "6 not started" in str(caught.value)


async def test_last_item_failure_still_trips() -> None:
    async def task(i: int) -> int:
        raise OSError(i)

    result = await circuit_breaker(task, range(3), max_failures=2, concurrency=1)

    assert result.tripped
    assert statuses(result.outcomes) == ["failed"] * 3
    assert result.not_started == 0


async def test_failures_within_max_failures_do_not_trip() -> None:
    async def task(i: int) -> int:
        if i in (2, 5, 7):
            raise ValueError(i)
        return i

    result = await circuit_breaker(task, range(10), max_failures=3)

    assert not result.tripped
    assert result.trip is None
    assert result.failed == 3
    assert result.succeeded == 7


async def test_max_failures_zero_trips_on_first_failure() -> None:
    async def task(i: int) -> int:
        if i == 4:
            raise ValueError(i)
        return i

    result = await circuit_breaker(task, range(10), max_failures=0, concurrency=1)

    assert result.tripped
    assert statuses(result.outcomes) == ["succeeded"] * 4 + ["failed"] + ["not_started"] * 5
    assert result.values() == [0, 1, 2, 3, None, None, None, None, None, None]


async def test_no_rule_never_trips() -> None:
    async def task(i: int) -> int:
        raise ValueError(i)

    result = await circuit_breaker(task, range(50), concurrency=4)

    assert not result.tripped
    assert result.failed == 50


# ---------------------------------------------------------------- max_failure_ratio: a sensible denominator


async def test_ratio_one_early_failure_does_not_trip() -> None:
    async def task(i: int) -> int:
        if i == 0:
            raise ValueError(i)
        return i

    result = await circuit_breaker(task, range(10), max_failure_ratio=0.5, concurrency=1)

    assert not result.tripped
    assert result.failed == 1
    assert result.succeeded == 9


async def test_ratio_all_failing_trips() -> None:
    probe = Probe()

    async def task(i: int) -> int:
        async def body() -> int:
            raise ValueError(i)

        return await probe.run(i, body)

    result = await circuit_breaker(task, range(4), max_failure_ratio=0.5, concurrency=1)

    assert result.tripped
    assert result.trip is not None
    assert result.trip.rule is TripRule.MAX_FAILURE_RATIO
    # 3 failures of 4 items exceed half of them; 2 do not.
    assert result.trip.index == 2
    assert probe.started == [0, 1, 2]
    assert statuses(result.outcomes) == ["failed"] * 3 + ["not_started"]
    assert result.trip.message == "3 failures exceeded max_failure_ratio=0.5 of 4 items (2 allowed)"


@pytest.mark.parametrize(("failures", "tripped"), [(3, False), (4, True)])
async def test_ratio_is_taken_as_written(failures: int, tripped: bool) -> None:
    async def task(i: int) -> int:
        if i < failures:
            raise ValueError(i)
        return i

    # 0.3 * 10 is 3.0000000000000004 in floating point; the ratio as written allows exactly 3.
    result = await circuit_breaker(task, range(10), max_failure_ratio=0.3, concurrency=1)

    assert result.tripped is tripped


async def test_ratio_needs_count_for_generator() -> None:
    pulled = CountingIterator(iter(range(10)))
    calls: list[int] = []

    async def task(i: int) -> int:
        calls.append(i)
        return i

    with pytest.raises(TypeError, match=r"max_failure_ratio needs the number of items.*total="):
        await circuit_breaker(task, pulled, max_failure_ratio=0.5)

    assert calls == []
    assert pulled.pulled == 0


async def test_ratio_with_total_hint() -> None:
    async def task(i: int) -> int:
        if i == 0:
            raise ValueError(i)
        return i

    result = await circuit_breaker(task, (i for i in range(10)), max_failure_ratio=0.5, total=10, concurrency=1)

    assert not result.tripped
    assert result.failed == 1


async def test_ratio_hint_too_large_corrected_at_end() -> None:
    async def task(i: int) -> int:
        raise ValueError(i)

    # Four failures are below half of 100, but the input ends after four items, and 4 of 4 is over half.
    result = await circuit_breaker(task, (i for i in range(4)), max_failure_ratio=0.5, total=100, concurrency=1)

    assert result.tripped
    assert result.trip is not None
    assert result.trip.rule is TripRule.MAX_FAILURE_RATIO
    assert result.trip.index is None
    assert result.failed == 4


async def test_ratio_hint_too_small_uses_pulled_count() -> None:
    async def task(i: int) -> int:
        if i >= 6:
            raise ValueError(i)
        return i

    # Against the hint of 2 items, the first failure would exceed half. Against the 7 items pulled by then, it
    # does not, and neither do the three after it.
    result = await circuit_breaker(task, (i for i in range(10)), max_failure_ratio=0.5, total=2, concurrency=1)

    assert not result.tripped


async def test_total_disagreeing_with_len_rejected() -> None:
    async def task(i: int) -> int:
        return i

    with pytest.raises(ValueError, match=r"total=5 disagrees with len\(items\)=10"):
        await circuit_breaker(task, list(range(10)), total=5)


# ---------------------------------------------------------------- rolling window


async def test_rolling_window_trips_after_successes() -> None:
    async def task(i: int) -> int:
        if i >= 20:
            raise ConnectionError(i)
        return i

    window = RollingWindow(size=5, failure_rate=0.6)
    result = await circuit_breaker(task, range(100), rolling_window=window, concurrency=1)

    assert result.tripped
    assert result.trip is not None
    assert result.trip.rule is TripRule.ROLLING_WINDOW
    # Items 18..22 are the last five: 3 failures of 5 reach 0.6.
    assert result.trip.index == 22
    assert result.succeeded == 20
    assert result.failed == 3
    assert result.not_started == 77


async def test_rolling_window_ignores_scattered_failures() -> None:
    async def task(i: int) -> int:
        if i % 10 == 0:
            raise ConnectionError(i)
        return i

    window = RollingWindow(size=10, failure_rate=0.5)
    result = await circuit_breaker(task, range(100), rolling_window=window, concurrency=3)

    assert not result.tripped
    assert result.failed == 10


async def test_rolling_window_waits_for_min_completed() -> None:
    async def task(i: int) -> int:
        if i < 2:
            raise ConnectionError(i)
        return i

    # Two failures first: 100% of the window, but the rule waits for four completed items, and 2 of 4 is 0.5.
    window = RollingWindow(size=4, failure_rate=0.5, min_completed=4)
    result = await circuit_breaker(task, range(10), rolling_window=window, concurrency=1)

    assert result.trip is not None
    assert result.trip.rule is TripRule.ROLLING_WINDOW
    assert result.trip.index == 3
    assert statuses(result.outcomes[:4]) == ["failed", "failed", "succeeded", "succeeded"]


async def test_rolling_window_min_completed_below_size() -> None:
    async def task(i: int) -> int:
        if i < 3:
            raise ConnectionError(i)
        return i

    window = RollingWindow(size=100, failure_rate=1.0, min_completed=3)
    result = await circuit_breaker(task, range(10), rolling_window=window, concurrency=1)

    assert result.trip is not None
    assert result.trip.index == 2


async def test_first_rule_to_fire_is_reason() -> None:
    async def task(i: int) -> int:
        raise ValueError(i)

    both = await circuit_breaker(task, range(10), max_failures=0, max_failure_ratio=0.0, concurrency=1)
    ratio_first = await circuit_breaker(task, range(10), max_failures=5, max_failure_ratio=0.1, concurrency=1)

    assert both.trip is not None
    assert both.trip.rule is TripRule.MAX_FAILURES
    assert ratio_first.trip is not None
    assert ratio_first.trip.rule is TripRule.MAX_FAILURE_RATIO
    assert ratio_first.trip.index == 1


# ---------------------------------------------------------------- partial results keep their positions


@pytest.mark.parametrize("concurrency", [1, 3, 6])
async def test_partial_results_keep_positions(concurrency: int) -> None:
    async def task(i: int) -> int:
        # Later items finish first when several run at once.
        for _ in range(6 - i):
            await asyncio.sleep(0)
        if i % 2:
            raise KeyError(i)
        return i * 10

    result = await circuit_breaker(task, range(6), concurrency=concurrency)

    assert len(result.outcomes) == 6
    assert [outcome.index for outcome in result.outcomes] == [0, 1, 2, 3, 4, 5]
    assert result.values() == [0, None, 20, None, 40, None]
    assert result.values(default=-1) == [0, -1, 20, -1, 40, -1]
    for i in (1, 3, 5):
        error = result.outcomes[i].error
        assert isinstance(error, KeyError)
        assert error.args == (i,)
    assert result.outcomes[2] == Outcome(2, SUCCEEDED, 20)
    assert result.indices(FAILED) == [1, 3, 5]
    assert result.indices("succeeded") == [0, 2, 4]


async def test_execute_returns_none_for_failures() -> None:
    async def task(i: int) -> int:
        if i % 2:
            raise KeyError(i)
        return i * 10

    assert await circuit_breaker_execute(task, range(6), max_failures=3) == [0, None, 20, None, 40, None]


async def test_execute_trip_keeps_partial_results() -> None:
    async def task(i: int) -> int:
        if i >= 5:
            raise KeyError(i)
        return i * 10

    with pytest.raises(CircuitBreakerError) as caught:
        await circuit_breaker_execute(task, range(20), 2, concurrency=1)

    result = caught.value.result
    assert result.values()[:5] == [0, 10, 20, 30, 40]
    assert result.failed == 3
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.__cause__.args == (5,)


async def test_execute_empty_input() -> None:
    async def task(i: int) -> int:
        return i

    assert await circuit_breaker_execute(task, []) == []


async def test_empty_input_returns_empty_result() -> None:
    async def task(i: int) -> int:
        raise AssertionError("never called")

    result = await circuit_breaker(task, [], max_failures=0)

    assert result.total == 0
    assert not result.tripped
    assert result.input_exhausted


async def test_sync_callable_accepted() -> None:
    def double(i: int) -> int:
        if i == 3:
            raise ValueError(i)
        return i * 2

    result = await circuit_breaker(double, range(5))

    assert result.values() == [0, 2, 4, None, 8]


# ---------------------------------------------------------------- tripping cancels, awaits, keeps the first error


async def test_trip_cancels_and_awaits_running(loop_errors: LoopErrors) -> None:
    before = asyncio.all_tasks()
    probe = Probe()
    cleanup_done: list[int] = []

    async def task(i: int) -> int:
        async def body() -> int:
            if i == 0:
                await asyncio.sleep(0.01)
                raise OSError(i)
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                if i == 9:
                    await asyncio.sleep(0.3)
                    cleanup_done.append(i)
                raise
            return i

        return await probe.run(i, body)

    start = time.perf_counter()
    result = await circuit_breaker(task, range(10), max_failures=0, concurrency=10)
    elapsed = time.perf_counter() - start

    # About 0.01 s to the failure plus 0.3 s for item 9 to finish its cancellation; never the full second.
    assert 0.3 <= elapsed < 0.9
    assert cleanup_done == [9]
    assert sorted(probe.cancelled) == list(range(1, 10))
    assert new_tasks(before) == set()
    assert result.first_error is not None
    assert result.first_error.args == (0,)
    assert result.trip is not None
    assert result.trip.index == 0
    assert statuses(result.outcomes) == ["failed"] + ["cancelled"] * 9
    assert all(outcome.error is None for outcome in result.outcomes[1:])
    del result
    assert loop_errors.messages() == []


async def test_trip_raises_with_first_error_as_cause() -> None:
    first = OSError("first")

    async def task(i: int) -> int:
        if i == 0:
            await asyncio.sleep(0)
            raise first
        await asyncio.sleep(1)
        return i

    with pytest.raises(CircuitBreakerError) as caught:
        await circuit_breaker(task, range(10), max_failures=0, concurrency=10, raise_on_trip=True)

    assert caught.value.__cause__ is first


async def test_completed_items_keep_outcome_after_trip() -> None:
    release_failure = asyncio.Event()

    async def task(i: int) -> int:
        if i == 0:
            await release_failure.wait()
            raise OSError(i)
        if i == 1:
            release_failure.set()
            return 1
        await asyncio.Event().wait()
        return i

    result = await circuit_breaker(task, range(3), max_failures=0, concurrency=3)

    assert statuses(result.outcomes) == ["failed", "succeeded", "cancelled"]
    assert result.outcomes[1].value == 1


async def test_nothing_starts_after_trip() -> None:
    probe = Probe()

    async def task(i: int) -> int:
        async def body() -> int:
            for _ in range(i % 4):
                await asyncio.sleep(0)
            if i % 3 == 0:
                raise ValueError(i)
            return i

        return await probe.run(i, body)

    result = await circuit_breaker(task, range(200), max_failures=5, concurrency=4)

    assert result.trip is not None
    assert result.trip.index is not None
    trip_at = probe.log.index(("failed", result.trip.index))
    assert [entry for entry in probe.log[trip_at:] if entry[0] == "start"] == []
    assert result.failed == 6
    assert probe.max_running <= 4


async def test_item_cleanup_error_after_trip_is_cancelled() -> None:
    cleanup_error = RuntimeError("cleanup failed")

    async def task(i: int) -> int:
        if i == 0:
            await asyncio.sleep(0)
            raise OSError(i)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise cleanup_error from None
        return i

    result = await circuit_breaker(task, range(2), max_failures=0, concurrency=2)

    assert result.outcomes[1] == Outcome(1, CANCELLED, None, cleanup_error)
    assert result.failed == 1


# ---------------------------------------------------------------- cancelling the caller


@pytest.mark.parametrize("max_failures", [None, 0])
async def test_caller_cancel_cancels_items(loop_errors: LoopErrors, max_failures: int | None) -> None:
    before = asyncio.all_tasks()
    probe = Probe()
    all_started = asyncio.Event()

    async def task(i: int) -> int:
        async def body() -> int:
            if len(probe.started) == 5:
                all_started.set()
            await asyncio.sleep(1)
            return i

        return await probe.run(i, body)

    fan = asyncio.create_task(circuit_breaker(task, range(5), concurrency=5, max_failures=max_failures))
    await all_started.wait()
    fan.cancel()

    with pytest.raises(asyncio.CancelledError):
        await fan

    assert probe.completed == []
    assert sorted(probe.cancelled) == [0, 1, 2, 3, 4]
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []


async def test_caller_cancel_waits_for_slow_cleanup() -> None:
    started = asyncio.Event()
    cleaned: list[int] = []

    async def task(i: int) -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)
            cleaned.append(i)
            raise
        return i

    fan = asyncio.create_task(circuit_breaker(task, range(3), concurrency=3))
    await started.wait()
    fan.cancel()
    await asyncio.sleep(0)
    # A second cancel while the items clean up changes nothing.
    fan.cancel()

    with pytest.raises(asyncio.CancelledError):
        await fan
    assert sorted(cleaned) == [0, 1, 2]


async def test_caller_cancel_during_trip_cleanup() -> None:
    tripped = asyncio.Event()
    cleaned: list[int] = []

    async def task(i: int) -> int:
        if i == 0:
            await asyncio.sleep(0)
            raise OSError(i)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            tripped.set()
            await asyncio.sleep(0.05)
            cleaned.append(i)
            raise
        return i

    fan = asyncio.create_task(circuit_breaker(task, range(2), concurrency=2, max_failures=0))
    await tripped.wait()
    fan.cancel()

    with pytest.raises(asyncio.CancelledError):
        await fan
    assert cleaned == [1]


async def test_wait_for_timeout_cancels_items() -> None:
    probe = Probe()

    async def task(i: int) -> int:
        async def body() -> int:
            await asyncio.sleep(1)
            return i

        return await probe.run(i, body)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(circuit_breaker(task, range(4), concurrency=2), 0.05)

    assert probe.completed == []
    assert sorted(probe.cancelled) == [0, 1]


# ---------------------------------------------------------------- interrupts and item cancellations


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
async def test_interrupt_stops_everything(loop_errors: LoopErrors, interrupt: type[BaseException]) -> None:
    before = asyncio.all_tasks()
    probe = Probe()
    others_started = asyncio.Event()

    async def task(i: int) -> int:
        async def body() -> int:
            if i == 0:
                await others_started.wait()
                raise interrupt()
            if len(probe.started) == 4:
                others_started.set()
            await asyncio.sleep(1)
            return i

        return await probe.run(i, body)

    with pytest.raises(interrupt):
        await circuit_breaker(task, range(10), concurrency=4, max_failures=0)

    assert sorted(probe.cancelled) == [1, 2, 3]
    assert probe.failed == []
    assert len(probe.started) == 4
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []


def test_interrupt_during_cancel_outranks_it() -> None:
    cancelled_items: list[int] = []

    async def task(i: int) -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled_items.append(i)
            if i == 0:
                raise KeyboardInterrupt from None
            raise
        return i

    async def scenario() -> None:
        started = asyncio.Event()

        async def first_started(i: int) -> int:
            started.set()
            return await task(i)

        fan = asyncio.create_task(circuit_breaker(first_started, range(2), concurrency=2))
        await started.wait()
        await asyncio.sleep(0)
        fan.cancel()
        await fan

    # A KeyboardInterrupt raised in a task leaves the event loop at once, as asyncio does for any task, so this
    # test runs its own loop rather than the test's.
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(scenario())
    assert sorted(cancelled_items) == [0, 1]


async def test_item_own_cancellation_is_not_failure(caplog: pytest.LogCaptureFixture) -> None:
    own = asyncio.CancelledError("the item's own")

    async def task(i: int) -> int:
        if i == 1:
            raise own
        return i

    with caplog.at_level(logging.WARNING, logger="flyte_patterns.circuit_breaker"):
        result = await circuit_breaker(task, range(4), max_failures=0, concurrency=1)

    assert not result.tripped
    assert statuses(result.outcomes) == ["succeeded", "cancelled", "succeeded", "succeeded"]
    assert result.outcomes[1].error is own
    assert "item 1 raised CancelledError" in caplog.text


# ---------------------------------------------------------------- lazy input and the concurrency bound


async def test_generator_pulled_lazily() -> None:
    source = CountingIterator(iter(range(1000)))
    pulled_at_first_call: list[int] = []

    async def task(i: int) -> int:
        if not pulled_at_first_call:
            pulled_at_first_call.append(source.pulled)
        await asyncio.sleep(0)
        return i

    result = await circuit_breaker(task, source, concurrency=8)

    assert pulled_at_first_call[0] <= 8
    assert result.succeeded == 1000


async def test_pulled_never_ahead_of_concurrency() -> None:
    source = CountingIterator(iter(range(300)))
    finished = 0
    ahead: list[int] = []

    async def task(i: int) -> int:
        nonlocal finished
        ahead.append(source.pulled - finished)
        for _ in range(i % 5):
            await asyncio.sleep(0)
        finished += 1
        return i

    await circuit_breaker(task, source, concurrency=7)

    assert max(ahead) <= 7


@pytest.mark.parametrize("concurrency", [1, 2, 5, 16])
async def test_concurrency_never_exceeded(concurrency: int) -> None:
    probe = Probe()

    async def task(i: int) -> int:
        async def body() -> int:
            for _ in range((i * 7) % 5):
                await asyncio.sleep(0)
            return i

        return await probe.run(i, body)

    result = await circuit_breaker(task, range(100), concurrency=concurrency)

    assert probe.max_running == concurrency
    assert result.values() == list(range(100))


async def test_sliding_window_refills_immediately() -> None:
    slow_release = asyncio.Event()
    started: list[int] = []

    async def task(i: int) -> int:
        started.append(i)
        if i == 0:
            await slow_release.wait()
        else:
            await asyncio.sleep(0)
        if len(started) == 10:
            slow_release.set()
        return i

    # With two slots and item 0 held, the other slot runs items 1..9 one after another.
    result = await circuit_breaker(task, range(10), concurrency=2)

    assert started == list(range(10))
    assert result.succeeded == 10


async def test_infinite_generator_left_where_it_stopped() -> None:
    def naturals() -> Iterator[int]:
        n = 0
        while True:
            yield n
            n += 1

    source = naturals()

    async def task(i: int) -> int:
        if i == 5:
            raise ValueError(i)
        return i

    result = await circuit_breaker(task, source, max_failures=0, concurrency=1)

    assert result.tripped
    assert not result.input_exhausted
    assert result.total == 6
    assert next(source) == 6


async def test_drain_true_counts_generator_rest() -> None:
    async def task(i: int) -> int:
        raise ValueError(i)

    result = await circuit_breaker(task, (i for i in range(10)), max_failures=0, concurrency=1, drain=True)

    assert result.input_exhausted
    assert result.not_started == 9
    assert statuses(result.outcomes) == ["failed"] + ["not_started"] * 9


async def test_drain_false_leaves_list_rest() -> None:
    async def task(i: int) -> int:
        raise ValueError(i)

    result = await circuit_breaker(task, list(range(10)), max_failures=0, concurrency=1, drain=False)

    assert not result.input_exhausted
    assert result.total == 1


async def test_sized_input_counted_without_reading() -> None:
    async def task(i: int) -> int:
        raise ValueError(i)

    # Reading a trillion items would never finish; len() gives the count at once.
    result = await circuit_breaker(task, range(10**12), max_failures=0, concurrency=1)

    assert result.not_started == 10**12 - 1
    assert result.outcomes[-1] == Outcome(10**12 - 1, NOT_STARTED)
    assert result.input_exhausted


async def test_async_iterable_input() -> None:
    probe = Probe()
    pulled: list[int] = []

    async def task(i: int) -> int:
        async def body() -> int:
            for _ in range(i % 3):
                await asyncio.sleep(0)
            if i == 7:
                raise ValueError(i)
            return i * 2

        return await probe.run(i, body)

    result = await circuit_breaker(task, async_items(list(range(20)), pulled=pulled), concurrency=4)

    assert result.values() == [i * 2 if i != 7 else None for i in range(20)]
    assert probe.max_running <= 4
    assert pulled == list(range(20))


async def test_async_iterable_trip_leaves_rest() -> None:
    pulled: list[int] = []

    async def task(i: int) -> int:
        raise ValueError(i)

    source = async_items(list(range(10)), pulled=pulled)
    result = await circuit_breaker(task, source, max_failures=1, concurrency=1)

    assert result.tripped
    assert not result.input_exhausted
    assert result.total == 2
    assert [item async for item in source] == list(range(2, 10))


# ---------------------------------------------------------------- errors raised by the input itself


async def test_input_error_is_not_item_failure() -> None:
    broken = ValueError("bad record")
    probe = Probe()

    def records() -> Iterator[int]:
        yield from range(3)
        raise broken

    async def task(i: int) -> int:
        async def body() -> int:
            await asyncio.sleep(0)
            return i

        return await probe.run(i, body)

    with pytest.raises(FanOutInputError) as caught:
        await circuit_breaker(task, records(), max_failures=0, concurrency=1)

    assert caught.value.__cause__ is broken
    assert caught.value.result.failed == 0
    assert caught.value.result.values() == [0, 1, 2]
    assert not caught.value.result.input_exhausted


async def test_input_error_cancels_running_items() -> None:
    cancelled: list[int] = []

    async def records() -> AsyncIterator[int]:
        yield 0
        await asyncio.sleep(0.01)
        raise ValueError("feed broke")

    async def task(i: int) -> int:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    with pytest.raises(FanOutInputError) as caught:
        await circuit_breaker(task, records(), concurrency=2)

    assert cancelled == [0]
    assert caught.value.result.cancelled == 1


async def test_input_interrupt_propagates() -> None:
    def records() -> Iterator[int]:
        yield 0
        raise KeyboardInterrupt

    async def task(i: int) -> int:
        return i

    with pytest.raises(KeyboardInterrupt):
        await circuit_breaker(task, records(), concurrency=1)


# ---------------------------------------------------------------- progress hook


async def test_progress_hook_sees_every_completion() -> None:
    events: list[FanOutProgress] = []

    async def task(i: int) -> int:
        if i == 2:
            raise ValueError(i)
        return i

    await circuit_breaker(task, range(5), on_progress=events.append, concurrency=1)

    assert [event.index for event in events] == [0, 1, 2, 3, 4]
    assert [event.status for event in events] == [SUCCEEDED, SUCCEEDED, FAILED, SUCCEEDED, SUCCEEDED]
    assert (events[-1].succeeded, events[-1].failed, events[-1].started, events[-1].total) == (4, 1, 5, 5)
    assert isinstance(events[2].error, ValueError)


async def test_failing_hook_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def hook(event: FanOutProgress) -> None:
        raise RuntimeError("hook broke")

    async def task(i: int) -> int:
        return i

    with caplog.at_level(logging.ERROR, logger="flyte_patterns.circuit_breaker"):
        result = await circuit_breaker(task, range(3), on_progress=hook)

    assert result.values() == [0, 1, 2]
    assert caplog.text.count("on_progress raised;") == 1
    assert "on_progress raised 3 times in total" in caplog.text


async def test_trip_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def task(i: int) -> int:
        raise ValueError(i)

    with caplog.at_level(logging.WARNING, logger="flyte_patterns.circuit_breaker"):
        await circuit_breaker(task, range(3), max_failures=0, group_name="orders")

    assert "orders tripped: 1 failure exceeded max_failures=0" in caplog.text


# ---------------------------------------------------------------- bad arguments


async def _never_called(i: int) -> int:
    raise AssertionError("the task must not run")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"max_failures": -1}, ValueError, "max_failures must be an int >= 0, got -1"),
        ({"max_failures": True}, TypeError, r"max_failures must be an int >= 0, got True \(bool\)"),
        ({"max_failures": 1.5}, TypeError, "max_failures"),
        ({"max_failures": "3"}, TypeError, "max_failures"),
        ({"max_failure_ratio": -0.1}, ValueError, "max_failure_ratio must be a number from 0 to 1, got -0.1"),
        ({"max_failure_ratio": 1.5}, ValueError, "max_failure_ratio"),
        ({"max_failure_ratio": math.nan}, ValueError, "max_failure_ratio"),
        ({"max_failure_ratio": True}, TypeError, "max_failure_ratio"),
        ({"concurrency": 0}, ValueError, "concurrency must be an int >= 1, got 0"),
        ({"concurrency": -3}, ValueError, "concurrency"),
        ({"concurrency": True}, TypeError, "concurrency"),
        ({"concurrency": 2.0}, TypeError, "concurrency"),
        ({"total": -1}, ValueError, "total"),
        ({"total": True}, TypeError, "total"),
        ({"drain": "yes"}, TypeError, "drain"),
        ({"rolling_window": 5}, TypeError, "rolling_window must be a RollingWindow"),
        ({"raise_on_trip": 1}, TypeError, "raise_on_trip"),
        ({"on_progress": 3}, TypeError, "on_progress"),
        ({"group_name": ""}, ValueError, "group_name"),
        ({"group_name": 7}, TypeError, "group_name"),
    ],
)
async def test_bad_argument_rejected(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    source = CountingIterator(iter(range(5)))

    with pytest.raises(error, match=pattern):
        await circuit_breaker(_never_called, source, **kwargs)

    assert source.pulled == 0


@pytest.mark.parametrize(
    ("arguments", "error", "pattern"),
    [
        ((0, 0.5), ValueError, "RollingWindow size must be an int >= 1, got 0"),
        ((True, 0.5), TypeError, "RollingWindow size"),
        ((5, 0), ValueError, "RollingWindow failure_rate must be above 0"),
        ((5, 1.5), ValueError, "RollingWindow failure_rate"),
        ((5, 0.5, 0), ValueError, "RollingWindow min_completed"),
    ],
)
def test_bad_rolling_window_rejected(arguments: tuple[Any, ...], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        RollingWindow(*arguments)


async def test_coroutine_object_task_rejected() -> None:
    coroutine = _never_called(1)

    with pytest.raises(TypeError, match="coroutine object"):
        await circuit_breaker(coroutine, range(3))  # type: ignore[call-overload]


@pytest.mark.parametrize("items", [42, None, 3.5])
async def test_non_iterable_items_rejected(items: object) -> None:
    with pytest.raises(TypeError, match="items must be an iterable or an async iterable"):
        await circuit_breaker(_never_called, items)  # type: ignore[call-overload]


async def test_non_callable_task_rejected() -> None:
    with pytest.raises(TypeError, match="task must be a task or an async callable, got 42"):
        await circuit_breaker(42, range(3))  # type: ignore[call-overload]
