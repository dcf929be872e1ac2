"""The protocol core's speed-ups change no byte: each cached path equals the plain one.

Wire objects remember their canonical encoding, identities keep their signing
key loaded, channels keep their AES-GCM keys scheduled, and frames are decoded
once for routing. Each test here pins one of those to the uncached result.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from types import MappingProxyType

import pytest

from p2ptransfer.errors import ChannelError, HandshakeError, MemoError
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.amounts import check_memo
from p2ptransfer.protocol.channel import DirectionKeys, SecureChannel, record_nonce
from p2ptransfer.protocol.identity import Identity, PublicIdentity
from p2ptransfer.protocol.session import Frame, FrameKind, Session, parse_frame
from p2ptransfer.protocol.transfer import (
    RECEIPT_SCHEMA,
    SIGNED_RECEIPT_SCHEMA,
    SIGNED_TRANSFER_SCHEMA,
    TRANSFER_DIGEST_CONTEXT,
    TRANSFER_SCHEMA,
    Receipt,
    SignedReceipt,
    SignedTransfer,
    Transfer,
    TransferId,
    accept,
    sign_transfer,
)

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))
CREATED = 1_767_225_600_000


def _transfer(**changes: object) -> Transfer:
    values: dict[str, object] = {
        "id": TransferId(bytes(range(16))),
        "sender": ALICE.address,
        "recipient": BOB.address,
        "amount": 1250,
        "currency": "EUR",
        "memo": "rent",
        "created_at": CREATED,
    }
    values.update(changes)
    return Transfer(**values)  # type: ignore[arg-type]


def _fresh_transfer_bytes(t: Transfer) -> bytes:
    return TRANSFER_SCHEMA.encode(
        {
            "id": t.id,
            "sender": PublicIdentity.from_address(t.sender).public_key,
            "recipient": PublicIdentity.from_address(t.recipient).public_key,
            "amount": t.amount,
            "currency": t.currency,
            "memo": t.memo,
            "created_at": t.created_at,
        }
    )


# --- cached encodings -------------------------------------------------------------


def test_cached_transfer_encoding_equals_a_fresh_one_and_is_kept() -> None:
    t = _transfer()
    first = t.encode()
    assert first == _fresh_transfer_bytes(t)
    assert t.encode() is first  # computed once
    assert t.digest == primitives.sha256(TRANSFER_DIGEST_CONTEXT, first)
    assert t.digest is t.digest


@pytest.mark.parametrize(
    "change",
    [{"amount": 99}, {"memo": "other"}, {"sender": BOB.address, "recipient": ALICE.address}],
    ids=["amount", "memo", "parties"],
)
def test_replace_starts_without_the_old_encoding(change: dict[str, object]) -> None:
    t = _transfer()
    assert t.encode() and t.digest  # fill the caches
    changed = dataclasses.replace(t, **change)  # type: ignore[arg-type]
    assert changed.encode() != t.encode()
    assert changed.encode() == _fresh_transfer_bytes(changed)
    assert changed.digest != t.digest
    assert changed.sender_identity == PublicIdentity.from_address(changed.sender)
    assert changed.recipient_identity == PublicIdentity.from_address(changed.recipient)


def test_the_cache_is_not_part_of_equality_hash_or_repr() -> None:
    cached, plain = _transfer(), _transfer()
    cached.encode()
    assert cached == plain and hash(cached) == hash(plain)
    assert repr(cached) == repr(plain)
    assert "_encoded" not in repr(cached)


def test_copies_and_pickles_keep_equal_bytes() -> None:
    signed = sign_transfer(ALICE, _transfer())
    signed.encode()
    for clone in (copy.copy(signed), copy.deepcopy(signed), pickle.loads(pickle.dumps(signed))):
        assert clone == signed
        assert clone.encode() == signed.encode()
        assert SignedTransfer.decode(clone.encode()) == signed


def test_signed_transfer_and_receipts_cache_their_exact_bytes() -> None:
    signed = sign_transfer(ALICE, _transfer())
    wire = signed.encode()
    assert wire is signed.encode()
    assert wire == SIGNED_TRANSFER_SCHEMA.encode(
        {"transfer": _fresh_transfer_bytes(signed.transfer), "signature": signed.signature}
    )
    decoded = SignedTransfer.decode(wire)
    assert decoded == signed and decoded.encode() == wire
    decoded.verify()

    answer = accept(BOB, decoded, CREATED + 1)
    receipt = answer.receipt
    assert receipt.encode() is receipt.encode()
    assert receipt.encode() == RECEIPT_SCHEMA.encode(
        {
            "transfer_id": receipt.transfer_id,
            "transfer_digest": receipt.transfer_digest,
            "receiver": BOB.public.public_key,
            "status": int(receipt.status),
            "reason": int(receipt.reason),
            "decided_at": receipt.decided_at,
        }
    )
    assert answer.encode() == SIGNED_RECEIPT_SCHEMA.encode(
        {"receipt": receipt.encode(), "signature": answer.signature}
    )
    assert SignedReceipt.decode(answer.encode()) == answer
    answer.verify(signed)

    later = dataclasses.replace(receipt, decided_at=CREATED + 2)
    assert later.encode() != receipt.encode()
    assert Receipt.decode(later.encode()) == later


def test_identities_filled_at_construction_match_the_addresses() -> None:
    t = _transfer()
    assert "sender_identity" in t.__dict__ and "recipient_identity" in t.__dict__
    assert t.sender_identity == PublicIdentity.from_address(ALICE.address)
    assert t.recipient_identity.address == t.recipient


# --- memo fast path -------------------------------------------------------------------


@pytest.mark.parametrize("memo", ["", "rent", "a b~!{}|\\", "x" * 280])
def test_printable_ascii_memos_come_back_unchanged(memo: str) -> None:
    assert check_memo(memo) is memo


@pytest.mark.parametrize("char", [chr(c) for c in (*range(0x20), 0x7F)])
def test_every_ascii_control_character_is_still_refused(char: str) -> None:
    with pytest.raises(MemoError, match="forbidden character"):
        check_memo(f"pay{char}me")


# --- keys loaded once ------------------------------------------------------------------


def test_identity_signs_as_the_seed_function_does_and_hides_its_key() -> None:
    for message in (b"", b"m", bytes(1000)):
        assert ALICE.sign(message) == primitives.ed25519_sign(ALICE.seed, message)
    signer = primitives.Ed25519Signer(ALICE.seed)
    assert signer.public_key == primitives.ed25519_public_from_seed(ALICE.seed)
    assert ALICE.seed.hex() not in repr(signer) and ALICE.seed.hex() not in repr(ALICE)
    with pytest.raises(ValueError, match="seed must be 32 bytes"):
        primitives.Ed25519Signer(bytes(31))


def test_from_address_is_remembered_and_still_validates() -> None:
    first = PublicIdentity.from_address(ALICE.address)
    assert first == ALICE.public
    assert PublicIdentity.from_address(ALICE.address) is first  # immutable, safe to share
    assert PublicIdentity.from_address(ALICE.address.upper()) == first
    broken = ALICE.address[:-1] + ("q" if ALICE.address[-1] != "q" else "p")
    with pytest.raises(ValueError, match="checksum"):
        PublicIdentity.from_address(broken)


def test_aead_cipher_matches_the_one_shot_functions() -> None:
    key, nonce, aad = bytes(range(32)), bytes(range(12)), b"header"
    cipher = primitives.AeadCipher(key)
    for plaintext in (b"", b"x", bytes(100)):
        sealed = cipher.seal(nonce, plaintext, aad)
        assert sealed == primitives.aead_seal(key, nonce, plaintext, aad)
        assert cipher.open(nonce, sealed, aad) == plaintext
    with pytest.raises(ChannelError, match=r"^record authentication failed$"):
        cipher.open(nonce, sealed, aad + b"!")
    with pytest.raises(ChannelError, match="shorter than its authentication tag"):
        cipher.open(nonce, bytes(15), aad)
    with pytest.raises(ValueError, match="nonce must be 12 bytes"):
        cipher.seal(bytes(11), b"", aad)
    with pytest.raises(ValueError, match="nonce must be 12 bytes"):
        cipher.open(bytes(13), bytes(16), aad)
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        primitives.AeadCipher(bytes(16))
    assert key.hex() not in repr(cipher)


def test_x25519_ephemeral_matches_the_functions_and_refuses_low_order() -> None:
    mine, theirs = bytes(range(1, 33)), bytes(range(33, 65))
    eph = primitives.X25519Ephemeral(mine)
    assert eph.public == primitives.x25519_public_from_private(mine)
    their_public = primitives.x25519_public_from_private(theirs)
    assert eph.exchange(their_public) == primitives.x25519_shared_secret(mine, their_public)
    with pytest.raises(HandshakeError, match="low-order"):
        eph.exchange(bytes(32))
    with pytest.raises(HandshakeError, match="32 bytes"):
        eph.exchange(bytes(31))
    with pytest.raises(HandshakeError, match="32 bytes"):
        primitives.X25519Ephemeral(bytes(31))
    assert mine.hex() not in repr(eph)


# --- channel nonces ---------------------------------------------------------------


def test_channel_records_use_the_documented_nonces() -> None:
    send = DirectionKeys(bytes(range(32)), bytes(range(100, 112)))
    recv = DirectionKeys(bytes(range(1, 33)), bytes(range(12)))
    channel = SecureChannel(send, recv)
    for seq in range(3):
        record = channel.seal(0x11, b"payload")
        header = record[:14]
        expected = primitives.aead_seal(send.key, record_nonce(send.iv, seq), b"payload", header)
        assert record[14:] == expected
    for seq in (0, 1, 255, 256, 2**24 - 1):
        assert (int.from_bytes(send.iv, "big") ^ seq).to_bytes(12, "big") == record_nonce(
            send.iv, seq
        )


# --- schema encode on any mapping ------------------------------------------------------


def test_schema_encode_accepts_any_mapping() -> None:
    t = _transfer()
    values = {
        "id": t.id,
        "sender": ALICE.public.public_key,
        "recipient": BOB.public.public_key,
        "amount": t.amount,
        "currency": t.currency,
        "memo": t.memo,
        "created_at": t.created_at,
    }
    assert TRANSFER_SCHEMA.encode(MappingProxyType(values)) == t.encode()


# --- frames decoded once ----------------------------------------------------------------


def test_a_parsed_frame_feeds_a_session_like_its_bytes() -> None:
    tag = bytes(range(16))
    initiator = Session.initiate(
        ALICE, BOB.public, tag=tag, ephemeral_private=bytes(range(1, 33)), nonce=bytes(32)
    )
    responders = [
        Session.respond(BOB, tag=tag, ephemeral_private=bytes(range(2, 34))) for _ in range(2)
    ]
    (hello,) = initiator.data_to_send()
    frame = parse_frame(hello)
    assert frame == Frame(tag, FrameKind.HELLO, frame.body)
    responders[0].receive_frame(hello)
    responders[1].receive_frame(frame)
    assert responders[0].data_to_send() == responders[1].data_to_send()
