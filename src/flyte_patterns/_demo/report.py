"""The demo's report: what each step did, as frozen dataclasses that Flyte can carry and JSON can hold.

The driver task returns a :class:`DemoReport`. Flyte converts dataclasses to and from its literals, so every field
is a plain type: ``str``, ``int``, ``float``, ``bool``, lists and string-keyed dictionaries of them, or another of
these dataclasses.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .xref import IndexSummary

REPORT_FORMAT = 1
"""Version of the JSON layout, raised when a field changes meaning or goes away."""


@dataclass(frozen=True)
class DemoSettings:
    """The knobs of one run, as the command line set them.

    Attributes:
        batch_size: Files per batch, one task call each, or ``None`` to let the auto batcher choose.
        concurrency: Batches analysed at the same time.
        max_failed_batches: Failed batches the circuit breaker tolerates; one more trips it. ``None`` for no
            limit.
        max_failed_ratio: The share of all batches that may fail; the breaker trips as soon as more have failed.
            ``None`` for no limit.
        index_memory: Memory of the index step's first attempt, as a Kubernetes quantity.
        index_max_memory: The ceiling of the index step's memory ladder.
        index_factor: Each rung of the ladder is the previous one times this factor, up to the ceiling.
    """

    batch_size: int | None
    concurrency: int
    max_failed_batches: int | None
    max_failed_ratio: float | None
    index_memory: str
    index_max_memory: str
    index_factor: float


@dataclass(frozen=True)
class FileRecord:
    """A file worth listing: one that needed a fallback analyser, or one that failed.

    Attributes:
        path: The file's POSIX path relative to the tree's root.
        analyser: The analyser that served it, or ``""`` when it failed.
        fallback_reasons: The error class of each analyser that failed on it, in order.
        error: For a failed file, ``"ClassName: message"`` of the last error.
    """

    path: str
    analyser: str
    fallback_reasons: list[str]
    error: str = ""


@dataclass(frozen=True)
class AnalysisTotals:
    """Counts over every file that was analysed.

    Attributes:
        files_analysed: Files some analyser served.
        files_failed: Files in successful batches that every analyser failed on.
        lines: Lines, summed over the analysed files.
        functions: Functions, summed.
        classes: Classes, summed.
        imports: Import statements, summed.
        longest_function: The longest function of the tree as ``"path: name"``, or ``""`` when there is none.
        longest_function_lines: Its length in lines.
        served_by: Files per analyser that served them (``"ast"``, ``"tokenizer"``, ``"lines"``).
        fallbacks: Files per fallback path, keyed like ``"ast SyntaxError -> tokenizer"``; a failed file ends in
            ``-> failed``.
    """

    files_analysed: int = 0
    files_failed: int = 0
    lines: int = 0
    functions: int = 0
    classes: int = 0
    imports: int = 0
    longest_function: str = ""
    longest_function_lines: int = 0
    served_by: dict[str, int] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchError:
    """The error of one failed batch.

    Attributes:
        batch: The batch's position, from 0.
        first_file: The path of its first file.
        error: ``"ClassName (code 'Code'): message"`` as the driver received it. For a Flyte task the class is
            Flyte's error class, the code names the class the task raised, and the message is the task's.
        code: The Flyte error code, which names the class the task raised, or ``""``.
    """

    batch: int
    first_file: str
    error: str
    code: str = ""


@dataclass(frozen=True)
class BatchStep:
    """The batch fan-out under the circuit breaker.

    Attributes:
        batch_size: The bound on files per batch that was used, given or chosen automatically.
        batches: How many batches were formed. Batches are formed as they are needed, so after a trip the files
            after the last batch formed belong to no batch.
        succeeded: Batches that returned a result.
        failed: Batches whose task raised.
        cancelled: Batches the breaker cancelled while they ran.
        not_started: Batches formed but never started because the breaker had tripped.
        tripped: Whether the breaker tripped.
        trip_reason: The breaker's explanation, or ``""``.
        files_in_failed_batches: Files of failed batches, which have no analysis.
        files_in_cancelled_batches: Files of cancelled batches.
        files_not_started: Files never analysed because the breaker had tripped, in a batch or not.
        errors: One entry per failed batch, in batch order.
        seconds: Wall time of the fan-out.
    """

    batch_size: int
    batches: int
    succeeded: int
    failed: int
    cancelled: int
    not_started: int
    tripped: bool
    trip_reason: str
    files_in_failed_batches: int
    files_in_cancelled_batches: int
    files_not_started: int
    errors: list[BatchError] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class MemoryRung:
    """One attempt of the index step.

    Attributes:
        memory: The attempt's memory limit as a Kubernetes quantity (``"64Mi"``).
        outcome: ``"out of memory"``, ``"succeeded"``, or ``"failed"`` for any other error.
        seconds: How long the attempt ran.
        error: For an attempt that did not succeed, ``"ClassName (code): message"``.
    """

    memory: str
    outcome: str
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class IndexStep:
    """The cross-reference index under the OOM retrier.

    Attributes:
        status: ``"succeeded"``, ``"exhausted"`` (out of memory at the ceiling too), ``"failed"`` (another error),
            or ``"skipped"`` (the breaker had tripped, so the tree is not worth indexing, or no file was analysed).
        ladder: Every size the retrier planned, in order.
        attempts: The attempts that ran, in order.
        summary: What the index found, when it succeeded.
        error: Why it did not succeed, or ``""``.
        seconds: Wall time of the step, every attempt included.
    """

    status: str
    ladder: list[str] = field(default_factory=list)
    attempts: list[MemoryRung] = field(default_factory=list)
    summary: IndexSummary | None = None
    error: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class DemoReport:
    """Everything one run of the pipeline did.

    Attributes:
        source: The tree's location as the driver saw it (a local path, or a remote URI on a cluster).
        files: Python files selected.
        total_bytes: Their total size in bytes.
        settings: The knobs of the run.
        analysis: Counts over the analysed files.
        batches: The batch fan-out and the circuit breaker.
        index: The index step and its memory ladder.
        fallback_files: Every file that a fallback analyser served, sorted by path.
        failed_files: Every file of a successful batch that failed, sorted by path.
    """

    source: str
    files: int
    total_bytes: int
    settings: DemoSettings
    analysis: AnalysisTotals
    batches: BatchStep
    index: IndexStep
    fallback_files: list[FileRecord] = field(default_factory=list)
    failed_files: list[FileRecord] = field(default_factory=list)


def report_to_json(report: DemoReport, **extra: Any) -> str:
    """Return the report as indented JSON, with ``format`` and the ``extra`` keys (wall time, engine) first."""
    document = {"format": REPORT_FORMAT, **extra, **dataclasses.asdict(report)}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
