"""Test doubles and checks shared by the fan-out and circuit breaker tests."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Probe:
    """A record of what a fake task did: which items started, completed, failed or were cancelled, and when.

    ``log`` interleaves starts and ends in the order they happened, for checks such as "nothing started after
    the trip". ``max_running`` is the largest number of items that were running at once.
    """

    started: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    log: list[tuple[str, int]] = field(default_factory=list)
    running: int = 0
    max_running: int = 0

    async def run(self, index: int, body: Callable[[], Awaitable[T]]) -> T:
        """Run ``body`` as item ``index``, recording its start and how it ended."""
        self.started.append(index)
        self.log.append(("start", index))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            result = await body()
        except asyncio.CancelledError:
            self.cancelled.append(index)
            self.log.append(("cancelled", index))
            raise
        except Exception:
            self.failed.append(index)
            self.log.append(("failed", index))
            raise
        finally:
            self.running -= 1
        self.completed.append(index)
        self.log.append(("succeeded", index))
        return result


class CountingIterator(Iterator[T]):
    """A one-shot iterator that counts how many items were pulled from it."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items
        self.pulled = 0

    def __iter__(self) -> CountingIterator[T]:
        return self

    def __next__(self) -> T:
        item = next(self._items)
        self.pulled += 1
        return item


async def async_items(items: list[T], *, pulled: list[T] | None = None) -> AsyncIterator[T]:
    """Yield ``items`` from an async generator, suspending before each one, and append each to ``pulled``."""
    for item in items:
        await asyncio.sleep(0)
        if pulled is not None:
            pulled.append(item)
        yield item


def new_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Return the tasks that exist now but not in ``before``, other than the current one."""
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task not in before and task is not current}


class LoopErrors:
    """An event-loop exception handler that collects reports such as "Task exception was never retrieved"."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.contexts.append(context)

    def messages(self) -> list[str]:
        """Collect garbage, so abandoned tasks report themselves, and return every message reported so far."""
        gc.collect()
        return [str(context.get("message")) for context in self.contexts]
