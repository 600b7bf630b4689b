"""The demo pipeline on the real local Flyte engine, on fixture trees whose numbers are known."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import flyte.errors
import pytest
from click.testing import CliRunner
from flyte.io import Dir

from flyte_patterns._cli import main
from flyte_patterns._demo.pipeline import (
    BatchFinished,
    IndexAttempt,
    ProgressEvent,
    demo_pipeline,
    listening_to_progress,
)
from flyte_patterns._demo.report import DemoReport, DemoSettings, FileRecord

from .conftest import FLYTE_METADATA_ROOT, RunLocal
from .demo_trees import GOOD_MODULE_STATS, PY2_MODULE_STATS, write_junk_tree, write_large_tree, write_source_tree

pytestmark = pytest.mark.flyte

MODULES = 6


def _settings(**changes: object) -> DemoSettings:
    values: dict[str, object] = {
        "batch_size": 3,
        "concurrency": 2,
        "max_failed_batches": 2,
        "max_failed_ratio": None,
        "index_memory": "16Mi",
        "index_max_memory": "1Gi",
        "index_factor": 2.0,
    }
    values.update(changes)
    return DemoSettings(**values)  # type: ignore[arg-type]


async def _run(run_local: RunLocal, root: Path, paths: list[str], settings: DemoSettings) -> DemoReport:
    source = await Dir.from_local(str(root))
    total_bytes = sum((root / path).stat().st_size for path in paths)
    report = await run_local(demo_pipeline, source, paths, paths, total_bytes, settings)
    assert isinstance(report, DemoReport)
    return report


async def test_pipeline_reports_fallback(tmp_path: Path, run_local: RunLocal) -> None:
    paths = write_source_tree(tmp_path, modules=MODULES)
    events: list[ProgressEvent] = []
    with listening_to_progress(events.append):
        report = await _run(run_local, tmp_path, paths, _settings())

    assert report.files == MODULES + 2
    assert report.source == str(tmp_path)
    analysis = report.analysis
    assert analysis.files_analysed == MODULES + 2
    assert analysis.files_failed == 0
    assert analysis.served_by == {"ast": MODULES + 1, "tokenizer": 1}
    assert analysis.fallbacks == {"ast SyntaxError -> tokenizer": 1}
    assert report.fallback_files == [FileRecord("legacy/old_print.py", "tokenizer", ["SyntaxError"], "")]
    assert report.failed_files == []

    # The package's __init__.py has two lines and one import.
    assert analysis.lines == 2 + MODULES * GOOD_MODULE_STATS["lines"] + PY2_MODULE_STATS["lines"]
    assert analysis.functions == MODULES * GOOD_MODULE_STATS["functions"] + PY2_MODULE_STATS["functions"]
    assert analysis.classes == MODULES * GOOD_MODULE_STATS["classes"]
    assert analysis.imports == 1 + MODULES * GOOD_MODULE_STATS["imports"] + PY2_MODULE_STATS["imports"]
    assert analysis.longest_function == "pkg/mod_0.py: main"
    assert analysis.longest_function_lines == GOOD_MODULE_STATS["longest_function_lines"]

    batches = report.batches
    assert batches.batch_size == 3
    assert batches.batches == 3
    assert (batches.succeeded, batches.failed, batches.cancelled, batches.not_started) == (3, 0, 0, 0)
    assert not batches.tripped
    assert batches.errors == []

    # The tree is tiny, so the index fits in the first rung.
    index = report.index
    assert index.status == "succeeded"
    assert index.ladder == ["16Mi", "32Mi", "64Mi", "128Mi", "256Mi", "512Mi", "1Gi"]
    assert [(rung.memory, rung.outcome) for rung in index.attempts] == [("16Mi", "succeeded")]
    assert index.summary is not None
    assert index.summary.files_indexed == MODULES + 2
    assert index.summary.definitions == MODULES * 4 + 1

    finished = sorted((e for e in events if isinstance(e, BatchFinished)), key=lambda e: e.batch)
    assert finished == [
        BatchFinished(0, 3, "succeeded"),
        BatchFinished(1, 3, "succeeded"),
        BatchFinished(2, 2, "succeeded"),
    ]
    attempts = [e for e in events if isinstance(e, IndexAttempt)]
    assert attempts == [IndexAttempt("16Mi", "started"), IndexAttempt("16Mi", "succeeded")]


def _run_demo_in_fresh_interpreter(tree: Path, report_path: Path, *options: str) -> dict[str, Any]:
    """Run ``flyte-patterns demo`` on ``tree`` in a new Python process and return its JSON report.

    The memory rungs of these tests are a few MiB. Local enforcement counts the resident memory a forked child
    adds, and a long-running test process keeps free but resident heap space that the child can reuse without
    adding any, so the index step runs where the heap starts small.
    """
    before = set(FLYTE_METADATA_ROOT.iterdir()) if FLYTE_METADATA_ROOT.exists() else set()
    command = [sys.executable, "-c", "from flyte_patterns._cli import main; main()", "demo", str(tree)]
    try:
        completed = subprocess.run(
            [*command, "--report", str(report_path), *options], capture_output=True, text=True, timeout=90, check=False
        )
    finally:
        after = set(FLYTE_METADATA_ROOT.iterdir()) if FLYTE_METADATA_ROOT.exists() else set()
        for leftover in after - before:
            shutil.rmtree(leftover, ignore_errors=True)
    assert completed.returncode == 0, completed.stderr[-2000:]
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    return report


def test_index_escalates_from_smallest_rung(tmp_path: Path) -> None:
    # About 48,000 lines: the index grows by several MiB, far past the first rung, while a forked child that does
    # nothing stays under 512Ki.
    tree = tmp_path / "tree"
    write_large_tree(tree, files=40, functions_per_file=400)
    report = _run_demo_in_fresh_interpreter(
        tree, tmp_path / "report.json", "--batch-size", "20", "--index-memory", "1Mi", "--index-max-memory", "64Mi"
    )

    assert report["batches"]["succeeded"] == 2
    assert report["analysis"]["served_by"] == {"ast": 40}
    index = report["index"]
    assert index["status"] == "succeeded"
    assert index["ladder"] == ["1Mi", "2Mi", "4Mi", "8Mi", "16Mi", "32Mi", "64Mi"]
    first = index["attempts"][0]
    assert first["memory"] == "1Mi"
    assert first["outcome"] == "out of memory"
    assert "OOMError (code 'OOMKilled')" in first["error"]
    assert len(index["attempts"]) >= 2
    assert all(rung["outcome"] == "out of memory" for rung in index["attempts"][:-1])
    assert index["attempts"][-1]["outcome"] == "succeeded"
    assert [rung["memory"] for rung in index["attempts"]] == index["ladder"][: len(index["attempts"])]
    assert index["summary"]["definitions"] == 40 * 400
    assert index["summary"]["files_indexed"] == 40


def test_index_reports_exhausted_ladder(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write_large_tree(tree, files=40, functions_per_file=400)
    report = _run_demo_in_fresh_interpreter(
        tree, tmp_path / "report.json", "--batch-size", "40", "--index-memory", "1Mi", "--index-max-memory", "2Mi"
    )

    index = report["index"]
    assert index["status"] == "exhausted"
    assert [(rung["memory"], rung["outcome"]) for rung in index["attempts"]] == [
        ("1Mi", "out of memory"),
        ("2Mi", "out of memory"),
    ]
    assert index["summary"] is None
    assert index["error"].startswith("MemoryLadderExhaustedError: ")
    assert "1Mi, 2Mi" in index["error"]


async def test_junk_tree_trips_breaker(tmp_path: Path, run_local: RunLocal) -> None:
    paths = write_junk_tree(tmp_path, files=24)
    events: list[ProgressEvent] = []
    with listening_to_progress(events.append):
        report = await _run(run_local, tmp_path, paths, _settings(concurrency=1))

    # One batch at a time: batches 0, 1 and 2 fail, and the third failure trips. The batcher forms batches as they
    # are needed, so the other 15 files are never put in a batch.
    batches = report.batches
    assert batches.batch_size == 3
    assert batches.batches == 3
    assert batches.tripped
    assert batches.trip_reason.startswith("3 failures")
    assert (batches.succeeded, batches.failed, batches.cancelled, batches.not_started) == (0, 3, 0, 0)
    assert batches.files_in_failed_batches == 9
    assert batches.files_not_started == 15
    assert [error.batch for error in batches.errors] == [0, 1, 2]
    first = batches.errors[0]
    assert first.first_file == "junk/blob_000.py"
    assert first.code == "BatchAnalysisError"
    assert "3 of 3 files could not be analysed" in first.error
    assert "ValueError: binary content: NUL byte" in first.error

    assert report.analysis.files_analysed == 0
    assert report.index.status == "skipped"
    assert report.index.error == "the circuit breaker tripped, so the tree was not indexed"
    assert report.index.attempts == []
    assert [event for event in events if isinstance(event, BatchFinished)] == [
        BatchFinished(number, 3, "failed") for number in range(3)
    ]


async def test_junk_tree_trips_concurrent_breaker(tmp_path: Path, run_local: RunLocal) -> None:
    paths = write_junk_tree(tmp_path, files=48)
    report = await _run(
        run_local, tmp_path, paths, _settings(concurrency=4, max_failed_batches=None, max_failed_ratio=0.25)
    )

    # Four batches may be running when the fifth failure of sixteen batches passes the ratio; none succeeds.
    batches = report.batches
    assert batches.tripped
    assert batches.trip_reason.startswith("5 failures")
    assert batches.succeeded == 0
    assert batches.failed >= 5
    assert batches.failed + batches.cancelled + batches.not_started == batches.batches
    assert batches.batches < 16
    assert batches.files_in_failed_batches == 3 * batches.failed
    assert batches.files_in_failed_batches + batches.files_in_cancelled_batches + batches.files_not_started == 48
    assert batches.files_not_started > 0
    assert report.index.status == "skipped"


def test_cli_runs_demo_on_tree(tmp_path: Path) -> None:
    paths = write_source_tree(tmp_path / "tree", modules=MODULES)
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(
        main, ["demo", str(tmp_path / "tree"), "--batch-size", "4", "--report", str(report_path)]
    )
    assert result.exit_code == 0, result.output

    document = json.loads(report_path.read_text())
    assert document["format"] == 1
    assert document["engine"] == "local Flyte engine"
    assert document["wall_seconds"] > 0
    assert document["files"] == len(paths)
    assert document["analysis"]["served_by"] == {"ast": MODULES + 1, "tokenizer": 1}
    assert document["batches"]["batches"] == 2
    assert document["index"]["status"] == "succeeded"

    for heading in ("Auto batcher and circuit breaker", "Fallback runner", "OOM retrier"):
        assert heading in result.output
    assert "legacy/old_print.py -> tokenizer" in result.output
    assert f"JSON report: {report_path}" in result.output


def test_cli_chooses_batch_size(tmp_path: Path) -> None:
    write_source_tree(tmp_path / "tree", modules=MODULES)
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(
        main, ["demo", str(tmp_path / "tree"), "--concurrency", "1", "--report", str(report_path)]
    )
    assert result.exit_code == 0, result.output

    # Eight files and one batch at a time: the auto batcher aims at four batches per slot, so two files each.
    document = json.loads(report_path.read_text())
    assert document["settings"]["batch_size"] is None
    assert document["batches"]["batch_size"] == 2
    assert document["batches"]["batches"] == 4
    assert "4 batches of up to 2 files (chosen automatically), 1 at a time" in result.output


async def test_pipeline_rejects_unpaired_names(tmp_path: Path, run_local: RunLocal) -> None:
    paths = write_source_tree(tmp_path, modules=1)
    source = await Dir.from_local(str(tmp_path))
    with pytest.raises(flyte.errors.RuntimeUserError, match="names has 2 entries but paths has 3") as caught:
        await run_local(demo_pipeline, source, paths[:2], paths, 0, _settings())
    assert caught.value.code == "ValueError"
