"""Tests for batch_map and map_reduce on plain callables: batching, ordering, isolation, stopping, cancellation."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import flyte
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flyte_patterns import (
    BatchError,
    BatchLengthError,
    BatchProgress,
    BatchResult,
    BatchSpan,
    BatchWarning,
    FanOutInputError,
    OutcomeStatus,
    ReduceError,
    RollingWindow,
    TripRule,
    auto_batch_size,
    batch_map,
    map_reduce,
)
from flyte_patterns._batch import MAX_AUTO_BATCH_SIZE, UNSIZED_BATCH_SIZE, progress_bar_default

from .fanout_support import CountingIterator, LoopErrors, async_items, new_tasks

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


class Recorder:
    """A batch task that records every batch it was called with and returns each item doubled."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def __call__(self, batch: list[int]) -> list[int]:
        self.calls.append(list(batch))
        await asyncio.sleep(0)
        return [item * 2 for item in batch]


def add_sums(total: int, results: list[int]) -> int:
    return total + sum(results)


def statuses(result: Any) -> list[str]:
    return [outcome.status.value for outcome in result.outcomes]


async def with_timeout(coroutine: Any) -> Any:
    """Await ``coroutine``, failing the test instead of hanging if an ordering the test relies on never happens."""
    return await asyncio.wait_for(coroutine, 5)


# ---------------------------------------------------------------- bad arguments, before any call


BAD_ARGUMENTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
    ({"batch_size": -1}, ValueError, "batch_size must be an int >= 1, got -1"),
    ({"batch_size": True}, TypeError, "batch_size must be an int >= 1, got True (bool)"),
    ({"batch_size": 1.5}, TypeError, "batch_size must be an int >= 1, got 1.5 (float)"),
    ({"concurrency": 0}, ValueError, "concurrency must be an int >= 1, got 0"),
    ({"concurrency": -2}, ValueError, "concurrency must be an int >= 1, got -2"),
    ({"concurrency": True}, TypeError, "concurrency must be an int >= 1, got True (bool)"),
    ({"concurrency": 2.0}, TypeError, "concurrency must be an int >= 1, got 2.0 (float)"),
    ({"max_batch_weight": 10}, TypeError, "max_batch_weight needs weight"),
    ({"weight": float}, TypeError, "weight needs max_batch_weight"),
    ({"weight": float, "max_batch_weight": 0}, ValueError, "max_batch_weight must be a positive, finite number"),
    ({"weight": float, "max_batch_weight": float("inf")}, ValueError, "max_batch_weight must be a positive"),
    ({"weight": float, "max_batch_weight": True}, TypeError, "max_batch_weight must be a positive number, got True"),
    ({"weight": 3, "max_batch_weight": 5}, TypeError, "weight must be a function of one item"),
    ({"max_wait": 0}, ValueError, "max_wait must be a positive, finite duration, got 0"),
    ({"max_wait": "1s"}, TypeError, "max_wait must be a number of seconds or a timedelta"),
    ({"total": -1}, ValueError, "total must be an int >= 0, got -1"),
    ({"total": 3}, ValueError, "total=3 disagrees with len(items)=10"),
    ({"max_failures": -1}, ValueError, "max_failures must be an int >= 0, got -1"),
    ({"max_failure_ratio": 1.5}, ValueError, "max_failure_ratio must be a number from 0 to 1, got 1.5"),
    ({"rolling_window": 5}, TypeError, "rolling_window must be a RollingWindow"),
    ({"on_progress": 5}, TypeError, "on_progress must be a synchronous function or None, got 5"),
    ({"batch_size": 10**20}, ValueError, "batch_size must be an int <= 9223372036854775807, got 100000000000000000000"),
    ({"progress_bar": 1}, TypeError, "progress_bar must be True, False or None, got 1 (int)"),
    ({"group_name": ""}, ValueError, "group_name must not be empty"),
    ({"group_name": 3}, TypeError, "group_name must be a string or None, got 3 (int)"),
    (
        {"weight": float, "max_batch_weight": 5, "max_failure_ratio": 0.5},
        TypeError,
        "max_failure_ratio needs the number of batches, which is unknown because batches are bounded by weight",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS)
async def test_batch_map_bad_argument_rejected(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    task = Recorder()
    source = CountingIterator(iter(range(10)))

    with pytest.raises(error, match=re.escape(message)):
        await batch_map(task, _Sized(source, 10), **kwargs)

    assert task.calls == []
    assert source.pulled == 0


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS)
async def test_map_reduce_bad_argument_rejected(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    task = Recorder()
    source = CountingIterator(iter(range(10)))

    with pytest.raises(error, match=re.escape(message)):
        await map_reduce(task, _Sized(source, 10), reduce=lambda a, b: a, initial=0, **kwargs)

    assert task.calls == []
    assert source.pulled == 0


class _Sized(Iterator[int]):
    """A one-shot iterator that also has ``len()``, to test checks that need a length without reading items."""

    def __init__(self, items: Iterator[int], length: int) -> None:
        self._items = items
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> _Sized:
        return self

    def __next__(self) -> int:
        return next(self._items)


async def test_return_result_must_be_bool() -> None:
    task = Recorder()

    with pytest.raises(TypeError, match=re.escape("return_result must be True or False, got 1 (int)")):
        await batch_map(task, range(3), return_result=1)  # type: ignore[call-overload]

    assert task.calls == []


async def test_coroutine_object_task_rejected() -> None:
    task = Recorder()
    coroutine = task([1])

    with pytest.raises(TypeError, match="got a coroutine object"):
        await batch_map(coroutine, range(3))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="got a coroutine object"):
        await map_reduce(task([1]), range(3), reduce=max, initial=0)  # type: ignore[call-overload]

    assert task.calls == []


async def test_non_callable_reduce_and_combine_rejected() -> None:
    task = Recorder()

    with pytest.raises(TypeError, match=re.escape("reduce must be a task or an async callable, got 0 (int)")):
        await map_reduce(task, range(3), reduce=0, initial=0)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=re.escape("combine must be a task or an async callable, got 'sum' (str)")):
        await map_reduce(task, range(3), reduce=max, initial=0, combine="sum")  # type: ignore[call-overload]

    assert task.calls == []


@pytest.mark.parametrize("items", [3, None, object()])
async def test_non_iterable_items_rejected(items: object) -> None:
    with pytest.raises(TypeError, match="items must be an iterable or an async iterable"):
        await batch_map(Recorder(), items)  # type: ignore[call-overload]


async def test_ratio_needs_count_of_generator() -> None:
    task = Recorder()

    with pytest.raises(TypeError, match=re.escape("pass total=<number of items>")):
        await batch_map(task, (i for i in range(10)), max_failure_ratio=0.5)

    assert task.calls == []


# ---------------------------------------------------------------- batches: the last partial batch, empty input


@pytest.mark.parametrize("kind", ["range", "generator", "async generator"])
async def test_last_partial_batch_processed(kind: str) -> None:
    task = Recorder()
    items: Any = range(7)
    if kind == "generator":
        items = (i for i in range(7))
    elif kind == "async generator":
        items = async_items(list(range(7)))

    values = await batch_map(task, items, batch_size=3)

    assert task.calls == [[0, 1, 2], [3, 4, 5], [6]]
    assert values == [0, 2, 4, 6, 8, 10, 12]


async def test_exact_multiple_gives_full_batches_only() -> None:
    task = Recorder()

    values = await batch_map(task, range(6), batch_size=3)

    assert task.calls == [[0, 1, 2], [3, 4, 5]]
    assert values == [0, 2, 4, 6, 8, 10]


@pytest.mark.parametrize("kind", ["list", "generator", "async generator"])
async def test_empty_input_calls_nothing(kind: str) -> None:
    task = Recorder()
    reduced: list[int] = []

    def reduce(text: str, value: int) -> str:
        reduced.append(value)
        return text + str(value)

    items: Any = []
    if kind == "generator":
        items = iter([])
    elif kind == "async generator":
        items = async_items([])

    assert await batch_map(task, items, batch_size=3) == []
    result = await batch_map(task, [], return_result=True)
    total = await map_reduce(task, [], reduce=reduce, initial="initial", combine=sum)

    assert task.calls == []
    assert reduced == []
    assert total == "initial"
    assert result.total == 0
    assert result.batches.total == 0


# ---------------------------------------------------------------- results in input order


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("concurrency", [1, 3, 6])
async def test_results_in_input_order(batch_size: int, concurrency: int) -> None:
    finished: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        # Item i sleeps (6 - i) * 10 ms, so later items finish first when they run side by side.
        for item in batch:
            await asyncio.sleep((6 - item) * 0.01)
        finished.append(batch[0])
        return list(batch)

    values = await batch_map(task, range(6), batch_size=batch_size, concurrency=concurrency)

    assert values == [0, 1, 2, 3, 4, 5]
    if concurrency > 1:
        # The case is only a test of ordering if the batches did not finish in input order.
        assert finished != sorted(finished)


async def test_tuple_output_accepted_and_sync_task() -> None:
    def task(batch: list[int]) -> tuple[int, ...]:
        return tuple(item + 1 for item in batch)

    # Typed as returning a list, the task may return any sequence.
    values: list[Any] = await batch_map(task, range(5), batch_size=2)  # type: ignore[arg-type]

    assert values == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------- wrong output and failure isolation


@pytest.mark.parametrize(("change", "actual"), [(lambda b: b[:-1], 2), (lambda b: [*b, 99], 4)])
async def test_wrong_length_fails_its_batch(change: Any, actual: int) -> None:
    async def task(batch: list[int]) -> list[int]:
        return change(batch) if 4 in batch else batch

    result = await batch_map(task, range(9), batch_size=3, return_result=True)

    assert statuses(result) == ["succeeded"] * 3 + ["failed"] * 3 + ["succeeded"] * 3
    error = result.outcomes[3].error
    assert isinstance(error, BatchLengthError)
    assert error.batch == BatchSpan(1, 3, 6)
    assert error.expected == 3
    assert error.actual == actual
    assert str(error) == (
        f"batch 1 (items 3 to 5): the task returned {actual} results for 3 items; "
        f"it must return one result per item, in the order of the batch"
    )
    assert result.outcomes[4].error is error
    assert result.outcomes[5].error is error
    assert result.values() == [0, 1, 2, None, None, None, 6, 7, 8]


async def test_task_emptying_its_batch_still_checked() -> None:
    async def task(batch: list[int]) -> list[int]:
        batch.clear()
        return []

    result = await batch_map(task, range(4), batch_size=2, return_result=True)

    assert statuses(result) == ["failed"] * 4
    assert list(result.spans) == [BatchSpan(0, 0, 2), BatchSpan(1, 2, 4)]
    assert "the task returned 0 results for 2 items" in str(result.outcomes[0].error)


async def test_wrong_length_raises_naming_batch() -> None:
    async def task(batch: list[int]) -> list[int]:
        return []

    with pytest.raises(BatchError) as raised:
        await batch_map(task, range(4), batch_size=4, concurrency=1)

    assert "batch 0 (items 0 to 3): the task returned 0 results for 4 items" in str(raised.value)
    assert isinstance(raised.value.__cause__, BatchLengthError)


@pytest.mark.parametrize("output", [None, {"a": 1}, "abc", 5])
async def test_non_list_output_fails_its_batch(output: object) -> None:
    async def task(batch: list[int]) -> Any:
        return output if 6 in batch else batch

    result = await batch_map(task, range(7), batch_size=3, return_result=True)

    assert statuses(result) == ["succeeded"] * 6 + ["failed"]
    error = result.outcomes[6].error
    assert isinstance(error, TypeError)
    assert str(error).startswith(f"batch 2 (item 6): the task returned {output!r}")
    assert str(error).endswith("it must return a list with one result per item")


async def test_failed_batch_isolated() -> None:
    boom = ValueError("batch with item 4")
    calls: list[list[int]] = []

    async def task(batch: list[int]) -> list[int]:
        calls.append(batch)
        await asyncio.sleep(0)
        if 4 in batch:
            raise boom
        return [item * 10 for item in batch]

    result = await batch_map(task, range(10), batch_size=3, concurrency=2, return_result=True)

    assert isinstance(result, BatchResult)
    assert sorted(call[0] for call in calls) == [0, 3, 6, 9]
    assert statuses(result) == ["succeeded"] * 3 + ["failed"] * 3 + ["succeeded"] * 4
    assert result.values() == [0, 10, 20, None, None, None, 60, 70, 80, 90]
    assert result.errors() == {3: boom, 4: boom, 5: boom}
    assert (result.succeeded, result.failed, result.cancelled, result.not_started) == (7, 3, 0, 0)
    assert result.first_failure_index == 3
    assert result.first_error is boom
    assert [outcome.status for outcome in result.batches.outcomes] == [SUCCEEDED, FAILED, SUCCEEDED, SUCCEEDED]
    assert result.batches.errors() == {1: boom}
    assert list(result.spans) == [BatchSpan(0, 0, 3), BatchSpan(1, 3, 6), BatchSpan(2, 6, 9), BatchSpan(3, 9, 10)]
    assert result.batch_of(4) == BatchSpan(1, 3, 6)
    assert result.batch_of(10) is None
    assert result.batch_size == 3
    assert not result.tripped
    assert result.input_exhausted


async def test_failed_batch_raises_with_result() -> None:
    boom = ValueError("boom")

    async def task(batch: list[int]) -> list[int]:
        if 4 in batch:
            raise boom
        return batch

    with pytest.raises(BatchError) as raised:
        await batch_map(task, range(10), batch_size=3, concurrency=2, group_name="numbers")

    error = raised.value
    assert error.__cause__ is boom
    assert str(error) == (
        "numbers: 1 batch failed, 3 succeeded. Failed: batch 1 (items 3 to 5): ValueError('boom') "
        "(7 items succeeded, 3 failed, 0 cancelled, 0 not started)"
    )
    assert error.result.values() == [0, 1, 2, None, None, None, 6, 7, 8, 9]


async def test_message_lists_first_three_failures() -> None:
    async def task(batch: list[int]) -> list[int]:
        raise KeyError(batch[0])

    with pytest.raises(BatchError) as raised:
        await batch_map(task, range(5), batch_size=1, concurrency=1, group_name="keys")

    message = str(raised.value)
    assert message.startswith("keys: 5 batches failed, 0 succeeded. Failed: batch 0 (item 0): KeyError(0); ")
    assert "batch 2 (item 2): KeyError(2); and 2 more (0 items succeeded, 5 failed" in message


# ---------------------------------------------------------------- breaker rules count batches


async def test_max_failures_counts_batches() -> None:
    task_calls: list[list[int]] = []

    async def task(batch: list[int]) -> list[int]:
        task_calls.append(batch)
        raise OSError(batch[0])

    result = await batch_map(task, range(10), batch_size=2, concurrency=1, max_failures=1, return_result=True)

    assert task_calls == [[0, 1], [2, 3]]
    assert result.tripped
    assert result.trip is not None
    assert result.trip.rule is TripRule.MAX_FAILURES
    assert result.trip.index == 1
    assert result.trip.failed == 2
    assert statuses(result) == ["failed"] * 4 + ["not_started"] * 6
    assert result.batches.total == 2
    assert result.input_exhausted


async def test_trip_raises_batch_error_with_reason() -> None:
    async def task(batch: list[int]) -> list[int]:
        raise OSError(batch[0])

    with pytest.raises(BatchError) as raised:
        await batch_map(task, range(10), batch_size=2, concurrency=1, max_failures=0, group_name="g")

    assert str(raised.value).startswith(
        "g: 1 batch failed, 0 succeeded; stopped early because 1 failure exceeded max_failures=0."
    )
    assert raised.value.result.not_started == 8


async def test_ratio_counts_batches() -> None:
    async def task(batch: list[int]) -> list[int]:
        raise OSError(batch[0])

    # 5 batches at 0.4: two failed batches are within the ratio, the third is not.
    result = await batch_map(task, range(10), batch_size=2, concurrency=1, max_failure_ratio=0.4, return_result=True)

    assert result.trip is not None
    assert result.trip.rule is TripRule.MAX_FAILURE_RATIO
    assert result.trip.index == 2
    assert statuses(result) == ["failed"] * 6 + ["not_started"] * 4


async def test_ratio_with_total_hint_for_generator() -> None:
    async def only_first_fails(batch: list[int]) -> list[int]:
        if batch[0] == 0:
            raise OSError(0)
        return batch

    async def all_fail(batch: list[int]) -> list[int]:
        raise OSError(batch[0])

    one = await batch_map(
        only_first_fails, (i for i in range(10)), batch_size=2, total=10, max_failure_ratio=0.4, return_result=True
    )
    every = await batch_map(
        all_fail,
        (i for i in range(10)),
        batch_size=2,
        concurrency=1,
        total=10,
        max_failure_ratio=0.4,
        return_result=True,
    )

    assert not one.tripped
    assert one.values() == [None, None, 2, 3, 4, 5, 6, 7, 8, 9]
    assert every.trip is not None
    assert every.trip.index == 2
    assert statuses(every) == ["failed"] * 6


async def test_rolling_window_over_batches() -> None:
    async def task(batch: list[int]) -> list[int]:
        if batch[0] >= 6:
            raise ConnectionError(batch[0])
        return batch

    window = RollingWindow(size=2, failure_rate=1.0)
    result = await batch_map(task, range(20), batch_size=2, concurrency=1, rolling_window=window, return_result=True)

    assert result.trip is not None
    assert result.trip.rule is TripRule.ROLLING_WINDOW
    assert result.trip.index == 4
    assert result.succeeded == 6
    assert result.failed == 4
    assert result.not_started == 10


async def test_trip_leaves_generator_where_it_stopped() -> None:
    source = iter(range(20))

    async def task(batch: list[int]) -> list[int]:
        raise OSError(batch[0])

    result = await batch_map(task, source, batch_size=2, concurrency=1, max_failures=0, return_result=True)

    assert statuses(result) == ["failed", "failed"]
    assert not result.input_exhausted
    assert next(source) == 2


async def test_trip_counts_rest_of_unsized_collection() -> None:
    class Numbers:
        def __iter__(self) -> Iterator[int]:
            return iter(range(9))

    async def task(batch: list[int]) -> list[int]:
        raise OSError(batch[0])

    result = await batch_map(task, Numbers(), batch_size=2, concurrency=1, max_failures=0, return_result=True)

    assert statuses(result) == ["failed"] * 2 + ["not_started"] * 7
    assert result.input_exhausted


async def test_trip_cancels_running_batches(loop_errors: LoopErrors) -> None:
    before = asyncio.all_tasks()
    started: list[int] = []
    cancelled: list[int] = []
    all_started = asyncio.Event()

    async def task(batch: list[int]) -> list[int]:
        started.append(batch[0])
        if len(started) == 3:
            all_started.set()
        if batch[0] == 0:
            await all_started.wait()
            raise OSError("first")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(batch[0])
            raise
        return batch

    result = await with_timeout(
        batch_map(task, range(12), batch_size=2, concurrency=3, max_failures=0, return_result=True)
    )

    assert sorted(cancelled) == [2, 4]
    assert statuses(result) == ["failed"] * 2 + ["cancelled"] * 4 + ["not_started"] * 6
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []


# ---------------------------------------------------------------- automatic batch size


@pytest.mark.parametrize(
    ("total", "concurrency", "expected"),
    [
        (0, 4, 1),
        (1, 32, 1),
        (128, 32, 1),
        (129, 32, 2),
        (1000, 32, 8),
        (1000, 8, 32),
        (4000, 1, 1000),
        (4001, 1, 1000),
        (10**9, 32, MAX_AUTO_BATCH_SIZE),
        (None, 4, UNSIZED_BATCH_SIZE),
    ],
)
def test_auto_batch_size_rule(total: int | None, concurrency: int, expected: int) -> None:
    assert auto_batch_size(total, concurrency) == expected


def test_auto_batch_size_rejects_bad_numbers() -> None:
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        auto_batch_size(10, 0)
    with pytest.raises(TypeError, match="total must be an int >= 0"):
        auto_batch_size(True, 1)


async def test_auto_batch_size_from_len() -> None:
    task = Recorder()

    result = await batch_map(task, list(range(1000)), concurrency=8, return_result=True)

    assert result.batch_size == 32
    assert [len(call) for call in task.calls] == [32] * 31 + [8]
    assert result.values() == [item * 2 for item in range(1000)]


async def test_auto_batch_size_unsized_and_hinted() -> None:
    unsized = await batch_map(Recorder(), (i for i in range(250)), concurrency=8, return_result=True)
    hinted = await batch_map(Recorder(), (i for i in range(250)), concurrency=8, total=250, return_result=True)
    explicit = await batch_map(Recorder(), (i for i in range(250)), batch_size=7, total=250, return_result=True)

    assert unsized.batch_size == UNSIZED_BATCH_SIZE
    assert [span.size for span in unsized.spans] == [100, 100, 50]
    assert hinted.batch_size == 8
    assert explicit.batch_size == 7


# ---------------------------------------------------------------- weight bound


async def test_weight_bound_cuts_batches() -> None:
    task = Recorder()
    items = [3, 3, 3, 5, 1, 12, 2, 2]

    values = await batch_map(task, items, batch_size=10, weight=float, max_batch_weight=6)

    # [3, 3] reaches the bound; 5 does not fit after 3; 12 is heavier than the bound and goes alone.
    assert task.calls == [[3, 3], [3], [5, 1], [12], [2, 2]]
    assert values == [item * 2 for item in items]


async def test_weight_bound_and_count_bound() -> None:
    task = Recorder()

    await batch_map(task, [1] * 7, batch_size=3, weight=float, max_batch_weight=100)

    assert task.calls == [[1, 1, 1], [1, 1, 1], [1]]


@pytest.mark.parametrize(
    ("bad_weight", "error", "message"),
    [
        (-1, ValueError, "weight returned -1 for item 2; it must return a finite number >= 0"),
        ("heavy", TypeError, "weight returned 'heavy' (str) for item 2; it must return a number"),
        (float("nan"), ValueError, "weight returned nan for item 2; it must return a finite number >= 0"),
    ],
)
async def test_bad_weight_is_input_error(bad_weight: object, error: type[Exception], message: str) -> None:
    def weight(item: int) -> Any:
        return bad_weight if item == 2 else 1

    with pytest.raises(FanOutInputError) as raised:
        await batch_map(Recorder(), range(5), batch_size=5, weight=weight, max_batch_weight=10)

    assert isinstance(raised.value.__cause__, error)
    assert str(raised.value.__cause__) == message
    # Items 0 and 1 were in the batch being built and item 2 was being weighed: read, never started.
    assert statuses(raised.value.result) == ["not_started"] * 3


async def test_full_weighted_batch_starts_at_once() -> None:
    more = asyncio.Event()
    task_calls: list[list[int]] = []

    async def source() -> AsyncIterator[int]:
        yield 4
        yield 6
        await more.wait()
        yield 1

    async def task(batch: list[int]) -> list[int]:
        task_calls.append(batch)
        more.set()
        return batch

    values = await with_timeout(batch_map(task, source(), batch_size=10, weight=float, max_batch_weight=10))

    assert task_calls == [[4, 6], [1]]
    assert values == [4, 6, 1]


# ---------------------------------------------------------------- lazy input and the sliding window


async def test_generator_pulled_at_most_concurrency_batches_ahead() -> None:
    source = CountingIterator(iter(range(200)))
    finished = 0
    ahead: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        nonlocal finished
        ahead.append(source.pulled - finished)
        for _ in range(batch[0] % 4):
            await asyncio.sleep(0)
        finished += len(batch)
        return batch

    values = await batch_map(task, source, batch_size=3, concurrency=4)

    assert values == list(range(200))
    assert max(ahead) <= 4 * 3
    assert ahead[0] <= 4 * 3


async def test_weighted_generator_pulled_at_most_one_more() -> None:
    source = CountingIterator(iter([1, 2, 3] * 30))
    finished = 0
    ahead: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        nonlocal finished
        ahead.append(source.pulled - finished)
        await asyncio.sleep(0)
        finished += len(batch)
        return batch

    await batch_map(task, source, batch_size=3, concurrency=2, weight=float, max_batch_weight=4)

    # Two batches of at most three items, and one item held back because it did not fit.
    assert max(ahead) <= 2 * 3 + 1


async def test_slow_batch_does_not_hold_others() -> None:
    started: list[int] = []
    slow_release = asyncio.Event()

    async def task(batch: list[int]) -> list[int]:
        started.append(batch[0])
        if batch[0] == 0:
            await slow_release.wait()
        else:
            await asyncio.sleep(0)
        if batch[0] == 9:
            slow_release.set()
        return batch

    # Two slots: batch 0 is held until batch 9 has started, which only a sliding window allows.
    values = await with_timeout(batch_map(task, range(10), batch_size=1, concurrency=2))

    assert started == list(range(10))
    assert values == list(range(10))


async def test_full_async_batch_starts_at_once() -> None:
    more = asyncio.Event()
    task_calls: list[list[int]] = []

    async def source() -> AsyncIterator[int]:
        for item in range(3):
            yield item
        await more.wait()
        for item in range(3, 5):
            yield item

    async def task(batch: list[int]) -> list[int]:
        task_calls.append(batch)
        more.set()
        return batch

    values = await with_timeout(batch_map(task, source(), batch_size=3))

    assert task_calls == [[0, 1, 2], [3, 4]]
    assert values == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("max_wait", [0.05, timedelta(milliseconds=50)])
async def test_max_wait_starts_partial_batch(max_wait: float | timedelta) -> None:
    more = asyncio.Event()
    task_calls: list[list[int]] = []

    async def source() -> AsyncIterator[int]:
        yield 0
        yield 1
        await more.wait()
        for item in range(2, 5):
            yield item

    async def task(batch: list[int]) -> list[int]:
        task_calls.append(batch)
        more.set()
        return batch

    values = await with_timeout(batch_map(task, source(), batch_size=5, max_wait=max_wait))

    assert task_calls == [[0, 1], [2, 3, 4]]
    assert values == [0, 1, 2, 3, 4]


async def test_max_wait_on_sync_iterable_warns() -> None:
    task = Recorder()

    with pytest.warns(BatchWarning, match=r"max_wait=0\.5 has no effect on a sync iterable such as range") as caught:
        values = await batch_map(task, range(4), batch_size=3, max_wait=0.5)

    assert values == [0, 2, 4, 6]
    assert caught[0].filename == __file__


async def test_max_wait_pull_in_flight_cancelled_on_trip(loop_errors: LoopErrors) -> None:
    before = asyncio.all_tasks()
    closed: list[bool] = []

    async def source() -> AsyncIterator[int]:
        try:
            yield 0
            await asyncio.Event().wait()
            yield 1
        finally:
            closed.append(True)

    async def task(batch: list[int]) -> list[int]:
        raise OSError(batch[0])

    result = await with_timeout(
        batch_map(task, source(), batch_size=5, max_wait=0.01, max_failures=0, return_result=True)
    )

    assert statuses(result) == ["failed"]
    assert closed == [True]
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []


async def test_max_wait_item_pulled_in_flight_counted() -> None:
    async def source() -> AsyncIterator[int]:
        yield 0
        await asyncio.sleep(0.05)
        yield 1
        yield 2

    async def task(batch: list[int]) -> list[int]:
        if batch == [0]:
            # Give the pull of item 1, still in flight, time to finish before the trip.
            await asyncio.sleep(0.1)
            raise OSError(0)
        return batch

    result = await with_timeout(
        batch_map(task, source(), batch_size=5, concurrency=1, max_wait=0.01, max_failures=0, return_result=True)
    )

    assert statuses(result) == ["failed", "not_started"]
    assert not result.input_exhausted


# ---------------------------------------------------------------- input errors and interrupts


@pytest.mark.parametrize("kind", ["generator", "async generator"])
async def test_input_error_is_not_batch_failure(kind: str) -> None:
    broken = ValueError("bad record")

    def records() -> Iterator[int]:
        yield from range(4)
        raise broken

    async def async_records() -> AsyncIterator[int]:
        for item in range(4):
            yield item
        raise broken

    items: Any = records() if kind == "generator" else async_records()
    task = Recorder()

    with pytest.raises(FanOutInputError) as raised:
        await batch_map(task, items, batch_size=3, concurrency=1)

    assert raised.value.__cause__ is broken
    assert str(raised.value) == "the input of Recorder_batch_map raised ValueError('bad record') after 4 items"
    result = raised.value.result
    assert statuses(result) == ["succeeded"] * 3 + ["not_started"]
    assert result.values() == [0, 2, 4, None]
    assert not result.input_exhausted
    assert task.calls == [[0, 1, 2]]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
async def test_interrupt_stops_everything(loop_errors: LoopErrors, interrupt: type[BaseException]) -> None:
    before = asyncio.all_tasks()
    cancelled: list[int] = []
    others_started = asyncio.Event()
    started: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        started.append(batch[0])
        if batch[0] == 0:
            await others_started.wait()
            raise interrupt()
        if len(started) == 3:
            others_started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(batch[0])
            raise
        return batch

    # Not under a timeout: asyncio.wait_for runs its coroutine as a task, and an interrupt raised in a task
    # escapes the event loop instead of reaching the awaiting code.
    with pytest.raises(interrupt):
        await batch_map(task, range(20), batch_size=2, concurrency=3)

    assert sorted(cancelled) == [2, 4]
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []


# ---------------------------------------------------------------- cancelling the caller


async def test_caller_cancel_cancels_batches(loop_errors: LoopErrors) -> None:
    before = asyncio.all_tasks()
    started: list[list[int]] = []
    completed: list[list[int]] = []
    cancelled: list[list[int]] = []

    async def task(batch: list[int]) -> list[int]:
        started.append(batch)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            cancelled.append(batch)
            raise
        completed.append(batch)
        return batch

    run = asyncio.create_task(batch_map(task, range(5), batch_size=1, concurrency=5))
    await asyncio.sleep(0.02)
    run.cancel()

    with pytest.raises(asyncio.CancelledError):
        await run

    assert sorted(started) == [[0], [1], [2], [3], [4]]
    assert completed == []
    assert sorted(cancelled) == sorted(started)
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []


async def test_caller_cancel_during_max_wait_pull(loop_errors: LoopErrors) -> None:
    before = asyncio.all_tasks()
    waiting = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        yield 0
        waiting.set()
        await asyncio.Event().wait()
        yield 1

    run = asyncio.create_task(batch_map(Recorder(), source(), batch_size=5, max_wait=10))
    await with_timeout(waiting.wait())
    run.cancel()

    with pytest.raises(asyncio.CancelledError):
        await run

    assert new_tasks(before) == set()
    assert loop_errors.messages() == []


async def test_wait_for_timeout_cancels_batches() -> None:
    completed: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        await asyncio.sleep(1)
        completed.append(batch[0])
        return batch

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batch_map(task, range(6), batch_size=2, concurrency=2), 0.05)

    assert completed == []


# ---------------------------------------------------------------- progress


async def test_progress_events_in_order() -> None:
    boom = ValueError("batch 1")
    events: list[BatchProgress] = []

    async def task(batch: list[int]) -> list[int]:
        if batch[0] == 3:
            raise boom
        return batch

    await batch_map(task, range(7), batch_size=3, concurrency=1, on_progress=events.append, return_result=True)

    assert events == [
        BatchProgress(BatchSpan(0, 0, 3), SUCCEEDED, None, 1, 3, 3, 0, 0, 7),
        BatchProgress(BatchSpan(1, 3, 6), FAILED, boom, 2, 3, 3, 3, 0, 7),
        BatchProgress(BatchSpan(2, 6, 7), SUCCEEDED, None, 3, 3, 4, 3, 0, 7),
    ]
    assert events[-1].items_finished == 7


async def test_progress_totals_unknown_for_generator() -> None:
    events: list[BatchProgress] = []

    await batch_map(Recorder(), (i for i in range(5)), batch_size=2, concurrency=1, on_progress=events.append)

    assert [(e.batches_total, e.items_total) for e in events] == [(None, None)] * 3
    assert [e.items_succeeded for e in events] == [2, 4, 5]


async def test_progress_hook_error_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def hook(event: BatchProgress) -> None:
        raise RuntimeError("hook")

    with caplog.at_level(logging.ERROR, logger="flyte_patterns.batch"):
        values = await batch_map(Recorder(), range(6), batch_size=2, on_progress=hook)

    assert values == [0, 2, 4, 6, 8, 10]
    assert "on_progress raised" in caplog.text


@pytest.mark.parametrize("kind", ["list", "generator", "map_reduce"])
async def test_progress_bar_runs_and_stops(kind: str) -> None:
    threads_before = threading.active_count()

    async def task(batch: list[int]) -> list[int]:
        if batch[0] == 4:
            raise OSError(4)
        return batch

    if kind == "map_reduce":
        with pytest.raises(BatchError):
            await map_reduce(task, range(10), reduce=lambda a, b: a + sum(b), initial=0, progress_bar=True)
    else:
        items: Any = range(10) if kind == "list" else (i for i in range(10))
        result = await batch_map(task, items, batch_size=2, progress_bar=True, return_result=True)
        assert result.failed == 2

    assert threading.active_count() == threads_before


class _FakeStderr:
    def __init__(self, tty: bool) -> None:
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _FakeRemoteContext:
    # Flyte sets mode "remote" only for a task running on a cluster, which the local engine cannot produce.
    mode = "remote"

    def __bool__(self) -> bool:
        return True


def test_progress_bar_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", _FakeStderr(tty=False))
    assert not progress_bar_default()

    monkeypatch.setattr("sys.stderr", _FakeStderr(tty=True))
    assert progress_bar_default()

    monkeypatch.setattr(flyte, "ctx", _FakeRemoteContext)
    assert not progress_bar_default()

    monkeypatch.setattr("sys.stderr", None)
    assert not progress_bar_default()


# ---------------------------------------------------------------- map_reduce


async def test_map_reduce_sync_functions() -> None:
    def squares(batch: list[int]) -> list[int]:
        return [item * item for item in batch]

    def add(total: int, value: int) -> int:
        return total + value

    total = await map_reduce(squares, range(100), reduce=add, initial=0, combine=sum, batch_size=7)

    assert total == sum(item * item for item in range(100))


async def test_map_reduce_async_functions() -> None:
    async def combine(results: list[int]) -> int:
        await asyncio.sleep(0)
        return max(results)

    async def reduce(best: int, value: int) -> int:
        await asyncio.sleep(0)
        return max(best, value)

    best = await map_reduce(Recorder(), range(50), reduce=reduce, initial=-1, combine=combine, concurrency=4)

    assert best == 98


async def test_map_reduce_without_combine_folds_lists() -> None:
    seen: list[list[int]] = []

    def reduce(count: int, results: list[int]) -> int:
        seen.append(results)
        return count + len(results)

    count = await map_reduce(Recorder(), range(7), reduce=reduce, initial=0, batch_size=3, concurrency=1)

    assert count == 7
    assert seen == [[0, 2, 4], [6, 8, 10], [12]]


async def test_map_reduce_folds_in_batch_order() -> None:
    release = asyncio.Event()
    finished: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        if batch[0] == 0:
            await release.wait()
        finished.append(batch[0])
        if len(finished) == 3:
            release.set()
        return batch

    def concatenate(text: str, value: str) -> str:
        return text + value

    text = await with_timeout(
        map_reduce(task, range(4), reduce=concatenate, initial=">", combine=lambda b: str(b[0]), batch_size=1)
    )

    assert finished == [1, 2, 3, 0]
    assert text == ">0123"


async def test_map_reduce_fold_takes_no_batch_slot() -> None:
    last_started = asyncio.Event()
    folded: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        if batch[0] == 2:
            last_started.set()
        return batch

    async def reduce(total: int, results: list[int]) -> int:
        # With one slot, this wait would never end if the fold ran in the batches' slot.
        await last_started.wait()
        folded.append(results[0])
        return total + sum(results)

    total = await with_timeout(map_reduce(task, range(3), reduce=reduce, initial=0, batch_size=1, concurrency=1))

    assert total == 3
    assert folded == [0, 1, 2]


async def test_map_reduce_failed_batch_raises() -> None:
    boom = ValueError("batch 1")
    folded: list[list[int]] = []
    first_folded = asyncio.Event()

    async def task(batch: list[int]) -> list[int]:
        if batch[0] == 2:
            await first_folded.wait()
            raise boom
        return batch

    def reduce(total: int, results: list[int]) -> int:
        folded.append(results)
        first_folded.set()
        return total + sum(results)

    with pytest.raises(BatchError) as raised:
        await with_timeout(map_reduce(task, range(6), reduce=reduce, initial=0, batch_size=2, concurrency=1))

    result = raised.value.result
    assert raised.value.__cause__ is boom
    assert statuses(result) == ["succeeded"] * 2 + ["failed"] * 2 + ["succeeded"] * 2
    assert result.values() == [None] * 6
    assert result.errors() == {2: boom, 3: boom}
    # The fold stopped at the failed batch: later batches ran but were never folded.
    assert folded == [[0, 1]]


async def test_map_reduce_combine_failure_is_batch_failure() -> None:
    def combine(results: list[int]) -> int:
        if 4 in results:
            raise ZeroDivisionError("combine")
        return sum(results)

    with pytest.raises(BatchError) as raised:
        await map_reduce(Recorder(), range(6), reduce=max, initial=0, combine=combine, batch_size=2)

    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    assert statuses(raised.value.result) == ["succeeded"] * 2 + ["failed"] * 2 + ["succeeded"] * 2


async def test_map_reduce_trip() -> None:
    async def task(batch: list[int]) -> list[int]:
        raise OSError(batch[0])

    with pytest.raises(BatchError) as raised:
        await map_reduce(task, range(6), reduce=add_sums, initial=0, batch_size=2, concurrency=1, max_failures=0)

    assert raised.value.result.tripped
    assert statuses(raised.value.result) == ["failed"] * 2 + ["not_started"] * 4


async def test_reduce_error_stops_batches(loop_errors: LoopErrors) -> None:
    before = asyncio.all_tasks()
    boom = ArithmeticError("reduce")
    running = asyncio.Event()
    cancelled: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        if batch[0] == 0:
            return batch
        running.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(batch[0])
            raise
        return batch

    async def reduce(total: int, results: list[int]) -> int:
        await running.wait()
        raise boom

    with pytest.raises(ReduceError) as raised:
        await with_timeout(map_reduce(task, range(6), reduce=reduce, initial=0, batch_size=2, concurrency=2))

    assert raised.value.__cause__ is boom
    assert raised.value.batch == BatchSpan(0, 0, 2)
    assert str(raised.value) == "reduce raised ArithmeticError('reduce') while folding batch 0 (items 0 to 1)"
    # Batch 0 finished at once, so both slots were running the other two batches when reduce failed.
    assert sorted(cancelled) == [2, 4]
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []
    # The cancellation used to stop the batches was taken back: this task is not left cancelled.
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0
    await asyncio.sleep(0)


async def test_reduce_error_after_last_batch() -> None:
    def reduce(total: int, results: list[int]) -> int:
        if results[0] == 4:
            raise LookupError("late")
        return total

    with pytest.raises(ReduceError) as raised:
        await map_reduce(Recorder(), range(3), reduce=reduce, initial=0, batch_size=1, concurrency=1)

    assert raised.value.batch == BatchSpan(2, 2, 3)
    assert isinstance(raised.value.__cause__, LookupError)


async def test_reduce_interrupt_propagates() -> None:
    def reduce(total: int, results: list[int]) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await map_reduce(Recorder(), range(3), reduce=reduce, initial=0, batch_size=1)


async def test_map_reduce_caller_cancel(loop_errors: LoopErrors) -> None:
    before = asyncio.all_tasks()
    started = asyncio.Event()
    completed: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(1)
        completed.append(batch[0])
        return batch

    run = asyncio.create_task(map_reduce(task, range(5), reduce=add_sums, initial=0, batch_size=1, concurrency=5))
    await with_timeout(started.wait())
    run.cancel()

    with pytest.raises(asyncio.CancelledError):
        await run

    assert completed == []
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []


async def test_map_reduce_caller_cancel_while_folding() -> None:
    before = asyncio.all_tasks()
    folding = asyncio.Event()
    fold_cancelled: list[bool] = []

    async def reduce(total: int, results: list[int]) -> int:
        folding.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            fold_cancelled.append(True)
            raise
        return total

    run = asyncio.create_task(map_reduce(Recorder(), range(2), reduce=reduce, initial=0, batch_size=1))
    await with_timeout(folding.wait())
    run.cancel()

    with pytest.raises(asyncio.CancelledError):
        await run

    assert fold_cancelled == [True]
    assert new_tasks(before) == set()


# ---------------------------------------------------------------- properties over random inputs


@settings(deadline=None, max_examples=150)
@given(
    count=st.integers(0, 40),
    batch_size=st.none() | st.integers(1, 8),
    concurrency=st.integers(1, 5),
    bad=st.sets(st.integers(0, 39), max_size=6),
    steps=st.lists(st.integers(0, 3), min_size=40, max_size=40),
    kind=st.sampled_from(["list", "generator", "async generator"]),
    hint=st.booleans(),
    weighted=st.booleans(),
    max_failures=st.none() | st.integers(0, 2),
)
def test_batch_map_properties(
    count: int,
    batch_size: int | None,
    concurrency: int,
    bad: set[int],
    steps: list[int],
    kind: str,
    hint: bool,
    weighted: bool,
    max_failures: int | None,
) -> None:
    """Every item is accounted for once, in input order, with its batch's fate; batches partition the input."""
    calls: list[list[int]] = []
    errors: dict[int, ValueError] = {}

    async def task(batch: list[int]) -> list[int]:
        calls.append(batch)
        for _ in range(steps[batch[0]]):
            await asyncio.sleep(0)
        if bad & set(batch):
            errors[batch[0]] = ValueError(batch[0])
            raise errors[batch[0]]
        return [item * 2 for item in batch]

    def weight(item: int) -> float:
        return float(item % 3 + 1)

    async def scenario() -> BatchResult[int]:
        items: Any = list(range(count))
        if kind == "generator":
            items = iter(items)
        elif kind == "async generator":
            items = async_items(items)
        before = asyncio.all_tasks()
        result = await batch_map(
            task,
            items,
            batch_size=batch_size,
            concurrency=concurrency,
            total=count if hint and kind != "list" else None,
            weight=weight if weighted else None,
            max_batch_weight=4 if weighted else None,
            max_failures=max_failures,
            return_result=True,
        )
        assert new_tasks(before) == set()
        return result

    result = asyncio.run(scenario())
    outcomes = list(result.outcomes)
    spans = list(result.spans)

    # Accounted for once each, in input order; all of a collection, and a prefix of a one-shot input.
    assert [outcome.index for outcome in outcomes] == list(range(len(outcomes)))
    if kind == "list" or not result.tripped:
        assert len(outcomes) == count
        assert result.input_exhausted
    assert len(outcomes) <= count
    assert result.succeeded + result.failed + result.cancelled + result.not_started == len(outcomes)

    # The batches cut the input into consecutive runs within the bounds, and the task got each batch that started.
    assert [span.index for span in spans] == list(range(len(spans)))
    assert all(span.start == previous.stop for previous, span in itertools.pairwise(spans))
    assert all(1 <= span.size <= result.batch_size for span in spans)
    if spans:
        assert spans[0].start == 0
    if weighted:
        assert all(span.size == 1 or sum(weight(i) for i in range(span.start, span.stop)) <= 4 for span in spans)
    started = [
        span for span, batch in zip(spans, result.batches.outcomes, strict=True) if batch.status is not NOT_STARTED
    ]
    assert sorted(calls) == [list(range(span.start, span.stop)) for span in started]

    # Each item shares its batch's fate.
    for span, batch in zip(spans, result.batches.outcomes, strict=True):
        for index in range(span.start, span.stop):
            outcome = outcomes[index]
            assert outcome.status is batch.status
            if batch.status is SUCCEEDED:
                assert outcome.value == index * 2
                assert not bad & set(range(span.start, span.stop))
            elif batch.status is FAILED:
                assert outcome.error is errors[span.start]
    unbatched = range(spans[-1].stop if spans else 0, len(outcomes))
    assert all(outcomes[index].status is NOT_STARTED for index in unbatched)

    # Without a stopping rule, everything ran.
    if max_failures is None:
        assert not result.tripped
        assert result.not_started == 0
        assert result.cancelled == 0
        expected: list[int | None] = []
        for span in spans:
            failed = bool(bad & set(range(span.start, span.stop)))
            expected.extend(None if failed else index * 2 for index in range(span.start, span.stop))
        assert result.values() == expected
