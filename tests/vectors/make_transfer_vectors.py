"""Write transfer_v1.json: fixed inputs in, exact transfer and receipt bytes out.

Run once, and again only for a deliberate change of the transfer format (which
needs a new protocol version)::

    .venv/bin/python -m tests.vectors.make_transfer_vectors

The inputs below are the source of truth; the file repeats them so it stands
alone for another implementation. ``tests/protocol/test_transfer_vectors.py``
checks every value against the code and recomputes the digest and the
signatures with hashlib and pyca/cryptography directly.
"""

from __future__ import annotations

import json
from typing import Any

from p2ptransfer.protocol.amounts import MAX_AMOUNT_MINOR
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, accept, reject
from p2ptransfer.protocol.transfer import Transfer, TransferId, sign_transfer
from tests.vectors.loader import VECTORS_DIR

FILE = VECTORS_DIR / "transfer_v1.json"

_ALICE = bytes(range(0x00, 0x20)).hex()  # the seeds of handshake_v1.json
_BOB = bytes(range(0x20, 0x40)).hex()
_CREATED = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms

INPUTS: list[dict[str, Any]] = [
    {
        "name": "eur-accepted",
        "sender_seed": _ALICE,
        "recipient_seed": _BOB,
        "id": bytes(range(16)).hex(),
        "amount": 1250,
        "currency": "EUR",
        "memo": "Rent for M\u00e4rz \U0001f3e0",
        "created_at": _CREATED,
        "decision": "NONE",
        "decided_at": _CREATED + 1_000,
    },
    {
        "name": "jpy-empty-memo-unknown-sender",
        "sender_seed": _ALICE,
        "recipient_seed": _BOB,
        "id": bytes(range(16, 32)).hex(),
        "amount": 5000,
        "currency": "JPY",
        "memo": "",
        "created_at": _CREATED + 1,
        "decision": "UNKNOWN_SENDER",
        "decided_at": _CREATED + 2,
    },
    {
        "name": "kwd-maximum-over-limit",
        "sender_seed": _BOB,
        "recipient_seed": _ALICE,
        "id": "ff" * 16,
        "amount": MAX_AMOUNT_MINOR,
        "currency": "KWD",
        "memo": "x" * 280,
        "created_at": 2**63 - 2,
        "decision": "OVER_LIMIT",
        "decided_at": 2**63 - 1,
    },
    {
        # Typed as "eur" and with a decomposed e-acute: the bytes hold "EUR" and NFC.
        "name": "normalised-currency-and-memo",
        "sender_seed": _BOB,
        "recipient_seed": _ALICE,
        "id": "00" * 16,
        "amount": 1,
        "currency": "eur",
        "memo": "Cafe\u0301",
        "created_at": 0,
        "decision": "NONE",
        "decided_at": 0,
    },
]


def compute(inputs: dict[str, Any]) -> dict[str, Any]:
    """Every output value of one vector, hex-encoded, from its inputs."""
    sender = Identity(bytes.fromhex(inputs["sender_seed"]))
    recipient = Identity(bytes.fromhex(inputs["recipient_seed"]))
    transfer = Transfer(
        id=TransferId(bytes.fromhex(inputs["id"])),
        sender=sender.address,
        recipient=recipient.address,
        amount=inputs["amount"],
        currency=inputs["currency"],
        memo=inputs["memo"],
        created_at=inputs["created_at"],
    )
    signed = sign_transfer(sender, transfer)
    reason = RejectReason[inputs["decision"]]
    if reason is RejectReason.NONE:
        answer = accept(recipient, signed, inputs["decided_at"])
    else:
        answer = reject(recipient, signed, reason, inputs["decided_at"])
    return {
        **inputs,
        "sender_public": sender.public.public_key.hex(),
        "sender_address": sender.address,
        "recipient_public": recipient.public.public_key.hex(),
        "recipient_address": recipient.address,
        "transfer": transfer.encode().hex(),
        "transfer_digest": transfer.digest.hex(),
        "transfer_signature": signed.signature.hex(),
        "signed_transfer": signed.encode().hex(),
        "receipt": answer.receipt.encode().hex(),
        "receipt_signature": answer.signature.hex(),
        "signed_receipt": answer.encode().hex(),
    }


def document() -> dict[str, Any]:
    return {
        "description": (
            "p2ptransfer transfer and receipt v1 known-answer vectors; see docs/transfer.md. "
            "Inputs as a user or peer gives them (seeds, ids and outputs hex; amount in minor "
            "units; decision 'NONE' accepts, any other reject reason rejects)."
        ),
        "vectors": [compute(v) for v in INPUTS],
    }


if __name__ == "__main__":
    FILE.write_text(json.dumps(document(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {FILE}")
