"""Higher-order orchestration patterns over Flyte v2 tasks and plain async callables."""

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
