"""Tests for the circuit breaker over real Flyte tasks: a driver task fans out child tasks on the local engine."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import flyte
import pytest

from flyte_patterns import CircuitBreakerError, FanOutResult, RollingWindow, circuit_breaker, flyte_code

from .conftest import RunLocal

pytestmark = pytest.mark.flyte

env = flyte.TaskEnvironment(name="flyte_patterns_test_circuit")

# Child tasks run in-process on the local engine, in the driver's event loop, so they can share state with it.
# Each driver resets what it uses before fanning out.
_started: list[int] = []
_cancelled: list[int] = []
_all_started: dict[str, asyncio.Event] = {}


def _summary(result: FanOutResult[Any]) -> dict[str, Any]:
    return {
        "tripped": result.tripped,
        "rule": None if result.trip is None else result.trip.rule.value,
        "trip_index": None if result.trip is None else result.trip.index,
        "statuses": [outcome.status.value for outcome in result.outcomes],
        "values": result.values(),
        "error_classes": [None if o.error is None else type(o.error).__name__ for o in result.outcomes],
        "error_codes": [None if o.error is None else flyte_code(o.error) for o in result.outcomes],
        "error_messages": [None if o.error is None else str(o.error) for o in result.outcomes],
        "first_error_code": None if result.first_error is None else flyte_code(result.first_error),
    }


@env.task
async def raise_os_error(i: int) -> int:
    raise OSError(i)


@env.task
async def even_or_key_error(i: int) -> int:
    if i % 2:
        raise KeyError(i)
    return i * 10


@env.task
async def only_first_fails(i: int) -> int:
    if i == 0:
        raise ValueError(i)
    return i


@env.task
async def fail_from_twenty(i: int) -> int:
    if i >= 20:
        raise ConnectionError(i)
    return i


@env.task
def double_sync(i: int) -> int:
    return i * 2


@env.task
async def first_fails_others_slow(i: int) -> int:
    _started.append(i)
    if i == 0:
        await asyncio.sleep(0.01)
        raise OSError("first")
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        _cancelled.append(i)
        if i == 9:
            await asyncio.sleep(0.3)
        raise
    return i


@env.task
async def sleep_one_second(i: int) -> int:
    _started.append(i)
    if len(_started) == 5:
        _all_started["sleepers"].set()
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        _cancelled.append(i)
        raise
    return i


@env.task
async def exit_when_others_run(i: int) -> int:
    _started.append(i)
    if i == 0:
        await _all_started["exit"].wait()
        raise SystemExit(3)
    if len(_started) == 4:
        _all_started["exit"].set()
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        _cancelled.append(i)
        raise
    return i


def _group_of_call(i: int) -> str:
    group = flyte.ctx().group_data
    return "" if group is None else group.name


@env.task
async def drive_max_failures() -> str:
    result = await circuit_breaker(raise_os_error, list(range(10)), max_failures=3, concurrency=1)
    small = await circuit_breaker(raise_os_error, list(range(3)), max_failures=2, concurrency=1)
    return json.dumps({"ten": _summary(result), "three": _summary(small)})


@env.task
async def drive_ratio() -> str:
    one_failure = await circuit_breaker(only_first_fails, list(range(10)), max_failure_ratio=0.5, concurrency=1)
    all_fail = await circuit_breaker(raise_os_error, list(range(4)), max_failure_ratio=0.5, concurrency=1)
    return json.dumps({"one_failure": _summary(one_failure), "all_fail": _summary(all_fail)})


@env.task
async def drive_positions() -> str:
    result = await circuit_breaker(even_or_key_error, list(range(6)), concurrency=6)
    return json.dumps(_summary(result))


@env.task
async def drive_rolling_window() -> str:
    window = RollingWindow(size=5, failure_rate=0.6)
    result = await circuit_breaker(fail_from_twenty, list(range(40)), rolling_window=window, concurrency=1)
    return json.dumps(_summary(result))


@env.task
async def drive_trip_cancels() -> str:
    _started.clear()
    _cancelled.clear()
    before = set(asyncio.all_tasks())
    start = time.perf_counter()
    try:
        await circuit_breaker(
            first_fails_others_slow, list(range(10)), max_failures=0, concurrency=10, raise_on_trip=True
        )
    except CircuitBreakerError as error:
        elapsed = time.perf_counter() - start
        pending = [task for task in asyncio.all_tasks() if task not in before and task is not asyncio.current_task()]
        summary = _summary(error.result)
        summary.update(
            elapsed=elapsed,
            pending=len(pending),
            cancelled=sorted(_cancelled),
            cause_code=flyte_code(error.__cause__) if error.__cause__ is not None else None,
            cause_message=str(error.__cause__),
        )
        return json.dumps(summary)
    return json.dumps({})


@env.task
async def drive_caller_cancel() -> str:
    _started.clear()
    _cancelled.clear()
    _all_started["sleepers"] = asyncio.Event()
    before = set(asyncio.all_tasks())
    fan = asyncio.create_task(circuit_breaker(sleep_one_second, list(range(5)), concurrency=5))
    await asyncio.wait_for(_all_started["sleepers"].wait(), 10)
    fan.cancel()
    outcome = "returned"
    try:
        await fan
    except asyncio.CancelledError:
        outcome = "cancelled"
    pending = [task for task in asyncio.all_tasks() if task not in before and task is not asyncio.current_task()]
    return json.dumps({"outcome": outcome, "cancelled": sorted(_cancelled), "pending": len(pending)})


@env.task
async def drive_interrupt() -> str:
    _started.clear()
    _cancelled.clear()
    _all_started["exit"] = asyncio.Event()
    before = set(asyncio.all_tasks())
    try:
        await circuit_breaker(exit_when_others_run, list(range(8)), concurrency=4, max_failures=0)
    except SystemExit as exc:
        pending = [task for task in asyncio.all_tasks() if task not in before and task is not asyncio.current_task()]
        return json.dumps(
            {"code": exc.code, "started": sorted(_started), "cancelled": sorted(_cancelled), "pending": len(pending)}
        )
    return json.dumps({})


@env.task
async def drive_sync_task_and_group() -> str:
    doubled = await circuit_breaker(double_sync, list(range(4)))
    default_group = await circuit_breaker(_group_of_call, [0])
    named_group = await circuit_breaker(_group_of_call, [0], group_name="orders")
    return json.dumps(
        {
            "doubled": doubled.values(),
            "default_group": default_group.values(),
            "named_group": named_group.values(),
        }
    )


async def test_flyte_max_failures_exact(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_max_failures))

    ten = seen["ten"]
    assert ten["tripped"]
    assert ten["rule"] == "max_failures"
    assert ten["statuses"] == ["failed"] * 4 + ["not_started"] * 6
    # Flyte delivers each OSError rebuilt, with the class name as its code and the message kept.
    assert ten["error_classes"][:4] == ["RuntimeUserError"] * 4
    assert ten["error_codes"][:4] == ["OSError"] * 4
    assert ten["error_messages"][:4] == ["0", "1", "2", "3"]
    assert seen["three"]["tripped"]
    assert seen["three"]["statuses"] == ["failed"] * 3


async def test_flyte_ratio_denominator(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_ratio))

    assert not seen["one_failure"]["tripped"]
    assert seen["one_failure"]["values"] == [None, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert seen["all_fail"]["tripped"]
    assert seen["all_fail"]["rule"] == "max_failure_ratio"
    assert seen["all_fail"]["statuses"] == ["failed"] * 3 + ["not_started"]


async def test_flyte_partial_results_positions(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_positions))

    assert seen["values"] == [0, None, 20, None, 40, None]
    assert seen["statuses"] == ["succeeded", "failed"] * 3
    assert seen["error_codes"] == [None, "KeyError"] * 3


async def test_flyte_rolling_window(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_rolling_window))

    assert seen["rule"] == "rolling_window"
    assert seen["trip_index"] == 22
    assert seen["statuses"].count("succeeded") == 20
    assert seen["statuses"].count("not_started") == 17


async def test_flyte_trip_cancels_and_awaits(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_trip_cancels))

    assert 0.3 <= seen["elapsed"] < 0.9
    assert seen["pending"] == 0
    assert seen["cancelled"] == list(range(1, 10))
    assert seen["statuses"] == ["failed"] + ["cancelled"] * 9
    assert seen["cause_code"] == "OSError"
    assert seen["cause_message"] == "first"


async def test_flyte_caller_cancel(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_caller_cancel))

    assert seen == {"outcome": "cancelled", "cancelled": [0, 1, 2, 3, 4], "pending": 0}


async def test_flyte_interrupt_stops_everything(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_interrupt))

    assert seen == {"code": 3, "started": [0, 1, 2, 3], "cancelled": [1, 2, 3], "pending": 0}


async def test_flyte_sync_task_and_group(run_local: RunLocal) -> None:
    seen = json.loads(await run_local(drive_sync_task_and_group))

    assert seen["doubled"] == [0, 2, 4, 6]
    assert seen["default_group"] == ["_group_of_call_circuit_breaker"]
    assert seen["named_group"] == ["orders"]
