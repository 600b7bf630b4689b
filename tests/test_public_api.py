"""The public surface: everything in ``__all__`` exists, and nothing public is left out of it."""

from __future__ import annotations

import inspect

import flyte_patterns


def test_all_names_exist() -> None:
    missing = [name for name in flyte_patterns.__all__ if not hasattr(flyte_patterns, name)]
    assert missing == []


def test_all_has_no_duplicates() -> None:
    assert len(flyte_patterns.__all__) == len(set(flyte_patterns.__all__))


def test_public_names_are_exported() -> None:
    public = {
        name
        for name, value in vars(flyte_patterns).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(flyte_patterns.__all__)


def test_exports_come_from_private_modules() -> None:
    for name in flyte_patterns.__all__:
        value = getattr(flyte_patterns, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("flyte_patterns._"), name
