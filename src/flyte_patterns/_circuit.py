"""Circuit breaker over a fan-out: run a task for every item and stop early when failures pile up.

:func:`circuit_breaker` calls ``task(item)`` for every item, at most ``concurrency`` at a time in a sliding
window, and returns a :class:`FanOutResult` with one outcome per item, in input order. It trips when one of its
rules fires, checked after every completed item (the first rule in this order is the reason):

* ``max_failures=N`` tolerates N failures; failure N+1 trips. ``0`` trips on the first failure.
* ``max_failure_ratio=r`` trips as soon as failures exceed ``r`` times the number of items, the point from which
  a success ratio of ``1 - r`` can no longer be met. One early failure among many items does not trip it. The
  number of items is ``len(items)``, or ``total=`` for an input without ``len()`` (a generator); with neither,
  the call is rejected before anything runs.
* ``rolling_window=RollingWindow(size=W, failure_rate=f, min_completed=m)`` trips when at least ``f`` of the
  last ``W`` completed items failed, checked once ``m`` items have completed (by default ``W``). It catches a
  dependency that goes down mid-run, after many successes that keep the other rules quiet.

With no rule set, the breaker never trips and reports every outcome.

When it trips, no new item starts, and every running item is cancelled and awaited before the call returns.
Each item's outcome is then ``succeeded`` or ``failed`` when it completed before or at the trip (it keeps its
value or its error), ``cancelled`` when the trip stopped it, or ``not_started``. Items left in the input are
``not_started`` when the input is a collection such as a list or a range. A one-shot iterator or generator is
left where it stopped, so its remaining items can still be read from it (``drain`` changes both, see
:func:`circuit_breaker`).

A failed item's ``error`` is the exception as the task raised it, or as Flyte delivered it for a Flyte task
(``flyte.errors.RuntimeUserError`` with the original class name as its code). The breaker never replaces it.

Cancelling the caller cancels and awaits every running item, then raises ``asyncio.CancelledError``. An item
that raises ``KeyboardInterrupt`` or ``SystemExit`` stops everything the same way, and the exception
propagates; it is not counted as a failure. An item that raises ``CancelledError`` on its own, while the
breaker was not cancelled, is recorded as ``cancelled`` and the others go on.

The calls are grouped in Flyte's UI under ``flyte.group(group_name)``, by default ``<task name>_circuit_breaker``.
Outside a Flyte task the group has no effect.

Error tree::

    Exception
    └── FanOutError                 .result: the FanOutResult, with every outcome recorded
        ├── FanOutInputError        the input iterable raised; __cause__ is its exception
        └── CircuitBreakerError     the breaker tripped; __cause__ is the first item's failure
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

from ._fanout import (
    DEFAULT_CONCURRENCY,
    FanOutError,
    FanOutResult,
    ProgressHook,
    RollingWindow,
    TripPolicy,
    fan_out,
)
from ._validation import check_callable, task_name

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("flyte_patterns.circuit_breaker")


class CircuitBreakerError(FanOutError):
    """The circuit breaker tripped.

    ``result`` is the :class:`FanOutResult` with every outcome, so partial results survive, and
    ``result.trip`` names the rule that fired. ``__cause__`` is the error of the first item to fail.
    """


def _trip_error(result: FanOutResult[Any]) -> CircuitBreakerError:
    assert result.trip is not None
    error = CircuitBreakerError(
        f"circuit breaker tripped: {result.trip.message} ({result.succeeded} succeeded, {result.failed} failed, "
        f"{result.cancelled} cancelled, {result.not_started} not started)",
        result=result,
    )
    error.__cause__ = result.first_error
    return error


@overload
async def circuit_breaker(
    task: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    total: int | None = None,
    drain: bool | None = None,
    raise_on_trip: bool = False,
    on_progress: ProgressHook | None = None,
    group_name: str | None = None,
) -> FanOutResult[R]: ...


@overload
async def circuit_breaker(
    task: Callable[[T], R],
    items: Iterable[T] | AsyncIterable[T],
    *,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    total: int | None = None,
    drain: bool | None = None,
    raise_on_trip: bool = False,
    on_progress: ProgressHook | None = None,
    group_name: str | None = None,
) -> FanOutResult[R]: ...


async def circuit_breaker(
    task: Callable[[Any], Any],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    total: int | None = None,
    drain: bool | None = None,
    raise_on_trip: bool = False,
    on_progress: ProgressHook | None = None,
    group_name: str | None = None,
) -> FanOutResult[Any]:
    """Run ``task(item)`` for every item and stop early when failures pile up.

    Args:
        task: A Flyte task, an async callable or a plain callable, called with one item.
        items: Any iterable or async iterable, pulled lazily: at most ``concurrency`` items are pulled and
            not yet finished at any time, so a generator of a million items never becomes a million coroutines.
        max_failures: Failures tolerated; one more trips the breaker.
        max_failure_ratio: Trips when failures exceed this fraction (0 to 1) of the number of items.
        rolling_window: Trips when the failure rate over the last completed items reaches a threshold.
        concurrency: The maximum number of items running at once, at least 1.
        total: The number of items, for an input without ``len()``; needed there by ``max_failure_ratio``.
        drain: Whether to read the input left after a trip to the end and report those items as
            ``not_started``. ``None`` (the default) does so for collections (a list, a range, anything whose
            ``iter()`` returns a new iterator), without reading a sized one, and leaves one-shot iterators
            where they stopped. ``True`` reads any input to the end, which never ends for an infinite iterator.
        raise_on_trip: Raise :class:`CircuitBreakerError` instead of returning when the breaker trips.
        on_progress: Called with a :class:`FanOutProgress` after each item finishes running. An ``Exception``
            it raises is logged and ignored.
        group_name: The ``flyte.group`` name of the calls; by default ``<task name>_circuit_breaker``.

    Returns:
        The outcome of every item in input order, with counts, ``tripped`` and the :class:`Trip`, if any.

    Raises:
        CircuitBreakerError: The breaker tripped and ``raise_on_trip`` is true.
        FanOutInputError: The input iterable raised an exception.
        TypeError: ``task`` is not callable or is a coroutine object, ``items`` is not iterable, a number has
            the wrong type (``True`` is not a number here), or ``max_failure_ratio`` is set for an input
            without ``len()`` and no ``total``.
        ValueError: A count is negative, a ratio is outside 0..1, ``concurrency`` is below 1, or ``total``
            disagrees with ``len(items)``.
        asyncio.CancelledError: The caller was cancelled; every running item was cancelled and awaited first.
        KeyboardInterrupt: An item raised it (likewise ``SystemExit``); everything was stopped first.
    """
    check_callable(task)
    if not isinstance(raise_on_trip, bool):
        raise TypeError(f"raise_on_trip must be True or False, got {raise_on_trip!r} ({type(raise_on_trip).__name__})")
    policy = TripPolicy(
        max_failures=max_failures,
        max_failure_ratio=max_failure_ratio,
        rolling_window=rolling_window,
    )
    result = await fan_out(
        task,
        items,
        concurrency=concurrency,
        policy=policy,
        total=total,
        drain=drain,
        on_progress=on_progress,
        group_name=f"{task_name(task)}_circuit_breaker" if group_name is None else group_name,
        logger=logger,
    )
    if raise_on_trip and result.tripped:
        raise _trip_error(result)
    return result


@overload
async def circuit_breaker_execute(
    task: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    max_failures: int = 3,
    *,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    total: int | None = None,
    group_name: str | None = None,
) -> list[R | None]: ...


@overload
async def circuit_breaker_execute(
    task: Callable[[T], R],
    items: Iterable[T] | AsyncIterable[T],
    max_failures: int = 3,
    *,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    total: int | None = None,
    group_name: str | None = None,
) -> list[R | None]: ...


async def circuit_breaker_execute(
    task: Callable[[Any], Any],
    items: Iterable[Any] | AsyncIterable[Any],
    max_failures: int = 3,
    *,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    total: int | None = None,
    group_name: str | None = None,
) -> list[Any]:
    """Run ``task(item)`` for every item and return the values, with ``None`` where an item failed.

    This is the list-shaped form of :func:`circuit_breaker`, with the same rules; ``max_failures`` defaults
    to 3 (three failures are tolerated, the fourth trips). Empty input returns ``[]``.

    Returns:
        One entry per item in input order: its value, or ``None`` when it failed.

    Raises:
        CircuitBreakerError: The breaker tripped. Its ``result`` contains every outcome and value recorded, and its
            ``__cause__`` is the first item's failure.
    """
    result = await circuit_breaker(
        task,
        items,
        max_failures=max_failures,
        max_failure_ratio=max_failure_ratio,
        rolling_window=rolling_window,
        concurrency=concurrency,
        total=total,
        raise_on_trip=True,
        group_name=group_name,
    )
    return result.values()
