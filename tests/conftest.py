"""Shared fixtures: a real local Flyte engine, and cleanup of what each run leaves on disk."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import flyte
import pytest

# Flyte 2.12 writes run metadata under this folder, one directory per run name, and keeps it after the run.
FLYTE_METADATA_ROOT = Path("/tmp/flyte/metadata")

RunLocal = Callable[..., Coroutine[Any, Any, Any]]


@pytest.fixture(scope="session", autouse=True)
def _flyte_initialized() -> None:
    flyte.init()


@pytest.fixture
async def run_local(tmp_path: Path) -> AsyncIterator[RunLocal]:
    """Run a Flyte task on the local engine under a unique run name, and return its output.

    Teardown removes the run's metadata directory, so a test run leaves nothing under /tmp/flyte.
    """
    run_names: list[str] = []

    async def run(task: Any, *args: Any, **kwargs: Any) -> Any:
        name = f"fp-test-{uuid.uuid4().hex[:16]}"
        run_names.append(name)
        context = flyte.with_runcontext(name=name, raw_data_path=str(tmp_path / name))
        result = await context.run.aio(task, *args, **kwargs)
        return result.outputs()[0]

    yield run

    for name in run_names:
        shutil.rmtree(FLYTE_METADATA_ROOT / name, ignore_errors=True)
