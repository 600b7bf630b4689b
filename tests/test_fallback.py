"""Tests for the fallback runner, with plain async callables and with tasks on the real local Flyte engine."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import inspect
import itertools
import logging
import pickle
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, assert_type, cast

import flyte
import flyte.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flyte_patterns import (
    AllAttemptsFailedError,
    Alternative,
    AttemptTimeoutError,
    FallbackAttempt,
    FallbackEvent,
    FallbackOutcome,
    ResultRejectedError,
    earlier_attempts,
    is_out_of_memory,
    with_fallback,
)

from .conftest import RunLocal


class APIError(Exception):
    pass


class HTTPTimeout(APIError):
    pass


class RateLimited(APIError):
    pass


class BoomError(Exception):
    pass


class Fake:
    """An async test double that records its calls, then raises ``error`` or returns ``result``."""

    def __init__(self, name: str, *, result: object = None, error: BaseException | None = None) -> None:
        self.__name__ = name
        self.result = result
        self.error = error
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return self.result


class Blocker:
    """An async test double that blocks until cancelled, and records what happened."""

    def __init__(self, name: str, *, on_cancel: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.__name__ = name
        self.started = asyncio.Event()
        self.cancelled = False
        self.unwound = False
        self.on_cancel = on_cancel

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            # Take a few loop turns to unwind, so a caller that did not wait would see unwound still False.
            for _ in range(3):
                await asyncio.sleep(0)
            self.unwound = True
            if self.on_cancel is not None:
                return await self.on_cancel()
            raise
        return None


def _chain(*excs: BaseException) -> BaseException:
    """Link ``excs`` so each is the ``__cause__`` of the one before it, and return the first."""
    for outer, inner in itertools.pairwise(excs):
        outer.__cause__ = inner
    return excs[0]


def _remote(code: str, message: str = "failed") -> flyte.errors.RuntimeUserError:
    """Build a task error as a Flyte cluster delivers it: only the class name survives, as the code.

    A hand-built error replaces the cluster run, which the test suite cannot reach. The local engine builds the
    same class through the same conversion, as the real-engine tests at the end check.
    """
    return flyte.errors.RuntimeUserError(code, message)


def _other_tasks() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current}


# ---------------------------------------------------------------- basics


async def test_primary_success_returns_value() -> None:
    primary = Fake("primary", result=42)
    alternative = Fake("alternative", result=0)
    assert await with_fallback(primary, [alternative], 1, b=2, on=(ValueError,)) == 42
    assert primary.calls == [((1,), {"b": 2})]
    assert alternative.calls == []


async def test_alternative_gets_same_arguments() -> None:
    primary = Fake("primary", error=ValueError("bad input"))
    alternative = Fake("alternative", result="slow path")
    assert await with_fallback(primary, [alternative], "x", 2, key="k", on=(ValueError,)) == "slow path"
    assert primary.calls == [(("x", 2), {"key": "k"})]
    assert alternative.calls == [(("x", 2), {"key": "k"})]


async def test_first_success_wins_in_order() -> None:
    primary = Fake("primary", error=ValueError("a"))
    first = Fake("first", error=ValueError("b"))
    second = Fake("second", result="second")
    third = Fake("third", result="third")
    assert await with_fallback(primary, [first, second, third], on=(ValueError,)) == "second"
    assert len(first.calls) == 1
    assert len(second.calls) == 1
    assert third.calls == []


async def test_outcome_names_serving_alternative() -> None:
    primary = Fake("gpu_model", error=MemoryError("CUDA out of memory"))
    alternative = Fake("cpu_model", result=[1, 2])
    outcome = await with_fallback(primary, [alternative], return_outcome=True)
    assert outcome.value == [1, 2]
    assert outcome.index == 1
    assert outcome.name == "cpu_model"
    assert outcome.used_fallback is True
    assert [(a.index, a.name, a.status) for a in outcome.attempts] == [
        (0, "gpu_model", "failed"),
        (1, "cpu_model", "succeeded"),
    ]
    assert outcome.attempts[0].error is primary.error
    assert outcome.attempts[1].error is None
    assert all(a.duration >= 0 for a in outcome.attempts)


async def test_outcome_for_primary_success() -> None:
    outcome = await with_fallback(Fake("primary", result=1), [Fake("alternative")], return_outcome=True)
    assert outcome.index == 0
    assert outcome.used_fallback is False
    assert len(outcome.attempts) == 1


async def test_outcome_flag_false_returns_value() -> None:
    assert await with_fallback(Fake("primary", result=7), [Fake("alternative")], return_outcome=False) == 7


async def test_overload_types_match_runtime() -> None:
    async def primary(x: int) -> int:
        raise MemoryError

    async def alternative(x: int) -> int:
        return x + 1

    value = await with_fallback(primary, [alternative], 1)
    assert_type(value, int)
    assert value == 2

    outcome = await with_fallback(primary, [alternative], 1, return_outcome=True)
    assert_type(outcome, FallbackOutcome[int])
    assert isinstance(outcome, FallbackOutcome)

    flag: bool = bool(value)
    either = await with_fallback(primary, [Alternative(alternative)], 1, return_outcome=flag)
    assert_type(either, int | FallbackOutcome[int])
    assert isinstance(either, FallbackOutcome)


async def test_sync_callable_runs() -> None:
    def primary(x: int) -> int:
        raise MemoryError

    def alternative(x: int) -> int:
        return x * 3

    # Typed for async callables; synchronous ones also work at run time.
    assert await with_fallback(primary, [alternative], 2) == 6  # type: ignore[arg-type]


async def test_alternatives_from_generator() -> None:
    primary = Fake("primary", error=MemoryError())
    alternatives = (fake for fake in [Fake("a", result="a")])
    assert await with_fallback(primary, alternatives) == "a"


# ---------------------------------------------------------------- the default trigger


@pytest.mark.parametrize(
    "error",
    [
        MemoryError("in-process"),
        flyte.errors.OOMError("OOMKilled", "container killed"),
        flyte.errors.OOMError("RetriesExhausted|OOMKilled", "container killed"),
        _remote("MemoryError", "no memory"),
        _chain(RuntimeError("driver"), MemoryError("deep")),
    ],
)
async def test_default_falls_back_on_out_of_memory(error: BaseException) -> None:
    assert await with_fallback(Fake("primary", error=error), [Fake("alternative", result="ok")]) == "ok"


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad input"),
        # Flyte 2.12 names this OOMError only because the class name contains "OOM".
        flyte.errors.OOMError("BoomError", "boom"),
        _remote("HTTPTimeout", "slow"),
        TimeoutError("task's own timeout"),
    ],
)
async def test_default_ignores_other_errors(error: Exception) -> None:
    alternative = Fake("alternative", result="ok")
    with pytest.raises(type(error)) as caught:
        await with_fallback(Fake("primary", error=error), [alternative])
    assert caught.value is error
    assert alternative.calls == []


async def test_default_is_out_of_memory() -> None:
    defaults = inspect.signature(with_fallback).parameters
    assert defaults["on"].default is is_out_of_memory


# ---------------------------------------------------------------- matching through chains and groups


async def test_deep_cause_chain_falls_back() -> None:
    error = _chain(RuntimeError("outer"), RuntimeError("middle"), ValueError("root"))
    alternative = Fake("alternative", result="ok")
    assert await with_fallback(Fake("primary", error=error), [alternative], on=(ValueError,)) == "ok"
    assert len(alternative.calls) == 1


async def test_group_member_cause_falls_back() -> None:
    second = _chain(RuntimeError("second"), KeyError("k"))
    group = ExceptionGroup("many", [OSError("first"), second])  # type: ignore[type-var]
    alternative = Fake("alternative", result="ok")
    assert await with_fallback(Fake("primary", error=group), [alternative], on=(KeyError,)) == "ok"


async def test_unmatched_error_is_same_object() -> None:
    error = _chain(RuntimeError("outer"), TypeError("root"))
    alternative = Fake("alternative", result="ok")
    with pytest.raises(RuntimeError) as caught:
        await with_fallback(Fake("primary", error=error), [alternative], on=(ValueError,))
    assert caught.value is error
    assert isinstance(caught.value.__cause__, TypeError)
    assert alternative.calls == []
    assert earlier_attempts(caught.value) == ()
    assert not hasattr(caught.value, "__notes__")


async def test_cause_cycle_terminates() -> None:
    first = RuntimeError("a")
    second = RuntimeError("b")
    first.__cause__ = second
    second.__cause__ = first
    alternative = Fake("alternative")
    with pytest.raises(RuntimeError) as caught:
        await with_fallback(Fake("primary", error=first), [alternative], on=(ValueError,))
    assert caught.value is first
    assert alternative.calls == []


async def test_cause_cycle_with_match_falls_back() -> None:
    first = RuntimeError("a")
    second = ValueError("b")
    first.__cause__ = second
    second.__context__ = first
    assert await with_fallback(Fake("primary", error=first), [Fake("a", result=1)], on=(ValueError,)) == 1


async def test_code_string_trigger() -> None:
    assert await with_fallback(Fake("p", error=_remote("HTTPTimeout")), [Fake("a", result=1)], on="HTTPTimeout") == 1


async def test_predicate_trigger() -> None:
    def is_retryable(error: Exception) -> bool:
        return "retry" in str(error)

    assert await with_fallback(Fake("p", error=ValueError("please retry")), [Fake("a", result=1)], on=is_retryable)
    with pytest.raises(ValueError, match="fatal"):
        await with_fallback(Fake("p", error=ValueError("fatal")), [Fake("a", result=1)], on=is_retryable)


async def test_raising_predicate_keeps_attempt_error() -> None:
    def broken(error: Exception) -> bool:
        raise LookupError("bug in predicate")

    primary_error = ValueError("primary")
    alternative = Fake("alternative")
    with pytest.raises(LookupError) as caught:
        await with_fallback(Fake("p", error=primary_error), [alternative], on=broken)
    assert caught.value.__context__ is primary_error
    assert alternative.calls == []


# ---------------------------------------------------------------- the rules against a model


class ErrorA(Exception):
    pass


class ErrorB(Exception):
    pass


class ErrorC(Exception):
    pass


_OUTCOMES = {"ok": None, "A": ErrorA, "B": ErrorB, "C": ErrorC}


@settings(max_examples=150, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(sorted(_OUTCOMES)), min_size=2, max_size=5),
    triggers=st.lists(st.sampled_from(["A", "B", "inherit"]), min_size=4, max_size=4),
)
def test_chain_matches_model(outcomes: list[str], triggers: list[str]) -> None:
    """Check the runner against a direct statement of the rules, on random chains.

    The call's ``on`` is ErrorA; each alternative takes over on ErrorA, on ErrorB, or inherits the call's ``on``.
    ErrorC matches no trigger.
    """
    classes: dict[str, type[Exception]] = {"A": ErrorA, "B": ErrorB}
    fakes = []
    for index, outcome in enumerate(outcomes):
        error_class = _OUTCOMES[outcome]
        fakes.append(Fake(f"f{index}", result=index, error=None if error_class is None else error_class(index)))
    alternative_triggers = [classes[t] if t != "inherit" else ErrorA for t in triggers[: len(outcomes) - 1]]
    chain = [
        Alternative(fake, on=None if trigger == "inherit" else classes[trigger])
        for fake, trigger in zip(fakes[1:], triggers, strict=False)
    ]

    # The model: follow the rules by hand.
    ran: list[int] = []
    expected_value: int | None = None
    expected_error: BaseException | None = None
    current = 0
    while True:
        ran.append(current)
        error = fakes[current].error
        if error is None:
            expected_value = current
            break
        later = [j for j in range(current + 1, len(fakes)) if isinstance(error, alternative_triggers[j - 1])]
        if later:
            current = later[0]
            continue
        if not any(isinstance(error, trigger) for trigger in alternative_triggers):
            expected_error = error
        break

    async def run() -> int:
        return cast(int, await with_fallback(fakes[0], chain, on=ErrorA))

    if expected_value is not None:
        assert asyncio.run(run()) == expected_value
    elif expected_error is not None:
        with pytest.raises(Exception) as unexpected:
            asyncio.run(run())
        assert unexpected.value is expected_error
    else:
        with pytest.raises(AllAttemptsFailedError) as all_failed:
            asyncio.run(run())
        assert list(all_failed.value.exceptions) == [fakes[i].error for i in ran]
    assert [i for i, fake in enumerate(fakes) if fake.calls] == ran


# ---------------------------------------------------------------- remote-shaped errors


# These errors are built the way a Flyte cluster delivers a child task's error to the awaiting parent: the
# original class is gone and only its name survives, as the code, sometimes prefixed by the server. Building them
# by hand replaces the cluster run, which the test suite cannot reach.
@pytest.mark.parametrize(
    "error",
    [
        flyte.errors.RuntimeUserError("HTTPTimeout", "upstream did not answer"),
        flyte.errors.RetriesExhaustedError("RetriesExhausted|HTTPTimeout", "upstream did not answer"),
        # Flyte 2.12's conversion picks the class from the full code but strips the server prefix from `.code`.
        flyte.errors.RetriesExhaustedError("HTTPTimeout", "upstream did not answer"),
    ],
)
async def test_remote_error_matches_parent_class(error: Exception) -> None:
    alternative = Fake("cached", result="cached")
    assert await with_fallback(Fake("live", error=error), [alternative], on=(APIError,)) == "cached"

    other = Fake("cached")
    with pytest.raises(flyte.errors.RuntimeUserError) as caught:
        await with_fallback(Fake("live", error=error), [other], on=(ValueError,))
    assert caught.value is error
    assert other.calls == []


async def test_remote_error_not_matched_by_runtime_error() -> None:
    # A Flyte error is a RuntimeError, but it stands for the user's exception named by its code.
    error = _remote("ValueError")
    with pytest.raises(flyte.errors.RuntimeUserError):
        await with_fallback(Fake("p", error=error), [Fake("a")], on=(RuntimeError,))


# ---------------------------------------------------------------- how the chain ends


async def test_all_failed_keeps_every_error() -> None:
    errors = [MemoryError("gpu"), MemoryError("cpu"), MemoryError("tiny")]
    fakes = [Fake(name, error=error) for name, error in zip(["gpu", "cpu", "tiny"], errors, strict=True)]
    with pytest.raises(AllAttemptsFailedError) as caught:
        await with_fallback(fakes[0], fakes[1:])
    group = caught.value
    assert isinstance(group, ExceptionGroup)
    assert list(group.exceptions) == errors
    assert group.exceptions[0] is errors[0]
    assert [(a.index, a.name, a.status) for a in group.attempts] == [
        (0, "gpu", "failed"),
        (1, "cpu", "failed"),
        (2, "tiny", "failed"),
    ]
    assert "all 3 attempts failed" in str(group)
    assert group.__cause__ is None
    assert group.__context__ is None


async def test_all_failed_pickles() -> None:
    attempts = [
        FallbackAttempt(0, "p", "failed", ValueError("x"), 0.1),
        FallbackAttempt(1, "a", "timed_out", AttemptTimeoutError(1, "a", 0.5), 0.5),
        FallbackAttempt(2, "b", "rejected", ResultRejectedError(2, "b", [1]), 0.0),
    ]
    copy = pickle.loads(pickle.dumps(AllAttemptsFailedError(attempts)))
    assert isinstance(copy, AllAttemptsFailedError)
    assert [type(e) for e in copy.exceptions] == [ValueError, AttemptTimeoutError, ResultRejectedError]
    assert copy.attempts[1].status == "timed_out"


async def test_all_failed_supports_except_star() -> None:
    primary = Fake("p", error=MemoryError("p"))
    alternative = Fake("a", error=MemoryError("a"))
    caught: list[BaseException] = []
    try:
        await with_fallback(primary, [alternative])
    except* MemoryError as group:
        caught.extend(group.exceptions)
    assert caught == [primary.error, alternative.error]


async def test_unexpected_error_after_fallback() -> None:
    context = KeyError("its own context")
    error = ValueError("alternative broke")
    error.__context__ = context
    primary = Fake("primary", error=MemoryError("gpu"))
    alternative = Fake("alternative", error=error)
    with pytest.raises(ValueError) as caught:
        await with_fallback(primary, [alternative, Fake("never")])
    assert caught.value is error
    assert caught.value.__context__ is context
    assert caught.value.__cause__ is None
    earlier = earlier_attempts(caught.value)
    assert [(a.index, a.name, a.status) for a in earlier] == [(0, "primary", "failed")]
    assert earlier[0].error is primary.error
    assert len(caught.value.__notes__) == 1
    assert "primary 'primary': MemoryError: gpu" in caught.value.__notes__[0]


async def test_earlier_attempts_of_foreign_error() -> None:
    assert earlier_attempts(ValueError("never passed through")) == ()


# ---------------------------------------------------------------- per-alternative triggers


async def test_alternative_own_trigger_skips_others() -> None:
    primary = Fake("gpu", error=RateLimited("429"))
    cpu = Fake("cpu", result="cpu")
    cached = Fake("cached", result="cached")
    events: list[FallbackEvent] = []
    outcome = await with_fallback(
        primary,
        [Alternative(cpu, on=MemoryError), Alternative(cached, on=(RateLimited,))],
        return_outcome=True,
        on_fallback=events.append,
    )
    assert outcome.value == "cached"
    assert outcome.index == 2
    assert cpu.calls == []
    assert [a.index for a in outcome.attempts] == [0, 2]
    assert len(events) == 1
    assert events[0].skipped == (1,)
    assert events[0].next_index == 2
    assert events[0].next_name == "cached"


async def test_alternative_inherits_call_trigger() -> None:
    primary = Fake("p", error=KeyError("k"))
    inherits = Fake("inherits", result="inherited")
    assert await with_fallback(primary, [Alternative(inherits), Fake("later")], on=(KeyError,)) == "inherited"


async def test_chained_triggers_hand_over() -> None:
    primary = Fake("gpu", error=MemoryError("gpu"))
    cpu = Fake("cpu", error=RateLimited("cpu hit the quota"))
    cached = Fake("cached", result="cached")
    chain = [Alternative(cpu, on=MemoryError), Alternative(cached, on=RateLimited)]
    assert await with_fallback(primary, chain) == "cached"


async def test_error_matching_only_earlier_trigger() -> None:
    # The CPU model also runs out of memory; the cache only takes over on rate limits. That is a known failure
    # of the chain, so every attempt's error is kept, not just the last one.
    primary = Fake("gpu", error=MemoryError("gpu"))
    cpu = Fake("cpu", error=MemoryError("cpu"))
    cached = Fake("cached", result="cached")
    with pytest.raises(AllAttemptsFailedError) as caught:
        await with_fallback(primary, [Alternative(cpu, on=MemoryError), Alternative(cached, on=RateLimited)])
    assert list(caught.value.exceptions) == [primary.error, cpu.error]
    assert cached.calls == []


async def test_error_matching_no_trigger_propagates() -> None:
    primary = Fake("gpu", error=MemoryError("gpu"))
    error = ZeroDivisionError("bug")
    cpu = Fake("cpu", error=error)
    with pytest.raises(ZeroDivisionError) as caught:
        await with_fallback(primary, [Alternative(cpu, on=MemoryError), Alternative(Fake("c"), on=RateLimited)])
    assert caught.value is error


async def test_alternative_name_used() -> None:
    outcome = await with_fallback(
        Fake("p", error=MemoryError()), [Alternative(Fake("f", result=1), name="small model")], return_outcome=True
    )
    assert outcome.name == "small model"


async def test_alternative_on_stored_as_tuple() -> None:
    spec = Alternative(Fake("f"), on=[KeyError, "HTTPTimeout"])
    assert spec.on == (KeyError, "HTTPTimeout")


# ---------------------------------------------------------------- result predicate


async def test_rejected_result_falls_back() -> None:
    primary = Fake("fast_parser", result="")
    alternative = Fake("careful_parser", result="parsed")
    outcome = await with_fallback(
        primary, [alternative], "doc", accept_result=lambda text: text != "", return_outcome=True
    )
    assert outcome.value == "parsed"
    rejected = outcome.attempts[0]
    assert rejected.status == "rejected"
    assert isinstance(rejected.error, ResultRejectedError)
    assert rejected.error.value == ""
    assert rejected.error.index == 0


async def test_rejection_ignores_alternative_trigger() -> None:
    alternative = Fake("a", result=2)
    chain = [Alternative(alternative, on=RateLimited)]
    assert await with_fallback(Fake("p", result=1), chain, accept_result=lambda v: v == 2) == 2


async def test_last_rejection_raises_group_with_value() -> None:
    with pytest.raises(AllAttemptsFailedError) as caught:
        await with_fallback(Fake("p", result=1), [Fake("a", result=2)], accept_result=lambda v: v > 5)
    values = [e.value for e in caught.value.exceptions if isinstance(e, ResultRejectedError)]
    assert values == [1, 2]


async def test_predicate_returning_none_rejected() -> None:
    def forgot_return(value: object) -> None:
        value == 1  # noqa: B015

    with pytest.raises(TypeError, match="returned None"):
        await with_fallback(Fake("p", result=1), [Fake("a")], accept_result=forgot_return)


async def test_raising_result_predicate_propagates() -> None:
    def broken(value: object) -> bool:
        raise ArithmeticError("bug")

    alternative = Fake("a")
    with pytest.raises(ArithmeticError):
        await with_fallback(Fake("p", result=1), [alternative], accept_result=broken)
    assert alternative.calls == []


# ---------------------------------------------------------------- per-attempt timeout


async def test_timeout_cancels_awaits_then_falls_back() -> None:
    primary = Blocker("slow")
    unwound_when_alternative_started: list[bool] = []

    async def alternative(x: int) -> int:
        unwound_when_alternative_started.append(primary.unwound)
        return x

    outcome = await with_fallback(primary, [alternative], 5, attempt_timeout=0.05, return_outcome=True)
    assert outcome.value == 5
    assert primary.cancelled
    assert unwound_when_alternative_started == [True]
    timed_out = outcome.attempts[0]
    assert timed_out.status == "timed_out"
    assert isinstance(timed_out.error, AttemptTimeoutError)
    assert isinstance(timed_out.error, TimeoutError)
    assert timed_out.error.timeout == 0.05
    assert timed_out.error.name == "slow"
    # The case is about time, so only a generous lower bound on the recorded duration.
    assert timed_out.duration >= 0.04


async def test_timeout_accepts_timedelta() -> None:
    outcome = await with_fallback(
        Blocker("slow"), [Fake("a", result=1)], attempt_timeout=timedelta(milliseconds=20), return_outcome=True
    )
    assert outcome.index == 1


async def test_timeout_ignores_alternative_trigger() -> None:
    chain = [Alternative(Fake("a", result=1), on=RateLimited)]
    assert await with_fallback(Blocker("slow"), chain, attempt_timeout=0.02) == 1


async def test_timeout_of_every_attempt() -> None:
    with pytest.raises(AllAttemptsFailedError) as caught:
        await with_fallback(Blocker("a"), [Blocker("b")], attempt_timeout=0.02)
    assert [type(e) for e in caught.value.exceptions] == [AttemptTimeoutError, AttemptTimeoutError]


async def test_timeout_converted_by_task_still_timeout() -> None:
    async def convert() -> Any:
        raise RuntimeError("stopped early")

    primary = Blocker("converts", on_cancel=convert)
    outcome = await with_fallback(primary, [Fake("a", result=1)], attempt_timeout=0.02, return_outcome=True)
    error = outcome.attempts[0].error
    assert isinstance(error, AttemptTimeoutError)
    assert isinstance(error.__cause__, RuntimeError)


async def test_task_own_timeout_error_not_ours() -> None:
    own = TimeoutError("HTTP client timed out")
    alternative = Fake("a")
    with pytest.raises(TimeoutError) as caught:
        await with_fallback(Fake("p", error=own), [alternative], attempt_timeout=10)
    assert caught.value is own
    assert alternative.calls == []


async def test_slow_success_within_timeout() -> None:
    assert await with_fallback(Fake("p", result=3), [Fake("a")], attempt_timeout=10) == 3


# ---------------------------------------------------------------- cancellation and interrupts


async def test_caller_cancel_starts_no_alternative() -> None:
    primary = Blocker("primary")
    alternative = Fake("alternative")
    before = _other_tasks()
    call = asyncio.create_task(with_fallback(primary, [alternative], on=(Exception,)))
    await primary.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert primary.cancelled
    assert primary.unwound
    assert alternative.calls == []
    assert _other_tasks() == before


async def test_caller_cancel_during_alternative() -> None:
    alternative = Blocker("alternative")
    last = Fake("last")
    call = asyncio.create_task(with_fallback(Fake("primary", error=ValueError()), [alternative, last], on=(Exception,)))
    await alternative.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert alternative.cancelled
    assert last.calls == []


async def test_caller_cancel_converted_by_task() -> None:
    async def convert() -> Any:
        raise RuntimeError("shutting down")

    primary = Blocker("primary", on_cancel=convert)
    alternative = Fake("alternative")
    call = asyncio.create_task(with_fallback(primary, [alternative], on=(Exception,)))
    await primary.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await call
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert alternative.calls == []


async def test_caller_cancel_swallowed_by_task() -> None:
    async def swallow() -> Any:
        return "value after cancel"

    primary = Blocker("primary", on_cancel=swallow)
    call = asyncio.create_task(with_fallback(primary, [Fake("a")], on=(Exception,)))
    await primary.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_caller_cancel_with_timeout_set() -> None:
    primary = Blocker("primary")
    alternative = Fake("alternative")
    call = asyncio.create_task(with_fallback(primary, [alternative], on=(Exception,), attempt_timeout=60))
    await primary.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert alternative.calls == []


async def test_caller_timeout_not_attempt_timeout() -> None:
    primary = Blocker("primary")
    alternative = Fake("alternative")
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.05):
            await with_fallback(primary, [alternative], on=(Exception,), attempt_timeout=60)
    assert not isinstance(caught.value, AttemptTimeoutError)
    assert alternative.calls == []


async def test_wait_for_cancels_chain() -> None:
    primary = Blocker("primary")
    alternative = Fake("alternative")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(with_fallback(primary, [alternative], on=(Exception,)), 0.05)
    assert primary.cancelled
    assert alternative.calls == []


async def test_cancel_already_pending_is_not_ours() -> None:
    # A cancel request that an enclosing scope swallowed before the call does not stop the chain.
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)
    assert task.cancelling() == 1
    try:
        assert await with_fallback(Fake("p", error=ValueError()), [Fake("a", result=1)], on=ValueError) == 1
    finally:
        task.uncancel()


@pytest.mark.parametrize("interrupt", [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(3)])
async def test_interrupts_propagate(interrupt: BaseException) -> None:
    alternative = Fake("alternative")
    with pytest.raises(type(interrupt)) as caught:
        await with_fallback(Fake("primary", error=interrupt), [alternative], on=(BaseException,))
    assert caught.value is interrupt
    assert alternative.calls == []


async def test_group_with_cancellation_propagates() -> None:
    group = BaseExceptionGroup("mixed", [ValueError("x"), asyncio.CancelledError()])
    alternative = Fake("alternative")
    with pytest.raises(BaseExceptionGroup) as caught:
        await with_fallback(Fake("primary", error=group), [alternative], on=(ValueError,))
    assert caught.value is group
    assert alternative.calls == []


async def test_runtime_error_from_cancel_falls_back() -> None:
    error = _chain(RuntimeError("worker stopped"), asyncio.CancelledError())
    alternative = Fake("alternative", result="ok")
    assert await with_fallback(Fake("primary", error=error), [alternative], on=(RuntimeError,)) == "ok"


async def test_non_exception_base_propagates() -> None:
    class Stop(BaseException):
        pass

    stop = Stop()
    alternative = Fake("alternative")
    with pytest.raises(Stop) as caught:
        await with_fallback(Fake("primary", error=stop), [alternative], on=(BaseException,))
    assert caught.value is stop
    assert alternative.calls == []


# ---------------------------------------------------------------- logs and hooks


async def test_log_line_per_fallback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flyte_patterns.fallback")
    chain = [Fake("first", error=MemoryError("again")), Fake("second", result=1)]
    await with_fallback(Fake("primary", error=MemoryError("gpu")), chain)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["flyte_patterns.fallback"] * 2
    assert (
        warnings[0].message == "primary 'primary' failed with MemoryError: gpu; falling back to alternative 1 'first'"
    )
    assert "falling back to alternative 2 'second'" in warnings[1].message
    served = [r.message for r in caplog.records if r.levelno == logging.INFO]
    assert served == ["alternative 2 'second' served the result after primary 'primary', alternative 1 'first' failed"]


async def test_log_line_wording(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flyte_patterns.fallback")
    await with_fallback(Blocker("slow"), [Fake("a", result=1)], attempt_timeout=0.02)
    await with_fallback(Fake("p", result=0), [Fake("a", result=1)], accept_result=bool)
    await with_fallback(
        Fake("gpu", error=RateLimited("429")),
        [Alternative(Fake("cpu"), on=MemoryError), Alternative(Fake("cached", result=1), on=RateLimited)],
    )
    await with_fallback(Fake("live", error=_remote("HTTPTimeout", "slow")), [Fake("a", result=1)], on=APIError)
    assert [r.message for r in caplog.records] == [
        "primary 'slow' timed out after 0.02 s; falling back to alternative 1 'a'",
        "primary 'p' returned a result that accept_result rejected: 0; falling back to alternative 1 'a'",
        "primary 'gpu' failed with RateLimited: 429; falling back to alternative 2 'cached', "
        "skipping alternative 1 'cpu' whose trigger does not match",
        "primary 'live' failed with RuntimeUserError (code 'HTTPTimeout'): slow; falling back to alternative 1 'a'",
    ]


async def test_no_log_without_fallback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flyte_patterns.fallback")
    await with_fallback(Fake("primary", result=1), [Fake("a")])
    assert caplog.records == []


async def test_hook_receives_each_event() -> None:
    events: list[FallbackEvent] = []
    primary = Fake("primary", error=MemoryError("gpu"))
    chain = [Fake("first", error=MemoryError("cpu")), Fake("second", result=1)]
    await with_fallback(primary, chain, on_fallback=events.append)
    assert [(e.failed.index, e.failed.name, e.next_index, e.next_name) for e in events] == [
        (0, "primary", 1, "first"),
        (1, "first", 2, "second"),
    ]
    assert events[0].failed.error is primary.error
    assert events[0].skipped == ()


async def test_raising_hook_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: FallbackEvent) -> None:
        raise RuntimeError("hook bug")

    assert await with_fallback(Fake("p", error=MemoryError()), [Fake("a", result=1)], on_fallback=broken) == 1
    hook_records = [r for r in caplog.records if "on_fallback hook" in r.message]
    assert len(hook_records) == 1
    assert hook_records[0].exc_info is not None


async def test_hook_returning_coroutine_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def later(event: FallbackEvent) -> None:
        return None

    def sneaky(event: FallbackEvent) -> Any:
        return later(event)

    assert await with_fallback(Fake("p", error=MemoryError()), [Fake("a", result=1)], on_fallback=sneaky) == 1
    assert any("returned a coroutine" in r.message for r in caplog.records)


# ---------------------------------------------------------------- arguments


async def test_task_parameter_named_like_option() -> None:
    async def search(query: str, on: str) -> str:
        raise MemoryError

    async def fallback_search(query: str, on: str) -> str:
        return f"{query} on {on}"

    # Positionally: the runner passes it through.
    assert await with_fallback(search, [fallback_search], "cats", "2024-01-01") == "cats on 2024-01-01"
    # By keyword: bind it first, because ``on=`` belongs to the runner.
    bound = functools.partial(search, on="2024-01-01")
    bound_fallback = functools.partial(fallback_search, on="2024-01-01")
    assert await with_fallback(bound, [bound_fallback], "cats") == "cats on 2024-01-01"


async def test_positional_only_names_reach_task() -> None:
    async def task(primary: int, alternatives: int) -> int:
        raise MemoryError

    async def fallback(primary: int, alternatives: int) -> int:
        return primary + alternatives

    assert await with_fallback(task, [fallback], primary=1, alternatives=2) == 3


def _never_called() -> Fake:
    return Fake("never", result="should not run")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"on": ()}, ValueError, "on must name at least one"),
        ({"on": (int,)}, TypeError, "on must contain exception classes.*int"),
        ({"on": (ValueError("x"),)}, TypeError, r"ValueError\('x'\)"),
        ({"on": 42}, TypeError, "on must be .*42"),
        ({"on": ("",)}, ValueError, "empty error code"),
        ({"on": (is_out_of_memory, MemoryError)}, TypeError, "on must contain exception classes .*is_out_of_memory"),
        ({"attempt_timeout": 0}, ValueError, "attempt_timeout must be a positive"),
        ({"attempt_timeout": -1.0}, ValueError, "attempt_timeout"),
        ({"attempt_timeout": "5"}, TypeError, "attempt_timeout must be a number"),
        ({"attempt_timeout": True}, TypeError, "attempt_timeout"),
        ({"return_outcome": "yes"}, TypeError, "return_outcome must be a bool, got 'yes'"),
        ({"accept_result": 3}, TypeError, r"accept_result must be a synchronous function or None, got 3 \(int\)"),
        ({"on_fallback": "log"}, TypeError, "on_fallback"),
    ],
)
async def test_invalid_options_rejected(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    primary = _never_called()
    alternative = _never_called()
    with pytest.raises(error, match=pattern):
        await with_fallback(primary, [alternative], **kwargs)
    assert primary.calls == []
    assert alternative.calls == []


async def test_async_predicates_rejected() -> None:
    async def async_predicate(value: object) -> bool:
        return True

    primary = _never_called()
    with pytest.raises(TypeError, match="accept_result must be a synchronous function"):
        await with_fallback(primary, [_never_called()], accept_result=async_predicate)
    with pytest.raises(TypeError, match="on must be a synchronous predicate"):
        await with_fallback(primary, [_never_called()], on=async_predicate)
    with pytest.raises(TypeError, match="on_fallback must be a synchronous function"):
        await with_fallback(primary, [_never_called()], on_fallback=async_predicate)
    assert primary.calls == []


async def test_empty_alternatives_rejected() -> None:
    primary = _never_called()
    with pytest.raises(ValueError, match="alternatives must contain at least one"):
        await with_fallback(primary, [])
    assert primary.calls == []


@pytest.mark.parametrize(
    ("alternatives", "pattern"),
    [
        ("fallback", "got 'fallback'"),
        (42, "got 42"),
        (None, "got None"),
    ],
)
async def test_alternatives_not_list_rejected(alternatives: object, pattern: str) -> None:
    with pytest.raises(TypeError, match=pattern):
        await with_fallback(_never_called(), alternatives)  # type: ignore[call-overload]


async def test_single_alternative_needs_list() -> None:
    alternative = _never_called()
    with pytest.raises(TypeError, match=r"wrap it in a list: \[never\]"):
        await with_fallback(_never_called(), alternative)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="wrap it in a list"):
        await with_fallback(_never_called(), Alternative(alternative))  # type: ignore[call-overload]
    assert alternative.calls == []


async def test_alternative_not_callable_rejected() -> None:
    with pytest.raises(TypeError, match=r"alternatives\[1\] must be a task or an async callable, got 'oops'"):
        await with_fallback(_never_called(), [_never_called(), "oops"])  # type: ignore[list-item]


async def test_coroutine_objects_rejected_and_closed() -> None:
    async def job(x: int) -> int:
        return x

    primary_coroutine = job(1)
    first = job(2)
    second = job(3)
    with pytest.raises(TypeError, match="primary must be a task or an async callable, got a coroutine object"):
        await with_fallback(primary_coroutine, [first, second])  # type: ignore[call-overload]
    for coroutine in (primary_coroutine, first, second):
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED

    alternative_coroutine = job(4)
    with pytest.raises(TypeError, match=r"alternatives\[0\] must be .* coroutine object"):
        await with_fallback(job, [alternative_coroutine])  # type: ignore[list-item]
    assert inspect.getcoroutinestate(alternative_coroutine) == inspect.CORO_CLOSED

    list_coroutine = job(5)
    with pytest.raises(TypeError, match=r"alternatives must be a list .* coroutine object"):
        await with_fallback(job, list_coroutine)  # type: ignore[call-overload]
    assert inspect.getcoroutinestate(list_coroutine) == inspect.CORO_CLOSED

    predicate_coroutine = job(7)
    primary_coroutine = job(8)
    with pytest.raises(TypeError, match="primary must be"):
        await with_fallback(primary_coroutine, [job], accept_result=predicate_coroutine)  # type: ignore[call-overload]
    assert inspect.getcoroutinestate(primary_coroutine) == inspect.CORO_CLOSED
    assert inspect.getcoroutinestate(predicate_coroutine) == inspect.CORO_CLOSED

    spec_coroutine = job(6)
    with pytest.raises(TypeError, match=r"Alternative.task must be .* coroutine object"):
        Alternative(spec_coroutine)  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(spec_coroutine) == inspect.CORO_CLOSED
    # A coroutine left unclosed would warn here, and warnings are errors in this suite.
    gc.collect()


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"on": (int,)}, TypeError, "Alternative.on must contain exception classes"),
        ({"on": []}, ValueError, "Alternative.on must name at least one"),
        ({"name": ""}, ValueError, "Alternative.name must not be blank, got ''"),
        ({"name": 3}, TypeError, "Alternative.name must be a str or None, got 3"),
    ],
)
def test_invalid_alternative_rejected(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        Alternative(_never_called(), **kwargs)


def test_alternative_options_keyword_only() -> None:
    with pytest.raises(TypeError):
        Alternative(_never_called(), MemoryError)  # type: ignore[call-arg]


# ---------------------------------------------------------------- the real local engine

env = flyte.TaskEnvironment(name="flyte_patterns_test_fallback")

# The local engine runs child tasks in this process, so a module-level list records what they did.
_flyte_log: list[str] = []


@env.task
async def fetch_live(item: str) -> str:
    _flyte_log.append(f"live {item}")
    raise HTTPTimeout(f"upstream did not answer for {item}")


@env.task
async def fetch_broken(item: str) -> str:
    _flyte_log.append(f"broken {item}")
    raise ValueError(f"cannot parse {item}")


@env.task
async def fetch_slow(item: str) -> str:
    _flyte_log.append(f"slow {item}")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        _flyte_log.append(f"slow cancelled {item}")
        raise
    return f"slow {item}"


@env.task
async def fetch_cached(item: str) -> str:
    _flyte_log.append(f"cached {item}")
    return f"cached {item}"


@env.task
def fetch_cached_sync(item: str) -> str:
    _flyte_log.append(f"cached sync {item}")
    return f"cached sync {item}"


@env.task
async def fallback_driver(item: str) -> dict[str, str | int | float]:
    outcome = await with_fallback(fetch_live, [fetch_cached], item, on=(APIError,), return_outcome=True)
    failed = outcome.attempts[0]
    return {
        "value": outcome.value,
        "index": outcome.index,
        "name": outcome.name,
        "failed_status": failed.status,
        "failed_class": type(failed.error).__name__,
        "failed_code": str(getattr(failed.error, "code", "")),
    }


@env.task
async def sync_alternative_driver(item: str) -> str:
    # Typed for async tasks; a synchronous task also works at run time.
    return await with_fallback(fetch_live, [fetch_cached_sync], item, on=(APIError,))  # type: ignore[list-item]


@env.task
async def unmatched_driver(item: str) -> dict[str, str | bool]:
    raised: list[BaseException] = []

    async def primary(value: str) -> str:
        try:
            return await fetch_broken(value)
        except Exception as error:
            raised.append(error)
            raise

    try:
        await with_fallback(primary, [fetch_cached], item, on=(APIError,))
    except Exception as error:
        return {
            "same_object": error is raised[0],
            "class": type(error).__name__,
            "code": str(getattr(error, "code", "")),
        }
    return {}


@env.task
async def timeout_driver(item: str) -> dict[str, str | int]:
    outcome = await with_fallback(fetch_slow, [fetch_cached], item, attempt_timeout=0.3, return_outcome=True)
    return {"value": outcome.value, "index": outcome.index, "status": outcome.attempts[0].status}


@env.task
async def all_failed_driver(item: str) -> list[str]:
    try:
        await with_fallback(fetch_live, [fetch_live.override(short_name="fetch_live_again")], item, on=(APIError,))
    except AllAttemptsFailedError as group:
        return [f"{a.name}:{type(a.error).__name__}:{getattr(a.error, 'code', '')}" for a in group.attempts]
    return []


@env.task
async def group_driver(item: str) -> list[str]:
    seen: list[str] = []

    def record_group() -> None:
        group = flyte.ctx().group_data
        seen.append(group.name if group is not None else "no group")

    async def primary(value: str) -> str:
        record_group()
        raise MemoryError(value)

    async def alternative(value: str) -> str:
        record_group()
        return value

    await with_fallback(primary, [alternative], item)
    with flyte.group("caller's group"):
        await with_fallback(primary, [alternative], item)
    return seen


@pytest.fixture
def flyte_log() -> list[str]:
    _flyte_log.clear()
    return _flyte_log


@pytest.mark.flyte
async def test_flyte_falls_back_by_parent_class(run_local: RunLocal, flyte_log: list[str]) -> None:
    seen = await run_local(fallback_driver, "a")
    assert seen["value"] == "cached a"
    assert seen["index"] == 1
    assert seen["failed_status"] == "failed"
    assert seen["failed_class"] == "RuntimeUserError"
    assert seen["failed_code"] == "HTTPTimeout"
    assert flyte_log == ["live a", "cached a"]


@pytest.mark.flyte
async def test_flyte_sync_alternative(run_local: RunLocal, flyte_log: list[str]) -> None:
    assert await run_local(sync_alternative_driver, "b") == "cached sync b"


@pytest.mark.flyte
async def test_flyte_unmatched_error_same_object(run_local: RunLocal, flyte_log: list[str]) -> None:
    seen = await run_local(unmatched_driver, "c")
    assert seen == {"same_object": True, "class": "RuntimeUserError", "code": "ValueError"}
    assert flyte_log == ["broken c"]


@pytest.mark.flyte
async def test_flyte_timeout_cancels_child(run_local: RunLocal, flyte_log: list[str]) -> None:
    seen = await run_local(timeout_driver, "d")
    assert seen == {"value": "cached d", "index": 1, "status": "timed_out"}
    assert flyte_log == ["slow d", "slow cancelled d", "cached d"]


@pytest.mark.flyte
async def test_flyte_all_failed(run_local: RunLocal, flyte_log: list[str]) -> None:
    seen = await run_local(all_failed_driver, "e")
    assert seen == [
        "fetch_live:RuntimeUserError:HTTPTimeout",
        "fetch_live_again:RuntimeUserError:HTTPTimeout",
    ]


@pytest.mark.flyte
async def test_flyte_group_per_attempt(run_local: RunLocal) -> None:
    seen = await run_local(group_driver, "f")
    assert seen == [
        "primary: group_driver.<locals>.primary",
        "alternative 1: group_driver.<locals>.alternative",
        "caller's group",
        "caller's group",
    ]


async def test_group_harmless_outside_task() -> None:
    assert not bool(flyte.ctx())
    assert await with_fallback(Fake("p", error=MemoryError()), [Fake("a", result=1)]) == 1
