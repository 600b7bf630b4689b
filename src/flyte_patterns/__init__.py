"""Higher-order orchestration patterns over Flyte v2 tasks and plain async callables."""

import logging

from ._batch import (
    BatchError,
    BatchLengthError,
    BatchProgress,
    BatchProgressHook,
    BatchResult,
    BatchWarning,
    ReduceError,
    auto_batch_size,
    batch_map,
    map_reduce,
)
from ._batch_input import BatchSpan
from ._circuit import CircuitBreakerError, circuit_breaker, circuit_breaker_execute
from ._errors import (
    DEFAULT_OOM_CODES,
    INTERRUPTS,
    ExceptionSpec,
    exception_matches,
    flyte_code,
    is_interrupt,
    is_out_of_memory,
)
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
from ._fanout import (
    FanOutError,
    FanOutInputError,
    FanOutProgress,
    FanOutResult,
    Outcome,
    OutcomeStatus,
    RollingWindow,
    Trip,
    TripRule,
)
from ._ladder import MemoryLadderWarning, memory_ladder
from ._local_memory import (
    LocalMemoryLimit,
    enforce_local_memory,
    is_local_memory_supported,
    run_with_memory_limit,
)
from ._memory import format_memory, parse_memory
from ._oom import (
    MemoryAttempt,
    MemoryLadderExhaustedError,
    MemoryLimited,
    MemoryRetryEvent,
    MemoryRetryHook,
    SupportsMemoryOverride,
    memory_limited,
    retry_with_memory,
)

# A library adds no handler of its own: the application decides where log records go, and without logging set
# up Python would otherwise print warnings of the flyte_patterns loggers to stderr.
logging.getLogger("flyte_patterns").addHandler(logging.NullHandler())

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
    "MemoryLimited",
    "MemoryRetryEvent",
    "MemoryRetryHook",
    "SupportsMemoryOverride",
    "memory_ladder",
    "memory_limited",
    "retry_with_memory",
    # Circuit breaker, and the fan-out results it shares with the other fan-out patterns
    "CircuitBreakerError",
    "FanOutError",
    "FanOutInputError",
    "FanOutProgress",
    "FanOutResult",
    "Outcome",
    "OutcomeStatus",
    "RollingWindow",
    "Trip",
    "TripRule",
    "circuit_breaker",
    "circuit_breaker_execute",
    # Fallback runner
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
    # Local memory enforcement
    "LocalMemoryLimit",
    "enforce_local_memory",
    "is_local_memory_supported",
    "run_with_memory_limit",
    # Auto batcher and map-reduce
    "BatchError",
    "BatchLengthError",
    "BatchProgress",
    "BatchProgressHook",
    "BatchResult",
    "BatchSpan",
    "BatchWarning",
    "ReduceError",
    "auto_batch_size",
    "batch_map",
    "map_reduce",
]
