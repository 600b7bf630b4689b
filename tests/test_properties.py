"""Property tests of the circuit breaker over random schedules, against an oracle written from its documentation.

Each item of a generated scenario blocks on a future of its own. A scheduler resolves one blocked item at a time,
in an order that hypothesis draws, and lets the event loop settle in between, so the order in which items
complete is the random variable and no test sleeps. The oracle replays what the items and the input recorded
(pulls, starts, completions, the end of the input) through the trip rules as the docs state them, and the test
compares the breaker's result with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import flyte
import flyte.errors
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from flyte_patterns import (
    CircuitBreakerError,
    FanOutInputError,
    FanOutProgress,
    FanOutResult,
    MemoryLadderExhaustedError,
    OutcomeStatus,
    RollingWindow,
    TripRule,
    batch_map,
    circuit_breaker,
    circuit_breaker_execute,
    format_memory,
    memory_ladder,
    parse_memory,
    retry_with_memory,
)

from .fanout_support import LoopErrors, new_tasks
from .robust_support import PULL, GatedInput, SourceKind, frozen_heap, settle

ItemOutcome = Literal["succeed", "fail", "own_cancel"]

# The progress status of each way the log records an item ending.
status_of = {
    "succeeded": OutcomeStatus.SUCCEEDED,
    "failed": OutcomeStatus.FAILED,
    "own_cancel": OutcomeStatus.CANCELLED,
    "cancelled": OutcomeStatus.CANCELLED,
}
Cleanup = Literal["reraise", "slow", "raise"]
HintKind = Literal["none", "exact", "larger", "smaller"]


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap() -> Iterator[None]:
    with frozen_heap():
        yield


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Rules:
    max_failures: int | None
    max_failure_ratio: float | None
    rolling_window: RollingWindow | None


@dataclass(frozen=True)
class Scenario:
    """One generated run: what each item does, the rules, the input's shape and the call's options."""

    items: tuple[tuple[ItemOutcome, Cleanup], ...]
    rules: Rules
    concurrency: int
    source: SourceKind
    hint: HintKind
    hint_offset: int
    drain: bool | None
    raise_on_trip: bool
    input_fails_at: int | None

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def total(self) -> int | None:
        """The ``total`` argument: ``None``, or a hint that is exact, too large or too small."""
        if self.hint == "none":
            return None
        if self.hint == "exact":
            return self.count
        if self.hint == "larger":
            return self.count + self.hint_offset
        return max(0, self.count - self.hint_offset)


windows = st.none() | st.builds(
    RollingWindow,
    size=st.integers(1, 5),
    failure_rate=st.sampled_from([0.2, 0.5, 0.75, 1.0]),
    min_completed=st.none() | st.integers(1, 6),
)
rules_strategy = st.builds(
    Rules,
    max_failures=st.none() | st.integers(0, 5),
    max_failure_ratio=st.none() | st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 1.0]),
    rolling_window=windows,
)
# Failures are as likely as successes, so that every rule fires often. An item's own CancelledError is rarer.
OUTCOME_CHOICES: list[ItemOutcome] = ["succeed", "succeed", "succeed", "fail", "fail", "fail", "own_cancel"]
CLEANUP_CHOICES: list[Cleanup] = ["reraise", "slow", "raise"]
item_strategy = st.tuples(st.sampled_from(OUTCOME_CHOICES), st.sampled_from(CLEANUP_CHOICES))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    items = tuple(draw(st.lists(item_strategy, max_size=14)))
    rules = draw(rules_strategy)
    source: SourceKind = draw(st.sampled_from(["list", "generator", "async_generator", "iterable", "async_iterable"]))
    hint: HintKind
    if source == "list":
        hint = draw(st.sampled_from(["none", "exact"]))
    elif rules.max_failure_ratio is not None:
        # An input without len() needs a total for the ratio rule.
        hint = draw(st.sampled_from(["exact", "larger", "smaller"]))
    else:
        hint = draw(st.sampled_from(["none", "exact", "larger", "smaller"]))
    return Scenario(
        items=items,
        rules=rules,
        concurrency=draw(st.integers(1, 5)),
        source=source,
        hint=hint,
        hint_offset=draw(st.integers(1, 4)),
        drain=draw(st.sampled_from([None, True, False])),
        raise_on_trip=draw(st.booleans()),
        # A list cannot fail; any other input may raise instead of yielding an item.
        input_fails_at=None if source == "list" else draw(st.none() | st.integers(0, 13)),
    )


# ---------------------------------------------------------------- the items and the input, with a shared log


@dataclass
class Recorder:
    """What the input and the items did, in the order it happened.

    Log entries: those of :class:`GatedInput` for the input, ``("start", i)``, and one of ``succeeded``,
    ``failed``, ``own_cancel`` or ``cancelled`` with the item when it ends.
    """

    scenario: Scenario
    log: list[tuple[str, int]] = field(default_factory=list)
    gates: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    errors: dict[int, Exception] = field(default_factory=dict)
    cleanup_errors: dict[int, Exception] = field(default_factory=dict)
    own_cancellations: dict[int, asyncio.CancelledError] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input = GatedInput(self.scenario.count, self.scenario.source, self.log, self.scenario.input_fails_at)
        for index, (outcome, cleanup) in enumerate(self.scenario.items):
            if outcome == "fail":
                self.errors[index] = ValueError(index)
            if outcome == "own_cancel":
                self.own_cancellations[index] = asyncio.CancelledError(f"item {index} on its own")
            if cleanup == "raise":
                self.cleanup_errors[index] = RuntimeError(f"item {index} failed to clean up")

    async def task(self, index: int) -> int:
        """The task under the breaker: block until the scheduler resolves the item, then end as planned."""
        self.log.append(("start", index))
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates[index] = gate
        try:
            await gate
        except asyncio.CancelledError:
            cleanup = self.scenario.items[index][1]
            if cleanup == "slow":
                for _ in range(3):
                    await asyncio.sleep(0)
            # Logged when the cleanup ends, which is when the item ends.
            self.log.append(("cancelled", index))
            if cleanup == "raise":
                raise self.cleanup_errors[index] from None
            raise

        outcome = self.scenario.items[index][0]
        if outcome == "fail":
            self.log.append(("failed", index))
            raise self.errors[index]
        if outcome == "own_cancel":
            self.log.append(("own_cancel", index))
            raise self.own_cancellations[index]
        self.log.append(("succeeded", index))
        return index * 10

    def blocked(self) -> list[int]:
        """Return the items waiting for the scheduler, and ``PULL`` when the async input is waiting too."""
        waiting = sorted(index for index, gate in self.gates.items() if not gate.done())
        if self.input.pull_blocked():
            waiting.append(PULL)
        return waiting

    def release(self, choice: int) -> None:
        if choice == PULL:
            self.input.release_pull()
        else:
            self.gates[choice].set_result(None)


# ---------------------------------------------------------------- the oracle, from the documented rules


@dataclass(frozen=True)
class ExpectedTrip:
    rule: TripRule
    index: int | None
    failed: int
    position: int  # where in the log the rule fired


def expected_trip(scenario: Scenario, log: list[tuple[str, int]]) -> ExpectedTrip | None:
    """Replay the log through the trip rules as the circuit breaker's documentation states them.

    * ``max_failures=N``: failure N+1 trips.
    * ``max_failure_ratio=r``: trips when failures exceed ``r`` times the number of items, taken as written.
      The number is ``len(items)``, else the ``total`` hint. Until the input ends, a hint below the number
      pulled is replaced by that number. Once it ends, the exact count replaces the hint, which can trip the rule
      at that moment (with no item index).
    * ``rolling_window``: trips when at least ``failure_rate`` of the last ``size`` completed items failed, once
      ``min_completed`` items have completed.

    Completed means succeeded or failed. When several rules fire at once, the first in this order is the reason.
    """
    rules = scenario.rules
    sized = scenario.source == "list"
    hint = scenario.total
    pulled = 0
    ended = False
    failed = 0
    completed = 0
    window = rules.rolling_window
    recent: deque[bool] = deque(maxlen=window.size if window is not None else 1)

    def item_count() -> int:
        if sized:
            return scenario.count
        if ended:
            return pulled
        assert hint is not None
        return max(hint, pulled)

    def ratio_exceeded() -> bool:
        ratio = rules.max_failure_ratio
        return ratio is not None and failed > Fraction(str(ratio)) * item_count()

    for position, (entry, index) in enumerate(log):
        if entry == "input_error":
            # The run stops here as on a trip, but no rule fired.
            return None
        if entry == "pull":
            pulled += 1
        elif entry == "end":
            ended = True
            if ratio_exceeded():
                return ExpectedTrip(TripRule.MAX_FAILURE_RATIO, None, failed, position)
        elif entry in ("succeeded", "failed"):
            completed += 1
            failed += entry == "failed"
            recent.append(entry == "failed")
            if rules.max_failures is not None and failed > rules.max_failures:
                return ExpectedTrip(TripRule.MAX_FAILURES, index, failed, position)
            if ratio_exceeded():
                return ExpectedTrip(TripRule.MAX_FAILURE_RATIO, index, failed, position)
            if (
                window is not None
                and completed >= window.effective_min_completed
                and Fraction(sum(recent), len(recent)) >= Fraction(str(window.failure_rate))
            ):
                return ExpectedTrip(TripRule.ROLLING_WINDOW, index, failed, position)
    return None


# ---------------------------------------------------------------- running a scenario


@dataclass
class Run:
    result: FanOutResult[int]
    raised: BaseException | None
    leftover_tasks: int
    loop_errors: list[str]
    log: list[tuple[str, int]]
    remaining_input: list[int] | None
    progress: list[FanOutProgress]


async def run_scenario(scenario: Scenario, recorder: Recorder, draw_next: Callable[[list[int]], int]) -> Run:
    loop = asyncio.get_running_loop()
    loop_errors = LoopErrors()
    loop.set_exception_handler(loop_errors)
    before = asyncio.all_tasks()

    items = recorder.input.make()
    rules = scenario.rules
    progress: list[FanOutProgress] = []
    breaker = asyncio.create_task(
        circuit_breaker(
            recorder.task,
            items,
            max_failures=rules.max_failures,
            max_failure_ratio=rules.max_failure_ratio,
            rolling_window=rules.rolling_window,
            concurrency=scenario.concurrency,
            total=scenario.total,
            drain=scenario.drain,
            raise_on_trip=scenario.raise_on_trip,
            on_progress=progress.append,
        )
    )

    # The scheduler: release one blocked item or pull at a time, in the drawn order, until the breaker returns.
    while True:
        await settle()
        if breaker.done():
            break
        blocked = recorder.blocked()
        assert blocked, "the breaker is still running, but no item or pull is waiting"
        recorder.release(draw_next(blocked))

    raised: BaseException | None = None
    try:
        result = breaker.result()
    except (CircuitBreakerError, FanOutInputError) as error:
        raised = error
        result = error.result
    leftover = len(new_tasks(before))
    # Reading what is left of a one-shot input below logs more pulls, which are not part of the run.
    log = list(recorder.log)

    remaining = await recorder.input.rest(items)
    return Run(result, raised, leftover, loop_errors.messages(), log, remaining, progress)


@settings(deadline=None, max_examples=200)
@given(scenario=scenarios(), data=st.data())
def test_breaker_matches_documented_rules(scenario: Scenario, data: st.DataObject) -> None:
    """Every item is accounted for once, in input order, and the breaker trips exactly where its rules put it."""
    recorder = Recorder(scenario)

    def draw_next(blocked: list[int]) -> int:
        return data.draw(st.sampled_from(blocked), label="completes next")

    run = asyncio.run(run_scenario(scenario, recorder, draw_next))
    result = run.result
    outcomes = list(result.outcomes)
    log = run.log
    event(f"tripped by {result.trip.rule.value}" if result.trip else "not tripped")

    # Nothing leaks: no task left behind, nothing reported to the loop's exception handler.
    assert run.leftover_tasks == 0
    assert run.loop_errors == []

    # Outcomes in input order, one per item, with counts that add up.
    assert [outcome.index for outcome in outcomes] == list(range(len(outcomes)))
    assert len(outcomes) <= scenario.count
    assert result.succeeded + result.failed + result.cancelled + result.not_started == len(outcomes)

    # Each item started at most once and ended exactly once, and its outcome records how.
    started = [index for entry, index in log if entry == "start"]
    assert len(started) == len(set(started))
    ended = {
        kind: [index for entry, index in log if entry == kind]
        for kind in ("succeeded", "failed", "own_cancel", "cancelled")
    }
    assert sorted(index for indices in ended.values() for index in indices) == sorted(started)
    by_status = {status: result.indices(status) for status in OutcomeStatus}
    assert by_status[OutcomeStatus.SUCCEEDED] == sorted(ended["succeeded"])
    assert by_status[OutcomeStatus.FAILED] == sorted(ended["failed"])
    assert by_status[OutcomeStatus.CANCELLED] == sorted(ended["own_cancel"] + ended["cancelled"])
    assert set(by_status[OutcomeStatus.NOT_STARTED]).isdisjoint(started)

    # Values and errors are the very objects the items produced, at their positions.
    for outcome in outcomes:
        if outcome.status is OutcomeStatus.SUCCEEDED:
            assert outcome.value == outcome.index * 10
        elif outcome.status is OutcomeStatus.FAILED:
            assert outcome.error is recorder.errors[outcome.index]
        elif outcome.index in ended["own_cancel"]:
            assert outcome.error is recorder.own_cancellations[outcome.index]
        elif outcome.status is OutcomeStatus.CANCELLED:
            assert outcome.error is recorder.cleanup_errors.get(outcome.index)
    completion_order = [index for entry, index in log if entry == "failed"]
    assert result.first_failure_index == (completion_order[0] if completion_order else None)

    # The progress hook saw each item that ran end exactly once, as it ended, with running counts. The total is
    # the number of items when known: len(), else the hint until the input ends and the exact count after.
    endings = [position for position, (entry, _) in enumerate(log) if entry in status_of]
    assert [(report.index, report.status) for report in run.progress] == [
        (log[position][1], status_of[log[position][0]]) for position in endings
    ]
    for number, (report, position) in enumerate(zip(run.progress, endings, strict=True), start=1):
        assert report.succeeded + report.failed + report.cancelled == number
        assert report.started >= number
        input_ended = ("end", -1) in log[:position]
        if scenario.source == "list":
            assert report.total == scenario.count
        elif scenario.total is None:
            assert report.total is None
        else:
            assert report.total == (scenario.count if input_ended else scenario.total)
    if run.progress:
        last = run.progress[-1]
        assert (last.succeeded, last.failed, last.cancelled) == (result.succeeded, result.failed, result.cancelled)
        assert last.started == len(started)

    # Never more than `concurrency` items running at once.
    running = 0
    for entry, _ in log:
        if entry == "start":
            running += 1
            assert running <= scenario.concurrency
        elif entry in ended:
            running -= 1

    # The trip fires exactly where the documented rules put it, and nothing starts after it.
    expected = expected_trip(scenario, log)
    broke_at = next((position for position, (entry, _) in enumerate(log) if entry == "input_error"), None)
    if expected is None and broke_at is not None:
        # The input raised first: everything stopped as on a trip, and the error chains the input's exception.
        assert isinstance(run.raised, FanOutInputError)
        assert run.raised.__cause__ is recorder.input.error
        assert result.trip is None
        assert not result.input_exhausted
        assert len(outcomes) == log[broke_at][1]
        assert [entry for entry in log[broke_at + 1 :] if entry[0] == "start"] == []
    elif expected is None:
        assert result.trip is None
        assert run.raised is None
        assert len(outcomes) == scenario.count
        assert result.input_exhausted
    else:
        assert result.trip is not None
        assert (result.trip.rule, result.trip.index, result.trip.failed) == (
            expected.rule,
            expected.index,
            expected.failed,
        )
        after_trip = log[expected.position + 1 :]
        assert [entry for entry in after_trip if entry[0] == "start"] == []
        # Only cancellations follow, and the reads of a drained input.
        assert all(entry[0] in ("cancelled", "pull", "pull_cancelled", "end", "input_error") for entry in after_trip)
        if scenario.raise_on_trip:
            assert isinstance(run.raised, CircuitBreakerError)
            assert run.raised.__cause__ is result.first_error
        else:
            assert run.raised is None

    # The input is accounted for: all of it, or every pulled item with the rest left in a one-shot input.
    pull_interrupted = any(entry == "pull_cancelled" for entry, _ in log)
    if result.input_exhausted:
        assert len(outcomes) == scenario.count
        assert not pull_interrupted
    if scenario.source == "list" and scenario.drain is not False:
        assert len(outcomes) == scenario.count
    if scenario.drain is not False and scenario.source in ("iterable", "list") and result.tripped and not broke_at:
        assert result.input_exhausted
    if run.remaining_input is not None and not pull_interrupted and broke_at is None:
        # Reading the rest stops where the input raises, if it does.
        readable = scenario.count if scenario.input_fails_at is None else min(scenario.count, scenario.input_fails_at)
        assert run.remaining_input == list(range(len(outcomes), readable))
    if not result.input_exhausted:
        assert result.tripped or isinstance(run.raised, FanOutInputError)


@settings(deadline=None, max_examples=60)
@given(
    failing=st.lists(st.booleans(), max_size=12),
    max_failures=st.integers(0, 4),
    concurrency=st.integers(1, 4),
    data=st.data(),
)
def test_execute_values_or_trip(failing: list[bool], max_failures: int, concurrency: int, data: st.DataObject) -> None:
    """circuit_breaker_execute returns every value in input order, or raises with the full result attached."""
    gates: dict[int, asyncio.Future[None]] = {}
    completed: list[tuple[int, bool]] = []
    errors = [KeyError(index) for index in range(len(failing))]

    async def task(index: int) -> int:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gates[index] = gate
        await gate
        completed.append((index, failing[index]))
        if failing[index]:
            raise errors[index]
        return index + 100

    async def scenario() -> list[int | None] | CircuitBreakerError:
        call = asyncio.create_task(
            circuit_breaker_execute(task, range(len(failing)), max_failures, concurrency=concurrency)
        )
        while True:
            await settle()
            if call.done():
                break
            blocked = sorted(index for index, gate in gates.items() if not gate.done())
            gates[data.draw(st.sampled_from(blocked))].set_result(None)
        try:
            return call.result()
        except CircuitBreakerError as error:
            return error

    outcome = asyncio.run(scenario())
    failures_seen = [index for index, failed in completed if failed]
    if len(failures_seen) > max_failures:
        assert isinstance(outcome, CircuitBreakerError)
        assert outcome.__cause__ is errors[failures_seen[0]]
        assert outcome.result.trip is not None
        assert outcome.result.trip.index == failures_seen[max_failures]
        values = outcome.result.values()
    else:
        assert isinstance(outcome, list)
        values = outcome
    assert len(values) == len(failing)
    succeeded = {index for index, failed in completed if not failed}
    assert values == [index + 100 if index in succeeded else None for index in range(len(failing))]


# ---------------------------------------------------------------- cases the property test found


async def test_ratio_uses_exact_count_after_small_hint() -> None:
    # Ten items and a hint of two. Once the input has ended, the ratio 0.5 allows 5 failures of 10, not 1 of 2.
    all_started = asyncio.Event()
    started: list[int] = []

    async def fail(i: int) -> int:
        started.append(i)
        if len(started) == 10:
            all_started.set()
        await all_started.wait()
        raise ValueError(i)

    result = await circuit_breaker(fail, (i for i in range(10)), max_failure_ratio=0.5, total=2, concurrency=10)

    assert result.trip is not None
    assert result.trip.rule is TripRule.MAX_FAILURE_RATIO
    assert result.trip.message == "6 failures exceeded max_failure_ratio=0.5 of 10 items (5 allowed)"
    assert result.failed == 6
    assert result.cancelled == 4
    assert result.input_exhausted


@pytest.mark.parametrize("drain", [None, True])
async def test_cut_short_pull_leaves_input_unaccounted(drain: bool | None, caplog: pytest.LogCaptureFixture) -> None:
    # Item 0 fails while the second worker waits for the input to produce item 1. The trip cancels that wait,
    # which closes the async generator, so the rest of the input cannot be read or counted any more.
    producing = asyncio.Event()

    class Numbers:
        """An async collection without len(), whose every iteration is a new async generator."""

        async def numbers(self) -> AsyncIterator[int]:
            yield 0
            producing.set()
            await asyncio.Event().wait()
            for i in range(1, 5):
                yield i

        def __aiter__(self) -> AsyncIterator[int]:
            return self.numbers()

    async def fail_first(i: int) -> int:
        await producing.wait()
        raise ValueError(i)

    with caplog.at_level(logging.WARNING, logger="flyte_patterns.circuit_breaker"):
        result = await circuit_breaker(fail_first, Numbers(), max_failures=0, concurrency=2, drain=drain)

    assert result.tripped
    assert [outcome.status.value for outcome in result.outcomes] == ["failed"]
    assert not result.input_exhausted
    assert "cancelled a pull from the async input" in caplog.text


async def test_batcher_cut_short_pull_leaves_input_unaccounted(caplog: pytest.LogCaptureFixture) -> None:
    # The same case for the batcher, which reads the rest of a collection itself after a trip.
    producing = asyncio.Event()

    class Numbers:
        """An async collection without len(), whose every iteration is a new async generator."""

        async def numbers(self) -> AsyncIterator[int]:
            yield 0
            producing.set()
            await asyncio.Event().wait()
            for i in range(1, 5):
                yield i

        def __aiter__(self) -> AsyncIterator[int]:
            return self.numbers()

    async def fail(batch: list[int]) -> list[int]:
        await producing.wait()
        raise ValueError(batch)

    with caplog.at_level(logging.WARNING, logger="flyte_patterns.batch"):
        result = await batch_map(fail, Numbers(), batch_size=1, concurrency=2, max_failures=0, return_result=True)

    assert result.tripped
    assert [outcome.status.value for outcome in result.outcomes] == ["failed"]
    assert not result.input_exhausted
    assert "cancelled a pull from the async input" in caplog.text


# ---------------------------------------------------------------- the OOM retrier over random ladders


@dataclass
class NeedsMemory:
    """A task double with Flyte's override protocol that runs out of memory below ``need`` bytes.

    It raises the error Flyte delivers for a container Kubernetes killed at its memory limit, which the local
    engine cannot produce, and records the resources of each launch.
    """

    need: int
    resources: flyte.Resources | None
    short_name: str = "needs_memory"
    launched: list[flyte.Resources] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)

    def override(self, *, resources: flyte.Resources, short_name: str, **kwargs: Any) -> Callable[..., Any]:
        async def attempt(value: str) -> str:
            self.launched.append(resources)
            assert isinstance(resources.memory, tuple)
            if parse_memory(resources.memory[1]) < self.need:
                self.errors.append(flyte.errors.OOMError("OOMKilled", f"killed below {self.need} bytes"))
                raise self.errors[-1]
            return value

        return attempt


# Ladders of at most a few dozen sizes: a longer one is legal but warns, and each size is one attempt.
ladder_arguments: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(
        dict,
        initial_memory=st.integers(1, 2**30),
        increment=st.integers(2**28, 2**31),
        max_memory=st.integers(2**30, 2**33),
    ),
    st.builds(
        dict,
        initial_memory=st.integers(2**20, 2**30),
        factor=st.sampled_from([1.5, 2, 3.25]),
        max_memory=st.integers(2**30, 2**33),
    ),
    st.builds(dict, sizes=st.lists(st.integers(1, 2**34), min_size=1, max_size=6, unique=True).map(sorted)),
)


@settings(deadline=None, max_examples=150)
@given(
    arguments=ladder_arguments,
    need=st.integers(0, 2**34),
    request_share=st.none() | st.sampled_from([(1, 2), (3, 4), (1, 1)]),
)
def test_retrier_climbs_ladder_to_first_fit(
    arguments: dict[str, Any], need: int, request_share: tuple[int, int] | None
) -> None:
    """The attempts are the ladder up to the first size that fits, each with its own limit and the task's ratio."""
    ladder = memory_ladder(**arguments)
    base = None
    if request_share is not None:
        numerator, denominator = request_share
        base = flyte.Resources(cpu=2, memory=(format_memory(numerator * 2**30), format_memory(denominator * 2**30)))
    task = NeedsMemory(need, base)

    async def climb() -> str | MemoryLadderExhaustedError:
        try:
            return await retry_with_memory(task, "done", **arguments)
        except MemoryLadderExhaustedError as error:
            return error

    outcome = asyncio.run(climb())

    fits = [index for index, size in enumerate(ladder) if size >= need]
    tried = ladder[: fits[0] + 1] if fits else ladder
    limits = [parse_memory(resources.memory[1]) for resources in task.launched if isinstance(resources.memory, tuple)]
    assert limits == list(tried)
    if fits:
        assert outcome == "done"
    else:
        assert isinstance(outcome, MemoryLadderExhaustedError)
        assert outcome.sizes == ladder
        assert outcome.__cause__ is task.errors[-1]
        assert [attempt.error for attempt in outcome.attempts] == task.errors
    for resources, size in zip(task.launched, tried, strict=True):
        assert isinstance(resources.memory, tuple)
        request = parse_memory(resources.memory[0])
        if request_share is None:
            assert request == size
        else:
            numerator, denominator = request_share
            assert request == size * numerator // denominator
            assert resources.cpu == 2
