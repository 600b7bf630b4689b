"""Cancellation at every point of every pattern, and interrupts raised inside an item or an attempt.

The in-process scenarios advance in turns of the event loop, because each piece of work takes a fixed number of
``asyncio.sleep(0)`` turns. The test cancels the caller after ``k`` turns, for every ``k`` from 0 until the
scenario finishes on its own, each time in a fresh event loop. After each cancellation, the caller must get
``CancelledError`` and nothing may be left behind: no pending task the pattern created, no report to the loop's
exception handler, no child process, no memory watcher thread. The scenarios with forked children cancel at chosen
moments of a child's life instead, because a child's progress is not counted in loop turns.

``KeyboardInterrupt`` and ``SystemExit`` raised inside a task stop the event loop that runs it, so every scenario
runs in a loop of its own with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import flyte
import flyte.errors
import pytest

from flyte_patterns import (
    BatchError,
    FanOutProgress,
    MemoryRetryEvent,
    OutcomeStatus,
    batch_map,
    circuit_breaker,
    circuit_breaker_execute,
    format_memory,
    map_reduce,
    memory_limited,
    parse_memory,
    retry_with_memory,
    run_with_memory_limit,
    with_fallback,
)
from flyte_patterns._fanout import TripPolicy, fan_out

from .robust_support import LeakCheck, Leftovers, frozen_heap

MIB = 2**20

# A scenario that has not finished after this many turns is stuck.
MAX_TURNS = 500


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap() -> Iterator[None]:
    # Each scenario ends with a garbage collection, which then covers only what the module created.
    with frozen_heap():
        yield


@dataclass
class Journal:
    """What the work did, in order, with the iteration of the event loop in which each step happened.

    ``hook_events`` records what a pattern's hook reported. ``cancelled_in`` is the iteration in which the test
    cancelled the caller, or ``None``.
    """

    entries: list[tuple[str, str, int]] = field(default_factory=list)
    hook_events: list[str] = field(default_factory=list)
    iteration: int = 0
    cancelled_in: int | None = None

    def add(self, event: str, name: str) -> None:
        self.entries.append((event, name, self.iteration))

    def tick(self) -> None:
        """Count iterations of the loop: each call schedules the next, which runs in the next iteration."""
        self.iteration += 1
        asyncio.get_running_loop().call_soon(self.tick)

    def after_cancel(self, grace: int = 0) -> list[tuple[str, str]]:
        """Return the steps taken more than ``grace`` iterations after the iteration of the cancellation."""
        assert self.cancelled_in is not None
        return [(event, name) for event, name, iteration in self.entries if iteration > self.cancelled_in + grace]

    def running(self) -> set[str]:
        """Return the work that started and has not ended."""
        running: set[str] = set()
        for event, name, _ in self.entries:
            if event == "start":
                running.add(name)
            else:
                running.discard(name)
        return running


async def work(journal: Journal, name: str, turns: int, error: BaseException | None = None) -> str:
    """Take ``turns`` turns of the loop, then return the name or raise ``error``, recording each step."""
    journal.add("start", name)
    try:
        for _ in range(turns):
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        journal.add("cancelled", name)
        raise
    if error is not None:
        journal.add("failed", name)
        raise error
    journal.add("succeeded", name)
    return name


@dataclass
class Cancelled:
    """One scenario cancelled after ``turn`` turns, and what it left behind."""

    turn: int
    finished_first: bool
    raised: BaseException | None
    journal: Journal
    leftovers: Leftovers


Scenario = Callable[[Journal], Coroutine[Any, Any, Any]]


def cancel_after(turn: int, scenario: Scenario) -> Cancelled:
    """Run ``scenario`` in a fresh loop, cancel it after ``turn`` turns, and return what happened."""
    journal = Journal()

    async def main() -> Cancelled:
        check = LeakCheck()
        ticker = asyncio.get_running_loop().call_soon(journal.tick)
        call = asyncio.create_task(scenario(journal))
        for _ in range(turn):
            await asyncio.sleep(0)
        finished_first = call.done()
        journal.cancelled_in = journal.iteration
        call.cancel()
        raised: BaseException | None = None
        try:
            await call
        except BaseException as exc:
            raised = exc
        ticker.cancel()
        return Cancelled(turn, finished_first, raised, journal, check.leftovers())

    return asyncio.run(main())


def cancel_at_every_turn(scenario: Scenario) -> list[Cancelled]:
    """Cancel ``scenario`` after 0, 1, 2, ... turns, until it finishes before the cancellation arrives."""
    runs: list[Cancelled] = []
    for turn in range(MAX_TURNS):
        run = cancel_after(turn, scenario)
        runs.append(run)
        if run.finished_first:
            # Finishing on its own leaves nothing behind either.
            assert run.leftovers == Leftovers()
            return runs
    raise AssertionError(f"the scenario did not finish within {MAX_TURNS} turns")


def check_cancelled(run: Cancelled) -> None:
    """Check that the caller got CancelledError, that no work is still running and that nothing was left behind."""
    assert isinstance(run.raised, asyncio.CancelledError), (run.turn, run.raised)
    assert run.journal.running() == set(), run.turn
    assert run.leftovers == Leftovers(), run.turn


# ---------------------------------------------------------------- the circuit breaker

# Item i takes LATENCY[i] turns, and items 2, 5 and 6 fail. With max_failures=2 the third failure trips it.
LATENCY = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
FAILING = {2, 5, 6}


def breaker_scenario(kind: str, source: str) -> Scenario:
    async def item(journal: Journal, i: int) -> str:
        error = OSError(i) if i in FAILING else None
        return await work(journal, f"item {i}", LATENCY[i], error)

    async def scenario(journal: Journal) -> Any:
        task = functools.partial(item, journal)
        items: Any = list(range(len(LATENCY)))
        if source == "async":
            items = aiterate(items)
        if kind == "execute":
            return await circuit_breaker_execute(task, items, 2, concurrency=3)
        return await circuit_breaker(task, items, max_failures=2, concurrency=3)

    return scenario


async def aiterate(items: list[int]) -> Any:
    for item in items:
        await asyncio.sleep(0)
        yield item


@pytest.mark.parametrize("source", ["list", "async"])
@pytest.mark.parametrize("kind", ["breaker", "execute"])
def test_breaker_cancelled_at_every_turn(kind: str, source: str) -> None:
    runs = cancel_at_every_turn(breaker_scenario(kind, source))

    assert len(runs) > 5
    for run in runs[:-1]:
        check_cancelled(run)
        # The breaker receives the cancellation in the next iteration of the loop. Until then, worker steps already
        # queued still run and may complete an item or start one. From the iteration after, items only unwind.
        late = run.journal.after_cancel(grace=1)
        assert {event for event, _ in late} <= {"cancelled"}, run.turn


# ---------------------------------------------------------------- the batcher


def batcher_scenario(kind: str, source: str) -> Scenario:
    async def batch_task(journal: Journal, batch: list[int]) -> list[int]:
        failing = FAILING.intersection(batch)
        error = OSError(sorted(failing)) if failing else None
        await work(journal, f"batch {batch[0]}", LATENCY[batch[0]], error)
        return [item * 2 for item in batch]

    async def scenario(journal: Journal) -> Any:
        task = functools.partial(batch_task, journal)
        items: Any = list(range(len(LATENCY)))
        if source != "list":
            items = aiterate(items)
        # With max_wait, each pull from an async input runs as a task of its own; 60 s never runs out here.
        max_wait = 60.0 if source == "async with max_wait" else None
        if kind == "map_reduce":

            async def fold(total: int, value: int) -> int:
                await work(journal, f"fold {value}", 2)
                return total + value

            return await map_reduce(
                task, items, reduce=fold, initial=0, combine=sum, batch_size=2, concurrency=2, max_wait=max_wait
            )
        return await batch_map(
            task, items, batch_size=2, concurrency=2, max_failures=1, max_wait=max_wait, progress_bar=False
        )

    return scenario


@pytest.mark.parametrize("source", ["list", "async", "async with max_wait"])
@pytest.mark.parametrize("kind", ["batch_map", "map_reduce"])
def test_batcher_cancelled_at_every_turn(kind: str, source: str) -> None:
    runs = cancel_at_every_turn(batcher_scenario(kind, source))

    assert len(runs) > 5
    for run in runs[:-1]:
        check_cancelled(run)
        # As for the breaker: steps already queued may run in the next iteration, and then work only unwinds.
        late = run.journal.after_cancel(grace=1)
        assert {event for event, _ in late} <= {"cancelled"}, run.turn


# ---------------------------------------------------------------- the fallback runner


def fallback_scenario(attempt_timeout: float | None) -> Scenario:
    async def scenario(journal: Journal) -> Any:
        async def primary() -> str:
            return await work(journal, "primary", 3, ValueError("primary"))

        async def first() -> str:
            return await work(journal, "alternative 1", 2, KeyError("first"))

        async def second() -> str:
            return await work(journal, "alternative 2", 4)

        return await with_fallback(primary, [first, second], on=Exception, attempt_timeout=attempt_timeout)

    return scenario


@pytest.mark.parametrize("attempt_timeout", [None, 60.0])
def test_fallback_cancelled_at_every_turn(attempt_timeout: float | None) -> None:
    runs = cancel_at_every_turn(fallback_scenario(attempt_timeout))

    assert len(runs) > 5
    for run in runs[:-1]:
        check_cancelled(run)
        # Every attempt runs in the caller's task, so the running one is cancelled and nothing else starts. At
        # turn 0 the call is cancelled before it starts anything.
        late = run.journal.after_cancel()
        assert [event for event, _ in late] == (["cancelled"] if run.turn else []), run.turn


# ---------------------------------------------------------------- the OOM retrier, with a test double


class OutOfMemoryBelow:
    """A task double with Flyte's override protocol that runs out of memory below a size, after a few turns.

    It raises the error Flyte delivers for a container that Kubernetes killed at its memory limit, which the
    local engine cannot produce.
    """

    def __init__(self, journal: Journal, needed: int) -> None:
        self.journal = journal
        self.needed = needed
        self.short_name = "grow"

    def override(self, *, resources: flyte.Resources, **kwargs: Any) -> Callable[..., Awaitable[str]]:
        assert isinstance(resources.memory, tuple)
        limit = parse_memory(resources.memory[1])

        async def attempt() -> str:
            error = flyte.errors.OOMError("OOMKilled", "killed at its limit") if limit < self.needed else None
            return await work(self.journal, format_memory(limit), 2, error)

        return attempt


def test_retrier_cancelled_at_every_turn() -> None:
    async def scenario(journal: Journal) -> Any:
        task = OutOfMemoryBelow(journal, needed=3 * MIB)
        report = journal.hook_events.append
        return await retry_with_memory(task, sizes=["1Mi", "2Mi", "3Mi"], on_event=lambda event: report(event.kind))

    runs = cancel_at_every_turn(scenario)

    assert len(runs) > 5
    for run in runs[:-1]:
        check_cancelled(run)
        kinds = run.journal.hook_events
        if run.turn == 0:
            # Cancelled before it started anything.
            assert kinds == []
            continue
        late = run.journal.after_cancel()
        assert [event for event, _ in late] == ["cancelled"], run.turn
        assert kinds[-1] == "cancelled", run.turn
        assert "failed" not in kinds, run.turn


# ---------------------------------------------------------------- forked children


def allocate_and_sleep(size_mib: int, seconds: float) -> int:
    """Allocate ``size_mib`` MiB, then sleep: killed at once below the size, cancellable at any time above it."""
    block = bytearray(size_mib * MIB)
    time.sleep(seconds)
    return len(block)


@dataclass(frozen=True)
class CancelPoint:
    """When to cancel a retrier of ``allocate_and_sleep``: at an attempt's start event, plus a delay."""

    attempt: int
    delay: float


@pytest.mark.parametrize(
    "point",
    [
        pytest.param(CancelPoint(attempt=1, delay=0.0), id="first-attempt-just-forked"),
        pytest.param(CancelPoint(attempt=1, delay=0.15), id="first-attempt-running"),
        pytest.param(CancelPoint(attempt=2, delay=0.0), id="second-attempt-just-forked"),
        pytest.param(CancelPoint(attempt=2, delay=0.15), id="second-attempt-running"),
    ],
)
def test_retrier_cancelled_while_child_runs(point: CancelPoint) -> None:
    # With two attempts, 64 MiB passes the first size at once, so that attempt is killed for memory. The size
    # of the attempt that is cancelled fits, and that attempt sleeps until it is cancelled.
    events: list[MemoryRetryEvent] = []

    async def main() -> tuple[BaseException | None, Leftovers]:
        check = LeakCheck()
        loop = asyncio.get_running_loop()

        def on_event(event: MemoryRetryEvent) -> None:
            events.append(event)
            # The attempt forks its child in the same step as this event, so the cancellation always finds the
            # child started.
            if event.kind == "attempt" and event.attempt == point.attempt:
                loop.call_later(point.delay, caller.cancel)

        caller = asyncio.create_task(
            retry_with_memory(
                memory_limited(allocate_and_sleep),
                64,
                30.0,
                sizes=["16Mi", "256Mi"] if point.attempt == 2 else ["256Mi", "512Mi"],
                on_event=on_event,
            )
        )

        raised: BaseException | None = None
        try:
            await caller
        except BaseException as exc:
            raised = exc
        return raised, check.leftovers()

    raised, leftovers = asyncio.run(main())

    assert isinstance(raised, asyncio.CancelledError)
    assert leftovers == Leftovers()
    assert [event.kind for event in events] == ["attempt", "escalated"] * (point.attempt - 1) + [
        "attempt",
        "cancelled",
    ]


@pytest.mark.parametrize("turn", range(4))
def test_limited_call_cancelled_early(turn: int) -> None:
    # Turn 0 cancels before the call forks its child; later turns find the child started or being watched.
    async def scenario(journal: Journal) -> Any:
        return await run_with_memory_limit(time.sleep, 30, limit="250Mi")

    run = cancel_after(turn, scenario)

    assert isinstance(run.raised, asyncio.CancelledError)
    assert run.leftovers == Leftovers()


@pytest.mark.parametrize("delay", [0.001, 0.01, 0.05])
def test_limited_call_cancelled_by_timeout(delay: float) -> None:
    async def main() -> tuple[BaseException | None, Leftovers]:
        check = LeakCheck()
        raised: BaseException | None = None
        try:
            async with asyncio.timeout(delay):
                await run_with_memory_limit(allocate_and_sleep, 8, 30.0, limit="250Mi")
        except BaseException as exc:
            raised = exc
        return raised, check.leftovers()

    raised, leftovers = asyncio.run(main())

    assert isinstance(raised, TimeoutError)
    assert leftovers == Leftovers()


# ---------------------------------------------------------------- interrupts inside an item or an attempt


def raise_in_child(interrupt: str) -> None:
    if interrupt == "KeyboardInterrupt":
        raise KeyboardInterrupt("stop")
    raise SystemExit(3)


@dataclass
class Counters:
    """What a pattern did before the interrupt reached the caller."""

    calls: int = 0
    progress: list[FanOutProgress] = field(default_factory=list)
    retry_events: list[str] = field(default_factory=list)
    alternative_calls: int = 0


def make_interrupt(interrupt: str) -> BaseException:
    return KeyboardInterrupt("stop") if interrupt == "KeyboardInterrupt" else SystemExit(3)


PatternCall = Callable[[str, Counters], Coroutine[Any, Any, Any]]


async def breaker_item_interrupts(interrupt: str, counters: Counters) -> Any:
    async def item(i: int) -> int:
        counters.calls += 1
        if i == 1:
            raise make_interrupt(interrupt)
        await asyncio.sleep(0)
        return i

    return await circuit_breaker(item, range(5), max_failures=0, concurrency=2, on_progress=counters.progress.append)


async def execute_item_interrupts(interrupt: str, counters: Counters) -> Any:
    async def item(i: int) -> int:
        counters.calls += 1
        raise make_interrupt(interrupt)

    return await circuit_breaker_execute(item, range(5), 0, concurrency=1)


async def fallback_primary_interrupts(interrupt: str, counters: Counters) -> Any:
    async def primary() -> str:
        counters.calls += 1
        raise make_interrupt(interrupt)

    async def alternative() -> str:
        counters.alternative_calls += 1
        return "alternative"

    return await with_fallback(primary, [alternative], on=BaseException)


async def retrier_attempt_interrupts(interrupt: str, counters: Counters) -> Any:
    async def attempt() -> str:
        counters.calls += 1
        raise make_interrupt(interrupt)

    return await retry_with_memory(
        attempt, sizes=["1Gi", "2Gi"], on_event=lambda event: counters.retry_events.append(event.kind)
    )


async def retrier_child_interrupts(interrupt: str, counters: Counters) -> Any:
    return await retry_with_memory(
        memory_limited(raise_in_child),
        interrupt,
        sizes=["256Mi", "512Mi"],
        on_event=lambda event: counters.retry_events.append(event.kind),
    )


async def limited_call_interrupts(interrupt: str, counters: Counters) -> Any:
    return await run_with_memory_limit(raise_in_child, interrupt, limit="256Mi")


async def batch_task_interrupts(interrupt: str, counters: Counters) -> Any:
    async def task(batch: list[int]) -> list[int]:
        counters.calls += 1
        if batch[0] == 2:
            raise make_interrupt(interrupt)
        await asyncio.sleep(0)
        return batch

    return await batch_map(task, range(6), batch_size=2, concurrency=2, progress_bar=False)


async def combine_interrupts(interrupt: str, counters: Counters) -> Any:
    def combine(results: list[int]) -> int:
        counters.calls += 1
        raise make_interrupt(interrupt)

    async def task(batch: list[int]) -> list[int]:
        return batch

    return await map_reduce(task, range(4), reduce=max, initial=0, combine=combine, batch_size=2, concurrency=1)


async def reduce_interrupts(interrupt: str, counters: Counters) -> Any:
    async def reduce(total: int, value: int) -> int:
        counters.calls += 1
        await asyncio.sleep(0)
        raise make_interrupt(interrupt)

    async def task(batch: list[int]) -> list[int]:
        await asyncio.sleep(0)
        return batch

    return await map_reduce(task, range(6), reduce=reduce, initial=0, combine=sum, batch_size=1, concurrency=2)


async def breaker_inside_fallback_interrupts(interrupt: str, counters: Counters) -> Any:
    async def primary() -> Any:
        return await breaker_item_interrupts(interrupt, counters)

    async def alternative() -> str:
        counters.alternative_calls += 1
        return "alternative"

    return await with_fallback(primary, [alternative], on=BaseException)


@pytest.mark.parametrize("interrupt", ["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize(
    "pattern",
    [
        breaker_item_interrupts,
        execute_item_interrupts,
        fallback_primary_interrupts,
        retrier_attempt_interrupts,
        retrier_child_interrupts,
        limited_call_interrupts,
        batch_task_interrupts,
        combine_interrupts,
        reduce_interrupts,
        breaker_inside_fallback_interrupts,
    ],
    ids=lambda pattern: pattern.__name__.removesuffix("_interrupts").replace("_", "-"),
)
def test_interrupt_propagates_uncounted(pattern: PatternCall, interrupt: str) -> None:
    counters = Counters()
    leftovers: list[Leftovers] = []

    async def main() -> None:
        check = LeakCheck()
        try:
            await pattern(interrupt, counters)
        finally:
            leftovers.append(check.leftovers())

    with pytest.raises((KeyboardInterrupt, SystemExit)) as caught:
        asyncio.run(main())

    assert type(caught.value).__name__ == interrupt
    assert leftovers == [Leftovers()]
    # Never a failure, never retried, never a reason to fall back.
    assert [event.status for event in counters.progress if event.status is OutcomeStatus.FAILED] == []
    assert counters.alternative_calls == 0
    if counters.retry_events:
        assert counters.retry_events == ["attempt", "cancelled"]
    if pattern in (
        execute_item_interrupts,
        fallback_primary_interrupts,
        retrier_attempt_interrupts,
        combine_interrupts,
        reduce_interrupts,
    ):
        assert counters.calls == 1


def test_child_interrupt_keeps_exit_code() -> None:
    async def main() -> None:
        await run_with_memory_limit(raise_in_child, "SystemExit", limit="256Mi")

    with pytest.raises(SystemExit) as caught:
        asyncio.run(main())

    assert caught.value.code == 3


# ---------------------------------------------------------------- cases the tests above found


async def test_cancelled_map_reduce_starts_no_fold() -> None:
    # Batch 0 finishes in the same step as the caller is cancelled. Its value reaches the fold after the
    # cancellation, and the fold must not start a reduce step for it.
    release = asyncio.Event()
    folded: list[int] = []

    async def task(batch: list[int]) -> list[int]:
        if batch[0] == 0:
            await release.wait()
            return batch
        await asyncio.Event().wait()
        return batch

    async def reduce(total: int, value: int) -> int:
        folded.append(value)
        return total + value

    call = asyncio.create_task(map_reduce(task, range(2), reduce=reduce, initial=0, combine=sum, batch_size=1))
    for _ in range(3):
        await asyncio.sleep(0)
    release.set()
    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call

    assert folded == []


async def test_trip_cancels_reduce_step_with_batches() -> None:
    # A reduce step is in flight when batch 2 fails. The step's value would be dropped, so it is cancelled with
    # the running batches, before batch 1 has finished its slow cleanup.
    order: list[str] = []
    reducing = asyncio.Event()

    async def task(batch: list[int]) -> list[int]:
        if batch[0] == 0:
            return batch
        if batch[0] == 2:
            await reducing.wait()
            raise OSError("batch 2 failed")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            for _ in range(5):
                await asyncio.sleep(0)
            order.append("batch 1 cleaned up")
            raise
        return batch

    async def reduce(total: int, value: int) -> int:
        reducing.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            order.append("reduce cancelled")
            raise
        return total + value

    with pytest.raises(BatchError):
        await map_reduce(
            task, range(3), reduce=reduce, initial=0, combine=sum, batch_size=1, concurrency=3, max_failures=0
        )

    assert order == ["reduce cancelled", "batch 1 cleaned up"]


@pytest.mark.parametrize("stop", ["trip", "caller cancel"])
async def test_fan_out_calls_on_stop_once(stop: str, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def on_stop() -> None:
        calls.append("stopped")
        raise RuntimeError("the on_stop hook failed")

    async def item(i: int) -> int:
        if i == 0 and stop == "trip":
            raise OSError(i)
        await asyncio.Event().wait()
        return i

    run = asyncio.create_task(
        fan_out(item, range(4), concurrency=4, policy=TripPolicy(max_failures=0), on_stop=on_stop)
    )
    for _ in range(3):
        await asyncio.sleep(0)
    if stop == "caller cancel":
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    else:
        result = await run
        assert result.tripped

    assert calls == ["stopped"]
    assert "on_stop raised; ignoring it" in caplog.text
