"""Receipts: the recipient's signed answer to one transfer, bound to its id and digest.

A :class:`SignedReceipt` says "``receiver`` accepted (or rejected, and why)
the transfer with this id *and this digest*", so it can never be replayed for
other content under the same id, nor count when anyone but the transfer's
recipient signed it (:meth:`SignedReceipt.verify`). The recipient makes one
with :func:`accept` or :func:`reject`.

Receipt signatures use their own context string, distinct from the transfer
signature and digest contexts (:mod:`.transfer`), so no signature made for one
purpose is valid for another. Status and reason numbers are on the wire and
never renumbered.

This module makes no randomness and reads no clock: the decision time comes
from the caller. docs/transfer.md describes the wire format byte by byte.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from ..errors import DecodeError, InputError, ProtocolError, SignatureError
from . import primitives
from .encoding import Bytes, Field, FixedBytes, Schema, UInt
from .identity import Identity, PublicIdentity
from .transfer import (
    TRANSFER_ID_SIZE,
    SignedTransfer,
    Transfer,
    TransferId,
    _cached,
    _check_signature,
    _parse_address,
    check_timestamp,
    check_transfer_id,
)

__all__ = [
    "RECEIPT_SCHEMA",
    "RECEIPT_SIGNATURE_CONTEXT",
    "SIGNED_RECEIPT_SCHEMA",
    "Receipt",
    "ReceiptStatus",
    "RejectReason",
    "SignedReceipt",
    "accept",
    "reject",
    "sign_receipt",
]

RECEIPT_SIGNATURE_CONTEXT = b"p2ptransfer-receipt-v1\x00"

_KEY = primitives.ED25519_KEY_SIZE
_SIG = primitives.ED25519_SIG_SIZE
_DIGEST_SIZE = 32

RECEIPT_SCHEMA = Schema(
    "receipt",
    0x22,
    [
        Field(1, "transfer_id", FixedBytes(TRANSFER_ID_SIZE)),
        Field(2, "transfer_digest", FixedBytes(_DIGEST_SIZE)),
        Field(3, "receiver", FixedBytes(_KEY)),
        Field(4, "status", UInt(8)),
        Field(5, "reason", UInt(8)),
        Field(6, "decided_at", UInt(64)),
    ],
    max_size=256,
)
SIGNED_RECEIPT_SCHEMA = Schema(
    "signed-receipt",
    0x23,
    [
        Field(1, "receipt", Bytes(RECEIPT_SCHEMA.max_size)),
        Field(2, "signature", FixedBytes(_SIG)),
    ],
    max_size=384,
)


class ReceiptStatus(enum.IntEnum):
    """The receiver's decision. The numbers are on the wire: never renumber."""

    ACCEPTED = 1
    REJECTED = 2


class RejectReason(enum.IntEnum):
    """Why a transfer was rejected (NONE for an accepted one). Wire numbers: never renumber."""

    NONE = 0
    UNKNOWN_SENDER = 1
    CURRENCY_NOT_ACCEPTED = 2
    OVER_LIMIT = 3
    WRONG_RECIPIENT = 4
    CONFLICT = 5
    INVALID = 6
    POLICY = 7
    REQUEST_MISMATCH = 8
    REQUEST_PAID = 9
    REQUEST_EXPIRED = 10
    REQUEST_CANCELLED = 11

    def describe(self) -> str:
        """A sentence for the sender's screen."""
        return _REASON_TEXT[self]


_REASON_TEXT: Mapping[RejectReason, str] = {
    RejectReason.NONE: "The recipient accepted the transfer.",
    RejectReason.UNKNOWN_SENDER: "The recipient does not know you: you are not in their contacts.",
    RejectReason.CURRENCY_NOT_ACCEPTED: "The recipient does not accept this currency.",
    RejectReason.OVER_LIMIT: "The amount is above the limit the recipient accepts.",
    RejectReason.WRONG_RECIPIENT: "The transfer reached someone who is not its recipient.",
    RejectReason.CONFLICT: (
        "The recipient already has a different transfer with the same id; "
        "this one was refused and nothing was applied."
    ),
    RejectReason.INVALID: "The transfer was invalid or its signature did not verify.",
    RejectReason.POLICY: "The recipient's local policy refused the transfer.",
    RejectReason.REQUEST_MISMATCH: (
        "The transfer does not match the payment request it names "
        "(payer, recipient, amount or currency differ, or the recipient has no such request)."
    ),
    RejectReason.REQUEST_PAID: "The payment request this transfer names was already paid.",
    RejectReason.REQUEST_EXPIRED: "The payment request this transfer names has expired.",
    RejectReason.REQUEST_CANCELLED: (
        "The payment request this transfer names was cancelled by the recipient or declined by you."
    ),
}


@dataclass(frozen=True)
class Receipt:
    """The receiver's answer to one transfer, bound to its id and digest.

    ``reason`` is NONE exactly when ``status`` is ACCEPTED. Plain ints are
    converted to the enums; values outside them are refused.
    """

    transfer_id: TransferId
    transfer_digest: bytes
    receiver: str
    status: ReceiptStatus
    reason: RejectReason
    decided_at: int

    def __post_init__(self) -> None:
        check_transfer_id(self.transfer_id, "a receipt's transfer id")
        if type(self.transfer_digest) is not bytes or len(self.transfer_digest) != _DIGEST_SIZE:
            raise InputError(f"a transfer digest must be exactly {_DIGEST_SIZE} bytes")
        receiver = _parse_address(self.receiver, "receiver")
        try:
            status = ReceiptStatus(self.status)
            reason = RejectReason(self.reason)
        except ValueError as exc:
            raise InputError(f"unknown receipt status or reject reason: {exc}") from exc
        if (status is ReceiptStatus.ACCEPTED) != (reason is RejectReason.NONE):
            raise InputError(
                "an accepted receipt has reason NONE and a rejected one has a reason, "
                f"not {status.name} with {reason.name}"
            )
        check_timestamp(self.decided_at, "decided_at")
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "receiver", receiver.address)
        self.__dict__["receiver_identity"] = receiver

    @property
    def accepted(self) -> bool:
        return self.status is ReceiptStatus.ACCEPTED

    @cached_property
    def receiver_identity(self) -> PublicIdentity:
        """The receiver's public key (whose signature the receipt needs)."""
        return PublicIdentity.from_address(self.receiver)

    def encode(self) -> bytes:
        """The canonical bytes: what is signed and stored (computed once; see Transfer)."""
        return _cached(self, "_encoded", self._encode)

    def _encode(self) -> bytes:
        return RECEIPT_SCHEMA.encode(
            {
                "transfer_id": self.transfer_id,
                "transfer_digest": self.transfer_digest,
                "receiver": self.receiver_identity.public_key,
                "status": int(self.status),
                "reason": int(self.reason),
                "decided_at": self.decided_at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """Decode and fully validate; any problem is a :class:`DecodeError`."""
        values = RECEIPT_SCHEMA.decode(data)
        try:
            return cls(
                transfer_id=TransferId(values["transfer_id"]),
                transfer_digest=values["transfer_digest"],
                receiver=PublicIdentity(values["receiver"]).address,
                status=values["status"],
                reason=values["reason"],
                decided_at=values["decided_at"],
            )
        except InputError as exc:
            raise DecodeError(f"receipt: {exc}") from exc

    def signing_message(self) -> bytes:
        """The bytes the receiver signs: the receipt signature context, then the body."""
        return RECEIPT_SIGNATURE_CONTEXT + self.encode()


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt with the receiver's Ed25519 signature; decoding does not verify."""

    receipt: Receipt
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.receipt, Receipt):
            raise InputError("a SignedReceipt needs a Receipt")
        _check_signature(self.signature)

    def encode(self) -> bytes:
        """The bytes of the record and of the ledger (computed once)."""
        return _cached(
            self,
            "_encoded",
            lambda: SIGNED_RECEIPT_SCHEMA.encode(
                {"receipt": self.receipt.encode(), "signature": self.signature}
            ),
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedReceipt:
        """Decode and validate the receipt; call :meth:`verify` before trusting it."""
        values = SIGNED_RECEIPT_SCHEMA.decode(data)
        return cls(Receipt.decode(values["receipt"]), values["signature"])

    def verify_signature(self) -> None:
        """Raise :class:`SignatureError` unless ``receipt.receiver`` signed this receipt.

        On its own this proves only who wrote the receipt; :meth:`verify`
        also proves it answers a given transfer.
        """
        try:
            self.receipt.receiver_identity.verify(self.signature, self.receipt.signing_message())
        except SignatureError as exc:
            raise SignatureError(
                f"receipt for transfer {self.receipt.transfer_id.hex()} is not signed by "
                f"its receiver {self.receipt.receiver}"
            ) from exc

    def verify(self, transfer: SignedTransfer | Transfer) -> None:
        """Check that this is the recipient's signed answer to exactly ``transfer``.

        In order: the signature is by ``receipt.receiver`` (SignatureError);
        the receiver is the transfer's recipient (SignatureError: a receipt
        from anyone else — even one honestly saying WRONG_RECIPIENT — decides
        nothing); the transfer id and the digest match (ProtocolError: the
        receipt answers another transfer, or other content under this id).
        """
        t = transfer.transfer if isinstance(transfer, SignedTransfer) else transfer
        receipt = self.receipt
        self.verify_signature()
        if receipt.receiver != t.recipient:
            raise SignatureError(
                f"receipt is signed by {receipt.receiver}, not by the transfer's "
                f"recipient {t.recipient}"
            )
        if not primitives.constant_time_equal(receipt.transfer_id, t.id):
            raise ProtocolError(
                f"receipt answers transfer {receipt.transfer_id.hex()}, not {t.id.hex()}"
            )
        if not primitives.constant_time_equal(receipt.transfer_digest, t.digest):
            raise ProtocolError(
                f"receipt for transfer {t.id.hex()} answers different content (digest mismatch)"
            )


def sign_receipt(identity: Identity, receipt: Receipt) -> SignedReceipt:
    """Sign ``receipt`` as its receiver; ValueError if ``identity`` is not the receiver."""
    if identity.address != receipt.receiver:
        raise ValueError("only the receipt's receiver can sign it")
    return SignedReceipt(receipt, identity.sign_checked(receipt.signing_message()))


def accept(identity: Identity, signed: SignedTransfer, decided_at: int) -> SignedReceipt:
    """The recipient's signed ACCEPTED receipt for ``signed``.

    Verifies the sender's signature first (SignatureError), because accepting
    an unverified transfer is never right; ValueError if ``identity`` is not
    the transfer's recipient.
    """
    if identity.address != signed.transfer.recipient:
        raise ValueError("only the transfer's recipient can accept it")
    signed.verify()
    receipt = Receipt(
        transfer_id=signed.id,
        transfer_digest=signed.digest,
        receiver=identity.address,
        status=ReceiptStatus.ACCEPTED,
        reason=RejectReason.NONE,
        decided_at=decided_at,
    )
    return sign_receipt(identity, receipt)


def reject(
    identity: Identity, signed: SignedTransfer, reason: RejectReason, decided_at: int
) -> SignedReceipt:
    """A signed REJECTED receipt for ``signed``; ValueError if ``reason`` is NONE.

    The transfer's signature is not checked (INVALID is how a bad one is
    answered), and ``identity`` need not be the recipient: whoever received
    the transfer may answer it, e.g. with WRONG_RECIPIENT. Only the
    recipient's answer counts, though — :meth:`SignedReceipt.verify` refuses a
    receipt from anyone else, so such a rejection leaves the sender pending.
    """
    reason = RejectReason(reason)
    if reason is RejectReason.NONE:
        raise ValueError("a rejection needs a reason other than NONE")
    receipt = Receipt(
        transfer_id=signed.id,
        transfer_digest=signed.digest,
        receiver=identity.address,
        status=ReceiptStatus.REJECTED,
        reason=reason,
        decided_at=decided_at,
    )
    return sign_receipt(identity, receipt)
