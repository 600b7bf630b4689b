"""Run the quick version of every benchmark, one after another, and report how long each took.

Run from the repository root; ``make bench`` runs it after installing the ``bench`` extra::

    .venv/bin/python benchmarks/run_all.py                   # every benchmark with --quick
    .venv/bin/python benchmarks/run_all.py --output results  # also save each benchmark's output to results/
    .venv/bin/python benchmarks/run_all.py --list            # only list what would run

A benchmark is a ``benchmarks/bench_*.py`` script with a ``--quick`` option. The scripts run in the order of
:data:`ORDER`, then any other ``bench_*.py`` in name order. A script listed in :data:`ORDER` that does not exist yet
is reported as skipped, and so is a script without a ``--quick`` option. The exit status is 1 when any benchmark
failed, after all of them have run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from machine import describe_machine

BENCHMARKS = Path(__file__).resolve().parent
REPOSITORY = BENCHMARKS.parent

ORDER = [
    "bench_fanout.py",
    "bench_batching.py",
    "bench_engine_overhead.py",
    "bench_fallback.py",
    "bench_oom.py",
    "bench_memory_ladder.py",
    "bench_local_memory.py",
]
"""The order to run benchmarks in. ``bench_batching.py`` (batch_map against waves and the ideal schedule) has its
slot here before it exists."""


@dataclass(frozen=True)
class Outcome:
    """The result of one benchmark script.

    Attributes:
        script: The script's file name.
        status: ``"passed"``, ``"failed (exit N)"`` or ``"skipped: <reason>"``.
        seconds: Wall time of the run, 0 when skipped.
    """

    script: str
    status: str
    seconds: float


def planned() -> list[tuple[str, str | None]]:
    """Return each script in running order with the reason to skip it, or ``None`` when it runs."""
    present = {path.name for path in BENCHMARKS.glob("bench_*.py")}
    names = ORDER + sorted(present - set(ORDER))
    plan: list[tuple[str, str | None]] = []
    for name in names:
        if name not in present:
            plan.append((name, "not present in this checkout"))
        elif '"--quick"' not in (BENCHMARKS / name).read_text(encoding="utf-8"):
            plan.append((name, "has no --quick option"))
        else:
            plan.append((name, None))
    return plan


def run(script: str, output: Path | None) -> Outcome:
    """Run one script with ``--quick``, echoing its output as it comes and saving it to ``output`` when given."""
    command = [sys.executable, str(BENCHMARKS / script), "--quick"]
    print(f"\n===== {script} --quick", flush=True)
    started = time.perf_counter()
    lines: list[str] = []
    # Unbuffered, so the script's progress lines on stderr and its tables on stdout arrive in the order written.
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, text=True, env=environment) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    seconds = time.perf_counter() - started
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        (output / f"{Path(script).stem}.txt").write_text("".join(lines), encoding="utf-8")
    status = "passed" if process.returncode == 0 else f"failed (exit {process.returncode})"
    return Outcome(script, status, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="folder to save each benchmark's standard output to")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit without running them")
    arguments = parser.parse_args()

    plan = planned()
    if arguments.list:
        for script, reason in plan:
            print(f"{script}: {'runs' if reason is None else 'skipped, ' + reason}")
        return 0

    print(describe_machine())
    started = time.perf_counter()
    outcomes = [
        Outcome(script, f"skipped: {reason}", 0.0) if reason is not None else run(script, arguments.output)
        for script, reason in plan
    ]
    total = time.perf_counter() - started

    print("\n===== summary\n")
    print("| benchmark | status | wall time |")
    print("|---|---|---:|")
    for outcome in outcomes:
        print(f"| {outcome.script} --quick | {outcome.status} | {outcome.seconds:.0f} s |")
    print(f"| all | | {total:.0f} s |")
    print(describe_machine())
    return 0 if all(not outcome.status.startswith("failed") for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
