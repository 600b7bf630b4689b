"""Retry a task with more memory each time it runs out of memory.

``await retry_with_memory(task, *args, initial_memory="250Mi", increment="200Mi", max_memory="4Gi", **kwargs)``
runs ``task(*args, **kwargs)`` at the first size of a memory ladder and, each time the attempt runs out of memory,
runs it again at the next size. The exact semantics:

* **Ladder.** The sizes are computed once, in whole bytes, before anything is launched (see
  :func:`~flyte_patterns.memory_ladder`): additive with ``increment``, geometric with ``factor``, or an explicit
  list with ``sizes``. The ceiling is always the last size, tried exactly once, and nothing above it is requested.
* **Resources of an attempt.** Each attempt launches ``task.override(resources=..., short_name=...)``. The
  resources are the task's own :class:`flyte.Resources` with only the memory replaced, so CPU, GPU, disk and shared
  memory are kept (``cpu=`` replaces the CPU too, if given). The memory is sent as a ``(request, limit)`` pair whose
  limit is the size: Kubernetes kills a container at its limit, not at its request. A task whose memory was a
  scalar, or unset, gets ``(size, size)``. A task whose memory was a ``(request, limit)`` pair keeps that shape and
  its request-to-limit ratio: ``("1Gi", "2Gi")`` at a size of 550Mi becomes ``("275Mi", "550Mi")``.
* **Reusable environments.** Flyte rejects a resources override on a task of a reusable environment, because
  reused containers keep the environment's resources. Each attempt therefore passes ``reusable="off"`` and runs in
  a container of its own; this is logged once per call.
* **UI.** Each attempt's short name is the task's name with the size appended, such as ``train-mem-550Mi``, so the
  attempts show up as distinct actions in the Flyte UI.
* **What escalates.** Only an out-of-memory failure, as :func:`~flyte_patterns.is_out_of_memory` decides with
  ``oom_codes`` (by default ``OOMKilled``, the code Flyte gives a container Kubernetes killed at its memory limit,
  and ``MemoryError``). Any other error propagates after that one attempt as the very object Flyte delivered.
  ``asyncio.CancelledError``, ``KeyboardInterrupt`` and ``SystemExit`` propagate at once and are never retried.
* **Ceiling.** When the ceiling runs out of memory too, :class:`MemoryLadderExhaustedError` is raised from the last
  out-of-memory error. It subclasses ``flyte.errors.OOMError``, lists every size tried in its message and carries
  the attempts as :class:`MemoryAttempt` records.
* **Local runs.** Flyte's local engine ignores ``resources``. With ``enforce_locally=True`` (the default) each
  attempt of a Flyte task goes through :func:`~flyte_patterns.enforce_local_memory`, which runs the task body in a
  forked child process that is killed when the memory it adds passes the size, so the ladder behaves as on a
  cluster. On a cluster the enforced copy does nothing more than the task, and Kubernetes enforces the limit. Off
  Linux, and for a task of another plugin, attempts run unenforced and a warning is logged.
* **Plain callables.** An object without ``override``, such as an ``async def`` function, has no memory setting.
  It is called directly with the same arguments at every size. An in-process ``MemoryError`` or an out-of-memory
  Flyte error from it still escalates, and the sizes are logged and reported as for a task, but nothing enforces
  them. Wrap it with :func:`memory_limited` to run each attempt in a child process killed at the size.
* **Platform retries.** A task's own ``retries`` still apply within each attempt: Flyte treats ``OOMKilled`` as a
  retryable failure, so a task with ``retries=2`` may run three times at a size before this function sees the error.

Because ``*args`` and ``**kwargs`` go to the task, the names of this function's own keyword arguments cannot reach
the task as keywords: ``initial_memory``, ``increment``, ``factor``, ``max_memory``, ``sizes``, ``cpu``,
``oom_codes``, ``enforce_locally``, ``on_event`` and ``task_kwargs``. Pass such a task parameter positionally or in
``task_kwargs={"increment": 3}``. ``task`` itself is positional-only, so a task parameter may be called ``task``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar, cast, overload

import flyte
import flyte.errors
from flyte.extend import TaskTemplate

from ._errors import DEFAULT_OOM_CODES, flyte_code, is_out_of_memory, normalize_codes
from ._ladder import build_ladder
from ._local_memory import LocalMemoryLimit, enforce_local_memory, is_local_memory_supported, run_with_memory_limit
from ._memory import format_memory, parse_memory
from ._validation import check_callable, check_sync_function, close_coroutines, invoke, task_name

logger = logging.getLogger("flyte_patterns.oom")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

CPU: TypeAlias = int | float | str | tuple[int | float | str, int | float | str]
"""A CPU setting as :class:`flyte.Resources` accepts it: cores, a quantity string, or a ``(request, limit)`` pair."""

EventKind = Literal["attempt", "succeeded", "escalated", "exhausted", "failed", "cancelled"]

# Replaced in tests that need exact durations.
_clock: Callable[[], float] = time.monotonic

# The missing-platform warning is logged once per process, not once per call.
_warned_unsupported_platform = False


class SupportsMemoryOverride(Protocol[T_co]):
    """Anything with Flyte's ``override`` protocol, such as a test double that records the sizes it was launched with.

    :func:`retry_with_memory` calls ``override(resources=..., short_name=...)`` once per attempt and calls what it
    returns with the task's arguments. It also passes ``reusable="off"`` when the object has a ``reusable``
    attribute that is not ``None``, and reads ``resources`` and ``short_name`` attributes when they exist.
    """

    def override(
        self, *, resources: flyte.Resources, short_name: str, **kwargs: Any
    ) -> Callable[..., Awaitable[T_co]]: ...


MemoryRetryTarget: TypeAlias = (
    TaskTemplate[Any, Coroutine[Any, Any, T], Any]
    | SupportsMemoryOverride[T]
    | Callable[..., Awaitable[T]]
    | Callable[..., T]
)
"""Type of the ``task`` argument of :func:`retry_with_memory`: a Flyte task, an object with ``override``, or a
callable."""


@dataclass(frozen=True)
class MemoryAttempt:
    """One attempt that ran out of memory.

    Attributes:
        size: The memory size of the attempt, in bytes.
        error: The out-of-memory error, as Flyte delivered it.
        duration: Seconds from the launch of the attempt to its failure.
    """

    size: int
    error: BaseException
    duration: float


@dataclass(frozen=True)
class MemoryRetryEvent:
    """One step of :func:`retry_with_memory`, as passed to its ``on_event`` hook.

    Each attempt produces an ``"attempt"`` event when it is launched, then exactly one ending event:

    * ``"succeeded"``: the task returned.
    * ``"escalated"``: out of memory below the ceiling. ``next_size`` is set.
    * ``"exhausted"``: out of memory at the ceiling.
    * ``"failed"``: any other error, which propagates.
    * ``"cancelled"``: cancelled or interrupted, which propagates.

    Attributes:
        kind: The step, as above.
        task_name: The task's name, as used in logs.
        attempt: The attempt number, from 1.
        size: The attempt's memory size in bytes.
        ladder: Every size of the ladder in bytes, in order.
        resources: The resources the attempt was launched with, or ``None`` for a plain callable.
        next_size: The size of the next attempt, for ``"escalated"`` only.
        error: The attempt's error, for every kind except ``"attempt"`` and ``"succeeded"``.
        duration: Seconds the attempt ran, for every kind except ``"attempt"``.
    """

    kind: EventKind
    task_name: str
    attempt: int
    size: int
    ladder: tuple[int, ...]
    resources: flyte.Resources | None
    next_size: int | None = None
    error: BaseException | None = None
    duration: float | None = None


MemoryRetryHook: TypeAlias = Callable[[MemoryRetryEvent], object]
"""A callable fed each :class:`MemoryRetryEvent`. An exception it raises is logged and ignored."""


class MemoryLadderExhaustedError(flyte.errors.OOMError):
    """The task ran out of memory at every size of the ladder, the ceiling included.

    A subclass of ``flyte.errors.OOMError``, so code that catches Flyte's out-of-memory error still catches it. Its
    ``code`` is the code of the last out-of-memory error (``"OOMKilled"`` for a Kubernetes kill), so
    :func:`~flyte_patterns.is_out_of_memory` is true for it with the same codes.

    Attributes:
        task_name: The task's name.
        attempts: Every attempt, in order, each with its size, error and duration.
    """

    def __init__(self, task_name: str, attempts: tuple[MemoryAttempt, ...]) -> None:
        if not attempts:
            raise ValueError("MemoryLadderExhaustedError needs at least one attempt")
        last = attempts[-1].error
        sizes = ", ".join(format_memory(attempt.size) for attempt in attempts)
        message = (
            f"task {task_name!r} ran out of memory at every size tried: {sizes} "
            f"(the ceiling was {format_memory(attempts[-1].size)}); last error: {last}. "
            f"Raise max_memory or reduce the task's memory use"
        )
        # Keyword arguments, because Flyte's error classes do not share one positional signature.
        super().__init__(
            code=flyte_code(last) or type(last).__name__,
            message=message,
            worker=getattr(last, "worker", None),
        )
        self.task_name = task_name
        self.attempts = attempts

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every size tried, in bytes, in order."""
        return tuple(attempt.size for attempt in self.attempts)


@dataclass(frozen=True)
class MemoryLimited(Generic[T]):
    """A plain callable with Flyte's ``override`` protocol, so that each attempt runs it under the attempt's size.

    Create it with :func:`memory_limited`. Each attempt calls :func:`~flyte_patterns.run_with_memory_limit` with
    the attempt's memory limit: the callable runs in a forked child process that is killed when the memory it adds
    passes the limit.

    Attributes:
        func: The callable, async or synchronous.
        config: Polling settings for the child's memory watcher, or ``None`` for the defaults.
    """

    func: Callable[..., Awaitable[T]] | Callable[..., T]
    config: LocalMemoryLimit | None = None

    @property
    def short_name(self) -> str:
        """The callable's name, used in logs and events."""
        return task_name(self.func)

    def override(self, *, resources: flyte.Resources, short_name: str, **kwargs: Any) -> Callable[..., Awaitable[T]]:
        """Return a callable that runs ``func`` under the memory limit of ``resources``; other settings are ignored."""
        memory = resources.memory
        limit = memory[1] if isinstance(memory, tuple) else memory
        if limit is None:
            raise ValueError(
                f"{short_name}: resources {resources!r} set no memory limit to run {self.short_name} under"
            )
        func = cast(Callable[..., Awaitable[T]], self.func)
        config = self.config

        async def run_limited(*args: Any, **call_kwargs: Any) -> T:
            return await run_with_memory_limit(func, *args, limit=limit, config=config, **call_kwargs)

        return run_limited


@overload
def memory_limited(
    func: Callable[..., Awaitable[T]], *, config: LocalMemoryLimit | None = None
) -> MemoryLimited[T]: ...


@overload
def memory_limited(func: Callable[..., T], *, config: LocalMemoryLimit | None = None) -> MemoryLimited[T]: ...


def memory_limited(
    func: Callable[..., Awaitable[T]] | Callable[..., T], *, config: LocalMemoryLimit | None = None
) -> MemoryLimited[T]:
    """Wrap a plain callable so that :func:`retry_with_memory` runs each attempt under the attempt's size.

    ``await retry_with_memory(memory_limited(parse), path)`` runs ``parse(path)`` in a forked child process at each
    attempt, killed when the memory it adds passes the attempt's size, and escalates on that kill as on a Flyte
    task's. Unlike the local enforcement of Flyte tasks, this applies wherever the call runs, on a cluster too
    (inside the calling task's own container). It needs Linux, the result must be picklable, and changes the
    callable makes to the caller's state stay in the child.

    Raises:
        TypeError: ``func`` is not callable, is a coroutine object, or is a Flyte task (pass a task directly), or
            ``config`` is not a :class:`~flyte_patterns.LocalMemoryLimit`.
    """
    check_callable(func, name="func")
    if isinstance(func, TaskTemplate):
        raise TypeError(
            f"func must be a plain callable, got the Flyte task {func.name!r}; pass the task to retry_with_memory "
            f"directly, which overrides its resources at each attempt"
        )
    if config is not None and not isinstance(config, LocalMemoryLimit):
        raise TypeError(f"config must be a LocalMemoryLimit or None, got {config!r} ({type(config).__name__})")
    return MemoryLimited(func, config)


# The first overload gives an async Flyte task its result type: Flyte types such a task's result as a coroutine.
@overload
async def retry_with_memory(
    task: TaskTemplate[Any, Coroutine[Any, Any, T], Any],
    /,
    *args: Any,
    initial_memory: str | int | None = None,
    increment: str | int | None = None,
    factor: float | None = None,
    max_memory: str | int | None = None,
    sizes: Iterable[str | int] | None = None,
    cpu: CPU | None = None,
    oom_codes: str | Iterable[str] = DEFAULT_OOM_CODES,
    enforce_locally: bool = True,
    on_event: MemoryRetryHook | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> T: ...


@overload
async def retry_with_memory(
    task: SupportsMemoryOverride[T] | Callable[..., Awaitable[T]],
    /,
    *args: Any,
    initial_memory: str | int | None = None,
    increment: str | int | None = None,
    factor: float | None = None,
    max_memory: str | int | None = None,
    sizes: Iterable[str | int] | None = None,
    cpu: CPU | None = None,
    oom_codes: str | Iterable[str] = DEFAULT_OOM_CODES,
    enforce_locally: bool = True,
    on_event: MemoryRetryHook | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> T: ...


@overload
async def retry_with_memory(
    task: Callable[..., T],
    /,
    *args: Any,
    initial_memory: str | int | None = None,
    increment: str | int | None = None,
    factor: float | None = None,
    max_memory: str | int | None = None,
    sizes: Iterable[str | int] | None = None,
    cpu: CPU | None = None,
    oom_codes: str | Iterable[str] = DEFAULT_OOM_CODES,
    enforce_locally: bool = True,
    on_event: MemoryRetryHook | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> T: ...


async def retry_with_memory(
    task: MemoryRetryTarget[T],
    /,
    *args: Any,
    initial_memory: str | int | None = None,
    increment: str | int | None = None,
    factor: float | None = None,
    max_memory: str | int | None = None,
    sizes: Iterable[str | int] | None = None,
    cpu: CPU | None = None,
    oom_codes: str | Iterable[str] = DEFAULT_OOM_CODES,
    enforce_locally: bool = True,
    on_event: MemoryRetryHook | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> T:
    """Run ``task(*args, **kwargs)``, escalating its memory along a ladder each time it runs out of memory.

    The module docstring states the exact semantics.

    Args:
        task: A Flyte task, any object with Flyte's ``override(resources=...)`` protocol, or an async callable.
        *args: Positional arguments for the task, the same at every attempt.
        initial_memory: First size, as a Kubernetes quantity or an int of bytes. Defaults to ``"250Mi"``.
        increment: Step of an additive ladder. Defaults to ``"200Mi"`` when ``factor`` and ``sizes`` are not given.
        factor: Growth factor of a geometric ladder, a number greater than 1. Excludes ``increment``.
        max_memory: Ceiling, always the last size tried. Defaults to ``"4Gi"``.
        sizes: An explicit, strictly increasing list of sizes. Excludes the four arguments above.
        cpu: A CPU setting that replaces the task's own at every attempt. By default the task's CPU is kept.
        oom_codes: Flyte error codes that mean the task ran out of memory. An in-process ``MemoryError`` always
            does.
        enforce_locally: Whether, on Flyte's local engine, each attempt of a Flyte task runs under its size in a
            child process. No effect on a cluster or for objects that are not Flyte tasks.
        on_event: A hook called with a :class:`MemoryRetryEvent` at each step.
        task_kwargs: Keyword arguments for the task whose names clash with this function's own.
        **kwargs: Keyword arguments for the task, the same at every attempt.

    Returns:
        The task's result from the first attempt that does not run out of memory.

    Raises:
        MemoryLadderExhaustedError: The ceiling ran out of memory too. Raised from the last out-of-memory error.
        TypeError: ``task`` is not callable or is a coroutine object, or an argument has the wrong type.
        ValueError: A ladder argument is invalid (see :func:`~flyte_patterns.memory_ladder`), or ``cpu`` or the
            task's memory setting cannot be used. Every check runs before the first launch.
        Exception: Any error of an attempt that is not an out-of-memory failure, unchanged.
    """
    # A coroutine object passed where a callable belongs is closed before any check can raise.
    close_coroutines(task, on_event)
    _check_task(task)
    ladder = build_ladder(
        initial_memory=initial_memory,
        increment=increment,
        factor=factor,
        max_memory=max_memory,
        sizes=sizes,
        stacklevel=3,
    )
    codes = normalize_codes(oom_codes, name="oom_codes")
    check_sync_function(on_event, name="on_event")
    call_kwargs = _merge_task_kwargs(kwargs, task_kwargs)
    plan = _AttemptPlan.build(task, ladder, cpu=cpu, enforce_locally=enforce_locally)

    history: list[MemoryAttempt] = []
    for index, size in enumerate(ladder):
        runner, resources = plan.attempt(size)
        event = MemoryRetryEvent(
            kind="attempt", task_name=plan.name, attempt=index + 1, size=size, ladder=ladder, resources=resources
        )
        _report(event, on_event)

        started = _clock()
        try:
            result: T = await invoke(runner, *args, **call_kwargs)
        except Exception as exc:
            duration = _clock() - started
            if not is_out_of_memory(exc, codes):
                _report(dataclasses.replace(event, kind="failed", error=exc, duration=duration), on_event)
                raise

            history.append(MemoryAttempt(size=size, error=exc, duration=duration))
            if index + 1 < len(ladder):
                escalated = dataclasses.replace(
                    event, kind="escalated", error=exc, duration=duration, next_size=ladder[index + 1]
                )
                _report(escalated, on_event)
                continue
            _report(dataclasses.replace(event, kind="exhausted", error=exc, duration=duration), on_event)
            break
        except BaseException as exc:
            # Cancellation and interrupts, including groups that contain them: reported, never retried.
            _report(dataclasses.replace(event, kind="cancelled", error=exc, duration=_clock() - started), on_event)
            raise

        _report(dataclasses.replace(event, kind="succeeded", duration=_clock() - started), on_event)
        return result

    last_error = history[-1].error
    raise MemoryLadderExhaustedError(plan.name, tuple(history)) from last_error


@dataclass
class _AttemptPlan:
    """How to launch ``task`` at a given size, with every setting checked before the first launch.

    ``enforce_locally`` turns off after the first attempt whose task the local enforcement cannot convert.
    """

    task: Any
    name: str
    overridable: bool
    base: flyte.Resources | None
    cpu: CPU | None
    turn_off_reuse: bool
    enforce_locally: bool

    @classmethod
    def build(cls, task: Any, ladder: tuple[int, ...], *, cpu: CPU | None, enforce_locally: bool) -> _AttemptPlan:
        if not isinstance(enforce_locally, bool):
            raise TypeError(f"enforce_locally must be True or False, got {enforce_locally!r}")
        if not _supports_override(task):
            if cpu is not None:
                raise TypeError(
                    f"cpu={cpu!r} needs a task with Flyte's override(resources=...) protocol, "
                    f"but {task_name(task)!r} has no override method"
                )
            return cls(task, task_name(task), False, None, None, turn_off_reuse=False, enforce_locally=False)

        base = getattr(task, "resources", None)
        if base is not None and not isinstance(base, flyte.Resources):
            raise TypeError(f"task.resources must be a flyte.Resources or None, got {base!r}")
        # Every check of the merge depends on the task's resources and cpu, not on the size, so building one
        # rung's resources here rejects bad settings before the first launch. The rest are built per attempt,
        # because most calls succeed on the first rung.
        _attempt_resources(base, ladder[0], cpu)

        name = str(getattr(task, "short_name", None) or task_name(task))
        turn_off_reuse = getattr(task, "reusable", None) is not None
        if turn_off_reuse:
            logger.info(
                "task %s is in a reusable environment; each attempt runs with reuse turned off, in a container "
                "of its own size",
                name,
            )
        enforce = enforce_locally and _platform_supports_enforcement()
        return cls(task, name, True, base, cpu, turn_off_reuse=turn_off_reuse, enforce_locally=enforce)

    def attempt(self, size: int) -> tuple[Callable[..., Any], flyte.Resources | None]:
        """Return what to call for the attempt at ``size``, and the resources it is launched with."""
        if not self.overridable:
            return self.task, None

        resources = _attempt_resources(self.base, size, self.cpu)
        overrides: dict[str, Any] = {"resources": resources, "short_name": f"{self.name}-mem-{format_memory(size)}"}
        if self.turn_off_reuse:
            overrides["reusable"] = "off"
        runner = self.task.override(**overrides)
        if self.enforce_locally and isinstance(runner, TaskTemplate):
            runner = self._enforced(runner)
        return runner, resources

    def _enforced(self, runner: TaskTemplate[Any, Any, Any]) -> TaskTemplate[Any, Any, Any]:
        """Return ``runner`` with local memory enforcement, or unchanged if it cannot have it."""
        # On a cluster the enforced copy behaves exactly like the task, so there is no need to check where this runs.
        try:
            return enforce_local_memory(runner)
        except (TypeError, ValueError) as exc:
            # A task of another plugin, for example. Its attempts still run, and on a cluster Kubernetes enforces
            # each size, so this is logged rather than raised.
            logger.warning(
                "task %s: its attempts run without local memory enforcement, because it cannot be enforced (%s); "
                "on a cluster, Kubernetes enforces each size",
                self.name,
                exc,
            )
            self.enforce_locally = False
            return runner


def _attempt_resources(base: flyte.Resources | None, size: int, cpu: CPU | None) -> flyte.Resources:
    """Return ``base`` with its memory limit set to ``size`` and everything else kept."""
    base = base if base is not None else flyte.Resources()
    limit = format_memory(size)

    # A scalar memory is sent to Flyte as a request only, and the kill happens at the limit. Kubernetes gives a
    # container with a request alone the namespace's LimitRange default limit, or no limit at all (kubernetes.io,
    # "Configure Default Memory Requests and Limits for a Namespace"). Flyte's Kubernetes plugin copies the request
    # into a missing limit (AdjustOrDefaultResource in flyteorg/flyte, flyteplugins/go/tasks/pluginmachinery/
    # flytek8s/container_helper.go), but other backends need not. Sending the limit makes the size the limit on all.
    if isinstance(base.memory, tuple):
        request_bytes = parse_memory(base.memory[0], name="the task's memory request")
        limit_bytes = parse_memory(base.memory[1], name="the task's memory limit")
        scaled = size * request_bytes // limit_bytes if limit_bytes else size
        memory = (format_memory(min(scaled, size)), limit)
    else:
        memory = (limit, limit)

    if cpu is None:
        return dataclasses.replace(base, memory=memory)
    try:
        return dataclasses.replace(base, memory=memory, cpu=cpu)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cpu {cpu!r} is not a CPU setting flyte.Resources accepts: {exc}") from exc


def _platform_supports_enforcement() -> bool:
    """Return whether the local memory enforcement works here, logging once per process when it does not."""
    if is_local_memory_supported():
        return True
    # Off Linux the enforcement raises NotImplementedError; an unenforced local run beats no local run.
    global _warned_unsupported_platform
    if not _warned_unsupported_platform:
        _warned_unsupported_platform = True
        logger.warning(
            "local memory enforcement needs Linux, so on this machine retry_with_memory attempts run on Flyte's "
            "local engine without a memory limit; on a cluster, Kubernetes enforces each size"
        )
    return False


def _supports_override(task: object) -> bool:
    return callable(getattr(task, "override", None))


def _check_task(task: object) -> None:
    # check_callable closes a coroutine object passed by mistake, so this runs before anything else can raise.
    if _supports_override(task):
        return
    check_callable(task, name="task")


def _merge_task_kwargs(kwargs: dict[str, Any], task_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    if task_kwargs is None:
        return kwargs
    if not isinstance(task_kwargs, Mapping):
        raise TypeError(f"task_kwargs must be a mapping of parameter names to values, got {task_kwargs!r}")
    duplicates = sorted(set(kwargs) & set(task_kwargs))
    if duplicates:
        raise TypeError(f"task arguments {duplicates} were given both as keywords and in task_kwargs")
    return {**kwargs, **task_kwargs}


_LOG_LEVELS: dict[EventKind, int] = {
    "attempt": logging.INFO,
    "succeeded": logging.INFO,
    "escalated": logging.WARNING,
    "exhausted": logging.WARNING,
    "failed": logging.INFO,
    "cancelled": logging.INFO,
}


def _report(event: MemoryRetryEvent, hook: MemoryRetryHook | None) -> None:
    """Log ``event`` and pass it to ``hook``; an exception from the hook is logged and ignored."""
    if logger.isEnabledFor(_LOG_LEVELS[event.kind]):
        _log(event)

    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        logger.warning("on_event hook %r raised on a %r event; ignoring it", hook, event.kind, exc_info=True)


def _log(event: MemoryRetryEvent) -> None:
    level = _LOG_LEVELS[event.kind]
    name, attempt, size = event.task_name, event.attempt, format_memory(event.size)
    error = _describe_error(event.error) if event.error is not None else ""

    if event.kind == "attempt":
        logger.log(level, "task %s: attempt %d of %d at %s", name, attempt, len(event.ladder), size)
    elif event.kind == "succeeded":
        logger.log(level, "task %s: succeeded at %s on attempt %d", name, size, attempt)
    elif event.kind == "escalated":
        next_size = format_memory(event.next_size) if event.next_size is not None else "?"
        message = "task %s: ran out of memory at %s on attempt %d (%s); escalating to %s"
        logger.log(level, message, name, size, attempt, error, next_size)
    elif event.kind == "exhausted":
        message = "task %s: ran out of memory at the ceiling %s after %d attempts (%s)"
        logger.log(level, message, name, size, attempt, error)
    elif event.kind == "failed":
        message = "task %s: attempt %d at %s failed with %s, which is not an out-of-memory failure; not retrying"
        logger.log(level, message, name, attempt, size, error)
    else:
        logger.log(level, "task %s: attempt %d at %s was cancelled (%s)", name, attempt, size, error)


def _describe_error(exc: BaseException) -> str:
    code = flyte_code(exc)
    if code is None:
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} code {code!r}: {exc}"
