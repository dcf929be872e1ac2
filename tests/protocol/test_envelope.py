"""Mail envelopes: HPKE wrappers, seal/open, binding, padding rules, slots, hashes, vectors."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from p2ptransfer.errors import DecodeError, InputError, ProtocolError
from p2ptransfer.protocol import envelope as mail
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.prekey import Prekey, PrekeyId, SignedPrekey
from p2ptransfer.protocol.request import (
    PaymentRequest,
    RequestAnswerKind,
    sign_answer,
    sign_request,
)
from p2ptransfer.protocol.transfer import SIGNED_TRANSFER_SCHEMA
from tests.vectors.loader import load_json_vectors, unhex
from tests.vectors.make_mail_vectors import INPUTS, compute

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))
MALLORY = Identity(bytes(range(64, 96)))
KEM_PRIVATE = bytes(range(0x40, 0xA0))
PID = PrekeyId(b"prekey01")
NOW = 1_767_225_600_000
BODY = b"\x21signed transfer bytes"

VECTORS = load_json_vectors("mail_v1.json")
IDS = [v["name"] for v in VECTORS]


def bob_prekey(**changes: Any) -> Prekey:
    values: dict[str, Any] = {
        "owner": BOB.public.public_key,
        "prekey_id": PID,
        "kem_public": primitives.hpke_public_from_private(KEM_PRIVATE),
        "not_before": NOW,
        "not_after": NOW + 1,
    }
    values.update(changes)
    return Prekey(**values)


def sealed(kind: mail.MailKind = mail.MailKind.TRANSFER, body: bytes = BODY) -> mail.Envelope:
    return mail.seal(kind, body, ALICE.public.public_key, bob_prekey())


def open_as_bob(envelope: mail.Envelope, sender: Identity = ALICE) -> tuple[mail.MailKind, bytes]:
    return mail.open(envelope, KEM_PRIVATE, sender.public.public_key, BOB.public.public_key)


def raw_envelope(plaintext: bytes) -> mail.Envelope:
    """An envelope around any plaintext, sealed properly, to test what open refuses."""
    info = mail.mail_info(ALICE.public.public_key, BOB.public.public_key, PID)
    out = primitives.hpke_seal(bob_prekey().kem_public, plaintext, info)
    return mail.Envelope(PID, out[: primitives.HPKE_ENC_SIZE], out[primitives.HPKE_ENC_SIZE :])


# --- the HPKE wrappers -----------------------------------------------------------


def test_hpke_sizes_match_pyca() -> None:
    assert primitives.HPKE_ENC_SIZE == hpke.KEM.MLKEM768_X25519.enc_length() == 1120
    assert primitives.HPKE_PUBLIC_KEY_SIZE == 1216
    assert primitives.HPKE_PRIVATE_KEY_SIZE == 96
    public = primitives.hpke_public_from_private(KEM_PRIVATE)
    out = primitives.hpke_seal(public, b"abc", b"info")
    assert len(out) == 3 + primitives.HPKE_SEAL_OVERHEAD
    assert primitives.hpke_open(KEM_PRIVATE, out, b"info") == b"abc"


def test_hpke_key_bytes_are_pycas_component_bytes() -> None:
    """public = ML-KEM-768 key || X25519 key, each as pyca serialises it."""
    ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(KEM_PRIVATE[:64])
    xk = x25519.X25519PrivateKey.from_private_bytes(KEM_PRIVATE[64:])
    assert ml.private_bytes_raw() == KEM_PRIVATE[:64]
    expected = ml.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
    assert primitives.hpke_public_from_private(KEM_PRIVATE) == expected
    # pyca, called directly, opens what the wrapper sealed.
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    out = primitives.hpke_seal(expected, b"hello", b"ctx")
    assert suite.decrypt(out, hpke.MLKEM768X25519PrivateKey(ml, xk), info=b"ctx") == b"hello"


def test_hpke_seal_is_fresh_every_call() -> None:
    public = primitives.hpke_public_from_private(KEM_PRIVATE)
    assert primitives.hpke_seal(public, b"x", b"") != primitives.hpke_seal(public, b"x", b"")


def test_hpke_open_failures_are_protocol_errors() -> None:
    public = primitives.hpke_public_from_private(KEM_PRIVATE)
    out = primitives.hpke_seal(public, b"abc", b"info")
    other = bytes(96)
    for private, data, info in [
        (KEM_PRIVATE, out, b"other"),
        (other, out, b"info"),
        (KEM_PRIVATE, out[:-1] + bytes([out[-1] ^ 1]), b"info"),
        (KEM_PRIVATE, bytes([out[0] ^ 1]) + out[1:], b"info"),
        (KEM_PRIVATE, out[: primitives.HPKE_SEAL_OVERHEAD - 1], b"info"),
    ]:
        with pytest.raises(ProtocolError):
            primitives.hpke_open(private, data, info)


def test_hpke_refuses_unusable_keys() -> None:
    with pytest.raises(ValueError):
        primitives.hpke_check_public(b"\xff" * primitives.HPKE_PUBLIC_KEY_SIZE)
    with pytest.raises(ValueError):
        primitives.hpke_check_public(bytes(10))
    with pytest.raises(ValueError):
        primitives.hpke_public_from_private(bytes(95))
    with pytest.raises(ValueError):
        primitives.hpke_open(bytes(95), bytes(2000), b"")
    # An all-zero (low-order) X25519 half: nothing can be sealed to it.
    good = primitives.hpke_public_from_private(KEM_PRIVATE)
    with pytest.raises(ValueError, match="cannot seal"):
        primitives.hpke_seal(good[:-32] + bytes(32), b"x", b"")


# --- seal and open -----------------------------------------------------------------


def test_sizes() -> None:
    assert mail.MAIL_PLAINTEXT_SIZE == 768
    assert mail.MAIL_PLAINTEXT_SIZE % 256 == 0
    assert SIGNED_TRANSFER_SCHEMA.max_size <= mail.MAX_MAIL_BODY
    assert mail.MAX_ENVELOPE == mail.ENVELOPE_SCHEMA.max_size == 1928
    assert mail.ENVELOPE_SCHEMA.type_id == 0x92


@pytest.mark.parametrize("kind", list(mail.MailKind), ids=lambda k: k.name)
def test_round_trip_every_kind_at_one_size(kind: mail.MailKind) -> None:
    envelope = sealed(kind)
    wire = envelope.encode()
    assert len(wire) == mail.MAX_ENVELOPE
    assert mail.Envelope.decode(wire) == envelope
    assert envelope.prekey_id == PID
    assert open_as_bob(mail.Envelope.decode(wire)) == (kind, BODY)


def test_a_signed_request_and_an_answer_travel_unchanged() -> None:
    request = sign_request(
        ALICE,
        PaymentRequest(
            bytes(16), ALICE.address, BOB.address, 10**15, "KWD", "x" * 280, 0, 90 * 86_400_000
        ),
    )
    answer = sign_answer(BOB, request, RequestAnswerKind.DECLINED, 1)
    assert open_as_bob(sealed(mail.MailKind.REQUEST, request.encode())) == (
        mail.MailKind.REQUEST,
        request.encode(),
    )
    assert open_as_bob(sealed(mail.MailKind.REQUEST_ANSWER, answer.encode())) == (
        mail.MailKind.REQUEST_ANSWER,
        answer.encode(),
    )


def test_the_largest_signed_transfer_fits() -> None:
    body = b"\x21" * SIGNED_TRANSFER_SCHEMA.max_size
    assert open_as_bob(sealed(body=body)) == (mail.MailKind.TRANSFER, body)


def test_seal_is_fresh_and_hashes_differ() -> None:
    a, b = sealed(), sealed()
    assert a != b
    assert a.hash != b.hash
    assert a.hash == mail.envelope_hash(a.encode())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((mail.MailKind.TRANSFER, b""), "1 to"),
        ((mail.MailKind.RECEIPT, b"x" * 385), "1 to 384"),
        ((mail.MailKind.TRANSFER, b"x" * 641), "1 to 640"),
        ((mail.MailKind.REQUEST, b"x" * 641), "request in mail is 1 to 640"),
        ((mail.MailKind.REQUEST_ANSWER, b"x" * 385), "request_answer in mail is 1 to 384"),
        ((mail.MailKind.TRANSFER, bytearray(b"x")), "1 to"),
        ((9, b"x"), "MailKind"),
    ],
    ids=[
        "empty",
        "receipt-too-long",
        "transfer-too-long",
        "request-too-long",
        "answer-too-long",
        "not-bytes",
        "unknown-kind",
    ],
)
def test_seal_refuses_misuse(args: tuple[Any, bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mail.seal(args[0], args[1], ALICE.public.public_key, bob_prekey())


def test_seal_refuses_a_bad_sender_key_or_a_signed_prekey() -> None:
    with pytest.raises(ValueError, match="sender"):
        mail.seal(mail.MailKind.TRANSFER, BODY, bytes(31), bob_prekey())
    signed = SignedPrekey(bob_prekey(), bytes(64))
    with pytest.raises(ValueError, match="Prekey"):
        mail.seal(mail.MailKind.TRANSFER, BODY, ALICE.public.public_key, signed)  # type: ignore[arg-type]


def test_open_is_bound_to_sender_recipient_and_prekey_id() -> None:
    envelope = sealed()
    with pytest.raises(ProtocolError, match="does not open"):
        open_as_bob(envelope, sender=MALLORY)
    with pytest.raises(ProtocolError, match="does not open"):
        mail.open(envelope, KEM_PRIVATE, ALICE.public.public_key, MALLORY.public.public_key)
    with pytest.raises(ProtocolError, match="does not open"):
        open_as_bob(dataclasses.replace(envelope, prekey_id=PrekeyId(b"prekey02")))
    with pytest.raises(ProtocolError, match="does not open"):
        mail.open(envelope, bytes(96), ALICE.public.public_key, BOB.public.public_key)


@pytest.mark.parametrize("field", ["enc", "ciphertext"])
def test_open_refuses_a_flipped_byte(field: str) -> None:
    envelope = sealed()
    value = bytearray(getattr(envelope, field))
    value[len(value) // 2] ^= 0x80
    with pytest.raises(ProtocolError, match="does not open"):
        open_as_bob(dataclasses.replace(envelope, **{field: bytes(value)}))


def padded(kind: int, length: int, body: bytes, size: int = mail.MAIL_PLAINTEXT_SIZE) -> bytes:
    return (bytes([kind]) + length.to_bytes(2, "big") + body).ljust(size, b"\x00")


@pytest.mark.parametrize(
    ("plaintext", "message"),
    [
        (padded(5, 3, b"abc"), "unknown kind 5"),
        (padded(0, 3, b"abc"), "unknown kind 0"),
        (padded(1, 0, b""), "length 0"),
        (padded(2, 385, b"x" * 385), "length 385 is not valid for a receipt"),
        (padded(1, 641, b"x" * 641), "length 641"),
        (padded(1, 0xFFFF, b"abc"), "length 65535"),
        (padded(1, 3, b"abc")[:-1] + b"\x01", "padding is not all zero"),
        (padded(1, 3, b"abc\x00\x07"), "padding is not all zero"),
        (padded(1, 3, b"abc", size=767), "767 bytes, not 768"),
    ],
    ids=[
        "kind-5",
        "kind-0",
        "empty",
        "receipt-too-long",
        "transfer-too-long",
        "length-past-end",
        "last-padding-byte",
        "padding-after-body",
        "short-plaintext",
    ],
)
def test_open_refuses_a_malformed_plaintext(plaintext: bytes, message: str) -> None:
    if len(plaintext) != mail.MAIL_PLAINTEXT_SIZE:
        with pytest.raises(InputError):  # the envelope itself has a fixed size
            raw_envelope(plaintext)
        info = mail.mail_info(ALICE.public.public_key, BOB.public.public_key, PID)
        opened = primitives.hpke_open(
            KEM_PRIVATE, primitives.hpke_seal(bob_prekey().kem_public, plaintext, info), info
        )
        with pytest.raises(DecodeError, match=message):
            mail._unpad(opened)
        return
    with pytest.raises(DecodeError, match=message):
        open_as_bob(raw_envelope(plaintext))


def test_envelope_decode_is_strict() -> None:
    wire = sealed().encode()
    for bad in (wire[:-1], wire + b"\x00", b"\x91" + wire[1:], b""):
        with pytest.raises(DecodeError):
            mail.Envelope.decode(bad)
    with pytest.raises(InputError):
        mail.Envelope(PrekeyId(bytes(7)), bytes(1120), bytes(784))


# --- slots and hashes --------------------------------------------------------------


def test_slot_key_and_slot_are_keyed_hmacs() -> None:
    key = mail.slot_key(ALICE.seed)
    assert key != mail.slot_key(BOB.seed)
    tid = bytes(range(16))
    slot = mail.mail_slot(key, mail.MailKind.TRANSFER, tid)
    assert slot == hmac.new(key, b"\x01" + tid, hashlib.sha256).digest()[:16]
    assert len(slot) == mail.SLOT_SIZE
    # Not a public function of the id: another sender, another kind, another slot.
    assert slot != mail.mail_slot(mail.slot_key(BOB.seed), mail.MailKind.TRANSFER, tid)
    assert slot != mail.mail_slot(key, mail.MailKind.RECEIPT, tid)
    assert slot == mail.mail_slot(key, mail.MailKind.TRANSFER, tid)


def test_slot_refuses_misuse() -> None:
    with pytest.raises(ValueError):
        mail.slot_key(bytes(31))
    with pytest.raises(ValueError):
        mail.mail_slot(bytes(31), mail.MailKind.TRANSFER, bytes(16))
    with pytest.raises(ValueError):
        mail.mail_slot(bytes(32), mail.MailKind.TRANSFER, b"")
    with pytest.raises(ValueError):
        mail.envelope_hash(bytearray(3))  # type: ignore[arg-type]


def test_envelope_hash_has_its_own_context() -> None:
    data = sealed().encode()
    assert mail.envelope_hash(data) == hashlib.sha256(mail.ENVELOPE_HASH_CONTEXT + data).digest()
    assert mail.envelope_hash(data) != hashlib.sha256(data).digest()


# --- known-answer vectors (tests/vectors/mail_v1.json) -----------------------------


def test_vector_file_repeats_the_inputs() -> None:
    assert [{k: v[k] for k in inputs} for v, inputs in zip(VECTORS, INPUTS, strict=True)] == INPUTS


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_vector(vector: dict[str, Any]) -> None:
    assert compute(
        {k: vector[k] for k in INPUTS[IDS.index(vector["name"])]}, vector.get("envelope")
    ) == (vector)
    if vector["type"] == "prekey":
        signed = SignedPrekey.decode(unhex(vector["signed_prekey"]))
        signed.check_for(vector["owner_address"], vector["not_before"])
        assert signed.prekey.encode() == unhex(vector["prekey"])
        return
    envelope = mail.Envelope.decode(unhex(vector["envelope"]))
    kind, body = mail.open(
        envelope,
        unhex(vector["kem_private"]),
        unhex(vector["sender_public"]),
        unhex(vector["recipient_public"]),
    )
    assert (kind.name, body) == (vector["mail_kind"], unhex(vector["body"]))
    # pyca directly, with the info as the vector spells it, gives the exact plaintext.
    ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(unhex(vector["kem_private"])[:64])
    xk = x25519.X25519PrivateKey.from_private_bytes(unhex(vector["kem_private"])[64:])
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    plaintext = suite.decrypt(
        envelope.enc + envelope.ciphertext,
        hpke.MLKEM768X25519PrivateKey(ml, xk),
        info=unhex(vector["info"]),
    )
    assert plaintext == unhex(vector["plaintext"])
    assert unhex(vector["info"]) == (
        b"p2ptransfer-mail-v1\x00"
        + unhex(vector["sender_public"])
        + unhex(vector["recipient_public"])
        + unhex(vector["prekey_id"])
    )
