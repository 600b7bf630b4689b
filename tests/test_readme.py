"""The README's first example runs as written on the local engine and returns what its comments state."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from .conftest import RunLocal

README = Path(__file__).resolve().parent.parent / "README.md"


def _first_python_block() -> str:
    match = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert match is not None, "README.md has no python code block"
    return match.group(1)


@pytest.mark.flyte
async def test_readme_example_runs(run_local: RunLocal) -> None:
    module = types.ModuleType("readme_example")
    exec(compile(_first_python_block(), str(README), "exec"), module.__dict__)

    failed, first, sum_of_squares, size = await run_local(module.driver, ["1", "2", "3", "x4"])

    assert failed == 1
    assert first == 1
    assert sum_of_squares == 14
    assert size == 10_000
