"""The patterns composed on the real local Flyte engine: outcomes and errors stay correct, and nothing leaks.

Each test runs a driver task with the ``run_local`` fixture. The driver composes the patterns over child tasks,
which the local engine runs in the driver's event loop, so the driver can compare ``asyncio.all_tasks()`` and the
child processes of the test process before and after, and report everything as JSON.

The OOM retrier enforces each attempt's memory size locally by running the child task's body in a forked process,
so the compositions that contain it also check that every such process was killed and reaped.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import flyte
import pytest

from flyte_patterns import (
    AllAttemptsFailedError,
    AttemptTimeoutError,
    BatchError,
    CircuitBreakerError,
    FanOutResult,
    MemoryLadderExhaustedError,
    MemoryRetryEvent,
    batch_map,
    circuit_breaker,
    circuit_breaker_execute,
    flyte_code,
    format_memory,
    retry_with_memory,
    with_fallback,
)

from .conftest import RunLocal
from .robust_support import child_pids

pytestmark = pytest.mark.flyte

env = flyte.TaskEnvironment(name="flyte_patterns_test_composition")

MIB = 2**20

# Child tasks run in the driver's event loop on the local engine, so they can share state with it.
_calls: list[str] = []


@env.task
async def allocate(size_mib: int) -> int:
    """Allocate ``size_mib`` MiB and return the byte count. A negative size raises ValueError."""
    block = bytearray(size_mib * MIB)
    return len(block)


@env.task
async def allocate_and_sleep(size_mib: int, seconds: float) -> int:
    block = bytearray(size_mib * MIB)
    await asyncio.sleep(seconds)
    return len(block)


@env.task
async def flaky(i: int) -> int:
    _calls.append(f"flaky {i}")
    if i % 2:
        raise ConnectionError(f"no answer for {i}")
    return i


@env.task
async def steady(i: int) -> int:
    _calls.append(f"steady {i}")
    return i * 100


@env.task
async def slow(i: int) -> int:
    _calls.append(f"slow {i}")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        _calls.append(f"slow {i} cancelled")
        raise
    return i


@env.task
async def allocate_each(sizes_mib: list[int]) -> list[int]:
    """Allocate every size of the batch at once, and return the byte counts."""
    blocks = [bytearray(size * MIB) for size in sizes_mib]
    return [len(block) for block in blocks]


@env.task
async def flaky_batch(batch: list[int]) -> list[int]:
    _calls.append(f"flaky batch {batch}")
    if 3 in batch:
        raise ConnectionError(f"no answer for {batch}")
    return [i * 10 for i in batch]


@env.task
async def steady_batch(batch: list[int]) -> list[int]:
    _calls.append(f"steady batch {batch}")
    return [i * 100 for i in batch]


@env.task
async def slow_batch(batch: list[int]) -> list[int]:
    _calls.append(f"slow batch {batch}")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        _calls.append(f"slow batch {batch} cancelled")
        raise
    return batch


@env.task
async def gpu_model(i: int) -> str:
    if i == 4:
        raise KeyError(i)
    if i % 2:
        raise MemoryError(f"no room on the device for {i}")
    return f"gpu {i}"


@env.task
async def cpu_model(i: int) -> str:
    return f"cpu {i}"


def _pending(before: set[asyncio.Task[Any]]) -> int:
    current = asyncio.current_task()
    return len([task for task in asyncio.all_tasks() if task not in before and task is not current])


def _describe_error(error: BaseException | None) -> list[Any] | None:
    if error is None:
        return None
    return [type(error).__name__, flyte_code(error)]


def _summary(result: FanOutResult[Any]) -> dict[str, Any]:
    return {
        "statuses": [outcome.status.value for outcome in result.outcomes],
        "values": result.values(),
        "errors": [_describe_error(outcome.error) for outcome in result.outcomes],
        "trip_index": None if result.trip is None else result.trip.index,
    }


async def _wait_for_children(count: int) -> None:
    """Wait until at least ``count`` processes run below the test process, for at most 20 seconds."""
    async with asyncio.timeout(20):
        while len(child_pids()) < count:  # noqa: ASYNC110 - no event marks the start of a process
            await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def _no_stray_children() -> Any:
    before = child_pids()
    yield
    assert child_pids() - before == set()


# ---------------------------------------------------------------- the OOM retrier inside circuit-breaker items


@env.task
async def drive_retrier_in_breaker() -> str:
    before = asyncio.all_tasks()
    children_before = child_pids()
    sizes: dict[int, list[str]] = {}

    async def item(size_mib: int) -> int:
        tried = sizes.setdefault(size_mib, [])

        def record(event: MemoryRetryEvent) -> None:
            if event.kind == "attempt":
                tried.append(format_memory(event.size))

        return await retry_with_memory(allocate, size_mib, sizes=["64Mi", "256Mi"], on_event=record)

    # 8 to 10 MiB fit the first size, 100 MiB the second, 400 MiB neither, and -1 is a ValueError in the task.
    result = await circuit_breaker(item, [8, 100, 9, 400, -1, 10], max_failures=1, concurrency=1)
    exhausted = result.outcomes[3].error
    return json.dumps(
        {
            **_summary(result),
            "sizes": {str(size): tried for size, tried in sizes.items()},
            "exhausted_sizes": [format_memory(size) for size in exhausted.sizes]
            if isinstance(exhausted, MemoryLadderExhaustedError)
            else None,
            "pending": _pending(before),
            "children": sorted(child_pids() - children_before),
        }
    )


async def test_retrier_in_breaker_items(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_retrier_in_breaker))

    assert outcome["statuses"] == ["succeeded", "succeeded", "succeeded", "failed", "failed", "not_started"]
    assert outcome["values"] == [8 * MIB, 100 * MIB, 9 * MIB, None, None, None]
    assert outcome["errors"][3] == ["MemoryLadderExhaustedError", "OOMKilled"]
    assert outcome["errors"][4] == ["RuntimeUserError", "ValueError"]
    assert outcome["exhausted_sizes"] == ["64Mi", "256Mi"]
    assert outcome["sizes"] == {
        "8": ["64Mi"],
        "100": ["64Mi", "256Mi"],
        "9": ["64Mi"],
        "400": ["64Mi", "256Mi"],
        "-1": ["64Mi"],
    }
    assert outcome["trip_index"] == 4
    assert outcome["pending"] == 0
    assert outcome["children"] == []


@env.task
async def drive_trip_kills_children() -> str:
    before = asyncio.all_tasks()
    children_before = child_pids()
    events: dict[int, list[str]] = {}

    async def item(i: int) -> int:
        kinds = events.setdefault(i, [])
        if i == 0:
            # Fail only once the other items' attempts run in child processes of their own.
            await _wait_for_children(len(children_before) + 2)
            raise OSError("the first item failed")
        return await retry_with_memory(
            allocate_and_sleep, 8, 30.0, sizes=["256Mi"], on_event=lambda event: kinds.append(event.kind)
        )

    started = time.monotonic()
    result = await circuit_breaker(item, range(5), max_failures=0, concurrency=3)
    return json.dumps(
        {
            **_summary(result),
            "elapsed": time.monotonic() - started,
            "events": {str(i): kinds for i, kinds in events.items()},
            "pending": _pending(before),
            "children": sorted(child_pids() - children_before),
        }
    )


async def test_trip_kills_retrier_children(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_trip_kills_children))

    assert outcome["statuses"] == ["failed", "cancelled", "cancelled", "not_started", "not_started"]
    assert outcome["errors"][0] == ["OSError", None]
    assert outcome["events"] == {"0": [], "1": ["attempt", "cancelled"], "2": ["attempt", "cancelled"]}
    # The children sleep 30 s unless the trip kills them.
    assert outcome["elapsed"] < 20
    assert outcome["pending"] == 0
    assert outcome["children"] == []


# ---------------------------------------------------------------- a breaker inside a fallback


@env.task
async def drive_breaker_in_fallback() -> str:
    _calls.clear()
    before = asyncio.all_tasks()

    async def through_flaky(items: list[int]) -> list[int | None]:
        return await circuit_breaker_execute(flaky, items, 1, concurrency=1)

    async def through_steady(items: list[int]) -> list[int | None]:
        return await circuit_breaker_execute(steady, items, 1, concurrency=1)

    outcome = await with_fallback(
        through_flaky, [through_steady], list(range(6)), on=CircuitBreakerError, return_outcome=True
    )
    first = outcome.attempts[0]
    assert isinstance(first.error, CircuitBreakerError)
    return json.dumps(
        {
            "value": outcome.value,
            "served_by": outcome.index,
            "attempts": [[attempt.index, attempt.status] for attempt in outcome.attempts],
            "tripped_result": _summary(first.error.result),
            "cause": _describe_error(first.error.__cause__),
            "calls": _calls,
            "pending": _pending(before),
        }
    )


async def test_breaker_inside_fallback(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_breaker_in_fallback))

    assert outcome["value"] == [0, 100, 200, 300, 400, 500]
    assert outcome["served_by"] == 1
    assert outcome["attempts"] == [[0, "failed"], [1, "succeeded"]]
    # Items 1 and 3 fail, and the second failure trips the primary's breaker.
    assert outcome["tripped_result"]["statuses"] == [
        "succeeded",
        "failed",
        "succeeded",
        "failed",
        "not_started",
        "not_started",
    ]
    assert outcome["tripped_result"]["values"] == [0, None, 2, None, None, None]
    assert outcome["cause"] == ["RuntimeUserError", "ConnectionError"]
    assert outcome["calls"] == [f"flaky {i}" for i in range(4)] + [f"steady {i}" for i in range(6)]
    assert outcome["pending"] == 0


@env.task
async def drive_slow_breaker_timed_out() -> str:
    _calls.clear()
    before = asyncio.all_tasks()

    async def through_slow(items: list[int]) -> list[int | None]:
        return await circuit_breaker_execute(slow, items, concurrency=3)

    async def through_steady(items: list[int]) -> list[int | None]:
        return await circuit_breaker_execute(steady, items, concurrency=3)

    started = time.monotonic()
    outcome = await with_fallback(
        through_slow, [through_steady], list(range(5)), attempt_timeout=0.5, return_outcome=True
    )
    first = outcome.attempts[0]
    return json.dumps(
        {
            "value": outcome.value,
            "elapsed": time.monotonic() - started,
            "first": [first.status, type(first.error).__name__, isinstance(first.error, AttemptTimeoutError)],
            "calls": _calls,
            "pending": _pending(before),
        }
    )


async def test_attempt_timeout_cancels_breaker(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_slow_breaker_timed_out))

    assert outcome["value"] == [0, 100, 200, 300, 400]
    assert outcome["first"] == ["timed_out", "AttemptTimeoutError", True]
    # The breaker ran three slow items at a time; the timeout cancelled all three, and none of the others started.
    slow_calls = [call for call in outcome["calls"] if call.startswith("slow")]
    assert sorted(slow_calls) == [
        "slow 0",
        "slow 0 cancelled",
        "slow 1",
        "slow 1 cancelled",
        "slow 2",
        "slow 2 cancelled",
    ]
    assert outcome["elapsed"] < 20
    assert outcome["pending"] == 0


# ---------------------------------------------------------------- a fallback inside breaker items


@env.task
async def drive_fallback_in_breaker() -> str:
    before = asyncio.all_tasks()

    async def item(i: int) -> str:
        return await with_fallback(gpu_model, [cpu_model], i)

    result = await circuit_breaker(item, range(6), concurrency=3)
    key_error = result.outcomes[4].error
    return json.dumps(
        {
            **_summary(result),
            "key_error_notes": getattr(key_error, "__notes__", []),
            "pending": _pending(before),
        }
    )


async def test_fallback_in_breaker_items(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_fallback_in_breaker))

    # Odd items run out of memory on the GPU model and fall back; item 4 raises an error no trigger matches.
    assert outcome["statuses"] == ["succeeded"] * 4 + ["failed", "succeeded"]
    assert outcome["values"] == ["gpu 0", "cpu 1", "gpu 2", "cpu 3", None, "cpu 5"]
    assert outcome["errors"][4] == ["RuntimeUserError", "KeyError"]
    assert outcome["key_error_notes"] == []
    assert outcome["pending"] == 0


# ---------------------------------------------------------------- the OOM retrier inside a fallback, cancelled


@env.task
async def drive_cancelled_retrier_in_fallback() -> str:
    _calls.clear()
    before = asyncio.all_tasks()
    children_before = child_pids()
    kinds: list[str] = []

    async def sleeper() -> int:
        return await retry_with_memory(
            allocate_and_sleep, 8, 30.0, sizes=["256Mi"], on_event=lambda event: kinds.append(event.kind)
        )

    async def alternative() -> int:
        _calls.append("alternative")
        return 0

    call = asyncio.create_task(with_fallback(sleeper, [alternative], on=Exception))
    await _wait_for_children(len(children_before) + 1)
    call.cancel()
    outcome = "returned"
    try:
        await call
    except asyncio.CancelledError:
        outcome = "cancelled"
    return json.dumps(
        {
            "outcome": outcome,
            "events": kinds,
            "calls": _calls,
            "pending": _pending(before),
            "children": sorted(child_pids() - children_before),
        }
    )


async def test_cancelled_retrier_in_fallback(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_cancelled_retrier_in_fallback))

    assert outcome["outcome"] == "cancelled"
    assert outcome["events"] == ["attempt", "cancelled"]
    assert outcome["calls"] == []
    assert outcome["pending"] == 0
    assert outcome["children"] == []


@env.task
async def drive_exhausted_retrier_falls_back() -> str:
    outcome = await with_fallback(
        _retry_allocate, [_smaller_allocation], 400, return_outcome=True, on=MemoryLadderExhaustedError
    )
    all_failed: list[str] = []
    try:
        await with_fallback(_retry_allocate, [_retry_allocate], 400)
    except AllAttemptsFailedError as error:
        all_failed = [type(member).__name__ for member in error.exceptions]
    return json.dumps({"value": outcome.value, "served_by": outcome.index, "all_failed": all_failed})


async def _retry_allocate(size_mib: int) -> int:
    return await retry_with_memory(allocate, size_mib, sizes=["64Mi", "128Mi"])


async def _smaller_allocation(size_mib: int) -> int:
    return await retry_with_memory(allocate, size_mib // 8, sizes=["64Mi", "128Mi"])


async def test_exhausted_retrier_falls_back(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_exhausted_retrier_falls_back))

    assert outcome["value"] == 50 * MIB
    assert outcome["served_by"] == 1
    # The default trigger, is_out_of_memory, takes over on an exhausted ladder: its code is OOMKilled.
    assert outcome["all_failed"] == ["MemoryLadderExhaustedError", "MemoryLadderExhaustedError"]


# ---------------------------------------------------------------- the batcher in a fallback, the retrier in batches


@env.task
async def drive_fallback_around_batch_map() -> str:
    _calls.clear()
    before = asyncio.all_tasks()

    async def through_flaky(items: list[int]) -> list[int]:
        return await batch_map(flaky_batch, items, batch_size=2, concurrency=1, max_failures=0, progress_bar=False)

    async def through_steady(items: list[int]) -> list[int]:
        return await batch_map(steady_batch, items, batch_size=3, concurrency=2, progress_bar=False)

    outcome = await with_fallback(through_flaky, [through_steady], list(range(6)), on=BatchError, return_outcome=True)
    first = outcome.attempts[0].error
    assert isinstance(first, BatchError)
    return json.dumps(
        {
            "value": outcome.value,
            "served_by": outcome.index,
            "statuses": [outcome.status.value for outcome in first.result.outcomes],
            "cause": _describe_error(first.__cause__),
            "calls": sorted(_calls),
            "pending": _pending(before),
        }
    )


async def test_fallback_around_batch_map(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_fallback_around_batch_map))

    assert outcome["value"] == [0, 100, 200, 300, 400, 500]
    assert outcome["served_by"] == 1
    # Batch [2, 3] fails and stops the primary's run; batch [4, 5] never starts.
    assert outcome["statuses"] == ["succeeded", "succeeded", "failed", "failed", "not_started", "not_started"]
    assert outcome["cause"] == ["RuntimeUserError", "ConnectionError"]
    assert outcome["calls"] == sorted(
        ["flaky batch [0, 1]", "flaky batch [2, 3]", "steady batch [0, 1, 2]", "steady batch [3, 4, 5]"]
    )
    assert outcome["pending"] == 0


@env.task
async def drive_batch_map_timed_out() -> str:
    _calls.clear()
    before = asyncio.all_tasks()

    async def through_slow(items: list[int]) -> list[int]:
        return await batch_map(slow_batch, items, batch_size=2, concurrency=2, progress_bar=False)

    async def through_steady(items: list[int]) -> list[int]:
        return await batch_map(steady_batch, items, batch_size=2, concurrency=2, progress_bar=False)

    started = time.monotonic()
    outcome = await with_fallback(
        through_slow, [through_steady], list(range(6)), attempt_timeout=0.5, return_outcome=True
    )
    return json.dumps(
        {
            "value": outcome.value,
            "first": outcome.attempts[0].status,
            "elapsed": time.monotonic() - started,
            "slow_calls": sorted(call for call in _calls if call.startswith("slow")),
            "pending": _pending(before),
        }
    )


async def test_attempt_timeout_cancels_batch_map(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_batch_map_timed_out))

    assert outcome["value"] == [0, 100, 200, 300, 400, 500]
    assert outcome["first"] == "timed_out"
    # Two slow batches ran at a time; the timeout cancelled both, and the third never started.
    assert outcome["slow_calls"] == [
        "slow batch [0, 1]",
        "slow batch [0, 1] cancelled",
        "slow batch [2, 3]",
        "slow batch [2, 3] cancelled",
    ]
    assert outcome["elapsed"] < 20
    assert outcome["pending"] == 0


@env.task
async def drive_retrier_in_batches() -> str:
    before = asyncio.all_tasks()
    children_before = child_pids()
    climbs: list[list[str]] = []

    async def batch_task(batch: list[int]) -> list[int]:
        sizes: list[str] = []
        climbs.append(sizes)

        def record(event: MemoryRetryEvent) -> None:
            if event.kind == "attempt":
                sizes.append(format_memory(event.size))

        return await retry_with_memory(allocate_each, batch, sizes=["64Mi", "256Mi"], on_event=record)

    # The batch [50, 60] needs more than 64Mi, and [300, 1] more than the ceiling.
    result = await batch_map(batch_task, [8, 9, 50, 60, 300, 1], batch_size=2, concurrency=1, return_result=True)
    return json.dumps(
        {
            "statuses": [outcome.status.value for outcome in result.outcomes],
            "values": result.values(),
            "errors": [_describe_error(outcome.error) for outcome in result.outcomes],
            "climbs": climbs,
            "pending": _pending(before),
            "children": sorted(child_pids() - children_before),
        }
    )


async def test_retrier_in_batches(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive_retrier_in_batches))

    assert outcome["statuses"] == ["succeeded"] * 4 + ["failed"] * 2
    assert outcome["values"] == [8 * MIB, 9 * MIB, 50 * MIB, 60 * MIB, None, None]
    assert outcome["errors"][4] == ["MemoryLadderExhaustedError", "OOMKilled"]
    assert outcome["climbs"] == [["64Mi"], ["64Mi", "256Mi"], ["64Mi", "256Mi"]]
    assert outcome["pending"] == 0
    assert outcome["children"] == []
