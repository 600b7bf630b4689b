"""The ``flyte-patterns`` command line. ``flyte-patterns demo [PATH]`` runs the demo pipeline on a source tree.

Exit status:

* 0 when the pipeline ran. A tripped breaker or an exhausted memory ladder is a result, shown in the summary and
  the report.
* 1 when the run itself failed.
* 2 for invalid arguments: a missing PATH, a PATH without Python files, an invalid option value, or ``--remote``
  without a Flyte config or endpoint.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.progress import TaskID

    from ._demo.report import DemoReport, DemoSettings

# The demo, Flyte and rich are imported inside the commands, so `--help` returns at once.

DEFAULT_REPORT = "flyte-patterns-report.json"

INDEX_FACTOR = 2.0
"""Each attempt of the index step gets this many times the memory of the previous one."""

# Flyte 2.12 keeps each local run's metadata under this folder, in a directory named after the run.
LOCAL_METADATA_ROOT = Path("/tmp/flyte/metadata")


def _default_tree() -> str:
    return sysconfig.get_paths()["stdlib"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flyte-patterns")
def main() -> None:
    """Higher-order orchestration patterns over Flyte v2 tasks."""


@main.command()
@click.argument(
    "path",
    required=False,
    type=click.Path(exists=True, file_okay=False, dir_okay=True, readable=True, path_type=Path),
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Files per batch; each batch is one task call. Default: chosen by the auto batcher, about four batches "
    "per concurrent slot.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Batches analysed at the same time.",
)
@click.option(
    "--max-failed-batches",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Failed batches the circuit breaker tolerates; one more trips it.",
)
@click.option(
    "--max-failed-ratio",
    type=click.FloatRange(min=0.0, max=1.0),
    default=None,
    help="Also trip the breaker as soon as more than this share of all batches (0 to 1) has failed.",
)
@click.option(
    "--index-memory",
    default="16Mi",
    show_default=True,
    help="Memory limit of the index step's first attempt, as a Kubernetes quantity (16Mi, 1Gi).",
)
@click.option(
    "--index-max-memory",
    default="1Gi",
    show_default=True,
    help="Ceiling of the index step's memory ladder; each attempt doubles the memory up to it.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=DEFAULT_REPORT,
    show_default=True,
    help="Where to write the JSON report.",
)
@click.option(
    "--remote",
    is_flag=True,
    help="Run on the Flyte cluster of your config (flyte.init_from_config()) instead of the local engine.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Flyte config file for --remote. Default: the first of ./config.yaml, ./.flyte/config.yaml, "
    "<git root>/.flyte/config.yaml, $UCTL_CONFIG, $FLYTECTL_CONFIG, ~/.union/config.yaml, ~/.flyte/config.yaml.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the log output of Flyte and flyte-patterns.")
def demo(
    path: Path | None,
    batch_size: int | None,
    concurrency: int,
    max_failed_batches: int,
    max_failed_ratio: float | None,
    index_memory: str,
    index_max_memory: str,
    report_path: Path,
    remote: bool,
    config_path: Path | None,
    verbose: bool,
) -> None:
    """Run the four patterns on the Python files under PATH.

    PATH defaults to the running Python's standard library. The files are analysed in batches (auto batcher),
    each with ast, falling back to the tokenizer and then to a line scanner (fallback runner). A circuit
    breaker stops the batches when too many fail, and a cross-reference index is built under the OOM retrier,
    starting from a small memory limit. A summary is printed and a JSON report written.
    """
    started = time.monotonic()
    from flyte_patterns import parse_memory

    from ._demo.report import DemoSettings
    from ._demo.tree import SELECTION_RULE, find_source_files

    root = (path or Path(_default_tree())).resolve()
    paths = find_source_files(root)
    if not paths:
        raise click.UsageError(f"PATH {str(root)!r} contains no Python files to analyse (looked for {SELECTION_RULE})")

    for name, value in (("--index-memory", index_memory), ("--index-max-memory", index_max_memory)):
        try:
            parse_memory(value, name=name)
        except (TypeError, ValueError) as error:
            raise click.BadParameter(str(error), param_hint=f"'{name}'") from None
    if parse_memory(index_memory) > parse_memory(index_max_memory):
        raise click.BadParameter(
            f"{index_memory!r} is above --index-max-memory {index_max_memory!r}", param_hint="'--index-memory'"
        )
    if not report_path.parent.is_dir():
        raise click.BadParameter(
            f"cannot write {str(report_path)!r}: the directory {str(report_path.parent)!r} does not exist",
            param_hint="'--report'",
        )

    settings = DemoSettings(
        batch_size=batch_size,
        concurrency=concurrency,
        max_failed_batches=max_failed_batches,
        max_failed_ratio=max_failed_ratio,
        index_memory=index_memory,
        index_max_memory=index_max_memory,
        index_factor=INDEX_FACTOR,
    )
    total_bytes = sum(_file_size(root / relative) for relative in paths)
    _configure_logging(verbose)

    if remote:
        config_file = _remote_config(config_path)
        report = _run_remote(root, paths, total_bytes, settings, config_file, verbose)
        engine = "Flyte cluster"
    else:
        report = _run_local(root, paths, total_bytes, settings, verbose)
        engine = "local Flyte engine"

    from rich.console import Console

    from ._demo.report import report_to_json
    from ._demo.summary import print_summary

    wall_seconds = time.monotonic() - started
    console = Console()
    print_summary(console, report, engine=engine, wall_seconds=wall_seconds)
    try:
        report_path.write_text(
            report_to_json(report, engine=engine, wall_seconds=round(wall_seconds, 3)), encoding="utf-8"
        )
    except OSError as error:
        raise click.ClickException(f"could not write the JSON report to {str(report_path)!r}: {error}") from error
    console.print(f"JSON report: {report_path}", soft_wrap=True)


def _file_size(path: Path) -> int:
    """Return a file's size in bytes, or 0 when it cannot be read. The analysis reports why it cannot."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------------- running


def _configure_logging(verbose: bool) -> None:
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _flyte_log_level(verbose: bool) -> int:
    # Flyte logs every failed task with its traceback. The demo fails tasks on purpose and reports them itself.
    return logging.INFO if verbose else logging.CRITICAL


def _run_local(root: Path, paths: list[str], total_bytes: int, settings: DemoSettings, verbose: bool) -> DemoReport:
    import flyte
    from flyte.io import Dir

    from ._demo.pipeline import demo_pipeline, listening_to_progress

    flyte.init(log_level=_flyte_log_level(verbose))
    run_name = f"flyte-patterns-demo-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="flyte-patterns-demo-") as raw_data:
        try:
            with _progress_bar(len(paths)) as listener, listening_to_progress(listener):
                source = Dir.from_local_sync(str(root))
                context = flyte.with_runcontext(name=run_name, raw_data_path=raw_data)
                run = context.run(demo_pipeline, source, paths, paths, total_bytes, settings)
                report: DemoReport = run.outputs()[0]
                return report
        except Exception as error:
            raise click.ClickException(f"the demo pipeline failed: {type(error).__name__}: {error}") from error
        finally:
            shutil.rmtree(LOCAL_METADATA_ROOT / run_name, ignore_errors=True)


def _remote_config(config_path: Path | None) -> Path:
    """Return the Flyte config file to use for ``--remote``, or raise a usage error that names what is missing."""
    import flyte.config

    config = flyte.config.auto(config_path)
    if config.source is None:
        raise click.UsageError(
            "--remote needs a Flyte config file, and none was found. Looked for ./config.yaml, "
            "./.flyte/config.yaml, <git root>/.flyte/config.yaml, $UCTL_CONFIG, $FLYTECTL_CONFIG, "
            "~/.union/config.yaml and ~/.flyte/config.yaml. Create one with `flyte create config --endpoint "
            "<your endpoint>`, or pass --config FILE."
        )
    if not config.platform.endpoint:
        raise click.UsageError(
            f"--remote needs a cluster endpoint, but the Flyte config {str(config.source)!r} sets no "
            f"admin.endpoint. Add it, or pass another file with --config."
        )
    return Path(config.source)


def _run_remote(
    root: Path, paths: list[str], total_bytes: int, settings: DemoSettings, config_file: Path, verbose: bool
) -> DemoReport:
    import flyte
    from flyte.io import Dir
    from rich.console import Console

    from ._demo.pipeline import demo_pipeline
    from ._demo.tree import stage_files

    # NOTE: this path has not been run against a cluster. docs/cluster.md lists what it relies on.
    console = Console(stderr=True)
    flyte.init_from_config(config_file, log_level=_flyte_log_level(verbose))
    with tempfile.TemporaryDirectory(prefix="flyte-patterns-demo-") as staging:
        # Upload only the selected files, not the caches and installed packages that share their directory.
        staged = Path(staging) / root.name
        names = stage_files(root, paths, staged)
        try:
            source = Dir.from_local_sync(str(staged))
            run = flyte.run(demo_pipeline, source, names, paths, total_bytes, settings)
            console.print(f"Started run {run.name}: {run.url}")
            with console.status("waiting for the run to finish on the cluster"):
                run.wait(quiet=True)
            report: DemoReport = run.outputs()[0]
            return report
        except Exception as error:
            raise click.ClickException(f"the demo pipeline failed on the cluster: {error}") from error


@contextlib.contextmanager
def _progress_bar(files: int) -> Iterator[Callable[[object], None]]:
    """Show a rich progress bar while the block runs, and yield the listener that feeds it pipeline events."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ._demo.pipeline import BatchFinished, IndexAttempt

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    )
    files_task = progress.add_task("analysing files", total=files)
    index_task: list[TaskID] = []
    failed_batches = 0

    def on_event(event: object) -> None:
        nonlocal failed_batches
        if isinstance(event, BatchFinished):
            if event.status == "failed":
                failed_batches += 1
                progress.update(files_task, description=f"analysing files ({failed_batches} batches failed)")
            progress.advance(files_task, event.files)
        elif isinstance(event, IndexAttempt):
            description = f"index at {event.memory}: {event.status}"
            if not index_task:
                index_task.append(progress.add_task(description, total=None))
            else:
                progress.update(index_task[0], description=description)

    with progress:
        yield on_event
