"""Property tests of batch_map and map_reduce over random schedules, against oracles written from their docs.

As in the breaker's property tests, each batch blocks on a future of its own and an async input blocks before each
item, and a scheduler releases one of them at a time in an order that hypothesis draws. The oracles compute the
batches the documentation promises (consecutive items, at most ``batch_size`` of them, cut early under a weight
bound), replay the recorded completions through the trip rules, which count batches, and fold the batch values in
batch order.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from flyte_patterns import (
    BatchError,
    BatchLengthError,
    BatchResult,
    FanOutInputError,
    OutcomeStatus,
    ReduceError,
    RollingWindow,
    TripRule,
    auto_batch_size,
    batch_map,
    map_reduce,
)

from .fanout_support import LoopErrors, new_tasks
from .robust_support import PULL, GatedInput, SourceKind, frozen_heap, settle

ItemKind = Literal["ok", "poison", "short"]

# Each item's weight under a weight bound, and the bound.
MAX_WEIGHT = 4


def weight(item: int) -> float:
    return float(item % 3 + 1)


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap() -> Iterator[None]:
    with frozen_heap():
        yield


@dataclass(frozen=True)
class BatchScenario:
    """One generated run: what each item does to its batch, how batches are cut, the rules and the input.

    A batch that contains a ``poison`` item raises. Otherwise one with a ``short`` item returns one result too
    few, which is a :class:`BatchLengthError`. Otherwise it returns ``item * 10`` for each item.
    """

    items: tuple[ItemKind, ...]
    batch_size: int | None
    weighted: bool
    concurrency: int
    max_failures: int | None
    max_failure_ratio: float | None
    rolling_window: RollingWindow | None
    source: SourceKind
    hinted: bool
    return_result: bool
    input_fails_at: int | None

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def total(self) -> int | None:
        return self.count if self.hinted and self.source != "list" else None

    @property
    def known_count(self) -> int | None:
        return self.count if self.source == "list" or self.hinted else None

    def size(self) -> int:
        """The bound on items per batch: given, or the documented automatic size."""
        if self.batch_size is not None:
            return self.batch_size
        return auto_batch_size(self.known_count, self.concurrency)

    def batches(self) -> list[range]:
        """The batches the docs promise: consecutive items, cut at ``size`` items or, weighted, at the bound."""
        size = self.size()
        batches: list[range] = []
        start = 0
        load = 0.0
        for index in range(self.count):
            heavy = self.weighted and index > start and load + weight(index) > MAX_WEIGHT
            if heavy:
                batches.append(range(start, index))
                start, load = index, 0.0
            load += weight(index) if self.weighted else 0.0
            if index + 1 - start >= size or (self.weighted and load >= MAX_WEIGHT):
                batches.append(range(start, index + 1))
                start, load = index + 1, 0.0
        if start < self.count:
            batches.append(range(start, self.count))
        return batches


ITEM_KINDS: list[ItemKind] = ["ok", "ok", "ok", "ok", "poison", "short"]


@st.composite
def batch_scenarios(draw: st.DrawFn) -> BatchScenario:
    source: SourceKind = draw(st.sampled_from(["list", "generator", "async_generator", "iterable", "async_iterable"]))
    weighted = draw(st.booleans())
    hinted = draw(st.booleans())
    # The ratio rule needs the number of batches: a known count and no weight bound.
    ratio_allowed = not weighted and (source == "list" or hinted)
    return BatchScenario(
        items=tuple(draw(st.lists(st.sampled_from(ITEM_KINDS), max_size=16))),
        batch_size=draw(st.none() | st.integers(1, 4)),
        weighted=weighted,
        concurrency=draw(st.integers(1, 4)),
        max_failures=draw(st.none() | st.integers(0, 3)),
        max_failure_ratio=draw(st.none() | st.sampled_from([0.0, 0.25, 0.5, 1.0])) if ratio_allowed else None,
        rolling_window=draw(
            st.none()
            | st.builds(
                RollingWindow,
                size=st.integers(1, 4),
                failure_rate=st.sampled_from([0.5, 1.0]),
                min_completed=st.none() | st.integers(1, 4),
            )
        ),
        source=source,
        hinted=hinted,
        return_result=draw(st.booleans()),
        # A list cannot fail; any other input may raise instead of yielding an item.
        input_fails_at=None if source == "list" else draw(st.none() | st.integers(0, 15)),
    )


@dataclass
class BatchRecorder:
    """The batch task under test, the gated input, and a log of what both did.

    Log entries: those of :class:`GatedInput`, then ``("start", b)``, ``("succeeded", b)``, ``("failed", b)``
    and ``("cancelled", b)``, where ``b`` is the index of the batch's first item.
    """

    scenario: BatchScenario
    log: list[tuple[str, int]] = field(default_factory=list)
    gates: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    calls: dict[int, list[int]] = field(default_factory=dict)
    errors: dict[int, Exception] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input = GatedInput(self.scenario.count, self.scenario.source, self.log, self.scenario.input_fails_at)

    async def task(self, batch: list[int]) -> list[int]:
        first = batch[0]
        self.calls[first] = list(batch)
        self.log.append(("start", first))
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates[first] = gate
        try:
            await gate
        except asyncio.CancelledError:
            self.log.append(("cancelled", first))
            raise
        kinds = [self.scenario.items[item] for item in batch]
        if "poison" in kinds:
            self.log.append(("failed", first))
            self.errors[first] = ValueError(f"poisoned batch at {first}")
            raise self.errors[first]
        if "short" in kinds:
            self.log.append(("failed", first))
            return [item * 10 for item in batch[:-1]]
        self.log.append(("succeeded", first))
        return [item * 10 for item in batch]

    def blocked(self) -> list[int]:
        waiting = sorted(first for first, gate in self.gates.items() if not gate.done())
        if self.input.pull_blocked():
            waiting.append(PULL)
        return waiting

    def release(self, choice: int) -> None:
        if choice == PULL:
            self.input.release_pull()
        else:
            self.gates[choice].set_result(None)


async def drive(call: asyncio.Task[Any], recorder: Any, draw_next: Callable[[list[int]], int]) -> None:
    """Release one blocked batch or pull at a time, in the drawn order, until ``call`` is done."""
    while True:
        await settle()
        if call.done():
            return
        blocked = recorder.blocked()
        assert blocked, "the run is still going, but no batch or pull is waiting"
        recorder.release(draw_next(blocked))


@dataclass(frozen=True)
class ExpectedTrip:
    rule: TripRule
    batch: int
    position: int


def expected_trip(scenario: BatchScenario, log: list[tuple[str, int]], starts: list[int]) -> ExpectedTrip | None:
    """Replay batch completions through the trip rules, which count batches as the batcher's docs state."""
    known = scenario.known_count
    batch_count = None if known is None else math.ceil(known / scenario.size())
    window = scenario.rolling_window
    recent: deque[bool] = deque(maxlen=window.size if window is not None else 1)
    failed = completed = 0
    for position, (entry, first) in enumerate(log):
        if entry == "input_error":
            # The run stops here as on a trip, but no rule fired.
            return None
        if entry not in ("succeeded", "failed"):
            continue
        completed += 1
        failed += entry == "failed"
        recent.append(entry == "failed")
        batch = starts.index(first)
        if scenario.max_failures is not None and failed > scenario.max_failures:
            return ExpectedTrip(TripRule.MAX_FAILURES, batch, position)
        ratio = scenario.max_failure_ratio
        if ratio is not None and batch_count is not None and failed > Fraction(str(ratio)) * batch_count:
            return ExpectedTrip(TripRule.MAX_FAILURE_RATIO, batch, position)
        if (
            window is not None
            and completed >= window.effective_min_completed
            and Fraction(sum(recent), len(recent)) >= Fraction(str(window.failure_rate))
        ):
            return ExpectedTrip(TripRule.ROLLING_WINDOW, batch, position)
    return None


@settings(deadline=None, max_examples=150)
@given(scenario=batch_scenarios(), data=st.data())
def test_batch_map_matches_documented_rules(scenario: BatchScenario, data: st.DataObject) -> None:
    """Batches cut the input as documented, each item shares its batch's fate, and trips fire where they should."""
    recorder = BatchRecorder(scenario)

    def draw_next(blocked: list[int]) -> int:
        return data.draw(st.sampled_from(blocked), label="completes next")

    async def main() -> tuple[Any, list[str], int, list[int] | None, list[tuple[str, int]]]:
        loop_errors = LoopErrors()
        asyncio.get_running_loop().set_exception_handler(loop_errors)
        before = asyncio.all_tasks()
        items = recorder.input.make()
        # return_result is drawn, so the overloads cannot choose a return type for the call.
        untyped_batch_map: Any = batch_map
        call = asyncio.create_task(
            untyped_batch_map(
                recorder.task,
                items,
                batch_size=scenario.batch_size,
                concurrency=scenario.concurrency,
                weight=weight if scenario.weighted else None,
                max_batch_weight=MAX_WEIGHT if scenario.weighted else None,
                total=scenario.total,
                max_failures=scenario.max_failures,
                max_failure_ratio=scenario.max_failure_ratio,
                rolling_window=scenario.rolling_window,
                return_result=scenario.return_result,
                progress_bar=False,
            )
        )
        await drive(call, recorder, draw_next)
        try:
            returned: Any = call.result()
        except (BatchError, FanOutInputError) as error:
            returned = error
        leftover = len(new_tasks(before))
        log = list(recorder.log)
        rest = await recorder.input.rest(items)
        return returned, loop_errors.messages(), leftover, rest, log

    returned, loop_errors, leftover, rest, log = asyncio.run(main())

    assert leftover == 0
    assert loop_errors == []

    expected_batches = scenario.batches()
    everything_succeeded = all(all(scenario.items[item] == "ok" for item in batch) for batch in expected_batches)
    if isinstance(returned, list):
        # The plain list comes back only when every item succeeded.
        assert not scenario.return_result
        assert everything_succeeded
        assert returned == [item * 10 for item in range(scenario.count)]
        return
    # The batcher's FanOutInputError carries a BatchResult, as BatchError does.
    reported = returned.result if isinstance(returned, BatchError | FanOutInputError) else returned
    assert isinstance(reported, BatchResult)
    result: BatchResult[int] = reported
    if isinstance(returned, BatchError):
        assert not scenario.return_result
        assert returned.__cause__ is result.batches.first_error
    event(f"tripped by {result.trip.rule.value}" if result.trip else "not tripped")

    # The batches are the documented cut of the input, and each task call got exactly its batch's items.
    spans = list(result.spans)
    assert [range(span.start, span.stop) for span in spans] == expected_batches[: len(spans)]
    assert result.batch_size == scenario.size()
    starts = [span.start for span in spans]
    for first, items in recorder.calls.items():
        assert items == list(expected_batches[starts.index(first)])

    # Each item shares its batch's fate, in input order.
    outcomes = list(result.outcomes)
    assert [outcome.index for outcome in outcomes] == list(range(len(outcomes)))
    assert result.succeeded + result.failed + result.cancelled + result.not_started == len(outcomes)
    for span, batch in zip(spans, result.batches.outcomes, strict=True):
        kinds = [scenario.items[item] for item in range(span.start, span.stop)]
        for index in range(span.start, span.stop):
            outcome = outcomes[index]
            assert outcome.status is batch.status
            if batch.status is OutcomeStatus.SUCCEEDED:
                assert outcome.value == index * 10
            elif batch.status is OutcomeStatus.FAILED and "poison" in kinds:
                assert outcome.error is recorder.errors[span.start]
            elif batch.status is OutcomeStatus.FAILED:
                assert isinstance(outcome.error, BatchLengthError)
                assert (outcome.error.expected, outcome.error.actual) == (span.size, span.size - 1)
        if batch.status is not OutcomeStatus.NOT_STARTED:
            assert span.start in recorder.calls
    assert all(outcome.status is OutcomeStatus.NOT_STARTED for outcome in outcomes[spans[-1].stop if spans else 0 :])

    # Never more than `concurrency` batches running at once.
    running = 0
    for entry, _ in log:
        running += entry == "start"
        running -= entry in ("succeeded", "failed", "cancelled")
        assert running <= scenario.concurrency

    # The run stops exactly where the rules, counting batches, put it, and no batch starts after that.
    expected = expected_trip(scenario, log, starts)
    broke_at = next((position for position, (entry, _) in enumerate(log) if entry == "input_error"), None)
    if expected is None and broke_at is not None:
        # The input raised first: every item it yielded is accounted for, and the error chains its exception.
        assert isinstance(returned, FanOutInputError)
        assert returned.__cause__ is recorder.input.error
        assert result.trip is None
        assert not result.input_exhausted
        assert len(outcomes) == log[broke_at][1]
        assert [entry for entry in log[broke_at + 1 :] if entry[0] == "start"] == []
    elif expected is None:
        assert result.trip is None
        assert len(outcomes) == scenario.count
        assert result.input_exhausted
    else:
        assert result.trip is not None
        assert (result.trip.rule, result.trip.index) == (expected.rule, expected.batch)
        assert [entry for entry in log[expected.position + 1 :] if entry[0] == "start"] == []

    # The input is accounted for: all of it, or every item read, with the rest left in a one-shot input.
    pull_interrupted = ("pull_cancelled", -1) in log
    if result.input_exhausted:
        assert len(outcomes) == scenario.count
        assert not pull_interrupted
    if scenario.source in ("list", "iterable") and result.tripped and broke_at is None:
        assert result.input_exhausted
    if rest is not None and not pull_interrupted and broke_at is None:
        # Reading the rest stops where the input raises, if it does.
        readable = scenario.count if scenario.input_fails_at is None else min(scenario.count, scenario.input_fails_at)
        assert rest == list(range(len(outcomes), readable))
    if not result.input_exhausted:
        assert result.tripped or isinstance(returned, FanOutInputError)


# ---------------------------------------------------------------- map_reduce


def append(accumulator: tuple[int, ...], value: int) -> tuple[int, ...]:
    return (*accumulator, value)


@dataclass(frozen=True)
class FoldScenario:
    """A map-reduce run: each item's kind, batch size and concurrency, and the batch whose fold step fails."""

    items: tuple[ItemKind, ...]
    batch_size: int
    concurrency: int
    reduce_fails_at: int | None
    async_reduce: bool


@settings(deadline=None, max_examples=100)
@given(
    scenario=st.builds(
        FoldScenario,
        items=st.lists(st.sampled_from(["ok", "ok", "ok", "ok", "ok", "poison"]), max_size=12).map(tuple),
        batch_size=st.integers(1, 3),
        concurrency=st.integers(1, 4),
        reduce_fails_at=st.none() | st.integers(0, 5),
        async_reduce=st.booleans(),
    ),
    data=st.data(),
)
def test_map_reduce_folds_in_batch_order(scenario: FoldScenario, data: st.DataObject) -> None:
    """The fold gets the batch values in batch order, whatever order they finish in; errors end it as documented."""
    batch_scenario = BatchScenario(
        items=scenario.items,
        batch_size=scenario.batch_size,
        weighted=False,
        concurrency=scenario.concurrency,
        max_failures=None,
        max_failure_ratio=None,
        rolling_window=None,
        source="list",
        hinted=False,
        return_result=False,
        input_fails_at=None,
    )
    recorder = BatchRecorder(batch_scenario)
    folded: list[int] = []
    reduce_error = RuntimeError("reduce failed")

    def fold_step(accumulator: tuple[int, ...], value: int) -> tuple[int, ...]:
        folded.append(value)
        if len(folded) - 1 == scenario.reduce_fails_at:
            raise reduce_error
        return (*accumulator, value)

    async def fold_step_async(accumulator: tuple[int, ...], value: int) -> tuple[int, ...]:
        await asyncio.sleep(0)
        return fold_step(accumulator, value)

    reducer: Callable[[tuple[int, ...], int], Any] = fold_step_async if scenario.async_reduce else fold_step
    initial: tuple[int, ...] = ()

    def draw_next(blocked: list[int]) -> int:
        return data.draw(st.sampled_from(blocked), label="completes next")

    async def main() -> tuple[Any, list[str], int]:
        loop_errors = LoopErrors()
        asyncio.get_running_loop().set_exception_handler(loop_errors)
        before = asyncio.all_tasks()
        call = asyncio.create_task(
            map_reduce(
                recorder.task,
                list(range(batch_scenario.count)),
                reduce=reducer,
                initial=initial,
                combine=sum,
                batch_size=scenario.batch_size,
                concurrency=scenario.concurrency,
                progress_bar=False,
            )
        )
        await drive(call, recorder, draw_next)
        try:
            returned: Any = call.result()
        except (BatchError, ReduceError) as error:
            returned = error
        return returned, loop_errors.messages(), len(new_tasks(before))

    returned, loop_errors, leftover = asyncio.run(main())

    assert leftover == 0
    assert loop_errors == []
    batches = batch_scenario.batches()
    values = [sum(item * 10 for item in batch) for batch in batches]
    # The fold got a prefix of the batch values, in batch order.
    assert folded == values[: len(folded)]

    reduce_raised = scenario.reduce_fails_at is not None and len(folded) > scenario.reduce_fails_at
    poisoned = any(kind == "poison" for kind in scenario.items)
    if reduce_raised:
        event("reduce failed")
        assert isinstance(returned, ReduceError)
        assert returned.__cause__ is reduce_error
        assert returned.batch.index == scenario.reduce_fails_at
    elif poisoned:
        event("a batch failed")
        assert isinstance(returned, BatchError)
        assert all(value is None for value in returned.result.values())
    else:
        event("folded")
        assert returned == tuple(values)
        assert functools.reduce(append, values, initial) == returned
