"""Higher-order orchestration patterns over Flyte v2 tasks and plain async callables."""

from ._errors import (
    DEFAULT_OOM_CODES,
    INTERRUPTS,
    ExceptionSpec,
    exception_matches,
    flyte_code,
    is_interrupt,
    is_out_of_memory,
)
from ._ladder import MemoryLadderWarning, memory_ladder
from ._memory import format_memory, parse_memory
from ._oom import (
    MemoryAttempt,
    MemoryLadderExhaustedError,
    MemoryRetryEvent,
    MemoryRetryHook,
    SupportsMemoryOverride,
    retry_with_memory,
)

__all__ = [
    # Error matching
    "DEFAULT_OOM_CODES",
    "INTERRUPTS",
    "ExceptionSpec",
    "exception_matches",
    "flyte_code",
    "is_interrupt",
    "is_out_of_memory",
    # Memory quantities
    "format_memory",
    "parse_memory",
    # OOM retrier
    "MemoryAttempt",
    "MemoryLadderExhaustedError",
    "MemoryLadderWarning",
    "MemoryRetryEvent",
    "MemoryRetryHook",
    "SupportsMemoryOverride",
    "memory_ladder",
    "retry_with_memory",
]
