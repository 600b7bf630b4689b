"""The summary printed at the end of a demo run: a heading, then a table and a few sentences per pattern."""

from __future__ import annotations

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from .analysis import ANALYSERS
from .report import DemoReport

LISTED_ROWS = 8
"""How many fallback paths, files and batch errors the summary lists. The JSON report lists all of them."""


def print_summary(console: Console, report: DemoReport, *, engine: str, wall_seconds: float) -> None:
    """Print the summary of a run to ``console``.

    Sentences are printed with soft wrapping, so a long path stays whole and the terminal wraps it.
    """
    for part in summary_parts(report, engine=engine, wall_seconds=wall_seconds):
        console.print(part, soft_wrap=isinstance(part, Text))


def summary_parts(report: DemoReport, *, engine: str, wall_seconds: float) -> list[RenderableType]:
    """Return the summary of a run: a heading, then a section per step."""
    heading = Text.assemble(
        ("flyte-patterns demo", "bold"),
        f": {report.files:,} Python files, {_megabytes(report.total_bytes)}, in {report.source} "
        f"({engine}, {wall_seconds:.1f} s)",
    )
    return [heading, *_batch_section(report), *_fallback_section(report), *_index_section(report)]


def _batch_section(report: DemoReport) -> list[RenderableType]:
    step = report.batches
    settings = report.settings
    table = _table(("batches", "files", "status"))
    files_in_succeeded_batches = report.analysis.files_analysed + report.analysis.files_failed
    table.add_row(str(step.succeeded), f"{files_in_succeeded_batches:,}", "succeeded")
    table.add_row(str(step.failed), f"{step.files_in_failed_batches:,}", _bad("failed", step.failed))
    table.add_row(str(step.cancelled), f"{step.files_in_cancelled_batches:,}", _bad("cancelled", step.cancelled))
    # Batches are formed as they are needed, so files left after a trip may be in no batch at all.
    not_started_batches = "-" if step.not_started == 0 and step.files_not_started else str(step.not_started)
    table.add_row(not_started_batches, f"{step.files_not_started:,}", _bad("not started", step.files_not_started))

    limits = []
    if settings.max_failed_batches is not None:
        limits.append(f"at most {settings.max_failed_batches} failed batches")
    if settings.max_failed_ratio is not None:
        limits.append(f"at most {settings.max_failed_ratio:.0%} of batches failed")
    breaker = (
        Text(f"tripped: {step.trip_reason}", style="bold red")
        if step.tripped
        else Text(f"not tripped ({', '.join(limits) or 'no limit'})", style="green")
    )
    chosen = " (chosen automatically)" if settings.batch_size is None else ""
    lines: list[RenderableType] = [
        _title("Auto batcher and circuit breaker"),
        table,
        Text.assemble(
            f"{step.batches} batches of up to {step.batch_size} files{chosen}, {settings.concurrency} at a time, "
            f"{step.seconds:.1f} s. Breaker ",
            breaker,
        ),
    ]
    for error in step.errors[:LISTED_ROWS]:
        lines.append(Text(f"  batch {error.batch} ({error.first_file} ...): {error.error}", style="red"))
    if len(step.errors) > LISTED_ROWS:
        lines.append(Text(f"  ... and {len(step.errors) - LISTED_ROWS} more failed batches in the JSON report"))
    return lines


def _fallback_section(report: DemoReport) -> list[RenderableType]:
    analysis = report.analysis
    table = _table(("files", "analysed by"))
    for analyser in ANALYSERS:
        table.add_row(f"{analysis.served_by.get(analyser, 0):,}", analyser)
    table.add_row(f"{analysis.files_failed:,}", _bad("failed (every analyser)", analysis.files_failed))
    for path, count in list(analysis.fallbacks.items())[:LISTED_ROWS]:
        table.add_row(Text(f"{count:,}", style="dim"), Text(path, style="dim"))

    longest = (
        f"; longest function {analysis.longest_function} ({analysis.longest_function_lines:,} lines)"
        if analysis.longest_function
        else ""
    )
    lines: list[RenderableType] = [
        _title("Fallback runner"),
        table,
        Text(
            f"{analysis.lines:,} lines, {analysis.functions:,} functions, {analysis.classes:,} classes, "
            f"{analysis.imports:,} imports{longest}"
        ),
    ]
    records = [*report.fallback_files, *report.failed_files]
    for record in records[:LISTED_ROWS]:
        lines.append(Text(f"  {record.path} -> {record.analyser or 'failed'}", style="dim"))
    if len(records) > LISTED_ROWS:
        lines.append(Text(f"  ... and {len(records) - LISTED_ROWS} more files in the JSON report", style="dim"))
    return lines


def _index_section(report: DemoReport) -> list[RenderableType]:
    index = report.index
    title = _title("OOM retrier: cross-reference index")
    if index.status == "skipped":
        return [title, Text(f"Skipped: {index.error}", style="yellow")]

    table = _table(("memory", "outcome", "seconds"))
    for attempt in index.attempts:
        style = "green" if attempt.outcome == "succeeded" else "red"
        table.add_row(attempt.memory, Text(attempt.outcome, style=style), f"{attempt.seconds:.2f}")
    ladder = Text(f"Ladder {' -> '.join(index.ladder)}, {index.seconds:.1f} s.")

    summary = index.summary
    if summary is None:
        return [title, table, ladder, Text(f"{index.status.capitalize()}: {index.error}", style="red")]
    most_imported = ", ".join(f"{entry.name} ({entry.count})" for entry in summary.most_imported[:5])
    found = Text(
        f"{summary.definitions:,} definitions of {summary.names_defined:,} names, {summary.imports:,} imports of "
        f"{summary.modules_imported:,} modules ({summary.imports_within_tree:,} within the tree); "
        f"most imported: {most_imported}"
    )
    return [title, table, ladder, found]


def _title(text: str) -> Text:
    return Text(f"\n{text}", style="bold")


def _table(columns: tuple[str, ...]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for number, column in enumerate(columns):
        table.add_column(column, justify="right" if number == 0 else "left")
    return table


def _bad(label: str, count: int) -> Text:
    return Text(label, style="red" if count else "")


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
