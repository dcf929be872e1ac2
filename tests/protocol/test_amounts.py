"""Amount text, currency codes and the ISO 4217 table: the edge cases a bank would try."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import AmountError, CurrencyError, InputError
from p2ptransfer.protocol.amounts import (
    MAX_AMOUNT_MINOR,
    MAX_AMOUNT_TEXT,
    check_currency,
    format_amount,
    parse_amount,
)
from p2ptransfer.protocol.currencies import (
    CURRENCY_EXPONENTS,
    CURRENCY_NAMES,
    ISO4217_PUBLISHED,
    NO_MINOR_UNIT,
)

# --- the ISO 4217 table ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("EUR", 2),
        ("USD", 2),
        ("GBP", 2),
        ("CHF", 2),
        ("HUF", 2),
        ("IDR", 2),
        ("XCG", 2),
        ("ZWG", 2),
        ("SLE", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("CLP", 0),
        ("ISK", 0),
        ("UYI", 0),
        ("VND", 0),
        ("PYG", 0),
        ("XOF", 0),
        ("XAF", 0),
        ("XPF", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("JOD", 3),
        ("OMR", 3),
        ("TND", 3),
        ("LYD", 3),
        ("IQD", 3),
        ("CLF", 4),
        ("UYW", 4),
    ],
    ids=lambda v: str(v),
)
def test_exponents_match_iso_4217(code: str, exponent: int) -> None:
    assert CURRENCY_EXPONENTS[code] == exponent


def test_table_shape() -> None:
    assert ISO4217_PUBLISHED == "2026-01-01"
    assert len(CURRENCY_EXPONENTS) == 165
    assert set(CURRENCY_NAMES) == set(CURRENCY_EXPONENTS)
    assert list(CURRENCY_EXPONENTS) == sorted(CURRENCY_EXPONENTS)
    for code, exponent in CURRENCY_EXPONENTS.items():
        assert re.fullmatch(r"[A-Z]{3}", code), code
        assert exponent in (0, 2, 3, 4), code
    assert not NO_MINOR_UNIT & set(CURRENCY_EXPONENTS)
    assert {"XAU", "XAG", "XPT", "XPD", "XDR", "XXX", "XTS"} <= NO_MINOR_UNIT
    # Withdrawn codes stay out: a peer must not be paid in a currency that no longer exists.
    assert not {"HRK", "BGN", "ANG", "SLL", "ZWL", "CUC", "DEM", "FRF"} & set(CURRENCY_EXPONENTS)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        CURRENCY_EXPONENTS["EUR"] = 3  # type: ignore[index]


# --- currency codes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [("EUR", "EUR"), ("eur", "EUR"), ("Eur", "EUR"), ("jpy", "JPY"), ("CLF", "CLF")],
    ids=["upper", "lower", "mixed", "jpy-lower", "fund-code-with-minor-unit"],
)
def test_check_currency_normalises_case(text: str, code: str) -> None:
    assert check_currency(text) == code


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("XYZ", "unknown currency code 'XYZ' (not an active ISO 4217 code)"),
        ("xyz", "unknown currency code 'XYZ' (not an active ISO 4217 code)"),
        ("HRK", "unknown currency code 'HRK' (not an active ISO 4217 code)"),
        ("BGN", "unknown currency code 'BGN' (not an active ISO 4217 code)"),
        ("XAU", "XAU has no minor unit (precious metal, fund or test code) and cannot be"),
        ("xdr", "XDR has no minor unit"),
        ("XXX", "XXX has no minor unit"),
        ("XTS", "XTS has no minor unit"),
        ("EU", "a currency code is three letters (ISO 4217), not 'EU'"),
        ("EURO", "a currency code is three letters (ISO 4217), not 'EURO'"),
        ("", "a currency code is three letters (ISO 4217), not ''"),
        (" EUR", "a currency code is three letters (ISO 4217), not ' EUR'"),
        ("E1R", "a currency code is three ASCII letters (ISO 4217), not 'E1R'"),
        ("ÉUR", "a currency code is three ASCII letters (ISO 4217), not 'ÉUR'"),
        ("€  ", "a currency code is three ASCII letters (ISO 4217), not '€  '"),
        ("E" * 10**6, "a currency code is three letters (ISO 4217), not 1000000 characters"),
    ],
    ids=[
        "unknown",
        "unknown-lower",
        "withdrawn-HRK",
        "withdrawn-BGN",
        "gold",
        "sdr",
        "no-currency",
        "testing",
        "two-letters",
        "four-letters",
        "empty",
        "whitespace",
        "digit",
        "non-ascii-letter",
        "symbol",
        "one-megabyte",
    ],
)
def test_check_currency_refuses(text: str, message: str) -> None:
    with pytest.raises(CurrencyError) as info:
        check_currency(text)
    assert str(info.value).startswith(message)


def test_check_currency_refuses_non_text() -> None:
    with pytest.raises(CurrencyError, match=r"^a currency code must be text$"):
        check_currency(978)  # type: ignore[arg-type]


# --- parsing amounts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        ("12.5", "EUR", 1250),
        ("12", "EUR", 1200),
        ("0.01", "EUR", 1),
        ("0.1", "EUR", 10),
        ("1.50", "EUR", 150),
        ("1.5", "eur", 150),
        ("1", "USD", 100),
        ("1000", "JPY", 1000),
        ("1", "JPY", 1),
        ("5", "KRW", 5),
        ("1.234", "BHD", 1234),
        ("1.5", "BHD", 1500),
        ("0.001", "KWD", 1),
        ("1.2345", "CLF", 12345),
        ("0.0001", "CLF", 1),
        ("1.2", "UYW", 12000),
        ("10000000000000", "EUR", MAX_AMOUNT_MINOR),
        ("9999999999999.99", "EUR", MAX_AMOUNT_MINOR - 1),
        ("1000000000000000", "JPY", MAX_AMOUNT_MINOR),
        ("100000000000.0000", "CLF", MAX_AMOUNT_MINOR),
    ],
    ids=lambda v: str(v),
)
def test_parse_amount(text: str, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor


_EUR_PROBLEMS: list[tuple[str, str, str]] = [
    ("zero", "0", "the amount must be greater than zero"),
    ("zero-decimals", "0.00", "the amount must be greater than zero"),
    ("negative", "-1", "negative amounts are not accepted (amounts are always positive)"),
    ("negative-zero", "-0", "negative amounts are not accepted (amounts are always positive)"),
    ("plus-sign", "+1", "a sign is not accepted; write the digits only"),
    ("too-many-decimals", "1.234", "EUR has 2 decimal places, this amount has 3"),
    ("trailing-zero-beyond-exponent", "1.500", "EUR has 2 decimal places, this amount has 3"),
    ("exponent", "1e3", "exponent notation (like 1e3) is not accepted"),
    ("exponent-upper", "1E3", "exponent notation (like 1e3) is not accepted"),
    (
        "thousands-comma",
        "1,000.00",
        "commas are not accepted: use '.' as the decimal point and no separators",
    ),
    (
        "decimal-comma",
        "1,50",
        "commas are not accepted: use '.' as the decimal point and no separators",
    ),
    ("underscore", "1_000", "underscores are not accepted as digit separators"),
    ("apostrophe-grouping", "1'000", 'unexpected character "\'"; an amount is digits 0-9'),
    ("leading-space", " 1", "leading or trailing whitespace is not accepted"),
    ("trailing-space", "1 ", "leading or trailing whitespace is not accepted"),
    ("trailing-newline", "1\n", "leading or trailing whitespace is not accepted"),
    ("tab", "\t1", "leading or trailing whitespace is not accepted"),
    ("inner-space", "1 000", "inner whitespace is not accepted"),
    ("inner-nbsp", "1\u00a0000", "inner whitespace is not accepted"),
    ("no-integer-part", ".5", "a digit is needed before the decimal point (write 0.5)"),
    ("no-fraction", "5.", "digits are needed after the decimal point (write 5)"),
    ("dot-only", ".", "a digit is needed before the decimal point (write 0.)"),
    ("two-dots", "1.2.3", "more than one decimal point"),
    ("double-dot", "1..2", "more than one decimal point"),
    ("hex", "0x10", "only decimal digits are accepted (no 0x/0o/0b prefix)"),
    ("octal", "0o10", "only decimal digits are accepted (no 0x/0o/0b prefix)"),
    ("leading-zero", "01", "leading zeros are not accepted"),
    ("leading-zeros-fraction", "00.50", "leading zeros are not accepted"),
    ("nan", "NaN", "not a finite decimal number"),
    ("snan", "sNaN", "not a finite decimal number"),
    ("infinity", "Infinity", "not a finite decimal number"),
    ("inf", "inf", "not a finite decimal number"),
    ("minus-infinity", "-Infinity", "not a finite decimal number"),
    ("arabic-indic-digits", "١٢", "only ASCII digits 0-9 are accepted"),
    ("fullwidth-digit", "\uff11", "only ASCII digits 0-9 are accepted"),
    ("devanagari-digit-in-fraction", "1.\u0966", "only ASCII digits 0-9 are accepted"),
    ("superscript-two", "\u00b2", "only ASCII digits 0-9 are accepted"),
    ("unicode-minus", "\u22121", "unexpected character '\u2212'; an amount is digits 0-9"),
    ("currency-symbol", "€1", "unexpected character '€'; an amount is digits 0-9"),
    ("with-code", "1EUR", "unexpected character 'E'; an amount is digits 0-9"),
    ("negative-exponent", "1.5e-2", "exponent notation (like 1e3) is not accepted"),
    ("over-maximum", "10000000000000.01", "the maximum is 10000000000000.00 EUR"),
    ("far-over-maximum", "9" * MAX_AMOUNT_TEXT, "the maximum is 10000000000000.00 EUR"),
]


@pytest.mark.parametrize(
    ("text", "problem"),
    [(text, problem) for _, text, problem in _EUR_PROBLEMS],
    ids=[name for name, _, _ in _EUR_PROBLEMS],
)
def test_parse_amount_refuses_with_named_problem(text: str, problem: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(text, "EUR")
    assert str(info.value).startswith(f"invalid amount {text!r}: {problem}")


@pytest.mark.parametrize(
    ("text", "currency", "problem"),
    [
        ("1.5", "JPY", "JPY has no minor unit, so the amount must be a whole number"),
        ("1.0", "JPY", "JPY has no minor unit, so the amount must be a whole number"),
        ("1.0", "KRW", "KRW has no minor unit, so the amount must be a whole number"),
        ("1.0001", "BHD", "BHD has 3 decimal places, this amount has 4"),
        ("1.00001", "CLF", "CLF has 4 decimal places, this amount has 5"),
        ("1000000000000001", "JPY", "the maximum is 1000000000000000 JPY"),
        ("1000000000000.001", "BHD", "the maximum is 1000000000000.000 BHD"),
    ],
    ids=[
        "jpy-decimals",
        "jpy-zero-decimal",
        "krw-zero-decimal",
        "bhd-four-decimals",
        "clf-five-decimals",
        "jpy-over-max",
        "bhd-over-max",
    ],
)
def test_parse_amount_respects_exponent(text: str, currency: str, problem: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(text, currency)
    assert str(info.value) == f"invalid amount {text!r}: {problem}"


@pytest.mark.parametrize(
    "text",
    ["1" * (MAX_AMOUNT_TEXT + 1), "0." + "0" * 10**6 + "1", "\u202e" * 10**6],
    ids=["one-over-limit", "one-megabyte-decimal", "one-megabyte-junk"],
)
def test_parse_amount_bounds_input_before_parsing(text: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(text, "EUR")
    assert str(info.value) == (
        f"amount text is {len(text)} characters long; at most {MAX_AMOUNT_TEXT} are accepted"
    )


def test_parse_amount_empty() -> None:
    with pytest.raises(AmountError, match=r"^the amount is empty$"):
        parse_amount("", "EUR")


@pytest.mark.parametrize(
    "value", [Decimal("1.5"), 1.5, 150, b"1.50"], ids=["decimal", "float", "int", "bytes"]
)
def test_parse_amount_takes_text_only(value: object) -> None:
    with pytest.raises(AmountError, match=r"^an amount must be given as text$"):
        parse_amount(value, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("currency", "error"),
    [("XYZ", CurrencyError), ("XAU", CurrencyError), ("EURO", CurrencyError)],
    ids=["unknown", "no-minor-unit", "ill-formed"],
)
def test_parse_amount_unknown_currency(currency: str, error: type[InputError]) -> None:
    with pytest.raises(error):
        parse_amount("1", currency)


# --- formatting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1250, "EUR", "12.50"),
        (1, "EUR", "0.01"),
        (100, "usd", "1.00"),
        (1000, "JPY", "1000"),
        (125, "BHD", "0.125"),
        (1, "CLF", "0.0001"),
        (MAX_AMOUNT_MINOR, "EUR", "10000000000000.00"),
        (0, "EUR", "0.00"),
        (0, "JPY", "0"),
        (-320, "EUR", "-3.20"),
        (-1, "KWD", "-0.001"),
    ],
    ids=lambda v: str(v),
)
def test_format_amount(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text


@pytest.mark.parametrize("minor", [1.5, True, Decimal(1), "100"], ids=repr)
def test_format_amount_takes_int_only(minor: object) -> None:
    with pytest.raises(AmountError, match=r"^an amount in minor units must be an integer$"):
        format_amount(minor, "EUR")  # type: ignore[arg-type]


_CODES = st.sampled_from(sorted(CURRENCY_EXPONENTS))


@settings(max_examples=200, deadline=None)
@given(minor=st.integers(1, MAX_AMOUNT_MINOR), currency=_CODES)
def test_parse_inverts_format(minor: int, currency: str) -> None:
    text = format_amount(minor, currency)
    assert parse_amount(text, currency) == minor
    assert format_amount(parse_amount(text, currency), currency) == text


_AMOUNT_CHARS = st.sampled_from(list("0123456789" * 4 + "..-+eE,_ x\u0661\uff11"))


@settings(max_examples=300, deadline=None)
@given(text=st.text(_AMOUNT_CHARS, max_size=20), currency=_CODES)
def test_parse_agrees_with_an_independent_grammar(text: str, currency: str) -> None:
    """Differential test: a regex of the documented grammar and decimal.Decimal as oracle."""
    exponent = CURRENCY_EXPONENTS[currency]
    fraction = rf"(\.[0-9]{{1,{exponent}}})?" if exponent else ""
    well_formed = re.fullmatch(rf"(0|[1-9][0-9]*){fraction}", text, re.ASCII) is not None
    expected = int(Decimal(text).scaleb(exponent)) if well_formed else None
    if expected is not None and 1 <= expected <= MAX_AMOUNT_MINOR:
        assert parse_amount(text, currency) == expected
    else:
        with pytest.raises(AmountError):
            parse_amount(text, currency)
