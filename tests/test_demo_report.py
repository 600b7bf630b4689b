"""The demo's report: its JSON form and the rich summary, for healthy, tripped and out-of-memory runs."""

from __future__ import annotations

import dataclasses
import json

from rich.console import Console

from flyte_patterns._demo.report import (
    AnalysisTotals,
    BatchError,
    BatchStep,
    DemoReport,
    DemoSettings,
    FileRecord,
    IndexStep,
    MemoryRung,
    report_to_json,
)
from flyte_patterns._demo.summary import print_summary
from flyte_patterns._demo.xref import IndexSummary, Ranked

SETTINGS = DemoSettings(
    batch_size=50,
    concurrency=4,
    max_failed_batches=2,
    max_failed_ratio=None,
    index_memory="16Mi",
    index_max_memory="1Gi",
    index_factor=2.0,
)

HEALTHY = DemoReport(
    source="/usr/lib/python3.11",
    files=120,
    total_bytes=2_500_000,
    settings=SETTINGS,
    analysis=AnalysisTotals(
        files_analysed=120,
        lines=40_000,
        functions=900,
        classes=150,
        imports=600,
        longest_function="pkg/big.py: Parser.parse",
        longest_function_lines=310,
        served_by={"ast": 118, "tokenizer": 1, "lines": 1},
        fallbacks={"ast SyntaxError -> tokenizer": 1, "ast SyntaxError -> tokenizer SyntaxError -> lines": 1},
    ),
    batches=BatchStep(
        batch_size=50,
        batches=3,
        succeeded=3,
        failed=0,
        cancelled=0,
        not_started=0,
        tripped=False,
        trip_reason="",
        files_in_failed_batches=0,
        files_in_cancelled_batches=0,
        files_not_started=0,
        seconds=1.25,
    ),
    index=IndexStep(
        status="succeeded",
        ladder=["16Mi", "32Mi", "64Mi", "128Mi", "256Mi", "512Mi", "1Gi"],
        attempts=[
            MemoryRung("16Mi", "out of memory", 0.2, "OOMError (code 'OOMKilled'): killed"),
            MemoryRung("32Mi", "succeeded", 0.4),
        ],
        summary=IndexSummary(
            files_indexed=120,
            files_skipped=0,
            lines=40_000,
            definitions=1_050,
            names_defined=700,
            imports=600,
            modules_imported=80,
            imports_within_tree=200,
            most_imported=[Ranked("os", 40, "a.py:1: import os")],
            most_defined=[Ranked("__init__", 90, "a.py:3: def __init__(self):")],
        ),
        seconds=0.6,
    ),
    fallback_files=[
        FileRecord("legacy/py2.py", "tokenizer", ["SyntaxError"]),
        FileRecord("legacy/bad_cookie.py", "lines", ["SyntaxError", "SyntaxError"]),
    ],
)

TRIPPED = dataclasses.replace(
    HEALTHY,
    analysis=AnalysisTotals(),
    batches=BatchStep(
        batch_size=50,
        batches=10,
        succeeded=0,
        failed=3,
        cancelled=1,
        not_started=6,
        tripped=True,
        trip_reason="3 failures exceed max_failures=2",
        files_in_failed_batches=150,
        files_in_cancelled_batches=50,
        files_not_started=300,
        errors=[
            BatchError(
                number, f"junk/blob_{number * 50:03}.py", "RuntimeUserError: 50 of 50 files", "BatchAnalysisError"
            )
            for number in range(3)
        ],
    ),
    index=IndexStep(status="skipped", error="the circuit breaker tripped, so the tree was not indexed"),
    fallback_files=[],
)


def _render(report: DemoReport) -> str:
    console = Console(record=True, width=200, color_system=None)
    print_summary(console, report, engine="local Flyte engine", wall_seconds=3.5)
    return console.export_text()


def test_json_has_format_extra_and_fields() -> None:
    document = json.loads(report_to_json(HEALTHY, engine="local Flyte engine", wall_seconds=3.5))
    assert list(document)[:3] == ["format", "engine", "wall_seconds"]
    assert document["format"] == 1
    assert document["settings"]["max_failed_ratio"] is None
    assert document["analysis"]["served_by"] == {"ast": 118, "tokenizer": 1, "lines": 1}
    assert document["index"]["attempts"][0] == {
        "memory": "16Mi",
        "outcome": "out of memory",
        "seconds": 0.2,
        "error": "OOMError (code 'OOMKilled'): killed",
    }
    assert document["index"]["summary"]["most_imported"] == [
        {"name": "os", "count": 40, "example": "a.py:1: import os"}
    ]
    assert document["fallback_files"][1]["fallback_reasons"] == ["SyntaxError", "SyntaxError"]


def test_summary_of_healthy_run() -> None:
    text = _render(HEALTHY)
    assert "120 Python files, 2.5 MB, in /usr/lib/python3.11 (local Flyte engine, 3.5 s)" in text
    assert "3 batches of up to 50 files, 4 at a time, 1.2 s. Breaker not tripped (at most 2 failed batches)" in text
    assert "118   ast" in text
    assert "legacy/py2.py -> tokenizer" in text
    assert "40,000 lines, 900 functions, 150 classes, 600 imports; longest function pkg/big.py: Parser.parse" in text
    assert "16Mi   out of memory" in text
    assert "32Mi   succeeded" in text
    assert "Ladder 16Mi -> 32Mi -> 64Mi" in text
    assert "most imported: os (40)" in text


def test_summary_of_tripped_run() -> None:
    text = _render(TRIPPED)
    assert "Breaker tripped: 3 failures exceed max_failures=2" in text
    assert "6   300     not started" in text
    assert "batch 0 (junk/blob_000.py ...): RuntimeUserError: 50 of 50 files" in text
    assert "Skipped: the circuit breaker tripped, so the tree was not indexed" in text


def test_summary_of_exhausted_ladder() -> None:
    exhausted = dataclasses.replace(
        HEALTHY,
        index=IndexStep(
            status="exhausted",
            ladder=["16Mi", "32Mi"],
            attempts=[MemoryRung("16Mi", "out of memory", 0.2), MemoryRung("32Mi", "out of memory", 0.3)],
            error="MemoryLadderExhaustedError: ran out of memory at every size tried: 16Mi, 32Mi",
        ),
    )
    text = _render(exhausted)
    assert "Exhausted: MemoryLadderExhaustedError: ran out of memory at every size tried" in text
