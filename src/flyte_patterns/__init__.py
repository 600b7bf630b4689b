"""Higher-order orchestration patterns over Flyte v2 tasks and plain async callables."""

from ._batch import (
    BatchError,
    BatchLengthError,
    BatchProgress,
    BatchProgressHook,
    BatchResult,
    ReduceError,
    auto_batch_size,
    batch_map,
    map_reduce,
)
from ._batch_input import BatchSpan

# Circuit breaker, and the fan-out result types it shares with the other fan-out patterns.
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

__all__ = [
    "DEFAULT_OOM_CODES",
    "INTERRUPTS",
    "ExceptionSpec",
    "exception_matches",
    "flyte_code",
    "is_interrupt",
    "is_out_of_memory",
]

# Circuit breaker and fan-out results.
__all__ += [
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
]

# Auto batcher and map-reduce.
__all__ += [
    "BatchError",
    "BatchLengthError",
    "BatchProgress",
    "BatchProgressHook",
    "BatchResult",
    "BatchSpan",
    "ReduceError",
    "auto_batch_size",
    "batch_map",
    "map_reduce",
]
