"""Tests for memory_ladder: the sizes the OOM retrier tries, computed up front in whole bytes."""

from __future__ import annotations

import itertools
import re
import warnings
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flyte_patterns import MemoryLadderWarning, format_memory, memory_ladder
from flyte_patterns._ladder import LADDER_WARNING_SIZES, MAX_LADDER_SIZES

MI, GI = 2**20, 2**30


def _names(ladder: tuple[int, ...]) -> list[str]:
    return [format_memory(size) for size in ladder]


LADDERS: list[tuple[dict[str, Any], list[str]]] = [
    # Additive, clamped so the ceiling is tried once even when the step overshoots it.
    ({"initial_memory": "250Mi", "increment": "300Mi", "max_memory": "1Gi"}, ["250Mi", "550Mi", "850Mi", "1Gi"]),
    (
        {"initial_memory": "250Mi", "increment": "250Mi", "max_memory": "2Gi"},
        ["250Mi", "500Mi", "750Mi", "1000Mi", "1250Mi", "1500Mi", "1750Mi", "2000Mi", "2Gi"],
    ),
    ({"initial_memory": "4Gi", "increment": "4Gi", "max_memory": "10Gi"}, ["4Gi", "8Gi", "10Gi"]),
    # A step that lands exactly on the ceiling does not repeat it.
    ({"initial_memory": "1Gi", "increment": "1Gi", "max_memory": "3Gi"}, ["1Gi", "2Gi", "3Gi"]),
    # A step larger than the whole range goes straight to the ceiling.
    ({"initial_memory": "1Gi", "increment": "10Gi", "max_memory": "2Gi"}, ["1Gi", "2Gi"]),
    # The ceiling equal to the initial size is a single attempt.
    ({"initial_memory": "1Gi", "increment": "200Mi", "max_memory": "1Gi"}, ["1Gi"]),
    ({"initial_memory": "1Gi", "factor": 2, "max_memory": "1Gi"}, ["1Gi"]),
    # Ints are bytes, and decimal units mix with binary ones.
    ({"initial_memory": 1000, "increment": 1000, "max_memory": "3k"}, ["1k", "2k", "3k"]),
    ({"initial_memory": "500M", "increment": "500M", "max_memory": "1Gi"}, ["500M", "1G", "1Gi"]),
    # Geometric.
    (
        {"initial_memory": "250Mi", "factor": 2, "max_memory": "4Gi"},
        ["250Mi", "500Mi", "1000Mi", "2000Mi", "4000Mi", "4Gi"],
    ),
    ({"initial_memory": "1Gi", "factor": 2, "max_memory": "8Gi"}, ["1Gi", "2Gi", "4Gi", "8Gi"]),
    ({"initial_memory": "1Gi", "factor": 1.5, "max_memory": "4Gi"}, ["1Gi", "1536Mi", "2304Mi", "3456Mi", "4Gi"]),
    ({"initial_memory": "1Gi", "factor": 3, "max_memory": "4Gi"}, ["1Gi", "3Gi", "4Gi"]),
    # Explicit.
    ({"sizes": ["1Gi", "4Gi", "16Gi"]}, ["1Gi", "4Gi", "16Gi"]),
    ({"sizes": ("512Mi",)}, ["512Mi"]),
    ({"sizes": [1024, "2Ki"]}, ["1Ki", "2Ki"]),
    ({"sizes": (size for size in ["1Gi", "2Gi"])}, ["1Gi", "2Gi"]),
]


@pytest.mark.parametrize(("arguments", "expected"), LADDERS)
def test_ladder_table(arguments: dict[str, Any], expected: list[str]) -> None:
    assert _names(memory_ladder(**arguments)) == expected


def test_ladder_is_whole_bytes() -> None:
    assert memory_ladder("250Mi", increment="300Mi", max_memory="1Gi") == (250 * MI, 550 * MI, 850 * MI, GI)


def test_ladder_defaults() -> None:
    ladder = memory_ladder()
    assert ladder[:3] == (250 * MI, 450 * MI, 650 * MI)
    assert ladder[-2:] == (4050 * MI, 4 * GI)
    assert len(ladder) == 21


def test_geometric_factor_is_decimal_exact() -> None:
    # 1.7 as a binary float is just below 1.7; the ladder grows by exactly 17/10.
    assert memory_ladder(1000, factor=1.7, max_memory=5000) == (1000, 1700, 2890, 4913, 5000)


def test_geometric_ladder_always_grows() -> None:
    # floor(10 * 1.01) is 10, so each size must still be at least one byte above the last.
    assert memory_ladder(10, factor=1.01, max_memory=14) == (10, 11, 12, 13, 14)


@given(
    initial=st.integers(min_value=1, max_value=2**40),
    extra=st.integers(min_value=0, max_value=2**40),
    step=st.integers(min_value=2**34, max_value=2**41),
)
def test_additive_ladder_properties(initial: int, extra: int, step: int) -> None:
    ceiling = initial + extra
    ladder = memory_ladder(initial, increment=step, max_memory=ceiling)
    assert ladder[0] == initial
    assert ladder[-1] == ceiling
    assert ladder.count(ceiling) == 1
    assert all(later > earlier for earlier, later in itertools.pairwise(ladder))
    assert all(later - earlier <= step for earlier, later in itertools.pairwise(ladder))
    assert all(size < ceiling for size in ladder[:-1])


@given(
    initial=st.integers(min_value=2**20, max_value=2**40),
    extra=st.integers(min_value=0, max_value=2**30),
    factor=st.floats(min_value=1.1, max_value=64),
)
def test_geometric_ladder_properties(initial: int, extra: int, factor: float) -> None:
    ceiling = initial + extra
    ladder = memory_ladder(initial, factor=factor, max_memory=ceiling)
    assert ladder[0] == initial
    assert ladder[-1] == ceiling
    assert ladder.count(ceiling) == 1
    assert all(later > earlier for earlier, later in itertools.pairwise(ladder))


INVALID: list[tuple[dict[str, Any], type[Exception], str]] = [
    (
        {"initial_memory": "16Gi", "max_memory": "10Gi"},
        ValueError,
        "initial_memory '16Gi' .* is above max_memory '10Gi'",
    ),
    ({"initial_memory": "5Gi"}, ValueError, r"initial_memory '5Gi' .* is above max_memory '4Gi' \(the default\)"),
    ({"increment": "0"}, ValueError, "increment '0' is zero"),
    ({"increment": 0}, ValueError, "increment 0 is zero"),
    ({"increment": "-1Gi"}, ValueError, "increment '-1Gi' is negative"),
    ({"increment": -1}, ValueError, "increment -1 is negative"),
    ({"increment": "1GB"}, ValueError, "increment '1GB' has an invalid unit"),
    ({"increment": 1.5}, TypeError, "increment must be a str quantity"),
    ({"factor": 1}, ValueError, "factor must be a finite number greater than 1, .* got 1$"),
    ({"factor": 0.5}, ValueError, "got 0.5"),
    ({"factor": -2}, ValueError, "got -2"),
    ({"factor": float("nan")}, ValueError, "got nan"),
    ({"factor": float("inf")}, ValueError, "got inf"),
    ({"factor": True}, TypeError, r"factor must be a number .* got True \(bool\)"),
    ({"factor": "2"}, TypeError, r"got '2' \(str\)"),
    ({"increment": "100Mi", "factor": 2}, TypeError, "increment='100Mi' and factor=2 are mutually exclusive"),
    ({"initial_memory": "abc"}, ValueError, "initial_memory 'abc'"),
    ({"initial_memory": "0"}, ValueError, "initial_memory '0' is zero"),
    ({"max_memory": "1gi"}, ValueError, "max_memory '1gi' has an invalid unit"),
    ({"max_memory": "500m"}, ValueError, "max_memory '500m' is 0.5 bytes"),
    ({"max_memory": None, "initial_memory": None, "increment": "1"}, ValueError, "more than 10000 sizes"),
    ({"factor": 1.0001, "initial_memory": 1, "max_memory": "1Gi"}, ValueError, "more than 10000 sizes"),
    ({"sizes": []}, ValueError, "sizes must contain at least one memory size"),
    ({"sizes": ["2Gi", "1Gi"]}, ValueError, r"sizes\[1\] '1Gi' is not above sizes\[0\] \(2Gi\)"),
    ({"sizes": ["1Gi", "1Gi"]}, ValueError, "strictly increasing"),
    ({"sizes": ["1Gi", "0"]}, ValueError, r"sizes\[1\] '0' is zero"),
    ({"sizes": ["1Gi", "x"]}, ValueError, r"sizes\[1\] 'x'"),
    ({"sizes": "1Gi"}, TypeError, r"sizes must be a list of memory sizes .* got '1Gi' \(str\)"),
    ({"sizes": 5}, TypeError, r"got 5 \(int\)"),
    ({"sizes": ["1Gi"], "max_memory": "2Gi"}, TypeError, "cannot be combined with max_memory='2Gi'"),
    ({"sizes": ["1Gi"], "initial_memory": "1Gi", "factor": 2}, TypeError, "initial_memory='1Gi', factor=2"),
    ({"sizes": ["1Gi"], "increment": "1Gi"}, TypeError, "increment='1Gi'"),
]


@pytest.mark.parametrize(("arguments", "error", "pattern"), INVALID)
def test_invalid_ladder_rejected(arguments: dict[str, Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        memory_ladder(**arguments)


def test_too_many_sizes_in_explicit_ladder() -> None:
    with pytest.raises(ValueError, match=re.escape(f"more than {MAX_LADDER_SIZES} sizes with sizes")):
        memory_ladder(sizes=range(1, MAX_LADDER_SIZES + 2))


def test_long_ladder_warns_with_remedy() -> None:
    with pytest.warns(MemoryLadderWarning, match="has 386 sizes.*use a larger increment, a factor such as 2") as caught:
        ladder = memory_ladder("250Mi", increment="10Mi", max_memory="4Gi")
    assert len(ladder) == 386
    # The warning points at the caller, not at this library.
    assert caught[0].filename == __file__


def test_ladder_at_warning_threshold_is_quiet() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ladder = memory_ladder(1, increment=1, max_memory=LADDER_WARNING_SIZES)
    assert len(ladder) == LADDER_WARNING_SIZES


def test_explicit_ladder_never_warns() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ladder = memory_ladder(sizes=range(1, 500))
    assert len(ladder) == 499


@pytest.mark.parametrize(
    "arguments",
    [
        {"initial_memory": "1Gi", "factor": 2, "max_memory": "1e30"},
        {"initial_memory": "8Ei", "max_memory": "8Ei"},
        {"sizes": ["1Gi", "9Ei"]},
    ],
)
def test_ladder_rejects_sizes_above_int64(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="more than Kubernetes can represent"):
        memory_ladder(**arguments)
