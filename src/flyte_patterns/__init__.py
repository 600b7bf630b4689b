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

# Fallback runner
from ._fallback import (
    AllAttemptsFailedError,
    Alternative,
    AttemptTimeoutError,
    FallbackAttempt,
    FallbackEvent,
    FallbackHook,
    FallbackOutcome,
    ResultRejectedError,
    Trigger,
    earlier_attempts,
    with_fallback,
)

# Local memory enforcement
from ._local_memory import (
    LocalMemoryLimit,
    enforce_local_memory,
    is_local_memory_supported,
    run_with_memory_limit,
)

# Memory quantities
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
]

# Fallback runner
__all__ += [
    "AllAttemptsFailedError",
    "Alternative",
    "AttemptTimeoutError",
    "FallbackAttempt",
    "FallbackEvent",
    "FallbackHook",
    "FallbackOutcome",
    "ResultRejectedError",
    "Trigger",
    "earlier_attempts",
    "with_fallback",
]

# Local memory enforcement
__all__ += [
    "LocalMemoryLimit",
    "enforce_local_memory",
    "is_local_memory_supported",
    "run_with_memory_limit",
]
