"""bech32m itself, against BIP-350's own test strings, for any prefix and length.

Addresses (``p2pt``) are tested in test_identity.py; this module checks the
generic encoder/decoder that addresses and payment-request codes share, so
the known answers come from the BIP, not from what the code computes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import AddressError, InputError
from p2ptransfer.protocol import bech32m

_LONG_HRP = "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber1"

# BIP-350 "valid bech32m strings", each with its human-readable prefix.
BIP350_VALID = [
    ("a", "A1LQFN3A"),
    ("a", "a1lqfn3a"),
    (_LONG_HRP, _LONG_HRP + "1sg7hg6"),
    ("abcdef", "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx"),
    ("1", "11" + "l" * 83 + "udsr8"),
    ("split", "split1checkupstagehandshakeupstreamerranterredcaperredlc445v"),
    ("?", "?1v759aa"),
]


@pytest.mark.parametrize(("hrp", "text"), BIP350_VALID, ids=[t[:12] for _, t in BIP350_VALID])
def test_bip350_valid_strings_decode_and_re_encode(hrp: str, text: str) -> None:
    words = bech32m.decode(text, hrp)
    assert bech32m.encode(hrp, words) == text.lower()


@pytest.mark.parametrize(
    ("hrp", "text"),
    [("a", "a12uel5l"), ("abcdef", "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw")],
    ids=["a", "abcdef"],
)
def test_bip173_bech32_strings_are_not_bech32m(hrp: str, text: str) -> None:
    """BIP-173 (bech32, constant 1) checksums must not pass as bech32m."""
    with pytest.raises(InputError, match=r"^code checksum does not match"):
        bech32m.decode(text, hrp)


def test_a_prefix_is_bound_into_the_checksum() -> None:
    text = bech32m.encode("p2ptreq", bech32m.to_words(b"request"))
    with pytest.raises(InputError, match=r"^code must start with p2pt1$"):
        bech32m.decode(text, "p2pt")
    assert bech32m.from_words(bech32m.decode(text, "p2ptreq")) == b"request"


def test_the_90_character_cap_and_lifting_it() -> None:
    payload = bytes(range(200))
    with pytest.raises(ValueError, match=r"^bech32m text would be 334 characters, over 90$"):
        bech32m.encode("p2ptreq", bech32m.to_words(payload))
    text = bech32m.encode("p2ptreq", bech32m.to_words(payload), max_length=None)
    assert len(text) == 334
    with pytest.raises(InputError) as info:
        bech32m.decode(text, "p2ptreq")
    assert str(info.value) == "code is too long: 334 characters, at most 90"
    words = bech32m.decode(text.upper(), "p2ptreq", max_length=None)
    assert bech32m.from_words(words) == payload


def test_errors_use_the_callers_noun_and_class() -> None:
    with pytest.raises(AddressError) as info:
        bech32m.decode("p2pt1", "p2pt", noun="address", error=AddressError)
    assert str(info.value) == "address is too short: 5 characters"


@pytest.mark.parametrize(
    ("hrp", "words", "message"),
    [
        ("", [], "invalid bech32m prefix ''"),
        ("P2PT", [], "invalid bech32m prefix 'P2PT'"),
        ("p2 pt", [], "invalid bech32m prefix 'p2 pt'"),
        ("p2pt", [32], "bech32m words are 5-bit values"),
        ("p2pt", [-1], "bech32m words are 5-bit values"),
    ],
    ids=["empty-prefix", "upper-prefix", "space-in-prefix", "word-32", "word-negative"],
)
def test_encode_refuses_our_own_misuse(hrp: str, words: list[int], message: str) -> None:
    with pytest.raises(ValueError) as info:
        bech32m.encode(hrp, words)
    assert str(info.value) == message
    assert not isinstance(info.value, InputError)


@settings(max_examples=100)
@given(st.binary(max_size=120))
def test_any_bytes_round_trip_without_a_cap(data: bytes) -> None:
    text = bech32m.encode("p2ptreq", bech32m.to_words(data), max_length=None)
    assert bech32m.from_words(bech32m.decode(text, "p2ptreq", max_length=None)) == data


# BIP-350 "invalid bech32m strings" that are invalid for a reason a reader can act on,
# each decoded under the prefix it was meant to have, with the sentence the user sees.
BIP350_INVALID = [
    ("q", "qyrz8wqd2c9m", "code must start with q1"),
    ("y", "y1b0jsk6g", "character 'b' at position 3 is not used in codes"),
    ("lt", "lt1igcx5c0", "character 'i' at position 4 is not used in codes (did you mean 'l'?)"),
    ("in", "in1muywd", "code is too short: 8 characters"),
    ("mm", "mm1crxm3i", "character 'i' at position 9 is not used in codes (did you mean 'l'?)"),
    ("au", "au1s5cgom", "character 'o' at position 8 is not used in codes (did you mean '0'?)"),
    ("m", "M1VUXWEZ", "code checksum does not match: a character is mistyped"),
    (
        _LONG_HRP.replace("83character", "84characters"),
        _LONG_HRP.replace("83character", "84characters") + "1d6pts4",
        "code is too long: 91 characters, at most 90",
    ),
    ("a", "a1lqfn3a\u212a", "code contains a character that is not ASCII"),
    ("a", "a1LQFN3a", "code mixes upper and lower case"),
]


@pytest.mark.parametrize(
    ("hrp", "text", "message"), BIP350_INVALID, ids=[t[:12] for _, t, _ in BIP350_INVALID]
)
def test_invalid_strings_say_what_is_wrong(hrp: str, text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        bech32m.decode(text, hrp)
    assert str(info.value) == message


def test_a_single_mistyped_character_is_located_in_any_bech32m_text() -> None:
    text = "split1checkupstagehandshakeupstreamerranterredcaperredlc445v"
    typo = text[:20] + "q" + text[21:]
    with pytest.raises(InputError) as info:
        bech32m.decode(typo, "split")
    assert str(info.value) == (
        "code checksum does not match: character 'q' at position 21 is probably mistyped"
    )


def test_errors_are_not_located_beyond_90_characters() -> None:
    """Past BIP-350's length the code's distance no longer makes a location reliable."""
    text = bech32m.encode("p2ptreq", bech32m.to_words(bytes(100)), max_length=None)
    typo = text[:30] + ("q" if text[30] != "q" else "p") + text[31:]
    with pytest.raises(InputError) as info:
        bech32m.decode(typo, "p2ptreq", max_length=None)
    assert str(info.value) == "code checksum does not match: a character is mistyped"
