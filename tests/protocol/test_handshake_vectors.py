"""Known-answer vectors for the handshake and the record layer (our own format, v1).

The vectors in tests/vectors/handshake_v1.json and record_v1.json pin every
byte: fixed seeds, ephemerals and nonce in; exact messages, transcript
hashes, keys and sealed records out. A change to the wire format or key
schedule makes these tests fail, which is the point: such a change needs a
new protocol version and a deliberate regeneration::

    P2PT_REGEN_VECTORS=1 .venv/bin/python -m pytest tests/protocol/test_handshake_vectors.py
    # or: .venv/bin/python tests/protocol/test_handshake_vectors.py

They are also the test data for an implementation in another language:
docs/protocol.md explains each intermediate value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.channel import DirectionKeys, SecureChannel, record_nonce
from p2ptransfer.protocol.handshake import (
    HANDSHAKE_INIT,
    HANDSHAKE_RESPONSE,
    Initiator,
    Responder,
    absorb,
    handshake_keys,
    initial_transcript,
    traffic_keys,
)
from p2ptransfer.protocol.identity import Identity

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
HANDSHAKE_FILE = VECTORS / "handshake_v1.json"
RECORD_FILE = VECTORS / "record_v1.json"
REGEN_ENV = "P2PT_REGEN_VECTORS"

# The inputs are the source of truth for regeneration; the files repeat them so
# they stand alone for other implementations.
HANDSHAKE_INPUTS: list[dict[str, str]] = [
    {
        "name": "empty-prologue",
        "initiator_seed": bytes(range(0x00, 0x20)).hex(),
        "responder_seed": bytes(range(0x20, 0x40)).hex(),
        "initiator_ephemeral": bytes(range(0x40, 0x60)).hex(),
        "responder_ephemeral": bytes(range(0x60, 0x80)).hex(),
        "nonce": bytes(range(0x80, 0xA0)).hex(),
        "prologue": "",
        "record_plaintext": b"hello, responder".hex(),
    },
    {
        "name": "with-prologue",
        "initiator_seed": "11" * 32,
        "responder_seed": "22" * 32,
        "initiator_ephemeral": "33" * 32,
        "responder_ephemeral": "44" * 32,
        "nonce": "55" * 32,
        "prologue": b"p2pt relay ws://127.0.0.1:8765".hex(),
        "record_plaintext": "",
    },
]

RECORD_INPUTS: dict[str, Any] = {
    "key": bytes(range(0xA0, 0xC0)).hex(),
    "iv": bytes(range(0xC0, 0xCC)).hex(),
    "other_direction_key": bytes(range(0xD0, 0xF0)).hex(),
    "other_direction_iv": bytes(range(0xF0, 0xFC)).hex(),
    "records": [
        {"record_type": 0x10, "plaintext": b"first record".hex()},
        {"record_type": 0x11, "plaintext": ""},
        {"record_type": 0x1F, "plaintext": bytes(range(256)).hex()},
    ],
}


def _h(data: str) -> bytes:
    return bytes.fromhex(data)


def compute_handshake(inputs: dict[str, str]) -> dict[str, str]:
    """Run both machines on fixed inputs; also recompute the intermediates for the docs."""
    alice, bob = Identity(_h(inputs["initiator_seed"])), Identity(_h(inputs["responder_seed"]))
    prologue = _h(inputs["prologue"])
    i = Initiator(
        alice,
        bob.public,
        ephemeral_private=_h(inputs["initiator_ephemeral"]),
        nonce=_h(inputs["nonce"]),
        prologue=prologue,
    )
    r = Responder(bob, ephemeral_private=_h(inputs["responder_ephemeral"]), prologue=prologue)
    msg1 = i.start()
    msg2 = r.receive(msg1)
    assert msg2 is not None
    msg3 = i.receive(msg2)
    assert r.receive(msg3) is None
    ri, rr = i.result, r.result
    assert ri.session_id == rr.session_id

    # Intermediates, recomputed from the documented formulas.
    e_i = HANDSHAKE_INIT.decode(msg1)["ephemeral"]
    e_r = HANDSHAKE_RESPONSE.decode(msg2)["ephemeral"]
    dh = primitives.x25519_shared_secret(_h(inputs["initiator_ephemeral"]), e_r)
    th0 = initial_transcript(prologue)
    th1 = absorb(th0, msg1)
    th2 = absorb(th1, e_r)
    hs = handshake_keys(th2, dh)
    th2_id = absorb(th2, bob.public.public_key)
    th3 = absorb(th2_id, msg2)
    th3_id = absorb(th3, alice.public.public_key)
    session_id = absorb(th3_id, msg3)
    assert session_id == ri.session_id
    i2r, r2i = traffic_keys(hs.secret, session_id)
    assert ri.channel._send == i2r == rr.channel._recv
    assert ri.channel._recv == r2i == rr.channel._send

    plaintext = _h(inputs["record_plaintext"])
    record = ri.channel.seal(0x10, plaintext)
    assert rr.channel.open(record) == (0x10, plaintext)
    return {
        **inputs,
        "initiator_identity": alice.public.public_key.hex(),
        "initiator_address": alice.address,
        "responder_identity": bob.public.public_key.hex(),
        "responder_address": bob.address,
        "initiator_ephemeral_public": e_i.hex(),
        "responder_ephemeral_public": e_r.hex(),
        "dh": dh.hex(),
        "th0": th0.hex(),
        "msg1": msg1.hex(),
        "th1": th1.hex(),
        "th2": th2.hex(),
        "handshake_secret": hs.secret.hex(),
        "hs_r2i_key": hs.r2i.hex(),
        "hs_i2r_key": hs.i2r.hex(),
        "th2_with_responder_identity": th2_id.hex(),
        "msg2": msg2.hex(),
        "th3": th3.hex(),
        "th3_with_initiator_identity": th3_id.hex(),
        "msg3": msg3.hex(),
        "session_id": session_id.hex(),
        "i2r_key": i2r.key.hex(),
        "i2r_iv": i2r.iv.hex(),
        "r2i_key": r2i.key.hex(),
        "r2i_iv": r2i.iv.hex(),
        "record_i2r_seq0_type16": record.hex(),
    }


def compute_records(inputs: dict[str, Any]) -> dict[str, Any]:
    send = DirectionKeys(_h(inputs["key"]), _h(inputs["iv"]))
    other = DirectionKeys(_h(inputs["other_direction_key"]), _h(inputs["other_direction_iv"]))
    sender, receiver = SecureChannel(send, other), SecureChannel(other, send)
    records = []
    for seq, item in enumerate(inputs["records"]):
        plaintext = _h(item["plaintext"])
        record = sender.seal(item["record_type"], plaintext)
        assert receiver.open(record) == (item["record_type"], plaintext)
        records.append(
            {
                **item,
                "seq": seq,
                "nonce": record_nonce(send.iv, seq).hex(),
                "record": record.hex(),
            }
        )
    return {**inputs, "records": records}


def _handshake_document() -> dict[str, Any]:
    return {
        "description": (
            "p2ptransfer handshake v1 (suite 1: X25519, Ed25519, AES-256-GCM, SHA-256) "
            "known-answer vectors; see docs/protocol.md. All values hex except addresses."
        ),
        "vectors": [compute_handshake(v) for v in HANDSHAKE_INPUTS],
    }


def _record_document() -> dict[str, Any]:
    return {
        "description": (
            "p2ptransfer record layer v1 known-answer vectors: consecutive records sealed "
            "from seq 0 under one direction's key and IV; see docs/protocol.md. All values hex."
        ),
        **compute_records(RECORD_INPUTS),
    }


def regenerate() -> None:
    """Rewrite both vector files from the inputs above (only for a deliberate format change)."""
    for path, document in (
        (HANDSHAKE_FILE, _handshake_document()),
        (RECORD_FILE, _record_document()),
    ):
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


@pytest.fixture(scope="module", autouse=True)
def _maybe_regenerate() -> None:
    if os.environ.get(REGEN_ENV) == "1":
        regenerate()


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _stored_handshakes() -> list[dict[str, str]]:
    return list(_load(HANDSHAKE_FILE)["vectors"])


@pytest.mark.parametrize(
    "index", range(len(HANDSHAKE_INPUTS)), ids=[v["name"] for v in HANDSHAKE_INPUTS]
)
def test_handshake_matches_stored_vector(index: int) -> None:
    stored = _stored_handshakes()[index]
    inputs = {k: stored[k] for k in HANDSHAKE_INPUTS[index]}
    assert inputs == HANDSHAKE_INPUTS[index], "stored inputs differ from the test's inputs"
    computed = compute_handshake(inputs)
    differing = sorted(k for k in stored if computed.get(k) != stored[k])
    assert not differing, f"{stored['name']}: values changed: {differing} (regenerate deliberately)"
    assert set(computed) == set(stored)


def test_record_layer_matches_stored_vector() -> None:
    stored = _load(RECORD_FILE)
    assert stored == _record_document()


def test_stored_records_open_with_an_independent_aead_call() -> None:
    """The stored bytes follow the documented rule, not just our own round trip."""
    stored = _load(RECORD_FILE)
    key, iv = _h(stored["key"]), _h(stored["iv"])
    for item in stored["records"]:
        record = _h(item["record"])
        seq = int.from_bytes(record[2:10], "big")
        assert seq == item["seq"]
        nonce = bytes(a ^ b for a, b in zip(seq.to_bytes(12, "big"), iv, strict=True))
        assert nonce.hex() == item["nonce"]
        plaintext = primitives.aead_open(key, nonce, record[14:], record[:14])
        assert plaintext.hex() == item["plaintext"]
        assert record[1] == item["record_type"]
        assert int.from_bytes(record[10:14], "big") == len(record) - 14


def _sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _expand(prk: bytes, label: bytes, size: int) -> bytes:
    # HKDF-Expand for size <= 32 is the first block: HMAC(prk, info || 0x01).
    return _hmac(prk, label + b"\x01")[:size]


def _field(message: bytes, offset: int, tag: int, size: int) -> tuple[bytes, int]:
    assert message[offset] == tag
    assert int.from_bytes(message[offset + 1 : offset + 5], "big") == size
    return message[offset + 5 : offset + 5 + size], offset + 5 + size


def _open_auth(key: bytes, sealed: bytes, th: bytes, identity: bytes, label: bytes) -> bytes:
    """Open msg2's or msg3's handshake-auth, check who signed TH; return TH with the identity."""
    inner = AESGCM(key).decrypt(bytes(12), sealed, th)
    assert inner[0] == 0x04
    public_key, pos = _field(inner, 1, 1, 32)
    signature, _ = _field(inner, pos, 2, 64)
    assert public_key == identity
    th_with_identity = _sha(th, public_key)
    Ed25519PublicKey.from_public_bytes(public_key).verify(signature, label + th_with_identity)
    return th_with_identity


@pytest.mark.parametrize(
    "index", range(len(HANDSHAKE_INPUTS)), ids=[v["name"] for v in HANDSHAKE_INPUTS]
)
def test_stored_handshake_follows_the_documented_formulas(index: int) -> None:
    """Recompute the vector the way docs/protocol.md tells another implementer to.

    Only pyca/cryptography, hashlib and hmac: none of the package's own code, so a
    mistake shared by the implementation and its own helpers still shows here.
    """
    v = {
        k: _h(x) if k not in ("name", "initiator_address", "responder_address") else b""
        for k, x in _stored_handshakes()[index].items()
    }
    msg1, msg2, msg3 = v["msg1"], v["msg2"], v["msg3"]

    assert msg1[0] == 0x01 and len(msg1) == 87
    version, pos = _field(msg1, 1, 1, 1)
    suite, pos = _field(msg1, pos, 2, 1)
    e_i, pos = _field(msg1, pos, 3, 32)
    nonce, pos = _field(msg1, pos, 4, 32)
    assert (version, suite, nonce, pos) == (b"\x01", b"\x01", v["nonce"], 87)
    e_i_private = X25519PrivateKey.from_private_bytes(v["initiator_ephemeral"])
    assert e_i == e_i_private.public_key().public_bytes_raw()

    assert msg2[0] == 0x02 and len(msg2) == 166
    e_r, pos = _field(msg2, 1, 1, 32)
    sealed2, pos = _field(msg2, pos, 2, 123)
    assert pos == 166
    dh = e_i_private.exchange(X25519PublicKey.from_public_bytes(e_r))
    assert dh == v["dh"]

    prologue = v["prologue"]
    th0 = _sha(b"p2ptransfer/1", b"\x00", b"\x01", len(prologue).to_bytes(4, "big"), prologue)
    th1 = _sha(th0, msg1)
    th2 = _sha(th1, e_r)
    hs = _hmac(th2, dh)
    hs_r2i = _expand(hs, b"p2ptransfer/1 hs r2i key", 32)
    hs_i2r = _expand(hs, b"p2ptransfer/1 hs i2r key", 32)
    assert (th0, th1, th2, hs) == (v["th0"], v["th1"], v["th2"], v["handshake_secret"])
    assert (hs_r2i, hs_i2r) == (v["hs_r2i_key"], v["hs_i2r_key"])

    th2_id = _open_auth(hs_r2i, sealed2, th2, v["responder_identity"], b"p2ptransfer responder")

    th3 = _sha(th2_id, msg2)
    assert msg3[0] == 0x03 and len(msg3) == 129
    sealed3, _ = _field(msg3, 1, 1, 123)
    th3_id = _open_auth(hs_i2r, sealed3, th3, v["initiator_identity"], b"p2ptransfer initiator")

    session_id = _sha(th3_id, msg3)
    assert session_id == v["session_id"]
    ms = _hmac(session_id, hs)
    for name, label, size in [
        ("i2r_key", b"p2ptransfer/1 i2r key", 32),
        ("i2r_iv", b"p2ptransfer/1 i2r iv", 12),
        ("r2i_key", b"p2ptransfer/1 r2i key", 32),
        ("r2i_iv", b"p2ptransfer/1 r2i iv", 12),
    ]:
        assert _expand(ms, label, size) == v[name], name

    record = v["record_i2r_seq0_type16"]
    assert record[:14] == bytes([1, 0x10]) + bytes(8) + (len(record) - 14).to_bytes(4, "big")
    plaintext = AESGCM(v["i2r_key"]).decrypt(v["i2r_iv"], record[14:], record[:14])
    assert plaintext == v["record_plaintext"]


def test_protocol_doc_quotes_the_current_vector() -> None:
    """docs/protocol.md shows vector values; keep them true when the vectors change."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text("utf-8")
    flat = "".join(doc.split())
    stored = _stored_handshakes()[0]
    for name in ("th0", "th1", "msg1", "session_id"):
        assert stored[name] in flat, name
    assert stored["initiator_address"] in doc


if __name__ == "__main__":
    regenerate()
    print(f"wrote {HANDSHAKE_FILE} and {RECORD_FILE}")
