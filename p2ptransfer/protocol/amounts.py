"""Amounts, currencies and memos: the user's text checked once, before any transfer exists.

Transfers use these checks today and payment requests will tomorrow, so the
rules live here once instead of in each wire type.

Why each rule is here:

* **Amounts are integers of minor units.** Text is parsed once, strictly
  (:func:`parse_amount`), with the currency's ISO 4217 exponent; no float ever
  touches an amount. Amounts are always positive: the direction of money is
  given by sender and recipient, never by a sign.
* **Currency codes** are active ISO 4217 codes with a minor unit
  (:mod:`.currencies` holds the table); case is forgiven, nothing else is.
* **Memos** are shown to people, so characters that rewrite or hide what is
  displayed are refused, and the text is normalised to one byte string (NFC).

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import AmountError, CurrencyError, MemoError
from .currencies import CURRENCY_EXPONENTS, NO_MINOR_UNIT
from .text import check_display_text

__all__ = [
    "MAX_AMOUNT_MINOR",
    "MAX_AMOUNT_TEXT",
    "MAX_MEMO_BYTES",
    "check_amount",
    "check_currency",
    "check_memo",
    "format_amount",
    "parse_amount",
]

MAX_AMOUNT_MINOR = 10**15
"""Largest amount in minor units (10 trillion EUR); also keeps sums far from 2**63."""
MAX_MEMO_BYTES = 280
"""Largest memo, counted in UTF-8 bytes (not characters)."""
MAX_AMOUNT_TEXT = 32
"""Longest amount text looked at; longer input is refused before any parsing."""


# --- currencies ---------------------------------------------------------------


def check_currency(code: str) -> str:
    """Return the upper-case ISO 4217 code for ``code``; :class:`CurrencyError` otherwise.

    Case is forgiven ("eur" -> "EUR") because people type codes either way and
    the two cannot mean different things; nothing else is (no whitespace, no
    symbols like "€"). :class:`.transfer.Transfer` normalises its code with this
    function; on the wire only the upper-case form decodes.
    """
    if not isinstance(code, str):
        raise CurrencyError("a currency code must be text")
    if len(code) != 3:
        shown = repr(code) if len(code) <= 16 else f"{len(code)} characters"
        raise CurrencyError(f"a currency code is three letters (ISO 4217), not {shown}")
    if not (code.isascii() and code.isalpha()):
        raise CurrencyError(f"a currency code is three ASCII letters (ISO 4217), not {code!r}")
    upper = code.upper()
    if upper in NO_MINOR_UNIT:
        raise CurrencyError(
            f"{upper} has no minor unit (precious metal, fund or test code) "
            "and cannot be transferred"
        )
    if upper not in CURRENCY_EXPONENTS:
        raise CurrencyError(f"unknown currency code {upper!r} (not an active ISO 4217 code)")
    return upper


# --- amounts -------------------------------------------------------------------

_SPECIAL_NUMBERS = frozenset({"nan", "snan", "qnan", "inf", "infinity"})
_ASCII_DIGITS = frozenset("0123456789")
_EXPONENT_NOTATION = re.compile(r"[0-9.]+[eE][+-]?[0-9]+", re.ASCII)


def _bad_amount(text: str, problem: str) -> AmountError:
    return AmountError(f"invalid amount {text!r}: {problem}")


def parse_amount(text: str, currency: str) -> int:
    """Parse decimal amount text into minor units of ``currency``.

    The grammar (ASCII only, nothing stripped or guessed)::

        amount   = integer [ "." fraction ]
        integer  = "0" | nonzero-digit *digit
        fraction = 1*exponent(digit)        ; absent when the exponent is 0

    so ``"12"``, ``"12.5"`` and ``"12.50"`` are 1250 cents of EUR. Refused, each
    with a message naming the problem: empty text, whitespace anywhere, a sign
    (amounts are positive; the direction is given by sender and recipient),
    NaN/Infinity, exponents (``1e3``), grouping (``1,000``, ``1_000``), prefixes
    (``0x10``), non-ASCII digits (``"١٢"``: Python's ``int()`` would accept
    them), ``.5``, ``5.``, leading zeros, more decimals than the currency has
    (even zeros: ``"1.500"`` EUR), any decimals for a currency without minor
    unit (``"1.5"`` JPY), zero, and more than :data:`MAX_AMOUNT_MINOR`.
    Text longer than :data:`MAX_AMOUNT_TEXT` characters is refused before it
    is looked at. ``currency`` goes through :func:`check_currency`.
    """
    if not isinstance(text, str):
        raise AmountError("an amount must be given as text")
    if len(text) > MAX_AMOUNT_TEXT:
        raise AmountError(
            f"amount text is {len(text)} characters long; at most {MAX_AMOUNT_TEXT} are accepted"
        )
    code = check_currency(currency)
    exponent = CURRENCY_EXPONENTS[code]
    if not text:
        raise AmountError("the amount is empty")
    if any(ch.isspace() for ch in text):
        where = "leading or trailing" if text.strip() != text else "inner"
        raise _bad_amount(text, f"{where} whitespace is not accepted")
    if text.lstrip("+-").lower() in _SPECIAL_NUMBERS:
        raise _bad_amount(text, "not a finite decimal number")
    if text[0] == "-":
        raise _bad_amount(text, "negative amounts are not accepted (amounts are always positive)")
    if text[0] == "+":
        raise _bad_amount(text, "a sign is not accepted; write the digits only")
    if text[:2].lower() in ("0x", "0o", "0b"):
        raise _bad_amount(text, "only decimal digits are accepted (no 0x/0o/0b prefix)")
    for ch in text:
        if ch in _ASCII_DIGITS or ch == ".":
            continue
        if ch == ",":
            problem = "commas are not accepted: use '.' as the decimal point and no separators"
        elif ch == "_":
            problem = "underscores are not accepted as digit separators"
        elif _EXPONENT_NOTATION.fullmatch(text):
            problem = "exponent notation (like 1e3) is not accepted"
        elif unicodedata.decimal(ch, None) is not None or ch.isdigit():
            problem = "only ASCII digits 0-9 are accepted"
        else:
            problem = f"unexpected character {ch!r}; an amount is digits 0-9 and at most one '.'"
        raise _bad_amount(text, problem)
    if text.count(".") > 1:
        raise _bad_amount(text, "more than one decimal point")
    integer, dot, fraction = text.partition(".")
    if not integer:
        raise _bad_amount(text, f"a digit is needed before the decimal point (write 0{text})")
    if dot and not fraction:
        raise _bad_amount(text, f"digits are needed after the decimal point (write {integer})")
    if len(integer) > 1 and integer[0] == "0":
        raise _bad_amount(text, "leading zeros are not accepted")
    if dot and exponent == 0:
        raise _bad_amount(text, f"{code} has no minor unit, so the amount must be a whole number")
    if len(fraction) > exponent:
        raise _bad_amount(
            text, f"{code} has {exponent} decimal places, this amount has {len(fraction)}"
        )
    # Only ASCII digits remain, at most MAX_AMOUNT_TEXT of them: int() is exact and cheap.
    scale: int = 10**exponent
    minor = int(integer) * scale + int(fraction.ljust(exponent, "0") or "0")
    if minor == 0:
        raise _bad_amount(text, "the amount must be greater than zero")
    if minor > MAX_AMOUNT_MINOR:
        raise _bad_amount(text, f"the maximum is {format_amount(MAX_AMOUNT_MINOR, code)} {code}")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Minor units as decimal text with exactly the currency's decimals ("12.50", "1000").

    The inverse of :func:`parse_amount` for every valid amount. Zero and
    negative values are formatted too ("-3.20"), for balances; no grouping
    separators, so the text can be pasted back into :func:`parse_amount`.
    """
    code = check_currency(currency)
    if type(minor) is not int:
        raise AmountError("an amount in minor units must be an integer")
    exponent = CURRENCY_EXPONENTS[code]
    sign = "-" if minor < 0 else ""
    scale: int = 10**exponent
    whole, fraction = divmod(abs(minor), scale)
    if exponent == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def check_amount(amount: int) -> None:
    """Raise :class:`AmountError` unless ``amount`` is a valid number of minor units."""
    if type(amount) is not int:
        raise AmountError("an amount in minor units must be an integer")
    if not 1 <= amount <= MAX_AMOUNT_MINOR:
        raise AmountError(f"amount must be between 1 and {MAX_AMOUNT_MINOR} minor units")


# --- memos ---------------------------------------------------------------------


def check_memo(memo: str) -> str:
    """Validate a memo and return it in Unicode NFC form; :class:`MemoError` otherwise.

    Why characters are refused — display spoofing. A memo is shown to the
    recipient next to the amount, in terminals, ledgers and CSV exports, so it
    follows the one rule for text people see,
    :func:`~p2ptransfer.protocol.text.check_display_text`: no control
    characters (escape sequences, newlines, NUL can rewrite a terminal line or
    forge CSV rows), no format characters (bidi overrides and isolates reorder
    what is displayed — "Trojan Source"; zero-width characters and joiners hide
    text), no line or paragraph separators, surrogates, unassigned or
    private-use characters, none of the characters that render blank, and no
    pile of more than four combining marks. A signed transfer whose memo breaks
    the rule does not decode.

    Why NFC: the same visible text has several Unicode spellings; normalising
    user input to NFC gives one byte string, so a re-typed memo does not turn a
    retry into a "different content" conflict. :class:`Transfer` normalises
    its memo with this function; a decoded transfer must already be NFC.

    The limit is :data:`MAX_MEMO_BYTES` UTF-8 *bytes*; longer text is refused
    on its character count before any normalisation or scanning work.
    """
    if not isinstance(memo, str):
        raise MemoError("a memo must be text")
    if len(memo) > MAX_MEMO_BYTES:
        raise MemoError(
            f"memo is {len(memo)} characters; at most {MAX_MEMO_BYTES} bytes of UTF-8 are allowed"
        )
    if memo.isascii() and memo.isprintable():
        # The common case, decided in C: printable ASCII holds no Cc character (the
        # only forbidden ones below U+0080), is its own NFC form and is one byte a
        # character, so the length check above already bounds its UTF-8 size.
        return memo
    check_display_text(memo, what="memo", max_chars=MAX_MEMO_BYTES, error=MemoError)
    normalised = unicodedata.normalize("NFC", memo)
    size = len(normalised.encode("utf-8"))
    if size > MAX_MEMO_BYTES:
        raise MemoError(f"memo is {size} bytes of UTF-8; at most {MAX_MEMO_BYTES} are allowed")
    return normalised
