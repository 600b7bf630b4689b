"""The memory ladder: the sizes, in whole bytes, that the OOM retrier tries in order.

A ladder is computed once, before any task is launched, in one of three ways:

* additive (the default): ``initial_memory``, then ``increment`` more each time;
* geometric: ``initial_memory``, then ``factor`` times the previous size each time, rounded down to whole bytes
  and at least one byte more than the previous size;
* explicit: the ``sizes`` given, which must be strictly increasing.

An additive or geometric ladder stops below ``max_memory`` and then ends with ``max_memory`` itself, so the ceiling
is always tried, exactly once, and nothing above it ever is: ``250Mi`` plus ``300Mi`` up to ``1Gi`` gives 250Mi,
550Mi, 850Mi and 1Gi. The last size of an explicit ladder is its ceiling.

``increment``, ``factor`` and ``sizes`` are mutually exclusive, and ``sizes`` also excludes ``initial_memory`` and
``max_memory``, because an explicit list already says where to start and stop.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from fractions import Fraction

from ._memory import format_memory, parse_memory

DEFAULT_INITIAL_MEMORY = "250Mi"
"""First size of a computed ladder when ``initial_memory`` is not given."""

DEFAULT_INCREMENT = "200Mi"
"""Step of an additive ladder when none of ``increment``, ``factor`` or ``sizes`` is given."""

DEFAULT_MAX_MEMORY = "4Gi"
"""Ceiling of a computed ladder when ``max_memory`` is not given."""

LADDER_WARNING_SIZES = 100
"""A computed ladder with more sizes than this triggers a :class:`MemoryLadderWarning`."""

MAX_LADDER_SIZES = 10_000
"""A ladder with more sizes than this is rejected: each size is a task launch, so it could never finish in time."""


class MemoryLadderWarning(UserWarning):
    """A legal but suspicious ladder, such as an increment so small that the ceiling takes hundreds of attempts."""


def memory_ladder(
    initial_memory: str | int | None = None,
    *,
    increment: str | int | None = None,
    factor: float | None = None,
    max_memory: str | int | None = None,
    sizes: Iterable[str | int] | None = None,
) -> tuple[int, ...]:
    """Compute the sizes, in bytes, that :func:`~flyte_patterns.retry_with_memory` tries, in order.

    Args:
        initial_memory: First size, as a Kubernetes quantity or an int of bytes. Defaults to ``"250Mi"``.
        increment: Step of an additive ladder. Defaults to ``"200Mi"`` when ``factor`` and ``sizes`` are not given.
        factor: Growth factor of a geometric ladder, a number greater than 1.
        max_memory: Ceiling, always the last size of a computed ladder. Defaults to ``"4Gi"``.
        sizes: An explicit, strictly increasing list of sizes; the last one is the ceiling.

    Returns:
        The sizes in bytes, strictly increasing, ending with the ceiling.

    Raises:
        TypeError: An argument has the wrong type, or ``sizes`` is combined with another ladder argument.
        ValueError: A size cannot be parsed or is not positive, ``initial_memory`` is above ``max_memory``,
            ``increment`` is not positive, ``factor`` is not greater than 1, ``sizes`` is empty or not strictly
            increasing, or the ladder would have more than :data:`MAX_LADDER_SIZES` sizes.

    Warns:
        MemoryLadderWarning: A computed ladder has more than :data:`LADDER_WARNING_SIZES` sizes.
    """
    return build_ladder(
        initial_memory=initial_memory,
        increment=increment,
        factor=factor,
        max_memory=max_memory,
        sizes=sizes,
        stacklevel=3,
    )


def build_ladder(
    *,
    initial_memory: str | int | None,
    increment: str | int | None,
    factor: float | None,
    max_memory: str | int | None,
    sizes: Iterable[str | int] | None,
    stacklevel: int,
) -> tuple[int, ...]:
    """Compute a ladder as :func:`memory_ladder` does; ``stacklevel`` points a warning at the public caller."""
    if sizes is not None:
        return _explicit_ladder(
            sizes, initial_memory=initial_memory, increment=increment, factor=factor, max_memory=max_memory
        )

    if increment is not None and factor is not None:
        raise TypeError(
            f"increment={increment!r} and factor={factor!r} are mutually exclusive; pass increment for an "
            f"additive ladder or factor for a geometric one"
        )

    initial = _positive_size(DEFAULT_INITIAL_MEMORY if initial_memory is None else initial_memory, "initial_memory")
    ceiling = _positive_size(DEFAULT_MAX_MEMORY if max_memory is None else max_memory, "max_memory")
    if initial > ceiling:
        raise ValueError(
            f"initial_memory {_show(initial_memory, initial)} is above max_memory {_show(max_memory, ceiling)}; "
            f"initial_memory must be at most the ceiling"
        )

    if factor is not None:
        ladder = _geometric_ladder(initial, ceiling, _check_factor(factor))
    else:
        step = _check_increment(DEFAULT_INCREMENT if increment is None else increment)
        ladder = _additive_ladder(initial, ceiling, step)

    if len(ladder) > LADDER_WARNING_SIZES:
        warnings.warn(
            f"the memory ladder from {format_memory(initial)} to {format_memory(ceiling)} has {len(ladder)} sizes, "
            f"so reaching the ceiling takes {len(ladder)} attempts; use a larger increment, a factor such as 2, "
            f"or an explicit list of sizes",
            MemoryLadderWarning,
            stacklevel=stacklevel,
        )
    return ladder


def _additive_ladder(initial: int, ceiling: int, step: int) -> tuple[int, ...]:
    # Count the sizes before building them, so that a 1-byte step up to 4Gi fails at once instead of
    # allocating billions of ints.
    count = math.ceil((ceiling - initial) / step) + 1 if ceiling > initial else 1
    _check_count(count, f"increment {format_memory(step)}")
    ladder = list(range(initial, ceiling, step))
    ladder.append(ceiling)
    return tuple(ladder)


def _geometric_ladder(initial: int, ceiling: int, factor: Fraction) -> tuple[int, ...]:
    ladder = [initial]
    while ladder[-1] < ceiling:
        grown = max(math.floor(ladder[-1] * factor), ladder[-1] + 1)
        ladder.append(min(grown, ceiling))
        _check_count(len(ladder), f"factor {float(factor)!r}")
    return tuple(ladder)


def _explicit_ladder(
    sizes: object,
    *,
    initial_memory: str | int | None,
    increment: str | int | None,
    factor: float | None,
    max_memory: str | int | None,
) -> tuple[int, ...]:
    other_arguments = {
        "initial_memory": initial_memory,
        "increment": increment,
        "factor": factor,
        "max_memory": max_memory,
    }
    clashes = [f"{name}={value!r}" for name, value in other_arguments.items() if value is not None]
    if clashes:
        raise TypeError(
            f"sizes is an explicit ladder and cannot be combined with {', '.join(clashes)}; "
            f"its first size is the initial memory and its last size the ceiling"
        )
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise TypeError(
            f"sizes must be a list of memory sizes such as ['1Gi', '4Gi', '16Gi'], got {sizes!r} "
            f"({type(sizes).__name__})"
        )

    ladder: list[int] = []
    for position, value in enumerate(sizes):
        size = _positive_size(value, f"sizes[{position}]")
        if ladder and size <= ladder[-1]:
            raise ValueError(
                f"sizes must be strictly increasing, but sizes[{position}] {value!r} is not above "
                f"sizes[{position - 1}] ({format_memory(ladder[-1])})"
            )
        ladder.append(size)
        _check_count(len(ladder), "sizes")
    if not ladder:
        raise ValueError("sizes must contain at least one memory size, got an empty list")
    return tuple(ladder)


# Kubernetes stores a resource quantity as a signed 64-bit integer (resource.Quantity in k8s.io/apimachinery), so
# no container can be given more than this many bytes.
MAX_LIMIT_BYTES = 2**63 - 1


def _positive_size(value: str | int, name: str) -> int:
    size = parse_memory(value, name=name)
    if size == 0:
        raise ValueError(f"{name} {value!r} is zero; a memory size must be at least 1 byte")
    if size > MAX_LIMIT_BYTES:
        raise ValueError(
            f"{name} {value!r} is {size} bytes, more than Kubernetes can represent ({MAX_LIMIT_BYTES} bytes, "
            f"just under 8Ei); use a realistic size such as '64Gi'"
        )
    return size


def _check_increment(value: str | int) -> int:
    try:
        step = parse_memory(value, name="increment")
    except ValueError:
        # parse_memory describes a negative size as "must be 0 or more bytes", but an increment must be more than 0.
        if _is_negative_size(value):
            raise ValueError(f"increment {value!r} is negative; it must be a positive size such as '200Mi'") from None
        raise
    if step == 0:
        raise ValueError(f"increment {value!r} is zero; it must be a positive size such as '200Mi'")
    return step


def _is_negative_size(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value < 0
    if not isinstance(value, str) or not value.startswith("-"):
        return False
    try:
        return parse_memory(value[1:]) > 0
    except ValueError:
        return False


def _check_factor(value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"factor must be a number greater than 1, such as 2 or 1.5, got {value!r} ({type(value).__name__})"
        )
    if math.isnan(value) or math.isinf(value) or value <= 1:
        raise ValueError(f"factor must be a finite number greater than 1, such as 2 or 1.5, got {value!r}")
    # repr gives the shortest decimal that round-trips, so factor=1.7 grows by exactly 17/10, not by the
    # binary float just below it.
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def _check_count(count: int, cause: str) -> None:
    if count > MAX_LADDER_SIZES:
        raise ValueError(
            f"the memory ladder would have more than {MAX_LADDER_SIZES} sizes with {cause}; "
            f"use a larger increment, a larger factor, or fewer sizes"
        )


def _show(value: str | int | None, size: int) -> str:
    """Describe a size for a message as the caller wrote it, with the byte count when that adds information."""
    if value is None:
        return f"{format_memory(size)!r} (the default)"
    if isinstance(value, str):
        return f"{value!r} ({size} bytes)"
    return f"{value!r} ({format_memory(size)})"
