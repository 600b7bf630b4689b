"""Climb a memory ladder on the local engine until a task that allocates about 900 MB succeeds.

Run by hand with ``.venv/bin/python examples/oom_retrier.py`` (it is not part of ``make demo``). It needs about
1 GiB of free memory.

The local memory enforcement runs each attempt in a child process that is killed when it passes the attempt's
size, as Kubernetes kills a container at its limit. So the task runs out of memory at 250Mi, 550Mi and 850Mi and
succeeds at the 1Gi ceiling, which a ladder that stopped below the ceiling would never try.
"""

from __future__ import annotations

import logging

import flyte

from flyte_patterns import MemoryRetryEvent, format_memory, retry_with_memory

env = flyte.TaskEnvironment(name="flyte_patterns_oom_example")

# 900Mi, about 944 MB, is more than 850Mi and less than 1Gi. Locally the limit applies to the memory the task adds,
# not to the Python interpreter it was forked from. On Kubernetes it applies to the whole container.
ALLOCATION_BYTES = 900 * 2**20


@env.task
async def build_table(size_bytes: int) -> int:
    # Multiplying a bytes object writes every byte, so the whole allocation is resident, not just reserved.
    table = b"x" * size_bytes
    return len(table)


def print_event(event: MemoryRetryEvent) -> None:
    if event.kind == "attempt":
        print(f"attempt {event.attempt}: launching at {format_memory(event.size)}")
    elif event.kind == "escalated":
        print(f"attempt {event.attempt}: out of memory at {format_memory(event.size)}: {event.error}")
    elif event.kind == "succeeded":
        print(f"attempt {event.attempt}: succeeded at {format_memory(event.size)}")


@env.task
async def pipeline(size_bytes: int) -> str:
    allocated = await retry_with_memory(
        build_table,
        size_bytes,
        initial_memory="250Mi",
        increment="300Mi",
        max_memory="1Gi",
        on_event=print_event,
    )
    return f"allocated {allocated} bytes"


if __name__ == "__main__":
    # Flyte logs every failed attempt with its traceback; the events printed above tell the same story in brief.
    flyte.init(log_level=logging.CRITICAL)
    run = flyte.run(pipeline, ALLOCATION_BYTES)
    print(run.outputs()[0])
