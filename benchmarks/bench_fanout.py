"""Benchmark the circuit breaker's fan-out against baselines measured in the same run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_fanout.py            # 1,000 to 1,000,000 items, several minutes
    .venv/bin/python benchmarks/bench_fanout.py --quick    # 1,000 to 100,000 items, under a minute

Each fan-out runs ``concurrency`` (32) calls at a time over ``range(n)`` with a no-op call, in two flavours:
``immediate`` returns at once without suspending (the pure cost of the machinery), ``yield`` suspends once with
``await asyncio.sleep(0)``, as any real call does. The implementations:

* ``floor``: the least machinery that does the job. ``concurrency`` coroutines pull from one shared iterator,
  await the call directly and store the result by index.
* ``circuit_breaker``: :func:`flyte_patterns.circuit_breaker` with ``max_failures`` set (no item fails).
* ``circuit_breaker_window``: the same with a rolling window, which does bookkeeping for every success.
* ``gather_semaphore``: ``asyncio.gather`` over one coroutine per item, each holding an ``asyncio.Semaphore``.
* ``naive_breaker``: creates every task up front, waits with ``asyncio.wait(FIRST_COMPLETED)`` and finds each
  finished task with ``list.index``, which is quadratic. It runs at a size only while the previous size predicts
  it finishes within the time budget.

Every measurement happens in a forked child process, so no case inherits the heap that another left behind.
Each case is timed in several rounds of a few runs, the rounds going round-robin over the implementations so
that load from elsewhere on the machine hits them alike, and the fastest run is kept. One more run under
``tracemalloc`` gives the peak of Python allocations (timings are taken without ``tracemalloc``, which slows
allocation down).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing
import multiprocessing.connection
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from machine import describe_machine

from flyte_patterns import RollingWindow, circuit_breaker

CONCURRENCY = 32
Call = Callable[[int], Coroutine[Any, Any, int]]
FanOut = Callable[[Call, int, int], Coroutine[Any, Any, object]]


async def immediate(item: int) -> int:
    return item


async def yielding(item: int) -> int:
    await asyncio.sleep(0)
    return item


CALLS: dict[str, Call] = {"immediate": immediate, "yield": yielding}


# ---------------------------------------------------------------- the implementations


async def floor(call: Call, n: int, concurrency: int) -> list[int | None]:
    results: list[int | None] = [None] * n
    shared = enumerate(range(n))

    async def worker() -> None:
        for index, item in shared:
            results[index] = await call(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def breaker(call: Call, n: int, concurrency: int) -> object:
    return await circuit_breaker(call, range(n), max_failures=n, concurrency=concurrency)


async def breaker_window(call: Call, n: int, concurrency: int) -> object:
    window = RollingWindow(size=100, failure_rate=0.5)
    return await circuit_breaker(call, range(n), rolling_window=window, concurrency=concurrency)


async def gather_semaphore(call: Call, n: int, concurrency: int) -> list[int]:
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(item: int) -> int:
        async with semaphore:
            return await call(item)

    return await asyncio.gather(*(bounded(item) for item in range(n)))


async def naive_breaker(call: Call, n: int, concurrency: int) -> list[int | None]:
    # All tasks at once and a linear search per finished task, as described; `concurrency` is not used.
    tasks = [asyncio.create_task(call(item)) for item in range(n)]
    results: list[int | None] = [None] * n
    failures = 0
    pending: set[asyncio.Task[int]] = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            index = tasks.index(task)
            if task.exception() is not None:
                failures += 1
            else:
                results[index] = task.result()
    return results


IMPLEMENTATIONS: dict[str, FanOut] = {
    "floor": floor,
    "circuit_breaker": breaker,
    "circuit_breaker_window": breaker_window,
    "gather_semaphore": gather_semaphore,
    "naive_breaker": naive_breaker,
}


# ---------------------------------------------------------------- measuring one case in a child process


@dataclass(frozen=True)
class Case:
    implementation: str
    flavour: str
    items: int
    seconds: float
    peak_bytes: int

    @property
    def microseconds_per_item(self) -> float:
        return self.seconds / self.items * 1e6


def _schedule(items: int) -> tuple[int, int]:
    """Return how many child processes time a case, one after another per round, and how many runs each makes.

    A child's first run pays for warming up (page faults on new memory, the interpreter specializing the loop),
    which is noise next to a million items but not next to a thousand, so small cases run several times per child.
    """
    if items <= 10_000:
        return 5, 3
    return 2, 2 if items <= 100_000 else 1


def _run_once(implementation: str, flavour: str, items: int, traced: bool) -> float:
    """Run one fan-out on a new event loop; return its wall time, or its traced peak in bytes when ``traced``."""
    fan_out = IMPLEMENTATIONS[implementation]
    call = CALLS[flavour]
    gc.collect()
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    asyncio.run(fan_out(call, items, CONCURRENCY))
    elapsed = time.perf_counter() - start
    if not traced:
        return elapsed
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return float(peak)


def _best_of(implementation: str, flavour: str, items: int, runs: int, traced: bool) -> float:
    if traced:
        return _run_once(implementation, flavour, items, traced=True)
    return min(_run_once(implementation, flavour, items, traced=False) for _ in range(runs))


def _child(
    implementation: str, flavour: str, items: int, runs: int, traced: bool, out: multiprocessing.connection.Connection
) -> None:
    out.send(_best_of(implementation, flavour, items, runs, traced))
    out.close()


def in_child(implementation: str, flavour: str, items: int, *, runs: int = 1, traced: bool = False) -> float:
    """Return the fastest of ``runs`` runs, or the traced peak, measured in a forked child process.

    A child per measurement means that no case inherits the heap another case left behind.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(implementation, flavour, items, runs, traced, sender))
    child.start()
    sender.close()
    value: float = receiver.recv()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"{implementation} at {items} items failed in its child process ({child.exitcode})")
    return value


def measure_size(flavour: str, items: int, implementations: dict[str, tuple[int, int]]) -> list[Case]:
    """Measure every implementation at one size: the fastest of its runs, and its traced peak.

    ``implementations`` maps each name to its rounds and its runs per round (see :func:`_schedule`). The rounds
    go round-robin over the implementations, so that a burst of load from elsewhere on the machine slows all of
    them alike rather than one.
    """
    best = {name: math.inf for name in implementations}
    for round_number in range(max(rounds for rounds, _ in implementations.values())):
        for name, (rounds, runs) in implementations.items():
            if round_number < rounds:
                best[name] = min(best[name], in_child(name, flavour, items, runs=runs))
    return [
        Case(name, flavour, items, best[name], int(in_child(name, flavour, items, traced=True)))
        for name in implementations
    ]


# ---------------------------------------------------------------- the report


def _ratio(case: Case, cases: list[Case], baseline: str) -> float | None:
    for other in cases:
        if (other.implementation, other.flavour, other.items) == (baseline, case.flavour, case.items):
            return case.seconds / other.seconds
    return None


def _format_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def markdown_table(cases: list[Case], flavour: str) -> str:
    lines = [
        "| implementation | items | wall time | time per item | vs floor | vs gather_semaphore | peak memory |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        if case.flavour != flavour:
            continue
        lines.append(
            f"| {case.implementation} | {case.items:,} | {case.seconds * 1000:,.1f} ms "
            f"| {case.microseconds_per_item:.2f} µs | {_format_ratio(_ratio(case, cases, 'floor'))} "
            f"| {_format_ratio(_ratio(case, cases, 'gather_semaphore'))} | {case.peak_bytes / 2**20:,.1f} MiB |"
        )
    return "\n".join(lines)


def target_lines(cases: list[Case], sizes: list[int]) -> list[str]:
    def find(implementation: str, flavour: str, items: int) -> Case | None:
        for case in cases:
            if (case.implementation, case.flavour, case.items) == (implementation, flavour, items):
                return case
        return None

    lines = []
    for flavour in CALLS:
        breaker_case = find("circuit_breaker", flavour, 100_000)
        floor_case = find("floor", flavour, 100_000)
        gather_case = find("gather_semaphore", flavour, 100_000)
        if breaker_case and floor_case:
            ratio = breaker_case.seconds / floor_case.seconds
            verdict = "met" if ratio <= 2 else "NOT met"
            lines.append(f"- {flavour}: at most 2x the floor at 100,000 items: {ratio:.2f}x, {verdict}")
        if breaker_case and gather_case:
            ratio = breaker_case.seconds / gather_case.seconds
            verdict = "met" if ratio < 1 else "NOT met"
            lines.append(
                f"- {flavour}: faster than gather_semaphore at 100,000 items: {ratio:.2f}x its time, {verdict}"
            )
        per_item = [
            case.microseconds_per_item
            for items in sizes
            if items >= 10_000 and (case := find("circuit_breaker", flavour, items)) is not None
        ]
        if len(per_item) >= 2:
            spread = max(per_item) / min(per_item) - 1
            verdict = "met" if spread <= 0.30 else "NOT met"
            span = f"{min(s for s in sizes if s >= 10_000):,} to {max(sizes):,}"
            lines.append(f"- {flavour}: time per item flat within 30% from {span} items: {spread:.0%}, {verdict}")
    return lines


def plot(cases: list[Case], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    sizes = sorted({case.items for case in cases})
    figure, axes = plt.subplots(1, len(CALLS), figsize=(11, 4.8), sharey=True)
    for axis, flavour in zip(axes, CALLS, strict=True):
        for implementation in IMPLEMENTATIONS:
            points = [
                (case.items, case.microseconds_per_item)
                for case in cases
                if case.implementation == implementation and case.flavour == flavour
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", label=implementation)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.xaxis.set_major_locator(FixedLocator(sizes))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticklabels([f"{size:,}" for size in sizes])
        axis.yaxis.set_major_formatter("{x:g}")
        axis.set_title(f"no-op call: {flavour}")
        axis.set_xlabel("items")
        axis.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("time per item (µs)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    figure.suptitle(f"Fan-out of no-op calls, {CONCURRENCY} at a time: time per item against items (log scales)")
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=110)


def load_cases(path: Path) -> list[Case]:
    """Read the measurements that ``--json`` wrote."""
    return [Case(**fields) for fields in json.loads(path.read_text(encoding="utf-8"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stop at 100,000 items (under a minute)")
    parser.add_argument(
        "--naive-budget",
        type=float,
        default=None,
        help="seconds the naive breaker may be predicted to take at the next size (default 5 quick, 90 full)",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    parser.add_argument("--plot", type=Path, help="also draw time per item against items to this PNG file")
    parser.add_argument(
        "--from-json", type=Path, help="measure nothing: draw --plot from a JSON file that --json wrote earlier"
    )
    arguments = parser.parse_args()
    if arguments.from_json:
        if not arguments.plot:
            parser.error("--from-json needs --plot")
        plot(load_cases(arguments.from_json), arguments.plot)
        return

    sizes = [1_000, 10_000, 100_000] if arguments.quick else [1_000, 10_000, 100_000, 1_000_000]
    budget = arguments.naive_budget if arguments.naive_budget is not None else (5.0 if arguments.quick else 90.0)
    print(f"{describe_machine()}; concurrency {CONCURRENCY}")

    cases: list[Case] = []
    started = time.perf_counter()
    for flavour in CALLS:
        naive_previous: Case | None = None
        for items in sizes:
            rounds = {name: _schedule(items) for name in IMPLEMENTATIONS}
            if naive_previous is not None:
                predicted = naive_previous.seconds * (items / naive_previous.items) ** 2
                if predicted > budget:
                    print(f"# skip naive_breaker at {items:,}: predicted {predicted:.0f} s", file=sys.stderr)
                    del rounds["naive_breaker"]
                elif predicted > 5:
                    # A slow case is timed once: its run is long enough for noise to hardly matter.
                    rounds["naive_breaker"] = (1, 1)
                else:
                    # Its runs already take long enough at this size for warming up to hardly matter.
                    rounds["naive_breaker"] = (2, 1)
            for case in measure_size(flavour, items, rounds):
                if case.implementation == "naive_breaker":
                    naive_previous = case
                cases.append(case)
                print(
                    f"# {flavour:9} {case.implementation:22} {items:>9,} {case.seconds * 1000:10.1f} ms "
                    f"{case.microseconds_per_item:8.2f} µs/item {case.peak_bytes / 2**20:9.1f} MiB",
                    file=sys.stderr,
                )

    for flavour in CALLS:
        print(f"\n### No-op call: {flavour}\n")
        print(markdown_table(cases, flavour))
    print("\n### Targets\n")
    print("\n".join(target_lines(cases, sizes)))
    print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    if arguments.json:
        arguments.json.write_text(json.dumps([asdict(case) for case in cases], indent=2))
    if arguments.plot:
        plot(cases, arguments.plot)


if __name__ == "__main__":
    main()
