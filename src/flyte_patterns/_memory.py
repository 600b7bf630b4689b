"""Parse and format memory sizes as Kubernetes quantities, in whole bytes.

Flyte sends memory requests and limits to Kubernetes as resource quantities, so :func:`parse_memory` accepts the
quantity grammar of ``k8s.io/apimachinery/pkg/api/resource/quantity.go``::

    quantity ::= [sign] number [suffix]
    sign     ::= "+" | "-"
    number   ::= digits | digits "." digits | digits "." | "." digits
    digits   ::= one or more of 0-9
    suffix   ::= binary | decimal | exponent
    binary   ::= "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"               powers of 1024
    decimal  ::= "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"   10**-9, 10**-6, 10**-3, then powers of 1000
    exponent ::= ("e" | "E") [sign] digits                              a power of 10

Suffixes are case-sensitive, as in Kubernetes: ``k`` is 1000 while ``K`` is invalid, and ``m`` is milli, not mega.
``"1E"`` is 10**18 bytes (the ``E`` suffix) but ``"1E3"`` is 1000 bytes (an exponent). Whitespace is invalid
anywhere in the string.

A memory size must be a whole number of bytes. ``"500m"`` (0.5 bytes) and ``"1.1Gi"`` are well-formed quantities,
but the Kubernetes API server answers them with a warning that a fractional byte value is invalid and must be an
integer (``pkg/api/pod/warnings.go`` in kubernetes/kubernetes), and no container runtime can limit memory to part
of a byte. :func:`parse_memory` rejects them, and its error names the nearest whole-byte values.

All arithmetic is exact, with integers and :class:`fractions.Fraction` and never floats, so ``"129e6"`` is
129000000 and ``"100E"`` is 10**20.
"""

from __future__ import annotations

import re
import reprlib
from fractions import Fraction

__all__ = [
    "MAX_EXPONENT",
    "MAX_MEMORY_BYTES",
    "MAX_QUANTITY_LENGTH",
    "format_memory",
    "parse_memory",
]

MAX_QUANTITY_LENGTH = 64
"""Maximum length in characters of a quantity string, far more than any realistic size needs."""

MAX_EXPONENT = 100
"""Maximum absolute value of a decimal exponent such as the 6 in ``"1e6"``.

The check runs before any arithmetic, so ``"1e100000"`` fails at once instead of building a 100,000-digit number.
"""

MAX_MEMORY_BYTES = 10**30
"""Maximum memory size in bytes that :func:`parse_memory` returns and :func:`format_memory` accepts.

The bound is far above any real machine and only keeps absurd values out. Every value up to it formats to a
string shorter than :data:`MAX_QUANTITY_LENGTH`, so ``parse_memory(format_memory(n)) == n`` holds for all of them.
"""

# NOTE: Kubernetes accepts far less than this bound. resource.Quantity (k8s.io/apimachinery) silently caps a
# binary-suffix quantity at 2**63 - 1 when it parses one, and its int64 accessors overflow above that. A size
# above 2**63 - 1 bytes (just under 8Ei) parses here but will not reach a container intact.

_BINARY_SUFFIXES: dict[str, int] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}

# The decimal suffixes that format_memory uses. n, u and m would only make a whole number of bytes longer.
_WHOLE_DECIMAL_SUFFIXES: dict[str, int] = {
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}

_SUFFIX_MULTIPLIERS: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    **{suffix: Fraction(multiplier) for suffix, multiplier in _WHOLE_DECIMAL_SUFFIXES.items()},
    **{suffix: Fraction(multiplier) for suffix, multiplier in _BINARY_SUFFIXES.items()},
}

_UNITS_HELP = (
    "Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024), k, M, G, T, P, E (powers of 1000), "
    "m, u, n (milli, micro, nano) or an exponent such as e6"
)
_EXPECTED_FORM = f"Expected a non-negative number with an optional unit: {_UNITS_HELP}, for example '512Mi' or '1.5G'"

# [0-9] rather than \d, because \d and int() also accept non-ASCII digits such as the Arabic-Indic ones.
_QUANTITY_PATTERN = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>.*)",
    re.ASCII | re.DOTALL,
)
_EXPONENT_PATTERN = re.compile(r"[eE](?P<exponent>[+-]?[0-9]+)", re.ASCII)
_EMPTY_EXPONENT_PATTERN = re.compile(r"[eE][+-]?", re.ASCII)

_PREVIEW = reprlib.Repr()
_PREVIEW.maxstring = 40
_PREVIEW.maxother = 40
_PREVIEW.maxlong = 100


def parse_memory(value: str | int, *, name: str = "memory") -> int:
    """Parse a Kubernetes memory quantity, or a byte count, into a whole number of bytes.

    Args:
        value: A quantity string such as ``"512Mi"``, ``"1.5G"`` or ``"129e6"``, or an ``int`` number of bytes.
        name: The caller's parameter name. Every error message starts with it.

    Returns:
        The size in bytes, between 0 and :data:`MAX_MEMORY_BYTES`.

    Raises:
        TypeError: ``value`` is neither a ``str`` nor an ``int``. A ``bool`` or a ``float`` is rejected too.
        ValueError: ``value`` is not a valid quantity, is negative, is not a whole number of bytes, or exceeds
            :data:`MAX_QUANTITY_LENGTH`, :data:`MAX_EXPONENT` or :data:`MAX_MEMORY_BYTES`. The message shows the
            value and, for a near-miss unit such as ``"2K"`` or ``"1GiB"``, the valid spellings.
    """
    # bool is a subclass of int, so it needs its own check before the int branch.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(
            f"{name} must be a str quantity such as '512Mi' or an int number of bytes, "
            f"got {_preview(value)} ({type(value).__name__})"
        )
    if isinstance(value, int):
        return _check_byte_count(int(value), name)
    return _parse_quantity(value, name)


def format_memory(n: int) -> str:
    """Format a number of bytes as the shortest exact Kubernetes quantity.

    The result is the shortest of three candidates: ``n`` divided by the largest binary suffix (``Ki`` to ``Ei``)
    that divides it exactly, ``n`` divided by the largest decimal suffix (``k`` to ``E``) that divides it exactly,
    and the plain number. A binary suffix wins a tie in length, because memory is usually sized in powers of 1024.
    So ``2**30`` is ``"1Gi"``, ``1536 * 2**20`` is ``"1536Mi"``, ``1_500_000_000`` is ``"1500M"``, ``1023`` is
    ``"1023"`` and 1024000 is ``"1024k"`` (5 characters) rather than ``"1000Ki"`` (6). The output never contains
    a decimal point, and :func:`parse_memory` returns ``n`` for it.

    Args:
        n: A number of bytes, between 0 and :data:`MAX_MEMORY_BYTES`.

    Raises:
        TypeError: ``n`` is not an ``int``, or is a ``bool``.
        ValueError: ``n`` is negative or greater than :data:`MAX_MEMORY_BYTES`.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"format_memory() requires an int number of bytes, got {_preview(n)} ({type(n).__name__})")
    byte_count = _check_byte_count(int(n), "format_memory() argument")
    if byte_count == 0:
        return "0"

    # The tuple's second item ranks binary before decimal before plain, which breaks ties in length.
    candidates = [(str(byte_count), 2)]
    binary = _divide_by_largest_suffix(byte_count, _BINARY_SUFFIXES)
    if binary is not None:
        candidates.append((binary, 0))
    decimal = _divide_by_largest_suffix(byte_count, _WHOLE_DECIMAL_SUFFIXES)
    if decimal is not None:
        candidates.append((decimal, 1))

    text, _ = min(candidates, key=lambda candidate: (len(candidate[0]), candidate[1]))
    return text


def _divide_by_largest_suffix(byte_count: int, suffixes: dict[str, int]) -> str | None:
    """Return ``byte_count`` written with the largest suffix that divides it exactly, or None if none does."""
    for suffix, multiplier in reversed(suffixes.items()):
        if byte_count % multiplier == 0:
            return f"{byte_count // multiplier}{suffix}"
    return None


def _check_byte_count(byte_count: int, name: str) -> int:
    if byte_count < 0:
        raise ValueError(f"{name} {_preview(byte_count)} is negative, but a memory size must be 0 or more bytes")
    if byte_count > MAX_MEMORY_BYTES:
        raise ValueError(f"{name} {_preview(byte_count)} is larger than the maximum of {MAX_MEMORY_BYTES} bytes")
    return byte_count


def _parse_quantity(text: str, name: str) -> int:
    """Parse a quantity string into bytes, checking the steps in the order that gives the most useful error."""
    if not text:
        raise ValueError(f"{name} {text!r} is empty. {_EXPECTED_FORM}")
    if len(text) > MAX_QUANTITY_LENGTH:
        raise ValueError(
            f"{name} {_preview(text)} is {len(text)} characters long, "
            f"longer than the maximum of {MAX_QUANTITY_LENGTH} for a quantity"
        )
    if any(character.isspace() for character in text):
        raise ValueError(_whitespace_message(text, name))

    match = _QUANTITY_PATTERN.fullmatch(text)
    if match is None:
        if text.lstrip("+-")[:1].isalpha():
            raise ValueError(f"{name} {text!r} has no number before its unit. {_EXPECTED_FORM}")
        raise ValueError(f"{name} {text!r} is not a valid Kubernetes quantity. {_EXPECTED_FORM}")
    sign, number, suffix = match.group("sign", "number", "suffix")

    multiplier = _suffix_multiplier(text, name, sign, number, suffix)
    size = _decimal_number(number) * multiplier
    if sign == "-":
        size = -size

    # "-0" is zero, as in Kubernetes, so only a value below zero is rejected.
    if size < 0:
        raise ValueError(f"{name} {text!r} is negative, but a memory size must be 0 or more bytes")
    if size > MAX_MEMORY_BYTES:
        raise ValueError(f"{name} {text!r} is larger than the maximum of {MAX_MEMORY_BYTES} bytes")
    if size.denominator != 1:
        raise ValueError(_fractional_message(text, name, size, sign, number, suffix))
    return int(size)


def _suffix_multiplier(text: str, name: str, sign: str, number: str, suffix: str) -> Fraction:
    """Return the factor that ``suffix`` applies to the number, or raise ValueError naming ``text``."""
    if suffix == "":
        return Fraction(1)
    if suffix in _SUFFIX_MULTIPLIERS:
        return _SUFFIX_MULTIPLIERS[suffix]

    exponent_match = _EXPONENT_PATTERN.fullmatch(suffix)
    if exponent_match is not None:
        exponent = int(exponent_match.group("exponent"))
        if abs(exponent) > MAX_EXPONENT:
            raise ValueError(
                f"{name} {text!r} has exponent {exponent}, "
                f"outside the supported range -{MAX_EXPONENT} to {MAX_EXPONENT}"
            )
        return Fraction(10) ** exponent

    if _EMPTY_EXPONENT_PATTERN.fullmatch(suffix):
        raise ValueError(
            f"{name} {text!r} has an exponent with no digits. "
            f"Write digits after the {suffix[0]!r}, as in '1{suffix[0]}6'"
        )
    if suffix[0].isalpha():
        raise ValueError(_unit_message(text, name, sign, number, suffix))
    raise ValueError(f"{name} {text!r} is not a valid Kubernetes quantity. {_EXPECTED_FORM}")


def _decimal_number(number: str) -> Fraction:
    """Convert the digits of a quantity's number, such as ``"1"``, ``"1.5"``, ``".5"`` or ``"1."``, exactly."""
    whole_digits, _, fraction_digits = number.partition(".")
    return Fraction(int(whole_digits + fraction_digits or "0"), 10 ** len(fraction_digits))


def _unit_suggestions(suffix: str) -> list[str]:
    """Return the valid suffixes that an invalid ``suffix`` most likely meant, in the order to suggest them.

    A trailing ``B`` or ``b`` is dropped because Kubernetes has no byte unit, so ``GiB`` means ``Gi`` and ``GB``
    means ``G`` (or ``Gi``, which people often mean by GB). The letter before it is then matched without case.
    """
    if suffix in ("B", "b"):
        return [""]
    core = suffix[:-1] if len(suffix) > 1 and suffix[-1] in "Bb" else suffix
    prefix = core[:1].upper()
    if prefix not in ("K", "M", "G", "T", "P", "E"):
        return []
    decimal = "k" if prefix == "K" else prefix
    if len(core) == 1:
        return [decimal, prefix + "i"]
    if len(core) == 2 and core[1] in "iI":
        return [prefix + "i"]
    return []


def _describe_alternatives(name: str, sign: str, number: str, suffixes: list[str]) -> str:
    """Return "Did you mean 'x' (n bytes) or 'y' (m bytes)?" for those alternatives that are valid, else ""."""
    described: list[str] = []
    for suffix in suffixes:
        alternative = f"{sign}{number}{suffix}"
        try:
            byte_count = _parse_quantity(alternative, name)
        except ValueError:
            continue
        described.append(f"{alternative!r} ({_count_bytes(byte_count)})")
    if not described:
        return ""
    return f"Did you mean {' or '.join(described)}? "


def _unit_message(text: str, name: str, sign: str, number: str, suffix: str) -> str:
    alternatives = _describe_alternatives(name, sign, number, _unit_suggestions(suffix))
    return (
        f"{name} {text!r} has an invalid unit {suffix!r}. {alternatives}"
        f"Units are case-sensitive, and the valid ones are {_UNITS_HELP}"
    )


def _whitespace_message(text: str, name: str) -> str:
    message = f"{name} {text!r} contains whitespace, which Kubernetes quantities do not allow"
    compact = "".join(text.split())
    try:
        byte_count = _parse_quantity(compact, name) if compact else None
    except ValueError:
        byte_count = None
    if byte_count is not None:
        message += f". Did you mean {compact!r} ({_count_bytes(byte_count)})?"
    return message


def _fractional_message(text: str, name: str, size: Fraction, sign: str, number: str, suffix: str) -> str:
    # size is positive here and at most MAX_MEMORY_BYTES, an integer, so both neighbors are in range.
    below = size.numerator // size.denominator
    above = below + 1
    message = (
        f"{name} {text!r} is {_format_exact_decimal(size)} bytes, not a whole number of bytes. "
        f"The nearest valid values are {format_memory(below)!r} and {format_memory(above)!r}"
    )
    if suffix == "m":
        alternatives = _describe_alternatives(name, sign, number, ["M", "Mi"])
        message += f". The unit 'm' means milli (1/1000), not mega. {alternatives}".rstrip()
    return message


def _format_exact_decimal(value: Fraction) -> str:
    """Write a non-negative fraction as an exact decimal, such as ``"0.5"`` or ``"1181116006.4"``.

    A parsed quantity is a decimal number times powers of 2 and 10, so its denominator has no prime factors
    other than 2 and 5 and the decimal terminates. Any other fraction is written as ``"numerator/denominator"``.
    """
    denominator = value.denominator
    twos = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    fives = 0
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"

    places = max(twos, fives)
    scaled = value.numerator * 10**places // value.denominator
    if places == 0:
        return str(scaled)
    whole, fraction = divmod(scaled, 10**places)
    return f"{whole}.{fraction:0{places}d}"


def _count_bytes(byte_count: int) -> str:
    return "1 byte" if byte_count == 1 else f"{byte_count} bytes"


def _preview(value: object) -> str:
    """Return the repr of ``value`` for an error message, shortened if long.

    An int over about 4300 digits cannot be converted to a string at all (``sys.set_int_max_str_digits``), so a
    large int is described by its bit length instead.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<int of {value.bit_length()} bits>"
    return _PREVIEW.repr(value)
