"""Tests for batch_map and map_reduce over real Flyte tasks: a driver task batches child tasks on the local engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import flyte
import pytest

from flyte_patterns import BatchError, BatchLengthError, batch_map, flyte_code, map_reduce

from .conftest import RunLocal

pytestmark = pytest.mark.flyte

env = flyte.TaskEnvironment(name="flyte_patterns_test_batch")

# Child tasks run in-process on the local engine, in the driver's event loop, so they can share state with it.
# Each driver resets what it uses before batching.
_calls: list[list[int]] = []
_finished: list[int] = []
_cancelled: list[int] = []
_all_started: dict[str, asyncio.Event] = {}


@env.task
async def double_all(items: list[int]) -> list[int]:
    _calls.append(list(items))
    return [item * 2 for item in items]


@env.task
async def slow_identity(items: list[int]) -> list[int]:
    # Item i sleeps (6 - i) * 10 ms, so later items finish first when they run side by side.
    for item in items:
        await asyncio.sleep((6 - item) * 0.01)
    _finished.append(items[0])
    return items


@env.task
async def short_for_three(items: list[int]) -> list[int]:
    return items[:-1] if 3 in items else items


@env.task
async def fail_on_five(items: list[int]) -> list[int]:
    if 5 in items:
        raise ValueError(f"bad batch starting at {items[0]}")
    return [item + 100 for item in items]


@env.task
def square_sync(items: list[int]) -> list[int]:
    return [item * item for item in items]


@env.task
async def total(results: list[int]) -> int:
    return sum(results)


@env.task
async def add(accumulator: int, value: int) -> int:
    return accumulator + value


@env.task
async def concatenate(accumulator: list[int], results: list[int]) -> list[int]:
    return accumulator + results


def _current_group() -> str:
    group = flyte.ctx().group_data
    return "" if group is None else group.name


async def group_names(items: list[int]) -> list[str]:
    # A plain function called by the driver reads the group that a Flyte task call from the same place is
    # submitted under, because the local controller takes it from the same task context.
    return [_current_group()] * len(items)


def group_of_combine(results: list[str]) -> list[str]:
    return [*results, _current_group()]


def group_of_reduce(accumulator: list[str], value: list[str]) -> list[str]:
    return [*accumulator, *value, _current_group()]


@env.task
async def sleep_one_second(items: list[int]) -> list[int]:
    _calls.append(items)
    if len(_calls) == 5:
        _all_started["sleepers"].set()
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        _cancelled.append(items[0])
        raise
    _finished.append(items[0])
    return items


@env.task
async def drive_batches() -> str:
    seen: dict[str, Any] = {}
    _calls.clear()
    seen["range7"] = await batch_map(double_all, range(7), batch_size=3)
    seen["range7_calls"] = list(_calls)
    _calls.clear()
    seen["generator7"] = await batch_map(double_all, (i for i in range(7)), batch_size=3)
    seen["generator7_calls"] = list(_calls)
    _calls.clear()
    seen["range6"] = await batch_map(double_all, range(6), batch_size=3)
    seen["range6_calls"] = list(_calls)
    _calls.clear()
    seen["empty"] = await batch_map(double_all, [], batch_size=3)
    seen["empty_total"] = await map_reduce(double_all, [], reduce=add, initial=-1, combine=total)
    seen["empty_calls"] = list(_calls)
    seen["sync_task"] = await batch_map(square_sync, range(5), batch_size=2)
    _calls.clear()
    rejected = []
    for bad in ({"batch_size": 0}, {"batch_size": -1}, {"batch_size": True}, {"batch_size": 1.5}, {"concurrency": 0}):
        try:
            await batch_map(double_all, range(3), **bad)
        except (TypeError, ValueError) as error:
            rejected.append(type(error).__name__)
    seen["rejected"] = rejected
    seen["rejected_calls"] = list(_calls)
    return json.dumps(seen)


@env.task
async def drive_order() -> str:
    seen: dict[str, Any] = {}
    for batch_size, concurrency in [(1, 3), (1, 1), (1, 6), (2, 3)]:
        _finished.clear()
        values = await batch_map(slow_identity, range(6), batch_size=batch_size, concurrency=concurrency)
        seen[f"{batch_size}/{concurrency}"] = {"values": values, "finished": list(_finished)}
    return json.dumps(seen)


@env.task
async def drive_failures() -> str:
    seen: dict[str, Any] = {}

    short = await batch_map(short_for_three, range(6), batch_size=2, return_result=True)
    error = short.outcomes[2].error
    seen["short_statuses"] = [outcome.status.value for outcome in short.outcomes]
    seen["short_error"] = [type(error).__name__, str(error), isinstance(error, BatchLengthError)]

    isolated = await batch_map(fail_on_five, range(9), batch_size=3, concurrency=2, return_result=True)
    seen["isolated_statuses"] = [outcome.status.value for outcome in isolated.outcomes]
    seen["isolated_values"] = isolated.values()
    failure = isolated.outcomes[4].error
    assert failure is not None
    seen["isolated_error"] = [type(failure).__name__, flyte_code(failure), str(failure)]

    try:
        await batch_map(fail_on_five, range(9), batch_size=3, concurrency=1, max_failures=0)
    except BatchError as raised:
        seen["tripped"] = raised.result.tripped
        seen["tripped_statuses"] = [outcome.status.value for outcome in raised.result.outcomes]
        seen["tripped_cause"] = flyte_code(raised.__cause__) if raised.__cause__ is not None else None
    return json.dumps(seen)


@env.task
async def drive_map_reduce() -> str:
    seen: dict[str, Any] = {}
    seen["flyte_combine_and_reduce"] = await map_reduce(
        square_sync, range(10), reduce=add, initial=0, combine=total, batch_size=3
    )
    seen["flyte_reduce_lists"] = await map_reduce(double_all, range(7), reduce=concatenate, initial=[], batch_size=3)
    seen["plain_functions"] = await map_reduce(
        square_sync, range(10), reduce=lambda a, b: a + b, initial=0, combine=sum, batch_size=4
    )
    try:
        await map_reduce(fail_on_five, range(9), reduce=add, initial=0, combine=total, batch_size=3)
    except BatchError as raised:
        seen["failed_statuses"] = [outcome.status.value for outcome in raised.result.outcomes]
    return json.dumps(seen)


@env.task
async def drive_groups() -> str:
    default = await batch_map(group_names, range(5), batch_size=2)
    named = await batch_map(group_names, range(3), batch_size=2, group_name="orders")
    initial: list[str] = []
    folded = await map_reduce(
        group_names, range(3), reduce=group_of_reduce, initial=initial, combine=group_of_combine, batch_size=2
    )
    return json.dumps({"default": default, "named": named, "folded": folded})


@env.task
async def drive_cancel() -> str:
    _calls.clear()
    _cancelled.clear()
    _finished.clear()
    _all_started["sleepers"] = asyncio.Event()
    before = set(asyncio.all_tasks())
    run = asyncio.create_task(batch_map(sleep_one_second, range(5), batch_size=1, concurrency=5))
    await asyncio.wait_for(_all_started["sleepers"].wait(), 10)
    run.cancel()
    outcome = "returned"
    try:
        await run
    except asyncio.CancelledError:
        outcome = "cancelled"
    pending = [task for task in asyncio.all_tasks() if task not in before and task is not asyncio.current_task()]
    return json.dumps(
        {"outcome": outcome, "cancelled": sorted(_cancelled), "finished": _finished, "pending": len(pending)}
    )


async def test_flyte_batches_and_bad_sizes(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_batches))

    assert seen["range7_calls"] == [[0, 1, 2], [3, 4, 5], [6]]
    assert seen["range7"] == [0, 2, 4, 6, 8, 10, 12]
    assert seen["generator7_calls"] == [[0, 1, 2], [3, 4, 5], [6]]
    assert seen["generator7"] == [0, 2, 4, 6, 8, 10, 12]
    assert seen["range6_calls"] == [[0, 1, 2], [3, 4, 5]]
    assert seen["empty"] == []
    assert seen["empty_total"] == -1
    assert seen["empty_calls"] == []
    assert seen["sync_task"] == [0, 1, 4, 9, 16]
    assert seen["rejected"] == ["ValueError", "ValueError", "TypeError", "TypeError", "ValueError"]
    assert seen["rejected_calls"] == []


async def test_flyte_results_in_input_order(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_order))

    for key, run in seen.items():
        assert run["values"] == [0, 1, 2, 3, 4, 5], key
    # With several slots the batches finished out of input order, so the ordering above was really tested.
    assert seen["1/3"]["finished"] != sorted(seen["1/3"]["finished"])
    assert seen["1/6"]["finished"] == [5, 4, 3, 2, 1, 0]


async def test_flyte_failures_isolated(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_failures))

    assert seen["short_statuses"] == ["succeeded"] * 2 + ["failed"] * 2 + ["succeeded"] * 2
    assert seen["short_error"] == [
        "BatchLengthError",
        "batch 1 (items 2 to 3): the task returned 1 results for 2 items; "
        "it must return one result per item, in the order of the batch",
        True,
    ]
    assert seen["isolated_statuses"] == ["succeeded"] * 3 + ["failed"] * 3 + ["succeeded"] * 3
    assert seen["isolated_values"] == [100, 101, 102, None, None, None, 106, 107, 108]
    # Flyte delivers the child's ValueError rebuilt, with the class name as its code and the message kept.
    assert seen["isolated_error"] == ["RuntimeUserError", "ValueError", "bad batch starting at 3"]
    assert seen["tripped"]
    assert seen["tripped_statuses"] == ["succeeded"] * 3 + ["failed"] * 3 + ["not_started"] * 3
    assert seen["tripped_cause"] == "ValueError"


async def test_flyte_map_reduce(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_map_reduce))

    assert seen["flyte_combine_and_reduce"] == sum(item * item for item in range(10))
    assert seen["flyte_reduce_lists"] == [0, 2, 4, 6, 8, 10, 12]
    assert seen["plain_functions"] == sum(item * item for item in range(10))
    assert seen["failed_statuses"] == ["succeeded"] * 3 + ["failed"] * 3 + ["succeeded"] * 3


async def test_flyte_group_per_batch(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_groups))

    assert seen["default"] == ["group_names_batch_map_0"] * 2 + ["group_names_batch_map_1"] * 2 + [
        "group_names_batch_map_2"
    ]
    assert seen["named"] == ["orders_0", "orders_0", "orders_1"]
    # The task, combine and the reduce step that folds a batch in all run in that batch's group.
    assert seen["folded"] == ["group_names_map_reduce_0"] * 4 + ["group_names_map_reduce_1"] * 3


async def test_flyte_caller_cancel(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_cancel))

    assert seen == {"outcome": "cancelled", "cancelled": [0, 1, 2, 3, 4], "finished": [], "pending": 0}
