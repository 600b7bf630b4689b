"""Tests for local memory enforcement of Flyte tasks, on the real local engine with real forked children."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import subprocess
import sys
import time
import typing
from collections.abc import Iterator
from datetime import timedelta

import flyte
import flyte.errors
import psutil
import pytest
from flyte._context import internal_ctx
from flyte.extend import AsyncFunctionTaskTemplate, TaskPluginRegistry, TaskTemplate

from flyte_patterns import LocalMemoryLimit, _forked_child, enforce_local_memory, flyte_code, is_local_memory_supported
from flyte_patterns._local_memory import _local_timeout, _LocalMemoryTask

from .conftest import RunLocal

MB = 10**6
LIMIT_250MI = flyte.Resources(memory="250Mi")
LIMIT_TUPLE = flyte.Resources(memory=("200Mi", "250Mi"))

pytestmark = pytest.mark.flyte


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


class QuotaExceeded(Exception):
    pass


class BoomError(Exception):
    pass


env = flyte.TaskEnvironment(name="flyte_patterns_test_local_memory")


@env.task
async def allocate(size_mb: int) -> int:
    block = bytearray(size_mb * MB)
    return len(block)


@env.task
async def raise_kind(kind: str) -> str:
    class DefinedInTheBody(Exception):
        """A class pickle cannot find by name, so its instances cannot cross the process boundary."""

    errors: dict[str, BaseException] = {
        "value": ValueError("bad input"),
        "custom": QuotaExceeded("quota used up"),
        "boom": BoomError("boom"),
        "memory": MemoryError("no memory left"),
        "unpicklable": DefinedInTheBody("defined in the body"),
        "flyte": flyte.errors.RuntimeUserError("RateLimited", "slow down"),
    }
    raise errors[kind]


@env.task
async def read_env(name: str) -> str:
    return os.environ.get(name, "<unset>")


@env.task
async def sleep_for(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@env.task
async def return_lambda() -> typing.Any:
    return lambda: "a lambda cannot be pickled"


@env.task
async def own_pid() -> int:
    return os.getpid()


@env.task
async def sleep_with_grandchild(report_fd: int) -> str:
    grandchild = await asyncio.create_subprocess_exec("sleep", "60")
    os.write(report_fd, f"{os.getpid()} {grandchild.pid}".encode())
    await asyncio.sleep(60)
    return "not cancelled"


async def _read_pids(read_fd: int) -> tuple[int, int]:
    """Wait until the body of sleep_with_grandchild reports its pid and its grandchild's pid on a pipe."""
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
    child_pid, grandchild_pid = os.read(read_fd, 100).split()
    return int(child_pid), int(grandchild_pid)


def _enforced(task: TaskTemplate[typing.Any, typing.Any, typing.Any], **overrides: typing.Any) -> typing.Any:
    return enforce_local_memory(task.override(**overrides))


@env.task
async def call_allocate_nested(size_mb: int) -> int:
    size: int = await allocate(size_mb)
    return size


# The drivers pick their child task by name, because task inputs must be serializable.
ALLOCATE = {
    "plain 250Mi": allocate.override(resources=LIMIT_250MI),
    "enforced 250Mi": _enforced(allocate, resources=LIMIT_250MI),
    "enforced 200Mi-250Mi": _enforced(allocate, resources=LIMIT_TUPLE),
}
NESTED = _enforced(call_allocate_nested, resources=LIMIT_250MI)
RAISE = {
    "plain": raise_kind,
    "enforced": _enforced(raise_kind, resources=LIMIT_250MI),
}
SLEEP = {
    "max_runtime": _enforced(sleep_for, resources=LIMIT_250MI, timeout=timedelta(milliseconds=300)),
    "deadline": _enforced(
        sleep_for,
        resources=LIMIT_250MI,
        timeout=flyte.Timeout(max_runtime=timedelta(seconds=30), deadline=timedelta(milliseconds=300)),
    ),
}
PID = {
    "plain": own_pid,
    "enforced without limit": enforce_local_memory(own_pid),
    "enforced 250Mi": _enforced(own_pid, resources=LIMIT_250MI),
}
READ_ENV = _enforced(read_env, resources=LIMIT_250MI, env_vars={"FLYTE_PATTERNS_TEST_VAR": "set by override"})
RETURN_LAMBDA = _enforced(return_lambda, resources=LIMIT_250MI)
SLEEP_WITH_GRANDCHILD = _enforced(sleep_with_grandchild, resources=LIMIT_250MI)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__} {flyte_code(exc)}"


@env.task
async def call_allocate(variant: str, size_mb: int) -> str:
    try:
        return f"returned {await ALLOCATE[variant](size_mb)}"
    except Exception as exc:
        return _describe(exc)


@env.task
async def call_nested(size_mb: int) -> str:
    try:
        return f"returned {await NESTED(size_mb)}"
    except Exception as exc:
        return _describe(exc)


@env.task
async def call_raise(variant: str, kind: str) -> str:
    try:
        await RAISE[variant](kind)
    except Exception as exc:
        return f"{_describe(exc)}: {exc}"
    return "returned"


@env.task
async def call_sleep(variant: str, seconds: float) -> str:
    try:
        result: str = await SLEEP[variant](seconds)
    except Exception as exc:
        return _describe(exc)
    return result


@env.task
async def call_own_pid(variant: str) -> int:
    pid: int = await PID[variant]()
    return pid


@env.task
async def call_read_env(name: str) -> str:
    value: str = await READ_ENV(name)
    return value


@env.task
async def call_return_lambda() -> str:
    try:
        await RETURN_LAMBDA()
    except Exception as exc:
        return f"{_describe(exc)}: {exc}"
    return "returned"


@env.task
async def cancel_mid_run() -> dict[str, int | bool]:
    read_fd, write_fd = os.pipe()
    try:
        call = asyncio.create_task(SLEEP_WITH_GRANDCHILD(write_fd))
        child_pid, grandchild_pid = await _read_pids(read_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    child_was_running = child_pid in {child.pid for child in psutil.Process().children()}

    call.cancel()
    try:
        await call
    except asyncio.CancelledError:
        cancelled = True
    else:
        cancelled = False
    return {
        "child_was_running": child_was_running,
        "cancelled": cancelled,
        "child_exists_after": psutil.pid_exists(child_pid),
        "grandchild_pid": grandchild_pid,
    }


@env.task
async def call_sleep_with_grandchild(report_fd: int) -> str:
    result: str = await SLEEP_WITH_GRANDCHILD(report_fd)
    return result


@env.task
async def execute_in_mode(mode: str) -> int:
    # A fake: the local engine cannot produce a cluster's task context, so this replaces the mode of the
    # current one and calls the enforced task's execute() the way a cluster's task runner would.
    ctx = internal_ctx()
    task_context = ctx.data.task_context
    assert task_context is not None
    with ctx.replace_task_context(task_context.replace(mode=mode)):
        pid: int = await PID["enforced 250Mi"].execute()
    return pid


limited_env = flyte.TaskEnvironment(
    name="flyte_patterns_test_local_memory_limited",
    resources=LIMIT_250MI,
    plugin_config=LocalMemoryLimit(),
)


@limited_env.task
async def allocate_in_limited_env(size_mb: int) -> int:
    block = bytearray(size_mb * MB)
    return len(block)


reusable_env = flyte.TaskEnvironment(
    name="flyte_patterns_test_local_memory_reusable",
    resources=LIMIT_250MI,
    reusable=flyte.ReusePolicy(replicas=1),
    plugin_config=LocalMemoryLimit(),
)


@reusable_env.task
async def allocate_in_reusable_env(size_mb: int) -> int:
    block = bytearray(size_mb * MB)
    return len(block)


@env.task
async def call_allocate_in_limited_env(size_mb: int, reusable: bool) -> str:
    task = allocate_in_reusable_env if reusable else allocate_in_limited_env
    try:
        return f"returned {await task(size_mb)}"
    except Exception as exc:
        return _describe(exc)


# ---------------------------------------------------------------- memory limits


@pytest.mark.parametrize("variant", ["enforced 250Mi", "enforced 200Mi-250Mi"])
async def test_task_over_limit_is_oom_killed(
    run_local: RunLocal, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    caplog.set_level(logging.INFO, logger="flyte_patterns.local_memory")

    assert await run_local(call_allocate, variant, 600) == "OOMError OOMKilled"

    kills = [record for record in caplog.records if record.name == "flyte_patterns.local_memory"]
    assert len(kills) == 1
    assert "past its limit of 250Mi" in kills[0].getMessage()


async def test_task_without_enforcement_ignores_limit(run_local: RunLocal) -> None:
    assert await run_local(call_allocate, "plain 250Mi", 600) == f"returned {600 * MB}"


async def test_task_within_limit_returns_value(run_local: RunLocal) -> None:
    assert await run_local(call_allocate, "enforced 250Mi", 50) == f"returned {50 * MB}"


@pytest.mark.parametrize("reusable", [False, True])
async def test_environment_plugin_config_enforces_limit(run_local: RunLocal, reusable: bool) -> None:
    assert isinstance(allocate_in_limited_env, _LocalMemoryTask)
    assert isinstance(allocate_in_reusable_env, _LocalMemoryTask)
    assert await run_local(call_allocate_in_limited_env, 600, reusable) == "OOMError OOMKilled"
    assert await run_local(call_allocate_in_limited_env, 20, reusable) == f"returned {20 * MB}"


async def test_body_runs_in_child_only_with_limit(run_local: RunLocal) -> None:
    assert await run_local(call_own_pid, "plain") == os.getpid()
    assert await run_local(call_own_pid, "enforced without limit") == os.getpid()
    assert await run_local(call_own_pid, "enforced 250Mi") != os.getpid()


async def test_nested_task_runs_inside_child(run_local: RunLocal) -> None:
    assert await run_local(call_nested, 20) == f"returned {20 * MB}"
    # The nested task runs in the child's copy of the local engine, so its memory counts against the limit.
    assert await run_local(call_nested, 600) == "OOMError OOMKilled"


@pytest.mark.parametrize(("mode", "in_child"), [("local", True), ("remote", False), ("hybrid", False)])
async def test_enforcement_only_in_local_mode(run_local: RunLocal, mode: str, in_child: bool) -> None:
    pid = await run_local(execute_in_mode, mode)
    assert (pid != os.getpid()) is in_child


# ---------------------------------------------------------------- errors, env_vars and timeouts


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("value", "RuntimeUserError ValueError: bad input"),
        ("custom", "RuntimeUserError QuotaExceeded: quota used up"),
        ("boom", "OOMError BoomError: boom"),
        ("memory", "RuntimeUserError MemoryError: no memory left"),
        ("unpicklable", "RuntimeUserError DefinedInTheBody: defined in the body"),
        ("flyte", "RuntimeUserError RateLimited: slow down"),
    ],
)
async def test_user_exception_keeps_class_and_code(run_local: RunLocal, kind: str, expected: str) -> None:
    assert await run_local(call_raise, "plain", kind) == expected
    assert await run_local(call_raise, "enforced", kind) == expected


async def test_env_vars_are_set_in_child(run_local: RunLocal) -> None:
    assert await run_local(call_read_env, "FLYTE_PATTERNS_TEST_VAR") == "set by override"
    assert "FLYTE_PATTERNS_TEST_VAR" not in os.environ


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("max_runtime", "MaxRuntimeExceededError MaxRuntimeExceededError"),
        ("deadline", "DeadlineExceededError DeadlineExceededError"),
    ],
)
async def test_timeout_kills_child(run_local: RunLocal, variant: str, expected: str) -> None:
    assert await run_local(call_sleep, variant, 30.0) == expected
    assert await run_local(call_sleep, variant, 0.01) == "done"


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (None, None),
        (0, None),
        (timedelta(0), None),
        (5, ("max_runtime", 5.0, flyte.errors.MaxRuntimeExceededError)),
        (timedelta(milliseconds=250), ("max_runtime", 0.25, flyte.errors.MaxRuntimeExceededError)),
        (flyte.Timeout(max_queued_time=timedelta(seconds=5)), None),
        (flyte.Timeout(max_runtime=10, deadline=5), ("deadline", 5.0, flyte.errors.DeadlineExceededError)),
        (
            flyte.Timeout(max_runtime=timedelta(seconds=2), deadline=0),
            ("max_runtime", 2.0, flyte.errors.MaxRuntimeExceededError),
        ),
    ],
)
def test_local_timeout_bound(timeout: object, expected: tuple[str, float, type[Exception]] | None) -> None:
    bound = _local_timeout(timeout)
    if expected is None:
        assert bound is None
    else:
        assert bound is not None
        assert (bound.name, bound.seconds, bound.error) == expected


async def test_unpicklable_result_is_clear_error(run_local: RunLocal) -> None:
    seen = await run_local(call_return_lambda)
    assert seen.startswith("RuntimeUserError TypeError: the result of task ")
    assert "cannot be pickled" in seen


# ---------------------------------------------------------------- cancellation


async def test_cancel_kills_and_reaps_child(run_local: RunLocal) -> None:
    seen = await run_local(cancel_mid_run)

    assert seen["child_was_running"] is True
    assert seen["cancelled"] is True
    # The cancellation reached the driver only after the child was killed and reaped.
    assert seen["child_exists_after"] is False
    # The grandchild was killed with the child's process group, and the process that adopted it reaps it.
    _wait_until_dead(int(seen["grandchild_pid"]))


async def test_cancel_of_whole_run_kills_child(run_local: RunLocal) -> None:
    read_fd, write_fd = os.pipe()
    try:
        run = asyncio.create_task(run_local(call_sleep_with_grandchild, write_fd))
        child_pid, grandchild_pid = await _read_pids(read_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)

    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    # flyte.run.aio() runs the run on a background event loop and does not wait for the cancellation to finish
    # there, so the child may outlive the CancelledError by a moment. Nothing signals the end of that cleanup.
    for _ in range(500):
        if not psutil.pid_exists(child_pid):
            break
        await asyncio.sleep(0.01)
    assert not psutil.pid_exists(child_pid)
    _wait_until_dead(grandchild_pid)


# ---------------------------------------------------------------- platforms


async def test_unsupported_platform_is_clear_error(run_local: RunLocal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_forked_child, "is_supported", lambda: False)

    assert is_local_memory_supported() is False
    seen = await run_local(call_allocate, "enforced 250Mi", 1)
    assert seen == "RuntimeUserError NotImplementedError"
    # Without a memory limit there is nothing to enforce, so the task still runs.
    assert await run_local(call_own_pid, "enforced without limit") == os.getpid()


def test_supported_on_linux() -> None:
    assert is_local_memory_supported() is sys.platform.startswith("linux")


# ---------------------------------------------------------------- enforce_local_memory and LocalMemoryLimit


def test_enforced_copy_keeps_task_settings() -> None:
    original = allocate.override(resources=LIMIT_TUPLE, retries=2)
    assert isinstance(original, AsyncFunctionTaskTemplate)
    enforced: AsyncFunctionTaskTemplate[typing.Any, typing.Any, typing.Any] = enforce_local_memory(original)

    assert isinstance(enforced, _LocalMemoryTask)
    assert enforced.name == original.name
    assert enforced.resources == LIMIT_TUPLE
    assert enforced.retries == original.retries
    assert enforced.plugin_config == LocalMemoryLimit()
    assert original.plugin_config is None


def test_enforce_again_replaces_config() -> None:
    enforced = enforce_local_memory(allocate, LocalMemoryLimit(poll_interval=0.002))
    assert enforce_local_memory(enforced).plugin_config == LocalMemoryLimit(poll_interval=0.002)

    replaced = enforce_local_memory(enforced, LocalMemoryLimit(max_poll_interval=0.1))
    assert replaced.plugin_config == LocalMemoryLimit(max_poll_interval=0.1)


async def _plain_function(size_mb: int) -> int:
    return size_mb


def test_enforce_rejects_plain_function() -> None:
    with pytest.raises(TypeError, match="run_with_memory_limit"):
        enforce_local_memory(_plain_function)  # type: ignore[arg-type]


def test_enforce_rejects_coroutine_object() -> None:
    coroutine = _plain_function(1)
    with pytest.raises(TypeError, match="coroutine object"):
        enforce_local_memory(coroutine)  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


def test_enforce_rejects_other_plugin_config() -> None:
    @dataclasses.dataclass(frozen=True)
    class OtherPlugin:
        pass

    task = dataclasses.replace(allocate, plugin_config=OtherPlugin())
    with pytest.raises(ValueError, match=r"already has plugin_config=.*OtherPlugin"):
        enforce_local_memory(task)


def test_enforce_rejects_task_subclass() -> None:
    @dataclasses.dataclass(kw_only=True)
    class CustomTask(AsyncFunctionTaskTemplate[typing.Any, typing.Any, typing.Any]):
        pass

    task = CustomTask(func=allocate.func, name="custom", interface=allocate.interface)
    with pytest.raises(TypeError, match="CustomTask"):
        enforce_local_memory(task)


def test_enforce_rejects_bad_config() -> None:
    with pytest.raises(TypeError, match="config must be a LocalMemoryLimit"):
        enforce_local_memory(allocate, {"poll_interval": 0.01})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"poll_interval": 0}, ValueError, "poll_interval must be a positive"),
        ({"poll_interval": -0.001}, ValueError, "poll_interval must be a positive"),
        ({"poll_interval": float("nan")}, ValueError, "poll_interval must be a positive"),
        ({"poll_interval": True}, TypeError, "poll_interval must be a number"),
        ({"poll_interval": "1ms"}, TypeError, "poll_interval must be a number"),
        ({"max_poll_interval": 0}, ValueError, "max_poll_interval must be a positive"),
        ({"poll_interval": 0.1, "max_poll_interval": 0.05}, ValueError, "max_poll_interval must be at least"),
    ],
)
def test_config_rejects_bad_intervals(kwargs: dict[str, typing.Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        LocalMemoryLimit(**kwargs)


def test_plugin_registered_by_first_config_not_import() -> None:
    script = (
        "import flyte_patterns\n"
        "from flyte.extend import TaskPluginRegistry\n"
        "print(TaskPluginRegistry.find(flyte_patterns.LocalMemoryLimit) is None)\n"
        "flyte_patterns.LocalMemoryLimit()\n"
        "print(TaskPluginRegistry.find(flyte_patterns.LocalMemoryLimit).__name__)\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["True", "_LocalMemoryTask"]
    assert TaskPluginRegistry.find(LocalMemoryLimit) is _LocalMemoryTask
