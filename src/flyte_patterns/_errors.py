"""Exception matching that sees through the way Flyte delivers task errors.

An exception raised inside a Flyte task does not reach the awaiting parent as itself. Flyte 2.12 rebuilds it from
a protobuf as a ``flyte.errors.RuntimeUserError`` (or a subclass chosen by substring tests on the code, such as
``OOMError``) whose ``.code`` is the original class name. The original class, its bases, its ``__cause__`` and
its traceback are gone, locally and on a cluster alike. A cluster may also prefix the code with a server code,
as in ``"RetriesExhausted|OOMKilled"``.

:func:`exception_matches` therefore matches in two ways:

* by ``isinstance``, for errors raised in-process (plain async callables, or Flyte's own error classes);
* by the Flyte code, which matches a class when it equals the name of that class or of any of its subclasses,
  so ``on=(APIError,)`` catches a wrapped ``HTTPTimeout(APIError)`` whose code is ``"HTTPTimeout"``.

A Flyte error is an instance of ``RuntimeError``, but that says nothing about the user's exception it stands
for. So a Flyte error matches a class that is not itself a Flyte error class only through its code:
``on=(RuntimeError,)`` does not catch a wrapped ``ValueError``. ``Exception`` and ``BaseException`` match every
Flyte error, because every error a task can raise across the boundary started as an ``Exception``.

Both functions walk ``__cause__`` and ``__context__`` chains and the members of exception groups, at any depth,
and stop on cycles. Interrupts (``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit`` and
``GeneratorExit``) never match, not even ``on=(BaseException,)``, and the walk does not go past them. An
exception caused by an interrupt still matches as itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Iterator

import flyte.errors

ExceptionSpec = type[BaseException] | str
"""One entry of an ``on`` argument: an exception class, or a Flyte error code such as ``"HTTPTimeout"``."""

INTERRUPTS: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)
"""Exceptions that stop work. No pattern retries, swallows or counts them as failures."""

DEFAULT_OOM_CODES: frozenset[str] = frozenset({"OOMKilled", "MemoryError"})
"""Flyte codes that mean the task ran out of memory.

``OOMKilled`` is the code Flyte gives a container that Kubernetes killed for passing its memory limit, and that
our local enforcement uses too. ``MemoryError`` is the code of a Python ``MemoryError`` raised in the task.
"""

# The walk gives up after this many exceptions, so a pathological graph of groups cannot stall a pattern.
_MAX_WALK = 10_000


def is_interrupt(exc: BaseException) -> bool:
    """Return whether ``exc`` stops work: an interrupt, or an exception group that contains one at any depth."""
    if isinstance(exc, INTERRUPTS):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(is_interrupt(member) for member in exc.exceptions)
    return False


def flyte_code(exc: BaseException) -> str | None:
    """Return the user part of a Flyte error's code, or ``None`` when ``exc`` is not a Flyte task error.

    A server may prefix the code, as in ``"RetriesExhausted|OOMKilled"``; the part after the last ``|`` is the
    code of the error the task itself raised.
    """
    if not isinstance(exc, flyte.errors.BaseRuntimeError):
        return None
    code = getattr(exc, "code", None)
    if not isinstance(code, str) or not code:
        return None
    return code.rsplit("|", 1)[-1].strip()


def iter_exception_tree(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and every exception reachable through causes, contexts and group members, each once.

    The walk is breadth-first and does not descend into interrupts, whose context is only what was running
    when the interrupt arrived.
    """
    seen: set[int] = set()
    queue: deque[BaseException] = deque([exc])
    while queue and len(seen) < _MAX_WALK:
        current = queue.popleft()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, INTERRUPTS):
            continue
        if isinstance(current, BaseExceptionGroup):
            queue.extend(current.exceptions)
        if current.__cause__ is not None:
            queue.append(current.__cause__)
        if current.__context__ is not None:
            queue.append(current.__context__)


def normalize_exception_specs(on: object, *, name: str = "on") -> tuple[ExceptionSpec, ...]:
    """Check an ``on`` argument and return it as a tuple.

    Args:
        on: One exception class or code string, or an iterable of them.
        name: The caller's parameter name, used in error messages.

    Raises:
        TypeError: An entry is neither an exception class nor a string, or ``on`` is not iterable.
        ValueError: ``on`` is empty, a code string is empty, or an entry is an interrupt class such as
            ``asyncio.CancelledError``, which could never match.
    """
    if isinstance(on, (type, str)):
        entries: tuple[object, ...] = (on,)
    elif isinstance(on, Iterable):
        entries = tuple(on)
    else:
        raise TypeError(
            f"{name} must be an exception class, a Flyte error code string, or an iterable of them, "
            f"got {on!r} ({type(on).__name__})"
        )
    if not entries:
        raise ValueError(f"{name} must name at least one exception class or error code, got an empty {name}")

    specs: list[ExceptionSpec] = []
    for entry in entries:
        if isinstance(entry, str):
            if not entry.strip():
                raise ValueError(f"{name} contains an empty error code string {entry!r}")
            specs.append(entry.strip())
        elif isinstance(entry, type) and issubclass(entry, INTERRUPTS):
            raise ValueError(
                f"{name} contains {entry.__name__}, which never matches: cancellations and interrupts "
                f"({', '.join(cls.__name__ for cls in INTERRUPTS)}) always propagate; remove it from {name}"
            )
        elif isinstance(entry, type) and issubclass(entry, BaseException):
            specs.append(entry)
        else:
            raise TypeError(
                f"{name} must contain exception classes or Flyte error code strings, got {entry!r} "
                f"({type(entry).__name__}); pass the class itself, for example ValueError, not ValueError()"
            )
    return tuple(specs)


def _class_or_subclass_named(cls: type[BaseException], name: str) -> bool:
    """Return whether ``cls`` or any class below it, at any depth, is called ``name``."""
    stack: list[type] = [cls]
    seen: set[type] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.__name__ == name:
            return True
        stack.extend(current.__subclasses__())
    return False


def _node_matches(exc: BaseException, spec: ExceptionSpec) -> bool:
    code = flyte_code(exc)
    if isinstance(spec, str):
        if code is not None and code == spec:
            return True
        return any(klass.__name__ == spec for klass in type(exc).__mro__)

    if code is None:
        return isinstance(exc, spec)

    # A Flyte error stands for the user's exception named by its code.
    if issubclass(spec, flyte.errors.BaseRuntimeError):
        return isinstance(exc, spec)
    if spec is Exception or spec is BaseException:
        return True
    return _class_or_subclass_named(spec, code)


def exception_matches(exc: BaseException, on: ExceptionSpec | Iterable[ExceptionSpec]) -> bool:
    """Return whether ``exc``, or an exception in its cause, context or group tree, matches ``on``.

    Args:
        exc: The exception to test, as raised in-process or as Flyte delivered it.
        on: Exception classes, Flyte error code strings, or one of either. A string matches a Flyte error whose
            code equals it, and an in-process exception whose class or a base class has that name.

    Returns:
        ``False`` for interrupts, whatever ``on`` holds. See the module docstring for the full rules.
    """
    _check_exception(exc)
    specs = normalize_exception_specs(on)
    if is_interrupt(exc):
        return False
    for node in iter_exception_tree(exc):
        if isinstance(node, INTERRUPTS):
            continue
        if any(_node_matches(node, spec) for spec in specs):
            return True
    return False


def _check_exception(exc: object) -> None:
    if not isinstance(exc, BaseException):
        raise TypeError(f"exc must be an exception instance, got {exc!r} ({type(exc).__name__})")


def normalize_codes(codes: object, *, name: str = "codes") -> frozenset[str]:
    """Return out-of-memory codes as a set: one Flyte error code string, or an iterable of them.

    Raises:
        TypeError: ``codes`` or one of its entries is not a string.
        ValueError: ``codes`` is empty, or a code is an empty string.
    """
    entries: tuple[object, ...]
    if isinstance(codes, str):
        # One code: frozenset("OOMKilled") would be a set of letters.
        entries = (codes,)
    elif isinstance(codes, Iterable):
        entries = tuple(codes)
    else:
        raise TypeError(f"{name} must be a Flyte error code string or an iterable of them, got {codes!r}")
    if not entries:
        raise ValueError(f"{name} must name at least one Flyte error code, such as 'OOMKilled', got none")
    for entry in entries:
        if not isinstance(entry, str):
            raise TypeError(f"{name} must contain Flyte error code strings, got {entry!r} ({type(entry).__name__})")
        if not entry.strip():
            raise ValueError(f"{name} contains an empty error code string {entry!r}")
    return frozenset(str(entry).strip() for entry in entries)


def is_out_of_memory(exc: BaseException, codes: str | Iterable[str] = DEFAULT_OOM_CODES) -> bool:
    """Return whether ``exc`` means the task ran out of memory.

    True for a Flyte error whose code is in ``codes`` (one code string or several; by default ``OOMKilled``, the
    Kubernetes kill, and ``MemoryError``) and for an in-process ``MemoryError``, anywhere in the cause, context
    or group tree.
    A Flyte ``OOMError`` whose code is anything else is not an out-of-memory failure: Flyte 2.12 picks
    ``OOMError`` whenever the code contains "OOM", so a user class named ``BoomError`` or ``RoomNotFound``
    arrives as one.
    """
    _check_exception(exc)
    code_set = normalize_codes(codes)
    if is_interrupt(exc):
        return False
    for node in iter_exception_tree(exc):
        code = flyte_code(node)
        if code is not None:
            if code in code_set:
                return True
        elif isinstance(node, MemoryError):
            return True
    return False
