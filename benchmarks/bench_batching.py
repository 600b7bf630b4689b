"""Benchmark batch_map and map_reduce against schedules and loops measured in the same run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_batching.py            # up to 1,000,000 items, about a minute
    .venv/bin/python benchmarks/bench_batching.py --quick    # up to 100,000 items, about 25 s

Three measurements:

* Skewed batches. Batches of 10 items, 4, 25 or 50 per worker, where every tenth batch sleeps 20 ms and the
  others 2 ms (``asyncio.sleep``). ``batch_map`` runs them in a sliding window. ``waves`` runs them with
  ``asyncio.gather`` over consecutive chunks of ``concurrency`` batches, so each chunk waits for its slowest
  batch. The ideal schedule is computed, not run: the total sleep divided by the concurrency, or the longest
  batch if that is longer. So is the in-order window: each batch in input order goes to the first free slot,
  without overhead, which is the best a window that does not know the durations can do. ``pool`` is the same
  sliding window written out by hand (``concurrency`` coroutines pulling from one iterator), which shows how far
  asyncio's timers alone are from the ideal. Each figure is the median of several runs that alternate between
  the implementations.
* Overhead per item. A task that doubles every item of its batch, at batch sizes 1, 100 and 1,000, against a
  list comprehension over all items (``plain``) and a loop that awaits the task on consecutive chunks of the
  same size (``chunk loop``). Each figure is the fastest of several runs, each in a fresh forked process.
* Scale. ``batch_map`` and ``map_reduce`` (combine ``sum``, reduce ``+``) with the automatic batch size and
  concurrency 32, at 10,000 to 1,000,000 items: time per item, also relative to the list comprehension measured
  alongside, and the peak of Python allocations measured with ``tracemalloc`` in a separate run, against the
  peak of the list comprehension, which holds only the results.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import multiprocessing
import multiprocessing.connection
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from itertools import islice
from typing import Any

import flyte

from flyte_patterns import auto_batch_size, batch_map, map_reduce

# ---------------------------------------------------------------- skewed batches

SKEW_BATCH_SIZE = 10
# Batches per worker: 4 is what the automatic batch size aims at; more batches balance the skew better.
SKEW_BATCHES_PER_WORKER = (4, 25, 50)
SKEW_CONCURRENCY = (8, 32)
FAST_SECONDS = 0.002
SLOW_SECONDS = 0.020

# How long each batch really slept in the current run: asyncio's timers overshoot a little on every sleep.
slept: list[float] = []


def skew_seconds(batch: list[int]) -> float:
    """Return how long a batch sleeps: every tenth batch ten times longer than the others."""
    index = batch[0] // SKEW_BATCH_SIZE
    return SLOW_SECONDS if index % 10 == 0 else FAST_SECONDS


async def skewed_task(batch: list[int]) -> list[int]:
    start = time.perf_counter()
    await asyncio.sleep(skew_seconds(batch))
    slept.append(time.perf_counter() - start)
    return batch


def skew_batches(count: int) -> list[list[int]]:
    return [list(range(i * SKEW_BATCH_SIZE, (i + 1) * SKEW_BATCH_SIZE)) for i in range(count)]


async def run_batch_map(count: int, concurrency: int) -> None:
    await batch_map(skewed_task, range(count * SKEW_BATCH_SIZE), batch_size=SKEW_BATCH_SIZE, concurrency=concurrency)


async def run_waves(count: int, concurrency: int) -> None:
    batches = skew_batches(count)
    for start in range(0, count, concurrency):
        await asyncio.gather(*(skewed_task(batch) for batch in batches[start : start + concurrency]))


async def run_pool(count: int, concurrency: int) -> None:
    shared = iter(skew_batches(count))

    async def worker() -> None:
        for batch in shared:
            await skewed_task(batch)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


SKEW_RUNS: dict[str, Callable[[int, int], Coroutine[Any, Any, None]]] = {
    "batch_map": run_batch_map,
    "pool": run_pool,
    "waves": run_waves,
}


def ideal_seconds(durations: list[float], concurrency: int) -> float:
    """Return the lower bound of any schedule: the total work spread evenly, or the longest batch."""
    return max(sum(durations) / concurrency, max(durations))


def in_order_window_seconds(durations: list[float], concurrency: int) -> float:
    """Return how long a sliding window without overhead takes: each batch, in order, goes to the first free slot."""
    free_at = [0.0] * concurrency
    for duration in durations:
        slot = min(range(concurrency), key=free_at.__getitem__)
        free_at[slot] += duration
    return max(free_at)


async def timed(run: Coroutine[Any, Any, object]) -> float:
    """Return the wall time of ``run``, measured inside the event loop so that starting the loop is not counted."""
    start = time.perf_counter()
    await run
    return time.perf_counter() - start


def measure_skew(per_worker: int, concurrency: int, repeats: int) -> dict[str, float]:
    """Return the median wall time of each implementation, the runs alternating between them, and the references.

    ``ideal`` and ``in-order window`` use the nominal sleeps. ``ideal (slept)`` uses how long the batches of the
    ``batch_map`` runs really slept, which takes asyncio's timer overshoot out of the comparison.
    """
    count = per_worker * concurrency
    nominal = [skew_seconds(batch) for batch in skew_batches(count)]
    times: dict[str, list[float]] = {name: [] for name in SKEW_RUNS}
    slept_ideals: list[float] = []
    # One run of each, not counted: the first run of a process pays for warming up, a sizeable share of 30 ms.
    for run in SKEW_RUNS.values():
        asyncio.run(run(count, concurrency))
    for _ in range(repeats):
        for name, run in SKEW_RUNS.items():
            slept.clear()
            times[name].append(asyncio.run(timed(run(count, concurrency))))
            if name == "batch_map":
                slept_ideals.append(ideal_seconds(slept, concurrency))
    medians = {name: statistics.median(values) for name, values in times.items()}
    medians["ideal"] = ideal_seconds(nominal, concurrency)
    medians["ideal (slept)"] = statistics.median(slept_ideals)
    medians["in-order window"] = in_order_window_seconds(nominal, concurrency)
    return medians


def skew_table(results: dict[tuple[int, int], dict[str, float]]) -> list[str]:
    lines = [
        "| batches per worker | concurrency | ideal | in-order window | ideal (slept) | batch_map | pool | waves "
        "| in-order window / ideal | batch_map / ideal | batch_map / ideal (slept) | waves / ideal "
        "| batch_map / waves |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (per_worker, concurrency), medians in results.items():
        ideal = medians["ideal"]
        lines.append(
            f"| {per_worker} | {concurrency} | {ideal * 1000:.0f} ms "
            f"| {medians['in-order window'] * 1000:.0f} ms | {medians['ideal (slept)'] * 1000:.0f} ms "
            f"| {medians['batch_map'] * 1000:.0f} ms | {medians['pool'] * 1000:.0f} ms "
            f"| {medians['waves'] * 1000:.0f} ms | {medians['in-order window'] / ideal:.2f} "
            f"| {medians['batch_map'] / ideal:.2f} "
            f"| {medians['batch_map'] / medians['ideal (slept)']:.2f} | {medians['waves'] / ideal:.2f} "
            f"| {medians['batch_map'] / medians['waves']:.2f} |"
        )
    return lines


# ---------------------------------------------------------------- overhead per item and scale, in forked children


async def double(batch: list[int]) -> list[int]:
    return [item * 2 for item in batch]


def add(total: int, value: int) -> int:
    return total + value


async def case_plain(items: int, batch_size: int) -> object:
    return [item * 2 for item in range(items)]


async def case_chunk_loop(items: int, batch_size: int) -> object:
    results: list[int] = []
    source: Iterator[int] = iter(range(items))
    while chunk := list(islice(source, batch_size)):
        results.extend(await double(chunk))
    return results


async def case_batch_map(items: int, batch_size: int) -> object:
    return await batch_map(double, range(items), batch_size=batch_size or None, concurrency=32)


async def case_map_reduce(items: int, batch_size: int) -> object:
    return await map_reduce(double, range(items), reduce=add, initial=0, combine=sum, concurrency=32)


CASES: dict[str, Callable[[int, int], Coroutine[Any, Any, object]]] = {
    "plain": case_plain,
    "chunk loop": case_chunk_loop,
    "batch_map": case_batch_map,
    "map_reduce": case_map_reduce,
}


def _run_case(name: str, items: int, batch_size: int, runs: int, traced: bool) -> float:
    """Return the fastest of ``runs`` wall times, or the traced peak in bytes when ``traced``."""
    best = math.inf
    for _ in range(runs):
        gc.collect()
        if traced:
            tracemalloc.start()
        elapsed = asyncio.run(timed(CASES[name](items, batch_size)))
        if traced:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            return float(peak)
        best = min(best, elapsed)
    return best


def _child(
    name: str, items: int, batch_size: int, runs: int, traced: bool, out: multiprocessing.connection.Connection
) -> None:
    out.send(_run_case(name, items, batch_size, runs, traced))
    out.close()


def in_child(name: str, items: int, batch_size: int, *, runs: int = 1, traced: bool = False) -> float:
    """Measure one case in a forked child process, so that no case inherits the heap another left behind."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(name, items, batch_size, runs, traced, sender))
    child.start()
    sender.close()
    value: float = receiver.recv()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"{name} at {items} items failed in its child process ({child.exitcode})")
    return value


def best_of_children(name: str, items: int, batch_size: int, children: int, runs: int) -> float:
    return min(in_child(name, items, batch_size, runs=runs) for _ in range(children))


def overhead_table(items_by_size: dict[int, int], children: int) -> list[str]:
    lines = [
        "| batch size | items | plain | chunk loop | batch_map | batch_map / chunk loop | batch_map / plain |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch_size, items in items_by_size.items():
        seconds: dict[str, float] = {}
        for _ in range(children):
            # Alternate between the cases, so that load from elsewhere on the machine hits them alike.
            for name in ("plain", "chunk loop", "batch_map"):
                value = in_child(name, items, batch_size, runs=2)
                seconds[name] = min(seconds.get(name, math.inf), value)
        per_item = {name: value / items * 1e9 for name, value in seconds.items()}
        print(f"# overhead at batch size {batch_size:,}: {per_item}", file=sys.stderr)
        lines.append(
            f"| {batch_size:,} | {items:,} | {per_item['plain']:.0f} ns | {per_item['chunk loop']:.0f} ns "
            f"| {per_item['batch_map']:.0f} ns | {seconds['batch_map'] / seconds['chunk loop']:.2f} "
            f"| {seconds['batch_map'] / seconds['plain']:.2f} |"
        )
    return lines


def scale_table(sizes: list[int], children: int) -> tuple[list[str], dict[str, list[float]]]:
    """Measure each size, and return the table and the time per item relative to ``plain`` at each size.

    The ratio to ``plain`` is what shows linearity on a shared machine: a burst of load, or the cache misses of a
    large heap, slows the list comprehension measured at the same moment too.
    """
    lines = [
        "| items | automatic batch size | plain per item | batch_map per item | map_reduce per item "
        "| batch_map / plain | map_reduce / plain | plain peak (results only) | batch_map peak | map_reduce peak |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    relative: dict[str, list[float]] = {"batch_map": [], "map_reduce": []}
    for items in sizes:
        seconds: dict[str, float] = {}
        for _ in range(children):
            for name in ("plain", "batch_map", "map_reduce"):
                value = in_child(name, items, 0, runs=1 if items >= 1_000_000 else 2)
                seconds[name] = min(seconds.get(name, math.inf), value)
        peaks = {name: in_child(name, items, 0, traced=True) for name in ("plain", "batch_map", "map_reduce")}
        nanoseconds = {name: value / items * 1e9 for name, value in seconds.items()}
        for name in relative:
            relative[name].append(seconds[name] / seconds["plain"])
        print(f"# scale at {items:,}: {nanoseconds}, peaks {peaks}", file=sys.stderr)
        lines.append(
            f"| {items:,} | {auto_batch_size(items, 32):,} | {nanoseconds['plain']:.0f} ns "
            f"| {nanoseconds['batch_map']:.0f} ns | {nanoseconds['map_reduce']:.0f} ns "
            f"| {relative['batch_map'][-1]:.2f} | {relative['map_reduce'][-1]:.2f} "
            f"| {peaks['plain'] / 2**20:.1f} MiB | {peaks['batch_map'] / 2**20:.1f} MiB "
            f"| {peaks['map_reduce'] / 2**20:.2f} MiB |"
        )
    return lines, relative


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stop at 100,000 items and repeat less (under a minute)")
    arguments = parser.parse_args()
    quick = arguments.quick

    print(
        f"# Python {platform.python_version()}, flyte {flyte.__version__}, {multiprocessing.cpu_count()} cores",
        file=sys.stderr,
    )
    started = time.perf_counter()

    skew = {
        (per_worker, concurrency): measure_skew(per_worker, concurrency, 3 if quick else 7)
        for per_worker in SKEW_BATCHES_PER_WORKER
        for concurrency in SKEW_CONCURRENCY
    }
    for (per_worker, concurrency), medians in skew.items():
        print(f"# skew at {per_worker} per worker, concurrency {concurrency}: {medians}", file=sys.stderr)
    print("### Skewed batches\n")
    print("\n".join(skew_table(skew)))

    children = 2 if quick else 3
    overhead_sizes = (
        {1: 100_000, 100: 100_000, 1_000: 100_000} if quick else {1: 200_000, 100: 1_000_000, 1_000: 1_000_000}
    )
    print("\n### Overhead per item\n")
    print("\n".join(overhead_table(overhead_sizes, children)))

    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    lines, relative = scale_table(sizes, children)
    print("\n### Scale\n")
    print("\n".join(lines))

    print("\n### Targets\n")
    for (per_worker, concurrency), medians in skew.items():
        nominal = medians["batch_map"] / medians["ideal"]
        actual = medians["batch_map"] / medians["ideal (slept)"]
        print(
            f"- {per_worker} batches per worker, concurrency {concurrency}: at most 1.2 times the ideal schedule: "
            f"{nominal:.2f} of the nominal ideal "
            f"({'met' if nominal <= 1.2 else 'NOT met'}), {actual:.2f} of the ideal of the sleeps as they ran "
            f"({'met' if actual <= 1.2 else 'NOT met'}); waves take {medians['waves'] / medians['ideal']:.2f} times "
            f"the nominal ideal, and batch_map {medians['batch_map'] / medians['waves']:.2f} of the waves' time"
        )
    for name, values in relative.items():
        growth = ", ".join(
            f"{later / earlier:.2f} from {sizes[i]:,} to {sizes[i + 1]:,}"
            for i, (earlier, later) in enumerate(itertools.pairwise(values))
        )
        verdict = "met" if all(later <= earlier * 1.3 for earlier, later in itertools.pairwise(values)) else "NOT met"
        print(
            f"- {name}: linear in the number of items, its time per item relative to plain grows by at most 30%: "
            f"{growth}, {verdict}"
        )
    print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
