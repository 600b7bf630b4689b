"""Known failure cases of tools like ours, with the exact values, where the pattern tests leave a gap.

The pattern test files cover most of these cases already. The tests here add the values those files do not pin
down: every wrong-case unit with its suggested spelling, the trip's cause as the very error object of the first
failing item, and a cancelled fan-out whose items never complete. The two about time use short real sleeps and
assert on counts and order, with generous bounds only on the duration they are about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from flyte_patterns import CircuitBreakerError, circuit_breaker, circuit_breaker_execute, parse_memory

from .fanout_support import LoopErrors, Probe, new_tasks


@pytest.fixture
async def loop_errors() -> AsyncIterator[LoopErrors]:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors = LoopErrors()
    loop.set_exception_handler(errors)
    yield errors
    loop.set_exception_handler(previous)


# ---------------------------------------------------------------- memory quantities: case matters


@pytest.mark.parametrize(
    ("quantity", "suggestions"),
    [
        ("500mi", ["'500Mi' (524288000 bytes)"]),
        ("16g", ["'16G' (16000000000 bytes)", "'16Gi' (17179869184 bytes)"]),
        ("1gi", ["'1Gi' (1073741824 bytes)"]),
        ("2K", ["'2k' (2000 bytes)", "'2Ki' (2048 bytes)"]),
    ],
)
def test_wrong_case_unit_suggests_spelling(quantity: str, suggestions: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory(quantity)
    message = str(caught.value)

    assert message.startswith(f"memory {quantity!r} has an invalid unit")
    assert f"Did you mean {' or '.join(suggestions)}?" in message
    assert "Units are case-sensitive" in message


def test_milli_unit_is_half_a_byte() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("500m")
    message = str(caught.value)

    assert message.startswith("memory '500m' is 0.5 bytes, not a whole number of bytes")
    assert "The nearest valid values are '0' and '1'" in message
    assert "Did you mean '500M' (500000000 bytes) or '500Mi' (524288000 bytes)?" in message


def test_fractional_gibibytes_name_neighbors() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("1.1Gi")

    assert str(caught.value) == (
        "memory '1.1Gi' is 1181116006.4 bytes, not a whole number of bytes. "
        "The nearest valid values are '1181116006' and '1181116007'"
    )


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("500k", 500000), ("500M", 500000000), ("500Mi", 524288000)],
)
def test_unit_case_changes_value(quantity: str, expected: int) -> None:
    assert parse_memory(quantity) == expected


# ---------------------------------------------------------------- circuit breaker: the trip keeps the first error


async def test_trip_cause_is_first_error(loop_errors: LoopErrors) -> None:
    # Ten items start at once. Item 0 fails after 10 ms, the others would sleep 1 s, and item 9 takes 0.3 s to
    # finish its cancellation. With max_failures=0 the call ends after about 0.31 s.
    before = asyncio.all_tasks()
    first_error = OSError("item 0 failed")
    probe = Probe()
    cleaned_up: list[int] = []

    async def task(i: int) -> int:
        async def body() -> int:
            if i == 0:
                await asyncio.sleep(0.01)
                raise first_error
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                if i == 9:
                    await asyncio.sleep(0.3)
                cleaned_up.append(i)
                raise
            return i

        return await probe.run(i, body)

    started = time.perf_counter()
    with pytest.raises(CircuitBreakerError) as caught:
        await circuit_breaker(task, range(10), max_failures=0, concurrency=10, raise_on_trip=True)
    elapsed = time.perf_counter() - started

    assert 0.3 <= elapsed < 0.9
    assert caught.value.__cause__ is first_error
    assert caught.value.result.first_error is first_error
    assert caught.value.result.outcomes[0].error is first_error
    assert probe.started == list(range(10))
    assert sorted(probe.cancelled) == list(range(1, 10))
    assert sorted(cleaned_up) == list(range(1, 10))
    assert probe.completed == []
    assert new_tasks(before) == set()
    del caught
    assert loop_errors.messages() == []


# ---------------------------------------------------------------- cancelling the caller cancels the work


@pytest.mark.parametrize("execute", [False, True], ids=["circuit_breaker", "circuit_breaker_execute"])
async def test_cancelled_fan_out_completes_nothing(execute: bool, loop_errors: LoopErrors) -> None:
    # Five items that sleep 1 s each, all running at once, and the caller cancelled after 20 ms.
    before = asyncio.all_tasks()
    probe = Probe()

    async def task(i: int) -> int:
        async def body() -> int:
            await asyncio.sleep(1)
            return i

        return await probe.run(i, body)

    fan_out: Coroutine[Any, Any, object] = (
        circuit_breaker_execute(task, range(5), concurrency=5)
        if execute
        else circuit_breaker(task, range(5), concurrency=5)
    )
    call = asyncio.create_task(fan_out)
    await asyncio.sleep(0.02)
    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call

    assert sorted(probe.started) == [0, 1, 2, 3, 4]
    assert sorted(probe.cancelled) == [0, 1, 2, 3, 4]
    assert probe.completed == []
    assert probe.failed == []
    # Every task the call created is done, so no item can complete later either.
    assert new_tasks(before) == set()
    assert loop_errors.messages() == []
