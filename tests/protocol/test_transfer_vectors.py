"""Known-answer vectors for transfers and receipts (tests/vectors/transfer_v1.json).

Each vector gives the inputs as a user or peer gives them (seeds, id, amount,
currency and memo as typed, timestamps, the decision) and the exact bytes that
must come out: the transfer, its digest, the sender's signature, the signed
transfer, the receipt, the receiver's signature and the signed receipt. The
digest and both signatures are also recomputed here with hashlib and
pyca/cryptography directly, so the domain-separation strings of
docs/transfer.md are checked by code that is not ours.

A change to the format makes these fail on purpose: it needs a new protocol
version and a deliberate run of tests/vectors/make_transfer_vectors.py.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
from types import MappingProxyType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2ptransfer.protocol.identity import Identity, PublicIdentity
from p2ptransfer.protocol.receipt import (
    Receipt,
    ReceiptStatus,
    RejectReason,
    SignedReceipt,
    accept,
    reject,
)
from p2ptransfer.protocol.transfer import (
    TRANSFER_SCHEMA,
    SignedTransfer,
    Transfer,
    TransferId,
    sign_transfer,
)
from tests.vectors.loader import load_json_vectors, unhex
from tests.vectors.make_transfer_vectors import INPUTS

VECTORS = load_json_vectors("transfer_v1.json")
IDS = [v["name"] for v in VECTORS]


def _parties(v: dict[str, Any]) -> tuple[Identity, Identity]:
    return Identity(unhex(v["sender_seed"])), Identity(unhex(v["recipient_seed"]))


def _transfer(v: dict[str, Any]) -> Transfer:
    sender, recipient = _parties(v)
    return Transfer(
        id=TransferId(unhex(v["id"])),
        sender=sender.address,
        recipient=recipient.address,
        amount=v["amount"],
        currency=v["currency"],
        memo=v["memo"],
        created_at=v["created_at"],
    )


def _answer(v: dict[str, Any], signed: SignedTransfer) -> SignedReceipt:
    _, recipient = _parties(v)
    reason = RejectReason[v["decision"]]
    if reason is RejectReason.NONE:
        return accept(recipient, signed, v["decided_at"])
    return reject(recipient, signed, reason, v["decided_at"])


def _pyca_verify(public_hex: str, signature_hex: str, message: bytes) -> None:
    """Ed25519 verification by pyca/cryptography directly (InvalidSignature if it fails)."""
    Ed25519PublicKey.from_public_bytes(unhex(public_hex)).verify(unhex(signature_hex), message)


def test_the_file_holds_the_generators_inputs() -> None:
    assert [{k: v[k] for k in inputs} for v, inputs in zip(VECTORS, INPUTS, strict=True)] == INPUTS


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_identities(v: dict[str, Any]) -> None:
    sender, recipient = _parties(v)
    assert sender.public.public_key.hex() == v["sender_public"]
    assert recipient.public.public_key.hex() == v["recipient_public"]
    assert sender.address == v["sender_address"]
    assert recipient.address == v["recipient_address"]


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_transfer_bytes_digest_and_signature(v: dict[str, Any]) -> None:
    transfer = _transfer(v)
    body = unhex(v["transfer"])
    assert transfer.encode() == body
    assert transfer.encode() == body  # asking twice gives the same bytes
    assert transfer.digest.hex() == v["transfer_digest"]
    assert (
        hashlib.sha256(b"p2ptransfer-transfer-digest-v1\x00" + body).hexdigest()
        == (v["transfer_digest"])
    )

    signed = sign_transfer(_parties(v)[0], transfer)
    assert signed.signature.hex() == v["transfer_signature"]
    assert signed.encode() == unhex(v["signed_transfer"])
    _pyca_verify(v["sender_public"], v["transfer_signature"], b"p2ptransfer-transfer-v1\x00" + body)


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_transfer_decodes_to_the_normalised_inputs(v: dict[str, Any]) -> None:
    decoded = Transfer.decode(unhex(v["transfer"]))
    assert decoded == _transfer(v)
    assert decoded.currency == v["currency"].upper()
    assert decoded.sender == v["sender_address"]
    assert decoded.recipient == v["recipient_address"]
    assert decoded.sender_identity == PublicIdentity.from_address(v["sender_address"])
    assert decoded.recipient_identity.address == v["recipient_address"]
    assert decoded.encode() == unhex(v["transfer"])

    signed = SignedTransfer.decode(unhex(v["signed_transfer"]))
    assert signed.transfer == decoded
    assert signed.encode() == unhex(v["signed_transfer"])
    signed.verify()


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_receipt_bytes_and_signature(v: dict[str, Any]) -> None:
    answer = _answer(v, sign_transfer(_parties(v)[0], _transfer(v)))
    body = unhex(v["receipt"])
    assert answer.receipt.encode() == body
    assert answer.signature.hex() == v["receipt_signature"]
    assert answer.encode() == unhex(v["signed_receipt"])
    _pyca_verify(
        v["recipient_public"], v["receipt_signature"], b"p2ptransfer-receipt-v1\x00" + body
    )


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_receipt_decodes_and_verifies_against_its_transfer(v: dict[str, Any]) -> None:
    decoded = SignedReceipt.decode(unhex(v["signed_receipt"]))
    receipt = decoded.receipt
    assert receipt == Receipt.decode(unhex(v["receipt"]))
    assert receipt.transfer_id.hex() == v["id"]
    assert receipt.transfer_digest.hex() == v["transfer_digest"]
    assert receipt.receiver == v["recipient_address"]
    assert receipt.reason is RejectReason[v["decision"]]
    assert receipt.status is (
        ReceiptStatus.ACCEPTED if v["decision"] == "NONE" else ReceiptStatus.REJECTED
    )
    assert receipt.decided_at == v["decided_at"]
    assert decoded.encode() == unhex(v["signed_receipt"])
    decoded.verify(SignedTransfer.decode(unhex(v["signed_transfer"])))


# --- the same bytes however an object was made ----------------------------------------


def test_replace_gives_the_bytes_of_the_new_content() -> None:
    """An object made by dataclasses.replace encodes its own fields, not its origin's."""
    first, second = VECTORS[0], VECTORS[-1]
    original = _transfer(first)
    assert original.encode() == unhex(first["transfer"])  # encoded before the replace
    changed = dataclasses.replace(original, **dataclasses.asdict(_transfer(second)))
    assert changed.encode() == unhex(second["transfer"])
    assert changed.digest.hex() == second["transfer_digest"]
    assert changed.sender_identity.address == second["sender_address"]
    assert changed.recipient_identity.address == second["recipient_address"]

    receipt = _answer(first, sign_transfer(_parties(first)[0], original)).receipt
    later = dataclasses.replace(receipt, decided_at=receipt.decided_at + 1)
    assert later.encode() != unhex(first["receipt"])
    assert Receipt.decode(later.encode()) == later


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_copies_and_pickles_keep_the_bytes(v: dict[str, Any]) -> None:
    signed = sign_transfer(_parties(v)[0], _transfer(v))
    signed.encode()
    for clone in (copy.copy(signed), copy.deepcopy(signed), pickle.loads(pickle.dumps(signed))):
        assert clone == signed
        assert clone.encode() == unhex(v["signed_transfer"])


def test_equality_hash_and_repr_do_not_depend_on_what_was_computed() -> None:
    used, fresh = _transfer(VECTORS[0]), _transfer(VECTORS[0])
    used.encode()
    assert used.digest
    assert used == fresh and hash(used) == hash(fresh)
    assert repr(used) == repr(fresh)


def test_schema_encode_accepts_any_mapping() -> None:
    v = VECTORS[0]
    values = {
        "id": unhex(v["id"]),
        "sender": unhex(v["sender_public"]),
        "recipient": unhex(v["recipient_public"]),
        "amount": v["amount"],
        "currency": v["currency"],
        "memo": v["memo"],
        "created_at": v["created_at"],
    }
    assert TRANSFER_SCHEMA.encode(MappingProxyType(values)) == unhex(v["transfer"])
