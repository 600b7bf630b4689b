"""Bad arguments to the public functions are rejected before anything runs, with the parameter and value named."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import flyte.errors
import pytest

import flyte_patterns
from flyte_patterns import is_out_of_memory

# The tests pass arguments of the wrong type on purpose, so they call the public functions through an untyped name.
api: Any = flyte_patterns


@pytest.mark.parametrize("function", ["exception_matches", "is_out_of_memory"])
@pytest.mark.parametrize("exc", ["OOMKilled", None, ValueError])
def test_error_predicates_reject_non_exception(function: str, exc: object) -> None:
    arguments = (exc, ValueError) if function == "exception_matches" else (exc,)

    with pytest.raises(TypeError) as caught:
        getattr(api, function)(*arguments)

    assert str(caught.value) == f"exc must be an exception instance, got {exc!r} ({type(exc).__name__})"


def test_one_code_string_is_one_code() -> None:
    killed = flyte.errors.OOMError("OOMKilled", "killed at its memory limit")

    assert is_out_of_memory(killed, "OOMKilled")
    assert not is_out_of_memory(killed, "Interrupted")
    assert not is_out_of_memory(flyte.errors.RuntimeUserError("K", "one letter of OOMKilled"), "OOMKilled")


@pytest.mark.parametrize(
    ("codes", "error", "message"),
    [
        (137, TypeError, "codes must be a Flyte error code string or an iterable of them, got 137"),
        ([137], TypeError, "codes must contain Flyte error code strings, got 137 (int)"),
        ([], ValueError, "codes must name at least one Flyte error code, such as 'OOMKilled', got none"),
        ([" "], ValueError, "codes contains an empty error code string ' '"),
    ],
)
def test_bad_codes_rejected(codes: object, error: type[Exception], message: str) -> None:
    killed = flyte.errors.OOMError("OOMKilled", "killed at its memory limit")

    with pytest.raises(error) as caught:
        api.is_out_of_memory(killed, codes)

    assert str(caught.value) == message


async def noop(*args: Any) -> None:
    return None


CoroutineCall = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda coroutine: api.retry_with_memory(noop, on_event=coroutine),
            "on_event must be a callable",
            id="retry-hook",
        ),
        pytest.param(
            lambda coroutine: api.retry_with_memory(noop, on_event=coroutine, increment="0"),
            "increment '0' is zero",
            id="retry-hook-and-bad-step",
        ),
        pytest.param(
            lambda coroutine: api.circuit_breaker(noop, range(3), on_progress=coroutine),
            "on_progress must be a callable",
            id="breaker-hook",
        ),
        pytest.param(
            lambda coroutine: api.circuit_breaker(noop, range(3), on_progress=coroutine, max_failures=-1),
            "max_failures must be an int >= 0, got -1",
            id="breaker-hook-and-bad-rule",
        ),
        pytest.param(
            lambda coroutine: api.circuit_breaker(noop, coroutine),
            "items must be an iterable or an async iterable, got a coroutine object",
            id="breaker-items",
        ),
        pytest.param(
            lambda coroutine: api.circuit_breaker_execute(noop, coroutine, concurrency=0),
            "concurrency must be an int >= 1, got 0",
            id="execute-items-and-bad-concurrency",
        ),
    ],
)
async def test_coroutine_argument_closed(call: CoroutineCall, message: str) -> None:
    coroutine = noop()

    with pytest.raises((TypeError, ValueError), match=message):
        await call(coroutine)

    # Closed, so that Python does not also warn that it was never awaited.
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
