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
    "MemoryLadderWarning",
    "memory_ladder",
]
