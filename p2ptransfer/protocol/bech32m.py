"""bech32m (BIP-350): text that survives being read aloud, copied and typed.

A bech32m string is ``hrp`` + ``"1"`` + data characters + a 6-character
checksum. The human-readable prefix (``hrp``) says what the text is —
``p2pt`` for an address, ``p2ptreq`` for a payment request — and is bound
into the checksum, so text of one kind never decodes as another. Within 90
characters the checksum detects any error in up to four characters; this
module also points at the character when a single one was mistyped, since
that is the common case and bech32m can tell which one it was.

Longer payloads (a signed payment request does not fit in 90 characters) lift
the cap with ``max_length=None``: the checksum then still catches typos with
high probability, and the signature inside carries the integrity. Errors are
only *located* within 90 characters, where the location is reliable.

Errors name the kind of text (``noun``) and are raised as the caller's
:class:`~p2ptransfer.errors.InputError` subclass, so an address typo is an
``AddressError`` reading "address …" and nobody words the rules twice.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ..errors import InputError

__all__ = ["CHARSET", "MAX_LENGTH", "decode", "encode", "from_words", "to_words"]

MAX_LENGTH = 90
"""BIP-173/350's limit, within which the checksum's guarantees hold."""

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
"""The 32 data characters: no ``1``, ``b``, ``i`` or ``o``, which look like others."""

_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_CHECKSUM_LENGTH = 6
_CONST = 0x2BC830A3
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)

# What a reader most likely meant by a character bech32m leaves out, by the case of the text.
_LOOKALIKES_LOWER = {"o": "0", "O": "0", "1": "l", "i": "l", "I": "l"}
_LOOKALIKES_UPPER = {"O": "0", "o": "0", "B": "8"}


def _step(chk: int, value: int) -> int:
    top = chk >> 25
    chk = (chk & 0x1FFFFFF) << 5 ^ value
    for i, g in enumerate(_GENERATOR):
        if (top >> i) & 1:
            chk ^= g
    return chk


def _polymod(values: Sequence[int]) -> int:
    chk = 1
    for v in values:
        chk = _step(chk, v)
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("s") else "s")


def _check_hrp(hrp: str) -> None:
    if not hrp or hrp.lower() != hrp or not all(33 <= ord(c) <= 126 for c in hrp):
        raise ValueError(f"invalid bech32m prefix {hrp!r}")


def to_words(data: bytes) -> list[int]:
    """``data`` as 5-bit words, the last one zero-padded (BIP-173 ``convertbits(8, 5)``)."""
    acc = bits = 0
    out: list[int] = []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append((acc >> bits) & 31)
    if bits:
        out.append((acc << (5 - bits)) & 31)
    return out


def from_words(
    words: Sequence[int], *, noun: str = "code", error: type[InputError] = InputError
) -> bytes:
    """The bytes ``to_words`` made; padding that is not all zero bits is refused."""
    acc = bits = 0
    out = bytearray()
    for value in words:
        acc = (acc << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or (acc & ((1 << bits) - 1)):
        raise error(f"{noun} has invalid padding bits")
    return bytes(out)


def encode(hrp: str, words: Sequence[int], *, max_length: int | None = MAX_LENGTH) -> str:
    """The lower-case bech32m text for 5-bit ``words`` under prefix ``hrp``.

    ValueError (our own misuse, not the user's) if a word is out of range or
    the text would exceed ``max_length``.
    """
    _check_hrp(hrp)
    if any(not 0 <= w < 32 for w in words):
        raise ValueError("bech32m words are 5-bit values")
    polymod = _polymod([*_hrp_expand(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ _CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LENGTH)]
    text = hrp + "1" + "".join(CHARSET[w] for w in [*words, *checksum])
    if max_length is not None and len(text) > max_length:
        raise ValueError(f"bech32m text would be {len(text)} characters, over {max_length}")
    return text


def decode(
    text: str,
    hrp: str,
    *,
    max_length: int | None = MAX_LENGTH,
    noun: str = "code",
    error: type[InputError] = InputError,
) -> list[int]:
    """The 5-bit data words of ``text`` (checksum removed); every rule is checked.

    Surrounding whitespace is ignored and all-upper-case text is accepted.
    Each failure raises ``error`` with one sentence saying what is wrong,
    and where: positions count the text's characters from 1.
    """
    _check_hrp(hrp)
    if not isinstance(text, str):
        raise error(f"{noun} must be text")
    text = text.strip()
    if max_length is not None and len(text) > max_length:
        raise error(f"{noun} is too long: {len(text)} characters, at most {max_length}")
    if not text.isascii():
        # Else str.lower() would map look-alikes (KELVIN SIGN -> "k") onto valid characters.
        raise error(f"{noun} contains a character that is not ASCII")
    prefix = hrp + "1"
    if text[: len(prefix)].lower() != prefix:
        raise error(f"{noun} must start with {prefix}")
    if len(text) < len(prefix) + _CHECKSUM_LENGTH:
        raise error(f"{noun} is too short: {len(text)} characters")
    upper = sum(c.isupper() for c in text) > sum(c.islower() for c in text)
    for position, char in enumerate(text[len(prefix) :], start=len(prefix) + 1):
        if char.lower() not in _CHARSET_INDEX:
            hint = (_LOOKALIKES_UPPER if upper else _LOOKALIKES_LOWER).get(char)
            raise error(
                f"character {char!r} at position {position} is not used in {_plural(noun)}"
                + (f" (did you mean {hint!r}?)" if hint else "")
            )
    if text.lower() != text and text.upper() != text:
        raise error(f"{noun} mixes upper and lower case")
    words = [_CHARSET_INDEX[c] for c in text[len(prefix) :].lower()]
    residue = _polymod([*_hrp_expand(hrp), *words]) ^ _CONST
    if residue:
        where = _locate(residue, len(words)) if len(text) <= MAX_LENGTH else None
        if where is None:
            raise error(f"{noun} checksum does not match: a character is mistyped")
        position = len(prefix) + where + 1
        raise error(
            f"{noun} checksum does not match: character {text[position - 1]!r}"
            f" at position {position} is probably mistyped"
        )
    return words[:-_CHECKSUM_LENGTH]


def _locate(residue: int, count: int) -> int | None:
    """The index of the one wrong word among ``count`` that explains ``residue``, if one does."""
    index = _single_errors(count).get(residue)
    return None if index is None or index < 0 else index


@functools.lru_cache(maxsize=16)  # pure; one table per text length, and lengths are few
def _single_errors(count: int) -> dict[int, int]:
    """Checksum residue -> index of the word whose change causes it (-1: more than one could).

    The checksum is linear: changing word ``i`` by ``e`` (XOR) changes the
    polymod by the polymod, from zero, of ``e`` followed by ``count - 1 - i``
    zero words. Within 90 characters no two single changes give the same
    residue (bech32m's distance), so a match names the mistyped character.
    """
    table: dict[int, int] = {}
    effects = list(range(1, 32))  # the effect of each change to the last word
    for index in range(count - 1, -1, -1):
        for effect in effects:
            table[effect] = -1 if effect in table else index
        effects = [_step(e, 0) for e in effects]
    return table
