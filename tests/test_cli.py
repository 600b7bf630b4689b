"""The command line: help, and the errors that stop it before anything runs (exit status 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flyte_patterns._cli import main

from .demo_trees import write_source_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write_source_tree(tmp_path / "tree", modules=1)
    return tmp_path / "tree"


@pytest.fixture
def no_flyte_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make Flyte's config search find nothing: an empty working directory and home, no config variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("UCTL_CONFIG", raising=False)
    monkeypatch.delenv("FLYTECTL_CONFIG", raising=False)
    return home


def test_help_lists_demo() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def test_demo_help_lists_options() -> None:
    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0
    for option in (
        "--batch-size",
        "--concurrency",
        "--max-failed-batches",
        "--max-failed-ratio",
        "--index-memory",
        "--index-max-memory",
        "--report",
        "--remote",
        "--config",
    ):
        assert option in result.output, option
    assert "standard library" in result.output


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "flyte-patterns"
    completed = subprocess.run([script, "--help"], capture_output=True, text=True, check=False, timeout=60)
    assert completed.returncode == 0
    assert "demo" in completed.stdout


def test_missing_path_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "nowhere" in result.output


def test_empty_path_exits_2(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no Python here\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "cached.py").write_text("x = 1\n")
    result = CliRunner().invoke(main, ["demo", str(tmp_path)])
    assert result.exit_code == 2
    assert "contains no Python files to analyse" in result.output
    assert "*.py files, outside hidden directories" in result.output


def test_file_path_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "a.py")])
    assert result.exit_code == 2
    assert "is a file" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--batch-size", "0"], "0 is not in the range x>=1"),
        (["--concurrency", "-1"], "-1 is not in the range x>=1"),
        (["--max-failed-ratio", "1.5"], "1.5 is not in the range 0.0<=x<=1.0"),
        (["--index-memory", "16g"], "'16g'"),
        (["--index-max-memory", "lots"], "'lots'"),
        (["--index-memory", "2Gi", "--index-max-memory", "1Gi"], "'2Gi' is above --index-max-memory '1Gi'"),
        (["--report", "/nonexistent-directory/report.json"], "the directory '/nonexistent-directory' does not exist"),
    ],
)
def test_invalid_option_exits_2(tree: Path, arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["demo", str(tree), *arguments])
    assert result.exit_code == 2
    assert message in result.output


def test_remote_without_config_exits_2(tree: Path, no_flyte_config: Path) -> None:
    result = CliRunner().invoke(main, ["demo", str(tree), "--remote"])
    assert result.exit_code == 2
    assert "--remote needs a Flyte config file, and none was found" in result.output
    assert "flyte create config" in result.output


def test_remote_without_endpoint_exits_2(tree: Path, no_flyte_config: Path) -> None:
    config = no_flyte_config / "config.yaml"
    config.write_text("task:\n  project: demo\n  domain: development\n")
    result = CliRunner().invoke(main, ["demo", str(tree), "--remote", "--config", str(config)])
    assert result.exit_code == 2
    assert "sets no admin.endpoint" in result.output


def test_import_loads_neither_demo_nor_cli() -> None:
    code = (
        "import sys, flyte_patterns; "
        "print(sorted(m for m in sys.modules if m.startswith(('flyte_patterns._demo', 'flyte_patterns._cli'))))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert completed.stdout.strip() == "[]"
