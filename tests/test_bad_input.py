"""One table of bad arguments for every public function: each is rejected before anything runs.

Every row calls one public function with one bad argument and states the exception it must raise, the parameter
the message must name and the value it must show. The test also checks that nothing was launched (a recording
task counts calls and overrides) and that every coroutine object the row passed by mistake was closed, so Python
never warns that it was not awaited.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import flyte
import flyte.errors
import pytest

import flyte_patterns
from flyte_patterns import is_out_of_memory

env = flyte.TaskEnvironment(name="flyte_patterns_test_bad_input")


@env.task
async def flyte_echo(x: int) -> int:
    return x


@dataclass
class Recorder:
    """A task double that counts launches, and makes the coroutine objects a row passes by mistake."""

    calls: int = 0
    overrides: int = 0
    coroutines: list[Coroutine[Any, Any, Any]] = field(default_factory=list)

    async def plain(self, *args: Any, **kwargs: Any) -> int:
        """An async callable without Flyte's override protocol."""
        self.calls += 1
        return 0

    def sync(self, *args: Any, **kwargs: Any) -> int:
        self.calls += 1
        return 0

    @property
    def task(self) -> OverridableTask:
        """A task double with Flyte's override protocol, counting the launches it is asked for."""
        return OverridableTask(self)

    def coroutine(self) -> Coroutine[Any, Any, Any]:
        """Return a coroutine object, as ``task(x)`` gives where ``task`` was meant."""
        coroutine = self.plain()
        self.coroutines.append(coroutine)
        return coroutine

    def generator(self) -> Iterator[int]:
        yield from range(3)


class OverridableTask:
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self.short_name = "recorded"

    def override(self, **kwargs: Any) -> Callable[..., Any]:
        self._recorder.overrides += 1
        return self._recorder.plain

    async def __call__(self, *args: Any, **kwargs: Any) -> int:
        return await self._recorder.plain(*args, **kwargs)


async def async_predicate(error: Exception) -> bool:
    return True


Call = Callable[[Recorder], Any]

# The rows pass arguments of the wrong type on purpose, so they call the public functions through an untyped name.
api: Any = flyte_patterns

OOM_KILLED = flyte.errors.OOMError("OOMKilled", "killed at its limit")


def row(call: Call, error: type[Exception], parameter: str, value: str, *, id: str) -> Any:
    """One bad call: the exception it raises, and the parameter and value its message must contain."""
    return pytest.param(call, error, parameter, value, id=id)


BAD_CALLS = [
    # ------------------------------------------------------------ parse_memory
    row(lambda r: api.parse_memory("Gi"), ValueError, "memory", "'Gi'", id="parse_memory-no-number"),
    row(lambda r: api.parse_memory(""), ValueError, "memory", "''", id="parse_memory-empty"),
    row(lambda r: api.parse_memory("1 Gi"), ValueError, "memory", "'1 Gi'", id="parse_memory-whitespace"),
    row(lambda r: api.parse_memory("1GiB"), ValueError, "memory", "'1GiB'", id="parse_memory-bytes-unit"),
    row(lambda r: api.parse_memory("2K"), ValueError, "memory", "'2K'", id="parse_memory-wrong-case"),
    row(lambda r: api.parse_memory("500m"), ValueError, "memory", "'500m'", id="parse_memory-fractional"),
    row(lambda r: api.parse_memory("-1Gi"), ValueError, "memory", "'-1Gi'", id="parse_memory-negative"),
    row(lambda r: api.parse_memory(1.5), TypeError, "memory", "1.5", id="parse_memory-float"),
    row(lambda r: api.parse_memory(True), TypeError, "memory", "True", id="parse_memory-bool"),
    row(lambda r: api.parse_memory(None), TypeError, "memory", "None", id="parse_memory-none"),
    row(lambda r: api.parse_memory("1Gx", name="limit"), ValueError, "limit", "'1Gx'", id="parse_memory-named"),
    # ------------------------------------------------------------ format_memory, whose messages name the function
    row(lambda r: api.format_memory(-1), ValueError, "format_memory() argument", "-1", id="format_memory-negative"),
    row(
        lambda r: api.format_memory(10**31),
        ValueError,
        "format_memory() argument",
        "1" + "0" * 31,
        id="format_memory-huge",
    ),
    row(lambda r: api.format_memory("1Gi"), TypeError, "format_memory()", "'1Gi'", id="format_memory-str"),
    row(lambda r: api.format_memory(True), TypeError, "format_memory()", "True", id="format_memory-bool"),
    row(lambda r: api.format_memory(1.5), TypeError, "format_memory()", "1.5", id="format_memory-float"),
    # ------------------------------------------------------------ exception_matches
    row(lambda r: api.exception_matches("boom", ValueError), TypeError, "exc", "'boom'", id="matches-exc-str"),
    row(lambda r: api.exception_matches(None, ValueError), TypeError, "exc", "None", id="matches-exc-none"),
    row(lambda r: api.exception_matches(ValueError(), 42), TypeError, "on", "42", id="matches-on-int"),
    row(lambda r: api.exception_matches(ValueError(), []), ValueError, "on", "empty", id="matches-on-empty"),
    row(
        lambda r: api.exception_matches(ValueError(), [ValueError()]),
        TypeError,
        "on",
        "ValueError()",
        id="matches-instance",
    ),
    row(lambda r: api.exception_matches(ValueError(), ""), ValueError, "on", "''", id="matches-on-blank"),
    # ------------------------------------------------------------ is_out_of_memory
    row(lambda r: api.is_out_of_memory("OOMKilled"), TypeError, "exc", "'OOMKilled'", id="oom-exc-str"),
    row(lambda r: api.is_out_of_memory(OOM_KILLED, codes=137), TypeError, "codes", "137", id="oom-codes-int"),
    row(lambda r: api.is_out_of_memory(OOM_KILLED, codes=[137]), TypeError, "codes", "137", id="oom-codes-int-entry"),
    row(lambda r: api.is_out_of_memory(OOM_KILLED, codes=[]), ValueError, "codes", "got none", id="oom-codes-empty"),
    row(lambda r: api.is_out_of_memory(OOM_KILLED, codes=[" "]), ValueError, "codes", "' '", id="oom-codes-blank"),
    # ------------------------------------------------------------ memory_ladder
    row(lambda r: api.memory_ladder("1.1Gi"), ValueError, "initial_memory", "'1.1Gi'", id="ladder-fractional"),
    row(lambda r: api.memory_ladder(max_memory="1GB"), ValueError, "max_memory", "'1GB'", id="ladder-bad-unit"),
    row(
        lambda r: api.memory_ladder("16Gi", max_memory="10Gi"),
        ValueError,
        "initial_memory",
        "'16Gi'",
        id="ladder-above",
    ),
    row(lambda r: api.memory_ladder(increment="0"), ValueError, "increment", "'0'", id="ladder-zero-step"),
    row(lambda r: api.memory_ladder(increment="-1Gi"), ValueError, "increment", "'-1Gi'", id="ladder-negative-step"),
    row(lambda r: api.memory_ladder(increment=True), TypeError, "increment", "True", id="ladder-bool-step"),
    row(lambda r: api.memory_ladder(factor=1), ValueError, "factor", "1", id="ladder-factor-one"),
    row(lambda r: api.memory_ladder(factor=float("inf")), ValueError, "factor", "inf", id="ladder-factor-inf"),
    row(lambda r: api.memory_ladder(factor="2"), TypeError, "factor", "'2'", id="ladder-factor-str"),
    row(lambda r: api.memory_ladder(sizes=[]), ValueError, "sizes", "empty", id="ladder-sizes-empty"),
    row(lambda r: api.memory_ladder(sizes="4Gi"), TypeError, "sizes", "'4Gi'", id="ladder-sizes-str"),
    row(lambda r: api.memory_ladder(sizes=["2Gi", "1Gi"]), ValueError, "sizes[1]", "'1Gi'", id="ladder-sizes-order"),
    row(lambda r: api.memory_ladder(sizes=["1Gi", "0"]), ValueError, "sizes[1]", "'0'", id="ladder-sizes-zero"),
    # ------------------------------------------------------------ retry_with_memory
    row(lambda r: api.retry_with_memory(42), TypeError, "task", "42", id="retry-task-int"),
    row(
        lambda r: api.retry_with_memory(r.coroutine()), TypeError, "task", "coroutine object", id="retry-task-coroutine"
    ),
    row(
        lambda r: api.retry_with_memory(r.task, initial_memory="Gi"),
        ValueError,
        "initial_memory",
        "'Gi'",
        id="retry-initial",
    ),
    row(
        lambda r: api.retry_with_memory(r.task, initial_memory="16Gi", max_memory="10Gi"),
        ValueError,
        "initial_memory",
        "'16Gi'",
        id="retry-initial-above-ceiling",
    ),
    row(lambda r: api.retry_with_memory(r.task, increment="0"), ValueError, "increment", "'0'", id="retry-zero-step"),
    row(
        lambda r: api.retry_with_memory(r.task, increment="-1Gi"),
        ValueError,
        "increment",
        "'-1Gi'",
        id="retry-negative-step",
    ),
    row(lambda r: api.retry_with_memory(r.task, factor=0.5), ValueError, "factor", "0.5", id="retry-factor"),
    row(
        lambda r: api.retry_with_memory(r.task, increment="1Gi", factor=2),
        TypeError,
        "factor",
        "increment='1Gi'",
        id="retry-step-and-factor",
    ),
    row(
        lambda r: api.retry_with_memory(r.task, max_memory=True),
        TypeError,
        "max_memory",
        "True",
        id="retry-ceiling-bool",
    ),
    row(lambda r: api.retry_with_memory(r.task, sizes=[]), ValueError, "sizes", "empty", id="retry-sizes-empty"),
    row(
        lambda r: api.retry_with_memory(r.task, sizes=["1Gi"], max_memory="2Gi"),
        TypeError,
        "sizes",
        "max_memory='2Gi'",
        id="retry-sizes-and-ceiling",
    ),
    row(
        lambda r: api.retry_with_memory(r.task, oom_codes=[]),
        ValueError,
        "oom_codes",
        "got none",
        id="retry-codes-empty",
    ),
    row(lambda r: api.retry_with_memory(r.task, oom_codes=[137]), TypeError, "oom_codes", "137", id="retry-codes-int"),
    row(lambda r: api.retry_with_memory(r.task, on_event=42), TypeError, "on_event", "42", id="retry-hook-int"),
    row(
        lambda r: api.retry_with_memory(r.task, on_event=r.coroutine()),
        TypeError,
        "on_event",
        "coroutine object",
        id="retry-hook-coroutine",
    ),
    row(
        lambda r: api.retry_with_memory(r.task, on_event=r.coroutine(), increment="0"),
        ValueError,
        "increment",
        "'0'",
        id="retry-hook-coroutine-and-bad-step",
    ),
    row(
        lambda r: api.retry_with_memory(r.task, enforce_locally="yes"),
        TypeError,
        "enforce_locally",
        "'yes'",
        id="retry-enforce-str",
    ),
    row(
        lambda r: api.retry_with_memory(r.task, task_kwargs=[1]),
        TypeError,
        "task_kwargs",
        "[1]",
        id="retry-task-kwargs",
    ),
    row(lambda r: api.retry_with_memory(r.task, cpu=-1), ValueError, "cpu", "-1", id="retry-cpu-negative"),
    row(lambda r: api.retry_with_memory(r.plain, cpu=2), TypeError, "cpu", "2", id="retry-cpu-plain-callable"),
    # ------------------------------------------------------------ enforce_local_memory
    row(lambda r: api.enforce_local_memory(42), TypeError, "task", "42", id="enforce-int"),
    row(
        lambda r: api.enforce_local_memory(r.coroutine()), TypeError, "task", "coroutine object", id="enforce-coroutine"
    ),
    row(lambda r: api.enforce_local_memory(r.plain), TypeError, "task", "Recorder.plain", id="enforce-plain-callable"),
    row(lambda r: api.enforce_local_memory(flyte_echo, config=5), TypeError, "config", "5", id="enforce-config"),
    # ------------------------------------------------------------ run_with_memory_limit
    row(lambda r: api.run_with_memory_limit(42, limit="1Gi"), TypeError, "func", "42", id="limit-func-int"),
    row(
        lambda r: api.run_with_memory_limit(r.coroutine(), limit="1Gi"),
        TypeError,
        "func",
        "coroutine object",
        id="limit-func-coroutine",
    ),
    row(
        lambda r: api.run_with_memory_limit(flyte_echo, 1, limit="1Gi"),
        TypeError,
        "func",
        "flyte_echo",
        id="limit-func-task",
    ),
    row(
        lambda r: api.run_with_memory_limit(r.plain, limit="1 Gi"), ValueError, "limit", "'1 Gi'", id="limit-whitespace"
    ),
    row(lambda r: api.run_with_memory_limit(r.plain, limit="16g"), ValueError, "limit", "'16g'", id="limit-unit"),
    row(lambda r: api.run_with_memory_limit(r.plain, limit=0), ValueError, "limit", "0", id="limit-zero"),
    row(lambda r: api.run_with_memory_limit(r.plain, limit=1.5), TypeError, "limit", "1.5", id="limit-float"),
    row(
        lambda r: api.run_with_memory_limit(r.plain, limit="1Gi", config="fast"),
        TypeError,
        "config",
        "'fast'",
        id="limit-config",
    ),
    # ------------------------------------------------------------ memory_limited
    row(lambda r: api.memory_limited(42), TypeError, "func", "42", id="limited-int"),
    row(lambda r: api.memory_limited(r.coroutine()), TypeError, "func", "coroutine object", id="limited-coroutine"),
    row(lambda r: api.memory_limited(flyte_echo), TypeError, "func", "flyte_echo", id="limited-flyte-task"),
    row(lambda r: api.memory_limited(r.plain, config=1), TypeError, "config", "1", id="limited-config"),
    # ------------------------------------------------------------ with_fallback
    row(lambda r: api.with_fallback(42, [r.plain]), TypeError, "primary", "42", id="fallback-primary-int"),
    row(
        lambda r: api.with_fallback(r.coroutine(), [r.plain]),
        TypeError,
        "primary",
        "coroutine object",
        id="fallback-primary-coroutine",
    ),
    row(lambda r: api.with_fallback(r.plain, []), ValueError, "alternatives", "empty", id="fallback-no-alternatives"),
    row(
        lambda r: api.with_fallback(r.plain, r.plain), TypeError, "alternatives", "Recorder.plain", id="fallback-single"
    ),
    row(lambda r: api.with_fallback(r.plain, [42]), TypeError, "alternatives[0]", "42", id="fallback-alternative-int"),
    row(
        lambda r: api.with_fallback(r.plain, [r.coroutine()]),
        TypeError,
        "alternatives[0]",
        "coroutine object",
        id="fallback-alternative-coroutine",
    ),
    row(lambda r: api.with_fallback(r.plain, [r.plain], on=[]), ValueError, "on", "empty", id="fallback-on-empty"),
    row(
        lambda r: api.with_fallback(r.plain, [r.plain], on=ValueError()),
        TypeError,
        "on",
        "ValueError()",
        id="fallback-on-instance",
    ),
    row(
        lambda r: api.with_fallback(r.plain, [r.plain], on=async_predicate),
        TypeError,
        "on",
        "async_predicate",
        id="fallback-on-async",
    ),
    row(
        lambda r: api.with_fallback(r.plain, [r.plain], attempt_timeout=0),
        ValueError,
        "attempt_timeout",
        "0",
        id="fallback-timeout-zero",
    ),
    row(
        lambda r: api.with_fallback(r.plain, [r.plain], attempt_timeout="5"),
        TypeError,
        "attempt_timeout",
        "'5'",
        id="fallback-timeout-str",
    ),
    row(
        lambda r: api.with_fallback(r.plain, [r.plain], accept_result=42),
        TypeError,
        "accept_result",
        "42",
        id="fallback-accept",
    ),
    row(
        lambda r: api.with_fallback(r.plain, [r.plain], on_fallback=r.coroutine()),
        TypeError,
        "on_fallback",
        "coroutine object",
        id="fallback-hook-coroutine",
    ),
    row(
        lambda r: api.with_fallback(r.plain, [r.plain], return_outcome="yes"),
        TypeError,
        "return_outcome",
        "'yes'",
        id="fallback-outcome-str",
    ),
    # ------------------------------------------------------------ circuit_breaker
    row(lambda r: api.circuit_breaker(42, range(3)), TypeError, "task", "42", id="breaker-task-int"),
    row(
        lambda r: api.circuit_breaker(r.coroutine(), range(3)),
        TypeError,
        "task",
        "coroutine object",
        id="breaker-task-coroutine",
    ),
    row(lambda r: api.circuit_breaker(r.plain, 42), TypeError, "items", "42", id="breaker-items-int"),
    row(lambda r: api.circuit_breaker(r.plain, None), TypeError, "items", "None", id="breaker-items-none"),
    row(
        lambda r: api.circuit_breaker(r.plain, r.coroutine()),
        TypeError,
        "items",
        "coroutine object",
        id="breaker-items-coroutine",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), max_failures=-1),
        ValueError,
        "max_failures",
        "-1",
        id="breaker-negative",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), max_failures=True),
        TypeError,
        "max_failures",
        "True",
        id="breaker-bool",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), max_failures=2.5),
        TypeError,
        "max_failures",
        "2.5",
        id="breaker-float",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), max_failure_ratio=1.5),
        ValueError,
        "max_failure_ratio",
        "1.5",
        id="breaker-ratio-above-one",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), max_failure_ratio=float("nan")),
        ValueError,
        "max_failure_ratio",
        "nan",
        id="breaker-ratio-nan",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), max_failure_ratio="0.5"),
        TypeError,
        "max_failure_ratio",
        "'0.5'",
        id="breaker-ratio-str",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, r.generator(), max_failure_ratio=0.5),
        TypeError,
        "max_failure_ratio",
        "generator",
        id="breaker-ratio-without-count",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), rolling_window=5),
        TypeError,
        "rolling_window",
        "5",
        id="breaker-window-int",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), concurrency=0),
        ValueError,
        "concurrency",
        "0",
        id="breaker-concurrency",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), concurrency=1.5),
        TypeError,
        "concurrency",
        "1.5",
        id="breaker-conc-float",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, r.generator(), total=-1),
        ValueError,
        "total",
        "-1",
        id="breaker-total-negative",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), total=4),
        ValueError,
        "total",
        "4",
        id="breaker-total-disagrees",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), drain="yes"),
        TypeError,
        "drain",
        "'yes'",
        id="breaker-drain-str",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), raise_on_trip=1),
        TypeError,
        "raise_on_trip",
        "1",
        id="breaker-raise-int",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), on_progress=42),
        TypeError,
        "on_progress",
        "42",
        id="breaker-hook-int",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), on_progress=r.coroutine()),
        TypeError,
        "on_progress",
        "coroutine object",
        id="breaker-hook-coroutine",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), on_progress=r.coroutine(), max_failures=-1),
        ValueError,
        "max_failures",
        "-1",
        id="breaker-hook-coroutine-and-bad-rule",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), group_name=""),
        ValueError,
        "group_name",
        "''",
        id="breaker-group-blank",
    ),
    row(
        lambda r: api.circuit_breaker(r.plain, range(3), group_name=7),
        TypeError,
        "group_name",
        "7",
        id="breaker-group-int",
    ),
    # ------------------------------------------------------------ circuit_breaker_execute
    row(
        lambda r: api.circuit_breaker_execute(r.plain, range(3), "3"),
        TypeError,
        "max_failures",
        "'3'",
        id="execute-str",
    ),
    row(
        lambda r: api.circuit_breaker_execute(r.plain, range(3), -1),
        ValueError,
        "max_failures",
        "-1",
        id="execute-negative",
    ),
    row(lambda r: api.circuit_breaker_execute(r.sync, 5), TypeError, "items", "5", id="execute-items-int"),
    row(
        lambda r: api.circuit_breaker_execute(r.coroutine(), range(3)),
        TypeError,
        "task",
        "coroutine object",
        id="execute-task-coroutine",
    ),
    # ------------------------------------------------------------ batch_map
    row(lambda r: api.batch_map(42, range(3)), TypeError, "task", "42", id="batch-task-int"),
    row(
        lambda r: api.batch_map(r.coroutine(), range(3)),
        TypeError,
        "task",
        "coroutine object",
        id="batch-task-coroutine",
    ),
    row(lambda r: api.batch_map(r.plain, 42), TypeError, "items", "42", id="batch-items-int"),
    row(lambda r: api.batch_map(r.plain, range(3), batch_size=0), ValueError, "batch_size", "0", id="batch-size-zero"),
    row(
        lambda r: api.batch_map(r.plain, range(3), batch_size=-1),
        ValueError,
        "batch_size",
        "-1",
        id="batch-size-negative",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), batch_size=True),
        TypeError,
        "batch_size",
        "True",
        id="batch-size-bool",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), batch_size=1.5),
        TypeError,
        "batch_size",
        "1.5",
        id="batch-size-float",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), concurrency=0),
        ValueError,
        "concurrency",
        "0",
        id="batch-concurrency",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), max_batch_weight=10),
        TypeError,
        "max_batch_weight",
        "weight",
        id="batch-weight-bound-alone",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), weight=float, max_batch_weight=0),
        ValueError,
        "max_batch_weight",
        "0",
        id="batch-weight-bound-zero",
    ),
    row(lambda r: api.batch_map(r.plain, range(3), max_wait=0), ValueError, "max_wait", "0", id="batch-max-wait-zero"),
    row(lambda r: api.batch_map(r.plain, range(3), total=4), ValueError, "total", "4", id="batch-total-disagrees"),
    row(
        lambda r: api.batch_map(r.plain, r.generator(), max_failure_ratio=0.5),
        TypeError,
        "max_failure_ratio",
        "generator",
        id="batch-ratio-without-count",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), return_result="yes"),
        TypeError,
        "return_result",
        "'yes'",
        id="batch-return-result-str",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), on_progress=42), TypeError, "on_progress", "42", id="batch-hook-int"
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), group_name=""),
        ValueError,
        "group_name",
        "''",
        id="batch-group-blank",
    ),
    row(
        lambda r: api.batch_map(r.plain, r.coroutine()),
        TypeError,
        "items",
        "coroutine object",
        id="batch-items-coroutine",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), on_progress=r.coroutine(), batch_size=0),
        ValueError,
        "batch_size",
        "0",
        id="batch-hook-coroutine-and-bad-size",
    ),
    row(
        lambda r: api.batch_map(r.plain, range(3), weight=r.coroutine(), max_batch_weight=5),
        TypeError,
        "weight",
        "coroutine object",
        id="batch-weight-coroutine",
    ),
    # ------------------------------------------------------------ map_reduce
    row(lambda r: api.map_reduce(r.plain, range(3), reduce=42, initial=0), TypeError, "reduce", "42", id="reduce-int"),
    row(
        lambda r: api.map_reduce(r.plain, range(3), reduce=r.coroutine(), initial=0),
        TypeError,
        "reduce",
        "coroutine object",
        id="reduce-coroutine",
    ),
    row(
        lambda r: api.map_reduce(r.plain, range(3), reduce=r.sync, initial=0, combine=42),
        TypeError,
        "combine",
        "42",
        id="reduce-combine-int",
    ),
    row(
        lambda r: api.map_reduce(r.plain, range(3), reduce=r.sync, initial=0, batch_size=-1),
        ValueError,
        "batch_size",
        "-1",
        id="reduce-batch-size",
    ),
    row(
        lambda r: api.map_reduce(r.plain, range(3), reduce=r.coroutine(), initial=0, concurrency=0),
        ValueError,
        "concurrency",
        "0",
        id="reduce-coroutine-and-bad-concurrency",
    ),
    row(
        lambda r: api.map_reduce(r.plain, r.coroutine(), reduce=r.sync, initial=0, combine=r.coroutine()),
        TypeError,
        "items",
        "coroutine object",
        id="reduce-items-and-combine-coroutines",
    ),
    # ------------------------------------------------------------ auto_batch_size
    row(lambda r: api.auto_batch_size(10, 0), ValueError, "concurrency", "0", id="auto-size-concurrency"),
    row(lambda r: api.auto_batch_size(-1, 2), ValueError, "total", "-1", id="auto-size-total"),
    row(lambda r: api.auto_batch_size(10, True), TypeError, "concurrency", "True", id="auto-size-bool"),
    # ------------------------------------------------------------ the option classes the functions take
    row(lambda r: api.RollingWindow(size=0, failure_rate=0.5), ValueError, "RollingWindow size", "0", id="window-size"),
    row(lambda r: api.RollingWindow(size=5, failure_rate=0), ValueError, "failure_rate", "0", id="window-rate-zero"),
    row(
        lambda r: api.RollingWindow(size=5, failure_rate=2), ValueError, "failure_rate", "2", id="window-rate-above-one"
    ),
    row(
        lambda r: api.RollingWindow(size=5, failure_rate=0.5, min_completed=0),
        ValueError,
        "min_completed",
        "0",
        id="window-min-completed",
    ),
    row(lambda r: api.LocalMemoryLimit(poll_interval=0), ValueError, "poll_interval", "0", id="poll-interval-zero"),
    row(
        lambda r: api.LocalMemoryLimit(poll_interval=0.1, max_poll_interval=0.01),
        ValueError,
        "max_poll_interval",
        "0.01",
        id="poll-interval-order",
    ),
    row(lambda r: api.Alternative(42), TypeError, "Alternative.task", "42", id="alternative-task"),
    row(lambda r: api.Alternative(r.plain, on=[]), ValueError, "Alternative.on", "empty", id="alternative-on-empty"),
    row(
        lambda r: api.Alternative(r.plain, name=" "), ValueError, "Alternative.name", "' '", id="alternative-name-blank"
    ),
]


async def make_call(call: Call, recorder: Recorder) -> None:
    """Make the row's call, and await what it returns when the function is async."""
    returned = call(recorder)
    if inspect.isawaitable(returned):
        await returned


@pytest.mark.parametrize(("call", "error", "parameter", "value"), BAD_CALLS)
async def test_bad_argument_rejected_before_launch(
    call: Call, error: type[Exception], parameter: str, value: str
) -> None:
    recorder = Recorder()

    with pytest.raises(error) as caught:
        await make_call(call, recorder)

    message = str(caught.value)
    assert parameter in message
    assert value in message
    assert recorder.calls == 0
    assert recorder.overrides == 0
    # Closed, so that Python does not also warn that they were never awaited.
    assert [inspect.getcoroutinestate(coroutine) for coroutine in recorder.coroutines] == [inspect.CORO_CLOSED] * len(
        recorder.coroutines
    )


# The id prefix of each public function's rows.
ROW_PREFIXES = {
    "parse_memory": "parse_memory-",
    "format_memory": "format_memory-",
    "exception_matches": "matches-",
    "is_out_of_memory": "oom-",
    "memory_ladder": "ladder-",
    "retry_with_memory": "retry-",
    "enforce_local_memory": "enforce-",
    "run_with_memory_limit": "limit-",
    "memory_limited": "limited-",
    "with_fallback": "fallback-",
    "circuit_breaker": "breaker-",
    "circuit_breaker_execute": "execute-",
    "batch_map": "batch-",
    "map_reduce": "reduce-",
    "auto_batch_size": "auto-size-",
}

# Functions that take no argument, or that accept any object: flyte_code returns None, is_interrupt False and
# earlier_attempts an empty tuple for anything that is not the exception they look for.
WITHOUT_BAD_INPUT = {"is_local_memory_supported", "flyte_code", "is_interrupt", "earlier_attempts"}


def test_every_public_function_has_rows() -> None:
    public_functions = {name for name in flyte_patterns.__all__ if inspect.isfunction(getattr(flyte_patterns, name))}
    assert set(ROW_PREFIXES) == public_functions - WITHOUT_BAD_INPUT

    ids = [param.id for param in BAD_CALLS]
    assert len(ids) == len(set(ids))
    for name, prefix in ROW_PREFIXES.items():
        assert any(row_id.startswith(prefix) for row_id in ids), name


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
