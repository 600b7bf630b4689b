"""Run a callable in a forked child process that is killed when its memory passes a limit.

This is the process machinery behind local memory enforcement. It is Linux only, and
:func:`run_in_child` raises ``NotImplementedError`` elsewhere.

Life of one call:

1. The parent records its own anonymous memory (``RssAnon`` plus ``RssShmem`` from ``/proc/self/status``), starts
   a watcher thread, forks, and the child moves into a process group of its own.
2. The child sets ``PR_SET_PDEATHSIG``, so the kernel kills it if the parent dies. It sets the requested
   environment variables, runs the body on a new event loop, writes the result or the exception to a pipe, and
   leaves with ``os._exit``.
3. The watcher thread waits on the child's pidfd and on the pipe with ``poll(2)``, so it wakes as soon
   as the child exits or writes. It reads the pipe while the child is still writing, so a large result cannot
   fill the pipe and deadlock. Between wake-ups it measures the child's memory and kills the process group when
   the memory passes the limit or the deadline passes.
4. Once the child has exited, but before it is reaped, the watcher kills whatever is left of its process group, so
   no process the body started outlives it. Then it reaps the child with ``wait4``.

NOTE: free space that was already resident in the parent (emptied pools of Python's arenas, free C heap chunks)
is part of the baseline, so a body that reuses it adds nothing measurable. A small limit in a long-running parent
can be passed by up to that much before the kill.

Memory is measured as what the body added: the child's ``RssAnon + RssShmem`` above the parent's value at the
fork, plus the same for every descendant above the anonymous memory it shared with other processes when the
watcher first saw it, or above the least it was seen using if that is lower. Pages a forked process shares with its
parent count only once, so a child forked from a large process does not start near its limit. See
``docs/local-memory.md`` for how this compares with the cgroup accounting Kubernetes uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import inspect
import logging
import math
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar, cast

import flyte.errors

from ._memory import format_memory

logger = logging.getLogger("flyte_patterns.local_memory")

T = TypeVar("T")

KillReason = Literal["memory", "timeout", "cancelled"]

# The watcher assumes no process grows faster than this, in bytes per second. It waits at most
# headroom / _MAX_GROWTH_RATE between two measurements, so a body growing slower cannot pass the limit unseen
# by more than one short interval. One thread filling fresh pages grows by about 1.5 GiB/s on the 2-core
# machine in docs/benchmarks.md, so the bound leaves room for faster machines and several threads.
_MAX_GROWTH_RATE = 16 * 2**30

# Without a pidfd the watcher checks for the child's exit at least this often, in seconds.
_EXIT_CHECK_INTERVAL = 0.002

# Exit status of a child that could not report its outcome (EX_SOFTWARE in sysexits.h).
_EXIT_UNREPORTED = 70

# The child reports one message on the pipe: a header with a tag and the payload's length, then the payload.
_HEADER = struct.Struct(">cQ")
_VALUE = b"v"  # the pickled result
_ERROR = b"e"  # the pickled fields of the exception, from _exception_fields()
_UNPICKLABLE = b"u"  # why the result could not be pickled, in UTF-8
_READ_CHUNK = 1 << 20
_PR_SET_PDEATHSIG = 1


def is_supported() -> bool:
    """Return whether this platform can run a body in a memory-limited forked child (Linux only)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def check_supported() -> None:
    """Raise ``NotImplementedError`` with the reason when :func:`is_supported` is false."""
    if not is_supported():
        raise NotImplementedError(
            f"local memory enforcement needs Linux (fork, /proc and pidfd), but this is {sys.platform!r}; "
            f"run without it here, or on Linux or a cluster, where the platform enforces the limit"
        )


@dataclass(frozen=True)
class ChildSettings:
    """Limits and environment of one child process.

    Attributes:
        memory_limit: Bytes the body may add before the child is killed.
        timeout: Seconds the child may run before it is killed, or ``None`` for no limit.
        env_vars: Environment variables set in the child before the body runs.
        poll_interval: Minimum time in seconds between two memory measurements.
        max_poll_interval: Maximum time in seconds between two memory measurements.
        label: What the child runs, for messages and logs.
    """

    memory_limit: int
    timeout: float | None
    env_vars: Mapping[str, str]
    poll_interval: float
    max_poll_interval: float
    label: str


class ChildTimeoutError(Exception):
    """The child ran longer than its timeout and was killed. Callers replace it with the error they report."""


@dataclass(frozen=True)
class _ChildExit:
    """The watcher's record of one child, from the fork to the reaping."""

    report: tuple[bytes, memoryview] | None
    kill_reason: KillReason | None
    memory_at_kill: int | None
    peak_growth: int | None
    wait_status: int | None
    runtime: float


async def run_in_child(body: Callable[[], Awaitable[T] | T], settings: ChildSettings) -> T:
    """Run ``body()`` in a forked child process under ``settings`` and return its result.

    Raises:
        flyte.errors.OOMError: Code ``"OOMKilled"``: the child's memory passed the limit and it was killed.
        ChildTimeoutError: The child ran longer than ``settings.timeout`` and was killed.
        TypeError: The result could not be pickled in the child or unpickled in the parent.
        ChildProcessError: The child exited without reporting an outcome.
        NotImplementedError: The platform is not Linux.
        BaseException: What the body raised, rebuilt in the parent (see :func:`_rebuild_exception`).
    """
    check_supported()
    set_death_signal = _parent_death_signal_setter()
    baseline = _own_memory()

    read_fd, write_fd = os.pipe()
    watcher = _Watcher(read_fd, baseline, settings)
    try:
        # The thread starts before the fork, because starting it in the freshly forked parent takes milliseconds.
        watcher.start(asyncio.get_running_loop())
        with warnings.catch_warnings():
            # Python 3.12 and later warn that fork() in a multi-threaded process may deadlock the child. The
            # child only touches what it needs before the body runs, and the body runs on a fresh event loop.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        watcher.abandon()
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:
        _child_main(body, settings, read_fd, write_fd, set_death_signal)

    os.close(write_fd)
    try:
        with contextlib.suppress(OSError):
            # The child does the same. Doing it here too means the group exists before anything tries to kill it.
            os.setpgid(pid, pid)
        watcher.attach(pid)
        logger.debug(
            "started child %d for %s with a memory limit of %s",
            pid,
            settings.label,
            format_memory(settings.memory_limit),
        )
        await watcher.finished.wait()
    except BaseException:
        watcher.kill("cancelled")
        await _wait_despite_cancellation(watcher)
        logger.debug("killed child %d of %s because its caller was cancelled or failed", pid, settings.label)
        raise
    return cast(T, _outcome(watcher.result(), settings, pid))


async def _wait_despite_cancellation(watcher: _Watcher) -> None:
    """Wait until the watcher has reaped the child, even if the caller is cancelled again meanwhile."""
    while not watcher.finished.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await watcher.finished.wait()


# ---------------------------------------------------------------------------------------------------------------
# The child side


def _child_main(
    body: Callable[[], Awaitable[Any] | Any],
    settings: ChildSettings,
    read_fd: int,
    write_fd: int,
    set_death_signal: Callable[[], None] | None,
) -> NoReturn:
    """Run the body in the freshly forked child, report its outcome on ``write_fd`` and leave with ``os._exit``."""
    status = _EXIT_UNREPORTED
    try:
        parent_pid = os.getppid()
        os.close(read_fd)
        os.setpgid(0, 0)
        if set_death_signal is not None:
            # The kernel sends the signal when the forking thread ends. That thread awaits the child, so it lives
            # until the child is reaped unless the whole parent dies.
            set_death_signal()
        if os.getppid() != parent_pid:
            # The parent died before the death signal was armed.
            os._exit(_EXIT_UNREPORTED)
        with contextlib.suppress(ValueError):
            # A wakeup fd inherited from the parent's event loop would wake the parent on the child's signals.
            signal.set_wakeup_fd(-1)
        os.environ.update(settings.env_vars)

        tag, payload = _run_body(body)
        # Two writes, so a large payload is not copied once more into a single buffer.
        _write_all(write_fd, _HEADER.pack(tag, len(payload)))
        _write_all(write_fd, payload)
        status = 0
    except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
        status = _EXIT_UNREPORTED
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


def _run_body(body: Callable[[], Awaitable[Any] | Any]) -> tuple[bytes, bytes]:
    """Run the body on a new event loop and return the tag and payload that report its result or exception."""
    # The parent's running loop is recorded per thread, and the forking thread is this one.
    asyncio.events._set_running_loop(None)
    # A bare loop instead of asyncio.run(), which saves about a millisecond per call. The child exits right after
    # the body, so the loop is never closed and tasks the body left running end with the process, as they would
    # when a container exits.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        result = loop.run_until_complete(_call(body))
    except BaseException as exc:  # noqa: BLE001 - every exception is reported to the parent
        return _ERROR, pickle.dumps(_exception_fields(exc))
    try:
        return _VALUE, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - pickling can fail with almost any exception
        return _UNPICKLABLE, f"{type(result).__name__}: {_safe_str(exc)}".encode()


async def _call(body: Callable[[], Awaitable[Any] | Any]) -> Any:
    result = body()
    if inspect.isawaitable(result):
        return await result
    return result


def _exception_fields(exc: BaseException) -> dict[str, Any]:
    """Describe an exception with plain values, because Flyte's error objects cannot be unpickled."""
    fields: dict[str, Any] = {
        "module": type(exc).__module__,
        "qualname": type(exc).__qualname__,
        "message": _safe_str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "pickled": None,
        "flyte": None,
    }
    if isinstance(exc, flyte.errors.BaseRuntimeError):
        state = {key: value for key, value in vars(exc).items() if _is_picklable(value)}
        fields["flyte"] = {"code": exc.code, "kind": exc.kind, "worker": exc.worker, "state": pickle.dumps(state)}
    else:
        with contextlib.suppress(Exception):
            fields["pickled"] = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    return fields


def _is_picklable(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - pickling can fail with almost any exception
        return False
    return True


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a user's __str__ can raise anything
        return f"<{type(exc).__name__} whose str() failed>"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@functools.cache
def _parent_death_signal_setter() -> Callable[[], None] | None:
    """Return a function that makes the kernel kill the calling process when its parent dies, if libc has one.

    The library is loaded in the parent, because loading it in a child forked from a multi-threaded process could
    deadlock on the loader's lock.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return set_death_signal


# ---------------------------------------------------------------------------------------------------------------
# The parent side


def _own_memory() -> int:
    memory = _read_memory("self")
    return memory if memory is not None else 0


def _read_memory(pid: int | str) -> int | None:
    """Return ``RssAnon + RssShmem`` of a process in bytes, or None if it is gone or a zombie (which has neither)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status_file:
            status = status_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    anonymous = _status_field(status, b"RssAnon:")
    shared = _status_field(status, b"RssShmem:")
    if anonymous is None or shared is None:
        return None
    return anonymous + shared


def _shared_anonymous_memory(pid: int) -> int:
    """Return the anonymous memory a process shares with others, such as the parent it was forked from.

    ``/proc/<pid>/smaps_rollup`` walks the whole address space, which takes milliseconds for a large process, so
    the watcher reads it once per descendant. It returns 0 when the file cannot be read, which counts the whole
    process against the limit.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup_file:
            rollup = rollup_file.read()
    except OSError:
        return 0
    anonymous = _status_field(rollup, b"Anonymous:")
    # Private_Dirty also counts a few file-backed pages, so this estimate errs towards counting too much.
    private = _status_field(rollup, b"Private_Dirty:")
    if anonymous is None or private is None:
        return 0
    return max(0, anonymous - private)


def _status_field(status: bytes, name: bytes) -> int | None:
    start = status.find(name)
    if start < 0:
        return None
    end = status.find(b"kB", start)
    return int(status[start + len(name) : end]) * 1024


def _direct_children(pid: int) -> list[int]:
    """Return the children of every thread of ``pid``, from ``/proc/<pid>/task/<tid>/children``."""
    children: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return children
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children", "rb") as listing:
                children.extend(int(child) for child in listing.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return children


class _Watcher:
    """Waits for one child on a thread of its own, measures its memory and kills it when needed."""

    def __init__(self, read_fd: int, baseline: int, settings: ChildSettings) -> None:
        self.pid = 0
        self.finished = asyncio.Event()
        self._attached = threading.Event()
        self._child_exit: _ChildExit | None = None
        self._error: BaseException | None = None
        self._read_fd = read_fd
        self._settings = settings
        self._baseline = baseline
        self._descendant_baselines: dict[int, int] = {}
        self._buffer = bytearray()
        self._pipe_open = True
        self._lock = threading.Lock()
        self._reaped = False
        self._kill_reason: KillReason | None = None
        self._memory_at_kill: int | None = None
        self._memory_at_fork = baseline
        self._started_at = time.monotonic()
        self._pidfd: int | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the watcher thread, which waits for :meth:`attach` and sets :attr:`finished` on ``loop`` at the end.

        Call it before the fork.
        """
        thread = threading.Thread(target=self._run, args=(loop,), name="flyte-patterns-memory-watcher", daemon=True)
        thread.start()

    def attach(self, pid: int) -> None:
        """Let the watcher thread watch the child ``pid``. Call it right after the fork."""
        self.pid = pid
        self._started_at = time.monotonic()
        try:
            with contextlib.suppress(OSError, AttributeError):
                self._pidfd = os.pidfd_open(pid)
            os.set_blocking(self._read_fd, False)
        finally:
            # Whatever failed here, the thread must run, because it is what kills and reaps the child.
            self._attached.set()

    def abandon(self) -> None:
        """Stop the watcher thread when the fork failed and there is no child to watch."""
        self._attached.set()

    def result(self) -> _ChildExit:
        """Return what the watcher saw, or raise the error that stopped it."""
        if self._error is not None:
            raise self._error
        assert self._child_exit is not None
        return self._child_exit

    def kill(self, reason: KillReason, memory: int | None = None) -> None:
        """Kill the child's process group unless the child is already reaped. The first reason given is kept."""
        with self._lock:
            if self._reaped:
                return
            if self._kill_reason is None:
                self._kill_reason = reason
                self._memory_at_kill = memory
            self._kill_group()

    def _kill_group(self) -> None:
        # Call with the lock held and the child not reaped: the unreaped child keeps its pid and group id from
        # being reused, so neither signal can reach an unrelated process.
        if self.pid <= 0:
            # Not attached yet. killpg(0) would kill the caller's own process group.
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._attached.wait()
        if self.pid == 0:
            return
        try:
            self._child_exit = self._watch()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            self._error = exc
        with contextlib.suppress(RuntimeError):
            # RuntimeError: the loop is closed, so no coroutine awaits the child any more.
            loop.call_soon_threadsafe(self.finished.set)

    def _watch(self) -> _ChildExit:
        try:
            self._wait_for_exit()
        finally:
            with self._lock:
                # Kill what the body left running in the group before the reaping frees the group id.
                self._kill_group()
                self._drain_pipe()
                wait_status, peak_resident = self._reap()
                self._reaped = True
            self._close()
        peak_growth = None
        if peak_resident is not None:
            # The high-water mark also counts file pages the child mapped, so this overstates the growth a little.
            peak_growth = max(0, peak_resident - self._memory_at_fork)
        return _ChildExit(
            report=self._complete_report(),
            kill_reason=self._kill_reason,
            memory_at_kill=self._memory_at_kill,
            peak_growth=peak_growth,
            wait_status=wait_status,
            runtime=time.monotonic() - self._started_at,
        )

    def _wait_for_exit(self) -> None:
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        if self._pidfd is not None:
            poller.register(self._pidfd, select.POLLIN)
        timeout = self._settings.timeout
        deadline = None if timeout is None else self._started_at + timeout
        # The body starts from nothing, so the first measurement can wait as long as the limit allows.
        next_measurement = self._started_at + self._interval(0)

        while True:
            now = time.monotonic()
            if self._kill_reason is None:
                if now >= next_measurement:
                    next_measurement = now + self._measure()
                if deadline is not None and now >= deadline:
                    self.kill("timeout")
            wake_at = next_measurement if deadline is None else min(next_measurement, deadline)
            wait = max(0.0, wake_at - now)
            if self._pidfd is None:
                wait = min(wait, _EXIT_CHECK_INTERVAL)
            if self._kill_reason is not None:
                # Nothing to measure any more: only the exit matters.
                wait = _EXIT_CHECK_INTERVAL if self._pidfd is None else self._settings.max_poll_interval

            events = poller.poll(math.ceil(wait * 1000))
            exited = False
            for fd, _ in events:
                if fd == self._read_fd:
                    if not self._read_available():
                        poller.unregister(self._read_fd)
                elif fd == self._pidfd:
                    exited = True
            if exited or (self._pidfd is None and self._has_exited()):
                return

    def _measure(self) -> float:
        """Measure the child's memory, kill it if it passed the limit, and return the seconds to the next check."""
        limit = self._settings.memory_limit
        used = self._used_memory()
        if used is None:
            return self._settings.poll_interval
        if used > limit:
            self.kill("memory", used)
            return self._settings.poll_interval
        return self._interval(used)

    def _interval(self, used: int) -> float:
        """Return how long the memory can go unmeasured: the time to the limit at the fastest expected growth."""
        interval = (self._settings.memory_limit - used) / _MAX_GROWTH_RATE
        return min(max(interval, self._settings.poll_interval), self._settings.max_poll_interval)

    def _used_memory(self) -> int | None:
        """Return the bytes the body added across the child and its descendants, or None if the child is gone."""
        memory = _read_memory(self.pid)
        if memory is None:
            return None
        self._baseline = min(self._baseline, memory)
        used = memory - self._baseline

        seen: set[int] = set()
        pending = _direct_children(self.pid)
        while pending:
            pid = pending.pop()
            if pid in seen:
                continue
            seen.add(pid)
            descendant_memory = _read_memory(pid)
            if descendant_memory is not None:
                baseline = self._descendant_baselines.get(pid)
                if baseline is None:
                    baseline = _shared_anonymous_memory(pid)
                baseline = min(baseline, descendant_memory)
                self._descendant_baselines[pid] = baseline
                used += descendant_memory - baseline
            pending.extend(_direct_children(pid))
        return used

    def _read_available(self) -> bool:
        """Read what the pipe holds without blocking. Return False once the pipe is closed."""
        while True:
            try:
                chunk = os.read(self._read_fd, _READ_CHUNK)
            except BlockingIOError:
                return True
            if not chunk:
                self._pipe_open = False
                return False
            self._buffer += chunk

    def _drain_pipe(self) -> None:
        if self._pipe_open:
            self._read_available()

    def _complete_report(self) -> tuple[bytes, memoryview] | None:
        """Return the tag and payload the child wrote, or None if it did not write all of them."""
        if len(self._buffer) < _HEADER.size:
            return None
        tag, length = _HEADER.unpack_from(self._buffer)
        if len(self._buffer) < _HEADER.size + length:
            return None
        return tag, memoryview(self._buffer)[_HEADER.size : _HEADER.size + length]

    def _has_exited(self) -> bool:
        """Return whether the child has exited, leaving it unreaped. Used only without a pidfd."""
        try:
            result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return result is not None

    def _reap(self) -> tuple[int | None, int | None]:
        """Reap the child and return its wait status and its peak resident memory in bytes."""
        try:
            _, wait_status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:
            # Someone else reaped it, for example a SIGCHLD handler that waits for any child.
            return None, None
        return wait_status, usage.ru_maxrss * 1024

    def _close(self) -> None:
        os.close(self._read_fd)
        if self._pidfd is not None:
            os.close(self._pidfd)


# ---------------------------------------------------------------------------------------------------------------
# Turning what the child reported into a result or an exception


def _outcome(child_exit: _ChildExit, settings: ChildSettings, pid: int) -> Any:
    label = settings.label
    if child_exit.kill_reason == "memory":
        memory_at_kill = child_exit.memory_at_kill or 0
        logger.info(
            "killed child %d of %s after %.3fs because its memory grew by %s, past its limit of %s",
            pid,
            label,
            child_exit.runtime,
            _mebibytes(memory_at_kill),
            format_memory(settings.memory_limit),
            extra={
                "memory_limit": settings.memory_limit,
                "memory_at_kill": memory_at_kill,
                "peak_growth": child_exit.peak_growth,
            },
        )
        raise flyte.errors.OOMError(
            "OOMKilled",
            f"{label} was killed because its memory grew by {_mebibytes(memory_at_kill)}, "
            f"past its limit of {format_memory(settings.memory_limit)}",
        )
    if child_exit.kill_reason == "timeout":
        logger.info("killed child %d of %s because it ran longer than %gs", pid, label, settings.timeout)
        raise ChildTimeoutError(f"{label} was killed because it ran longer than {settings.timeout:g}s")
    logger.debug("child %d of %s exited after %.3fs", pid, label, child_exit.runtime)
    if child_exit.report is None:
        raise ChildProcessError(f"the child process of {label} {_describe_exit(child_exit.wait_status)}")

    tag, payload = child_exit.report
    if tag == _VALUE:
        try:
            return pickle.loads(payload)
        except Exception as exc:
            raise TypeError(
                f"the result of {label} cannot be sent back from its memory-limited child process: unpickling it "
                f"failed with {type(exc).__name__}: {exc}"
            ) from exc
    if tag == _UNPICKLABLE:
        raise TypeError(
            f"the result of {label} cannot be sent back from its memory-limited child process because it cannot "
            f"be pickled ({bytes(payload).decode()}); return a picklable value, or run without memory enforcement"
        )
    raise _rebuild_exception(pickle.loads(payload), pid)


def _rebuild_exception(fields: dict[str, Any], pid: int) -> BaseException:
    """Rebuild in the parent the exception the child raised, with the child's traceback as a note.

    An exception that survives pickling comes back as itself. A Flyte error comes back as its own class with its
    code, kind and worker, because it cannot be unpickled. Anything else becomes a
    ``flyte.errors.RuntimeUserError`` whose code is the original class name: exactly what Flyte makes of it when it
    crosses a task boundary.
    """
    exc: BaseException | None = None
    if fields["pickled"] is not None:
        with contextlib.suppress(Exception):
            exc = cast(BaseException, pickle.loads(fields["pickled"]))
    if exc is None and fields["flyte"] is not None:
        exc = _rebuild_flyte_error(fields)
    if exc is None:
        exc = flyte.errors.RuntimeUserError(fields["qualname"].rsplit(".", 1)[-1], fields["message"])
    exc.add_note(f"Traceback in the memory-limited child process {pid}:\n{fields['traceback'].rstrip()}")
    return exc


def _rebuild_flyte_error(fields: dict[str, Any]) -> BaseException:
    flyte_fields = fields["flyte"]
    module = sys.modules.get(fields["module"])
    cls = getattr(module, fields["qualname"], None) if module is not None else None
    if isinstance(cls, type) and issubclass(cls, flyte.errors.BaseRuntimeError):
        # The constructors of Flyte's error classes take different arguments, so skip them and restore the state.
        exc = cls.__new__(cls, fields["message"])
        with contextlib.suppress(Exception):
            vars(exc).update(pickle.loads(flyte_fields["state"]))
        exc.code = flyte_fields["code"]
        exc.kind = flyte_fields["kind"]
        exc.worker = flyte_fields["worker"]
        return exc
    code, message, worker = flyte_fields["code"], fields["message"], flyte_fields["worker"]
    if flyte_fields["kind"] == "system":
        return flyte.errors.RuntimeSystemError(code, message, worker)
    if flyte_fields["kind"] == "unknown":
        return flyte.errors.RuntimeUnknownError(code, message, worker)
    return flyte.errors.RuntimeUserError(code, message, worker)


def _describe_exit(wait_status: int | None) -> str:
    if wait_status is None:
        return "was reaped by someone else before it reported a result"
    code = os.waitstatus_to_exitcode(wait_status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name} before it reported a result"
    return f"exited with status {code} before it reported a result"


def _mebibytes(byte_count: int) -> str:
    return f"{byte_count / 2**20:.1f}Mi"
