"""Helpers of the robustness tests: settle the event loop, and find what a scenario left behind.

Four things count as left behind. A task that is still pending, a report to the loop's exception handler (such
as "Task exception was never retrieved"), a child process of the test process (running or zombie), and a memory
watcher thread of the local memory enforcement that is still alive.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from dataclasses import dataclass, field

import psutil

from .fanout_support import LoopErrors, new_tasks

# settle() gives up after this many turns of the loop. One step of a scenario needs a handful.
MAX_SETTLE_TURNS = 10_000

# The name of the thread that watches a forked child of the local memory enforcement.
WATCHER_THREAD_NAME = "flyte-patterns-memory-watcher"


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
