"""Measure what with_fallback adds to a call, against hand-written code measured in the same run.

Run from the repository root after ``make test`` has created ``.venv``::

    .venv/bin/python benchmarks/bench_fallback.py

Part 1 times plain async callables in-process: a bare ``await`` and a hand-written ``try``/``except`` fallback
are the baselines, and the runner's cost is reported as a ratio to them and as microseconds per call. Part 2
times real tasks on the local Flyte engine: a driver task awaits a child task directly, or through the runner.
Each figure is the median of several rounds, to damp the noise of a shared machine, and in part 2 the cases take
turns within each round.
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

from flyte_patterns import with_fallback

ROUNDS = 7
CALLS_PER_ROUND = 20_000
FLYTE_CALLS = 100
FLYTE_METADATA_ROOT = Path("/tmp/flyte/metadata")


async def succeed(x: int) -> int:
    return x


async def run_out_of_memory(x: int) -> int:
    raise MemoryError("simulated")


async def time_round(body: Callable[[], Awaitable[object]], calls: int) -> float:
    """Return the seconds per call of ``calls`` sequential awaits of ``body()``."""
    started = time.perf_counter()
    for _ in range(calls):
        await body()
    return (time.perf_counter() - started) / calls


async def median_per_call(body: Callable[[], Awaitable[object]], calls: int = CALLS_PER_ROUND) -> float:
    await time_round(body, calls // 10)
    return statistics.median([await time_round(body, calls) for _ in range(ROUNDS)])


async def hand_written_fallback() -> int:
    try:
        return await run_out_of_memory(1)
    except MemoryError:
        return await succeed(1)


async def in_process() -> list[tuple[str, float, float]]:
    """Return (case, microseconds per call, ratio to its baseline) for the in-process cases."""
    direct = await median_per_call(lambda: succeed(1))
    by_hand = await median_per_call(hand_written_fallback)

    primary_ok = await median_per_call(lambda: with_fallback(succeed, [succeed], 1))
    primary_ok_outcome = await median_per_call(lambda: with_fallback(succeed, [succeed], 1, return_outcome=True))
    primary_ok_timeout = await median_per_call(lambda: with_fallback(succeed, [succeed], 1, attempt_timeout=60))

    fallback_logger = logging.getLogger("flyte_patterns.fallback")
    # Without a handler, Python's last-resort handler would print every warning to stderr and dominate the timing.
    fallback_logger.addHandler(logging.NullHandler())
    fallback_logger.propagate = False
    fell_back_logged = await median_per_call(lambda: with_fallback(run_out_of_memory, [succeed], 1))
    fallback_logger.setLevel(logging.ERROR)
    fell_back_quiet = await median_per_call(lambda: with_fallback(run_out_of_memory, [succeed], 1))

    return [
        ("direct await (baseline)", direct * 1e6, 1.0),
        ("primary succeeds", primary_ok * 1e6, primary_ok / direct),
        ("primary succeeds, return_outcome=True", primary_ok_outcome * 1e6, primary_ok_outcome / direct),
        ("primary succeeds, attempt_timeout=60", primary_ok_timeout * 1e6, primary_ok_timeout / direct),
        ("hand-written try/except fallback (baseline)", by_hand * 1e6, 1.0),
        ("primary fails, alternative serves, warning logged", fell_back_logged * 1e6, fell_back_logged / by_hand),
        ("primary fails, alternative serves, logging off", fell_back_quiet * 1e6, fell_back_quiet / by_hand),
    ]


env = flyte.TaskEnvironment(name="flyte_patterns_bench_fallback")


@env.task
async def child(x: int) -> int:
    return x


@env.task
async def child_out_of_memory(x: int) -> int:
    raise MemoryError("simulated")


async def call_children(mode: str, i: int) -> None:
    if mode == "direct":
        await child(i)
    elif mode == "runner":
        await with_fallback(child, [child], i)
    elif mode == "hand-written fallback":
        try:
            await child_out_of_memory(i)
        except flyte.errors.RuntimeUserError:
            await child(i)
    else:
        await with_fallback(child_out_of_memory, [child], i)


@env.task
async def driver(calls: int) -> dict[str, float]:
    """Return the median seconds per call for each way of calling the children.

    The modes take turns, round after round, so a burst of load on the machine hits all of them alike.
    """
    logging.getLogger("flyte_patterns.fallback").setLevel(logging.ERROR)
    modes = ("direct", "runner", "hand-written fallback", "runner fallback")
    per_call: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(ROUNDS):
        for mode in modes:
            started = time.perf_counter()
            for i in range(calls):
                await call_children(mode, i)
            per_call[mode].append((time.perf_counter() - started) / calls)
    return {mode: statistics.median(values) for mode, values in per_call.items()}


def on_flyte() -> list[tuple[str, float, float]]:
    """Return (case, milliseconds per call, ratio to its baseline) for the local Flyte engine."""
    flyte.init()
    # Flyte's own per-action error logs would flood the output on the failing paths.
    logging.getLogger("flyte").setLevel(logging.CRITICAL)
    name = f"bench-fallback-{uuid.uuid4().hex[:12]}"
    try:
        run = flyte.with_runcontext(name=name).run(driver, FLYTE_CALLS)
        medians: dict[str, float] = run.outputs()[0]
    finally:
        shutil.rmtree(FLYTE_METADATA_ROOT / name, ignore_errors=True)
    return [
        ("driver awaits child directly (baseline)", medians["direct"] * 1e3, 1.0),
        ("driver awaits child through with_fallback", medians["runner"] * 1e3, medians["runner"] / medians["direct"]),
        ("hand-written fallback to a second child (baseline)", medians["hand-written fallback"] * 1e3, 1.0),
        (
            "with_fallback, first child fails, second serves",
            medians["runner fallback"] * 1e3,
            medians["runner fallback"] / medians["hand-written fallback"],
        ),
    ]


def print_table(title: str, unit: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{title}\n")
    print(f"| case | {unit} per call | ratio to baseline |")
    print("|---|---:|---:|")
    for case, value, ratio in rows:
        print(f"| {case} | {value:.2f} | {ratio:.2f} |")


def main() -> None:
    print_table("In-process, plain async callables", "µs", asyncio.run(in_process()))
    print_table(
        f"Local Flyte engine, {FLYTE_CALLS} sequential calls per case in each of {ROUNDS} rounds", "ms", on_flyte()
    )


if __name__ == "__main__":
    main()
