"""Fallback runner: run a primary implementation, and let ordered alternatives take over on known failures.

``await with_fallback(primary, alternatives, *args, **kwargs)`` runs ``primary(*args, **kwargs)`` and returns its
result. When that attempt fails in a way an alternative takes over on, the runner calls that alternative with the
same arguments, and so on down the list. The first result that is accepted is returned.

The chain is ``(primary, *alternatives)``, and a position in it is the implementation's *index*: 0 is the primary,
``k`` is ``alternatives[k - 1]``. Logs, hook events and group names call them "primary" and "alternative k".

Which alternative takes over:
    Each alternative has a trigger: its own ``Alternative.on``, or else the call's ``on``. A trigger is an
    exception class, a Flyte error code string, an iterable of them, or a predicate on the exception. Classes and
    codes match through :func:`flyte_patterns.exception_matches`: by ``isinstance``, by a Flyte error's ``.code``
    naming the class or any of its subclasses, anywhere in the cause, context and exception group tree. After an
    attempt fails, the first later alternative whose trigger matches the error runs next. Alternatives passed over
    on the way are skipped and never run.

The default ``on``:
    :func:`flyte_patterns.is_out_of_memory`, so a bare ``with_fallback(gpu_model, [cpu_model], x)`` falls back when
    the primary ran out of memory: a container killed with code ``OOMKilled``, or a ``MemoryError``. That is the
    one failure whose remedy is usually "run something else" and that can be recognised without knowing the task.
    It is not Flyte's ``OOMError`` class, which Flyte 2.12 also gives to any user error whose class name contains
    "OOM" (``BoomError``). Name every other failure explicitly, for example ``on=(RateLimited,)``.

Timeouts and rejected results:
    With ``attempt_timeout``, an attempt that runs longer is cancelled, awaited until it has unwound, and recorded
    as failed with :class:`AttemptTimeoutError`. With ``accept_result``, a result for which the predicate returns
    false is recorded as failed with :class:`ResultRejectedError`, which carries the value. Either one hands over
    to the next alternative in the list whatever its trigger, because the caller asked for it for every attempt.

How the chain ends:
    * An accepted result is returned, or a :class:`FallbackOutcome` with ``return_outcome=True``.
    * An error that no alternative's trigger matches (an *unexpected* error) propagates as the very object the
      attempt raised, neither wrapped nor re-chained. When earlier attempts failed first, the error gets a note
      (PEP 678) that lists them, and :func:`earlier_attempts` returns them as :class:`FallbackAttempt` records.
      Its ``__cause__`` and ``__context__`` are left alone, so its own chain stays intact and a later
      ``exception_matches`` on it does not see the earlier failures.
    * When the last attempt failed with an expected error (a timeout, a rejection, or an error that the trigger of
      some alternative matches) and no later alternative takes over on it, :class:`AllAttemptsFailedError` is
      raised: an ``ExceptionGroup`` of every attempt's error in order, so the primary's error is never lost.

Cancellation and interrupts:
    ``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` (or a group that contains
    one) propagate at once, are not recorded and never trigger a fallback, whatever ``on`` contains. An exception that
    is not an ``Exception`` propagates the same way, because an ``ExceptionGroup`` cannot contain it. Every attempt runs
    in the caller's task, so cancelling the caller cancels the running attempt. When the attempt ends after the
    caller was cancelled, however it ends (with a ``RuntimeError`` made from the cancellation, or even with a
    value), the runner raises ``CancelledError`` and starts nothing else. A ``RuntimeError`` whose cause is a
    ``CancelledError``, raised while the caller was not cancelled, is an ordinary error and can trigger a fallback.

Arguments:
    ``primary`` and ``alternatives`` are positional-only, and the runner's options are keyword-only. Every other
    argument goes to each implementation unchanged. A task parameter named like an option (``on``,
    ``accept_result``, ``attempt_timeout``, ``return_outcome``, ``on_fallback``) cannot be passed by keyword
    through the runner: pass it positionally, or bind it with ``functools.partial(task, on=...)``. Bad arguments
    raise ``TypeError`` or ``ValueError`` before any implementation runs.

Observability:
    Every time an alternative takes over, the runner logs a warning on the ``flyte_patterns.fallback`` logger and
    calls ``on_fallback`` with a :class:`FallbackEvent`. A hook that raises is logged and ignored. Inside a Flyte
    task, each attempt runs in a ``flyte.group`` named after its implementation ("primary: fetch",
    "alternative 1: fetch_cached"), unless the caller already opened a group, which then keeps the attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar, cast, overload

import flyte

from ._errors import ExceptionSpec, exception_matches, flyte_code, is_out_of_memory, normalize_exception_specs
from ._validation import check_callable, check_seconds, check_sync_function, invoke, task_name

T = TypeVar("T")

logger = logging.getLogger("flyte_patterns.fallback")

ErrorPredicate = Callable[[Exception], object]
"""A trigger given as a function: it receives the attempt's error and returns whether to take over."""

Trigger = ExceptionSpec | Iterable[ExceptionSpec] | ErrorPredicate
"""The errors an alternative takes over on: exception classes, Flyte error codes, or a predicate on the error."""

AttemptStatus = Literal["succeeded", "failed", "timed_out", "rejected"]

# Attribute on an error that the runner let through: the attempts that failed before it.
_EARLIER_ATTEMPTS_ATTRIBUTE = "_flyte_patterns_earlier_attempts"


# ---------------------------------------------------------------------------------------------------- errors


class AttemptTimeoutError(TimeoutError):
    """An attempt ran longer than ``attempt_timeout`` and was cancelled.

    Attributes:
        index: The implementation's position in the chain, 0 for the primary.
        name: The implementation's name.
        timeout: The limit in seconds.
    """

    def __init__(self, index: int, name: str, timeout: float) -> None:
        super().__init__(f"{_label(index, name)} timed out after {timeout:g} s and was cancelled")
        self.index = index
        self.name = name
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.index, self.name, self.timeout), self.__dict__


class ResultRejectedError(Exception):
    """An attempt returned a value for which ``accept_result`` returned false.

    Attributes:
        index: The implementation's position in the chain, 0 for the primary.
        name: The implementation's name.
        value: The rejected value, kept so that nothing the attempt produced is lost.
    """

    def __init__(self, index: int, name: str, value: object) -> None:
        super().__init__(f"accept_result rejected the result of {_label(index, name)}: {_short_repr(value)}")
        self.index = index
        self.name = name
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.index, self.name, self.value), self.__dict__


class AllAttemptsFailedError(ExceptionGroup[Exception]):
    """Every attempt failed, the last one with an error that no later alternative takes over on.

    The group contains each attempt's error in the order the attempts ran, the primary's first. Timeouts appear as
    :class:`AttemptTimeoutError` and rejected results as :class:`ResultRejectedError`.

    Attributes:
        attempts: One :class:`FallbackAttempt` per attempt, in order, each with its name, error and duration.
    """

    attempts: tuple[FallbackAttempt, ...]

    def __new__(cls, attempts: Sequence[FallbackAttempt]) -> AllAttemptsFailedError:
        errors = [_attempt_error(attempt) for attempt in attempts]
        summary = "; ".join(f"{_label(a.index, a.name)}: {_error_kind(a.error)}" for a in attempts)
        self = super().__new__(cls, f"all {len(attempts)} attempts failed ({summary})", errors)
        self.attempts = tuple(attempts)
        return self

    def __init__(self, attempts: Sequence[FallbackAttempt]) -> None:
        # ``args`` keeps the usual (message, exceptions) pair, so repr() reads like any exception group.
        super().__init__(self.message, list(self.exceptions))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.attempts,), self.__dict__


# ---------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class FallbackAttempt:
    """One run of one implementation.

    Attributes:
        index: The implementation's position in the chain, 0 for the primary, ``k`` for ``alternatives[k - 1]``.
        name: The implementation's name: ``Alternative.name``, or else the task's or function's name.
        status: ``"succeeded"``, ``"failed"`` (it raised), ``"timed_out"`` or ``"rejected"``.
        error: What ended the attempt, or ``None`` when it succeeded.
        duration: Seconds from the call to the end of the attempt, including the wait for a timed-out attempt to
            unwind.
    """

    index: int
    name: str
    status: AttemptStatus
    error: Exception | None
    duration: float


@dataclass(frozen=True)
class FallbackOutcome(Generic[T]):
    """The result of a fallback chain and how it was reached, returned with ``return_outcome=True``.

    Attributes:
        value: The accepted result.
        index: Position of the implementation that served it: 0 for the primary, ``k`` for ``alternatives[k - 1]``.
        name: Name of the implementation that served it.
        attempts: Every attempt in the order they ran; the last one succeeded.
    """

    value: T
    index: int
    name: str
    attempts: tuple[FallbackAttempt, ...]

    @property
    def used_fallback(self) -> bool:
        """Whether an alternative, not the primary, served the result."""
        return self.index != 0


@dataclass(frozen=True)
class FallbackEvent:
    """The event passed to ``on_fallback`` each time an alternative takes over.

    Attributes:
        failed: The attempt that just failed.
        next_index: Position of the alternative that runs next.
        next_name: Name of the alternative that runs next.
        skipped: Positions of the alternatives passed over because their trigger did not match the error.
    """

    failed: FallbackAttempt
    next_index: int
    next_name: str
    skipped: tuple[int, ...]


FallbackHook = Callable[[FallbackEvent], object]
"""The type of ``on_fallback``: a synchronous function that receives each :class:`FallbackEvent`."""


@dataclass(frozen=True)
class Alternative(Generic[T]):
    """One alternative with its own trigger or name, for a chain where alternatives take over on different errors.

    Args:
        task: A Flyte task or async callable, called with the same arguments as the primary.
        on: The errors this alternative takes over on, in any form the runner's ``on`` accepts. ``None`` uses the
            call's ``on``. A class or code list is stored as a tuple.
        name: The name in logs, events and outcomes. ``None`` uses the task's or function's name.

    Raises:
        TypeError: ``task`` is not callable (a coroutine object is closed first), or ``on`` or ``name`` has the
            wrong type.
        ValueError: ``on`` is empty, or ``name`` is blank.
    """

    task: Callable[..., Awaitable[T]]
    _: KW_ONLY
    on: Trigger | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        check_callable(self.task, name="Alternative.task")
        if self.on is not None:
            object.__setattr__(self, "on", _normalize_trigger(self.on, name="Alternative.on"))
        if self.name is not None:
            _check_name(self.name, name="Alternative.name")


# ---------------------------------------------------------------------------------------------------- the runner


@overload
async def with_fallback(
    primary: Callable[..., Awaitable[T]],
    alternatives: Iterable[Callable[..., Awaitable[T]] | Alternative[T]],
    /,
    *args: Any,
    on: Trigger = ...,
    accept_result: Callable[[T], object] | None = ...,
    attempt_timeout: float | timedelta | None = ...,
    return_outcome: Literal[False] = ...,
    on_fallback: FallbackHook | None = ...,
    **kwargs: Any,
) -> T: ...


@overload
async def with_fallback(
    primary: Callable[..., Awaitable[T]],
    alternatives: Iterable[Callable[..., Awaitable[T]] | Alternative[T]],
    /,
    *args: Any,
    on: Trigger = ...,
    accept_result: Callable[[T], object] | None = ...,
    attempt_timeout: float | timedelta | None = ...,
    return_outcome: Literal[True],
    on_fallback: FallbackHook | None = ...,
    **kwargs: Any,
) -> FallbackOutcome[T]: ...


@overload
async def with_fallback(
    primary: Callable[..., Awaitable[T]],
    alternatives: Iterable[Callable[..., Awaitable[T]] | Alternative[T]],
    /,
    *args: Any,
    on: Trigger = ...,
    accept_result: Callable[[T], object] | None = ...,
    attempt_timeout: float | timedelta | None = ...,
    return_outcome: bool,
    on_fallback: FallbackHook | None = ...,
    **kwargs: Any,
) -> T | FallbackOutcome[T]: ...


async def with_fallback(
    primary: Callable[..., Awaitable[T]],
    alternatives: Iterable[Callable[..., Awaitable[T]] | Alternative[T]],
    /,
    *args: Any,
    on: Trigger = is_out_of_memory,
    accept_result: Callable[[T], object] | None = None,
    attempt_timeout: float | timedelta | None = None,
    return_outcome: bool = False,
    on_fallback: FallbackHook | None = None,
    **kwargs: Any,
) -> T | FallbackOutcome[T]:
    """Run ``primary(*args, **kwargs)``, and on a known failure the first alternative that takes over on it.

    The module docstring states the full semantics. In short, an alternative takes over when its trigger (its own
    ``on``, or else this call's ``on``) matches the error of the attempt before it, and the first accepted result
    is returned. An unexpected error propagates as itself. When the last attempt fails with an expected error,
    :class:`AllAttemptsFailedError` contains every attempt's error.

    Args:
        primary: A Flyte task or async callable. A synchronous callable also works, but it blocks the event loop
            and a timeout cannot interrupt it.
        alternatives: One or more callables or :class:`Alternative` specs, tried in order.
        *args: Passed to every implementation.
        on: What the alternatives without their own ``on`` take over on: exception classes, Flyte error code
            strings, or a predicate on the exception. Defaults to :func:`flyte_patterns.is_out_of_memory`.
        accept_result: A synchronous predicate on a result; when it returns false, the result is rejected and the
            next alternative runs. An exception it raises propagates unchanged and nothing else runs.
        attempt_timeout: Seconds (or a ``timedelta``) each attempt may run before it is cancelled and the next
            alternative runs. ``None`` means no limit.
        return_outcome: Return a :class:`FallbackOutcome` instead of the bare value.
        on_fallback: A synchronous function called with a :class:`FallbackEvent` each time an alternative takes
            over. An exception it raises is logged and ignored.
        **kwargs: Passed to every implementation.

    Returns:
        The first accepted result, or a :class:`FallbackOutcome` when ``return_outcome`` is true.

    Raises:
        AllAttemptsFailedError: The last attempt failed with an expected error and no alternative is left to take
            over on it.
        TypeError: An argument has the wrong type, raised before anything runs.
        ValueError: ``alternatives`` or ``on`` is empty, or ``attempt_timeout`` is not positive.
        Exception: An error that no trigger matches, as the very object the attempt raised.
        asyncio.CancelledError: The caller was cancelled; no further alternative ran.
    """
    # Close every coroutine object passed where a callable belongs before the first complaint, so that none of
    # them also warns that it was never awaited. The checks below still report them.
    for argument in (primary, alternatives, on, accept_result, on_fallback):
        _close_if_coroutine(argument)

    chain = _build_chain(primary, alternatives, on)
    timeout = None if attempt_timeout is None else check_seconds(attempt_timeout, name="attempt_timeout")
    check_sync_function(accept_result, name="accept_result")
    check_sync_function(on_fallback, name="on_fallback")
    if not isinstance(return_outcome, bool):
        raise TypeError(f"return_outcome must be a bool, got {return_outcome!r} ({type(return_outcome).__name__})")

    runner = _Runner(chain, args, kwargs, timeout, accept_result, on_fallback)
    outcome = await runner.run()
    return outcome if return_outcome else outcome.value


def earlier_attempts(error: BaseException) -> tuple[FallbackAttempt, ...]:
    """Return the attempts that failed before the one that raised ``error``, when the runner let it propagate.

    The tuple is empty for an error the primary raised, and for any error that did not pass through
    :func:`with_fallback` as an unexpected error.
    """
    attempts = getattr(error, _EARLIER_ATTEMPTS_ATTRIBUTE, ())
    return attempts if isinstance(attempts, tuple) else ()


# ---------------------------------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Implementation:
    index: int
    name: str
    task: Callable[..., Awaitable[Any]]
    trigger: ErrorPredicate

    @property
    def label(self) -> str:
        return _label(self.index, self.name)

    @property
    def group_name(self) -> str:
        role = "primary" if self.index == 0 else f"alternative {self.index}"
        return f"{role}: {self.name}"


class _Runner(Generic[T]):
    """The state of one call: the chain, the arguments and the attempts so far."""

    def __init__(
        self,
        chain: tuple[_Implementation, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        accept_result: Callable[[T], object] | None,
        on_fallback: FallbackHook | None,
    ) -> None:
        self.chain = chain
        self.args = args
        self.kwargs = kwargs
        self.timeout = timeout
        self.accept_result = accept_result
        self.on_fallback = on_fallback
        self.attempts: list[FallbackAttempt] = []

    async def run(self) -> FallbackOutcome[T]:
        caller = asyncio.current_task()
        # Cancel requests already pending when the call started belong to someone else.
        cancels_before = caller.cancelling() if caller is not None else 0
        current = self.chain[0]

        while True:
            timeout = self.timeout
            deadline = None if timeout is None else asyncio.timeout(timeout)
            started = time.monotonic()
            try:
                value: T = await self._attempt(current, deadline)
            # Interrupts are caught only to check for a cancelled caller first; they are re-raised below.
            except BaseException as raised:  # noqa: BLE001
                error: BaseException | None = raised
            else:
                error = None
            duration = time.monotonic() - started

            # However the attempt ended, a cancelled caller gets CancelledError and nothing else runs.
            if caller is not None and caller.cancelling() > cancels_before:
                if isinstance(error, asyncio.CancelledError):
                    raise error
                raise asyncio.CancelledError(f"cancelled while {current.label} ran") from error

            status: AttemptStatus
            if error is None:
                if self._accepts(value):
                    self.attempts.append(FallbackAttempt(current.index, current.name, "succeeded", None, duration))
                    self._log_served(current)
                    return FallbackOutcome(value, current.index, current.name, tuple(self.attempts))
                error = ResultRejectedError(current.index, current.name, value)
                status = "rejected"
            elif timeout is not None and deadline is not None and deadline.expired() and isinstance(error, Exception):
                # Whatever the attempt raised after the deadline fired (asyncio's TimeoutError, or an error the
                # task made of the cancellation) is the unwinding of our cancellation.
                timeout_error = AttemptTimeoutError(current.index, current.name, timeout)
                timeout_error.__cause__ = error
                error = timeout_error
                status = "timed_out"
            else:
                status = "failed"

            # Interrupts (CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit, or a group containing one)
            # are not Exceptions, and an ExceptionGroup could not hold any of these errors.
            if not isinstance(error, Exception):
                raise error

            attempt = FallbackAttempt(current.index, current.name, status, error, duration)
            self.attempts.append(attempt)
            successor, skipped = self._successor(current, error, always=status != "failed")

            if successor is None:
                if status == "failed" and not self._expected_by_earlier(current, error):
                    _attach_earlier_attempts(error, current, self.attempts[:-1])
                    raise error
                raise AllAttemptsFailedError(self.attempts)

            self._announce(attempt, successor, skipped)
            current = successor

    async def _attempt(self, implementation: _Implementation, deadline: asyncio.Timeout | None) -> T:
        with _attempt_group(implementation.group_name):
            if deadline is None:
                return cast(T, await _call(implementation.task, self.args, self.kwargs))
            async with deadline:
                return cast(T, await _call(implementation.task, self.args, self.kwargs))

    def _accepts(self, value: T) -> bool:
        if self.accept_result is None:
            return True
        verdict = self.accept_result(value)
        if inspect.isawaitable(verdict):
            if inspect.iscoroutine(verdict):
                verdict.close()
            raise TypeError(
                f"accept_result must return a bool, got an awaitable {verdict!r}; pass a synchronous function"
            )
        if verdict is None:
            raise TypeError("accept_result returned None; it must return True to accept a result or False to reject")
        return bool(verdict)

    def _successor(
        self, current: _Implementation, error: Exception, *, always: bool
    ) -> tuple[_Implementation | None, tuple[int, ...]]:
        """Return the first later alternative that takes over on ``error``, and the positions skipped to reach it."""
        skipped: list[int] = []
        for candidate in self.chain[current.index + 1 :]:
            if always or _trigger_matches(candidate.trigger, error):
                return candidate, tuple(skipped)
            skipped.append(candidate.index)
        return None, tuple(skipped)

    def _expected_by_earlier(self, current: _Implementation, error: Exception) -> bool:
        """Return whether the trigger of an alternative up to ``current`` matches ``error``."""
        return any(_trigger_matches(alternative.trigger, error) for alternative in self.chain[1 : current.index + 1])

    def _announce(self, failed: FallbackAttempt, successor: _Implementation, skipped: tuple[int, ...]) -> None:
        failed_label = _label(failed.index, failed.name)
        if skipped:
            skipped_labels = ", ".join(self.chain[index].label for index in skipped)
            logger.warning(
                "%s %s; falling back to %s, skipping %s whose trigger does not match",
                failed_label,
                _describe_failure(failed),
                successor.label,
                skipped_labels,
            )
        else:
            logger.warning("%s %s; falling back to %s", failed_label, _describe_failure(failed), successor.label)

        if self.on_fallback is None:
            return
        event = FallbackEvent(failed, successor.index, successor.name, skipped)
        try:
            returned = self.on_fallback(event)
        except Exception:
            logger.warning("on_fallback hook %r raised; ignoring it", self.on_fallback, exc_info=True)
            return
        if inspect.iscoroutine(returned):
            returned.close()
            logger.warning(
                "on_fallback hook %r returned a coroutine, which was closed without running", self.on_fallback
            )

    def _log_served(self, implementation: _Implementation) -> None:
        if implementation.index == 0:
            return
        failed = ", ".join(_label(a.index, a.name) for a in self.attempts[:-1])
        logger.info("%s served the result after %s failed", implementation.label, failed)


async def _call(task: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return await invoke(cast(Callable[..., Any], task), *args, **kwargs)


@contextlib.contextmanager
def _attempt_group(name: str) -> Iterator[None]:
    """Group one attempt's Flyte actions in the UI, unless the caller is outside a task or already in a group."""
    context = flyte.ctx()
    # Outside a task, flyte.ctx() returns a null context that is falsy.
    if not bool(context) or context.group_data is not None:
        yield
        return
    with flyte.group(name):
        yield


def _trigger_matches(trigger: ErrorPredicate, error: Exception) -> bool:
    try:
        return bool(trigger(error))
    except Exception as bug:
        # The trigger failed while judging ``error``; keep that error reachable from the one that propagates.
        if bug.__context__ is None and bug is not error:
            bug.__context__ = error
        raise


def _attach_earlier_attempts(error: Exception, current: _Implementation, earlier: Sequence[FallbackAttempt]) -> None:
    """Record the earlier attempts on an error that propagates, without touching its cause or context."""
    if not earlier:
        return
    lines = [f"with_fallback: {current.label} raised this error after earlier attempts failed:"]
    lines.extend(f"  {_label(a.index, a.name)}: {_describe_error(a.error)}" for a in earlier)
    # Some exception types reject new attributes; the note and the attribute are each best effort.
    with contextlib.suppress(AttributeError, TypeError):
        error.add_note("\n".join(lines))
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _EARLIER_ATTEMPTS_ATTRIBUTE, tuple(earlier))


# ---------------------------------------------------------------------------------------------------- validation


def _build_chain(primary: object, alternatives: object, on: object) -> tuple[_Implementation, ...]:
    """Check ``primary``, ``alternatives`` and ``on``, and return the chain with each alternative's trigger."""
    is_list = not (
        isinstance(alternatives, str | bytes | Alternative)
        or callable(alternatives)
        or not isinstance(alternatives, Iterable)
    )
    entries = tuple(cast(Iterable[object], alternatives)) if is_list else ()
    # Close every coroutine object in the list before the first complaint, so none of them warns that it was
    # never awaited.
    for entry in entries:
        _close_if_coroutine(entry)

    check_callable(primary, name="primary")
    expected = "alternatives must be a list of tasks, callables or Alternative specs"
    if inspect.iscoroutine(alternatives):
        raise TypeError(f"{expected}, got a coroutine object {alternatives!r}; pass the functions themselves")
    if isinstance(alternatives, Alternative) or callable(alternatives):
        raise TypeError(f"{expected}, got the single {alternatives!r}; wrap it in a list: [{task_name(alternatives)}]")
    if not is_list:
        raise TypeError(f"{expected}, got {alternatives!r} ({type(alternatives).__name__})")
    if not entries:
        raise ValueError("alternatives must contain at least one task or callable, got an empty list")
    for position, entry in enumerate(entries):
        if not isinstance(entry, Alternative):
            check_callable(entry, name=f"alternatives[{position}]")

    default_trigger = _as_predicate(_normalize_trigger(on, name="on"))
    chain = [_Implementation(0, task_name(primary), cast(Callable[..., Awaitable[Any]], primary), default_trigger)]
    for index, entry in enumerate(entries, start=1):
        if isinstance(entry, Alternative):
            trigger = default_trigger if entry.on is None else _as_predicate(entry.on)
            name = entry.name if entry.name is not None else task_name(entry.task)
            chain.append(_Implementation(index, name, entry.task, trigger))
        else:
            chain.append(
                _Implementation(index, task_name(entry), cast(Callable[..., Awaitable[Any]], entry), default_trigger)
            )
    return tuple(chain)


def _normalize_trigger(on: object, *, name: str) -> Trigger:
    """Check a trigger and return it as a tuple of classes and codes, or as the predicate it is."""
    if inspect.iscoroutine(on):
        on.close()
        raise TypeError(f"{name} must be exception classes, error codes or a predicate, got a coroutine object {on!r}")
    if callable(on) and not isinstance(on, type):
        if inspect.iscoroutinefunction(on):
            raise TypeError(f"{name} must be a synchronous predicate, got the async function {on!r}")
        return cast(ErrorPredicate, on)
    return normalize_exception_specs(on, name=name)


def _as_predicate(trigger: Trigger) -> ErrorPredicate:
    if callable(trigger) and not isinstance(trigger, type):
        return trigger
    specs = normalize_exception_specs(trigger)

    def matches(error: Exception) -> bool:
        return exception_matches(error, specs)

    return matches


def _check_name(value: object, *, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {value!r} ({type(value).__name__})")
    if not value.strip():
        raise ValueError(f"{name} must not be blank, got {value!r}")


def _close_if_coroutine(value: object) -> None:
    if inspect.iscoroutine(value):
        value.close()


# ---------------------------------------------------------------------------------------------------- wording


def _label(index: int, name: str) -> str:
    return f"primary {name!r}" if index == 0 else f"alternative {index} {name!r}"


def _describe_failure(attempt: FallbackAttempt) -> str:
    error = attempt.error
    if isinstance(error, AttemptTimeoutError) and attempt.status == "timed_out":
        return f"timed out after {error.timeout:g} s"
    if isinstance(error, ResultRejectedError) and attempt.status == "rejected":
        return f"returned a result that accept_result rejected: {_short_repr(error.value)}"
    return f"failed with {_describe_error(error)}"


def _error_kind(error: BaseException | None) -> str:
    """Return the class name, with the Flyte code that names the original class when there is one."""
    code = None if error is None else flyte_code(error)
    return f"{type(error).__name__} (code {code!r})" if code else type(error).__name__


def _describe_error(error: BaseException | None) -> str:
    if error is None:
        return "no error"
    message = str(error)
    return f"{_error_kind(error)}: {_shorten(message)}" if message else _error_kind(error)


def _short_repr(value: object) -> str:
    return _shorten(repr(value))


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _attempt_error(attempt: FallbackAttempt) -> Exception:
    if attempt.error is None:
        raise ValueError(f"{_label(attempt.index, attempt.name)} succeeded, so it has no error to report")
    return attempt.error
