"""Auto batcher and map-reduce: run a task once per batch of items, a bounded number of batches at a time.

:func:`batch_map` cuts the items into batches, calls ``task(batch)`` once per batch with the batch as a ``list``,
and returns one result per item, flattened in input order. The task must return a list (or another sequence)
with one result per item, in the order of the batch. :func:`map_reduce` runs the same batches and folds their
results into one value instead of keeping them.

Batches:

* ``batch_size`` bounds the number of items in a batch. When it is not given, it is chosen from the number of
  items ``n`` and the concurrency ``c`` as ``ceil(n / (4 * c))``, at least 1 and at most 1,000. Every worker then
  gets about four batches, so the others can partly make up for a slow one while task calls stay few. ``n`` is
  ``len(items)``, or the ``total`` hint for an input without ``len()``. When neither is known, the batch size is
  100. See :func:`auto_batch_size`.
* ``max_batch_weight`` and ``weight`` add a second bound: a batch ends before the item that would take the sum
  of ``weight(item)`` over its items past ``max_batch_weight``. An item heavier than the bound on its own is
  a batch of one. ``batch_size`` (given or automatic) still bounds the count.
* Batches are built lazily from any iterable or async iterable: each time a worker is free it builds the next
  batch from the items that follow, so at most ``concurrency`` batches of items (plus one held item under a
  weight bound) are in memory. A batch starts as soon as it is full or the input ends; a full batch never waits
  for the next item. For an async iterable, a partial batch waits for more items, at most ``max_wait`` seconds
  after it received its first item when ``max_wait`` is given.

Scheduling is a sliding window over batches (the fan-out engine): at most ``concurrency`` batches run at once,
and the next batch starts as soon as any batch finishes, so one slow batch does not hold up the others.

Failure isolation: a batch whose task raises, returns a list of the wrong length (:class:`BatchLengthError`) or
returns something that is not a sequence (``TypeError``) has failed, and every item in it is ``failed`` with
that error; the other batches go on. The circuit breaker's rules (``max_failures``, ``max_failure_ratio``,
``rolling_window``) count batches, not items, and stop the run early: no new batch starts, running batches are
cancelled and awaited, and the items of batches that never ran are ``not_started``.

Results: :func:`batch_map` returns the flat list of values when every batch succeeded, and raises
:class:`BatchError` otherwise. With ``return_result=True`` it returns a :class:`BatchResult` instead: one
outcome per item, in input order, with the per-batch outcomes and spans. Every item that was read from the input
is accounted for once, as succeeded, failed, cancelled or not started. After an early stop, the rest of a
collection (a list, a range) is counted as ``not_started``; a one-shot iterator or generator is left where it
stopped, so its next item is the first one not read.

Map-reduce: ``combine(results)`` turns one batch's list of results into one value, inside that batch (a
failure of ``combine`` is a failure of the batch), and ``reduce(accumulator, value)`` folds the batch values into
the final value, starting from ``initial``. The fold runs in input order of the batches, whatever order they
finish in, so the result equals ``functools.reduce(reduce, [combine(b) for b in batches], initial)`` and
``reduce`` need not be associative or commutative. It runs beside the batches, in its own task, so a slow
``reduce`` takes no batch slot. A batch value that finishes ahead of an earlier batch is kept until the fold
reaches it. If any batch does not succeed, the fold is abandoned: a ``reduce`` step in flight is cancelled, the
buffered values are dropped, and :class:`BatchError` is raised. If ``reduce`` raises, the run stops as on a trip
and :class:`ReduceError` is raised from that exception. Item results are not kept, so a map-reduce holds at most
``concurrency`` batches of items and results, plus the buffered batch values and the accumulator.

Cancellation: cancelling the caller cancels and awaits every running batch and the fold (whose ``reduce`` step
in flight is cancelled with the batches, and which starts no new one), then raises ``asyncio.CancelledError``.
A ``KeyboardInterrupt`` or ``SystemExit`` raised by the task, ``combine`` or ``reduce`` stops everything the same
way and propagates.

Flyte: each batch's calls (the task, ``combine``, and the ``reduce`` step that folds it in) are grouped in
Flyte's UI under ``flyte.group("<group name>_<batch index>")``, where the group name defaults to
``<task name>_batch_map`` or ``<task name>_map_reduce``. Outside a Flyte task there are no groups.

Error tree::

    Exception
    ├── FanOutError                  .result: the outcomes recorded
    │   ├── FanOutInputError         the input (or the weight function) raised; __cause__ is its exception
    │   └── BatchError               some items did not succeed; .result is a BatchResult
    └── ReduceError                  reduce raised; __cause__ is its exception, .batch the batch being folded
    ValueError
    └── BatchLengthError             recorded as a batch's error: the task returned the wrong number of results
    UserWarning
    └── BatchWarning                 a legal argument that has no effect, such as max_wait for a sync iterable
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import reprlib
import sys
import warnings
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence, Sized
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Literal, NoReturn, TypeVar, cast, overload

import flyte

from ._batch_input import (
    AsyncBatches,
    Batch,
    BatchSpan,
    Spans,
    SyncBatches,
    batch_source,
    check_weight_bound,
    wait_out,
)
from ._fanout import (
    DEFAULT_CONCURRENCY,
    FanOutError,
    FanOutInputError,
    FanOutProgress,
    FanOutResult,
    OutcomeStatus,
    RollingWindow,
    TripPolicy,
    _Outcomes,
    fan_out,
)
from ._validation import (
    bind_call,
    check_callable,
    check_int,
    check_seconds,
    check_sync_function,
    close_coroutines,
    task_name,
)

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")
C = TypeVar("C")

BATCHES_PER_WORKER = 4
"""How many batches the automatic batch size aims to give each worker.

More batches per worker even out batches of uneven duration better, but each batch is one task call (one Flyte
action). Measured with one batch in ten taking ten times longer, four per worker finish in about 1.5 times the
ideal schedule and fifty in about 1.2 (``benchmarks/bench_batching.py``).
"""

MAX_AUTO_BATCH_SIZE = 1_000
"""The largest automatic batch size. It bounds the items in memory per batch and the size of one task's input."""

UNSIZED_BATCH_SIZE = 100
"""The automatic batch size for an input whose number of items is unknown (no ``len()`` and no ``total``)."""

logger = logging.getLogger("flyte_patterns.batch")


def auto_batch_size(total: int | None, concurrency: int) -> int:
    """Return the batch size :func:`batch_map` chooses when ``batch_size`` is not given.

    For ``total`` items and ``concurrency`` workers: ``ceil(total / (4 * concurrency))``, clamped to
    1..:data:`MAX_AUTO_BATCH_SIZE`, so each worker gets about four batches. For an unknown ``total``:
    :data:`UNSIZED_BATCH_SIZE`.

    Args:
        total: The number of items, or ``None`` when it is unknown.
        concurrency: The number of batches that run at once, at least 1.
    """
    check_int(concurrency, name="concurrency", minimum=1)
    if total is None:
        return UNSIZED_BATCH_SIZE
    check_int(total, name="total", minimum=0)
    return max(1, min(MAX_AUTO_BATCH_SIZE, math.ceil(total / (BATCHES_PER_WORKER * concurrency))))


# ---------------------------------------------------------------- errors and results


class BatchWarning(UserWarning):
    """A legal but suspicious argument of :func:`batch_map` or :func:`map_reduce`, such as one that has no effect."""


class BatchLengthError(ValueError):
    """The task returned a different number of results than its batch had items.

    It is recorded as the error of that batch (and of each of its items), not raised by itself.

    Attributes:
        batch: The batch, with its index and item range.
        expected: The number of items in the batch.
        actual: The number of results the task returned.
    """

    def __init__(self, batch: BatchSpan, actual: int) -> None:
        super().__init__(
            f"{batch.describe()}: the task returned {actual} results for {batch.size} items; "
            f"it must return one result per item, in the order of the batch"
        )
        self.batch = batch
        self.expected = batch.size
        self.actual = actual


@dataclass(frozen=True, eq=False)
class BatchResult(FanOutResult[R]):
    """The result of a batched run: one outcome per item, in input order, and the batches behind them.

    The item fields (``outcomes``, the counts, ``values()``, ``errors()``, ``indices()``) are those of a
    :class:`FanOutResult` over items. An item of a failed batch is ``failed`` with the batch's error, one of a
    cancelled batch is ``cancelled`` with the batch's ``error``, and one of a batch that never ran is
    ``not_started``. Items read from the input but not yet put in a batch when the run stopped are
    ``not_started`` and belong to no batch.

    The rules that stop a run count batches, so ``trip`` describes batches: ``trip.index`` is the index of the
    batch whose completion tripped it and ``trip.failed`` counts failed batches. ``first_failure_index`` is the
    first item of the first batch to fail.

    Attributes:
        batches: One outcome per batch, in batch order. For :func:`batch_map` a succeeded batch's value is its
            list of results; for :func:`map_reduce` it is ``None``, because results are folded, not kept.
        spans: Each batch's index and item range, in batch order.
        batch_size: The bound on items per batch that was used, given or automatic.
    """

    batches: FanOutResult[Any]
    spans: Sequence[BatchSpan]
    batch_size: int

    def batch_of(self, index: int) -> BatchSpan | None:
        """Return the span of the batch that contains item ``index``, or ``None`` if it was in no batch."""
        if isinstance(self.spans, Spans):
            return self.spans.batch_of(index)
        for span in self.spans:
            if span.start <= index < span.stop:
                return span
        return None


class BatchError(FanOutError):
    """Some items did not succeed.

    ``result`` is the :class:`BatchResult` with every item's outcome and the per-batch outcomes, so the values
    of the batches that succeeded are not lost. ``__cause__`` is the error of the first batch to fail, if any.
    """

    result: BatchResult[Any]

    def __init__(self, message: str, *, result: BatchResult[Any]) -> None:
        super().__init__(message, result=result)


class ReduceError(Exception):
    """``reduce`` raised an exception, so :func:`map_reduce` stopped.

    ``__cause__`` is the exception as ``reduce`` raised it (for a Flyte task, as Flyte delivered it).

    Attributes:
        batch: The batch whose value was being folded in.
    """

    def __init__(self, message: str, *, batch: BatchSpan) -> None:
        super().__init__(message)
        self.batch = batch


# ---------------------------------------------------------------- progress


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """The event passed to an ``on_progress`` hook after each batch finishes running.

    Attributes:
        batch: The batch that finished, with its index and item range.
        status: ``succeeded``, ``failed`` or ``cancelled``.
        error: The batch's error when it failed; for a cancelled batch, ``None`` or the exception it ended with.
        batches_finished: Batches that finished running so far, this one included.
        batches_total: The number of batches when it is known in advance, else ``None``.
        items_succeeded: Items in succeeded batches so far.
        items_failed: Items in failed batches so far.
        items_cancelled: Items in cancelled batches so far.
        items_total: The number of items from ``len(items)`` or the ``total`` hint, else ``None``.
    """

    batch: BatchSpan
    status: OutcomeStatus
    error: BaseException | None
    batches_finished: int
    batches_total: int | None
    items_succeeded: int
    items_failed: int
    items_cancelled: int
    items_total: int | None

    @property
    def items_finished(self) -> int:
        """Items in batches that finished running so far."""
        return self.items_succeeded + self.items_failed + self.items_cancelled


BatchProgressHook = Callable[[BatchProgress], object]
"""A hook called with a :class:`BatchProgress` after each batch finishes running."""


def progress_bar_default() -> bool:
    """Return whether a progress bar is shown by default: stderr is a terminal, outside a task on a cluster."""
    stderr = sys.stderr
    try:
        interactive = stderr is not None and stderr.isatty()
    except (AttributeError, ValueError):
        # A replaced or closed stderr.
        interactive = False
    if not interactive:
        return False
    context = flyte.ctx()
    # A task on a cluster runs with mode "remote". Local and hybrid runs have the user's terminal.
    return not (bool(context) and context.mode == "remote")


class _ProgressBar:
    """A rich progress bar over items on stderr.

    It is redrawn by :meth:`keep_drawn`, a coroutine the run keeps as a task, rather than by rich's refresh
    thread, which rich stops without waiting for it: every exit path then leaves nothing running.
    """

    REDRAW_SECONDS = 0.25

    def __init__(self, description: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("items, {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            auto_refresh=False,
        )
        self._task = self._progress.add_task(description, total=total, failed=0)
        self._stopped = False
        self._progress.start()

    def update(self, finished: int, failed: int) -> None:
        self._progress.update(self._task, completed=finished, failed=failed)

    async def keep_drawn(self) -> None:
        while not self._stopped:
            self._progress.refresh()
            await asyncio.sleep(self.REDRAW_SECONDS)

    def stop(self) -> None:
        """Draw the final state and release the terminal, once."""
        if self._stopped:
            return
        self._stopped = True
        self._progress.refresh()
        self._progress.stop()


# ---------------------------------------------------------------- one run over batches, shared by both patterns


class _BatchRun(Generic[T]):
    """The checked arguments of one call, the batch source, and the fan-out over its batches."""

    def __init__(
        self,
        task: object,
        items: Iterable[T] | AsyncIterable[T],
        *,
        pattern: str,
        batch_size: int | None,
        concurrency: int,
        max_batch_weight: float | None,
        weight: Callable[[T], float] | None,
        max_wait: float | timedelta | None,
        total: int | None,
        max_failures: int | None,
        max_failure_ratio: float | None,
        rolling_window: RollingWindow | None,
        on_progress: BatchProgressHook | None,
        progress_bar: bool | None,
        group_name: str | None,
        extra_checks: Callable[[], None] | None = None,
    ) -> None:
        check_callable(task)
        if batch_size is not None:
            check_int(batch_size, name="batch_size", minimum=1, maximum=sys.maxsize)
        check_int(concurrency, name="concurrency", minimum=1)
        max_weight = check_weight_bound(max_batch_weight, weight)
        wait = None if max_wait is None else check_seconds(max_wait, name="max_wait")
        if total is not None:
            check_int(total, name="total", minimum=0)
        given_items: object = items  # typed as an iterable, but a coroutine object is the likely mistake
        if inspect.iscoroutine(given_items):
            raise TypeError(
                f"items must be an iterable or an async iterable, got a coroutine object {given_items!r}; "
                f"await it to get the items, or pass an async generator"
            )
        if not isinstance(items, Iterable | AsyncIterable):
            raise TypeError(f"items must be an iterable or an async iterable, got {items!r} ({type(items).__name__})")
        if wait is not None and not isinstance(items, AsyncIterable):
            # The warning points at the caller of batch_map or map_reduce, two frames up.
            warnings.warn(
                f"max_wait={max_wait!r} has no effect on a sync iterable such as {type(items).__name__}, because "
                f"its next() blocks the event loop until the item is there; remove max_wait, or pass an async "
                f"iterable",
                BatchWarning,
                stacklevel=3,
            )
        length = len(items) if isinstance(items, Sized) else None
        if length is not None and total is not None and total != length:
            raise ValueError(f"total={total!r} disagrees with len(items)={length}; pass total=None")
        policy = TripPolicy(
            max_failures=max_failures, max_failure_ratio=max_failure_ratio, rolling_window=rolling_window
        )
        check_sync_function(on_progress, name="on_progress")
        if progress_bar is not None and not isinstance(progress_bar, bool):
            raise TypeError(
                f"progress_bar must be True, False or None, got {progress_bar!r} ({type(progress_bar).__name__})"
            )
        if group_name is not None:
            if not isinstance(group_name, str):
                raise TypeError(
                    f"group_name must be a string or None, got {group_name!r} ({type(group_name).__name__})"
                )
            if not group_name.strip():
                raise ValueError(f"group_name must not be empty, got {group_name!r}")
        if extra_checks is not None:
            extra_checks()

        self.items_total = length if length is not None else total
        self.size = batch_size if batch_size is not None else auto_batch_size(self.items_total, concurrency)
        # Under a weight bound the number of batches depends on the weights, so it is known only afterwards.
        self.batches_total: int | None = None
        if self.items_total is not None and max_weight is None:
            self.batches_total = math.ceil(self.items_total / self.size)
        if max_failure_ratio is not None and self.batches_total is None:
            if max_weight is not None:
                reason = "batches are bounded by weight, so their number depends on the weights"
                remedy = "use max_failures or rolling_window"
            else:
                reason = f"items is a {type(items).__name__} without len()"
                remedy = "pass total=<number of items>, or use max_failures or rolling_window"
            raise TypeError(
                f"max_failure_ratio needs the number of batches, which is unknown because {reason}; {remedy}"
            )

        self.pattern = pattern
        self.task = task
        self.concurrency = concurrency
        self.policy = policy
        self.on_progress = on_progress
        self.show_bar = progress_bar_default() if progress_bar is None else progress_bar
        self.group_base = f"{task_name(task)}_{pattern}" if group_name is None else group_name
        # Groups exist only inside a Flyte task, so outside one the batcher does not enter them.
        self.grouped = bool(flyte.ctx())
        self.keep_values = True
        self.tail = 0
        self._items_succeeded = 0
        self._items_failed = 0
        self._items_cancelled = 0
        self._bar: _ProgressBar | None = None
        self.source: SyncBatches[T] | AsyncBatches[T] = batch_source(
            items, size=self.size, weight=weight, max_weight=max_weight, max_wait=wait, logger=logger
        )
        logger.debug(
            "%s over %s items: batch_size=%d%s, concurrency=%d",
            self.group_base,
            "an unknown number of" if self.items_total is None else self.items_total,
            self.size,
            "" if batch_size is not None else " (automatic)",
            concurrency,
        )

    def task_caller(self, task: Callable[[list[T]], Any]) -> Callable[[Batch[T]], Awaitable[list[Any]]]:
        """Return a coroutine function that calls ``task`` on one batch and returns its checked list of results.

        The task is bound here, in the caller's Flyte context, as the calls will run in it.
        """
        call = bind_call(task)
        always_awaitable = inspect.iscoroutinefunction(call)

        async def call_task(batch: Batch[T]) -> list[Any]:
            output = call(batch.items)
            if always_awaitable or inspect.isawaitable(output):
                output = await output
            return _checked_results(output, batch)

        return call_task

    def group(self, index: int) -> contextlib.AbstractContextManager[None]:
        """Return the ``flyte.group`` of batch ``index``, or a context that does nothing outside a Flyte task."""
        if not self.grouped:
            return contextlib.nullcontext()
        return flyte.group(f"{self.group_base}_{index}")

    async def run(
        self, unit: Callable[[Batch[T]], Awaitable[Any]], on_stop: Callable[[], object] | None = None
    ) -> FanOutResult[Any]:
        """Fan out ``unit`` over the batches and return the per-batch result.

        Raises what :func:`fan_out` raises, with a :class:`FanOutInputError` converted to carry a result over items.
        """
        hook = self._report if self.on_progress is not None or self.show_bar else None
        drawing: asyncio.Task[None] | None = None
        try:
            if self.show_bar:
                self._bar = _ProgressBar(self.group_base, self.items_total)
                drawing = asyncio.create_task(self._bar.keep_drawn())
            try:
                batches = await fan_out(
                    unit,
                    self.source,
                    concurrency=self.concurrency,
                    policy=self.policy,
                    total=self.batches_total,
                    drain=False,
                    on_progress=hook,
                    on_stop=on_stop,
                    group_name=self.group_base,
                    logger=logger,
                )
            except FanOutInputError as error:
                await self._close_source()
                cause = error.__cause__
                pulled = self.source.dispatched + self.source.loose
                raise FanOutInputError(
                    f"the input of {self.group_base} raised {cause!r} after {pulled} items",
                    result=self.expand(error.result),
                ) from cause
            if batches.trip is not None and not self.source.exhausted:
                await self._count_rest()
            return batches
        finally:
            if drawing is not None:
                drawing.cancel()
                await wait_out(drawing)
            await self._close_source()
            if self._bar is not None:
                self._bar.stop()

    async def _close_source(self) -> None:
        if isinstance(self.source, AsyncBatches):
            await self.source.close()

    async def _count_rest(self) -> None:
        """After a trip, count the rest of a collection as not started. A one-shot iterator is left as it is."""
        source = self.source
        if not source.re_iterable:
            return
        pulled = source.dispatched + source.loose
        if source.length is not None:
            self.tail = max(0, source.length - pulled)
            source.exhausted = True
            return
        if isinstance(source, AsyncBatches) and source.pull_interrupted:
            # The stop cancelled a pull, and an async generator that received the cancellation is closed.
            logger.warning(
                "%s: stopping cancelled a pull from the async input, which may have closed the input and lost the "
                "item it was producing; the rest of the input is not read and not accounted for",
                self.group_base,
            )
            return
        try:
            if isinstance(source, AsyncBatches):
                self.tail = await source.count_rest()
            else:
                self.tail = source.count_rest()
        except Exception as exc:  # noqa: BLE001 - the run is over; whatever the input raises now is only logged
            logger.warning(
                "%s: reading the rest of the input after the trip raised %r; the rest is not accounted for",
                self.group_base,
                exc,
            )

    def _report(self, event: FanOutProgress) -> None:
        span = self.source.span(event.index)
        if event.status is OutcomeStatus.SUCCEEDED:
            self._items_succeeded += span.size
        elif event.status is OutcomeStatus.FAILED:
            self._items_failed += span.size
        else:
            self._items_cancelled += span.size

        if self._bar is not None:
            try:
                self._bar.update(self._items_succeeded + self._items_failed + self._items_cancelled, self._items_failed)
            except Exception:
                logger.exception("%s: the progress bar failed; continuing without it", self.group_base)
                bar, self._bar = self._bar, None
                with contextlib.suppress(Exception):
                    bar.stop()

        if self.on_progress is not None:
            # fan_out logs and ignores an Exception raised here, as for its own hook.
            self.on_progress(
                BatchProgress(
                    batch=span,
                    status=event.status,
                    error=event.error,
                    batches_finished=event.succeeded + event.failed + event.cancelled,
                    batches_total=event.total,
                    items_succeeded=self._items_succeeded,
                    items_failed=self._items_failed,
                    items_cancelled=self._items_cancelled,
                    items_total=self.items_total,
                )
            )

    def expand(self, batches: FanOutResult[Any]) -> BatchResult[Any]:
        """Turn the per-batch result into one over items: each batch's outcome becomes its items' outcome."""
        spans = self.source.spans()
        # Every batch the source returned was pulled by the fan-out, which therefore has an outcome for it.
        assert len(batches.outcomes) == len(spans), (len(batches.outcomes), len(spans))
        values: list[Any] = []
        failed: dict[int, BaseException] = {}
        cancelled: dict[int, BaseException | None] = {}
        skipped: set[int] = set()
        succeeded = 0

        for outcome, span in zip(batches.outcomes, spans, strict=True):
            items = range(span.start, span.stop)
            if outcome.status is OutcomeStatus.SUCCEEDED and self.keep_values:
                values.extend(cast(list[Any], outcome.value))
            else:
                values.extend([None] * span.size)
            if outcome.status is OutcomeStatus.SUCCEEDED:
                succeeded += span.size
            elif outcome.status is OutcomeStatus.FAILED:
                assert outcome.error is not None
                failed.update(dict.fromkeys(items, outcome.error))
            elif outcome.status is OutcomeStatus.CANCELLED:
                cancelled.update(dict.fromkeys(items, outcome.error))
            else:
                skipped.update(items)

        # Items read from the input but in no batch yet: the batch being built when the run stopped.
        loose = self.source.loose
        skipped.update(range(len(values), len(values) + loose))
        values.extend([None] * loose)

        first_failure = None
        if batches.first_failure_index is not None:
            first_failure = spans[batches.first_failure_index].start
        return BatchResult(
            outcomes=_Outcomes(values, failed, cancelled, skipped, len(values) + self.tail),
            succeeded=succeeded,
            failed=len(failed),
            cancelled=len(cancelled),
            not_started=len(skipped) + self.tail,
            trip=batches.trip,
            input_exhausted=self.source.exhausted,
            first_failure_index=first_failure,
            batches=batches,
            spans=spans,
            batch_size=self.size,
        )

    def error(self, result: BatchResult[Any]) -> BatchError:
        """Build the :class:`BatchError` that reports ``result``, chained from the first batch failure."""
        batches = result.batches
        failed = f"{batches.failed} batch" if batches.failed == 1 else f"{batches.failed} batches"
        message = f"{self.group_base}: {failed} failed, {batches.succeeded} succeeded"
        if batches.cancelled:
            message += f", {batches.cancelled} cancelled"
        if batches.trip is not None:
            message += f"; stopped early because {batches.trip.message}"
        if not result.input_exhausted:
            message += "; the rest of the input was not read"
        failures = list(batches.errors().items())
        if failures:
            first_three = "; ".join(f"{result.spans[index].describe()}: {error!r}" for index, error in failures[:3])
            more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
            message += f". Failed: {first_three}{more}"
        message += (
            f" ({result.succeeded} items succeeded, {result.failed} failed, {result.cancelled} cancelled, "
            f"{result.not_started} not started)"
        )
        error = BatchError(message, result=result)
        error.__cause__ = batches.first_error
        return error


def _checked_results(output: object, batch: Batch[Any]) -> list[Any]:
    """Return the task's output for ``batch`` as a list, or raise if it is not one result per item."""
    if type(output) is list:
        results: list[Any] = output
    elif isinstance(output, Sequence) and not isinstance(output, str | bytes | bytearray):
        results = list(output)
    else:
        raise TypeError(
            f"{batch.span().describe()}: the task returned {reprlib.repr(output)} ({type(output).__name__}); "
            f"it must return a list with one result per item"
        )
    if len(results) != batch.size:
        raise BatchLengthError(batch.span(), len(results))
    return results


# ---------------------------------------------------------------- batch_map


@overload
async def batch_map(
    task: Callable[[list[T]], Awaitable[list[R]]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch_weight: float | None = None,
    weight: Callable[[T], float] | None = None,
    max_wait: float | timedelta | None = None,
    total: int | None = None,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    return_result: Literal[False] = False,
    on_progress: BatchProgressHook | None = None,
    progress_bar: bool | None = None,
    group_name: str | None = None,
) -> list[R]: ...


@overload
async def batch_map(
    task: Callable[[list[T]], list[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch_weight: float | None = None,
    weight: Callable[[T], float] | None = None,
    max_wait: float | timedelta | None = None,
    total: int | None = None,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    return_result: Literal[False] = False,
    on_progress: BatchProgressHook | None = None,
    progress_bar: bool | None = None,
    group_name: str | None = None,
) -> list[R]: ...


@overload
async def batch_map(
    task: Callable[[list[T]], Awaitable[list[R]]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch_weight: float | None = None,
    weight: Callable[[T], float] | None = None,
    max_wait: float | timedelta | None = None,
    total: int | None = None,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    return_result: Literal[True],
    on_progress: BatchProgressHook | None = None,
    progress_bar: bool | None = None,
    group_name: str | None = None,
) -> BatchResult[R]: ...


@overload
async def batch_map(
    task: Callable[[list[T]], list[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch_weight: float | None = None,
    weight: Callable[[T], float] | None = None,
    max_wait: float | timedelta | None = None,
    total: int | None = None,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    return_result: Literal[True],
    on_progress: BatchProgressHook | None = None,
    progress_bar: bool | None = None,
    group_name: str | None = None,
) -> BatchResult[R]: ...


async def batch_map(
    task: Callable[[list[Any]], Any],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch_weight: float | None = None,
    weight: Callable[[Any], float] | None = None,
    max_wait: float | timedelta | None = None,
    total: int | None = None,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    return_result: bool = False,
    on_progress: BatchProgressHook | None = None,
    progress_bar: bool | None = None,
    group_name: str | None = None,
) -> list[Any] | BatchResult[Any]:
    """Run ``task(batch)`` once per batch of items and return one result per item, in input order.

    Args:
        task: A Flyte task, an async callable or a plain callable that takes a list of items and returns a list
            with one result per item, in the same order. Inside a Flyte task, each call is one action.
        items: Any iterable or async iterable, read lazily as batches are needed.
        batch_size: The maximum number of items per batch. ``None`` chooses it from the number of items and
            ``concurrency`` (see :func:`auto_batch_size`).
        concurrency: The maximum number of batches running at once, at least 1.
        max_batch_weight: The maximum sum of ``weight(item)`` over a batch; needs ``weight``.
        weight: A plain function that returns an item's weight, a finite number of at least 0.
        max_wait: For an async iterable: the longest a batch that is not full waits for more items after it
            received its first item, in seconds or as a ``timedelta``. ``None`` waits until it is full or the input
            ends. No effect on a sync iterable, whose ``next()`` blocks the event loop anyway (:class:`BatchWarning`).
        total: The number of items, for an input without ``len()``. Used for the automatic batch size, for
            ``max_failure_ratio`` and for progress.
        max_failures: Failed batches tolerated; one more stops the run.
        max_failure_ratio: Stops the run when failed batches exceed this fraction (0 to 1) of all batches. Needs
            the number of batches: ``len(items)`` or ``total``, and no weight bound.
        rolling_window: Stops the run when the failure rate over the last completed batches reaches a threshold.
        return_result: Return a :class:`BatchResult` instead of the values, and do not raise for failures.
        on_progress: Called with a :class:`BatchProgress` after each batch finishes running. An ``Exception``
            it raises is logged and ignored.
        progress_bar: Show a rich progress bar on stderr. ``None`` (the default) shows it when stderr is a
            terminal and the call is not inside a Flyte task on a cluster.
        group_name: The prefix of the batches' ``flyte.group`` names; by default ``<task name>_batch_map``.

    Returns:
        The results of all items in input order; with ``return_result=True``, a :class:`BatchResult`.

    Raises:
        BatchError: Some items did not succeed, and ``return_result`` is false. ``result`` has every outcome.
        FanOutInputError: The input iterable or ``weight`` raised an exception; ``result`` has the outcomes so far.
        TypeError: ``task`` is not callable or is a coroutine object, or ``items`` is not iterable. Also when
            a number has the wrong type (``True`` is not a number here), when ``weight`` and
            ``max_batch_weight`` are not given together, or when ``max_failure_ratio`` is set and the number of
            batches is unknown.
        ValueError: ``batch_size`` or ``concurrency`` is below 1, another number is out of range, or ``total``
            disagrees with ``len(items)``.
        asyncio.CancelledError: The caller was cancelled; every running batch was cancelled and awaited first.
        KeyboardInterrupt: A batch raised it (likewise ``SystemExit``); everything was stopped first.
    """

    # A coroutine object passed where a callable or the items belong is closed before any check can raise.
    close_coroutines(task, items, weight, on_progress)

    def check_flag() -> None:
        if not isinstance(return_result, bool):
            raise TypeError(
                f"return_result must be True or False, got {return_result!r} ({type(return_result).__name__})"
            )

    run: _BatchRun[Any] = _BatchRun(
        task,
        items,
        pattern="batch_map",
        batch_size=batch_size,
        concurrency=concurrency,
        max_batch_weight=max_batch_weight,
        weight=weight,
        max_wait=max_wait,
        total=total,
        max_failures=max_failures,
        max_failure_ratio=max_failure_ratio,
        rolling_window=rolling_window,
        on_progress=on_progress,
        progress_bar=progress_bar,
        group_name=group_name,
        extra_checks=check_flag,
    )
    call_task = run.task_caller(task)

    async def run_batch_in_group(batch: Batch[Any]) -> list[Any]:
        with run.group(batch.index):
            return await call_task(batch)

    batches = await run.run(run_batch_in_group if run.grouped else call_task)

    complete = batches.succeeded == batches.total and run.source.loose == 0 and run.source.exhausted
    if complete and not return_result:
        values: list[Any] = []
        for results in batches.values():
            values.extend(cast(list[Any], results))
        return values
    result = run.expand(batches)
    if return_result:
        return result
    raise run.error(result)


# ---------------------------------------------------------------- map_reduce


class _Fold(Generic[A]):
    """The fold of batch values in batch order, run as its own task beside the fan-out.

    Batches deposit their values as they finish. The fold takes them in batch order and keeps the ones that
    arrive early until their turn. A failed batch abandons the fold, which then drops what it buffered.
    """

    def __init__(self, reduce: Callable[..., Any], initial: A, run: _BatchRun[Any], caller: asyncio.Task[Any]) -> None:
        self._reduce = bind_call(reduce)
        self.value = initial
        self.next = 0
        self._run = run
        self._caller = caller
        self._ready: dict[int, Any] = {}
        self._wakeup = asyncio.Event()
        self._abandoned = False
        self._expected: int | None = None
        self.error: BaseException | None = None
        self.error_batch: int | None = None
        # While the fan-out runs, a failure of reduce cancels the caller to stop it, and records that it did.
        self.fanning_out = False
        self.cancelled_caller = False
        # Cancel requests the caller already had when the call started belong to someone else.
        self._caller_cancels = caller.cancelling()
        # The fold's task while it awaits a reduce step, which abandon() cancels.
        self._reducing: asyncio.Task[Any] | None = None

    def deposit(self, index: int, value: Any) -> None:
        if self._abandoned:
            return
        self._ready[index] = value
        if index == self.next:
            self._wakeup.set()

    def abandon(self) -> None:
        self._abandoned = True
        self._ready.clear()
        self._wakeup.set()
        if self._reducing is not None and self._reducing is not asyncio.current_task():
            # The value of the step in flight would be dropped, so it stops now, with the batches.
            self._reducing.cancel()

    def finish(self, batches: int) -> None:
        """Tell the fold that all ``batches`` values have been deposited."""
        self._expected = batches
        self._wakeup.set()

    async def run(self) -> None:
        """Fold values in batch order until all are folded or the fold is abandoned, and record a failure of reduce."""
        while True:
            while not self._abandoned and self.next in self._ready:
                if self._caller.cancelling() > self._caller_cancels:
                    # The caller was cancelled, and the batches are being cancelled: start no new step.
                    self.abandon()
                    return
                value = self._ready.pop(self.next)
                try:
                    with self._run.group(self.next):
                        folded = self._reduce(self.value, value)
                        if inspect.isawaitable(folded):
                            self._reducing = asyncio.current_task()
                            try:
                                folded = await folded
                            finally:
                                self._reducing = None
                except BaseException as exc:
                    current = asyncio.current_task()
                    if isinstance(exc, asyncio.CancelledError) and current is not None and current.cancelling():
                        raise
                    self._fail(exc)
                    return
                self.value = folded
                self.next += 1
            if self._abandoned or (self._expected is not None and self.next >= self._expected):
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self.error_batch = self.next
        self._abandoned = True
        self._ready.clear()
        logger.debug("%s: reduce raised %r while folding batch %d", self._run.group_base, exc, self.next)
        if self.fanning_out and not self.cancelled_caller:
            self.cancelled_caller = True
            self._caller.cancel()

    def raise_error(self) -> NoReturn:
        """Raise the failure of reduce: an ``Exception`` as :class:`ReduceError`, anything else as it is."""
        error = self.error
        assert error is not None
        assert self.error_batch is not None
        if not isinstance(error, Exception):
            raise error
        span = self._run.source.span(self.error_batch)
        raise ReduceError(f"reduce raised {error!r} while folding {span.describe()}", batch=span) from error


@overload
async def map_reduce(
    task: Callable[[list[T]], Awaitable[list[R]]] | Callable[[list[T]], list[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    reduce: Callable[[A, list[R]], Awaitable[A]] | Callable[[A, list[R]], A],
    initial: A,
    combine: None = None,
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch_weight: float | None = None,
    weight: Callable[[T], float] | None = None,
    max_wait: float | timedelta | None = None,
    total: int | None = None,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    on_progress: BatchProgressHook | None = None,
    progress_bar: bool | None = None,
    group_name: str | None = None,
) -> A: ...


@overload
async def map_reduce(
    task: Callable[[list[T]], Awaitable[list[R]]] | Callable[[list[T]], list[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    reduce: Callable[[A, C], Awaitable[A]] | Callable[[A, C], A],
    initial: A,
    # Typed over list[Any], not list[R]: with R in this position, mypy cannot infer R when combine is an
    # overloaded function such as the builtin sum.
    combine: Callable[[list[Any]], Awaitable[C]] | Callable[[list[Any]], C],
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch_weight: float | None = None,
    weight: Callable[[T], float] | None = None,
    max_wait: float | timedelta | None = None,
    total: int | None = None,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    on_progress: BatchProgressHook | None = None,
    progress_bar: bool | None = None,
    group_name: str | None = None,
) -> A: ...


async def map_reduce(
    task: Callable[[list[Any]], Any],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    reduce: Callable[[Any, Any], Any],
    initial: Any,
    combine: Callable[[list[Any]], Any] | None = None,
    batch_size: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch_weight: float | None = None,
    weight: Callable[[Any], float] | None = None,
    max_wait: float | timedelta | None = None,
    total: int | None = None,
    max_failures: int | None = None,
    max_failure_ratio: float | None = None,
    rolling_window: RollingWindow | None = None,
    on_progress: BatchProgressHook | None = None,
    progress_bar: bool | None = None,
    group_name: str | None = None,
) -> Any:
    """Run ``task(batch)`` once per batch, combine each batch's results, and fold them in batch order.

    The result is ``reduce(... reduce(reduce(initial, v0), v1) ..., vk)`` where ``vi`` is ``combine(results of
    batch i)``, or the list of results itself when ``combine`` is ``None``. Empty input returns ``initial``
    without calling anything. The batching, scheduling and stopping rules are those of :func:`batch_map`.

    Args:
        task: As for :func:`batch_map`.
        items: As for :func:`batch_map`.
        reduce: Folds one batch value into the accumulator: ``reduce(accumulator, value)`` returns the new
            accumulator. A Flyte task or a plain function, sync or async. Called in batch order, one at a time.
        initial: The accumulator before the first batch, and the result for empty input.
        combine: Turns one batch's list of results into its value; a Flyte task or a plain function, sync or
            async. It runs as part of the batch, so its failure is the batch's failure. ``None``: the value is
            the list of results.
        batch_size: As for :func:`batch_map`.
        concurrency: As for :func:`batch_map`.
        max_batch_weight: As for :func:`batch_map`.
        weight: As for :func:`batch_map`.
        max_wait: As for :func:`batch_map`.
        total: As for :func:`batch_map`.
        max_failures: As for :func:`batch_map`.
        max_failure_ratio: As for :func:`batch_map`.
        rolling_window: As for :func:`batch_map`.
        on_progress: As for :func:`batch_map`.
        progress_bar: As for :func:`batch_map`.
        group_name: As for :func:`batch_map`; by default ``<task name>_map_reduce``.

    Returns:
        The folded value.

    Raises:
        BatchError: Some batch did not succeed. ``result`` has every item's status and error; item values are
            not kept by a map-reduce, so they are all ``None``.
        ReduceError: ``reduce`` raised an exception; running batches were cancelled and awaited first.
        FanOutInputError: As for :func:`batch_map`.
        TypeError: As for :func:`batch_map`, or ``reduce`` or ``combine`` is not callable.
        ValueError: As for :func:`batch_map`.
        asyncio.CancelledError: The caller was cancelled; every running batch and the fold were cancelled and
            awaited first.
    """

    close_coroutines(task, items, weight, on_progress, reduce, combine)

    def check_functions() -> None:
        check_callable(reduce, name="reduce")
        if combine is not None:
            check_callable(combine, name="combine")

    run: _BatchRun[Any] = _BatchRun(
        task,
        items,
        pattern="map_reduce",
        batch_size=batch_size,
        concurrency=concurrency,
        max_batch_weight=max_batch_weight,
        weight=weight,
        max_wait=max_wait,
        total=total,
        max_failures=max_failures,
        max_failure_ratio=max_failure_ratio,
        rolling_window=rolling_window,
        on_progress=on_progress,
        progress_bar=progress_bar,
        group_name=group_name,
        extra_checks=check_functions,
    )
    run.keep_values = False
    call_task = run.task_caller(task)
    combine_call = None if combine is None else bind_call(combine)
    caller = asyncio.current_task()
    assert caller is not None
    fold = _Fold(reduce, initial, run, caller)

    async def run_batch(batch: Batch[Any]) -> None:
        try:
            with run.group(batch.index):
                value: Any = await call_task(batch)
                if combine_call is not None:
                    value = combine_call(value)
                    if inspect.isawaitable(value):
                        value = await value
        except BaseException:
            # The fold can no longer reach the end, so it stops and drops what it buffered.
            fold.abandon()
            raise
        fold.deposit(batch.index, value)

    folder = asyncio.create_task(fold.run())
    try:
        fold.fanning_out = True
        try:
            # Stopping early abandons the fold at once, which cancels a reduce step in flight with the batches.
            batches = await run.run(run_batch, on_stop=fold.abandon)
        except asyncio.CancelledError:
            # A failure of reduce cancelled this task to stop the fan-out. Any other cancellation is the caller's.
            if not (fold.cancelled_caller and caller.uncancel() == 0):
                raise
            fold.raise_error()
        except BaseException:
            if fold.cancelled_caller:
                caller.uncancel()
            raise
        finally:
            fold.fanning_out = False

        if fold.error is not None:
            fold.raise_error()
        complete = batches.succeeded == batches.total and run.source.loose == 0 and run.source.exhausted
        if not complete:
            fold.abandon()
            raise run.error(run.expand(batches))

        fold.finish(batches.total)
        await folder
        if fold.error is not None:
            fold.raise_error()
        return fold.value
    finally:
        if not folder.done():
            folder.cancel()
        await wait_out(folder)
        if not folder.cancelled() and folder.exception() is not None:
            # The fold records the failures of reduce itself, so this is a bug in the fold.
            logger.error("%s: the fold failed", run.group_base, exc_info=folder.exception())
