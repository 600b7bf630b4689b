"""Measure what each pattern adds to real task calls on the local Flyte engine, against calling the tasks directly.

Run from the repository root after ``make test`` has created ``.venv``::

    .venv/bin/python benchmarks/bench_engine_overhead.py           # 21 rounds of 300 items per case
    .venv/bin/python benchmarks/bench_engine_overhead.py --quick   # 7 rounds of 100 items per case

A driver task on the local engine calls trivial child tasks, each pattern paired with a baseline that makes the
same task calls without it:

* ``circuit_breaker``: ``circuit_breaker(child, range(n), max_failures=n)``, 32 calls at a time (the default
  ``concurrency``), against ``asyncio.gather`` over the ``n`` calls, and against a gather bounded by an
  ``asyncio.Semaphore(32)``, which has the same concurrency as the breaker.
* ``batch_map``: ``batch_map(child_batch, range(n), batch_size=10)`` against ``asyncio.gather`` over the same
  batches, flattened. Skipped with a message when ``flyte_patterns`` has no ``batch_map``.
* ``retry_with_memory``: ``n`` sequential calls through the retrier with its default ladder, which succeed at the
  first size, with local memory enforcement off (it has a benchmark of its own), against ``n`` sequential
  ``await child(i)``.
* ``with_fallback``: ``n`` sequential calls of ``with_fallback(child, [child], i)``, whose primary succeeds,
  against ``n`` sequential ``await child(i)``.

Every round runs every pair, the baseline and the pattern back to back. The order within each pair flips from
one round to the next, so load from other jobs on the machine hits both sides of a pair alike. A pattern's
overhead is the median over the rounds of its time divided by the baseline's time in the same round, minus one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import shutil
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import flyte
from machine import describe_machine

import flyte_patterns
from flyte_patterns import circuit_breaker, retry_with_memory, with_fallback

BATCH_SIZE = 10
CONCURRENCY = 32
FLYTE_ROOT = Path("/tmp/flyte")

# batch_map is looked up when the benchmark runs, so this script also runs against a version of the library
# that does not have it yet.
BatchMap = Callable[..., Awaitable[list[int]]]
batch_map = cast(BatchMap | None, getattr(flyte_patterns, "batch_map", None))

env = flyte.TaskEnvironment(name="flyte_patterns_bench_engine_overhead")


@env.task
async def child(x: int) -> int:
    return x


@env.task
async def child_batch(items: list[int]) -> list[int]:
    return items


# ---------------------------------------------------------------- the cases, each one round of n task calls


async def gather_calls(n: int) -> None:
    await asyncio.gather(*(child(i) for i in range(n)))


async def gather_with_semaphore(n: int) -> None:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def bounded(i: int) -> int:
        async with semaphore:
            return await child(i)

    await asyncio.gather(*(bounded(i) for i in range(n)))


async def breaker_calls(n: int) -> None:
    result = await circuit_breaker(child, range(n), max_failures=n, concurrency=CONCURRENCY)
    if result.tripped:
        raise RuntimeError(f"the circuit breaker tripped over trivial tasks: {result.trip}")


async def gather_batches(n: int) -> None:
    batches = [list(range(start, min(start + BATCH_SIZE, n))) for start in range(0, n, BATCH_SIZE)]
    results = await asyncio.gather(*(child_batch(batch) for batch in batches))
    flattened = [value for batch in results for value in batch]
    if len(flattened) != n:
        raise RuntimeError(f"gather over batches returned {len(flattened)} results for {n} items")


async def batch_map_calls(n: int) -> None:
    if batch_map is None:
        raise RuntimeError("flyte_patterns has no batch_map")
    results = await batch_map(child_batch, range(n), batch_size=BATCH_SIZE)
    if len(results) != n:
        raise RuntimeError(f"batch_map returned {len(results)} results for {n} items")


async def direct_calls(n: int) -> None:
    for i in range(n):
        await child(i)


async def retrier_calls(n: int) -> None:
    for i in range(n):
        await retry_with_memory(child, i, enforce_locally=False)


async def fallback_calls(n: int) -> None:
    for i in range(n):
        await with_fallback(child, [child], i)


@dataclass(frozen=True)
class Pair:
    """A pattern and the baseline that makes the same task calls without it."""

    pattern: str
    baseline: str
    run_pattern: Callable[[int], Awaitable[None]]
    run_baseline: Callable[[int], Awaitable[None]]
    task_calls: str
    """The task calls of one round, as a format string with the fields ``n`` and ``batches``."""


PAIRS = [
    Pair("circuit_breaker", "asyncio.gather, all at once", breaker_calls, gather_calls, "{n:,} concurrent calls"),
    Pair(
        "circuit_breaker",
        "asyncio.gather, Semaphore(32)",
        breaker_calls,
        gather_with_semaphore,
        "{n:,} concurrent calls",
    ),
    Pair(
        "batch_map",
        "asyncio.gather over batches",
        batch_map_calls,
        gather_batches,
        "{batches:,} concurrent calls of 10 items",
    ),
    Pair("retry_with_memory", "sequential await", retrier_calls, direct_calls, "{n:,} sequential calls"),
    Pair("with_fallback", "sequential await", fallback_calls, direct_calls, "{n:,} sequential calls"),
]


def active_pairs() -> list[Pair]:
    return [pair for pair in PAIRS if pair.pattern != "batch_map" or batch_map is not None]


async def seconds(body: Callable[[int], Awaitable[None]], n: int) -> float:
    started = time.perf_counter()
    await body(n)
    return time.perf_counter() - started


@env.task
async def driver(n: int, rounds: int) -> list[list[float]]:
    """Time every active pair for ``rounds`` rounds of ``n`` task calls per case.

    Returns:
        One list per active pair, in order: the baseline's seconds for every round, then the pattern's.
    """
    pairs = active_pairs()
    # One untimed round first: the first calls of each kind pay for imports and caches.
    for pair in pairs:
        await pair.run_baseline(min(n, 20))
        await pair.run_pattern(min(n, 20))

    baseline_seconds: list[list[float]] = [[] for _ in pairs]
    pattern_seconds: list[list[float]] = [[] for _ in pairs]
    for round_number in range(rounds):
        for index, pair in enumerate(pairs):
            if round_number % 2 == 0:
                baseline_seconds[index].append(await seconds(pair.run_baseline, n))
                pattern_seconds[index].append(await seconds(pair.run_pattern, n))
            else:
                pattern_seconds[index].append(await seconds(pair.run_pattern, n))
                baseline_seconds[index].append(await seconds(pair.run_baseline, n))
    return [baseline + pattern for baseline, pattern in zip(baseline_seconds, pattern_seconds, strict=True)]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    lower, median, upper = statistics.quantiles(values, n=4, method="inclusive")
    return lower, median, upper


def report(pairs: list[Pair], timings: list[list[float]], n: int, rounds: int) -> None:
    print(f"\n{rounds} rounds, n = {n} items per round and case\n")
    print(
        "| pattern | baseline | task calls per round | baseline ms per item | pattern ms per item "
        "| overhead, median of rounds | overhead, middle half of rounds |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for pair, both in zip(pairs, timings, strict=True):
        baseline, pattern = both[:rounds], both[rounds:]
        overheads = [(p / b - 1) * 100 for p, b in zip(pattern, baseline, strict=True)]
        lower, median, upper = quartiles(overheads)
        print(
            f"| {pair.pattern} | {pair.baseline} | {pair.task_calls.format(n=n, batches=math.ceil(n / BATCH_SIZE))} "
            f"| {statistics.median(baseline) / n * 1000:.3f} | {statistics.median(pattern) / n * 1000:.3f} "
            f"| {median:+.1f}% | {lower:+.1f}% to {upper:+.1f}% |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="7 rounds of 100 items per case instead of 21 of 300")
    parser.add_argument("--rounds", type=int, help="rounds (default 21, or 7 with --quick)")
    parser.add_argument("--items", type=int, help="items per case and round (default 300, or 100 with --quick)")
    arguments = parser.parse_args()
    rounds = arguments.rounds or (7 if arguments.quick else 21)
    n = arguments.items or (100 if arguments.quick else 300)

    print(describe_machine())
    if batch_map is None:
        print("skip batch_map: flyte_patterns has no batch_map in this version")
    flyte.init(log_level=logging.CRITICAL)
    run_name = f"bench-engine-overhead-{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    try:
        run = flyte.with_runcontext(name=run_name).run(driver, n, rounds)
        timings: list[list[float]] = run.outputs()[0]
    finally:
        # Flyte 2.12 keeps each local run's metadata and raw data under these folders after the run.
        for folder in ("metadata", "raw_data"):
            shutil.rmtree(FLYTE_ROOT / folder / run_name, ignore_errors=True)
    report(active_pairs(), timings, n, rounds)
    print(f"\nbenchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
