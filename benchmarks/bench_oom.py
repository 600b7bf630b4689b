"""Measure what retry_with_memory adds to a call, against plain calls measured in the same run.

Run from the repository root after ``make test`` has created ``.venv``::

    .venv/bin/python benchmarks/bench_oom.py           # 7 rounds
    .venv/bin/python benchmarks/bench_oom.py --quick   # 3 rounds of fewer calls

Part 1 times plain async callables in-process: a bare ``await``, and a hand-written ``try``/``except`` that calls
again after a ``MemoryError``, are the baselines. Part 2 times real tasks on the local Flyte engine: a driver task
awaits a child directly, through a hand-written ``override(resources=...)``, or through the retrier with local
enforcement off (the enforcement has its own benchmark). Each figure is the median of several rounds, and in
part 2 the cases take turns within each round, so a burst of load on the shared machine hits them alike.

What the ladder itself costs, in attempts and memory-seconds, is measured by ``bench_memory_ladder.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import flyte
from machine import describe_machine

from flyte_patterns import retry_with_memory

FLYTE_ROOT = Path("/tmp/flyte")


@dataclass(frozen=True)
class Settings:
    """How much to measure: rounds per figure, in-process calls per round, and Flyte calls per case and round."""

    rounds: int
    calls_per_round: int
    flyte_calls: int


FULL = Settings(rounds=7, calls_per_round=5_000, flyte_calls=100)
QUICK = Settings(rounds=3, calls_per_round=2_000, flyte_calls=50)


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


async def median_seconds_per_call(body: Callable[[], Awaitable[object]], settings: Settings) -> float:
    calls = settings.calls_per_round
    await seconds_per_call(body, calls // 10)
    return statistics.median([await seconds_per_call(body, calls) for _ in range(settings.rounds)])


async def in_process(settings: Settings) -> list[tuple[str, float, float]]:
    """Return (case, microseconds per call, ratio to its baseline) for the in-process cases."""
    flaky = FailsEveryOtherCall()

    async def retry_by_hand() -> int:
        try:
            return await flaky(1)
        except MemoryError:
            return await flaky(1)

    direct = await median_seconds_per_call(lambda: succeed(1), settings)
    one_size = await median_seconds_per_call(lambda: retry_with_memory(succeed, 1, sizes=["1Gi"]), settings)
    default_ladder = await median_seconds_per_call(lambda: retry_with_memory(succeed, 1), settings)
    by_hand = await median_seconds_per_call(retry_by_hand, settings)
    escalated = await median_seconds_per_call(lambda: retry_with_memory(flaky, 1, sizes=["1Gi", "2Gi"]), settings)

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
async def driver(calls: int, rounds: int) -> dict[str, float]:
    """Return the median seconds per call for each way of calling the child."""
    modes = ("direct", "override", "retrier")
    per_call: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            started = time.perf_counter()
            for i in range(calls):
                await call_child(mode, i)
            per_call[mode].append((time.perf_counter() - started) / calls)
    return {mode: statistics.median(values) for mode, values in per_call.items()}


def on_flyte(settings: Settings) -> list[tuple[str, float, float]]:
    """Return (case, milliseconds per call, ratio to the direct call) for the local Flyte engine."""
    flyte.init()
    name = f"bench-oom-{uuid.uuid4().hex[:12]}"
    try:
        run = flyte.with_runcontext(name=name).run(driver, settings.flyte_calls, settings.rounds)
        medians: dict[str, float] = run.outputs()[0]
    finally:
        # Flyte 2.12 keeps each local run's metadata and raw data under these folders after the run.
        for folder in ("metadata", "raw_data"):
            shutil.rmtree(FLYTE_ROOT / folder / name, ignore_errors=True)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of fewer calls instead of 7")
    settings = QUICK if parser.parse_args().quick else FULL

    print(describe_machine())
    print_table(
        f"In-process, plain async callables, median of {settings.rounds} rounds of {settings.calls_per_round:,} calls",
        "µs",
        asyncio.run(in_process(settings)),
    )
    print_table(
        f"Local Flyte engine, {settings.flyte_calls} sequential calls per case in each of {settings.rounds} rounds",
        "ms",
        on_flyte(settings),
    )


if __name__ == "__main__":
    main()
