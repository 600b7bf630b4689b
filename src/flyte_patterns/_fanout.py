"""The fan-out engine shared by the circuit breaker and the batcher.

:func:`fan_out` calls ``call(item)`` for every item of an iterable or async iterable, at most ``concurrency`` at
a time, and returns a :class:`FanOutResult` with one :class:`Outcome` per item, in input order. The patterns
build on it: the circuit breaker calls the user's task once per item, and a batcher calls it once per batch.

Scheduling:

* A fixed pool of ``concurrency`` worker tasks (fewer when the input has a smaller ``len()``) shares one iterator
  of the input. A worker pulls the next item, awaits the call, stores the outcome and pulls again, so a new item
  starts as soon as one finishes (a sliding window), and no task object is created per item.
* The input is pulled lazily, one item each time a worker is free, so at most ``concurrency`` items have been
  pulled and not yet finished. Pulls from an async iterable are serialized with a lock, because an async
  generator cannot be advanced by two coroutines at once.
* Bookkeeping is O(1) per completion: values go into a list indexed by position, failures and cancellations
  into dictionaries, and the rolling window is a bounded deque with a running count.

Trip rules (:class:`TripPolicy`), checked after every completion; when several hold at once, the first in this
order is the reason:

1. ``max_failures=N`` tolerates N failures, and failure N+1 trips (so ``0`` trips on the first failure).
2. ``max_failure_ratio=r`` trips as soon as failures exceed ``r`` times the number of items, the point from which
   a success ratio of ``1 - r`` can no longer be met. The number of items is ``len(items)`` or the ``total``
   hint; an input with neither is rejected before anything runs. A hint smaller than the real count is replaced
   by the number of items pulled so far, and when the input ends the exact count replaces the hint, which can
   trip the rule at that moment. The ratio is taken as written (``0.3`` is exactly 3/10), so 3 failures of 10
   items do not exceed ``0.3``.
3. ``rolling_window=RollingWindow(size=W, failure_rate=f, min_completed=m)`` trips when at least ``f`` of the
   last ``W`` completed items failed, checked only once ``m`` items have completed (``m`` defaults to ``W``).

Completed means succeeded or failed; cancelled items count toward no rule.

When the breaker trips, no worker pulls another item, every other worker is cancelled and awaited before
:func:`fan_out` returns, and the outcomes record what happened to each item:

* ``succeeded`` / ``failed``: the item completed, before or at the trip. ``error`` is the exception exactly as
  the call raised it (for a Flyte task, as Flyte delivered it).
* ``cancelled``: the item was running and the trip cancelled it. ``error`` is ``None``, or the exception the
  item ended with instead of the cancellation.
* ``not_started``: the item was never called.

Items the workers had not pulled yet are counted as ``not_started`` only when ``drain`` requests reading the rest
of the input (see :func:`fan_out`). Otherwise they stay in the caller's iterator, which stops right after the
last pulled item, and :attr:`FanOutResult.input_exhausted` is ``False``.

Exceptions that are not failures:

* Cancelling the caller cancels every worker (their running items become cancelled), awaits them all, and then
  raises ``asyncio.CancelledError``. No result is returned.
* An item that raises ``KeyboardInterrupt``, ``SystemExit`` or any other exception that is not an
  ``Exception`` (except ``CancelledError``) stops everything the same way, and that exception propagates. It is
  never counted as a failure.
* An item that raises ``CancelledError`` while its worker was not cancelled (for example, it awaited a future
  that someone else cancelled) is recorded as ``cancelled``, with that error, and the others go on. It is not a
  failure and the fan-out keeps running.
* An ``Exception`` raised by the input iterable itself is not an item failure: everything stops as on a trip,
  and :class:`FanOutInputError` is raised from it, with the partial result attached. A non-``Exception`` raised
  by the input propagates as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence, Sized
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Generic, TypeVar, overload

import flyte

from ._validation import bind_call, check_callable, check_int, check_ratio, check_sync_function, close_coroutines

T = TypeVar("T")
R = TypeVar("R")
D = TypeVar("D")

DEFAULT_CONCURRENCY = 32
"""Default bound on concurrent calls: enough to overlap I/O, few enough not to flood a cluster with pods."""

_default_logger = logging.getLogger("flyte_patterns.fanout")


class OutcomeStatus(enum.StrEnum):
    """The final state of one item of a fan-out."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_STARTED = "not_started"


class TripRule(enum.StrEnum):
    """The rule that tripped a breaker, named after the parameter that set it."""

    MAX_FAILURES = "max_failures"
    MAX_FAILURE_RATIO = "max_failure_ratio"
    ROLLING_WINDOW = "rolling_window"


@dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """The outcome of one item.

    Attributes:
        index: The item's position in the input, from 0.
        status: What happened to the item.
        value: The call's return value when ``status`` is ``succeeded``, else ``None``.
        error: For ``failed``, the exception the call raised, as it was raised. For ``cancelled``, ``None`` when
            the fan-out cancelled the item, or the exception it ended with otherwise. ``None`` for the rest.
    """

    index: int
    status: OutcomeStatus
    value: R | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class RollingWindow:
    """A trip rule for failing fast when a dependency goes down mid-run.

    The breaker trips when at least ``failure_rate`` of the last ``size`` completed items failed, checked only
    once ``min_completed`` items have completed in total (by default ``size``, a full window).

    Attributes:
        size: How many of the most recent completed items the rate is taken over.
        failure_rate: The failure rate that trips the breaker, above 0 and at most 1.
        min_completed: How many items must have completed before the rule is checked.
    """

    size: int
    failure_rate: float
    min_completed: int | None = None

    def __post_init__(self) -> None:
        check_int(self.size, name="RollingWindow size", minimum=1)
        rate = check_ratio(self.failure_rate, name="RollingWindow failure_rate")
        if rate == 0.0:
            raise ValueError(
                f"RollingWindow failure_rate must be above 0, got {self.failure_rate!r}; "
                f"a rate of 0 would trip on the first completed window, failures or not"
            )
        if self.min_completed is not None:
            check_int(self.min_completed, name="RollingWindow min_completed", minimum=1)

    @property
    def effective_min_completed(self) -> int:
        """``min_completed``, or ``size`` when it was not given."""
        return self.size if self.min_completed is None else self.min_completed


@dataclass(frozen=True)
class TripPolicy:
    """When a fan-out trips. With no rule set, it never trips and runs every item.

    See the module docstring for the exact rules and their order.
    """

    max_failures: int | None = None
    max_failure_ratio: float | None = None
    rolling_window: RollingWindow | None = None

    def __post_init__(self) -> None:
        if self.max_failures is not None:
            check_int(self.max_failures, name="max_failures", minimum=0)
        if self.max_failure_ratio is not None:
            check_ratio(self.max_failure_ratio, name="max_failure_ratio")
        if self.rolling_window is not None and not isinstance(self.rolling_window, RollingWindow):
            raise TypeError(
                f"rolling_window must be a RollingWindow, for example RollingWindow(size=20, failure_rate=0.5), "
                f"got {self.rolling_window!r} ({type(self.rolling_window).__name__})"
            )


@dataclass(frozen=True)
class Trip:
    """The rule that tripped a fan-out, and the item at which it fired.

    Attributes:
        rule: The rule that fired first.
        message: A sentence that states the rule and the counts, for logs and errors.
        index: The item whose completion tripped the breaker, or ``None`` when the ratio rule fired because the
            input ended with fewer items than the ``total`` hint.
        failed: Failures counted when it tripped.
    """

    rule: TripRule
    message: str
    index: int | None
    failed: int


@dataclass(frozen=True, slots=True)
class FanOutProgress:
    """The event passed to an ``on_progress`` hook after each item finishes running.

    Attributes:
        index: The item's position in the input.
        status: ``succeeded``, ``failed`` or ``cancelled``.
        error: As in :class:`Outcome`.
        started: Items called so far.
        succeeded: Items succeeded so far.
        failed: Items failed so far.
        cancelled: Items cancelled so far.
        total: The number of items when known from ``len()`` or a ``total`` hint, else ``None``.
    """

    index: int
    status: OutcomeStatus
    error: BaseException | None
    started: int
    succeeded: int
    failed: int
    cancelled: int
    total: int | None


class _Outcomes(Sequence[Outcome[R]]):
    """The outcomes of a fan-out in input order, built on access from the engine's compact storage.

    A million-item fan-out stores a list of values and two small dictionaries, not a million objects.
    """

    __slots__ = ("_cancelled", "_failed", "_length", "_skipped", "_values")

    def __init__(
        self,
        values: list[Any],
        failed: dict[int, BaseException],
        cancelled: dict[int, BaseException | None],
        skipped: set[int],
        length: int,
    ) -> None:
        self._values = values
        self._failed = failed
        self._cancelled = cancelled
        self._skipped = skipped
        self._length = length

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Outcome[R]: ...

    @overload
    def __getitem__(self, index: slice) -> list[Outcome[R]]: ...

    def __getitem__(self, index: int | slice) -> Outcome[R] | list[Outcome[R]]:
        if isinstance(index, slice):
            return [self._outcome(i) for i in range(*index.indices(self._length))]
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"outcome index {index} out of range for {self._length} items")
        return self._outcome(position)

    def __iter__(self) -> Iterator[Outcome[R]]:
        for position in range(self._length):
            yield self._outcome(position)

    def __repr__(self) -> str:
        return f"<{self._length} outcomes>"

    def status(self, index: int) -> OutcomeStatus:
        """Return the status of the item at ``index`` (from 0) without building its outcome."""
        if index in self._failed:
            return OutcomeStatus.FAILED
        if index in self._cancelled:
            return OutcomeStatus.CANCELLED
        if index >= len(self._values) or index in self._skipped:
            return OutcomeStatus.NOT_STARTED
        return OutcomeStatus.SUCCEEDED

    def _outcome(self, index: int) -> Outcome[R]:
        status = self.status(index)
        if status is OutcomeStatus.SUCCEEDED:
            return Outcome(index, status, self._values[index])
        if status is OutcomeStatus.FAILED:
            return Outcome(index, status, error=self._failed[index])
        if status is OutcomeStatus.CANCELLED:
            return Outcome(index, status, error=self._cancelled[index])
        return Outcome(index, status)

    def errors(self) -> dict[int, BaseException]:
        return dict(sorted(self._failed.items()))

    def values(self, default: object) -> list[Any]:
        result = list(self._values)
        if default is not None:
            for index in (*self._failed, *self._cancelled, *self._skipped):
                result[index] = default
        result.extend([default] * (self._length - len(self._values)))
        return result


@dataclass(frozen=True, eq=False)
class FanOutResult(Generic[R]):
    """The result of a fan-out: one outcome per item, in input order, and why it stopped early, if it did.

    Attributes:
        outcomes: One :class:`Outcome` per item, in input order, built on access.
        succeeded: How many items succeeded.
        failed: How many items failed.
        cancelled: How many items were cancelled while running.
        not_started: How many items were never called.
        trip: Why the fan-out tripped, or ``None`` if it ran to the end.
        input_exhausted: Whether every input item is in ``outcomes``. ``False`` only after a trip or an input
            error that left a one-shot iterator unread; the items not pulled are still in that iterator. Also
            ``False`` when a trip cancelled a pull from an async input without ``len()``, with any ``drain``,
            because that pull may have closed the input.
        first_failure_index: The index of the first item to fail, in completion order, or ``None``.
    """

    outcomes: Sequence[Outcome[R]] = field(repr=False)
    succeeded: int
    failed: int
    cancelled: int
    not_started: int
    trip: Trip | None
    input_exhausted: bool
    first_failure_index: int | None

    @property
    def tripped(self) -> bool:
        """Whether a trip rule stopped the fan-out early."""
        return self.trip is not None

    @property
    def total(self) -> int:
        """How many items the result accounts for (``len(outcomes)``)."""
        return len(self.outcomes)

    @property
    def first_error(self) -> BaseException | None:
        """The error of the first item to fail, in completion order, or ``None`` when nothing failed."""
        if self.first_failure_index is None:
            return None
        return self.outcomes[self.first_failure_index].error

    @overload
    def values(self) -> list[R | None]: ...

    @overload
    def values(self, default: D) -> list[R | D]: ...

    def values(self, default: object = None) -> list[Any]:
        """Return every item's value in input order, with ``default`` for items that did not succeed."""
        if isinstance(self.outcomes, _Outcomes):
            return self.outcomes.values(default)
        return [o.value if o.status is OutcomeStatus.SUCCEEDED else default for o in self.outcomes]

    def errors(self) -> dict[int, BaseException]:
        """Return the error of every failed item, keyed by index, in input order."""
        if isinstance(self.outcomes, _Outcomes):
            return self.outcomes.errors()
        return {o.index: o.error for o in self.outcomes if o.status is OutcomeStatus.FAILED and o.error is not None}

    def indices(self, status: OutcomeStatus | str) -> list[int]:
        """Return the indices of the items with ``status`` (an :class:`OutcomeStatus` or its value), in order."""
        wanted = OutcomeStatus(status)
        if isinstance(self.outcomes, _Outcomes):
            outcomes = self.outcomes
            return [i for i in range(len(outcomes)) if outcomes.status(i) is wanted]
        return [o.index for o in self.outcomes if o.status is wanted]


class FanOutError(Exception):
    """Base class of the errors that end a fan-out early. ``result`` contains every outcome recorded until then."""

    def __init__(self, message: str, *, result: FanOutResult[Any]) -> None:
        super().__init__(message)
        self.result = result


class FanOutInputError(FanOutError):
    """The input iterable raised an exception, which is the ``__cause__``. ``result`` contains the partial outcomes."""


ProgressHook = Callable[[FanOutProgress], object]
"""A hook called with a :class:`FanOutProgress` after each item finishes running."""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _rational(ratio: float) -> Fraction:
    """Return the ratio as its shortest decimal reads, so ``0.3`` is exactly 3/10 and not 0.2999..."""
    return Fraction(repr(float(ratio)))


@overload
async def fan_out(
    call: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    policy: TripPolicy | None = None,
    total: int | None = None,
    drain: bool | None = None,
    on_progress: ProgressHook | None = None,
    group_name: str | None = None,
    logger: logging.Logger | None = None,
    on_stop: Callable[[], object] | None = None,
) -> FanOutResult[R]: ...


@overload
async def fan_out(
    call: Callable[[T], R],
    items: Iterable[T] | AsyncIterable[T],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    policy: TripPolicy | None = None,
    total: int | None = None,
    drain: bool | None = None,
    on_progress: ProgressHook | None = None,
    group_name: str | None = None,
    logger: logging.Logger | None = None,
    on_stop: Callable[[], object] | None = None,
) -> FanOutResult[R]: ...


async def fan_out(
    call: Callable[[Any], Any],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    policy: TripPolicy | None = None,
    total: int | None = None,
    drain: bool | None = None,
    on_progress: ProgressHook | None = None,
    group_name: str | None = None,
    logger: logging.Logger | None = None,
    on_stop: Callable[[], object] | None = None,
) -> FanOutResult[Any]:
    """Call ``call(item)`` for every item, at most ``concurrency`` at a time, and return every outcome.

    The contract that patterns build on (see the module docstring for the full semantics):

    * ``call`` is called once per item, with the item as its only argument, in the caller's Flyte context: a
      Flyte task becomes one action per call inside a task, and a synchronous Flyte task is called through
      ``.aio`` there. ``call`` may be async, return an awaitable, or return a value directly (a synchronous
      callable runs inline on the event loop and blocks it meanwhile).
    * Items are pulled lazily, one each time a worker is free. Nothing is pulled before this coroutine runs.
    * Returns when every item has finished, or when a rule of ``policy`` tripped and every running item has
      been cancelled and awaited. Never raises for an item's ``Exception``: that is a ``failed`` outcome.
    * Raises ``asyncio.CancelledError`` when the caller is cancelled, ``KeyboardInterrupt``, ``SystemExit`` or
      another non-``Exception`` when an item or ``on_progress`` raises one, and :class:`FanOutInputError` when
      the input raises an ``Exception``, each only after every worker has been cancelled and awaited. No task
      this function created is left pending on any exit.

    Args:
        call: What to run for each item: a Flyte task, an async callable, or a plain callable.
        items: The units of work (items, or batches for a batcher): any iterable or async iterable.
        concurrency: The maximum number of calls running at once, at least 1.
        policy: When to trip. ``None`` never trips.
        total: The number of items, for an input without ``len()``. Needed by ``max_failure_ratio`` there, and
            passed to ``on_progress``. When ``items`` has ``len()``, ``total`` must be ``None`` or equal to it.
        drain: What to do with the input that was not pulled when the breaker trips. ``True``: read it to the
            end and record each item as ``not_started`` (an infinite iterator never ends). ``False``: leave it.
            ``None`` (the default): read it only when ``items`` is a collection that ``iter()`` or ``aiter()``
            does not consume, such as a list or a range (counted with ``len()`` when it has one, without
            reading it), and leave a one-shot iterator or generator where it stopped, so the caller can resume
            it.
        on_progress: Called with a :class:`FanOutProgress` after each item finishes running (succeeded, failed
            or cancelled), synchronously on the event loop, so keep it cheap. An ``Exception`` it raises is
            logged once and ignored.
        group_name: The name of the ``flyte.group`` that holds the calls in Flyte's UI. ``None``: no group.
            Outside a Flyte task the group has no effect.
        logger: Where to log trips, item cancellations and hook errors. Defaults to ``flyte_patterns.fanout``.
        on_stop: Called once when the fan-out stops early (a trip, an input error, an interrupt or the caller's
            cancellation), right after it cancelled the workers, so that a pattern can stop the work it runs
            beside the fan-out at the same moment. An ``Exception`` it raises is logged and ignored.

    Returns:
        One outcome per item in input order, the counts of each status, and the trip, if any.

    Raises:
        TypeError: ``call`` is not callable (or is a coroutine object), ``items`` is not iterable, an argument
            has the wrong type, or ``max_failure_ratio`` is set for an input of unknown length and no ``total``.
        ValueError: ``concurrency`` or ``total`` is out of range, or ``total`` disagrees with ``len(items)``.
    """
    close_coroutines(call, items, on_progress)
    engine: _FanOut[Any, Any] = _FanOut(
        call,
        items,
        concurrency=concurrency,
        policy=TripPolicy() if policy is None else policy,
        total=total,
        drain=drain,
        on_progress=on_progress,
        group_name=group_name,
        logger=_default_logger if logger is None else logger,
        on_stop=on_stop,
    )
    return await engine.run()


class _FanOut(Generic[T, R]):
    """One run of :func:`fan_out`: the shared state of its workers.

    Every method runs on the event loop thread, and the workers only switch at ``await``, so plain attributes
    need no lock. The worker loops read hot attributes into locals, because they run once per item.
    """

    __slots__ = (
        "_always_awaitable",
        "_async_source",
        "_call",
        "_cancelled",
        "_completed",
        "_drain",
        "_exhausted",
        "_failed",
        "_first_failure",
        "_group_name",
        "_hook",
        "_hook_errors",
        "_input_error",
        "_interrupt",
        "_label",
        "_lock",
        "_logger",
        "_max_failures",
        "_on_stop",
        "_policy",
        "_pull_interrupted",
        "_ratio",
        "_re_iterable",
        "_reporting",
        "_size",
        "_skipped",
        "_source",
        "_stopping",
        "_succeeded",
        "_tail",
        "_total",
        "_trip",
        "_values",
        "_window",
        "_window_failures",
        "_window_min",
        "_window_rate",
        "_window_size",
        "_worker_count",
        "_workers",
    )

    def __init__(
        self,
        call: Callable[[T], Awaitable[R]] | Callable[[T], R],
        items: Iterable[T] | AsyncIterable[T],
        *,
        concurrency: int,
        policy: TripPolicy,
        total: int | None,
        drain: bool | None,
        on_progress: ProgressHook | None,
        group_name: str | None,
        logger: logging.Logger,
        on_stop: Callable[[], object] | None = None,
    ) -> None:
        check_callable(call, name="call")
        check_int(concurrency, name="concurrency", minimum=1)
        if not isinstance(policy, TripPolicy):
            raise TypeError(f"policy must be a TripPolicy, got {policy!r} ({type(policy).__name__})")
        if total is not None:
            check_int(total, name="total", minimum=0)
        if drain is not None and not isinstance(drain, bool):
            raise TypeError(f"drain must be True, False or None, got {drain!r} ({type(drain).__name__})")
        given_items: object = items  # typed as an iterable, but a coroutine object is the likely mistake
        if inspect.iscoroutine(given_items):
            raise TypeError(
                f"items must be an iterable or an async iterable, got a coroutine object {given_items!r}; "
                f"await it to get the items, or pass an async generator"
            )
        check_sync_function(on_progress, name="on_progress")
        if group_name is not None:
            if not isinstance(group_name, str):
                raise TypeError(
                    f"group_name must be a string or None, got {group_name!r} ({type(group_name).__name__})"
                )
            if not group_name.strip():
                raise ValueError(f"group_name must not be empty, got {group_name!r}")

        # Only the input's own len() bounds the pool, because a `total` hint that is too small must not leave
        # items unread.
        self._source: Iterator[tuple[int, T]] | None = None
        self._async_source: AsyncIterator[T] | None = None
        if isinstance(items, AsyncIterable):
            iterator = aiter(items)
            self._async_source = iterator
            self._re_iterable = iterator is not items
        elif isinstance(items, Iterable):
            sync_iterator = iter(items)
            self._source = enumerate(sync_iterator)
            self._re_iterable = sync_iterator is not items
        else:
            raise TypeError(f"items must be an iterable or an async iterable, got {items!r} ({type(items).__name__})")
        self._size: int | None = len(items) if isinstance(items, Sized) else None
        if self._size is not None and total is not None and total != self._size:
            raise ValueError(f"total={total!r} disagrees with len(items)={self._size}; pass total=None")
        self._total = self._size if self._size is not None else total

        if policy.max_failure_ratio is not None and self._total is None:
            raise TypeError(
                f"max_failure_ratio needs the number of items, but items is a {type(items).__name__} without "
                f"len(); pass total=<number of items>, or use max_failures or rolling_window instead"
            )

        self._call = bind_call(call)
        self._always_awaitable = inspect.iscoroutinefunction(self._call)
        self._policy = policy
        self._max_failures = policy.max_failures
        self._ratio = None if policy.max_failure_ratio is None else _rational(policy.max_failure_ratio)
        window = policy.rolling_window
        self._window: deque[bool] | None = None if window is None else deque(maxlen=window.size)
        self._window_size = 0 if window is None else window.size
        self._window_rate = Fraction(0) if window is None else _rational(window.failure_rate)
        self._window_min = 0 if window is None else window.effective_min_completed
        self._window_failures = 0
        self._hook = on_progress
        self._on_stop = on_stop
        self._hook_errors = 0
        # Successes take a slower path only when something must see each one.
        self._reporting = self._window is not None or on_progress is not None
        self._drain = drain
        self._group_name = group_name
        self._logger = logger
        self._label = group_name or "fan-out"

        self._worker_count = concurrency if self._size is None else max(1, min(concurrency, self._size))
        self._workers: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._values: list[Any] = []
        self._failed: dict[int, BaseException] = {}
        self._cancelled: dict[int, BaseException | None] = {}
        self._skipped: set[int] = set()
        self._tail = 0
        self._succeeded = 0
        self._completed = 0
        self._first_failure: int | None = None
        self._stopping = False
        self._exhausted = False
        self._trip: Trip | None = None
        self._interrupt: BaseException | None = None
        self._input_error: Exception | None = None
        self._pull_interrupted = False

    # ---------------------------------------------------------------- the caller's side

    async def run(self) -> FanOutResult[R]:
        worker = self._sync_worker if self._source is not None else self._async_worker
        group: AbstractContextManager[None] = (
            nullcontext() if self._group_name is None else flyte.group(self._group_name)
        )
        # Each worker copies the context when it is created, so every call it makes belongs to the group.
        with group:
            self._workers = [asyncio.create_task(worker()) for _ in range(self._worker_count)]

        try:
            await asyncio.wait(self._workers)
        except asyncio.CancelledError:
            self._logger.debug("%s cancelled by its caller; cancelling %d workers", self._label, len(self._workers))
            self._stop()
            await self._await_workers()
            worker_error = self._retrieve_worker_errors()
            if worker_error is not None:
                self._logger.error("%s: a worker failed while being cancelled", self._label, exc_info=worker_error)
            # An interrupt raised by an item while it was being cancelled outranks the cancellation. It is raised
            # as it is, because `from` would replace any cause the item gave it.
            if self._interrupt is not None:
                raise self._interrupt  # noqa: B904
            raise

        worker_error = self._retrieve_worker_errors()
        if worker_error is not None:
            raise worker_error
        if self._interrupt is not None:
            raise self._interrupt
        if self._hook_errors > 1:
            self._logger.error("%s: on_progress raised %d times in total", self._label, self._hook_errors)
        if self._input_error is not None:
            pulled = len(self._values)
            raise FanOutInputError(
                f"the input of {self._label} raised {self._input_error!r} after {pulled} items",
                result=self._result(),
            ) from self._input_error

        if self._trip is not None and not self._exhausted:
            await self._drain_rest()
        return self._result()

    async def _await_workers(self) -> None:
        """Wait until every worker is done, even if the caller is cancelled again meanwhile."""
        pending = [task for task in self._workers if not task.done()]
        while pending:
            # The first cancellation is re-raised once the workers are done. A repeat is not passed on: the
            # workers were cancelled once already, and cancelling again would cut their cleanup short.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(pending)
            pending = [task for task in self._workers if not task.done()]

    def _retrieve_worker_errors(self) -> BaseException | None:
        """Return the first exception a worker died with (a bug here), retrieving all so asyncio does not warn."""
        first: BaseException | None = None
        for task in self._workers:
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None and first is None:
                first = error
        return first

    async def _drain_rest(self) -> None:
        """Record the input not yet pulled as ``not_started``, when ``drain`` requires it."""
        drain = self._re_iterable if self._drain is None else self._drain
        if not drain:
            return
        pulled = len(self._values)
        if self._re_iterable and self._size is not None:
            self._tail = max(0, self._size - pulled)
            self._exhausted = True
            return
        if self._pull_interrupted:
            # An async generator that received the cancellation is closed and would read as empty.
            self._logger.warning(
                "%s: the trip cancelled a pull from the async input, which may have closed the input and lost the "
                "item it was producing; the rest of the input is not read and not accounted for",
                self._label,
            )
            return
        count = 0
        try:
            if self._source is not None:
                for _ in self._source:
                    count += 1
            elif self._async_source is not None:
                async for _ in self._async_source:
                    count += 1
        except Exception as exc:
            self._logger.warning(
                "%s: reading the rest of the input after the trip raised %r; %d more items were counted as "
                "not started, and the rest of the input is not accounted for",
                self._label,
                exc,
                count,
            )
        else:
            self._exhausted = True
        self._tail = count

    def _result(self) -> FanOutResult[R]:
        pulled = len(self._values)
        failed = len(self._failed)
        cancelled = len(self._cancelled)
        skipped = len(self._skipped)
        outcomes: _Outcomes[R] = _Outcomes(
            self._values, self._failed, self._cancelled, self._skipped, pulled + self._tail
        )
        return FanOutResult(
            outcomes=outcomes,
            succeeded=pulled - failed - cancelled - skipped,
            failed=failed,
            cancelled=cancelled,
            not_started=skipped + self._tail,
            trip=self._trip,
            input_exhausted=self._exhausted,
            first_failure_index=self._first_failure,
        )

    # ---------------------------------------------------------------- the workers
    # The sync and async workers repeat the same call-and-record block on purpose: it is the per-item hot path,
    # and a shared helper would cost a coroutine frame per item.

    async def _sync_worker(self) -> None:
        source = self._source
        assert source is not None
        call = self._call
        always_awaitable = self._always_awaitable
        values = self._values
        append = values.append
        reporting = self._reporting

        # `while True` with the check inside, not `while not self._stopping`: on CPython 3.11 the latter ends in
        # POP_JUMP_BACKWARD_IF_FALSE, and measured, the first worker of a process then ran its whole loop about
        # 0.1 µs per item slower, as if unspecialized. A loop ending in JUMP_BACKWARD did not.
        while True:
            if self._stopping:
                return
            # Pulling and starting the call happen in one step of the event loop, so no trip can fall between.
            try:
                index, item = next(source)
            except StopIteration:
                self._on_exhausted()
                return
            except Exception as exc:
                self._on_input_error(exc)
                return
            except BaseException as exc:
                self._on_interrupt(exc)
                return
            append(None)

            try:
                if always_awaitable:
                    result = await call(item)  # type: ignore[misc]
                else:
                    result = call(item)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception as exc:
                self._on_failure(index, exc)
            except asyncio.CancelledError as exc:
                if self._on_cancelled(index, exc):
                    raise
            except BaseException as exc:
                self._on_interrupt(exc)
                return
            else:
                values[index] = result
                if reporting:
                    self._on_success(index)

    async def _async_worker(self) -> None:
        call = self._call
        always_awaitable = self._always_awaitable
        values = self._values
        reporting = self._reporting

        while True:
            pulled = await self._pull_async()
            if pulled is None:
                return
            index, item = pulled

            try:
                if always_awaitable:
                    result = await call(item)  # type: ignore[misc]
                else:
                    result = call(item)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception as exc:
                self._on_failure(index, exc)
            except asyncio.CancelledError as exc:
                if self._on_cancelled(index, exc):
                    raise
            except BaseException as exc:
                self._on_interrupt(exc)
                return
            else:
                values[index] = result
                if reporting:
                    self._on_success(index)
            if self._stopping:
                return

    async def _pull_async(self) -> tuple[int, T] | None:
        """Pull the next item from the async input, or return ``None`` when this worker should stop."""
        source = self._async_source
        assert source is not None
        async with self._lock:
            if self._stopping or self._exhausted:
                return None
            try:
                item = await anext(source)
            except StopAsyncIteration:
                self._on_exhausted()
                return None
            except Exception as exc:
                self._on_input_error(exc)
                return None
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # The cancellation may have closed the input and lost the item it was producing.
                    self._pull_interrupted = True
                    raise
                # This worker was not cancelled, so the input itself raised CancelledError.
                self._on_interrupt(exc)
                return None
            except BaseException as exc:
                self._on_interrupt(exc)
                return None
            index = len(self._values)
            self._values.append(None)

        if self._is_stopping():
            # A trip fell while this worker awaited the pull; the item is pulled but never started.
            self._skipped.add(index)
            return None
        return index, item

    # ---------------------------------------------------------------- bookkeeping, off the per-success path

    def _on_success(self, index: int) -> None:
        self._succeeded += 1
        window = self._window
        if window is not None:
            # The same steps as _record_in_window, inlined because this runs for every success.
            self._completed += 1
            if len(window) == self._window_size and window[0]:
                self._window_failures -= 1
            window.append(False)
            # A window without failures cannot reach a failure rate above 0.
            if self._window_failures and self._trip is None and not self._stopping:
                self._check_window(index)
        if self._hook is not None:
            self._report(index, OutcomeStatus.SUCCEEDED, None)

    def _on_failure(self, index: int, exc: Exception) -> None:
        current = asyncio.current_task()
        if self._stopping and current is not None and current.cancelling():
            # The fan-out cancelled this item, and it ended with another exception while it was cleaning up.
            self._cancelled[index] = exc
            if self._hook is not None:
                self._report(index, OutcomeStatus.CANCELLED, exc)
            return

        self._failed[index] = exc
        if self._first_failure is None:
            self._first_failure = index
        self._logger.debug("%s: item %d failed: %r", self._label, index, exc)
        if self._window is not None:
            self._record_in_window(failed=True)
        if self._trip is None and not self._stopping:
            self._check_failure_rules(index)
        if self._hook is not None:
            self._report(index, OutcomeStatus.FAILED, exc)

    def _on_cancelled(self, index: int, exc: asyncio.CancelledError) -> bool:
        """Record a cancelled item, and return whether its worker must re-raise the cancellation."""
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            self._cancelled[index] = None
            if self._hook is not None:
                self._report(index, OutcomeStatus.CANCELLED, None)
            return True

        # This worker was not cancelled, so the item itself raised CancelledError.
        self._cancelled[index] = exc
        self._logger.warning(
            "%s: item %d raised CancelledError although the fan-out was not cancelled; recorded as cancelled",
            self._label,
            index,
        )
        if self._hook is not None:
            self._report(index, OutcomeStatus.CANCELLED, exc)
        return False

    def _on_interrupt(self, exc: BaseException) -> None:
        if self._interrupt is None:
            self._interrupt = exc
            self._logger.debug("%s: stopping on %r", self._label, exc)
        self._stop()

    def _on_input_error(self, exc: Exception) -> None:
        self._input_error = exc
        self._stop()

    def _on_exhausted(self) -> None:
        if self._exhausted:
            return
        self._exhausted = True
        pulled = len(self._values)
        # The exact count replaces a `total` hint that was too small or too large. Only a smaller count can put
        # failures over the ratio at this moment; a larger one must not fall back to the hint afterwards.
        if self._total is not None and pulled != self._total:
            self._total = pulled
            if self._ratio is not None and self._trip is None and not self._stopping:
                self._check_ratio(None)

    def _is_stopping(self) -> bool:
        # A method, so that type checkers do not carry a narrowed `_stopping` across an `await`.
        return self._stopping

    def _stop(self) -> None:
        """Let no worker pull another item, and cancel every worker but the calling one, once.

        A second stop (the caller cancelled during a trip, say) cancels nothing again, because a repeated
        cancellation would cut short the cleanup of items that are already handling the first one. The worker
        that stops the others never awaits afterwards, so it needs no cancellation.
        """
        if self._stopping:
            return
        self._stopping = True
        current = asyncio.current_task()
        for task in self._workers:
            if task is not current and not task.done():
                task.cancel()
        if self._on_stop is not None:
            try:
                self._on_stop()
            except Exception:
                self._logger.exception("%s: on_stop raised; ignoring it", self._label)

    # ---------------------------------------------------------------- trip rules

    def _check_failure_rules(self, index: int) -> None:
        failed = len(self._failed)
        if self._max_failures is not None and failed > self._max_failures:
            self._trip_on(
                TripRule.MAX_FAILURES, f"{_count(failed, 'failure')} exceeded max_failures={self._max_failures}", index
            )
            return
        if self._ratio is not None and self._check_ratio(index):
            return
        if self._window is not None:
            self._check_window(index)

    def _check_ratio(self, index: int | None) -> bool:
        assert self._ratio is not None
        assert self._total is not None
        failed = len(self._failed)
        # Until the input ends, a `total` hint below the number pulled is replaced by that number.
        items = self._total if self._exhausted else max(self._total, len(self._values))
        ratio = self._ratio
        if failed * ratio.denominator <= ratio.numerator * items:
            return False
        allowed = ratio.numerator * items // ratio.denominator
        self._trip_on(
            TripRule.MAX_FAILURE_RATIO,
            f"{_count(failed, 'failure')} exceeded max_failure_ratio={self._policy.max_failure_ratio} of "
            f"{_count(items, 'item')} ({allowed} allowed)",
            index,
        )
        return True

    def _record_in_window(self, *, failed: bool) -> None:
        window = self._window
        assert window is not None
        if len(window) == self._window_size and window[0]:
            self._window_failures -= 1
        window.append(failed)
        if failed:
            self._window_failures += 1
        self._completed += 1

    def _check_window(self, index: int) -> None:
        window = self._window
        assert window is not None
        if self._completed < self._window_min or not window:
            return
        rate = self._window_rate
        if self._window_failures * rate.denominator < rate.numerator * len(window):
            return
        rolling = self._policy.rolling_window
        assert rolling is not None
        self._trip_on(
            TripRule.ROLLING_WINDOW,
            f"{self._window_failures} of the last {len(window)} completed items failed, reaching "
            f"RollingWindow failure_rate={rolling.failure_rate}",
            index,
        )

    def _trip_on(self, rule: TripRule, message: str, index: int | None) -> None:
        self._trip = Trip(rule, message, index, len(self._failed))
        self._logger.warning("%s tripped: %s", self._label, message)
        self._stop()

    # ---------------------------------------------------------------- the progress hook

    def _report(self, index: int, status: OutcomeStatus, error: BaseException | None) -> None:
        hook = self._hook
        assert hook is not None
        event = FanOutProgress(
            index=index,
            status=status,
            error=error,
            started=len(self._values) - len(self._skipped),
            succeeded=self._succeeded,
            failed=len(self._failed),
            cancelled=len(self._cancelled),
            total=self._total,
        )
        try:
            hook(event)
        except Exception:
            self._hook_errors += 1
            if self._hook_errors == 1:
                self._logger.exception(
                    "%s: on_progress raised; ignoring it (later errors of the hook are only counted)", self._label
                )
        except BaseException as exc:
            self._on_interrupt(exc)
