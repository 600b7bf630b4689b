"""Argument checks shared by every pattern, and the one way the patterns call a task.

Each check raises before any task is launched, with a message that names the public parameter, shows the value
with ``!r`` and says what was expected.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import flyte
from flyte.extend import TaskTemplate

T = TypeVar("T")


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_callable(task: object, *, name: str = "task") -> None:
    """Raise ``TypeError`` unless ``task`` can be called: a Flyte task, or a function or other callable.

    A coroutine object (``task(x)`` passed where ``task`` was meant) is closed first, so Python does not also warn
    that it was never awaited.
    """
    if inspect.iscoroutine(task):
        task.close()
        raise TypeError(
            f"{name} must be a task or an async callable, got a coroutine object {task!r}; "
            f"pass the function itself (for example `my_task`, not `my_task(x)`)"
        )
    if not callable(task):
        raise TypeError(f"{name} must be a task or an async callable, got {_describe(task)}")


def close_coroutines(*values: object) -> None:
    """Close every coroutine object among ``values``, so that none passed by mistake also warns it was never awaited.

    Call it before the first check that can raise. A closed coroutine is still a coroutine object, so the checks
    that follow still report the mistake.
    """
    for value in values:
        if inspect.iscoroutine(value):
            value.close()


def check_sync_function(function: object, *, name: str) -> None:
    """Raise ``TypeError`` unless ``function`` is ``None`` or a synchronous callable.

    Hooks and predicates are called without ``await``, so an async function would return a coroutine that is
    never awaited and never runs.
    """
    if function is None:
        return
    if inspect.iscoroutine(function):
        function.close()
        raise TypeError(f"{name} must be a synchronous function or None, got a coroutine object {function!r}")
    if not callable(function):
        raise TypeError(f"{name} must be a synchronous function or None, got {_describe(function)}")
    if inspect.iscoroutinefunction(function):
        raise TypeError(f"{name} must be a synchronous function, got the async function {function!r}")


def check_int(value: object, *, name: str, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) from ``minimum`` to ``maximum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an int <= {maximum}, got {value!r}")
    return value


def check_ratio(value: object, *, name: str) -> float:
    """Return ``value`` as a float if it is a real number from 0 to 1 inclusive (not a ``bool``), else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number from 0 to 1, got {_describe(value)}")
    ratio = float(value)
    if math.isnan(ratio) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return ratio


def check_seconds(value: object, *, name: str) -> float:
    """Return a positive duration in seconds, given as an int, a float or a ``timedelta``, else raise."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, got {_describe(value)}")
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive, finite duration, got {value!r}")
    return seconds


def task_name(task: object) -> str:
    """Return a short, readable name for a task or callable, for logs, messages and group names."""
    if isinstance(task, TaskTemplate):
        return str(task.short_name or task.name)
    for attribute in ("__qualname__", "__name__"):
        value = getattr(task, attribute, None)
        if isinstance(value, str):
            return value
    return type(task).__name__


def bind_call(task: Callable[..., Awaitable[T]] | Callable[..., T]) -> Callable[..., Awaitable[T] | T]:
    """Return the callable that runs ``task`` once from the current context: ``task`` itself, or its ``.aio``.

    A synchronous Flyte task goes through ``.aio`` inside a task, because a blocking call from async code is an
    error there. Everything else is returned as it is. The choice depends on the Flyte context, so bind in the
    context the calls will run in. A fan-out binds once and then calls the result for every item.
    """
    is_sync_task = isinstance(task, TaskTemplate) and not inspect.iscoroutinefunction(getattr(task, "func", None))
    # Outside a task, flyte.ctx() returns a null context that is falsy.
    if is_sync_task and bool(flyte.ctx()):
        sync_task = cast(TaskTemplate[Any, T, Any], task)
        return sync_task.aio
    return task


async def invoke(task: Callable[..., Awaitable[T]] | Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call ``task`` with the arguments and return its result.

    ``task`` is positional-only, so a task may have a keyword parameter called ``task``.

    A Flyte task becomes one action when this runs inside a Flyte task, and a plain call otherwise (see
    :func:`bind_call`). A plain callable may be async or return a value directly; a synchronous one runs inline on
    the event loop.
    """
    result = bind_call(task)(*args, **kwargs)
    if inspect.isawaitable(result):
        return cast(T, await result)
    return result
