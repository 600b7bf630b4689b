"""Tests for exception matching, in-process and across a real local Flyte task boundary."""

from __future__ import annotations

import asyncio
import itertools

import flyte
import flyte.errors
import pytest

from flyte_patterns import exception_matches, flyte_code, is_interrupt, is_out_of_memory
from flyte_patterns._errors import normalize_exception_specs

from .conftest import RunLocal


class APIError(Exception):
    pass


class HTTPTimeout(APIError):
    pass


class BoomError(Exception):
    pass


class RoomNotFound(Exception):
    pass


def _chain(*excs: BaseException) -> BaseException:
    """Link ``excs`` so each is the ``__cause__`` of the one before it, and return the first."""
    for outer, inner in itertools.pairwise(excs):
        outer.__cause__ = inner
    return excs[0]


def _remote(code: str, message: str = "failed") -> flyte.errors.RuntimeUserError:
    """Build a task error the way Flyte delivers it: only the class name survives, as the code.

    This replaces a cluster run, which this test suite cannot reach. The local engine builds the same
    objects through the same conversion, as the real-engine tests below check.
    """
    return flyte.errors.RuntimeUserError(code, message)


# ---------------------------------------------------------------- in-process exceptions


@pytest.mark.parametrize(
    ("exc", "on", "expected"),
    [
        (ValueError("x"), (ValueError,), True),
        (ValueError("x"), ValueError, True),
        (ValueError("x"), (KeyError,), False),
        (HTTPTimeout(), (APIError,), True),
        (APIError(), (HTTPTimeout,), False),
        (KeyError("k"), (LookupError,), True),
        (ValueError("x"), ("ValueError",), True),
        (HTTPTimeout(), ("APIError",), True),
        (ValueError("x"), (Exception,), True),
        (ValueError("x"), (BaseException,), True),
    ],
)
def test_matches_in_process(exc: BaseException, on: object, expected: bool) -> None:
    assert exception_matches(exc, on) is expected  # type: ignore[arg-type]


def test_matches_deep_cause_chain() -> None:
    exc = _chain(RuntimeError("outer"), RuntimeError("middle"), ValueError("root"))
    assert exception_matches(exc, (ValueError,))


def test_matches_context_chain() -> None:
    def fail_while_handling() -> None:
        try:
            raise KeyError("inner")
        except KeyError:
            raise RuntimeError("while handling") from None

    with pytest.raises(RuntimeError) as caught:
        fail_while_handling()
    # `from None` hides the context from tracebacks but keeps it on the object.
    assert exception_matches(caught.value, (KeyError,))


def test_no_match_on_unrelated_chain() -> None:
    exc = _chain(RuntimeError("outer"), TypeError("root"))
    assert not exception_matches(exc, (ValueError,))


def test_matches_group_member_cause() -> None:
    member = _chain(RuntimeError("second"), KeyError("k"))
    group = ExceptionGroup("many", [OSError("first"), member])  # type: ignore[type-var]
    assert exception_matches(group, (KeyError,))


def test_matches_nested_groups() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("deep")])])
    assert exception_matches(group, (ValueError,))


def test_cause_cycle_terminates() -> None:
    first = RuntimeError("a")
    second = RuntimeError("b")
    first.__cause__ = second
    second.__cause__ = first
    assert not exception_matches(first, (ValueError,))


def test_context_cycle_terminates() -> None:
    first = RuntimeError("a")
    second = TypeError("b")
    first.__context__ = second
    second.__context__ = first
    assert exception_matches(first, (TypeError,))


@pytest.mark.parametrize(
    "interrupt",
    [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1), GeneratorExit()],
)
def test_interrupts_never_match(interrupt: BaseException) -> None:
    assert not exception_matches(interrupt, (BaseException,))
    assert not exception_matches(interrupt, (Exception,))
    assert not exception_matches(interrupt, (type(interrupt).__name__,))


@pytest.mark.parametrize("interrupt_class", [asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit])
def test_interrupt_class_in_on_rejected(interrupt_class: type[BaseException]) -> None:
    with pytest.raises(ValueError, match=f"contains {interrupt_class.__name__}, which never matches"):
        exception_matches(ValueError("x"), (ValueError, interrupt_class))


@pytest.mark.parametrize("not_an_exception", ["x", None, ValueError])
def test_matchers_reject_non_exceptions(not_an_exception: object) -> None:
    with pytest.raises(TypeError, match="exc must be an exception instance"):
        exception_matches(not_an_exception, (ValueError,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exc must be an exception instance"):
        is_out_of_memory(not_an_exception)  # type: ignore[arg-type]


def test_out_of_memory_code_string_is_one_code() -> None:
    # A single string is one code, not a set of one-letter codes.
    assert not is_out_of_memory(flyte.errors.RuntimeUserError("K", "x"), codes="OOMKilled")
    assert is_out_of_memory(flyte.errors.OOMError("OOMKilled", "killed"), codes="OOMKilled")


@pytest.mark.parametrize(
    ("codes", "error", "pattern"),
    [
        ([], ValueError, "at least one Flyte error code"),
        ([137], TypeError, "got 137"),
        ([" "], ValueError, "empty error code"),
        (137, TypeError, "got 137"),
    ],
)
def test_out_of_memory_invalid_codes(codes: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        is_out_of_memory(MemoryError(), codes=codes)  # type: ignore[arg-type]


def test_interrupt_with_matching_context_does_not_match() -> None:
    cancel = asyncio.CancelledError()
    cancel.__context__ = ValueError("was being handled")
    assert not exception_matches(cancel, (ValueError,))


def test_group_with_interrupt_does_not_match() -> None:
    group = BaseExceptionGroup("mixed", [ValueError("x"), asyncio.CancelledError()])
    assert is_interrupt(group)
    assert not exception_matches(group, (ValueError,))


def test_error_caused_by_cancellation_matches_itself() -> None:
    exc = _chain(RuntimeError("wrapped"), asyncio.CancelledError())
    assert exception_matches(exc, (RuntimeError,))
    assert not is_interrupt(exc)


def test_walk_does_not_pass_through_interrupt() -> None:
    exc = _chain(RuntimeError("outer"), asyncio.CancelledError(), ValueError("behind the cancel"))
    assert not exception_matches(exc, (ValueError,))


# ---------------------------------------------------------------- Flyte-shaped errors


@pytest.mark.parametrize(
    ("code", "on", "expected"),
    [
        ("ValueError", (ValueError,), True),
        ("HTTPTimeout", (APIError,), True),
        ("HTTPTimeout", (HTTPTimeout,), True),
        ("APIError", (HTTPTimeout,), False),
        ("KeyError", (LookupError,), True),
        ("ValueError", (KeyError,), False),
        ("ValueError", (RuntimeError,), False),
        ("RuntimeError", (RuntimeError,), True),
        ("ValueError", (Exception,), True),
        ("NotImportedHere", (Exception,), True),
        ("NotImportedHere", (ValueError,), False),
        ("HTTPTimeout", ("HTTPTimeout",), True),
        ("HTTPTimeout", ("APIError",), False),
        ("RetriesExhausted|HTTPTimeout", (APIError,), True),
        ("ValueError", (flyte.errors.RuntimeUserError,), True),
        ("ValueError", (flyte.errors.OOMError,), False),
    ],
)
def test_matches_flyte_code(code: str, on: tuple[object, ...], expected: bool) -> None:
    assert exception_matches(_remote(code), on) is expected  # type: ignore[arg-type]


def test_flyte_error_inside_chain_matches_by_code() -> None:
    exc = _chain(RuntimeError("driver failed"), _remote("HTTPTimeout"))
    assert exception_matches(exc, (APIError,))


def test_subclass_defined_after_first_match() -> None:
    assert not exception_matches(_remote("LateTimeout"), (APIError,))

    class LateTimeout(APIError):
        pass

    assert exception_matches(_remote("LateTimeout"), (APIError,))


def test_flyte_code_strips_server_prefix() -> None:
    assert flyte_code(_remote("RetriesExhausted|OOMKilled")) == "OOMKilled"
    assert flyte_code(_remote("ValueError")) == "ValueError"
    assert flyte_code(ValueError("plain")) is None


# ---------------------------------------------------------------- out of memory


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (flyte.errors.OOMError("OOMKilled", "killed"), True),
        (flyte.errors.OOMError("RetriesExhausted|OOMKilled", "killed"), True),
        (flyte.errors.RuntimeUserError("MemoryError", "no memory"), True),
        (MemoryError(), True),
        (flyte.errors.OOMError("BoomError", "boom"), False),
        (flyte.errors.OOMError("RoomNotFound", "no room"), False),
        (flyte.errors.RuntimeUserError("ValueError", "bad"), False),
        (flyte.errors.TaskInterruptedError("Interrupted", "exit 137"), False),
        (ValueError("x"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_is_out_of_memory(exc: BaseException, expected: bool) -> None:
    assert is_out_of_memory(exc) is expected


def test_out_of_memory_in_cause_chain() -> None:
    exc = _chain(RuntimeError("driver"), flyte.errors.OOMError("OOMKilled", "killed"))
    assert is_out_of_memory(exc)


def test_out_of_memory_custom_codes() -> None:
    exc = flyte.errors.TaskInterruptedError("Interrupted", "exit 137")
    assert is_out_of_memory(exc, codes={"Interrupted"})
    assert not is_out_of_memory(flyte.errors.OOMError("OOMKilled", "killed"), codes={"Interrupted"})


# ---------------------------------------------------------------- the `on` argument


@pytest.mark.parametrize(
    ("on", "error", "pattern"),
    [
        ((), ValueError, "at least one"),
        ([], ValueError, "at least one"),
        ((ValueError("x"),), TypeError, r"ValueError\('x'\)"),
        ((int,), TypeError, "int"),
        (42, TypeError, "42"),
        (("",), ValueError, "empty error code"),
        (None, TypeError, "None"),
    ],
)
def test_invalid_on_rejected(on: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        normalize_exception_specs(on)


def test_on_accepts_generator() -> None:
    assert normalize_exception_specs(cls for cls in (ValueError, KeyError)) == (ValueError, KeyError)


# ---------------------------------------------------------------- the real local engine

env = flyte.TaskEnvironment(name="flyte_patterns_test_errors")


@env.task
async def raise_named(kind: str) -> str:
    errors: dict[str, BaseException] = {
        "value": ValueError("bad input"),
        "timeout": HTTPTimeout("slow upstream"),
        "boom": BoomError("boom"),
        "room": RoomNotFound("no room"),
        "memory": MemoryError("out of memory"),
    }
    raise errors[kind]


@env.task
async def catch_in_driver(kind: str) -> dict[str, str | bool | None]:
    try:
        await raise_named(kind)
    except Exception as exc:
        return {
            "class": type(exc).__name__,
            "code": flyte_code(exc),
            "matches_api_error": exception_matches(exc, (APIError,)),
            "matches_value_error": exception_matches(exc, (ValueError,)),
            "matches_runtime_error": exception_matches(exc, (RuntimeError,)),
            "out_of_memory": is_out_of_memory(exc),
        }
    return {}


@pytest.mark.flyte
@pytest.mark.parametrize(
    ("kind", "flyte_class", "code", "api", "value", "oom"),
    [
        ("value", "RuntimeUserError", "ValueError", False, True, False),
        ("timeout", "RuntimeUserError", "HTTPTimeout", True, False, False),
        ("boom", "OOMError", "BoomError", False, False, False),
        ("room", "OOMError", "RoomNotFound", False, False, False),
        ("memory", "RuntimeUserError", "MemoryError", False, False, True),
    ],
)
async def test_real_flyte_errors(
    run_local: RunLocal, kind: str, flyte_class: str, code: str, api: bool, value: bool, oom: bool
) -> None:
    seen = await run_local(catch_in_driver, kind)
    assert seen["class"] == flyte_class
    assert seen["code"] == code
    assert seen["matches_api_error"] is api
    assert seen["matches_value_error"] is value
    assert seen["matches_runtime_error"] is False
    assert seen["out_of_memory"] is oom
