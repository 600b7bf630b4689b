"""Fan out over orders with a circuit breaker on the local Flyte engine, and show what each order became.

Run with ``python examples/circuit_breaker.py``. The orders service answers orders 0 to 3 and then goes down,
so the breaker trips at the third failure and cancels what is still running. The worked example in
docs/circuit-breaker.md walks through this run step by step.
"""

from __future__ import annotations

import asyncio

import flyte

from flyte_patterns import FanOutResult, circuit_breaker, flyte_code

env = flyte.TaskEnvironment(name="flyte_patterns_circuit_breaker_example")

# Orders take 0.1, 0.2 or 0.3 s, so their completions interleave in a fixed order.
STEP = 0.1


class ServiceDown(Exception):
    """The orders service did not answer."""


@env.task
async def fetch_order(order_id: int) -> str:
    await asyncio.sleep(STEP * (order_id % 3 + 1))
    if order_id >= 4:
        raise ServiceDown(f"no answer for order {order_id}")
    return f"order-{order_id}"


def describe(result: FanOutResult[str]) -> str:
    lines = [f"tripped: {result.tripped} ({result.trip.message if result.trip else 'ran to the end'})"]
    for outcome in result.outcomes:
        if outcome.error is not None:
            detail = f"{type(outcome.error).__name__}, code {flyte_code(outcome.error)}: {outcome.error}"
        else:
            detail = outcome.value or ""
        lines.append(f"  order {outcome.index}: {outcome.status.value:<12} {detail}")
    lines.append(
        f"succeeded={result.succeeded} failed={result.failed} cancelled={result.cancelled} "
        f"not_started={result.not_started}"
    )
    return "\n".join(lines)


@env.task
async def fetch_all(count: int) -> str:
    result = await circuit_breaker(fetch_order, range(count), max_failures=2, concurrency=3)
    return describe(result)


if __name__ == "__main__":
    flyte.init()
    run = flyte.run(fetch_all, 10)
    print(run.outputs()[0])
