"""Tests for parse_memory and format_memory, the Kubernetes memory quantity helpers."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flyte_patterns._memory import MAX_EXPONENT, MAX_MEMORY_BYTES, MAX_QUANTITY_LENGTH, format_memory, parse_memory

KI, MI, GI, TI, PI, EI = (2**power for power in range(10, 70, 10))

VALID_QUANTITIES: list[tuple[str | int, int]] = [
    # Plain numbers, including every form of <number> in the grammar.
    ("0", 0),
    ("-0", 0),
    ("+0", 0),
    ("0.0", 0),
    ("1", 1),
    ("1.", 1),
    ("1.0", 1),
    ("007", 7),
    ("1023", 1023),
    ("128974848", 128974848),
    # Binary suffixes.
    ("1Ki", KI),
    ("+1Ki", KI),
    ("1.000Ki", KI),
    ("0.5Ki", 512),
    ("1Mi", MI),
    ("500Mi", 524288000),
    ("1536Mi", 1536 * MI),
    ("1Gi", GI),
    ("1.5Gi", 1610612736),
    (".5Gi", 536870912),
    ("0Gi", 0),
    ("1Ti", TI),
    ("1Pi", PI),
    ("1Ei", EI),
    ("8Ei", 8 * EI),
    # Decimal suffixes.
    ("1k", 1000),
    ("100k", 100000),
    ("500k", 500000),
    ("0.001k", 1),
    ("1M", 10**6),
    ("500M", 500000000),
    ("2.5G", 2500000000),
    ("1T", 10**12),
    ("1P", 10**15),
    ("1E", 10**18),
    ("100E", 10**20),
    ("1000E", 10**21),
    ("2000m", 2),
    ("1000000u", 1),
    ("1000000000n", 1),
    # Decimal exponents.
    ("1e3", 1000),
    ("1E3", 1000),
    ("1E+6", 10**6),
    ("1e+6", 10**6),
    ("129e6", 129000000),
    ("1000e-3", 1),
    ("1e0", 1),
    ("1.5e3", 1500),
    (".5e1", 5),
    ("1e30", MAX_MEMORY_BYTES),
    # Byte counts given as int.
    (0, 0),
    (1024, 1024),
    (MAX_MEMORY_BYTES, MAX_MEMORY_BYTES),
]

TEN_THOUSAND_DIGITS = "1" * 10_000

INVALID_QUANTITIES: list[object] = [
    # Not a number, or no number.
    ("", ValueError, r"^memory '' is empty"),
    (".", ValueError, r"^memory '\.' is not a valid Kubernetes quantity"),
    ("Gi", ValueError, r"^memory 'Gi' has no number before its unit"),
    ("GB", ValueError, r"^memory 'GB' has no number before its unit"),
    ("e3", ValueError, r"^memory 'e3' has no number before its unit"),
    ("1..5", ValueError, r"^memory '1\.\.5' is not a valid Kubernetes quantity"),
    ("--1", ValueError, r"^memory '--1' is not a valid Kubernetes quantity"),
    ("+-1", ValueError, r"^memory '\+-1' is not a valid Kubernetes quantity"),
    ("\u0661", ValueError, r"^memory '\u0661' is not a valid Kubernetes quantity"),
    # Whitespace.
    ("1 Gi", ValueError, r"^memory '1 Gi' contains whitespace"),
    (" 1Gi", ValueError, r"^memory ' 1Gi' contains whitespace"),
    ("1Gi\n", ValueError, r"^memory '1Gi\\n' contains whitespace"),
    # Units Kubernetes does not know.
    ("1GiB", ValueError, r"^memory '1GiB' has an invalid unit 'GiB'"),
    ("1KiB", ValueError, r"^memory '1KiB' has an invalid unit 'KiB'"),
    ("1Gb", ValueError, r"^memory '1Gb' has an invalid unit 'Gb'"),
    ("1GB", ValueError, r"^memory '1GB' has an invalid unit 'GB'"),
    ("500mi", ValueError, r"^memory '500mi' has an invalid unit 'mi'"),
    ("16g", ValueError, r"^memory '16g' has an invalid unit 'g'"),
    ("1gi", ValueError, r"^memory '1gi' has an invalid unit 'gi'"),
    ("2K", ValueError, r"^memory '2K' has an invalid unit 'K'"),
    ("1x", ValueError, r"^memory '1x' has an invalid unit 'x'"),
    ("0x10", ValueError, r"^memory '0x10' has an invalid unit 'x10'"),
    ("1e", ValueError, r"^memory '1e' has an exponent with no digits"),
    ("1E+", ValueError, r"^memory '1E\+' has an exponent with no digits"),
    # Not a whole number of bytes.
    ("500m", ValueError, r"^memory '500m' is 0\.5 bytes, not a whole number of bytes"),
    ("1500m", ValueError, r"^memory '1500m' is 1\.5 bytes, not a whole number of bytes"),
    ("1.1Gi", ValueError, r"^memory '1\.1Gi' is 1181116006\.4 bytes, not a whole number of bytes"),
    (".1Ki", ValueError, r"^memory '\.1Ki' is 102\.4 bytes, not a whole number of bytes"),
    ("1e-3", ValueError, r"^memory '1e-3' is 0\.001 bytes, not a whole number of bytes"),
    ("0.5", ValueError, r"^memory '0\.5' is 0\.5 bytes, not a whole number of bytes"),
    # Negative.
    ("-1Gi", ValueError, r"^memory '-1Gi' is negative"),
    ("-1", ValueError, r"^memory '-1' is negative"),
    (-5, ValueError, r"^memory -5 is negative"),
    # Beyond the bounds.
    ("1e100000", ValueError, r"^memory '1e100000' has exponent 100000, outside the supported range -100 to 100"),
    ("1e-101", ValueError, r"^memory '1e-101' has exponent -101, outside the supported range"),
    ("1e31", ValueError, r"^memory '1e31' is larger than the maximum of 10{30} bytes"),
    (MAX_MEMORY_BYTES + 1, ValueError, r"^memory 10{29}1 is larger than the maximum of 10{30} bytes"),
    pytest.param(
        TEN_THOUSAND_DIGITS,
        ValueError,
        r"^memory '1{10}.* is 10000 characters long, longer than the maximum of 64",
        id="ten-thousand-digits",
    ),
    # Wrong types.
    (True, TypeError, r"^memory must be a str quantity such as '512Mi' or an int number of bytes, got True \(bool\)"),
    (False, TypeError, r"^memory must be .* got False \(bool\)"),
    (1.5, TypeError, r"^memory must be .* got 1\.5 \(float\)"),
    (None, TypeError, r"^memory must be .* got None \(NoneType\)"),
    (b"1Gi", TypeError, r"^memory must be .* got b'1Gi' \(bytes\)"),
    (["1Gi"], TypeError, r"^memory must be .* got \['1Gi'\] \(list\)"),
]

# The shape of every format_memory output: a whole number with no leading zeros and at most one suffix.
FORMATTED_QUANTITY = re.compile(r"0|[1-9][0-9]*(?:[KMGTPE]i|[kMGTPE])?")


@pytest.mark.parametrize(("value", "expected"), VALID_QUANTITIES)
def test_parse_valid(value: str | int, expected: int) -> None:
    result = parse_memory(value)

    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(("value", "error", "pattern"), INVALID_QUANTITIES)
def test_parse_invalid(value: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        parse_memory(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "error", "pattern"), INVALID_QUANTITIES)
def test_parse_invalid_custom_name(value: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error) as caught:
        parse_memory(value, name="max_memory")  # type: ignore[arg-type]

    assert str(caught.value).startswith("max_memory ")


def test_parse_1500m_invalid() -> None:
    with pytest.raises(ValueError, match=r"nearest valid values are '1' and '2'"):
        parse_memory("1500m")


def test_parse_huge_exponent_fast() -> None:
    # 10**(10**9) is an integer of about 415 MB, so a quick error shows that the bound is checked before any arithmetic.
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^memory '1e1000000000' has exponent"):
        parse_memory("1e1000000000")
    elapsed = time.perf_counter() - start

    assert elapsed < 1.0


def test_parse_long_input_rejected() -> None:
    at_limit = "1" * MAX_QUANTITY_LENGTH
    over_limit = "0" * MAX_QUANTITY_LENGTH + "1"

    with pytest.raises(ValueError, match="larger than the maximum"):
        parse_memory(at_limit)
    with pytest.raises(ValueError, match="characters long"):
        parse_memory(over_limit)


def test_parse_exponent_bound_inclusive() -> None:
    assert parse_memory(f"0e{MAX_EXPONENT}") == 0
    assert parse_memory(f"0e-{MAX_EXPONENT}") == 0
    with pytest.raises(ValueError, match="outside the supported range"):
        parse_memory(f"0e{MAX_EXPONENT + 1}")


def test_suggest_2k() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("2K")
    message = str(caught.value)

    assert "'2k' (2000 bytes)" in message
    assert "'2Ki' (2048 bytes)" in message


def test_suggest_16g() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("16g")
    message = str(caught.value)

    assert "'16G'" in message
    assert "'16Gi'" in message


def test_suggest_1gib() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("1GiB")

    assert "Did you mean '1Gi' (1073741824 bytes)?" in str(caught.value)


def test_suggest_1gb() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("1GB")

    assert "'1G' (1000000000 bytes)" in str(caught.value)


def test_suggest_500mi() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("500mi")

    assert "'500Mi' (524288000 bytes)" in str(caught.value)


def test_suggest_whitespace_removed() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("1 Gi")

    assert "Did you mean '1Gi'" in str(caught.value)


def test_suggest_500m_megabytes() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("500m")
    message = str(caught.value)

    assert "nearest valid values are '0' and '1'" in message
    assert "'m' means milli" in message
    assert "'500M'" in message
    assert "'500Mi'" in message


def test_suggest_fraction_neighbors() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("1.1Gi")
    message = str(caught.value)

    assert "nearest valid values are '1181116006' and '1181116007'" in message
    assert "milli" not in message


def test_suggest_neighbors_formatted() -> None:
    # 1610612736.5 bytes is 1536Mi + 0.5, so the lower neighbor formats as 1536Mi.
    with pytest.raises(ValueError) as caught:
        parse_memory("1610612736.5")

    assert "nearest valid values are '1536Mi' and '1610612737'" in str(caught.value)


def test_suggest_unknown_unit_none() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("1x")

    assert "Did you mean" not in str(caught.value)


@pytest.mark.parametrize(
    ("byte_count", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (999, "999"),
        (1000, "1k"),
        (1023, "1023"),
        (1024, "1Ki"),
        (1536, "1536"),
        (1_000_000, "1M"),
        (1_500_000_000, "1500M"),
        (2**30, "1Gi"),
        (1536 * MI, "1536Mi"),
        (10**18, "1E"),
        (EI, "1Ei"),
        (10**21, "1000E"),
        (1024 * EI, "1024Ei"),
        (MAX_MEMORY_BYTES, "1000000000000E"),
        # Shortest string wins when both families divide: "1024k" (5) beats "1000Ki" (6).
        (1_024_000, "1024k"),
        (5**9 * GI, "2097152G"),
        # A tie in length goes to the binary suffix: "9765625Gi" against "10485760G".
        (5**10 * GI, "9765625Gi"),
    ],
)
def test_format_examples(byte_count: int, expected: str) -> None:
    assert format_memory(byte_count) == expected


@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        (-1, ValueError, r"^format_memory\(\) argument -1 is negative"),
        (MAX_MEMORY_BYTES + 1, ValueError, r"larger than the maximum"),
        pytest.param(10**10_000, ValueError, r"<int of 33220 bits> is larger than the maximum", id="10**10000"),
        (True, TypeError, r"got True \(bool\)"),
        (1.0, TypeError, r"got 1\.0 \(float\)"),
        ("1Gi", TypeError, r"got '1Gi' \(str\)"),
        (None, TypeError, r"got None \(NoneType\)"),
    ],
)
def test_format_invalid(value: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        format_memory(value)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**21))
def test_roundtrip_up_to_1e21(byte_count: int) -> None:
    assert parse_memory(format_memory(byte_count)) == byte_count


@given(st.integers(min_value=0, max_value=MAX_MEMORY_BYTES))
def test_roundtrip_up_to_max(byte_count: int) -> None:
    assert parse_memory(format_memory(byte_count)) == byte_count


@given(
    st.integers(min_value=0, max_value=2**20),
    st.sampled_from(["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E"]),
)
def test_roundtrip_round_sizes(multiple: int, suffix: str) -> None:
    # Uniform integers are rarely divisible by 1024 or 1000, so this draws the sizes that get a suffix.
    byte_count = parse_memory(f"{multiple}{suffix}")

    assert parse_memory(format_memory(byte_count)) == byte_count


@given(st.integers(min_value=0, max_value=MAX_MEMORY_BYTES))
def test_format_grammar(byte_count: int) -> None:
    text = format_memory(byte_count)

    assert "." not in text
    assert FORMATTED_QUANTITY.fullmatch(text) is not None
    assert len(text) <= MAX_QUANTITY_LENGTH


# A multiple of 1024 gets a larger binary suffix (1024 * 2**30 is "1Ti"). Below 5**9 no decimal suffix can
# write k * 2**30 as short as f"{k}Gi" (5**9 * 2**30 is "2097152G"), so the range stops at 10**6.
@given(st.integers(min_value=1, max_value=10**6).filter(lambda k: k % 1024 != 0))
def test_format_gibibytes(k: int) -> None:
    assert format_memory(k * GI) == f"{k}Gi"


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=6),
    st.sampled_from(["e", "E"]),
)
def test_parse_exponent_exact(mantissa: int, exponent: int, letter: str) -> None:
    assert parse_memory(f"{mantissa}{letter}{exponent}") == mantissa * 10**exponent
    assert parse_memory(f"{mantissa}{letter}+{exponent}") == mantissa * 10**exponent
