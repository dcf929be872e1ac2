"""Write mail_v1.json: signed prekeys, envelopes to open, slots and envelope hashes.

Run once, and again only for a deliberate change of the mail format (which
needs a new protocol version)::

    .venv/bin/python -m tests.vectors.make_mail_vectors

pyca's HPKE seal takes no caller randomness, so an envelope cannot be
recomputed: each envelope vector stores one sealed when the file was written,
with the private key that opens it, and the test opens it to the exact
plaintext. Every other value is a function of ``INPUTS`` (the source of truth)
and the test recomputes it. A rerun keeps the stored envelopes (pass
``--reseal`` to seal new ones).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from p2ptransfer.protocol import envelope as mail
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.prekey import Prekey, PrekeyId, sign_prekey
from tests.vectors import make_transfer_vectors
from tests.vectors.loader import VECTORS_DIR

FILE = VECTORS_DIR / "mail_v1.json"

_ALICE = bytes(range(0x00, 0x20)).hex()  # the seeds of handshake_v1.json and transfer_v1.json
_BOB = bytes(range(0x20, 0x40)).hex()
_NOT_BEFORE = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
_DAY = 86_400_000

_TRANSFERS = {v["name"]: make_transfer_vectors.compute(v) for v in make_transfer_vectors.INPUTS}

INPUTS: list[dict[str, Any]] = [
    {
        "name": "prekey-bob-14-days",
        "type": "prekey",
        "owner_seed": _BOB,
        "kem_private": bytes(range(0x40, 0xA0)).hex(),
        "prekey_id": "0001020304050607",
        "not_before": _NOT_BEFORE,
        "not_after": _NOT_BEFORE + 14 * _DAY,
    },
    {
        "name": "prekey-alice-longest-window",
        "type": "prekey",
        "owner_seed": _ALICE,
        "kem_private": bytes(range(0xA0, 0x100)).hex(),
        "prekey_id": "ffffffffffffffff",
        "not_before": 0,
        "not_after": 14 * _DAY + 3_600_000,
    },
    {
        # transfer_v1 "eur-accepted": Alice pays Bob by mail.
        "name": "envelope-transfer-alice-to-bob",
        "type": "envelope",
        "sender_seed": _ALICE,
        "recipient_seed": _BOB,
        "kem_private": bytes(range(0x40, 0xA0)).hex(),
        "prekey_id": "0001020304050607",
        "not_before": _NOT_BEFORE,
        "not_after": _NOT_BEFORE + 14 * _DAY,
        "mail_kind": "TRANSFER",
        "item_id": _TRANSFERS["eur-accepted"]["id"],
        "body": _TRANSFERS["eur-accepted"]["signed_transfer"],
    },
    {
        # transfer_v1 "eur-accepted": Bob's receipt mailed back to Alice.
        "name": "envelope-receipt-bob-to-alice",
        "type": "envelope",
        "sender_seed": _BOB,
        "recipient_seed": _ALICE,
        "kem_private": bytes(range(0xA0, 0x100)).hex(),
        "prekey_id": "ffffffffffffffff",
        "not_before": 0,
        "not_after": 14 * _DAY + 3_600_000,
        "mail_kind": "RECEIPT",
        "item_id": _TRANSFERS["eur-accepted"]["id"],
        "body": _TRANSFERS["eur-accepted"]["signed_receipt"],
    },
    {
        # transfer_v1 "kwd-maximum-over-limit": the largest field values, Bob pays Alice.
        "name": "envelope-largest-transfer",
        "type": "envelope",
        "sender_seed": _BOB,
        "recipient_seed": _ALICE,
        "kem_private": bytes(range(0xA0, 0x100)).hex(),
        "prekey_id": "ffffffffffffffff",
        "not_before": 0,
        "not_after": 14 * _DAY + 3_600_000,
        "mail_kind": "TRANSFER",
        "item_id": _TRANSFERS["kwd-maximum-over-limit"]["id"],
        "body": _TRANSFERS["kwd-maximum-over-limit"]["signed_transfer"],
    },
]


def _prekey(owner: Identity, inputs: dict[str, Any]) -> Prekey:
    return Prekey(
        owner=owner.public.public_key,
        prekey_id=PrekeyId(bytes.fromhex(inputs["prekey_id"])),
        kem_public=primitives.hpke_public_from_private(bytes.fromhex(inputs["kem_private"])),
        not_before=inputs["not_before"],
        not_after=inputs["not_after"],
    )


def compute(inputs: dict[str, Any], envelope_hex: str | None = None) -> dict[str, Any]:
    """Every output of one vector; an envelope vector keeps ``envelope_hex`` if given."""
    if inputs["type"] == "prekey":
        owner = Identity(bytes.fromhex(inputs["owner_seed"]))
        signed = sign_prekey(owner, _prekey(owner, inputs))
        return {
            **inputs,
            "owner_public": owner.public.public_key.hex(),
            "owner_address": owner.address,
            "kem_public": signed.prekey.kem_public.hex(),
            "prekey": signed.prekey.encode().hex(),
            "signature": signed.signature.hex(),
            "signed_prekey": signed.encode().hex(),
        }
    sender = Identity(bytes.fromhex(inputs["sender_seed"]))
    recipient = Identity(bytes.fromhex(inputs["recipient_seed"]))
    prekey = _prekey(recipient, inputs)
    kind = mail.MailKind[inputs["mail_kind"]]
    body = bytes.fromhex(inputs["body"])
    if envelope_hex is None:
        envelope_hex = mail.seal(kind, body, sender.public.public_key, prekey).encode().hex()
    key = mail.slot_key(sender.seed)
    header = bytes((kind,)) + len(body).to_bytes(2, "big")
    return {
        **inputs,
        "sender_public": sender.public.public_key.hex(),
        "recipient_public": recipient.public.public_key.hex(),
        "info": mail.mail_info(
            sender.public.public_key, recipient.public.public_key, prekey.prekey_id
        ).hex(),
        "plaintext": (header + body).ljust(mail.MAIL_PLAINTEXT_SIZE, b"\x00").hex(),
        "envelope": envelope_hex,
        "envelope_hash": mail.envelope_hash(bytes.fromhex(envelope_hex)).hex(),
        "slot_key": key.hex(),
        "slot": mail.mail_slot(key, kind, bytes.fromhex(inputs["item_id"])).hex(),
    }


def document(stored: dict[str, str]) -> dict[str, Any]:
    """The file's content; ``stored`` maps vector names to envelopes to keep."""
    return {
        "description": (
            "p2ptransfer mail v1 known-answer vectors (signed prekeys, HPKE envelopes, slots); "
            "see docs/protocol.md. Bytes are hex. Envelopes were sealed once (pyca's HPKE seal "
            "takes no caller randomness): open each with kem_private, sender_public, "
            "recipient_public and check the plaintext."
        ),
        "vectors": [compute(v, stored.get(v["name"])) for v in INPUTS],
    }


def _stored_envelopes() -> dict[str, str]:
    if not FILE.exists():
        return {}
    vectors = json.loads(FILE.read_text(encoding="utf-8"))["vectors"]
    return {v["name"]: v["envelope"] for v in vectors if "envelope" in v}


if __name__ == "__main__":
    keep = {} if "--reseal" in sys.argv[1:] else _stored_envelopes()
    FILE.write_text(json.dumps(document(keep), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {FILE}")
