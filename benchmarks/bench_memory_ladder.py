"""Compare memory ladders: attempts and memory-seconds spent before a task's memory need is met.

Run from the repository root after ``make test`` has created ``.venv``::

    .venv/bin/python benchmarks/bench_memory_ladder.py --plot docs/bench_memory_ladder.png   # 3 measured rounds
    .venv/bin/python benchmarks/bench_memory_ladder.py --quick                               # 1 measured round

Every ladder starts at 250Mi, the default first size, and is computed with :func:`flyte_patterns.memory_ladder`.
The ladders are the default one (plus 200Mi up to 4Gi), the same step up to 16Gi, plus 1Gi up to 16Gi, and
geometric growth by 1.5 and by 2 up to 16Gi.

Part 1 is computed from a model, not measured on a cluster. For needs from 300 MB to 8 GB, it climbs each ladder:
an attempt whose size is below the need fails, and the first size at or above the need succeeds. The model:

* every attempt spends ``--start-seconds`` (default 20 s) from launch until the task body runs, such as scheduling
  a pod and starting its container;
* a failing attempt's memory grows at ``--allocation-rate`` (default 200 MB/s) and the attempt is killed when it
  reaches the attempt's size, so it runs ``size / rate`` seconds;
* the successful attempt's body runs ``--run-seconds`` (default 300 s);
* an attempt holds its whole size for its whole duration, start included, because the retrier sets each size as
  both the request and the limit, and Kubernetes reserves a request on the node from the moment the pod is bound.

Memory-seconds are the sum over attempts of size times duration. The baseline is an oracle that knows the need
and runs one attempt sized exactly to it.

Part 2 is measured: a driver task on the local Flyte engine calls ``retry_with_memory`` with local memory
enforcement on, over a task that allocates the need (300 MB and 900 MB) at once. It records each attempt's size
and duration from the retrier's events, and the wall time. The baseline is one attempt with an explicit ladder of
one size, the need plus 32 MiB of headroom, because the forked child also touches some pages of its own. The cases
take turns within each round, in reverse order every other round.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flyte
from machine import describe_machine

from flyte_patterns import MemoryRetryEvent, memory_ladder, retry_with_memory

MB = 10**6
MI = 2**20
GI = 2**30
FLYTE_ROOT = Path("/tmp/flyte")

LADDERS: dict[str, dict[str, Any]] = {
    "default, +200Mi to 4Gi": {},
    "+200Mi to 16Gi": {"increment": "200Mi", "max_memory": "16Gi"},
    "+1Gi to 16Gi": {"increment": "1Gi", "max_memory": "16Gi"},
    "factor 1.5 to 16Gi": {"factor": 1.5, "max_memory": "16Gi"},
    "factor 2 to 16Gi": {"factor": 2, "max_memory": "16Gi"},
}
"""Each ladder's label and its arguments to memory_ladder and retry_with_memory; all start at 250Mi."""

MODEL_NEEDS = [300 * MB, 600 * MB, 900 * MB, 1500 * MB, 2000 * MB, 3000 * MB, 4000 * MB, 6000 * MB, 8000 * MB]

# The +200Mi ladder to 16Gi climbs the same sizes as the default ladder up to 4Gi, so measuring it adds nothing.
MEASURED_LADDERS = ["default, +200Mi to 4Gi", "+1Gi to 16Gi", "factor 1.5 to 16Gi", "factor 2 to 16Gi"]
ORACLE = "one right-sized attempt"
HEADROOM = 32 * MI


# ---------------------------------------------------------------- part 1: the model


@dataclass(frozen=True)
class ClusterModel:
    """How long attempts take, for the computed part.

    Attributes:
        start_seconds: Seconds from the launch of an attempt until its body runs.
        allocation_rate: Bytes per second by which a failing attempt's memory grows until it is killed.
        run_seconds: Seconds the successful attempt's body runs.
    """

    start_seconds: float
    allocation_rate: float
    run_seconds: float


@dataclass(frozen=True)
class Climb:
    """The attempts up one ladder for one need, as the model computes them.

    Attributes:
        attempts: Attempts launched, the successful one included.
        final_size: The size that succeeded, in bytes, or ``None`` when every size failed.
        memory_seconds: Sum over attempts of size in bytes times duration in seconds.
        seconds: Time from the first launch to success, or to the last failure.
    """

    attempts: int
    final_size: int | None
    memory_seconds: float
    seconds: float


def climb(ladder: tuple[int, ...], need: int, model: ClusterModel) -> Climb:
    memory_seconds = 0.0
    seconds = 0.0
    for attempt, size in enumerate(ladder, start=1):
        if size >= need:
            duration = model.start_seconds + model.run_seconds
            return Climb(attempt, size, memory_seconds + size * duration, seconds + duration)
        duration = model.start_seconds + size / model.allocation_rate
        memory_seconds += size * duration
        seconds += duration
    return Climb(len(ladder), None, memory_seconds, seconds)


def oracle(need: int, model: ClusterModel) -> Climb:
    duration = model.start_seconds + model.run_seconds
    return Climb(1, need, need * duration, duration)


def show_size(size: int) -> str:
    """Format a size in Mi or Gi, rounded to a tenth; ``format_memory`` is exact and so falls back to ``k``."""
    if size % GI == 0:
        return f"{size // GI}Gi"
    if size % MI == 0:
        return f"{size // MI}Mi"
    return f"{size / MI:.1f}Mi"


def ladders() -> dict[str, tuple[int, ...]]:
    return {label: memory_ladder(**arguments) for label, arguments in LADDERS.items()}


def print_rungs(computed: Mapping[str, tuple[int, ...]]) -> None:
    print("\n| ladder | sizes | first sizes |")
    print("|---|---:|---|")
    for label, ladder in computed.items():
        first_sizes = ", ".join(show_size(size) for size in ladder[:8])
        print(f"| {label} | {len(ladder)} | {first_sizes}{', ...' if len(ladder) > 8 else ''} |")


def print_model_tables(computed: Mapping[str, tuple[int, ...]], model: ClusterModel) -> None:
    header = "| need | " + " | ".join(computed) + " |"
    rule = "|---|" + "---:|" * len(computed)

    print("\nAttempts until success, and the size that succeeded:\n")
    print(header)
    print(rule)
    for need in MODEL_NEEDS:
        cells = []
        for ladder in computed.values():
            result = climb(ladder, need, model)
            if result.final_size is None:
                cells.append(f"exhausted after {result.attempts}")
            else:
                cells.append(f"{result.attempts} ({show_size(result.final_size)})")
        print(f"| {need / MB:,.0f} MB | " + " | ".join(cells) + " |")

    print("\nMemory-seconds until success, as a ratio to one attempt sized exactly to the need (GiB·s in brackets):\n")
    print("| need | oracle GiB·s | " + " | ".join(computed) + " |")
    print("|---|---:|" + "---:|" * len(computed))
    for need in MODEL_NEEDS:
        best = oracle(need, model)
        cells = []
        for ladder in computed.values():
            result = climb(ladder, need, model)
            if result.final_size is None:
                cells.append("exhausted")
            else:
                cells.append(f"{result.memory_seconds / best.memory_seconds:.2f}x ({result.memory_seconds / GI:,.0f})")
        print(f"| {need / MB:,.0f} MB | {best.memory_seconds / GI:,.0f} | " + " | ".join(cells) + " |")

    print("\nTime lost to failed attempts before the successful one starts, in seconds:\n")
    print(header)
    print(rule)
    for need in MODEL_NEEDS:
        best = oracle(need, model)
        cells = []
        for ladder in computed.values():
            result = climb(ladder, need, model)
            cells.append("exhausted" if result.final_size is None else f"{result.seconds - best.seconds:,.0f}")
        print(f"| {need / MB:,.0f} MB | " + " | ".join(cells) + " |")


def print_sensitivity(computed: Mapping[str, tuple[int, ...]], model: ClusterModel) -> None:
    """Print how the memory-seconds ratio depends on how long the successful attempt runs."""
    needs = [need for need in MODEL_NEEDS if all(need <= ladder[-1] for ladder in computed.values())]
    print(
        f"\nMemory-seconds as a ratio to the oracle, geometric mean over the {len(needs)} needs from "
        f"{needs[0] / MB:,.0f} MB to {needs[-1] / MB:,.0f} MB that every ladder meets, by run time of the "
        f"successful attempt:\n"
    )
    run_times = [60.0, model.run_seconds, 3600.0]
    print("| successful attempt runs | " + " | ".join(computed) + " |")
    print("|---|" + "---:|" * len(computed))
    for run_seconds in sorted(set(run_times)):
        varied = ClusterModel(model.start_seconds, model.allocation_rate, run_seconds)
        cells = []
        for ladder in computed.values():
            ratios = [
                climb(ladder, need, varied).memory_seconds / oracle(need, varied).memory_seconds for need in needs
            ]
            cells.append(f"{statistics.geometric_mean(ratios):.2f}x")
        print(f"| {run_seconds:,.0f} s | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------- part 2: measured on the local engine

env = flyte.TaskEnvironment(name="flyte_patterns_bench_memory_ladder")


@env.task
async def allocate(size_bytes: int) -> int:
    # Multiplying a bytes object writes every byte, so the whole allocation is resident, not just reserved.
    table = b"x" * size_bytes
    return len(table)


def ladder_arguments(case: str, need: int) -> dict[str, Any]:
    if case == ORACLE:
        return {"sizes": [need + HEADROOM]}
    return LADDERS[case]


@env.task
async def climb_locally(needs: list[int], cases: list[str], rounds: int) -> list[list[float]]:
    """Climb every case's ladder for every need, ``rounds`` times, with local memory enforcement on.

    Returns:
        One row per climb: the need's index, the case's index, the wall seconds, then the size and duration of
        each attempt in order.
    """
    order = [(need_index, case_index) for need_index in range(len(needs)) for case_index in range(len(cases))]
    rows: list[list[float]] = []
    for round_number in range(rounds):
        for need_index, case_index in order if round_number % 2 == 0 else reversed(order):
            need = needs[need_index]
            events: list[MemoryRetryEvent] = []
            started = time.perf_counter()
            await retry_with_memory(allocate, need, on_event=events.append, **ladder_arguments(cases[case_index], need))
            wall = time.perf_counter() - started
            # Flyte checks that every element of a list[float] output is a float, so the ints are converted.
            attempts = [(float(event.size), event.duration or 0.0) for event in events if event.kind != "attempt"]
            rows.append([float(need_index), float(case_index), wall, *(value for pair in attempts for value in pair)])
    return rows


@dataclass(frozen=True)
class MeasuredClimb:
    need: int
    case: str
    wall: float
    sizes: tuple[int, ...]
    durations: tuple[float, ...]

    @property
    def memory_seconds(self) -> float:
        return sum(size * duration for size, duration in zip(self.sizes, self.durations, strict=True))


def measure(needs: list[int], rounds: int) -> list[MeasuredClimb]:
    cases = [*MEASURED_LADDERS, ORACLE]
    run_name = f"bench-memory-ladder-{uuid.uuid4().hex[:12]}"
    try:
        run = flyte.with_runcontext(name=run_name).run(climb_locally, needs, cases, rounds)
        rows: list[list[float]] = run.outputs()[0]
    finally:
        # Flyte 2.12 keeps each local run's metadata and raw data under these folders after the run.
        for folder in ("metadata", "raw_data"):
            shutil.rmtree(FLYTE_ROOT / folder / run_name, ignore_errors=True)

    climbs = []
    for row in rows:
        sizes = tuple(int(size) for size in row[3::2])
        durations = tuple(row[4::2])
        climbs.append(MeasuredClimb(needs[int(row[0])], cases[int(row[1])], row[2], sizes, durations))
    return climbs


def print_measured(climbs: list[MeasuredClimb], needs: list[int], rounds: int, model: ClusterModel) -> None:
    print(f"\nMeasured on the local engine, median of {rounds} round{'s' if rounds > 1 else ''}:\n")
    print(
        "| need | ladder | sizes tried | model's attempts | wall time | memory-seconds (GiB·s) "
        "| wall time vs one right-sized attempt | memory-seconds vs one right-sized attempt |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for need in needs:
        baseline = [measured for measured in climbs if measured.need == need and measured.case == ORACLE]
        baseline_wall = statistics.median(measured.wall for measured in baseline)
        baseline_memory = statistics.median(measured.memory_seconds for measured in baseline)
        for case in [*MEASURED_LADDERS, ORACLE]:
            same_case = [measured for measured in climbs if measured.need == need and measured.case == case]
            wall = statistics.median(measured.wall for measured in same_case)
            memory_seconds = statistics.median(measured.memory_seconds for measured in same_case)
            tried = ", ".join(show_size(size) for size in same_case[0].sizes)
            expected = "1" if case == ORACLE else str(climb(memory_ladder(**LADDERS[case]), need, model).attempts)
            print(
                f"| {need / MB:,.0f} MB | {case} | {tried} | {expected} | {wall:.2f} s | {memory_seconds / GI:.2f} "
                f"| {wall / baseline_wall:.2f}x | {memory_seconds / baseline_memory:.2f}x |"
            )

    # The model assumes a failing attempt runs a fixed start time plus size / rate. Check that form on the failures.
    failures = [
        (size, duration)
        for measured in climbs
        for size, duration in zip(measured.sizes[:-1], measured.durations[:-1], strict=True)
    ]
    if len(failures) >= 2:
        slope, intercept = statistics.linear_regression([size for size, _ in failures], [d for _, d in failures])
        correlation = statistics.correlation([size for size, _ in failures], [d for _, d in failures])
        print(
            f"\nThe {len(failures)} failed attempts fit duration = {intercept * 1000:.0f} ms + size / "
            f"{1 / slope / MB:,.0f} MB/s (least squares, correlation {correlation:.3f}). "
            f"The closer the correlation is to 1, the better a fixed start plus size / rate, the model's form, fits."
        )


# ---------------------------------------------------------------- the plot


def plot(computed: Mapping[str, tuple[int, ...]], model: ClusterModel, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    figure, (rungs_axis, attempts_axis, cost_axis) = plt.subplots(1, 3, figsize=(15, 5.2))
    needs_gb = [need / 1e9 for need in MODEL_NEEDS]
    # The default ladder climbs the same sizes as "+200Mi to 16Gi" up to 4Gi, so it is drawn wide and pale
    # underneath, where it stays visible.
    styles: dict[str, dict[str, Any]] = {label: {"marker": "o", "markersize": 4} for label in computed}
    styles["default, +200Mi to 4Gi"] = {"linewidth": 7, "alpha": 0.3, "color": "tab:grey"}

    for label, ladder in computed.items():
        rungs_axis.plot(range(1, len(ladder) + 1), [size / GI for size in ladder], label=label, **styles[label])
    for need in MODEL_NEEDS:
        rungs_axis.axhline(need / GI, color="black", linewidth=0.4, alpha=0.4)
    rungs_axis.set_xscale("log")
    rungs_axis.set_yscale("log")
    rungs_axis.set_xlabel("attempt")
    rungs_axis.set_ylabel("size (GiB)")
    rungs_axis.set_title("sizes of each ladder (thin lines: the needs)")
    rungs_axis.xaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50, 80]))
    rungs_axis.yaxis.set_major_locator(FixedLocator([0.25, 0.5, 1, 2, 4, 8, 16]))

    for label, ladder in computed.items():
        results = [climb(ladder, need, model) for need in MODEL_NEEDS]
        met = [
            (gb, need, result)
            for gb, need, result in zip(needs_gb, MODEL_NEEDS, results, strict=True)
            if result.final_size is not None
        ]
        xs = [gb for gb, _, _ in met]
        attempts_axis.plot(xs, [result.attempts for _, _, result in met], label=label, **styles[label])
        ratios = [result.memory_seconds / oracle(need, model).memory_seconds for _, need, result in met]
        cost_axis.plot(xs, ratios, label=label, **styles[label])
        if len(met) < len(results):
            cost_axis.annotate(
                f"{label}: exhausted above {show_size(ladder[-1])}",
                (0.3, 0.96),
                xycoords="axes fraction",
                fontsize=8,
                verticalalignment="top",
            )

    for axis in (attempts_axis, cost_axis):
        axis.set_xscale("log")
        axis.set_xlabel("memory need (GB)")
        axis.xaxis.set_major_locator(FixedLocator(needs_gb))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticklabels([f"{gb:g}" for gb in needs_gb])
    attempts_axis.set_yscale("log")
    attempts_axis.yaxis.set_major_locator(FixedLocator([2, 3, 5, 10, 20, 40]))
    attempts_axis.yaxis.set_minor_locator(NullLocator())
    attempts_axis.set_ylabel("attempts until success")
    attempts_axis.set_title("attempts until success")
    cost_axis.set_ylabel("ratio to one right-sized attempt")
    cost_axis.set_title("memory-seconds until success (model)")
    for axis in (rungs_axis, attempts_axis, cost_axis):
        axis.grid(True, which="major", alpha=0.3)
        for ticks in (axis.xaxis, axis.yaxis):
            ticks.set_major_formatter("{x:g}")

    handles, labels = rungs_axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    figure.suptitle(
        f"Memory ladders from 250Mi. Model: each attempt starts in {model.start_seconds:g} s, a failing attempt "
        f"allocates {model.allocation_rate / MB:g} MB/s until killed at its size, the successful one runs "
        f"{model.run_seconds:g} s",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="measure 1 round on the local engine instead of 3")
    parser.add_argument("--rounds", type=int, help="measured rounds (default 3, or 1 with --quick)")
    parser.add_argument("--start-seconds", type=float, default=20.0, help="model: seconds from launch to the body")
    parser.add_argument(
        "--allocation-rate", type=float, default=200.0, help="model: MB per second a failing attempt allocates"
    )
    parser.add_argument("--run-seconds", type=float, default=300.0, help="model: seconds the successful body runs")
    parser.add_argument("--plot", type=Path, help="also draw the ladders and their cost to this PNG file")
    arguments = parser.parse_args()
    rounds = arguments.rounds or (1 if arguments.quick else 3)
    model = ClusterModel(arguments.start_seconds, arguments.allocation_rate * MB, arguments.run_seconds)

    print(describe_machine())
    computed = ladders()
    print(
        f"\nPart 1, computed from a model, not measured: each attempt starts in {model.start_seconds:g} s, a "
        f"failing attempt allocates {model.allocation_rate / MB:g} MB/s until it is killed at its size, and the "
        f"successful attempt runs {model.run_seconds:g} s."
    )
    print_rungs(computed)
    print_model_tables(computed, model)
    print_sensitivity(computed, model)

    flyte.init(log_level=logging.CRITICAL)
    needs = [300 * MB, 900 * MB]
    started = time.perf_counter()
    climbs = measure(needs, rounds)
    print_measured(climbs, needs, rounds, model)
    print(f"\nmeasured part: {time.perf_counter() - started:.0f} s")

    if arguments.plot:
        plot(computed, model, arguments.plot)


if __name__ == "__main__":
    main()
