"""Local memory enforcement: a Flyte task plugin that kills a local task when its memory passes its limit.

Flyte 2.12 ignores ``resources`` on its local engine, so a task that allocates 600 MB under ``memory="250Mi"``
simply succeeds there, and nothing that reacts to out-of-memory failures can be exercised off a cluster.

A task whose ``plugin_config`` is a :class:`LocalMemoryLimit` behaves like this when it runs:

* **On the local engine, with a memory limit set,** its body runs in a forked child process. The child is killed as
  soon as the memory the body added passes the limit, and the caller gets ``flyte.errors.OOMError`` with code
  ``"OOMKilled"``, the error a Kubernetes out-of-memory kill produces. The limit is the second item of a
  ``(request, limit)`` memory tuple, or the scalar ``memory`` value.
* **On the local engine, without a memory limit,** the body runs in-process, exactly as without the plugin.
* **Anywhere else** (a cluster, or a task whose parent runs in Flyte's hybrid mode) the plugin does nothing, and the
  platform enforces the limit.

In the child the task's ``env_vars`` are set and its ``timeout`` is enforced, both of which the local engine
otherwise ignores. A timeout kills the child and raises ``flyte.errors.MaxRuntimeExceededError`` (or
``DeadlineExceededError`` when the deadline is the shorter bound), the class Flyte raises for a timed-out action.
A user exception reaches the awaiting parent task with the same class and code as without the plugin. A result
that cannot be pickled raises ``TypeError``.

Cancelling the caller kills the child's whole process group and reaps the child before the cancellation
propagates. Every other way out kills what is left of the group and reaps the child too.

The plugin registers itself with ``flyte.extend.TaskPluginRegistry`` when the first :class:`LocalMemoryLimit` is
created, not when ``flyte_patterns`` is imported: no task can use the plugin before a config exists, and importing
the library changes no global state.

Enforcement needs Linux (fork, ``/proc`` and pidfd). On other platforms an enforced local run raises
``NotImplementedError``, and :func:`is_local_memory_supported` returns whether enforcement works here.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, ParamSpec, TypeVar, cast, overload

import flyte
import flyte.errors
from flyte.extend import AsyncFunctionTaskTemplate, TaskPluginRegistry, TaskTemplate

from . import _forked_child
from ._forked_child import ChildSettings, ChildTimeoutError, run_in_child
from ._memory import format_memory, parse_memory
from ._validation import check_callable, check_seconds, task_name

logger = logging.getLogger("flyte_patterns.local_memory")

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_registration_lock = threading.Lock()


@dataclass(frozen=True)
class LocalMemoryLimit:
    """Plugin config that enforces a task's memory limit when the task runs on Flyte's local engine.

    Pass it as ``plugin_config`` of a ``flyte.TaskEnvironment`` to enforce the limits of all its tasks, or use
    :func:`enforce_local_memory` for one task. Creating the first instance registers the plugin.

    The watcher measures the child's memory at intervals between ``poll_interval`` and ``max_poll_interval``. The
    closer the memory is to the limit, the shorter the interval: it waits no longer than a process growing at
    16 GiB/s would take to reach the limit.

    Attributes:
        poll_interval: Minimum time in seconds between two memory measurements, used near the limit. Shorter
            intervals catch fast growth closer to the limit and cost more CPU in the parent.
        max_poll_interval: Maximum time in seconds between two memory measurements, used far below the limit.
    """

    poll_interval: float = 0.001
    max_poll_interval: float = 0.05

    def __post_init__(self) -> None:
        poll_interval = check_seconds(self.poll_interval, name="poll_interval")
        max_poll_interval = check_seconds(self.max_poll_interval, name="max_poll_interval")
        if max_poll_interval < poll_interval:
            raise ValueError(
                f"max_poll_interval must be at least poll_interval ({self.poll_interval!r}), "
                f"got {self.max_poll_interval!r}"
            )
        # Store plain floats, so an int or a timedelta that check_seconds accepted compares and prints the same.
        object.__setattr__(self, "poll_interval", poll_interval)
        object.__setattr__(self, "max_poll_interval", max_poll_interval)
        _register_plugin()


def _register_plugin() -> None:
    with _registration_lock:
        if TaskPluginRegistry.find(LocalMemoryLimit) is not _LocalMemoryTask:
            TaskPluginRegistry.register(LocalMemoryLimit, _LocalMemoryTask)


def is_local_memory_supported() -> bool:
    """Return whether this platform can enforce memory limits locally (Linux only)."""
    return _forked_child.is_supported()


@dataclass(kw_only=True)
class _LocalMemoryTask(AsyncFunctionTaskTemplate[P, R, F]):
    """A function task whose body runs in a memory-limited child process on the local engine."""

    # The plugin changes nothing about the container a cluster runs, so a reusable environment may use it.
    supports_reuse_policy: ClassVar[bool] = True

    async def execute(self, *args: P.args, **kwargs: P.kwargs) -> R:
        memory_limit = self._local_memory_limit()
        if memory_limit is None:
            return await super().execute(*args, **kwargs)

        config = self.plugin_config if isinstance(self.plugin_config, LocalMemoryLimit) else LocalMemoryLimit()
        bound = _local_timeout(self.timeout)
        label = f"task {self.name!r}"
        settings = ChildSettings(
            memory_limit=memory_limit,
            timeout=None if bound is None else bound.seconds,
            env_vars=dict(self.env_vars or {}),
            poll_interval=config.poll_interval,
            max_poll_interval=config.max_poll_interval,
            label=label,
        )
        # The child runs Flyte's own execute(), so pre(), post() and the task context behave as in-process.
        body = functools.partial(super().execute, *args, **kwargs)
        try:
            result: R = await run_in_child(body, settings)
        except ChildTimeoutError:
            assert bound is not None
            raise bound.error(
                f"{label} ran longer than its {bound.name} of {bound.seconds:g}s, so its local process was killed"
            ) from None
        return result

    def _local_memory_limit(self) -> int | None:
        """Return the memory limit in bytes to enforce here, or None to run in-process."""
        if flyte.ctx().mode != "local":
            return None
        memory = self.resources.memory if self.resources is not None else None
        if memory is None:
            return None
        if isinstance(memory, tuple):
            limit = parse_memory(memory[1], name=f"the memory limit of task {self.name!r}")
        else:
            limit = parse_memory(memory, name=f"the memory of task {self.name!r}")
        if limit <= 0:
            raise ValueError(f"the memory limit of task {self.name!r} must be positive, got {memory!r}")
        _forked_child.check_supported()
        return limit


@dataclass(frozen=True)
class _TimeoutBound:
    name: str
    seconds: float
    error: Callable[[str], flyte.errors.TaskTimeoutError]


def _local_timeout(timeout: object) -> _TimeoutBound | None:
    """Return the time bound of one local attempt, from a task's ``timeout``, or None if it has none.

    A bare ``int`` or ``timedelta`` is ``max_runtime``, as in Flyte. ``max_queued_time`` does not apply to a local
    run, which never queues.
    """
    if isinstance(timeout, flyte.Timeout):
        bounds: list[_TimeoutBound] = []
        max_runtime = _seconds(timeout.max_runtime)
        if max_runtime is not None:
            bounds.append(_TimeoutBound("max_runtime", max_runtime, flyte.errors.MaxRuntimeExceededError))
        # NOTE: Flyte counts the deadline across all attempts. Locally each attempt gets the whole deadline, so
        # an attempt never runs past it but retries together can.
        deadline = _seconds(timeout.deadline)
        if deadline is not None:
            bounds.append(_TimeoutBound("deadline", deadline, flyte.errors.DeadlineExceededError))
        return min(bounds, key=lambda bound: bound.seconds, default=None)
    seconds = _seconds(timeout)
    if seconds is None:
        return None
    return _TimeoutBound("max_runtime", seconds, flyte.errors.MaxRuntimeExceededError)


def _seconds(value: object) -> float | None:
    """Return a Flyte timeout field in seconds, or None where Flyte reads it as unlimited (unset or zero)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        return None
    return seconds if seconds > 0 else None


def enforce_local_memory(
    task: TaskTemplate[P, R, F], config: LocalMemoryLimit | None = None
) -> AsyncFunctionTaskTemplate[P, R, F]:
    """Return a copy of a Flyte task whose memory limit is enforced when it runs on the local engine.

    The copy is ``task.override(plugin_config=config)``, so it keeps the task's name, resources and every other
    setting, and it behaves as the module docstring describes. A task that is already enforced gets ``config``
    in place of its current one.

    Args:
        task: A function task, as ``@env.task`` creates it.
        config: Polling settings. Defaults to ``LocalMemoryLimit()``, or the task's current config if it has one.

    Raises:
        TypeError: ``task`` is not a Flyte function task, or is a subclass with behaviour of its own that the
            copy would lose.
        ValueError: ``task`` already has a ``plugin_config`` of another plugin.
    """
    check_callable(task)
    if not isinstance(task, AsyncFunctionTaskTemplate):
        raise TypeError(
            f"task must be a Flyte function task (a function decorated with @env.task), got {task!r} "
            f"({type(task).__name__}); run a plain async callable with run_with_memory_limit() instead"
        )
    if type(task) not in (AsyncFunctionTaskTemplate, _LocalMemoryTask):
        raise TypeError(
            f"task {task.name!r} is a {type(task).__name__}, and enforcing its memory limit would replace that "
            f"class and its behaviour; only plain function tasks (AsyncFunctionTaskTemplate) are supported"
        )
    current = task.plugin_config
    if current is not None and not isinstance(current, LocalMemoryLimit):
        raise ValueError(
            f"task {task.name!r} already has plugin_config={current!r}, and a task has only one plugin; "
            f"enforce_local_memory() cannot add LocalMemoryLimit to it"
        )
    if config is None:
        config = current if isinstance(current, LocalMemoryLimit) else LocalMemoryLimit()
    elif not isinstance(config, LocalMemoryLimit):
        raise TypeError(f"config must be a LocalMemoryLimit or None, got {config!r} ({type(config).__name__})")
    return cast(AsyncFunctionTaskTemplate[P, R, F], task.override(plugin_config=config))


@overload
async def run_with_memory_limit(
    func: Callable[..., Awaitable[R]],
    /,
    *args: Any,
    limit: str | int,
    config: LocalMemoryLimit | None = None,
    **kwargs: Any,
) -> R: ...


@overload
async def run_with_memory_limit(
    func: Callable[..., R],
    /,
    *args: Any,
    limit: str | int,
    config: LocalMemoryLimit | None = None,
    **kwargs: Any,
) -> R: ...


async def run_with_memory_limit(
    func: Callable[..., Awaitable[R]] | Callable[..., R],
    /,
    *args: Any,
    limit: str | int,
    config: LocalMemoryLimit | None = None,
    **kwargs: Any,
) -> R:
    """Call ``func(*args, **kwargs)`` in a forked child process that is killed when its memory passes ``limit``.

    This is the machinery of :func:`enforce_local_memory` for a plain callable, and it enforces the limit wherever
    it runs: locally, on a cluster, or outside any Flyte task. ``func`` may be async or synchronous. Its result
    must be picklable. An exception it raises comes back as itself when it can be pickled, as a Flyte error of
    the same class when it is one, and otherwise as ``flyte.errors.RuntimeUserError`` whose code is its class name.
    The child's traceback is attached to it as a note.

    To bound the time as well, wrap the call in ``asyncio.timeout`` or ``asyncio.wait_for``: cancelling the call
    kills and reaps the child. ``limit`` and ``config`` are taken by this function, so pass arguments of those
    names to ``func`` through ``functools.partial``.

    Args:
        func: The callable to run. A Flyte task is rejected: use :func:`enforce_local_memory` for tasks.
        *args: Positional arguments for ``func``.
        limit: The memory ``func`` may add, as a Kubernetes quantity such as ``"250Mi"`` or a number of bytes.
        config: Polling settings. Defaults to ``LocalMemoryLimit()``.
        **kwargs: Keyword arguments for ``func``.

    Raises:
        flyte.errors.OOMError: Code ``"OOMKilled"``: the memory passed ``limit`` and the child was killed.
        TypeError: ``func`` is not callable or is a Flyte task, or the result cannot be pickled.
        ValueError: ``limit`` is not a positive memory quantity.
        NotImplementedError: The platform is not Linux.
        ChildProcessError: The child exited without reporting a result, for example after ``os._exit``.
    """
    check_callable(func, name="func")
    if isinstance(func, TaskTemplate):
        raise TypeError(
            f"func must be a plain callable, got the Flyte task {func.name!r}; "
            f"call enforce_local_memory(task) and await the returned task instead"
        )
    memory_limit = parse_memory(limit, name="limit")
    if memory_limit <= 0:
        raise ValueError(f"limit must be a positive memory quantity, got {limit!r}")
    if config is None:
        config = LocalMemoryLimit()
    elif not isinstance(config, LocalMemoryLimit):
        raise TypeError(f"config must be a LocalMemoryLimit or None, got {config!r} ({type(config).__name__})")
    _forked_child.check_supported()

    label = task_name(func)
    logger.debug("running %s under a memory limit of %s", label, format_memory(memory_limit))
    settings = ChildSettings(
        memory_limit=memory_limit,
        timeout=None,
        env_vars={},
        poll_interval=config.poll_interval,
        max_poll_interval=config.max_poll_interval,
        label=label,
    )
    result: R = await run_in_child(functools.partial(func, *args, **kwargs), settings)
    return result
