"""Write request_v1.json: fixed inputs in, exact payment request, answer and v2 transfer bytes out.

Run once, and again only for a deliberate change of the request format (which
needs a new protocol version)::

    .venv/bin/python -m tests.vectors.make_request_vectors

The inputs below are the source of truth; the file repeats them so it stands
alone for another implementation. ``tests/protocol/test_request_vectors.py``
checks every value against the code and recomputes the digests and the
signatures with hashlib and pyca/cryptography directly.
"""

from __future__ import annotations

import json
from typing import Any

from p2ptransfer.protocol.amounts import MAX_AMOUNT_MINOR
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.request import (
    PaymentRequest,
    RequestAnswerKind,
    RequestState,
    check_payment,
    request_code,
    sign_answer,
    sign_request,
)
from p2ptransfer.protocol.transfer import Transfer, TransferId, sign_transfer
from tests.vectors.loader import VECTORS_DIR

FILE = VECTORS_DIR / "request_v1.json"

_ALICE = bytes(range(0x00, 0x20)).hex()  # the seeds of handshake_v1.json
_BOB = bytes(range(0x20, 0x40)).hex()
_CREATED = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
_DAY = 24 * 3600 * 1000

INPUTS: list[dict[str, Any]] = [
    {
        "name": "eur-declined-paid-in-time",
        "payee_seed": _ALICE,
        "payer_seed": _BOB,
        "id": bytes(range(0x40, 0x50)).hex(),
        "amount": 1250,
        "currency": "EUR",
        "memo": "Dinner \U0001f35d",
        "created_at": _CREATED,
        "expires_at": _CREATED + _DAY,
        "answer_kind": "DECLINED",
        "answer_at": _CREATED + 60_000,
        "transfer_id": bytes(range(16)).hex(),
        "transfer_memo": "for dinner",
        "transfer_created_at": _CREATED + 1_000,
        "state": "OPEN",
        "now": _CREATED + _DAY - 1,
        "check": None,
    },
    {
        "name": "jpy-cancelled-paid-at-expiry",
        "payee_seed": _BOB,
        "payer_seed": _ALICE,
        "id": "00" * 16,
        "amount": 5000,
        "currency": "JPY",
        "memo": "",
        "created_at": 0,
        "expires_at": 90_000,
        "answer_kind": "CANCELLED",
        "answer_at": 1,
        "transfer_id": "ff" * 16,
        "transfer_memo": "",
        "transfer_created_at": 2,
        "state": "OPEN",
        "now": 90_000,
        "check": "REQUEST_EXPIRED",
    },
    {
        # Typed as "kwd", the longest memo and window: the largest request and code.
        "name": "kwd-largest-90-days-already-paid",
        "payee_seed": _ALICE,
        "payer_seed": _BOB,
        "id": "ff" * 16,
        "amount": MAX_AMOUNT_MINOR,
        "currency": "kwd",
        "memo": "x" * 280,
        "created_at": 2**63 - 1 - 90 * _DAY,
        "expires_at": 2**63 - 1,
        "answer_kind": "DECLINED",
        "answer_at": 2**63 - 1,
        "transfer_id": "ee" * 16,
        "transfer_memo": "y" * 280,
        "transfer_created_at": 2**63 - 1,
        "state": "PAID",
        "now": 2**63 - 2,
        "check": "REQUEST_PAID",
    },
]


def compute(inputs: dict[str, Any]) -> dict[str, Any]:
    """Every output value of one vector, hex-encoded, from its inputs."""
    payee = Identity(bytes.fromhex(inputs["payee_seed"]))
    payer = Identity(bytes.fromhex(inputs["payer_seed"]))
    request = PaymentRequest(
        id=bytes.fromhex(inputs["id"]),
        payee=payee.address,
        payer=payer.address,
        amount=inputs["amount"],
        currency=inputs["currency"],
        memo=inputs["memo"],
        created_at=inputs["created_at"],
        expires_at=inputs["expires_at"],
    )
    signed = sign_request(payee, request)
    kind = RequestAnswerKind[inputs["answer_kind"]]
    answerer = payer if kind is RequestAnswerKind.DECLINED else payee
    answer = sign_answer(answerer, signed, kind, inputs["answer_at"])
    transfer = Transfer(
        id=TransferId(bytes.fromhex(inputs["transfer_id"])),
        sender=payer.address,
        recipient=payee.address,
        amount=request.amount,
        currency=request.currency,
        memo=inputs["transfer_memo"],
        created_at=inputs["transfer_created_at"],
        request_id=request.id,
    )
    paying = sign_transfer(payer, transfer)
    check = check_payment(request, RequestState[inputs["state"]], transfer, inputs["now"])
    assert (check.name if check else None) == inputs["check"], inputs["name"]
    return {
        **inputs,
        "payee_public": payee.public.public_key.hex(),
        "payee_address": payee.address,
        "payer_public": payer.public.public_key.hex(),
        "payer_address": payer.address,
        "request": request.encode().hex(),
        "request_digest": request.digest.hex(),
        "request_signature": signed.signature.hex(),
        "signed_request": signed.encode().hex(),
        "code": request_code(signed),
        "answer": answer.answer.encode().hex(),
        "answer_signature": answer.signature.hex(),
        "signed_answer": answer.encode().hex(),
        "transfer_v2": transfer.encode().hex(),
        "transfer_v2_digest": transfer.digest.hex(),
        "transfer_v2_signature": paying.signature.hex(),
        "signed_transfer_v2": paying.encode().hex(),
    }


def document() -> dict[str, Any]:
    return {
        "description": (
            "p2ptransfer payment request v1 known-answer vectors, with one answer (decline by "
            "the payer or cancellation by the payee) and one paying transfer (v2, type 0x24) "
            "each; see docs/protocol.md. Inputs as a user or peer gives them (seeds, ids and "
            "outputs hex; amount in minor units; 'check' is check_payment's verdict for the "
            "paying transfer given 'state' and the payee's clock 'now', null to go on)."
        ),
        "vectors": [compute(v) for v in INPUTS],
    }


if __name__ == "__main__":
    FILE.write_text(json.dumps(document(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {FILE}")
