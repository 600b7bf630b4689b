"""Measure the cost and the precision of local memory enforcement.

Run from the repository root::

    .venv/bin/python benchmarks/bench_local_memory.py           # 300 calls per overhead row, 5 kills per overshoot row
    .venv/bin/python benchmarks/bench_local_memory.py --quick   # 100 calls and 2 kills

It prints Markdown tables for ``docs/benchmarks.md``:

1. Overhead per call: a trivial async function awaited in-process against the same function under
   ``run_with_memory_limit``, and a trivial Flyte task against its ``enforce_local_memory`` copy, both awaited
   from a driver task on the local engine. Baseline and enforced calls alternate, so both see the same machine.
2. Overshoot: a body allocates past its limit. "At kill" is how far past the limit the memory was at the
   measurement that killed the child. "Peak" is the kernel's high-water mark of the child's resident memory above
   the parent's anonymous memory at the fork. The peak also counts file pages the child touched, such as
   interpreter code, so it overstates the growth by a few MiB.
   The plain callable is timed a second time with 1 GiB more allocated in the parent, because fork time grows with the
   parent's resident memory.
3. Watcher CPU: the parent's CPU time while a child sleeps far below its limit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import flyte
import psutil
from machine import describe_machine

from flyte_patterns import enforce_local_memory, run_with_memory_limit

MB = 10**6
MI = 2**20
GI = 2**30


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


async def trivial() -> int:
    return 1


env = flyte.TaskEnvironment(name="flyte_patterns_bench_local_memory", resources=flyte.Resources(memory="1Gi"))


@env.task
async def trivial_task() -> int:
    return 1


ENFORCED_TRIVIAL_TASK = enforce_local_memory(trivial_task)


@env.task
async def time_task_calls(calls: int) -> list[list[float]]:
    """Await the plain and the enforced task alternately and return the seconds each call took."""
    plain: list[float] = []
    enforced: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        await trivial_task()
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        await ENFORCED_TRIVIAL_TASK()
        enforced.append(time.perf_counter() - start)
    return [plain, enforced]


async def time_callable_calls(calls: int) -> tuple[list[float], list[float]]:
    plain: list[float] = []
    enforced: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        await trivial()
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        await run_with_memory_limit(trivial, limit="1Gi")
        enforced.append(time.perf_counter() - start)
    return plain, enforced


def overhead_row(name: str, plain: list[float], enforced: list[float]) -> str:
    plain_ms = [seconds * 1000 for seconds in plain]
    enforced_ms = [seconds * 1000 for seconds in enforced]
    plain_median = statistics.median(plain_ms)
    enforced_median = statistics.median(enforced_ms)
    return (
        f"| {name} | {len(plain)} | {plain_median:.3f} | {percentile(plain_ms, 0.95):.3f} "
        f"| {enforced_median:.2f} | {percentile(enforced_ms, 0.95):.2f} "
        f"| {enforced_median - plain_median:.2f} | {percentile(enforced_ms, 0.95) - percentile(plain_ms, 0.95):.2f} "
        f"| {enforced_median / plain_median:.0f} |"
    )


@dataclass(frozen=True)
class Kill:
    memory_limit: int
    memory_at_kill: int
    peak_growth: int | None


class KillRecorder(logging.Handler):
    """Collects the structured fields of the log record written for each kill."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.kills: list[Kill] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = vars(record)
        if "memory_at_kill" in fields:
            self.kills.append(Kill(fields["memory_limit"], fields["memory_at_kill"], fields["peak_growth"]))


def allocate_at_once(size: int) -> int:
    return len(bytearray(size))


def allocate_in_chunks(size: int) -> int:
    chunks = [bytearray(10 * MB) for _ in range(size // (10 * MB))]
    return sum(len(chunk) for chunk in chunks)


async def measure_overshoot(
    recorder: KillRecorder, body: Callable[[int], int], size: int, limit: int, repeats: int
) -> list[Kill]:
    recorder.kills.clear()
    for _ in range(repeats):
        try:
            await run_with_memory_limit(body, size, limit=limit)
        except flyte.errors.OOMError:
            continue
        raise RuntimeError(f"{body.__name__}({size}) was not killed under a limit of {limit} bytes")
    return list(recorder.kills)


def overshoot_row(style: str, size: int, limit: int, kills: list[Kill]) -> str:
    at_kill = [(kill.memory_at_kill - limit) / limit * 100 for kill in kills]
    peaks = [(kill.peak_growth - limit) / limit * 100 for kill in kills if kill.peak_growth is not None]
    return (
        f"| {style} | {size // MB} MB | {limit // MI}Mi | {len(kills)} | {statistics.median(at_kill):.1f}% "
        f"| {max(at_kill):.1f}% | {statistics.median(peaks):.1f}% | {max(peaks):.1f}% |"
    )


async def watcher_cpu(seconds: float) -> float:
    """Return the parent's CPU time, as a share of one core, while a child sleeps far below its limit."""
    wall = time.perf_counter()
    cpu = time.process_time()
    await run_with_memory_limit(time.sleep, seconds, limit="1Gi")
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


async def main(calls: int, repeats: int) -> None:
    flyte.init()
    resident = psutil.Process().memory_info().rss
    print(describe_machine())
    print(f"resident memory of the benchmark process before the fork: {resident // MI} MiB")
    print()

    print(
        "| calls | n | in-process median ms | in-process p95 ms | enforced median ms | enforced p95 ms "
        "| overhead median ms | overhead p95 ms | ratio of medians |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    plain, enforced = await time_callable_calls(calls)
    print(overhead_row("plain async callable", plain, enforced))
    run_name = f"bench-local-memory-{os.getpid()}"
    try:
        run = await flyte.with_runcontext(name=run_name).run.aio(time_task_calls, calls)
        task_plain, task_enforced = run.outputs()[0]
    finally:
        # Flyte 2.12 keeps each local run's metadata and raw data under these folders after the run.
        for folder in ("metadata", "raw_data"):
            shutil.rmtree(Path("/tmp/flyte") / folder / run_name, ignore_errors=True)
    print(overhead_row("Flyte task from a driver", task_plain, task_enforced))
    # The kernel copies the parent's page tables at each fork, so a larger parent forks more slowly.
    ballast = bytearray(GI)
    plain, enforced = await time_callable_calls(calls)
    print(overhead_row("plain async callable, parent 1 GiB larger", plain, enforced))
    del ballast
    print()

    recorder = KillRecorder()
    logger = logging.getLogger("flyte_patterns.local_memory")
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    print("| allocation | size | limit | kills | at kill, median | at kill, max | peak, median | peak, max |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    trials = [(100 * MB, 50 * MI), (250 * MB, 150 * MI), (500 * MB, 250 * MI), (1000 * MB, 500 * MI)]
    trials.append((1000 * MB, 900 * MI))
    styles: list[tuple[str, Callable[[int], int]]] = [
        ("one bytearray", allocate_at_once),
        ("10 MB chunks", allocate_in_chunks),
    ]
    for style, body in styles:
        for size, limit in trials:
            kills = await measure_overshoot(recorder, body, size, limit, repeats)
            print(overshoot_row(style, size, limit, kills))
    print()

    share = await watcher_cpu(2.0)
    print(f"parent CPU while a child sleeps 2 s far below its limit: {share * 100:.2f}% of one core")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 calls and 2 kills instead of 300 and 5")
    parser.add_argument("--calls", type=int, help="calls per overhead measurement (default 300, or 100 with --quick)")
    parser.add_argument("--repeats", type=int, help="kills per overshoot measurement (default 5, or 2 with --quick)")
    arguments = parser.parse_args()
    calls = arguments.calls or (100 if arguments.quick else 300)
    repeats = arguments.repeats or (2 if arguments.quick else 5)
    asyncio.run(main(calls, repeats))
