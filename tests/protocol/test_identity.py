"""Addresses, fingerprints, safety numbers and the Identity objects.

The address is what a user types or pastes to name the person they pay, so
its checks are tested exhaustively where that is cheap: every single-character
substitution, every adjacent transposition, every case and length rule. The
bech32m machinery is checked against BIP-350's own valid strings (in
test_bech32m.py), so the known-answer addresses below do not merely repeat
what the code computes.
"""

from __future__ import annotations

import hashlib
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import AddressError, InputError, SignatureError
from p2ptransfer.protocol import bech32m
from p2ptransfer.protocol.identity import (
    ADDRESS_HRP,
    ADDRESS_LENGTH,
    Identity,
    PublicIdentity,
    decode_address,
    encode_address,
    safety_number,
)

# RFC 8032 §7.1 TEST 1, TEST 2 and TEST 3 seeds and public keys.
SEED_1 = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUB_1 = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
SEED_2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
PUB_2 = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
SEED_3 = bytes.fromhex("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7")
SIG_1_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

ADDRESS_1 = "p2pt1q6adfsqvzky9t042tlmfujeq88g8wzuhnm2nzxfd0qgdx3ac82ydq73hj65"
ADDRESS_2 = "p2pt1q84qp0slggwy44y4hp2n56xm7hjwfstx09mzfdrxqe42lz2h5vcxqj72vcg"
FINGERPRINT_1 = "dff8 effe 69bf 6a3f"
SAFETY_1_2 = "36855 19833 09252 18787 26866 65897"

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
PREFIX = ADDRESS_HRP + "1"


def _convertbits_8_to_5(data: bytes) -> list[int]:
    """BIP-173 reference ``convertbits(data, 8, 5, pad=True)``, written out independently."""
    bits = "".join(f"{b:08b}" for b in data)
    bits += "0" * (-len(bits) % 5)
    return [int(bits[i : i + 5], 2) for i in range(0, len(bits), 5)]


def _address_from_parts(hrp: str, data: list[int]) -> str:
    """A bech32m string for arbitrary hrp and 5-bit data (bech32m itself: test_bech32m.py)."""
    return bech32m.encode(hrp, data)


# The address of PUB_1 with a BIP-173 bech32 checksum (constant 1) instead of bech32m's.
_BECH32_ADDRESS_1 = "p2pt1q6adfsqvzky9t042tlmfujeq88g8wzuhnm2nzxfd0qgdx3ac82ydqtd87lk"


# --- encoding and known answers ------------------------------------------------


def test_address_known_answers() -> None:
    assert encode_address(PUB_1) == ADDRESS_1
    assert encode_address(PUB_2) == ADDRESS_2
    assert Identity(SEED_1).address == ADDRESS_1
    assert len(ADDRESS_1) == ADDRESS_LENGTH == 64


def test_address_layout_is_hrp_version_key_checksum() -> None:
    data = [CHARSET.index(c) for c in ADDRESS_1[len(PREFIX) :]]
    assert ADDRESS_1.startswith("p2pt1q")  # "q" is version 0
    assert data[0] == 0
    assert data[1:-6] == _convertbits_8_to_5(PUB_1)
    assert _address_from_parts("p2pt", data[:-6]) == ADDRESS_1


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32))
def test_address_round_trip(public_key: bytes) -> None:
    address = encode_address(public_key)
    assert len(address) == ADDRESS_LENGTH
    assert decode_address(address) == public_key
    assert decode_address(address.upper()) == public_key
    assert PublicIdentity.from_address(address) == PublicIdentity(public_key)


@pytest.mark.parametrize("length", [0, 31, 33], ids=lambda n: f"len-{n}")
def test_encode_address_refuses_wrong_key_length(length: int) -> None:
    with pytest.raises(ValueError, match=r"^public key must be 32 bytes$"):
        encode_address(b"\x01" * length)


# --- every mistyped address is refused ---------------------------------------


def test_every_single_character_substitution_is_detected_and_located() -> None:
    """bech32m detects any error in up to 4 characters: try all 59 x 31 of them.

    A single mistyped character is the common case, and bech32m can tell which
    one it is: the message points at it (positions count from 1).
    """
    tried = 0
    for pos in range(len(PREFIX), ADDRESS_LENGTH):
        for c in CHARSET:
            if c == ADDRESS_1[pos]:
                continue
            typo = ADDRESS_1[:pos] + c + ADDRESS_1[pos + 1 :]
            with pytest.raises(AddressError) as info:
                decode_address(typo)
            assert str(info.value) == (
                f"address checksum does not match: character {c!r} at position {pos + 1}"
                " is probably mistyped"
            )
            tried += 1
    assert tried == (ADDRESS_LENGTH - len(PREFIX)) * 31


def test_every_substitution_in_the_prefix_is_detected() -> None:
    for pos in range(len(PREFIX)):
        for c in CHARSET + "1bio":
            if c == ADDRESS_1[pos]:
                continue
            with pytest.raises(AddressError):
                decode_address(ADDRESS_1[:pos] + c + ADDRESS_1[pos + 1 :])


def test_every_adjacent_transposition_is_detected() -> None:
    for pos in range(len(PREFIX), ADDRESS_LENGTH - 1):
        a, b = ADDRESS_1[pos], ADDRESS_1[pos + 1]
        if a == b:
            continue
        swapped = ADDRESS_1[:pos] + b + a + ADDRESS_1[pos + 2 :]
        with pytest.raises(AddressError) as info:
            decode_address(swapped)
        assert str(info.value) == "address checksum does not match: a character is mistyped"


def test_random_errors_in_two_to_four_characters_are_detected() -> None:
    rng = random.Random(0x9E3779B9)  # fixed seed: the same 600 typos every run
    for _ in range(600):
        chars = list(ADDRESS_1)
        for pos in rng.sample(range(len(PREFIX), ADDRESS_LENGTH), rng.randint(2, 4)):
            chars[pos] = rng.choice(CHARSET.replace(chars[pos], ""))
        with pytest.raises(AddressError):
            decode_address("".join(chars))


# --- the rules, one by one, with their messages --------------------------------

_KEY_DATA = [0, *_convertbits_8_to_5(PUB_1)]
_PADDED = [*_KEY_DATA[:-1], _KEY_DATA[-1] | 1]  # a padding bit set in the last group

REJECTED: list[tuple[str, object, str]] = [
    ("not-text", ADDRESS_1.encode(), "address must be text"),
    ("empty", "", "an address has 64 characters, this one has 0"),
    ("truncated", ADDRESS_1[:-1], "an address has 64 characters, this one has 63"),
    ("extended", ADDRESS_1 + "q", "an address has 64 characters, this one has 65"),
    ("prefix-only", PREFIX, "an address has 64 characters, this one has 5"),
    (
        "inner-space",
        ADDRESS_1[:30] + " " + ADDRESS_1[30:],
        "an address has 64 characters, this one has 65",
    ),
    (
        "dropped-middle-char",
        ADDRESS_1[:20] + ADDRESS_1[21:],
        "an address has 64 characters, this one has 63",
    ),
    ("mixed-case", ADDRESS_1[:10] + ADDRESS_1[10:].upper(), "address mixes upper and lower case"),
    ("one-upper", "P" + ADDRESS_1[1:], "address mixes upper and lower case"),
    (
        "kelvin-sign",
        ADDRESS_1.upper().replace("D", "\u212a", 1),
        "address contains a character that is not ASCII",
    ),
    (
        "cyrillic-a",
        ADDRESS_1.replace("a", "\u0430", 1),
        "address contains a character that is not ASCII",
    ),
    (
        "wrong-hrp",
        _address_from_parts("p2pu", _KEY_DATA),
        "address must start with p2pt1",
    ),
    (
        "wrong-hrp-upper",
        _address_from_parts("p2pu", _KEY_DATA).upper(),
        "address must start with p2pt1",
    ),
    ("no-separator", "p2ptq" + ADDRESS_1[5:], "address must start with p2pt1"),
    (
        "one-for-l",
        ADDRESS_1[:22] + "1" + ADDRESS_1[23:],
        "character '1' at position 23 is not used in addresses (did you mean 'l'?)",
    ),
    (
        "capital-i-for-l",
        ADDRESS_1[:22] + "I" + ADDRESS_1[23:],
        "character 'I' at position 23 is not used in addresses (did you mean 'l'?)",
    ),
    (
        "capital-o-for-zero",
        ADDRESS_1[:18] + "O" + ADDRESS_1[19:],
        "character 'O' at position 19 is not used in addresses (did you mean '0'?)",
    ),
    (
        "o-for-zero-upper-case",
        (ADDRESS_1[:45] + "o" + ADDRESS_1[46:]).upper(),
        "character 'O' at position 46 is not used in addresses (did you mean '0'?)",
    ),
    (
        "b-for-eight-upper-case",
        (ADDRESS_1[:29] + "b" + ADDRESS_1[30:]).upper(),
        "character 'B' at position 30 is not used in addresses (did you mean '8'?)",
    ),
    (
        "char-b",
        ADDRESS_1[:40] + "b" + ADDRESS_1[41:],
        "character 'b' at position 41 is not used in addresses",
    ),
    (
        "char-o",
        ADDRESS_1[:40] + "o" + ADDRESS_1[41:],
        "character 'o' at position 41 is not used in addresses (did you mean '0'?)",
    ),
    (
        "char-i",
        ADDRESS_1[:40] + "i" + ADDRESS_1[41:],
        "character 'i' at position 41 is not used in addresses (did you mean 'l'?)",
    ),
    (
        "char-dash",
        ADDRESS_1[:40] + "-" + ADDRESS_1[41:],
        "character '-' at position 41 is not used in addresses",
    ),
    (
        "last-char",
        ADDRESS_1[:-1] + "q",
        "address checksum does not match: character 'q' at position 64 is probably mistyped",
    ),
    (
        "last-char-upper-case",
        (ADDRESS_1[:-1] + "q").upper(),
        "address checksum does not match: character 'Q' at position 64 is probably mistyped",
    ),
    (
        "two-chars",
        ADDRESS_1[:10] + "zz" + ADDRESS_1[12:],
        "address checksum does not match: a character is mistyped",
    ),
    (
        "bech32-not-bech32m",
        _BECH32_ADDRESS_1,
        "address checksum does not match: a character is mistyped",
    ),
    (
        "version-1",
        _address_from_parts("p2pt", [1, *_KEY_DATA[1:]]),
        "unsupported address version 1",
    ),
    (
        "version-31",
        _address_from_parts("p2pt", [31, *_KEY_DATA[1:]]),
        "unsupported address version 31",
    ),
    ("padding-bits", _address_from_parts("p2pt", _PADDED), "address has invalid padding bits"),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in REJECTED], ids=[n for n, _, _ in REJECTED]
)
def test_decode_address_rejects(text: object, message: str) -> None:
    with pytest.raises(AddressError) as info:
        decode_address(text)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert isinstance(info.value, InputError)
    with pytest.raises(AddressError):
        PublicIdentity.from_address(text)  # type: ignore[arg-type]


def test_wrong_hrp_case_still_has_a_valid_checksum() -> None:
    """The wrong-hrp cases are refused for their hrp, not by accident of the checksum."""
    other = _address_from_parts("p2pu", _KEY_DATA)
    assert bech32m.decode(other, "p2pu") == _KEY_DATA


@pytest.mark.parametrize(
    "text",
    [ADDRESS_1, ADDRESS_1.upper(), f"  {ADDRESS_1}\n", f"\t{ADDRESS_1.upper()} "],
    ids=["lower", "upper", "surrounding-whitespace", "upper-with-whitespace"],
)
def test_accepted_spellings(text: str) -> None:
    assert decode_address(text) == PUB_1


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_random_text_only_raises_address_error(text: str) -> None:
    try:
        key = decode_address(text)
    except AddressError:
        return
    assert encode_address(key) == text.strip().lower()


@settings(max_examples=200)
@given(st.text(alphabet=CHARSET + CHARSET.upper() + "1bio", min_size=59, max_size=59))
def test_random_address_shaped_text_only_raises_address_error(data: str) -> None:
    text = PREFIX + data
    try:
        key = decode_address(text)
    except AddressError:
        return
    assert encode_address(key) == text.lower()


# --- fingerprints and safety numbers --------------------------------------------


def test_fingerprint_format_and_known_answer() -> None:
    public = PublicIdentity(PUB_1)
    assert public.fingerprint == FINGERPRINT_1
    digest = hashlib.sha256(b"p2ptransfer-fingerprint-v1\x00" + PUB_1).hexdigest()
    assert public.fingerprint.replace(" ", "") == digest[:16]
    assert re.fullmatch(r"[0-9a-f]{4}( [0-9a-f]{4}){3}", public.fingerprint)
    assert PublicIdentity(PUB_2).fingerprint != public.fingerprint


def _reference_safety_number(a: bytes, b: bytes) -> str:
    digest = hashlib.sha512(b"p2ptransfer-safety-number-v1\x00" + min(a, b) + max(a, b)).digest()
    return " ".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


def test_safety_number_known_answer_and_symmetry() -> None:
    one, two = PublicIdentity(PUB_1), PublicIdentity(PUB_2)
    assert safety_number(one, two) == SAFETY_1_2
    assert safety_number(two, one) == SAFETY_1_2
    assert _reference_safety_number(PUB_1, PUB_2) == SAFETY_1_2


def test_safety_number_differs_for_different_pairs() -> None:
    one, two = PublicIdentity(PUB_1), PublicIdentity(PUB_2)
    three = Identity(SEED_3).public
    numbers = {
        safety_number(one, two),
        safety_number(one, three),
        safety_number(two, three),
        safety_number(one, one),
    }
    assert len(numbers) == 4


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_safety_number_is_symmetric_and_readable(a: bytes, b: bytes) -> None:
    pa, pb = PublicIdentity(a), PublicIdentity(b)
    number = safety_number(pa, pb)
    assert number == safety_number(pb, pa) == _reference_safety_number(a, b)
    assert re.fullmatch(r"\d{5}( \d{5}){5}", number)


# --- Identity and PublicIdentity -------------------------------------------------


def test_identity_known_answers() -> None:
    identity = Identity(SEED_1)
    assert identity.public.public_key == PUB_1
    assert identity.public == PublicIdentity(PUB_1)
    assert identity.seed == SEED_1
    assert identity.sign(b"") == SIG_1_EMPTY


def test_sign_and_verify() -> None:
    identity = Identity(SEED_2)
    signature = identity.sign(b"transfer 10.00 EUR")
    identity.public.verify(signature, b"transfer 10.00 EUR")  # no exception: valid
    with pytest.raises(SignatureError, match=r"^signature does not verify$"):
        identity.public.verify(signature, b"transfer 11.00 EUR")
    with pytest.raises(SignatureError, match=r"^signature does not verify$"):
        PublicIdentity(PUB_1).verify(signature, b"transfer 10.00 EUR")
    with pytest.raises(SignatureError, match=r"^malformed Ed25519 key or signature$"):
        identity.public.verify(signature[:-1], b"transfer 10.00 EUR")


def test_small_order_key_in_a_valid_address_cannot_authenticate() -> None:
    """The identity point is a well-formed address, but nobody can prove to own it."""
    identity_point = bytes.fromhex("01" + "00" * 31)
    weak = PublicIdentity.from_address(encode_address(identity_point))
    trivial_forgery = identity_point + bytes(32)
    with pytest.raises(SignatureError, match=r"^Ed25519 public key has small order$"):
        weak.verify(trivial_forgery, b"responder" + bytes(32))


def test_identity_repr_and_str_never_show_the_seed() -> None:
    identity = Identity(SEED_1)
    for text in (repr(identity), str(identity), f"{identity}", f"{identity!r}", repr([identity])):
        assert text == f"Identity(address={ADDRESS_1!r})" or ADDRESS_1 in text
        assert SEED_1.hex() not in text.lower()
        assert repr(SEED_1)[2:-1] not in text
        assert SEED_1.hex()[:16] not in text.lower()
    assert repr(identity) == f"Identity(address={ADDRESS_1!r})"
    assert not hasattr(identity, "__dict__")  # no vars() path to the seed


def test_identity_equality_and_hash_follow_the_public_key() -> None:
    assert Identity(SEED_1) == Identity(SEED_1)
    assert Identity(SEED_1) != Identity(SEED_2)
    assert Identity(SEED_1) != PublicIdentity(PUB_1)
    assert len({Identity(SEED_1), Identity(SEED_1), Identity(SEED_2)}) == 2
    assert len({PublicIdentity(PUB_1), PublicIdentity(PUB_1)}) == 1


def test_public_identity_str_is_its_address() -> None:
    assert str(PublicIdentity(PUB_1)) == ADDRESS_1
    assert PublicIdentity(PUB_1).address == ADDRESS_1


@pytest.mark.parametrize(
    "seed",
    [b"", SEED_1[:31], SEED_1 + b"\x00", bytearray(SEED_1), SEED_1.hex()],
    ids=["empty", "31-bytes", "33-bytes", "bytearray", "hex-text"],
)
def test_identity_seed_validation(seed: object) -> None:
    with pytest.raises(ValueError, match=r"^an Ed25519 seed is 32 bytes$") as info:
        Identity(seed)  # type: ignore[arg-type]
    assert SEED_1.hex() not in str(info.value)


@pytest.mark.parametrize(
    "key",
    [b"", PUB_1[:31], PUB_1 + b"\x00", bytearray(PUB_1), PUB_1.hex()],
    ids=["empty", "31-bytes", "33-bytes", "bytearray", "hex-text"],
)
def test_public_identity_validation(key: object) -> None:
    with pytest.raises(ValueError, match=r"^an Ed25519 public key is 32 bytes$"):
        PublicIdentity(key)  # type: ignore[arg-type]
