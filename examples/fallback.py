"""Fall back from a GPU model to a paid API to a plain heuristic, on the local Flyte engine.

Run with ``python examples/fallback.py`` after ``make demo`` or ``make test`` has created ``.venv``.
"""

from __future__ import annotations

import logging

import flyte

from flyte_patterns import Alternative, FallbackEvent, is_out_of_memory, with_fallback

env = flyte.TaskEnvironment(name="flyte_patterns_fallback_example")


class UpstreamError(Exception):
    """A failure of the external summarisation service."""


class RateLimited(UpstreamError):
    """The service rejected the request because the quota is used up."""


@env.task
async def summarize_on_gpu(text: str) -> str:
    # Simulates a model that needs more GPU memory for long inputs than the node has.
    if len(text) > 40:
        raise MemoryError("CUDA out of memory")
    return f"gpu summary of {len(text)} characters"


@env.task
async def summarize_with_api(text: str) -> str:
    raise RateLimited("429 Too Many Requests")


@env.task
async def first_sentence(text: str) -> str:
    return text.split(".")[0] + "."


def report(event: FallbackEvent) -> None:
    print(f"hook: {event.failed.name} {event.failed.status}, {event.next_name} takes over")


@env.task
async def summarize(text: str) -> str:
    outcome = await with_fallback(
        summarize_on_gpu,
        [
            Alternative(summarize_with_api, on=is_out_of_memory, name="paid API"),
            Alternative(first_sentence, on=UpstreamError, name="first sentence"),
        ],
        text,
        attempt_timeout=60,
        return_outcome=True,
        on_fallback=report,
    )
    for attempt in outcome.attempts:
        print(f"{attempt.index} {attempt.name}: {attempt.status} {attempt.error!r}")
    return f"{outcome.value} (served by {outcome.name})"


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    flyte.init()
    run = flyte.run(summarize, "Fallback chains keep a pipeline going. They also hide failures.")
    print(run.outputs()[0])
