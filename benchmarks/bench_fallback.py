"""Measure what with_fallback adds to a call, against hand-written code measured in the same run.

Run from the repository root after ``make test`` has created ``.venv``::

    .venv/bin/python benchmarks/bench_fallback.py           # 7 rounds
    .venv/bin/python benchmarks/bench_fallback.py --quick   # 3 rounds of fewer calls

Part 1 times plain async callables in-process: a bare ``await`` and a hand-written ``try``/``except`` fallback
are the baselines, and the runner's cost is reported as a ratio to them and as microseconds per call. Part 2
times real tasks on the local Flyte engine: a driver task awaits a child task directly, or through the runner.
Each figure is the median of several rounds, to damp the noise of a shared machine, and in part 2 the cases take
turns within each round.
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

from flyte_patterns import with_fallback

FLYTE_ROOT = Path("/tmp/flyte")


@dataclass(frozen=True)
class Settings:
    """How much to measure: rounds per figure, in-process calls per round, and Flyte calls per case and round."""

    rounds: int
    calls_per_round: int
    flyte_calls: int


FULL = Settings(rounds=7, calls_per_round=20_000, flyte_calls=100)
QUICK = Settings(rounds=3, calls_per_round=5_000, flyte_calls=50)


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


async def median_per_call(body: Callable[[], Awaitable[object]], settings: Settings) -> float:
    calls = settings.calls_per_round
    await time_round(body, calls // 10)
    return statistics.median([await time_round(body, calls) for _ in range(settings.rounds)])


async def hand_written_fallback() -> int:
    try:
        return await run_out_of_memory(1)
    except MemoryError:
        return await succeed(1)


async def in_process(settings: Settings) -> list[tuple[str, float, float]]:
    """Return (case, microseconds per call, ratio to its baseline) for the in-process cases."""
    direct = await median_per_call(lambda: succeed(1), settings)
    by_hand = await median_per_call(hand_written_fallback, settings)

    primary_ok = await median_per_call(lambda: with_fallback(succeed, [succeed], 1), settings)
    primary_ok_outcome = await median_per_call(
        lambda: with_fallback(succeed, [succeed], 1, return_outcome=True), settings
    )
    primary_ok_timeout = await median_per_call(
        lambda: with_fallback(succeed, [succeed], 1, attempt_timeout=60), settings
    )

    fallback_logger = logging.getLogger("flyte_patterns.fallback")
    # Without a handler, Python's last-resort handler would print every warning to stderr and dominate the timing.
    fallback_logger.addHandler(logging.NullHandler())
    fallback_logger.propagate = False
    fell_back_logged = await median_per_call(lambda: with_fallback(run_out_of_memory, [succeed], 1), settings)
    fallback_logger.setLevel(logging.ERROR)
    fell_back_quiet = await median_per_call(lambda: with_fallback(run_out_of_memory, [succeed], 1), settings)

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
async def driver(calls: int, rounds: int) -> dict[str, float]:
    """Return the median seconds per call for each way of calling the children.

    The modes take turns, round after round, so a burst of load on the machine hits all of them alike.
    """
    logging.getLogger("flyte_patterns.fallback").setLevel(logging.ERROR)
    modes = ("direct", "runner", "hand-written fallback", "runner fallback")
    per_call: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            started = time.perf_counter()
            for i in range(calls):
                await call_children(mode, i)
            per_call[mode].append((time.perf_counter() - started) / calls)
    return {mode: statistics.median(values) for mode, values in per_call.items()}


def on_flyte(settings: Settings) -> list[tuple[str, float, float]]:
    """Return (case, milliseconds per call, ratio to its baseline) for the local Flyte engine."""
    flyte.init()
    # Flyte's own per-action error logs would flood the output on the failing paths.
    logging.getLogger("flyte").setLevel(logging.CRITICAL)
    name = f"bench-fallback-{uuid.uuid4().hex[:12]}"
    try:
        run = flyte.with_runcontext(name=name).run(driver, settings.flyte_calls, settings.rounds)
        medians: dict[str, float] = run.outputs()[0]
    finally:
        # Flyte 2.12 keeps each local run's metadata and raw data under these folders after the run.
        for folder in ("metadata", "raw_data"):
            shutil.rmtree(FLYTE_ROOT / folder / name, ignore_errors=True)
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
