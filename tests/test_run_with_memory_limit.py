"""Tests for run_with_memory_limit and the forked-child machinery, with plain callables and real children."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import flyte
import flyte.errors
import psutil
import pytest

from flyte_patterns import LocalMemoryLimit, is_out_of_memory, run_with_memory_limit

MB = 10**6


@pytest.fixture(autouse=True)
def no_stray_children() -> Iterator[None]:
    """Fail a test that leaves a child process of the test process behind, running or zombie."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    left = [child for child in psutil.Process().children(recursive=True) if child.pid not in before]
    assert left == []


def _wait_until_dead(pid: int) -> None:
    """Wait until a process that is not our child has died. The process that adopted it reaps it later."""
    for _ in range(500):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} is still alive")


async def allocate(size_mb: int) -> int:
    block = bytearray(size_mb * MB)
    return len(block)


def allocate_sync(size_mb: int, *, times: int = 1) -> int:
    return len(bytearray(size_mb * MB)) * times


class QuotaExceeded(Exception):
    pass


# ---------------------------------------------------------------- results and memory limits


async def test_over_limit_raises_oom_killed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flyte_patterns.local_memory")

    with pytest.raises(flyte.errors.OOMError) as caught:
        await run_with_memory_limit(allocate, 600, limit="250Mi")

    assert caught.value.code == "OOMKilled"
    assert is_out_of_memory(caught.value)
    assert "past its limit of 250Mi" in str(caught.value)
    kills = [record for record in caplog.records if record.name == "flyte_patterns.local_memory"]
    assert len(kills) == 1
    assert kills[0].getMessage().endswith("past its limit of 250Mi")
    assert getattr(kills[0], "memory_limit", None) == 250 * 2**20
    assert getattr(kills[0], "memory_at_kill", 0) > 250 * 2**20


async def test_within_limit_returns_value() -> None:
    assert await run_with_memory_limit(allocate, 50, limit="250Mi") == 50 * MB


async def test_sync_callable_and_kwargs() -> None:
    assert await run_with_memory_limit(allocate_sync, 10, times=3, limit=300 * 2**20) == 30 * MB


async def test_runs_in_another_process() -> None:
    assert await run_with_memory_limit(os.getpid, limit="250Mi") != os.getpid()


async def test_large_result_does_not_deadlock() -> None:
    # Far larger than a pipe buffer, so the child blocks in write() until the parent reads.
    payload = await run_with_memory_limit(lambda: b"x" * (64 * MB), limit="1Gi")
    assert len(payload) == 64 * MB


async def test_descendant_memory_counts() -> None:
    script = f"block = bytearray({400 * MB}); import time; time.sleep(30)"

    async def run_python() -> int:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        return await process.wait()

    with pytest.raises(flyte.errors.OOMError):
        await run_with_memory_limit(run_python, limit="250Mi")


async def test_descendant_memory_counts_when_first_seen_late() -> None:
    # The first measurement comes after a second, when the subprocess has long finished allocating. Its memory
    # still counts, because it shares none of it with another process.
    script = f"block = bytearray({400 * MB}); print('allocated', flush=True); import time; time.sleep(30)"

    async def run_python() -> int:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
        assert process.stdout is not None
        assert await process.stdout.readline() == b"allocated\n"
        return await process.wait()

    config = LocalMemoryLimit(poll_interval=1.0, max_poll_interval=1.0)
    with pytest.raises(flyte.errors.OOMError):
        await run_with_memory_limit(run_python, limit="250Mi", config=config)


async def test_forked_descendant_counts_only_growth() -> None:
    # A descendant forked without exec shares the child's pages, which the child already counts.
    def fork_and_wait() -> int:
        pid = os.fork()
        if pid == 0:
            time.sleep(0.3)
            os._exit(0)
        return os.waitpid(pid, 0)[1]

    ballast = bytearray(200 * MB)
    try:
        status = await run_with_memory_limit(fork_and_wait, limit="150Mi")
    finally:
        del ballast
    assert status == 0


async def test_background_process_is_killed_on_return() -> None:
    async def start_sleep() -> int:
        process = await asyncio.create_subprocess_exec("sleep", "60")
        return process.pid

    pid = await run_with_memory_limit(start_sleep, limit="250Mi")
    _wait_until_dead(pid)


async def test_works_without_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError("pidfd_open is not available")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    assert await run_with_memory_limit(allocate, 10, limit="250Mi") == 10 * MB
    with pytest.raises(flyte.errors.OOMError):
        await run_with_memory_limit(allocate, 600, limit="250Mi")


async def test_child_sees_parent_environment_unchanged() -> None:
    os.environ["FLYTE_PATTERNS_TEST_PARENT_VAR"] = "from the parent"
    try:
        seen = await run_with_memory_limit(os.environ.get, "FLYTE_PATTERNS_TEST_PARENT_VAR", limit="250Mi")
    finally:
        del os.environ["FLYTE_PATTERNS_TEST_PARENT_VAR"]
    assert seen == "from the parent"


# ---------------------------------------------------------------- exceptions


async def test_picklable_exception_comes_back_as_itself() -> None:
    async def fail() -> None:
        raise QuotaExceeded("quota used up")

    with pytest.raises(QuotaExceeded, match="quota used up") as caught:
        await run_with_memory_limit(fail, limit="250Mi")

    notes = getattr(caught.value, "__notes__", [])
    assert len(notes) == 1
    assert notes[0].startswith("Traceback in the memory-limited child process")
    assert "in fail" in notes[0]


async def test_unpicklable_exception_keeps_class_name_as_code() -> None:
    class DefinedInTheTest(Exception):
        pass

    async def fail() -> None:
        raise DefinedInTheTest("cannot be pickled")

    with pytest.raises(flyte.errors.RuntimeUserError, match="cannot be pickled") as caught:
        await run_with_memory_limit(fail, limit="250Mi")
    assert type(caught.value) is flyte.errors.RuntimeUserError
    assert caught.value.code == "DefinedInTheTest"


@pytest.mark.parametrize(
    "error",
    [
        flyte.errors.OOMError("BoomError", "boom"),
        flyte.errors.RuntimeSystemError("BadContext", "no controller"),
        flyte.errors.MaxRuntimeExceededError("too slow"),
        flyte.errors.RuntimeUnknownError("Mystery", "unknown"),
    ],
)
async def test_flyte_error_comes_back_with_class_and_fields(error: flyte.errors.BaseRuntimeError) -> None:
    async def fail() -> None:
        raise error

    with pytest.raises(flyte.errors.BaseRuntimeError) as caught:
        await run_with_memory_limit(fail, limit="250Mi")

    assert type(caught.value) is type(error)
    assert caught.value.code == error.code
    assert caught.value.kind == error.kind
    assert caught.value.worker == error.worker
    assert str(caught.value) == str(error)


async def test_memory_error_is_not_a_kill() -> None:
    async def fail() -> None:
        raise MemoryError("no memory left")

    with pytest.raises(MemoryError):
        await run_with_memory_limit(fail, limit="250Mi")


async def test_unpicklable_result_is_type_error() -> None:
    with pytest.raises(TypeError, match=r"cannot be pickled \(lock: "):
        await run_with_memory_limit(threading.Lock, limit="250Mi")


async def test_exit_without_report_is_child_process_error() -> None:
    with pytest.raises(ChildProcessError, match="exited with status 3 before it reported a result"):
        await run_with_memory_limit(os._exit, 3, limit="250Mi")


async def test_signal_death_is_child_process_error() -> None:
    async def kill_self() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)

    with pytest.raises(ChildProcessError, match="was killed by SIGTERM"):
        await run_with_memory_limit(kill_self, limit="250Mi")


# ---------------------------------------------------------------- cancellation


async def test_cancellation_kills_and_reaps_child() -> None:
    read_fd, write_fd = os.pipe()

    async def report_and_sleep() -> None:
        grandchild = await asyncio.create_subprocess_exec("sleep", "60")
        os.write(write_fd, f"{os.getpid()} {grandchild.pid}".encode())
        await asyncio.sleep(60)

    call = asyncio.create_task(run_with_memory_limit(report_and_sleep, limit="250Mi"))
    try:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def mark_readable() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(read_fd, mark_readable)
        try:
            await asyncio.wait_for(readable, 30)
        finally:
            loop.remove_reader(read_fd)
        child_pid, grandchild_pid = (int(pid) for pid in os.read(read_fd, 100).split())
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert child_pid in {child.pid for child in psutil.Process().children()}

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert not psutil.pid_exists(child_pid)
    _wait_until_dead(grandchild_pid)


async def test_wait_for_timeout_kills_child() -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run_with_memory_limit(asyncio.sleep, 30, limit="250Mi"), 0.2)


async def test_second_cancel_still_reaps_child() -> None:
    call = asyncio.create_task(run_with_memory_limit(asyncio.sleep, 30, limit="250Mi"))
    # One turn of the loop runs the call up to its wait for the child. The second cancellation arrives while
    # the first is waiting for the killed child to be reaped.
    await asyncio.sleep(0)
    call.cancel()
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


# ---------------------------------------------------------------- arguments


async def _constant() -> int:
    return 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"limit": "abc"}, ValueError, "limit"),
        ({"limit": "0"}, ValueError, "limit must be a positive memory quantity, got '0'"),
        ({"limit": 0}, ValueError, "limit must be a positive memory quantity, got 0"),
        ({"limit": True}, TypeError, "limit"),
        ({"limit": 1.5}, TypeError, "limit"),
        ({"limit": "250Mi", "config": {"poll_interval": 0.01}}, TypeError, "config must be a LocalMemoryLimit"),
    ],
)
async def test_rejects_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        await run_with_memory_limit(_constant, **kwargs)  # type: ignore[call-overload]


async def test_rejects_non_callable() -> None:
    with pytest.raises(TypeError, match="func must be a task or an async callable, got 42"):
        await run_with_memory_limit(42, limit="250Mi")  # type: ignore[call-overload]


async def test_rejects_coroutine_object() -> None:
    coroutine = _constant()
    with pytest.raises(TypeError, match="coroutine object"):
        await run_with_memory_limit(coroutine, limit="250Mi")  # type: ignore[call-overload]
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


async def test_rejects_flyte_task() -> None:
    env = flyte.TaskEnvironment(name="flyte_patterns_test_run_with_memory_limit")
    task = env.task(_constant)
    with pytest.raises(TypeError, match="enforce_local_memory"):
        await run_with_memory_limit(task, limit="250Mi")


async def test_accepts_config() -> None:
    config = LocalMemoryLimit(poll_interval=0.005, max_poll_interval=0.01)
    assert await run_with_memory_limit(_constant, limit="250Mi", config=config) == 1
