"""The demo pipeline: a Flyte driver task that puts every pattern of the library to work on a source tree.

Steps, all inside :func:`demo_pipeline`:

1. **Auto batcher.** :func:`flyte_patterns.batch_map` splits the files into batches (of ``batch_size``, or of a
   size it chooses from the number of files and the concurrency) and runs :func:`analyse_batch` once per batch,
   ``concurrency`` batches at a time in a sliding window.
2. **Fallback runner.** Inside each batch, every file goes through the analysers of
   :mod:`flyte_patterns._demo.analysis` under :func:`flyte_patterns.with_fallback`: ``ast`` first, then the
   tokenizer, then the line scanner.
3. **Circuit breaker.** The batcher takes the circuit breaker's rules, which count failed batches. A batch fails
   when more than half of its files fail (binary or unreadable files), so on a tree of junk the breaker trips
   after a few batches, cancels the running ones and starts no more. The report keeps every result obtained
   until then.
4. **OOM retrier.** :func:`index_tree` builds the cross-reference index of :mod:`flyte_patterns._demo.xref`, whose
   memory grows with the tree. It runs under :func:`flyte_patterns.retry_with_memory`, from a deliberately small
   memory limit that is multiplied by ``index_factor`` each time the task runs out of memory, up to the ceiling.
   The report lists every rung it tried. Locally the limit is enforced by running the task body in a child process
   that is killed when it passes the limit. On a cluster Kubernetes enforces it. The step is skipped when the
   breaker tripped.

The tree arrives as a ``flyte.io.Dir`` and each batch receives ``flyte.io.File`` objects, so the same code runs on
a cluster, where the driver's pod has no access to the user's disk. Locally both refer to the files in place and
nothing is copied.

Progress: on the local engine the tasks run in the caller's process, so :func:`listening_to_progress` lets the
command line draw a progress bar from :class:`BatchFinished` and :class:`IndexAttempt` events. On a cluster no
events arrive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import flyte
from flyte.io import Dir, File

from flyte_patterns import (
    BatchProgress,
    MemoryLadderExhaustedError,
    MemoryRetryEvent,
    OutcomeStatus,
    batch_map,
    flyte_code,
    format_memory,
    retry_with_memory,
)

from .analysis import ANALYSERS, FileAnalysis, analyse_file, describe_error
from .report import (
    AnalysisTotals,
    BatchError,
    BatchStep,
    DemoReport,
    DemoSettings,
    FileRecord,
    IndexStep,
    MemoryRung,
)
from .xref import IndexSummary, build_index

logger = logging.getLogger("flyte_patterns.demo")

FAILED_SHARE = 0.5
"""A batch fails when more than this share of its files fail."""


def _demo_image() -> flyte.Image | str:
    """Return the image the demo's tasks run in on a cluster.

    Flyte ships a run's code as a bundle of the modules imported from under its root directory, leaving out
    anything installed in site-packages. A source checkout (an editable install, as ``make demo`` makes) is
    therefore shipped with the run, and Flyte's default image (``"auto"``, Debian with the local Python and Flyte
    versions) is enough. An installed package is not shipped, so the image installs the same version of it.
    """
    package_directory = Path(__file__).resolve().parent.parent
    if {"site-packages", "dist-packages"}.isdisjoint(package_directory.parts):
        return "auto"
    version = metadata.version("flyte-patterns")
    return flyte.Image.from_debian_base(name="flyte-patterns-demo").with_pip_packages(f"flyte-patterns=={version}")


# On a cluster a scalar memory is only a request. The pair also sets the limit, at which Kubernetes kills a pod.
env = flyte.TaskEnvironment(
    name="flyte_patterns_demo",
    image=_demo_image(),
    resources=flyte.Resources(cpu=1, memory=("512Mi", "1Gi")),
)


class BatchAnalysisError(Exception):
    """More than half of the files of a batch could not be analysed: the batch is treated as failed."""


# ---------------------------------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class BatchFinished:
    """A batch finished running.

    Attributes:
        batch: The batch's position, from 0.
        files: How many files it had.
        status: ``"succeeded"``, ``"failed"`` or ``"cancelled"``.
    """

    batch: int
    files: int
    status: str


@dataclass(frozen=True)
class IndexAttempt:
    """An attempt of the index step started or ended.

    Attributes:
        memory: The attempt's memory limit as a Kubernetes quantity.
        status: ``"started"``, ``"out of memory"``, ``"succeeded"`` or ``"failed"``.
    """

    memory: str
    status: str


ProgressEvent = BatchFinished | IndexAttempt
ProgressListener = Callable[[ProgressEvent], object]

_listener: ProgressListener | None = None


@contextlib.contextmanager
def listening_to_progress(listener: ProgressListener) -> Iterator[None]:
    """Send the progress events of local runs started in this block to ``listener``.

    Flyte runs a local driver on an event loop in a thread of its own, so the listener is called from that
    thread. A listener that raises is logged and ignored.
    """
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous


def _emit(event: ProgressEvent) -> None:
    listener = _listener
    if listener is None:
        return
    try:
        listener(event)
    except Exception:
        logger.exception("the progress listener raised an error on %r, which is ignored", event)


# ---------------------------------------------------------------------------------------------------- tasks


@env.task
async def analyse_batch(files: list[File]) -> list[FileAnalysis]:
    """Analyse every file of a batch, each with the first analyser of the fallback chain that succeeds.

    Raises:
        BatchAnalysisError: More than half of the files failed, which means the batch is junk, not source.
    """
    results = []
    for file in files:
        # Locally the file is already on disk and download() returns its path. On a cluster it fetches the file.
        local_path = await file.download()
        results.append(await analyse_file(local_path))

    failed = [(file, result) for file, result in zip(files, results, strict=True) if result.failed]
    if len(failed) > FAILED_SHARE * len(results):
        first_file, first_result = failed[0]
        raise BatchAnalysisError(
            f"{len(failed)} of {len(results)} files could not be analysed; "
            f"first: {first_file.name}: {first_result.error}"
        )
    return results


@env.task
async def index_tree(source: Dir, names: list[str], paths: list[str]) -> IndexSummary:
    """Build the cross-reference index of the files ``names`` of ``source``, known as ``paths``, and summarise it."""
    # Locally the directory is used in place. On a cluster it is downloaded once into the pod.
    root = await source.download()
    return build_index(root, paths, names=names).summary()


@env.task
async def demo_pipeline(
    source: Dir, names: list[str], paths: list[str], total_bytes: int, settings: DemoSettings
) -> DemoReport:
    """Run the four steps over the files of ``source`` and report on each.

    Args:
        source: The directory that contains the files.
        names: Where each file is inside ``source``, as a POSIX path.
        paths: Each file's POSIX path relative to the root of the user's tree, for the report and for resolving
            imports. Equal to ``names`` when ``source`` is the tree itself; a cluster run stages the files flat.
        total_bytes: The files' total size, for the report.
        settings: The knobs of the run.

    Raises:
        ValueError: ``names`` and ``paths`` differ in length, checked before any task is launched.
    """
    if len(names) != len(paths):
        raise ValueError(f"names has {len(names)} entries but paths has {len(paths)}; they must pair up")
    base = source.path.rstrip("/")
    files = [File.from_existing_remote(f"{base}/{name}") for name in names]

    batch_started = time.monotonic()
    run = await _analyse_in_batches(files, settings)
    batch_seconds = time.monotonic() - batch_started
    analysis, step, fallback_files, failed_files = summarise_batches(paths, run)
    step = _with_seconds(step, batch_seconds)

    analysed = [number for number, result in enumerate(run.file_results()) if result and not result.failed]
    if step.tripped:
        index = IndexStep(status="skipped", error="the circuit breaker tripped, so the tree was not indexed")
    elif not analysed:
        index = IndexStep(status="skipped", error="no file could be analysed, so there is nothing to index")
    else:
        index = await _index_with_memory_ladder(
            source, [names[number] for number in analysed], [paths[number] for number in analysed], settings
        )

    return DemoReport(
        source=source.path,
        files=len(paths),
        total_bytes=total_bytes,
        settings=settings,
        analysis=analysis,
        batches=step,
        index=index,
        fallback_files=fallback_files,
        failed_files=failed_files,
    )


# ---------------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class BatchOutcome:
    """The outcome of one batch.

    Attributes:
        status: ``"succeeded"``, ``"failed"``, ``"cancelled"`` or ``"not_started"``.
        start: The position of the batch's first file.
        stop: The position just after its last file.
        results: One analysis per file, for a batch that succeeded.
        error: The error of a failed batch, as the driver received it.
    """

    status: str
    start: int
    stop: int
    results: list[FileAnalysis] | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class BatchRun:
    """The outcome of every batch, in order, and whether the circuit breaker tripped.

    After a trip, the files after the last batch formed are in no batch; they count as not started.
    """

    batch_size: int
    outcomes: list[BatchOutcome]
    files: int
    tripped: bool = False
    trip_reason: str = ""

    def file_results(self) -> list[FileAnalysis | None]:
        """Return one entry per file, in order: its analysis, or ``None`` when no succeeded batch analysed it."""
        results: list[FileAnalysis | None] = [None] * self.files
        for outcome in self.outcomes:
            if outcome.results is not None:
                results[outcome.start : outcome.stop] = outcome.results
        return results


async def _analyse_in_batches(files: list[File], settings: DemoSettings) -> BatchRun:
    """Run :func:`analyse_batch` over the files with the auto batcher, under the circuit breaker's rules."""

    def report_progress(progress: BatchProgress) -> None:
        _emit(BatchFinished(progress.batch.index, progress.batch.size, progress.status.value))

    result = await batch_map(
        analyse_batch,
        files,
        batch_size=settings.batch_size,
        concurrency=settings.concurrency,
        max_failures=settings.max_failed_batches,
        max_failure_ratio=settings.max_failed_ratio,
        return_result=True,
        on_progress=report_progress,
        # The command line draws its own progress bar from the events above.
        progress_bar=False,
        group_name="analyse_batch",
    )
    outcomes = [
        BatchOutcome(
            status=outcome.status.value,
            start=span.start,
            stop=span.stop,
            results=outcome.value if outcome.status is OutcomeStatus.SUCCEEDED else None,
            error=outcome.error,
        )
        for outcome, span in zip(result.batches.outcomes, result.spans, strict=True)
    ]
    return BatchRun(
        batch_size=result.batch_size,
        outcomes=outcomes,
        files=len(files),
        tripped=result.tripped,
        trip_reason="" if result.trip is None else result.trip.message,
    )


def summarise_batches(
    paths: Sequence[str], run: BatchRun
) -> tuple[AnalysisTotals, BatchStep, list[FileRecord], list[FileRecord]]:
    """Fold the batch outcomes into the report's totals, batch step, fallback files and failed files."""
    served_by: dict[str, int] = {}
    fallbacks: dict[str, int] = {}
    fallback_files: list[FileRecord] = []
    failed_files: list[FileRecord] = []
    totals = {"lines": 0, "functions": 0, "classes": 0, "imports": 0}
    longest = ("", 0)

    for path, result in zip(paths, run.file_results(), strict=True):
        if result is None:
            continue
        if result.fallback_reasons or result.failed:
            key = _fallback_path(result)
            fallbacks[key] = fallbacks.get(key, 0) + 1
            record = FileRecord(path, result.analyser, list(result.fallback_reasons), result.error)
            (failed_files if result.failed else fallback_files).append(record)
        if result.stats is None:
            continue
        served_by[result.analyser] = served_by.get(result.analyser, 0) + 1
        stats = result.stats
        totals["lines"] += stats.lines
        totals["functions"] += stats.functions
        totals["classes"] += stats.classes
        totals["imports"] += stats.imports
        if stats.longest_function_lines > longest[1]:
            longest = (f"{path}: {stats.longest_function}", stats.longest_function_lines)

    counts = {status: 0 for status in ("succeeded", "failed", "cancelled", "not_started")}
    files_by_status = dict(counts)
    errors = []
    for number, outcome in enumerate(run.outcomes):
        counts[outcome.status] += 1
        files_by_status[outcome.status] += outcome.stop - outcome.start
        if outcome.status == "failed" and outcome.error is not None:
            error = outcome.error
            code = flyte_code(error) or ""
            errors.append(BatchError(number, paths[outcome.start], _describe_flyte_error(error), code))
    files_in_batches = sum(outcome.stop - outcome.start for outcome in run.outcomes)
    files_by_status["not_started"] += run.files - files_in_batches

    analysis = AnalysisTotals(
        files_analysed=sum(served_by.values()),
        files_failed=len(failed_files),
        longest_function=longest[0],
        longest_function_lines=longest[1],
        served_by=dict(sorted(served_by.items())),
        fallbacks=dict(sorted(fallbacks.items())),
        **totals,
    )
    step = BatchStep(
        batch_size=run.batch_size,
        batches=len(run.outcomes),
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        cancelled=counts["cancelled"],
        not_started=counts["not_started"],
        tripped=run.tripped,
        trip_reason=run.trip_reason,
        files_in_failed_batches=files_by_status["failed"],
        files_in_cancelled_batches=files_by_status["cancelled"],
        files_not_started=files_by_status["not_started"],
        errors=errors,
    )
    return analysis, step, sorted(fallback_files, key=_by_path), sorted(failed_files, key=_by_path)


def _fallback_path(result: FileAnalysis) -> str:
    """Return how a file went down the chain, such as ``"ast SyntaxError -> tokenizer"``."""
    steps = [f"{ANALYSERS[number]} {reason}" for number, reason in enumerate(result.fallback_reasons)]
    return " -> ".join([*steps, result.analyser or "failed"])


def _by_path(record: FileRecord) -> str:
    return record.path


def _with_seconds(step: BatchStep, seconds: float) -> BatchStep:
    return dataclasses.replace(step, seconds=round(seconds, 3))


# ---------------------------------------------------------------------------------------------------- index


async def _index_with_memory_ladder(
    source: Dir, names: list[str], paths: list[str], settings: DemoSettings
) -> IndexStep:
    """Run :func:`index_tree` under the OOM retrier, from ``settings.index_memory`` up to the ceiling.

    Locally the retrier runs each attempt in a child process killed at the attempt's memory, so the ladder is
    climbed for real. Any error of the step is recorded in the report instead of failing the run.
    """
    ladder: list[str] = []
    attempts: list[MemoryRung] = []

    def record(event: MemoryRetryEvent) -> None:
        memory = format_memory(event.size)
        if not ladder:
            ladder.extend(format_memory(size) for size in event.ladder)
        if event.kind == "attempt":
            _emit(IndexAttempt(memory, "started"))
            return
        outcome = _RUNG_OUTCOMES[event.kind]
        error = "" if event.error is None else _describe_flyte_error(event.error)
        attempts.append(MemoryRung(memory, outcome, round(event.duration or 0.0, 3), error))
        _emit(IndexAttempt(memory, outcome))

    started = time.monotonic()
    try:
        summary = await retry_with_memory(
            index_tree,
            source,
            names,
            paths,
            initial_memory=settings.index_memory,
            factor=settings.index_factor,
            max_memory=settings.index_max_memory,
            on_event=record,
        )
    except MemoryLadderExhaustedError as error:
        status, summary, message = "exhausted", None, describe_error(error)
    except Exception as error:  # noqa: BLE001 - the report records any other error of the index step
        status, summary, message = "failed", None, _describe_flyte_error(error)
    else:
        status, message = "succeeded", ""
    seconds = round(time.monotonic() - started, 3)
    return IndexStep(status, ladder, attempts, summary, message, seconds)


# The report's name for the end of an attempt, by the retrier's event kind.
_RUNG_OUTCOMES = {
    "succeeded": "succeeded",
    "escalated": "out of memory",
    "exhausted": "out of memory",
    "failed": "failed",
    "cancelled": "cancelled",
}


def _describe_flyte_error(error: BaseException) -> str:
    """Return ``"ClassName (code 'X'): message"`` for an error a task raised, so the original class shows."""
    code = flyte_code(error)
    described = describe_error(error)
    if not code:
        return described
    name, _, message = described.partition(": ")
    return f"{name} (code {code!r}): {message}" if message else f"{name} (code {code!r})"
