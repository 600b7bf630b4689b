"""Bad arguments to the public functions are rejected before anything runs, with the parameter and value named."""

from __future__ import annotations

from typing import Any

import pytest

import flyte_patterns

# The tests pass arguments of the wrong type on purpose, so they call the public functions through an untyped name.
api: Any = flyte_patterns


@pytest.mark.parametrize("function", ["exception_matches", "is_out_of_memory"])
@pytest.mark.parametrize("exc", ["OOMKilled", None, ValueError])
def test_error_predicates_reject_non_exception(function: str, exc: object) -> None:
    arguments = (exc, ValueError) if function == "exception_matches" else (exc,)

    with pytest.raises(TypeError) as caught:
        getattr(api, function)(*arguments)

    assert str(caught.value) == f"exc must be an exception instance, got {exc!r} ({type(exc).__name__})"
