"""Lazy batch building: cut an iterable or async iterable into batches as a fan-out pulls them.

A batch source is the input of :func:`flyte_patterns._fanout.fan_out`. Each pull builds one batch from the
items that follow the previous batch, so the items in memory are those of the batches being built or run, and
nothing is read ahead of a free worker. A batch is full, and is returned without waiting for another item, when
it has ``size`` items or, with a weight bound, when its weight reaches ``max_weight``. With a weight bound, a
batch also ends when the next item would push it past ``max_weight``. That item is held back and starts the
next batch. An item heavier than ``max_weight`` on its own becomes a batch of one.

For an async iterable, a batch that is not full waits for its next item. ``max_wait`` bounds that wait: a batch
starts at most ``max_wait`` seconds after it received its first item, full or not. The pull that was in flight when
the time ran out is kept and gives the next batch its first item.

The source records where every batch starts, and counts the items it pulled but did not put in a batch (a batch
being built when the fan-out stopped, or a held item), so the caller can account for every item it pulled.
"""

from __future__ import annotations

import asyncio
import logging
import math
from array import array
from bisect import bisect_right
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

_END: Any = object()
"""Returned by a pull when the input has ended."""

_TIMED_OUT: Any = object()
"""Returned by a pull when ``max_wait`` ran out before the next item arrived."""


@dataclass(frozen=True, slots=True)
class BatchSpan:
    """The position of one batch in the input: the items ``start`` (inclusive) to ``stop`` (exclusive).

    Attributes:
        index: The batch's position among the batches, from 0.
        start: The input position of its first item.
        stop: The input position just after its last item.
    """

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        """The number of items in the batch."""
        return self.stop - self.start

    def describe(self) -> str:
        """Name the batch and its items for messages, as in ``"batch 3 (items 30 to 39)"``."""
        if self.size == 1:
            return f"batch {self.index} (item {self.start})"
        return f"batch {self.index} (items {self.start} to {self.stop - 1})"


class Batch(Generic[T]):
    """One batch as the fan-out receives it: its position and its items.

    ``size`` is taken when the batch is built, because the task receives ``items`` itself and may change it.
    """

    __slots__ = ("index", "items", "size", "start")

    def __init__(self, index: int, start: int, items: list[T]) -> None:
        self.index = index
        self.start = start
        self.items = items
        self.size = len(items)

    def span(self) -> BatchSpan:
        return BatchSpan(self.index, self.start, self.start + self.size)


class Spans(Sequence[BatchSpan]):
    """The spans of the batches built so far, in order, made on access from the batches' start positions."""

    __slots__ = ("_starts", "_stop")

    def __init__(self, starts: array[int], stop: int) -> None:
        self._starts = starts
        self._stop = stop

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> BatchSpan: ...

    @overload
    def __getitem__(self, index: slice) -> list[BatchSpan]: ...

    def __getitem__(self, index: int | slice) -> BatchSpan | list[BatchSpan]:
        count = len(self._starts)
        if isinstance(index, slice):
            return [self._span(i) for i in range(*index.indices(count))]
        position = index + count if index < 0 else index
        if not 0 <= position < count:
            raise IndexError(f"batch index {index} out of range for {count} batches")
        return self._span(position)

    def __repr__(self) -> str:
        return f"<{len(self._starts)} batch spans>"

    def _span(self, index: int) -> BatchSpan:
        starts = self._starts
        stop = starts[index + 1] if index + 1 < len(starts) else self._stop
        return BatchSpan(index, starts[index], stop)

    def batch_of(self, item_index: int) -> BatchSpan | None:
        """Return the span of the batch that contains the item at ``item_index``, or ``None`` if none does."""
        if item_index < 0 or item_index >= self._stop:
            return None
        return self._span(bisect_right(self._starts, item_index) - 1)


def check_weight_bound(max_batch_weight: object, weight: object) -> float | None:
    """Check ``max_batch_weight`` and ``weight`` together, and return the bound as a float (``None`` if unset)."""
    if (max_batch_weight is None) != (weight is None):
        given, missing = ("max_batch_weight", "weight") if weight is None else ("weight", "max_batch_weight")
        raise TypeError(
            f"{given} needs {missing}: pass both weight=<function of an item> and max_batch_weight=<number>, or neither"
        )
    if max_batch_weight is None:
        return None
    if isinstance(max_batch_weight, bool) or not isinstance(max_batch_weight, int | float):
        raise TypeError(
            f"max_batch_weight must be a positive number, got {max_batch_weight!r} ({type(max_batch_weight).__name__})"
        )
    bound = float(max_batch_weight)
    if not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"max_batch_weight must be a positive, finite number, got {max_batch_weight!r}")
    if not callable(weight):
        raise TypeError(f"weight must be a function of one item that returns a number, got {weight!r}")
    return bound


class BatchSource(Generic[T]):
    """The state the sync and async sources share: the bounds, the record of batches, and the loose items."""

    def __init__(
        self,
        items: Iterable[T] | AsyncIterable[T],
        *,
        size: int,
        weight: Callable[[T], float] | None,
        max_weight: float | None,
        re_iterable: bool,
    ) -> None:
        self.size = size
        self._weight = weight
        self._max_weight = max_weight
        self.length: int | None = len(items) if isinstance(items, Sized) else None
        self.re_iterable = re_iterable
        self.exhausted = False
        # Start positions of the batches, as machine integers: a million batches of one take 8 MB, not 36.
        self._starts: array[int] = array("q")
        self.dispatched = 0
        # Items pulled from the input and not yet in a returned batch: the batch being built, then a held item.
        self._building: list[T] = []
        self._building_weight = 0.0
        self._held: tuple[T, float] | None = None

    @property
    def batches(self) -> int:
        """The number of batches returned so far."""
        return len(self._starts)

    @property
    def loose(self) -> int:
        """The number of items pulled from the input that are in no returned batch."""
        return len(self._building) + (0 if self._held is None else 1)

    def spans(self) -> Spans:
        return Spans(self._starts, self.dispatched)

    def span(self, index: int) -> BatchSpan:
        return self.spans()[index]

    def _emit(self) -> Batch[T]:
        items = self._building
        self._building = []
        self._building_weight = 0.0
        batch = Batch(len(self._starts), self.dispatched, items)
        self._starts.append(self.dispatched)
        self.dispatched += len(items)
        return batch

    def _weigh(self, item: T) -> float:
        """Return the item's weight, checked: a finite number of at least 0."""
        assert self._weight is not None
        value = self._weight(item)
        position = self.dispatched + len(self._building)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"weight returned {value!r} ({type(value).__name__}) for item {position}; it must return a number"
            )
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"weight returned {value!r} for item {position}; it must return a finite number >= 0")
        return float(value)

    def _is_full(self) -> bool:
        if len(self._building) >= self.size:
            return True
        return self._max_weight is not None and self._building_weight >= self._max_weight

    def _take_held(self) -> None:
        """Start the batch with the item held back from the previous one, if there is one."""
        if self._held is not None:
            item, weight = self._held
            self._held = None
            self._building.append(item)
            self._building_weight = weight

    def _add_weighed(self, item: T) -> bool:
        """Add an item under the weight bound; return ``False`` if it does not fit and was held for the next batch.

        While the weight function runs, the item is held, so it is counted as pulled even if the function raises.
        """
        assert self._max_weight is not None
        self._held = (item, 0.0)
        weight = self._weigh(item)
        if self._building and self._building_weight + weight > self._max_weight:
            self._held = (item, weight)
            return False
        self._held = None
        self._building.append(item)
        self._building_weight += weight
        return True


class SyncBatches(BatchSource[T], Iterator[Batch[T]]):
    """Batches from an iterable, built in one step each time the fan-out pulls."""

    def __init__(
        self,
        items: Iterable[T],
        *,
        size: int,
        weight: Callable[[T], float] | None,
        max_weight: float | None,
    ) -> None:
        self._source: Iterator[T] = iter(items)
        super().__init__(items, size=size, weight=weight, max_weight=max_weight, re_iterable=self._source is not items)

    def __iter__(self) -> SyncBatches[T]:
        return self

    def __next__(self) -> Batch[T]:
        if self.exhausted:
            raise StopIteration
        if self._weight is not None:
            self._fill_weighed()
            if not self._building:
                raise StopIteration
            return self._emit()

        # The common case, with _emit inlined: this runs once per batch, and a batch may be a single item.
        # `extend` appends each item as it is pulled (CPython), so if the input raises midway, the items pulled
        # before are still in the list and are counted as pulled.
        items = self._building
        items.extend(islice(self._source, self.size))
        count = len(items)
        if count < self.size:
            self.exhausted = True
            if not count:
                raise StopIteration
        self._building = []
        start = self.dispatched
        batch = Batch(len(self._starts), start, items)
        self._starts.append(start)
        self.dispatched = start + count
        return batch

    def _fill_weighed(self) -> None:
        self._take_held()
        while not self._is_full():
            try:
                item = next(self._source)
            except StopIteration:
                self.exhausted = True
                return
            if not self._add_weighed(item):
                return

    def count_rest(self) -> int:
        """Read the rest of the input and return how many items it had."""
        count = 0
        for _ in self._source:
            count += 1
        self.exhausted = True
        return count


class AsyncBatches(BatchSource[T], AsyncIterator[Batch[T]]):
    """Batches from an async iterable. A full batch is returned at once; ``max_wait`` bounds a partial one's wait."""

    def __init__(
        self,
        items: AsyncIterable[T],
        *,
        size: int,
        weight: Callable[[T], float] | None,
        max_weight: float | None,
        max_wait: float | None,
        logger: logging.Logger,
    ) -> None:
        self._source: AsyncIterator[T] = aiter(items)
        super().__init__(items, size=size, weight=weight, max_weight=max_weight, re_iterable=self._source is not items)
        self._max_wait = max_wait
        self._logger = logger
        # With max_wait, the pull of the next item runs as a task, so the wait for it can end without cancelling
        # it: cancelling an async generator's step would close the generator.
        self._pull_task: asyncio.Task[Any] | None = None
        self._first_arrival = 0.0
        # Set when a cancellation reached the input inside a pull, which closes an async generator.
        self.pull_interrupted = False

    def __aiter__(self) -> AsyncBatches[T]:
        return self

    async def __anext__(self) -> Batch[T]:
        if self.exhausted and not self._building and self._held is None:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        if self._held is not None:
            self._take_held()
            self._first_arrival = loop.time()

        while not self._is_full() and not self.exhausted:
            deadline = None
            if self._max_wait is not None and self._building:
                deadline = self._first_arrival + self._max_wait
            item = await self._pull(deadline)
            if item is _END:
                self.exhausted = True
                break
            if item is _TIMED_OUT:
                break
            if not self._building:
                self._first_arrival = loop.time()
            if self._weight is None:
                self._building.append(item)
            elif not self._add_weighed(item):
                break

        if not self._building:
            raise StopAsyncIteration
        return self._emit()

    async def _pull(self, deadline: float | None) -> Any:
        """Return the next item, ``_END`` when the input ended, or ``_TIMED_OUT`` when ``deadline`` passed first."""
        if self._max_wait is None:
            try:
                return await anext(self._source)
            except StopAsyncIteration:
                return _END
            except asyncio.CancelledError:
                self.pull_interrupted = True
                raise

        if self._pull_task is None:
            self._pull_task = asyncio.ensure_future(self._pull_one())
        if deadline is None:
            await asyncio.wait((self._pull_task,))
        else:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining > 0:
                await asyncio.wait((self._pull_task,), timeout=remaining)
        if not self._pull_task.done():
            return _TIMED_OUT
        task, self._pull_task = self._pull_task, None
        return task.result()

    async def _pull_one(self) -> Any:
        try:
            return await anext(self._source)
        except StopAsyncIteration:
            return _END

    async def close(self) -> None:
        """Cancel and await a pull still in flight; an item it already returned is counted as loose."""
        task, self._pull_task = self._pull_task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            await wait_out(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._logger.debug("a pull of the input ended with %r after the batches had stopped", error)
            return
        item = task.result()
        if item is _END:
            self.exhausted = True
        else:
            self._building.append(item)

    async def count_rest(self) -> int:
        """Read the rest of the input and return how many items it had, including one pulled in flight."""
        count = 0
        if self._pull_task is not None:
            task, self._pull_task = self._pull_task, None
            if await task is _END:
                self.exhausted = True
                return 0
            count += 1
        async for _ in self._source:
            count += 1
        self.exhausted = True
        return count


async def wait_out(task: asyncio.Task[Any]) -> None:
    """Wait until ``task`` is done, even if the caller is cancelled meanwhile, then re-raise that cancellation."""
    cancellation: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as exc:
            cancellation = exc
    if cancellation is not None:
        raise cancellation


def batch_source(
    items: Iterable[T] | AsyncIterable[T],
    *,
    size: int,
    weight: Callable[[T], float] | None,
    max_weight: float | None,
    max_wait: float | None,
    logger: logging.Logger,
) -> SyncBatches[T] | AsyncBatches[T]:
    """Return the batch source for ``items``; an object that is both async and sync iterable is read async."""
    if isinstance(items, AsyncIterable):
        return AsyncBatches(items, size=size, weight=weight, max_weight=max_weight, max_wait=max_wait, logger=logger)
    return SyncBatches(items, size=size, weight=weight, max_weight=max_weight)
