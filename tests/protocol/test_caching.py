"""The protocol core's speed-ups change no byte: each fast path equals the plain one.

Identities keep their signing key loaded, channels keep their AES-GCM keys
scheduled, memos take an ASCII fast path and frames are decoded once for
routing. Each test here pins one of those to the plain result, through the
public API. (Wire objects remembering their encoding is checked against exact
bytes in test_transfer_vectors.py.)
"""

from __future__ import annotations

import pytest

from p2ptransfer.errors import ChannelError, HandshakeError, MemoError
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.amounts import check_memo
from p2ptransfer.protocol.channel import DirectionKeys, SecureChannel, record_nonce
from p2ptransfer.protocol.identity import Identity, PublicIdentity
from p2ptransfer.protocol.session import Frame, FrameKind, Session, parse_frame

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))


# --- memo fast path -------------------------------------------------------------------


@pytest.mark.parametrize("memo", ["", "rent", "a b~!{}|\\", "x" * 280])
def test_printable_ascii_memos_come_back_unchanged(memo: str) -> None:
    assert check_memo(memo) == memo


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
    assert PublicIdentity.from_address(ALICE.address) == first
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
