"""Measure what retry_with_memory adds to a call, against plain calls measured in the same run.

Run from the repository root after ``make test`` has created ``.venv``::

    .venv/bin/python benchmarks/bench_oom.py

Part 1 times plain async callables in-process: a bare ``await``, and a hand-written ``try``/``except`` that calls
again after a ``MemoryError``, are the baselines. Part 2 times real tasks on the local Flyte engine: a driver task
awaits a child directly, through a hand-written ``override(resources=...)``, or through the retrier with local
enforcement off (the enforcement has its own benchmark). Each figure is the median of several rounds, and in
part 2 the cases take turns within each round, so a burst of load on the shared machine hits them alike.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import flyte

from flyte_patterns import retry_with_memory

ROUNDS = 7
CALLS_PER_ROUND = 5_000
FLYTE_CALLS = 100
FLYTE_METADATA_ROOT = Path("/tmp/flyte/metadata")


async def succeed(x: int) -> int:
    return x


class FailsEveryOtherCall:
    """An async callable that raises MemoryError on every other call, so each retry succeeds on its second try."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, x: int) -> int:
        self.calls += 1
        if self.calls % 2:
            raise MemoryError("simulated")
        return x


async def seconds_per_call(body: Callable[[], Awaitable[object]], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await body()
    return (time.perf_counter() - started) / calls


async def median_seconds_per_call(body: Callable[[], Awaitable[object]]) -> float:
    await seconds_per_call(body, CALLS_PER_ROUND // 10)
    return statistics.median([await seconds_per_call(body, CALLS_PER_ROUND) for _ in range(ROUNDS)])


async def in_process() -> list[tuple[str, float, float]]:
    """Return (case, microseconds per call, ratio to its baseline) for the in-process cases."""
    flaky = FailsEveryOtherCall()

    async def retry_by_hand() -> int:
        try:
            return await flaky(1)
        except MemoryError:
            return await flaky(1)

    direct = await median_seconds_per_call(lambda: succeed(1))
    one_size = await median_seconds_per_call(lambda: retry_with_memory(succeed, 1, sizes=["1Gi"]))
    default_ladder = await median_seconds_per_call(lambda: retry_with_memory(succeed, 1))
    by_hand = await median_seconds_per_call(retry_by_hand)
    escalated = await median_seconds_per_call(lambda: retry_with_memory(flaky, 1, sizes=["1Gi", "2Gi"]))

    return [
        ("direct await (baseline)", direct * 1e6, 1.0),
        ("retry_with_memory, explicit ladder of one size", one_size * 1e6, one_size / direct),
        ("retry_with_memory, default ladder of 21 sizes", default_ladder * 1e6, default_ladder / direct),
        ("hand-written retry after MemoryError (baseline)", by_hand * 1e6, 1.0),
        ("retry_with_memory, one escalation (WARNING record to a NullHandler)", escalated * 1e6, escalated / by_hand),
    ]


env = flyte.TaskEnvironment(name="flyte_patterns_bench_oom", resources=flyte.Resources(cpu=1, memory="1Gi"))


@env.task
async def child(x: int) -> int:
    return x


async def call_child(mode: str, i: int) -> None:
    if mode == "direct":
        await child(i)
    elif mode == "override":
        await child.override(resources=flyte.Resources(cpu=1, memory=("1Gi", "1Gi")))(i)
    else:
        await retry_with_memory(child, i, sizes=["1Gi"], enforce_locally=False)


@env.task
async def driver(calls: int) -> dict[str, float]:
    """Return the median seconds per call for each way of calling the child."""
    modes = ("direct", "override", "retrier")
    per_call: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(ROUNDS):
        for mode in modes:
            started = time.perf_counter()
            for i in range(calls):
                await call_child(mode, i)
            per_call[mode].append((time.perf_counter() - started) / calls)
    return {mode: statistics.median(values) for mode, values in per_call.items()}


def on_flyte() -> list[tuple[str, float, float]]:
    """Return (case, milliseconds per call, ratio to the direct call) for the local Flyte engine."""
    flyte.init()
    name = f"bench-oom-{uuid.uuid4().hex[:12]}"
    try:
        run = flyte.with_runcontext(name=name).run(driver, FLYTE_CALLS)
        medians: dict[str, float] = run.outputs()[0]
    finally:
        shutil.rmtree(FLYTE_METADATA_ROOT / name, ignore_errors=True)
    direct = medians["direct"]
    return [
        ("driver awaits child directly (baseline)", direct * 1e3, 1.0),
        ("driver awaits child.override(resources=...)", medians["override"] * 1e3, medians["override"] / direct),
        ("driver awaits retry_with_memory(child), one size", medians["retrier"] * 1e3, medians["retrier"] / direct),
    ]


def print_table(title: str, unit: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{title}\n")
    print(f"| case | {unit} per call | ratio to baseline |")
    print("|---|---:|---:|")
    for case, value, ratio in rows:
        print(f"| {case} | {value:.2f} | {ratio:.2f} |")


def main() -> None:
    # The library logger has a NullHandler; keep the escalation warnings away from Python's last-resort handler.
    logging.getLogger("flyte_patterns").propagate = False
    print_table("In-process, plain async callables", "µs", asyncio.run(in_process()))
    print_table(
        f"Local Flyte engine, {FLYTE_CALLS} sequential calls per case in each of {ROUNDS} rounds", "ms", on_flyte()
    )


if __name__ == "__main__":
    main()
