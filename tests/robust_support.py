"""Helpers of the robustness tests: settle the event loop, and find what a scenario left behind.

Four things count as left behind. A task that is still pending, a report to the loop's exception handler (such
as "Task exception was never retrieved"), a child process of the test process (running or zombie), and a memory
watcher thread of the local memory enforcement that is still alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import psutil

from .fanout_support import LoopErrors, new_tasks

SourceKind = Literal["list", "generator", "async_generator", "iterable", "async_iterable"]

# The scheduler's choice that lets an async input produce its next item (or find that it has none).
PULL = -1

# settle() gives up after this many turns of the loop. One step of a scenario needs a handful.
MAX_SETTLE_TURNS = 10_000

# The name of the thread that watches a forked child of the local memory enforcement.
WATCHER_THREAD_NAME = "flyte-patterns-memory-watcher"


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Hide every object that exists now from the garbage collector until the block ends.

    Property examples end with gc.collect(), so that a task whose exception was never retrieved reports itself.
    Over everything pytest, Flyte and hypothesis keep alive, a full collection takes tens of milliseconds, and the
    examples run hundreds of times. Garbage is collected before the freeze, so none is held back: a heap full of
    freed memory would let a forked child of a later test grow without its resident memory growing.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def settle() -> None:
    """Let every other task run until none of them can make progress.

    The loop's ready queue is empty when this task resumes only if no other callback is runnable. The queue is
    a CPython implementation detail, so without it the function falls back to a generous number of turns.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    turns = MAX_SETTLE_TURNS if ready is not None else 200
    for _ in range(turns):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            return
    assert ready is None, "the event loop never settled"


def child_pids() -> set[int]:
    """Return the processes below the test process, zombies included."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


def live_watcher_threads(wait: float = 2.0) -> list[threading.Thread]:
    """Return the watcher threads still alive after up to ``wait`` seconds.

    A watcher thread sets its event for the awaiting coroutine just before it ends, so it may outlive the call by
    a moment.
    """
    deadline = time.monotonic() + wait
    while True:
        alive = [thread for thread in threading.enumerate() if thread.name == WATCHER_THREAD_NAME]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.005)


@dataclass
class Leftovers:
    """What a scenario left behind. Every field is empty when it cleaned up after itself."""

    tasks: list[str] = field(default_factory=list)
    loop_errors: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)


class LeakCheck:
    """Record what exists when a scenario starts, and report what it added once it ends.

    Create it inside the event loop the scenario runs in. It installs its own exception handler on that loop
    until :meth:`leftovers` is called.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._previous_handler = self._loop.get_exception_handler()
        self._errors = LoopErrors()
        self._loop.set_exception_handler(self._errors)
        self._tasks = asyncio.all_tasks()
        self._children = child_pids()

    def leftovers(self, *, collect: bool = True) -> Leftovers:
        """Return what the scenario added and did not clean up, and restore the loop's exception handler.

        ``collect`` runs the garbage collector first, so that a task whose exception was never retrieved reports
        itself.
        """
        found = Leftovers(
            tasks=sorted(repr(task) for task in new_tasks(self._tasks)),
            children=sorted(child_pids() - self._children),
            threads=[thread.name for thread in live_watcher_threads()],
        )
        if collect:
            gc.collect()
        found.loop_errors = [str(context.get("message")) for context in self._errors.contexts]
        self._loop.set_exception_handler(self._previous_handler)
        return found


class InputBrokenError(Exception):
    """The error a :class:`GatedInput` raises at ``fail_at``, as a generator that hits a bad record would."""


@dataclass
class GatedInput:
    """The numbers ``0 .. count - 1`` as an input of one kind, logging each pull, with async pulls gated.

    Log entries: ``("pull", i)`` when the input yields item ``i``, ``("end", -1)`` when it has no more, and
    ``("pull_cancelled", -1)`` when a pull was cancelled inside an async input. At ``fail_at`` (never for a
    list) the input raises :attr:`error` instead of yielding the item, and logs ``("input_error", i)``.

    An async input waits before each item, and before finding its end, until a scheduler calls
    :meth:`release_pull`, as a slow producer would.
    """

    count: int
    kind: SourceKind
    log: list[tuple[str, int]]
    fail_at: int | None = None
    error: Exception = field(default_factory=lambda: InputBrokenError("the input broke"))
    pull_gate: asyncio.Future[None] | None = None
    free_pulls: bool = False

    def generator(self) -> Iterator[int]:
        for index in range(self.count):
            self._fail_if_due(index)
            self.log.append(("pull", index))
            yield index
        self.log.append(("end", -1))

    async def async_generator(self) -> AsyncIterator[int]:
        for index in range(self.count):
            await self._wait_for_pull()
            self._fail_if_due(index)
            self.log.append(("pull", index))
            yield index
        await self._wait_for_pull()
        self.log.append(("end", -1))

    def _fail_if_due(self, index: int) -> None:
        if index == self.fail_at:
            self.log.append(("input_error", index))
            raise self.error

    async def _wait_for_pull(self) -> None:
        if self.free_pulls:
            return
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pull_gate = gate
        try:
            await gate
        except asyncio.CancelledError:
            self.log.append(("pull_cancelled", -1))
            raise
        finally:
            self.pull_gate = None

    def pull_blocked(self) -> bool:
        return self.pull_gate is not None and not self.pull_gate.done()

    def release_pull(self) -> None:
        assert self.pull_gate is not None
        self.pull_gate.set_result(None)

    def make(self) -> Any:
        """Return the input: a list, a one-shot generator, or a re-iterable without ``len()``, sync or async."""
        source = self

        class Reiterable:
            """An iterable without len() whose iter() starts a new generator each time."""

            def __iter__(self) -> Iterator[int]:
                return source.generator()

        class AsyncReiterable:
            """An async iterable without len() whose aiter() starts a new async generator each time."""

            def __aiter__(self) -> AsyncIterator[int]:
                return source.async_generator()

        if self.kind == "list":
            return list(range(self.count))
        if self.kind == "generator":
            return self.generator()
        if self.kind == "async_generator":
            return self.async_generator()
        if self.kind == "iterable":
            return Reiterable()
        return AsyncReiterable()

    async def rest(self, made: Any) -> list[int] | None:
        """Return what is left in a one-shot input, read without gates and up to an error; ``None`` for others."""
        self.free_pulls = True
        rest: list[int] = []
        if self.kind not in ("generator", "async_generator"):
            return None
        with contextlib.suppress(InputBrokenError):
            if self.kind == "generator":
                for item in made:
                    rest.append(item)
            else:
                async for item in made:
                    rest.append(item)
        return rest
