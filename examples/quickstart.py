"""Run a Flyte task that fails on the local engine, and match its error the way every pattern does.

Run with ``make demo`` or ``python examples/quickstart.py``.
"""

from __future__ import annotations

import flyte
import flyte.errors

from flyte_patterns import exception_matches, flyte_code

env = flyte.TaskEnvironment(name="flyte_patterns_quickstart")


class UpstreamError(Exception):
    """A failure of some external service."""


class UpstreamTimeout(UpstreamError):
    """The service did not answer in time."""


@env.task
async def call_upstream(url: str) -> str:
    raise UpstreamTimeout(f"no answer from {url}")


@env.task
async def driver(url: str) -> str:
    try:
        return await call_upstream(url)
    except flyte.errors.RuntimeUserError as exc:
        # Flyte delivers the error rebuilt, with only the class name left as its code.
        matched = exception_matches(exc, (UpstreamError,))
        return f"{type(exc).__name__} with code {flyte_code(exc)!r}; matches UpstreamError: {matched}"


if __name__ == "__main__":
    flyte.init()
    run = flyte.run(driver, "https://example.invalid/api")
    print(run.outputs()[0])
