"""Tests for retry_with_memory, the OOM retrier.

Most tests use ``FakeTask``, a test double with Flyte's ``override`` protocol that records the memory limit of
each launch. It raises ``flyte.errors.OOMError("OOMKilled", ...)`` itself to stand in for a Kubernetes kill, which
Flyte's local engine cannot produce. The tests marked ``flyte`` run real tasks on the local engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import flyte
import flyte.errors
import psutil
import pytest
from flyte.extend import AsyncFunctionTaskTemplate, TaskPluginRegistry

import flyte_patterns._oom as oom_module
from flyte_patterns import (
    LocalMemoryLimit,
    MemoryAttempt,
    MemoryLadderExhaustedError,
    MemoryLadderWarning,
    MemoryRetryEvent,
    flyte_code,
    format_memory,
    is_out_of_memory,
    memory_limited,
    parse_memory,
    retry_with_memory,
)
from flyte_patterns._local_memory import _LocalMemoryTask
from tests.conftest import RunLocal

MI, GI = 2**20, 2**30

Behaviour = Callable[..., Awaitable[Any]]


@dataclass
class Launch:
    """One launch of a FakeTask: what it was given, and how it ended."""

    memory: tuple[str, str]
    short_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    overrides: dict[str, Any]
    finished: bool = False
    cancelled: bool = False

    @property
    def limit(self) -> int:
        return parse_memory(self.memory[1])


@dataclass
class FakeTask:
    """A test double with Flyte's override protocol, recording every launch."""

    behaviour: Behaviour
    resources: flyte.Resources | None = None
    reusable: object = None
    short_name: str = "fake"
    launches: list[Launch] = field(default_factory=list)

    def override(self, *, resources: flyte.Resources, short_name: str, **overrides: Any) -> Behaviour:
        assert isinstance(resources.memory, tuple)

        async def launch(*args: Any, **kwargs: Any) -> Any:
            record = Launch(resources.memory, short_name, args, kwargs, overrides)  # type: ignore[arg-type]
            self.launches.append(record)
            try:
                result = await self.behaviour(record.limit, *args, **kwargs)
            except asyncio.CancelledError:
                record.cancelled = True
                raise
            record.finished = True
            return result

        return launch

    @property
    def sizes(self) -> list[str]:
        return [format_memory(launch.limit) for launch in self.launches]


def oom_kill(limit: int) -> flyte.errors.OOMError:
    # The error Flyte delivers to the parent for a container Kubernetes killed at its memory limit.
    return flyte.errors.OOMError("OOMKilled", f"container killed at its memory limit of {format_memory(limit)}")


def needs(minimum: int) -> Behaviour:
    """Return a behaviour that runs out of memory below ``minimum`` bytes and otherwise echoes its arguments."""

    async def behaviour(limit: int, *args: Any, **kwargs: Any) -> Any:
        if limit < minimum:
            raise oom_kill(limit)
        return (format_memory(limit), args, kwargs)

    return behaviour


def always_raises(error: BaseException) -> Behaviour:
    async def behaviour(limit: int, *args: Any, **kwargs: Any) -> Any:
        raise error

    return behaviour


@pytest.fixture
def events() -> list[MemoryRetryEvent]:
    return []


@pytest.fixture
def counting_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every clock reading one second after the last, so each attempt lasts exactly 1.0 s."""
    readings = iter(range(1_000_000))
    monkeypatch.setattr(oom_module, "_clock", lambda: float(next(readings)))


# ---------------------------------------------------------------- failure cases C03 to C06


async def test_every_attempt_gets_its_own_size() -> None:
    task = FakeTask(needs(GI))

    result = await retry_with_memory(task, "x", initial_memory="250Mi", increment="250Mi", max_memory="2Gi")

    assert task.sizes == ["250Mi", "500Mi", "750Mi", "1000Mi", "1250Mi"]
    assert result == ("1250Mi", ("x",), {})
    assert [launch.args for launch in task.launches] == [("x",)] * 5
    assert [launch.kwargs for launch in task.launches] == [{}] * 5

    # A second, independent call starts again at the bottom of the ladder.
    await retry_with_memory(task, "x", initial_memory="250Mi", increment="250Mi", max_memory="2Gi")
    assert task.sizes[5:] == ["250Mi", "500Mi", "750Mi", "1000Mi", "1250Mi"]


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad input"),
        # A ValueError as Flyte delivers it from a child task: only the class name survives, as the code.
        flyte.errors.RuntimeUserError("ValueError", "bad input"),
        # A user class named BoomError, which Flyte turns into an OOMError because its code contains "OOM".
        flyte.errors.OOMError("BoomError", "boom"),
        flyte.errors.OOMError("RoomNotFound", "no room"),
    ],
    ids=["in-process", "flyte-value-error", "flyte-boom-error", "flyte-room-not-found"],
)
async def test_only_out_of_memory_escalates(error: Exception) -> None:
    task = FakeTask(always_raises(error))

    with pytest.raises(type(error)) as caught:
        await retry_with_memory(task, "x", initial_memory="250Mi", increment="250Mi", max_memory="2Gi")

    assert caught.value is error
    assert task.sizes == ["250Mi"]


async def test_ceiling_tried_once_then_error(counting_clock: None) -> None:
    errors: list[flyte.errors.OOMError] = []

    async def always_oom(limit: int, *args: Any) -> Any:
        errors.append(oom_kill(limit))
        raise errors[-1]

    task = FakeTask(always_oom)

    with pytest.raises(MemoryLadderExhaustedError) as caught:
        await retry_with_memory(task, initial_memory="4Gi", increment="4Gi", max_memory="10Gi")

    assert task.sizes == ["4Gi", "8Gi", "10Gi"]
    exhausted = caught.value
    assert exhausted.__cause__ is errors[-1]
    assert "4Gi, 8Gi, 10Gi" in str(exhausted)
    assert exhausted.sizes == (4 * GI, 8 * GI, 10 * GI)
    assert exhausted.attempts == (
        MemoryAttempt(size=4 * GI, error=errors[0], duration=1.0),
        MemoryAttempt(size=8 * GI, error=errors[1], duration=1.0),
        MemoryAttempt(size=10 * GI, error=errors[2], duration=1.0),
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"initial_memory": "16Gi", "max_memory": "10Gi"},
        {"increment": "0"},
        {"increment": "-1Gi"},
    ],
)
async def test_bad_ladder_rejected_before_launch(arguments: dict[str, Any]) -> None:
    task = FakeTask(needs(0))

    with pytest.raises(ValueError):
        await retry_with_memory(task, **arguments)

    assert task.launches == []


async def test_cancellation_is_not_a_failure(events: list[MemoryRetryEvent]) -> None:
    async def slow(limit: int, *args: Any) -> str:
        await asyncio.sleep(1)
        return "done"

    task = FakeTask(slow)
    tasks_before = asyncio.all_tasks()

    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(retry_with_memory(task, on_event=events.append), 0.05)
    elapsed = time.perf_counter() - started

    assert 0.04 <= elapsed < 0.5
    assert len(task.launches) == 1
    assert task.launches[0].cancelled
    await asyncio.sleep(0.2)
    assert len(task.launches) == 1
    assert asyncio.all_tasks() == tasks_before
    assert [event.kind for event in events] == ["attempt", "cancelled"]


# ---------------------------------------------------------------- escalation and the ceiling


async def test_reference_call_shape() -> None:
    task = FakeTask(needs(900 * MI))

    result = await retry_with_memory(task, [1, 2], initial_memory="250Mi", increment="300Mi", max_memory="1Gi")

    assert task.sizes == ["250Mi", "550Mi", "850Mi", "1Gi"]
    assert result == ("1Gi", ([1, 2],), {})


async def test_geometric_and_explicit_ladders() -> None:
    geometric = FakeTask(needs(3 * GI))
    explicit = FakeTask(needs(3 * GI))

    await retry_with_memory(geometric, initial_memory="1Gi", factor=2, max_memory="16Gi")
    await retry_with_memory(explicit, sizes=["512Mi", "3Gi", "8Gi"])

    assert geometric.sizes == ["1Gi", "2Gi", "4Gi"]
    assert explicit.sizes == ["512Mi", "3Gi"]


async def test_single_size_ladder_fails_once() -> None:
    task = FakeTask(needs(2 * GI))

    with pytest.raises(MemoryLadderExhaustedError) as caught:
        await retry_with_memory(task, initial_memory="1Gi", max_memory="1Gi")

    assert task.sizes == ["1Gi"]
    assert caught.value.sizes == (GI,)


async def test_exhausted_error_is_a_flyte_oom_error() -> None:
    task = FakeTask(needs(8 * GI))

    with pytest.raises(flyte.errors.OOMError) as caught:
        await retry_with_memory(task, "x", sizes=["1Gi", "2Gi"])

    exhausted = caught.value
    assert isinstance(exhausted, MemoryLadderExhaustedError)
    assert isinstance(exhausted, flyte.errors.RuntimeUserError)
    assert exhausted.code == "OOMKilled"
    assert exhausted.kind == "user"
    assert exhausted.worker is None
    assert exhausted.task_name == "fake"
    assert is_out_of_memory(exhausted)
    assert str(exhausted).startswith("task 'fake' ran out of memory at every size tried: 1Gi, 2Gi (the ceiling")
    assert "Raise max_memory" in str(exhausted)


async def test_exhausted_error_keeps_in_process_code() -> None:
    async def short_of_memory() -> None:
        raise MemoryError("cannot allocate")

    with pytest.raises(MemoryLadderExhaustedError) as caught:
        await retry_with_memory(short_of_memory, sizes=["1Gi"])

    assert caught.value.code == "MemoryError"
    assert isinstance(caught.value.__cause__, MemoryError)


@pytest.mark.parametrize(
    ("code", "oom_codes", "escalates"),
    [
        ("OOMKilled", None, True),
        ("MemoryError", None, True),
        # A cluster may prefix the code with a server code.
        ("RetriesExhausted|OOMKilled", None, True),
        # A bare exit 137 without the OOM reason; it means an interrupted node more often than memory.
        ("Interrupted", None, False),
        ("Interrupted", {"OOMKilled", "Interrupted"}, True),
        ("OutOfMemory", None, False),
        ("OutOfMemory", "OutOfMemory", True),
        ("OOMKilled", ["OutOfMemory"], False),
    ],
)
async def test_oom_codes_are_configurable(code: str, oom_codes: Any, escalates: bool) -> None:
    error = flyte.errors.RuntimeUserError(code, "failed")
    task = FakeTask(always_raises(error))
    options = {} if oom_codes is None else {"oom_codes": oom_codes}

    with pytest.raises(flyte.errors.RuntimeUserError) as caught:
        await retry_with_memory(task, sizes=["1Gi", "2Gi"], **options)

    if escalates:
        assert isinstance(caught.value, MemoryLadderExhaustedError)
        assert task.sizes == ["1Gi", "2Gi"]
    else:
        assert caught.value is error
        assert task.sizes == ["1Gi"]


@pytest.mark.parametrize(
    "interrupt", [KeyboardInterrupt(), SystemExit(3), asyncio.CancelledError()], ids=["keyboard", "exit", "cancel"]
)
async def test_interrupts_never_retried(interrupt: BaseException, events: list[MemoryRetryEvent]) -> None:
    task = FakeTask(always_raises(interrupt))

    with pytest.raises(type(interrupt)) as caught:
        await retry_with_memory(task, sizes=["1Gi", "2Gi"], on_event=events.append)

    assert caught.value is interrupt
    assert task.sizes == ["1Gi"]
    assert [event.kind for event in events] == ["attempt", "cancelled"]
    assert events[-1].error is interrupt


async def test_out_of_memory_inside_group_escalates() -> None:
    group = ExceptionGroup("workers failed", [ValueError("one"), oom_kill(GI)])
    task = FakeTask(always_raises(group))

    with pytest.raises(MemoryLadderExhaustedError):
        await retry_with_memory(task, sizes=["1Gi", "2Gi"])

    assert task.sizes == ["1Gi", "2Gi"]


# ---------------------------------------------------------------- arguments for the task


async def test_keyword_arguments_reach_task() -> None:
    task = FakeTask(needs(0))

    result = await retry_with_memory(task, 1, sizes=["1Gi"], mode="fast")

    assert result == ("1Gi", (1,), {"mode": "fast"})


async def test_clashing_names_through_task_kwargs() -> None:
    task = FakeTask(needs(0))

    result = await retry_with_memory(
        task, sizes=["1Gi"], task_kwargs={"increment": 3, "task": "t", "sizes": [1]}, mode="fast"
    )

    assert result == ("1Gi", (), {"mode": "fast", "increment": 3, "task": "t", "sizes": [1]})


async def test_task_parameter_named_task() -> None:
    task = FakeTask(needs(0))

    result = await retry_with_memory(task, sizes=["1Gi"], task="t")

    assert result == ("1Gi", (), {"task": "t"})


# ---------------------------------------------------------------- bad input


async def _noop() -> None:
    return None


BAD_INPUT: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"initial_memory": "lots"}, ValueError, "initial_memory 'lots'"),
    ({"max_memory": "1GB"}, ValueError, "max_memory '1GB' has an invalid unit"),
    ({"initial_memory": "16Gi", "max_memory": "10Gi"}, ValueError, "initial_memory '16Gi' .* is above max_memory"),
    ({"increment": "0"}, ValueError, "increment '0' is zero"),
    ({"increment": "-1Gi"}, ValueError, "increment '-1Gi' is negative"),
    ({"factor": 1}, ValueError, "factor must be a finite number greater than 1"),
    ({"factor": 0.9}, ValueError, "got 0.9"),
    ({"increment": "1Gi", "factor": 2}, TypeError, "mutually exclusive"),
    ({"sizes": ["1Gi"], "max_memory": "8Gi"}, TypeError, "cannot be combined with max_memory='8Gi'"),
    ({"sizes": []}, ValueError, "at least one memory size"),
    ({"oom_codes": []}, ValueError, "oom_codes must name at least one Flyte error code"),
    ({"oom_codes": ["OOMKilled", 137]}, TypeError, r"oom_codes must contain Flyte error code strings, got 137 \(int\)"),
    ({"oom_codes": [" "]}, ValueError, "oom_codes contains an empty error code string ' '"),
    ({"oom_codes": 137}, TypeError, "oom_codes must be a Flyte error code string or an iterable of them, got 137"),
    ({"on_event": "print"}, TypeError, "on_event must be a synchronous function or None, got 'print'"),
    ({"task_kwargs": [("a", 1)]}, TypeError, r"task_kwargs must be a mapping .* got \[\('a', 1\)\]"),
    ({"task_kwargs": {"mode": 1}, "mode": 2}, TypeError, r"task arguments \['mode'\] were given both"),
    ({"cpu": -1}, ValueError, "cpu -1 is not a CPU setting flyte.Resources accepts: cpu must be greater than or"),
    ({"cpu": (1, 2, 3)}, ValueError, r"cpu \(1, 2, 3\)"),
    ({"enforce_locally": "yes"}, TypeError, "enforce_locally must be True or False, got 'yes'"),
]


@pytest.mark.parametrize(("arguments", "error", "pattern"), BAD_INPUT)
async def test_bad_input_rejected_before_launch(
    arguments: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    task = FakeTask(needs(0))

    with pytest.raises(error, match=pattern):
        await retry_with_memory(task, "x", **arguments)

    assert task.launches == []


async def test_coroutine_object_rejected_and_closed() -> None:
    coroutine = _noop()

    with pytest.raises(TypeError, match=r"got a coroutine object .* not `my_task\(x\)`"):
        await retry_with_memory(coroutine)  # type: ignore[call-overload]

    # Closed, so Python does not warn that it was never awaited (pytest would turn that into an error).
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


async def test_coroutine_closed_even_with_bad_ladder() -> None:
    coroutine = _noop()

    with pytest.raises(TypeError, match="coroutine object"):
        await retry_with_memory(coroutine, increment="0")  # type: ignore[call-overload]

    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


@pytest.mark.parametrize("task", [42, "my_task", None])
async def test_not_callable_rejected(task: object) -> None:
    with pytest.raises(TypeError, match=f"task must be a task or an async callable, got {task!r}"):
        await retry_with_memory(task)  # type: ignore[call-overload]


async def test_task_resources_of_wrong_type_rejected() -> None:
    task = FakeTask(needs(0), resources="1Gi")  # type: ignore[arg-type]

    with pytest.raises(TypeError, match=r"task\.resources must be a flyte\.Resources or None, got '1Gi'"):
        await retry_with_memory(task)

    assert task.launches == []


async def test_unparseable_task_memory_rejected() -> None:
    task = FakeTask(needs(0), resources=flyte.Resources(memory=("1.1Gi", "2Gi")))

    with pytest.raises(ValueError, match=r"the task's memory request '1\.1Gi' is .* not a whole number of bytes"):
        await retry_with_memory(task)

    assert task.launches == []


async def test_cpu_with_plain_callable_rejected() -> None:
    with pytest.raises(TypeError, match="cpu=2 needs a task with Flyte's override"):
        await retry_with_memory(_noop, cpu=2)


async def test_long_ladder_warns_at_caller() -> None:
    task = FakeTask(needs(0))

    with pytest.warns(MemoryLadderWarning, match="386 sizes") as caught:
        await retry_with_memory(task, increment="10Mi")

    assert caught[0].filename == __file__
    assert task.sizes == ["250Mi"]


# ---------------------------------------------------------------- resources of each attempt

env = flyte.TaskEnvironment(
    name="flyte_patterns_test_oom",
    resources=flyte.Resources(cpu=2, memory="1Gi", gpu="T4:1", disk="10Gi", shm="1Gi"),
)
env_without_resources = flyte.TaskEnvironment(name="flyte_patterns_test_oom_bare")
env_with_memory_range = flyte.TaskEnvironment(
    name="flyte_patterns_test_oom_range", resources=flyte.Resources(cpu=(1, 2), memory=("1Gi", "2Gi"))
)
reusable_env = flyte.TaskEnvironment(
    name="flyte_patterns_test_oom_reusable",
    resources=flyte.Resources(cpu=1, memory="1Gi"),
    reusable=flyte.ReusePolicy(replicas=2),
)


# Outside a Flyte run, calling a task runs its function directly, so these need no engine. Their MemoryError
# makes every size of the ladder run, so each test gets two overridden templates.


@env.task
async def exhaust(text: str) -> str:
    raise MemoryError(text)


@env_without_resources.task
async def exhaust_bare(text: str) -> str:
    raise MemoryError(text)


@env_with_memory_range.task
async def exhaust_range(text: str) -> str:
    raise MemoryError(text)


@reusable_env.task
async def exhaust_reusable(text: str) -> str:
    raise MemoryError(text)


class RecordingTask:
    """Wrap a real Flyte task and keep each template its ``override`` returns."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.templates: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def override(self, **overrides: Any) -> Any:
        template = self.task.override(**overrides)
        self.templates.append(template)
        return template


async def _attempt_templates(task: Any, *, enforce_locally: bool = False, **options: Any) -> list[Any]:
    """Run ``task`` through two sizes, 550Mi and 1Gi, and return the two templates its ``override`` returned."""
    recorder = RecordingTask(task)
    with pytest.raises(MemoryLadderExhaustedError):
        await retry_with_memory(recorder, "x", sizes=["550Mi", "1Gi"], enforce_locally=enforce_locally, **options)
    return recorder.templates


async def test_resources_keep_everything_but_memory() -> None:
    templates = await _attempt_templates(exhaust)

    assert [template.resources for template in templates] == [
        flyte.Resources(cpu=2, memory=("550Mi", "550Mi"), gpu="T4:1", disk="10Gi", shm="1Gi"),
        flyte.Resources(cpu=2, memory=("1Gi", "1Gi"), gpu="T4:1", disk="10Gi", shm="1Gi"),
    ]
    assert [template.short_name for template in templates] == ["exhaust-mem-550Mi", "exhaust-mem-1Gi"]
    assert exhaust.resources == flyte.Resources(cpu=2, memory="1Gi", gpu="T4:1", disk="10Gi", shm="1Gi")


async def test_resources_without_base() -> None:
    templates = await _attempt_templates(exhaust_bare)

    assert [template.resources for template in templates] == [
        flyte.Resources(memory=("550Mi", "550Mi")),
        flyte.Resources(memory=("1Gi", "1Gi")),
    ]


async def test_memory_range_keeps_ratio() -> None:
    templates = await _attempt_templates(exhaust_range)

    assert [template.resources for template in templates] == [
        flyte.Resources(cpu=(1, 2), memory=("275Mi", "550Mi")),
        flyte.Resources(cpu=(1, 2), memory=("512Mi", "1Gi")),
    ]


async def test_cpu_replaces_task_cpu() -> None:
    templates = await _attempt_templates(exhaust, cpu=4)

    assert templates[0].resources == flyte.Resources(
        cpu=4, memory=("550Mi", "550Mi"), gpu="T4:1", disk="10Gi", shm="1Gi"
    )


async def test_reusable_task_runs_without_reuse(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flyte_patterns.oom")

    templates = await _attempt_templates(exhaust_reusable)

    assert [template.reusable for template in templates] == [None, None]
    assert [template.resources.memory for template in templates] == [("550Mi", "550Mi"), ("1Gi", "1Gi")]
    assert exhaust_reusable.reusable is not None
    reuse_messages = [record for record in caplog.records if "reusable environment" in record.getMessage()]
    assert len(reuse_messages) == 1


async def test_reusable_flag_passed_only_when_set() -> None:
    plain = FakeTask(needs(0))
    reusable = FakeTask(needs(0), reusable=object())

    await retry_with_memory(plain, sizes=["1Gi"])
    await retry_with_memory(reusable, sizes=["1Gi"])

    assert plain.launches[0].overrides == {}
    assert reusable.launches[0].overrides == {"reusable": "off"}


async def test_fake_memory_range_ratio() -> None:
    task = FakeTask(needs(0), resources=flyte.Resources(memory=("100", "300")))

    await retry_with_memory(task, sizes=[1000])

    # 1000 * 100 / 300 rounds down to whole bytes.
    assert task.launches[0].memory == ("333", "1k")


# ---------------------------------------------------------------- plain async callables


async def test_plain_callable_escalates_on_memory_error(events: list[MemoryRetryEvent]) -> None:
    calls: list[tuple[Any, ...]] = []

    async def fragile(*args: Any) -> str:
        calls.append(args)
        if len(calls) < 3:
            raise MemoryError("cannot allocate")
        return "done"

    result = await retry_with_memory(fragile, 1, 2, sizes=["1Gi", "2Gi", "4Gi"], on_event=events.append)

    assert result == "done"
    assert calls == [(1, 2)] * 3
    assert [event.kind for event in events] == ["attempt", "escalated", "attempt", "escalated", "attempt", "succeeded"]
    assert {event.resources for event in events} == {None}


async def test_plain_callable_error_propagates() -> None:
    error = KeyError("missing")
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(KeyError) as caught:
        await retry_with_memory(broken)

    assert caught.value is error
    assert calls == 1


async def test_sync_callable_accepted() -> None:
    def compute(value: int) -> int:
        return value * 2

    assert await retry_with_memory(compute, 21) == 42


# ---------------------------------------------------------------- hook and logs


async def test_hook_sees_every_step(counting_clock: None, events: list[MemoryRetryEvent]) -> None:
    task = FakeTask(needs(600 * MI))

    await retry_with_memory(task, sizes=["250Mi", "550Mi", "1Gi"], on_event=events.append)

    assert [(event.kind, format_memory(event.size), event.attempt) for event in events] == [
        ("attempt", "250Mi", 1),
        ("escalated", "250Mi", 1),
        ("attempt", "550Mi", 2),
        ("escalated", "550Mi", 2),
        ("attempt", "1Gi", 3),
        ("succeeded", "1Gi", 3),
    ]
    escalated = events[1]
    assert escalated.next_size == 550 * MI
    assert escalated.duration == 1.0
    assert isinstance(escalated.error, flyte.errors.OOMError)
    assert escalated.task_name == "fake"
    assert escalated.ladder == (250 * MI, 550 * MI, GI)
    assert escalated.resources == flyte.Resources(memory=("250Mi", "250Mi"))
    assert events[0].error is None
    assert events[0].duration is None
    assert events[-1].error is None
    assert events[-1].next_size is None
    assert events[-1].duration == 1.0


async def test_hook_sees_exhaustion_and_failure(events: list[MemoryRetryEvent]) -> None:
    failing = FakeTask(always_raises(ValueError("bad input")))
    exhausted = FakeTask(needs(8 * GI))

    with pytest.raises(ValueError):
        await retry_with_memory(failing, sizes=["1Gi"], on_event=events.append)
    with pytest.raises(MemoryLadderExhaustedError):
        await retry_with_memory(exhausted, sizes=["1Gi", "2Gi"], on_event=events.append)

    assert [event.kind for event in events] == ["attempt", "failed", "attempt", "escalated", "attempt", "exhausted"]
    assert isinstance(events[1].error, ValueError)
    assert isinstance(events[-1].error, flyte.errors.OOMError)
    assert events[-1].next_size is None


async def test_events_are_frozen(events: list[MemoryRetryEvent]) -> None:
    await retry_with_memory(FakeTask(needs(0)), sizes=["1Gi"], on_event=events.append)

    with pytest.raises(dataclasses.FrozenInstanceError):
        events[0].size = 0  # type: ignore[misc]


async def test_failing_hook_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def broken_hook(event: MemoryRetryEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("hook is broken")

    task = FakeTask(needs(2 * GI))

    result = await retry_with_memory(task, sizes=["1Gi", "2Gi"], on_event=broken_hook)

    assert result[0] == "2Gi"
    assert calls == ["attempt", "escalated", "attempt", "succeeded"]
    hook_records = [record for record in caplog.records if "on_event hook" in record.getMessage()]
    assert len(hook_records) == 4
    assert all(record.levelno == logging.WARNING for record in hook_records)
    assert all(record.exc_info is not None for record in hook_records)


async def test_log_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flyte_patterns.oom")
    task = FakeTask(needs(2 * GI))

    await retry_with_memory(task, sizes=["1Gi", "2Gi"])

    records = [record for record in caplog.records if record.name == "flyte_patterns.oom"]
    assert [(record.levelname, record.getMessage()) for record in records] == [
        ("INFO", "task fake: attempt 1 of 2 at 1Gi"),
        (
            "WARNING",
            "task fake: ran out of memory at 1Gi on attempt 1 (OOMError code 'OOMKilled': container killed at its "
            "memory limit of 1Gi); escalating to 2Gi",
        ),
        ("INFO", "task fake: attempt 2 of 2 at 2Gi"),
        ("INFO", "task fake: succeeded at 2Gi on attempt 2"),
    ]
    # %-style arguments, formatted only when a handler emits the record.
    assert all(record.args for record in records)


async def test_log_records_for_exhaustion_and_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flyte_patterns.oom")

    with pytest.raises(MemoryLadderExhaustedError):
        await retry_with_memory(FakeTask(needs(8 * GI)), sizes=["1Gi"])
    with pytest.raises(flyte.errors.RuntimeUserError):
        await retry_with_memory(FakeTask(always_raises(flyte.errors.RuntimeUserError("KeyError", "k"))), sizes=["1Gi"])

    messages = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert messages[1].startswith("task fake: ran out of memory at the ceiling 1Gi after 1 attempts (OOMError")
    assert messages[3] == (
        "task fake: attempt 1 at 1Gi failed with RuntimeUserError code 'KeyError': k, "
        "which is not an out-of-memory failure; not retrying"
    )


# ---------------------------------------------------------------- the real local engine


class BoomError(Exception):
    """A user error whose name merely contains "OOM"."""


@env.task
async def allocate(kind: str) -> str:
    if kind == "value":
        raise ValueError("bad input")
    if kind == "boom":
        raise BoomError("boom")
    if kind == "memory":
        raise MemoryError("cannot allocate")
    return f"ok {kind}"


@env.task
async def drive(kind: str) -> str:
    """Run ``allocate`` through retry_with_memory inside a Flyte run, and return what happened as JSON."""
    recorder = RecordingTask(allocate)
    seen: list[MemoryRetryEvent] = []
    outcome: dict[str, Any] = {}
    try:
        outcome["result"] = await retry_with_memory(
            recorder, kind, initial_memory="250Mi", increment="300Mi", max_memory="1Gi", on_event=seen.append
        )
    except Exception as exc:
        outcome["class"] = type(exc).__name__
        outcome["code"] = getattr(exc, "code", None)
        outcome["delivered_unchanged"] = any(event.error is exc for event in seen if event.kind == "failed")
        outcome["cause_class"] = type(exc.__cause__).__name__
    outcome["short_names"] = [template.short_name for template in recorder.templates]
    outcome["memory"] = [list(template.resources.memory) for template in recorder.templates]
    outcome["kinds"] = [event.kind for event in seen]
    return json.dumps(outcome)


@pytest.mark.flyte
async def test_real_success_first_attempt(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive, "fine"))

    assert outcome["result"] == "ok fine"
    assert outcome["short_names"] == ["allocate-mem-250Mi"]
    assert outcome["memory"] == [["250Mi", "250Mi"]]


@pytest.mark.flyte
@pytest.mark.parametrize(
    ("kind", "flyte_class", "code"), [("value", "RuntimeUserError", "ValueError"), ("boom", "OOMError", "BoomError")]
)
async def test_real_error_propagates_after_one_attempt(
    run_local: RunLocal, kind: str, flyte_class: str, code: str
) -> None:
    outcome = json.loads(await run_local(drive, kind))

    assert outcome["class"] == flyte_class
    assert outcome["code"] == code
    assert outcome["delivered_unchanged"] is True
    assert outcome["short_names"] == ["allocate-mem-250Mi"]
    assert outcome["kinds"] == ["attempt", "failed"]


@pytest.mark.flyte
async def test_real_memory_error_climbs_to_ceiling(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(drive, "memory"))

    assert outcome["class"] == "MemoryLadderExhaustedError"
    assert outcome["code"] == "MemoryError"
    assert outcome["cause_class"] == "RuntimeUserError"
    assert outcome["short_names"] == [
        "allocate-mem-250Mi",
        "allocate-mem-550Mi",
        "allocate-mem-850Mi",
        "allocate-mem-1Gi",
    ]
    assert outcome["memory"] == [["250Mi", "250Mi"], ["550Mi", "550Mi"], ["850Mi", "850Mi"], ["1Gi", "1Gi"]]


@reusable_env.task
async def echo_reusable(text: str) -> str:
    return text


@reusable_env.task
async def drive_reusable(text: str) -> str:
    return await retry_with_memory(echo_reusable, text, sizes=["1Gi"])


@pytest.mark.flyte
async def test_real_reusable_task(run_local: RunLocal) -> None:
    assert await run_local(drive_reusable, "hello") == "hello"


# ---------------------------------------------------------------- local memory enforcement

MIB = 2**20


@pytest.fixture
def no_stray_children() -> Iterator[None]:
    """Fail a test that leaves a child process of the test process behind, running or zombie."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    left = [child for child in psutil.Process().children(recursive=True) if child.pid not in before]
    assert left == []


@env_without_resources.task
async def allocate_mib(size_mib: int) -> int:
    # bytearray() zero-fills its buffer, so every page is resident.
    block = bytearray(size_mib * MIB)
    return len(block)


@env_without_resources.task
async def climb_ladder(size_mib: int, sizes: list[str], enforce_locally: bool) -> str:
    """Run allocate_mib through retry_with_memory and return what happened at each size, as JSON."""
    seen: list[MemoryRetryEvent] = []
    outcome: dict[str, Any] = {}
    try:
        outcome["result"] = await retry_with_memory(
            allocate_mib, size_mib, sizes=sizes, enforce_locally=enforce_locally, on_event=seen.append
        )
    except MemoryLadderExhaustedError as exc:
        outcome["exhausted"] = [format_memory(size) for size in exc.sizes]
    outcome["steps"] = [
        [event.kind, format_memory(event.size), flyte_code(event.error) if event.error is not None else None]
        for event in seen
        if event.kind != "attempt"
    ]
    return json.dumps(outcome)


@env_without_resources.task
async def reference_pipeline(size_mib: int) -> str:
    """Make the flyte-sdk example's call on allocate_mib, and return the result and each ending event, as JSON."""
    seen: list[MemoryRetryEvent] = []
    allocated = await retry_with_memory(
        allocate_mib, size_mib, initial_memory="250Mi", increment="300Mi", max_memory="1Gi", on_event=seen.append
    )
    steps = [
        f"{event.kind} {format_memory(event.size)} {flyte_code(event.error) if event.error else None}"
        for event in seen
        if event.kind != "attempt"
    ]
    return json.dumps({"allocated": allocated, "steps": steps})


@pytest.mark.flyte
@pytest.mark.slow
@pytest.mark.usefixtures("no_stray_children")
async def test_reference_ladder_end_to_end(run_local: RunLocal) -> None:
    # 900Mi (about 944 MB) runs out of memory at 250Mi, 550Mi and 850Mi and fits at the 1Gi ceiling. Locally the
    # limit applies to the memory the task adds, not to the interpreter it was forked from.
    outcome = json.loads(await run_local(reference_pipeline, 900))

    assert outcome["allocated"] == 900 * MIB
    assert outcome["steps"] == [
        "escalated 250Mi OOMKilled",
        "escalated 550Mi OOMKilled",
        "escalated 850Mi OOMKilled",
        "succeeded 1Gi None",
    ]


@pytest.mark.flyte
@pytest.mark.slow
@pytest.mark.usefixtures("no_stray_children")
async def test_ladder_below_ceiling_never_succeeds(run_local: RunLocal) -> None:
    # The same task with a ladder that stops at 850Mi, as one that never tries its ceiling would.
    outcome = json.loads(await run_local(climb_ladder, 900, ["250Mi", "550Mi", "850Mi"], True))

    assert outcome["exhausted"] == ["250Mi", "550Mi", "850Mi"]
    assert outcome["steps"][-1] == ["exhausted", "850Mi", "OOMKilled"]


@pytest.mark.flyte
@pytest.mark.usefixtures("no_stray_children")
async def test_enforced_locally_by_default(run_local: RunLocal) -> None:
    outcome = json.loads(await run_local(climb_ladder, 100, ["50Mi", "200Mi"], True))

    assert outcome["result"] == 100 * MIB
    assert outcome["steps"] == [["escalated", "50Mi", "OOMKilled"], ["succeeded", "200Mi", None]]


@pytest.mark.flyte
@pytest.mark.usefixtures("no_stray_children")
async def test_enforcement_opt_out(run_local: RunLocal) -> None:
    # Flyte's local engine ignores resources, so without enforcement the first size succeeds.
    outcome = json.loads(await run_local(climb_ladder, 100, ["50Mi", "200Mi"], False))

    assert outcome["result"] == 100 * MIB
    assert outcome["steps"] == [["succeeded", "50Mi", None]]


def test_attempt_is_enforced_copy() -> None:
    plan = oom_module._AttemptPlan.build(exhaust, (GI,), cpu=None, enforce_locally=True)

    runner, resources = plan.attempt(GI)

    assert isinstance(runner, _LocalMemoryTask)
    assert runner.plugin_config == LocalMemoryLimit()
    assert runner.resources == resources
    assert resources is not None
    assert resources.memory == ("1Gi", "1Gi")
    assert runner.short_name == "exhaust-mem-1Gi"
    assert exhaust.plugin_config is None


@pytest.mark.flyte
@pytest.mark.usefixtures("no_stray_children")
async def test_unsupported_platform_runs_unenforced(
    run_local: RunLocal, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(oom_module, "is_local_memory_supported", lambda: False)
    monkeypatch.setattr(oom_module, "_warned_unsupported_platform", False)

    first = json.loads(await run_local(climb_ladder, 100, ["50Mi", "200Mi"], True))
    second = json.loads(await run_local(climb_ladder, 100, ["50Mi", "200Mi"], True))

    assert first["steps"] == [["succeeded", "50Mi", None]]
    assert second["steps"] == [["succeeded", "50Mi", None]]
    warnings = [record for record in caplog.records if "needs Linux" in record.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


@dataclass(frozen=True)
class OtherPluginConfig:
    """The config of a task plugin other than the local memory enforcement."""


@dataclass(kw_only=True)
class OtherPluginTask(AsyncFunctionTaskTemplate[Any, Any, Any]):
    """A task class of another plugin, which the local memory enforcement cannot convert."""


TaskPluginRegistry.register(OtherPluginConfig, OtherPluginTask)
other_plugin_env = flyte.TaskEnvironment(name="flyte_patterns_test_oom_other_plugin", plugin_config=OtherPluginConfig())


@other_plugin_env.task
async def exhaust_other_plugin(text: str) -> str:
    raise MemoryError(text)


async def test_other_plugin_task_runs_unenforced(caplog: pytest.LogCaptureFixture) -> None:
    templates = await _attempt_templates(exhaust_other_plugin, enforce_locally=True)

    assert [type(template) for template in templates] == [OtherPluginTask, OtherPluginTask]
    assert [template.plugin_config for template in templates] == [OtherPluginConfig(), OtherPluginConfig()]
    warnings = [record for record in caplog.records if "cannot be enforced" in record.getMessage()]
    assert len(warnings) == 1
    assert "is a OtherPluginTask" in warnings[0].getMessage()


# ---------------------------------------------------------------- memory_limited


async def allocate_mb(size_mb: int) -> int:
    block = bytearray(size_mb * 10**6)
    return len(block)


@pytest.mark.usefixtures("no_stray_children")
async def test_memory_limited_callable_climbs(events: list[MemoryRetryEvent]) -> None:
    result = await retry_with_memory(memory_limited(allocate_mb), 100, sizes=["50Mi", "200Mi"], on_event=events.append)

    assert result == 100 * 10**6
    steps = [(event.kind, format_memory(event.size)) for event in events if event.kind != "attempt"]
    assert steps == [("escalated", "50Mi"), ("succeeded", "200Mi")]
    assert isinstance(events[1].error, flyte.errors.OOMError)
    assert flyte_code(events[1].error) == "OOMKilled"
    assert events[0].task_name == "allocate_mb"
    assert events[0].resources == flyte.Resources(memory=("50Mi", "50Mi"))


@pytest.mark.usefixtures("no_stray_children")
async def test_memory_limited_sync_callable() -> None:
    def allocate_sync(size_mb: int, *, times: int) -> int:
        return len(bytearray(size_mb * 10**6)) * times

    result = await retry_with_memory(memory_limited(allocate_sync), 10, sizes=["50Mi"], times=2)

    assert result == 20 * 10**6


@pytest.mark.usefixtures("no_stray_children")
async def test_memory_limited_exhausts_ceiling() -> None:
    with pytest.raises(MemoryLadderExhaustedError) as caught:
        await retry_with_memory(memory_limited(allocate_mb, config=LocalMemoryLimit()), 100, sizes=["20Mi", "50Mi"])

    assert caught.value.sizes == (20 * MIB, 50 * MIB)
    assert caught.value.code == "OOMKilled"


@pytest.mark.parametrize(
    ("func", "config", "pattern"),
    [
        (exhaust, None, "func must be a plain callable, got the Flyte task 'flyte_patterns_test_oom.exhaust'"),
        (42, None, "func must be a task or an async callable, got 42"),
        (allocate_mb, "fast", "config must be a LocalMemoryLimit or None, got 'fast'"),
    ],
)
def test_memory_limited_rejects_bad_input(func: Any, config: Any, pattern: str) -> None:
    with pytest.raises(TypeError, match=pattern):
        memory_limited(func, config=config)


def test_memory_limited_closes_coroutine() -> None:
    coroutine = allocate_mb(1)

    with pytest.raises(TypeError, match="coroutine object"):
        memory_limited(coroutine)  # type: ignore[call-overload]

    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
