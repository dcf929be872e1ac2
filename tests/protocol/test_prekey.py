"""Signed prekeys: validation, exact bytes, signatures, the sender's checks, selection."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from p2ptransfer.errors import DecodeError, InputError, PrekeyError, ProtocolError, SignatureError
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.encoding import Schema
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.prekey import (
    DEFAULT_CLOCK_SKEW_MS,
    KEM_PUBLIC_SIZE,
    MAX_PREKEY_VALIDITY_MS,
    PREKEY_ROTATE_MS,
    PREKEY_SCHEMA,
    PREKEY_SIGNATURE_CONTEXT,
    PREKEY_VALIDITY_MS,
    SIGNED_PREKEY_SCHEMA,
    Prekey,
    PrekeyId,
    SignedPrekey,
    select_prekey,
    sign_prekey,
)

ALICE = Identity(bytes(range(32)))
MALLORY = Identity(bytes(range(64, 96)))
KEM_PRIVATE = bytes(range(96))
KEM_PUBLIC = primitives.hpke_public_from_private(KEM_PRIVATE)
PID = PrekeyId(bytes(range(8)))
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
DAY = 86_400_000


def make(**changes: Any) -> Prekey:
    values: dict[str, Any] = {
        "owner": ALICE.public.public_key,
        "prekey_id": PID,
        "kem_public": KEM_PUBLIC,
        "not_before": NOW,
        "not_after": NOW + PREKEY_VALIDITY_MS,
    }
    values.update(changes)
    return Prekey(**values)


def signed(identity: Identity = ALICE, **changes: Any) -> SignedPrekey:
    return sign_prekey(identity, make(**changes))


def test_policy_constants() -> None:
    assert PREKEY_ROTATE_MS == 7 * DAY
    assert PREKEY_VALIDITY_MS == 14 * DAY
    assert MAX_PREKEY_VALIDITY_MS == 14 * DAY + 3_600_000
    assert KEM_PUBLIC_SIZE == 1216 == len(KEM_PUBLIC)
    assert PREKEY_SCHEMA.type_id == 0x90
    assert SIGNED_PREKEY_SCHEMA.type_id == 0x91


def test_exact_bytes_and_round_trip() -> None:
    prekey = make()
    encoded = prekey.encode()
    expected = (
        b"\x90"
        + b"\x01\x00\x00\x00\x20"
        + ALICE.public.public_key
        + b"\x02\x00\x00\x00\x08"
        + PID
        + b"\x03\x00\x00\x04\xc0"
        + KEM_PUBLIC
        + b"\x04\x00\x00\x00\x08"
        + NOW.to_bytes(8, "big")
        + b"\x05\x00\x00\x00\x08"
        + (NOW + PREKEY_VALIDITY_MS).to_bytes(8, "big")
    )
    assert encoded == expected
    assert len(encoded) == PREKEY_SCHEMA.max_size
    assert Prekey.decode(encoded) == prekey
    s = sign_prekey(ALICE, prekey)
    wire = s.encode()
    assert wire == (
        b"\x91"
        + b"\x01"
        + len(encoded).to_bytes(4, "big")
        + encoded
        + b"\x02\x00\x00\x00\x40"
        + s.signature
    )
    assert len(wire) == SIGNED_PREKEY_SCHEMA.max_size
    assert SignedPrekey.decode(wire) == s
    assert SignedPrekey.decode(wire).encode() == wire


def test_signature_is_deterministic_over_context_and_body() -> None:
    s = signed()
    assert s.signature == ALICE.sign(PREKEY_SIGNATURE_CONTEXT + make().encode())
    assert s.prekey_id == PID
    s.verify()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"owner": bytes(31)}, "owner"),
        ({"prekey_id": bytes(7)}, "prekey id"),
        ({"prekey_id": bytearray(8)}, "prekey id"),
        ({"kem_public": KEM_PUBLIC[:-1]}, "KEM public key"),
        ({"kem_public": b"\xff" * KEM_PUBLIC_SIZE}, "KEM public key"),
        ({"not_before": -1}, "not_before"),
        ({"not_after": 2**63}, "not_after"),
        ({"not_after": NOW}, "later than"),
        ({"not_after": NOW - 1}, "later than"),
    ],
    ids=[
        "short-owner",
        "short-id",
        "id-not-bytes",
        "short-kem",
        "kem-not-a-key",
        "negative-time",
        "time-too-big",
        "empty-window",
        "inverted-window",
    ],
)
def test_construction_refuses(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make(**changes)


def test_decode_refuses_a_structurally_bad_prekey_as_decode_error() -> None:
    bad = PREKEY_SCHEMA.encode(
        {
            "owner": ALICE.public.public_key,
            "prekey_id": PID,
            "kem_public": KEM_PUBLIC,
            "not_before": NOW,
            "not_after": NOW,
        }
    )
    with pytest.raises(DecodeError, match=r"prekey: .*later than"):
        Prekey.decode(bad)
    with pytest.raises(DecodeError):
        SignedPrekey.decode(signed().encode()[:-1])
    with pytest.raises(DecodeError, match="wrong message type"):
        SignedPrekey.decode(make().encode())
    assert issubclass(PrekeyError, ProtocolError)


def test_sign_refuses_another_identity_and_an_overlong_window() -> None:
    with pytest.raises(ValueError, match="owner"):
        sign_prekey(MALLORY, make())
    with pytest.raises(ValueError, match="at most"):
        sign_prekey(ALICE, make(not_after=NOW + MAX_PREKEY_VALIDITY_MS + 1))
    assert sign_prekey(ALICE, make(not_after=NOW + MAX_PREKEY_VALIDITY_MS)).prekey.validity_ms == (
        MAX_PREKEY_VALIDITY_MS
    )


def test_verify_refuses_a_changed_prekey_or_signature() -> None:
    s = signed()
    with pytest.raises(SignatureError, match=f"prekey {PID.hex()} is not signed by its owner"):
        dataclasses.replace(s, prekey=make(not_after=NOW + 1)).verify()
    sig = bytearray(s.signature)
    sig[5] ^= 1
    with pytest.raises(SignatureError):
        SignedPrekey(s.prekey, bytes(sig)).verify()


def test_check_for_accepts_a_current_prekey_of_the_address() -> None:
    s = signed()
    s.check_for(ALICE.address, NOW)
    s.check_for(ALICE.address, NOW + PREKEY_VALIDITY_MS - 1, skew_ms=0)
    s.check_for(ALICE.address, NOW - DEFAULT_CLOCK_SKEW_MS)


def test_check_for_refuses_another_owners_prekey_like_a_changed_pin() -> None:
    forged = signed(MALLORY, owner=MALLORY.public.public_key)
    with pytest.raises(PrekeyError, match="the relay served someone else's key") as info:
        forged.check_for(ALICE.address, NOW)
    assert info.value.reason == "wrong-owner"
    # Alice named as owner, Mallory's signature: also refused.
    stolen = SignedPrekey(make(), MALLORY.sign(make().signing_message()))
    with pytest.raises(PrekeyError, match=f"is not signed by {ALICE.address}") as info:
        stolen.check_for(ALICE.address, NOW)
    assert info.value.reason == "bad-signature"


@pytest.mark.parametrize(
    ("now", "skew", "reason"),
    [
        (NOW - 1, 0, "not-yet-valid"),
        (NOW - DEFAULT_CLOCK_SKEW_MS - 1, DEFAULT_CLOCK_SKEW_MS, "not-yet-valid"),
        (NOW + PREKEY_VALIDITY_MS, 0, "expired"),
        (NOW + PREKEY_VALIDITY_MS + DEFAULT_CLOCK_SKEW_MS, DEFAULT_CLOCK_SKEW_MS, "expired"),
    ],
    ids=["early", "early-beyond-skew", "at-expiry", "late-beyond-skew"],
)
def test_check_for_refuses_outside_the_window(now: int, skew: int, reason: str) -> None:
    with pytest.raises(PrekeyError) as info:
        signed().check_for(ALICE.address, now, skew)
    assert info.value.reason == reason


def test_check_for_refuses_a_window_too_long_even_when_validly_signed() -> None:
    prekey = make(not_after=NOW + MAX_PREKEY_VALIDITY_MS + 1)
    s = SignedPrekey(prekey, ALICE.sign(prekey.signing_message()))
    s.verify()
    with pytest.raises(PrekeyError, match="more than the") as info:
        s.check_for(ALICE.address, NOW)
    assert info.value.reason == "window-too-long"


def test_check_for_refuses_bad_arguments() -> None:
    with pytest.raises(InputError):
        signed().check_for("p2pt1notanaddress", NOW)
    with pytest.raises(ValueError, match="skew"):
        signed().check_for(ALICE.address, NOW, -1)


def test_select_takes_the_newest_valid_prekey() -> None:
    old = signed(prekey_id=PrekeyId(b"old-one!"))
    new = signed(
        prekey_id=PrekeyId(b"new-one!"),
        not_before=NOW + PREKEY_ROTATE_MS,
        not_after=NOW + PREKEY_ROTATE_MS + PREKEY_VALIDITY_MS,
    )
    assert select_prekey([old, new], ALICE.address, NOW + PREKEY_ROTATE_MS) == new
    # The newer one is not valid yet: the older one still is.
    assert select_prekey([new, old], ALICE.address, NOW + 1) == old


def test_select_reports_why_nothing_is_usable() -> None:
    with pytest.raises(PrekeyError, match="has published no prekey") as info:
        select_prekey([], ALICE.address, NOW)
    assert info.value.reason == "none"
    expired = signed()
    forged = signed(MALLORY, owner=MALLORY.public.public_key, not_before=NOW + 1)
    with pytest.raises(PrekeyError) as info:
        select_prekey([expired, forged], ALICE.address, NOW + 30 * DAY)
    assert info.value.reason == "wrong-owner"
    with pytest.raises(PrekeyError) as info:
        select_prekey([expired], ALICE.address, NOW + 30 * DAY)
    assert info.value.reason == "expired"


def test_schema_ids_are_registered_once() -> None:
    assert Schema.peek_type(signed().encode()) == 0x91
