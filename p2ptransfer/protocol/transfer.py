"""Transfer instructions and the receipts that answer them: pure code over bytes.

A :class:`Transfer` says "``sender`` pays ``recipient`` ``amount`` minor units
of ``currency``", under a 128-bit id the sender chose at random. The sender
signs it (:class:`SignedTransfer`); the recipient validates it, decides, and
answers with a :class:`SignedReceipt` bound to the transfer's id *and* its
digest, so a receipt can never be replayed for other content under the same id.

Why each rule is here:

* **Amounts are integers of minor units.** Text is parsed once, strictly
  (:func:`.amounts.parse_amount`), with the currency's ISO 4217 exponent; no float ever
  touches an amount. Amounts are always positive: the direction of money is
  given by sender and recipient, never by a sign.
* **One value, one byte string.** Every wire type validates in its
  constructor and encodes canonically (:mod:`.encoding`); ``decode`` accepts
  only canonical bytes (upper-case currency, NFC memo, addresses as keys), so
  ``encode(decode(b)) == b`` and signatures and digests are over the only
  encoding there is.
* **Domain separation.** Transfer signatures, receipt signatures and transfer
  digests are computed over ``context || body`` with three different context
  strings, so no signature or hash made for one purpose is valid for another.
* **Idempotency.** A retry re-sends the same signed transfer (same id, same
  bytes: Ed25519 is deterministic). :func:`compare` tells the receiver whether
  a transfer with a known id is the same one again (answer with the stored
  receipt) or different content under a reused id (a conflict, refused).
* **Versions are types, not optional fields.** A transfer that pays a payment
  request (:mod:`.request`) carries the request's id, and is encoded with its
  own schema (:data:`TRANSFER_V2_SCHEMA`, type 0x24) that has the extra field;
  a transfer without one keeps the v1 encoding (type 0x20) byte for byte. The
  type byte is the first byte signed and hashed, so a v1 and a v2 encoding
  never share a signature or a digest.

This module makes no randomness and reads no clock: ids and timestamps come
from the caller, so tests pin them and check exact bytes. docs/transfer.md
describes the wire format byte by byte.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import NewType

from ..errors import (
    AddressError,
    DecodeError,
    InputError,
    ProtocolError,
    SignatureError,
)
from . import primitives
from .amounts import MAX_MEMO_BYTES, check_amount, check_currency, check_memo
from .encoding import Bytes, Field, FixedBytes, Schema, Text, UInt
from .identity import Identity, PublicIdentity

__all__ = [
    "MAX_TIMESTAMP_MS",
    "RECEIPT_SCHEMA",
    "RECEIPT_SIGNATURE_CONTEXT",
    "SIGNED_RECEIPT_SCHEMA",
    "SIGNED_TRANSFER_SCHEMA",
    "TRANSFER_DIGEST_CONTEXT",
    "TRANSFER_ID_SIZE",
    "TRANSFER_SCHEMA",
    "TRANSFER_SIGNATURE_CONTEXT",
    "TRANSFER_V2_SCHEMA",
    "Comparison",
    "Receipt",
    "ReceiptStatus",
    "RejectReason",
    "SignedReceipt",
    "SignedTransfer",
    "Transfer",
    "TransferId",
    "accept",
    "check_timestamp",
    "check_transfer_id",
    "compare",
    "reject",
    "sign_receipt",
    "sign_transfer",
]

TransferId = NewType("TransferId", bytes)
"""16 random bytes chosen by the sender; the idempotency key of a transfer."""

TRANSFER_ID_SIZE = 16
MAX_TIMESTAMP_MS = 2**63 - 1
"""Timestamps must fit a signed 64-bit integer (SQLite INTEGER) as well as the wire's u64."""

TRANSFER_SIGNATURE_CONTEXT = b"p2ptransfer-transfer-v1\x00"
RECEIPT_SIGNATURE_CONTEXT = b"p2ptransfer-receipt-v1\x00"
TRANSFER_DIGEST_CONTEXT = b"p2ptransfer-transfer-digest-v1\x00"

_KEY = primitives.ED25519_KEY_SIZE
_SIG = primitives.ED25519_SIG_SIZE
_DIGEST_SIZE = 32

TRANSFER_SCHEMA = Schema(
    "transfer",
    0x20,
    [
        Field(1, "id", FixedBytes(TRANSFER_ID_SIZE)),
        Field(2, "sender", FixedBytes(_KEY)),
        Field(3, "recipient", FixedBytes(_KEY)),
        Field(4, "amount", UInt(64)),
        Field(5, "currency", Text(3)),
        Field(6, "memo", Text(MAX_MEMO_BYTES)),
        Field(7, "created_at", UInt(64)),
    ],
    max_size=512,
)
TRANSFER_V2_SCHEMA = Schema(
    "transfer-v2",
    0x24,
    [
        *TRANSFER_SCHEMA.fields,
        Field(8, "request_id", FixedBytes(TRANSFER_ID_SIZE)),
    ],
    max_size=512,
)
"""A transfer that pays a payment request: v1's fields, then the request's id (tag 8)."""
SIGNED_TRANSFER_SCHEMA = Schema(
    "signed-transfer",
    0x21,
    [
        # The Transfer encoding, either version (its own type byte says which).
        Field(1, "transfer", Bytes(max(TRANSFER_SCHEMA.max_size, TRANSFER_V2_SCHEMA.max_size))),
        Field(2, "signature", FixedBytes(_SIG)),
    ],
    max_size=640,
)
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


# --- field checks shared by the wire types --------------------------------------


def _cached(obj: object, name: str, compute: Callable[[], bytes]) -> bytes:
    """``compute()``, remembered in ``obj``'s instance dict under ``name``.

    For the frozen wire types only: their fields never change after
    ``__post_init__``, so neither do their encodings. The value lives outside
    the dataclass fields, so equality, hashing and repr ignore it, and
    ``dataclasses.replace`` (a new object) starts without it.
    """
    cache = obj.__dict__
    value: bytes | None = cache.get(name)
    if value is None:
        value = cache[name] = compute()
    return value


def check_transfer_id(value: object, what: str = "a transfer id") -> bytes:
    """``value`` if it is a transfer id (exactly 16 bytes); InputError otherwise."""
    if type(value) is not bytes or len(value) != TRANSFER_ID_SIZE:
        raise InputError(f"{what} must be exactly {TRANSFER_ID_SIZE} bytes")
    return value


def check_timestamp(value: object, what: str = "time") -> int:
    """``value`` if it is unix time in milliseconds we can sign; InputError otherwise."""
    if type(value) is not int or not 0 <= value <= MAX_TIMESTAMP_MS:
        raise InputError(f"{what} must be unix time in milliseconds, 0 to {MAX_TIMESTAMP_MS}")
    return value


def _parse_address(value: object, what: str) -> PublicIdentity:
    """The identity behind an address (fully validated by PublicIdentity.from_address)."""
    if not isinstance(value, str):
        raise AddressError(f"{what} address must be text")
    return PublicIdentity.from_address(value)


def _check_signature(value: object) -> None:
    if type(value) is not bytes or len(value) != _SIG:
        raise InputError(f"a signature must be exactly {_SIG} bytes")


# --- transfers -----------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """An instruction: ``sender`` pays ``recipient`` ``amount`` minor units of ``currency``.

    Validated on construction; bad values raise an :class:`InputError`
    subclass (AddressError, AmountError, CurrencyError, MemoError). The
    constructor also *normalises* what has harmless variants — addresses to
    their canonical lower-case form, the currency code to upper case, the memo
    to NFC (see :func:`.amounts.check_memo`) — so a Transfer, once built, has exactly one
    encoding. :meth:`decode` is stricter: it accepts only bytes that are
    already canonical.

    ``request_id`` is the id of the payment request this transfer pays, or
    None for an ordinary transfer. It decides the encoding: None gives the v1
    bytes (type 0x20), an id the v2 bytes (type 0x24); see the module docstring.
    """

    id: TransferId
    sender: str
    recipient: str
    amount: int
    currency: str
    memo: str
    created_at: int
    request_id: bytes | None = None

    def __post_init__(self) -> None:
        check_transfer_id(self.id, "a transfer id")
        sender = _parse_address(self.sender, "sender")
        recipient = _parse_address(self.recipient, "recipient")
        if sender == recipient:
            raise AddressError("sender and recipient are the same address")
        check_amount(self.amount)
        currency = check_currency(self.currency)
        memo = check_memo(self.memo)
        check_timestamp(self.created_at, "created_at")
        if self.request_id is not None:
            check_transfer_id(self.request_id, "a payment request id")
        object.__setattr__(self, "sender", sender.address)
        object.__setattr__(self, "recipient", recipient.address)
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "memo", memo)
        # Fill the identity caches with what was just parsed (the instance dict
        # shadows the cached_property, so reading them costs a dict lookup).
        self.__dict__["sender_identity"] = sender
        self.__dict__["recipient_identity"] = recipient

    @cached_property
    def sender_identity(self) -> PublicIdentity:
        """The sender's public key (whose signature the transfer needs)."""
        return PublicIdentity.from_address(self.sender)

    @cached_property
    def recipient_identity(self) -> PublicIdentity:
        """The recipient's public key (whose signature a receipt needs)."""
        return PublicIdentity.from_address(self.recipient)

    def encode(self) -> bytes:
        """The canonical bytes: what is signed, hashed and sent.

        Computed once per object: a transfer is frozen, and its bytes are
        needed for the signature, the digest, the record, the journal entry
        and the stored row. ``dataclasses.replace`` builds a new object, so
        it never inherits another's bytes.
        """
        return _cached(self, "_encoded", self._encode)

    def _encode(self) -> bytes:
        values: dict[str, object] = {
            "id": self.id,
            "sender": self.sender_identity.public_key,
            "recipient": self.recipient_identity.public_key,
            "amount": self.amount,
            "currency": self.currency,
            "memo": self.memo,
            "created_at": self.created_at,
        }
        if self.request_id is None:
            return TRANSFER_SCHEMA.encode(values)
        values["request_id"] = self.request_id
        return TRANSFER_V2_SCHEMA.encode(values)

    @classmethod
    def decode(cls, data: bytes) -> Transfer:
        """Decode and fully validate; any problem is a :class:`DecodeError`.

        A field that decodes but fails validation (unknown currency, control
        character in the memo, zero amount, ...) is reported as a DecodeError
        whose message names the field and whose ``__cause__`` is the
        InputError: bytes from a peer that are not a valid transfer are the
        peer breaking the protocol, not the local user's mistake.

        Both versions decode: the first byte (0x20 or 0x24) chooses the schema.
        """
        is_v2 = isinstance(data, bytes | bytearray | memoryview) and data[:1] == b"\x24"
        values = (TRANSFER_V2_SCHEMA if is_v2 else TRANSFER_SCHEMA).decode(data)
        try:
            transfer = cls(
                id=TransferId(values["id"]),
                sender=PublicIdentity(values["sender"]).address,
                recipient=PublicIdentity(values["recipient"]).address,
                amount=values["amount"],
                currency=values["currency"],
                memo=values["memo"],
                created_at=values["created_at"],
                request_id=values.get("request_id"),
            )
        except InputError as exc:
            raise DecodeError(f"transfer: {exc}") from exc
        # The constructor normalised; the wire must not need it (one value, one byte string).
        if transfer.currency != values["currency"]:
            raise DecodeError("transfer: currency code must be upper case on the wire")
        if transfer.memo != values["memo"]:
            raise DecodeError("transfer: memo must be in Unicode NFC on the wire")
        return transfer

    @property
    def digest(self) -> bytes:
        """SHA-256 over the digest context and the canonical bytes: the "transfer hash".

        Receipts carry it, so a receipt answers this exact content and no
        other transfer that happens to reuse the id.
        """
        return _cached(
            self, "_digest", lambda: primitives.sha256(TRANSFER_DIGEST_CONTEXT, self.encode())
        )

    def signing_message(self) -> bytes:
        """The bytes the sender signs: the transfer signature context, then the body."""
        return TRANSFER_SIGNATURE_CONTEXT + self.encode()

    def same_content(self, other: Transfer) -> bool:
        """True when every field except ``id`` is equal (the timestamp included).

        A retry re-sends the stored transfer, so even ``created_at`` is the
        same; anything that differs is a different instruction — the request
        it pays (or paying none) included.
        """
        return (
            self.request_id == other.request_id
            and self.sender == other.sender
            and self.recipient == other.recipient
            and self.amount == other.amount
            and self.currency == other.currency
            and self.memo == other.memo
            and self.created_at == other.created_at
        )


@dataclass(frozen=True)
class SignedTransfer:
    """A transfer with the sender's Ed25519 signature; decoding does not verify."""

    transfer: Transfer
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.transfer, Transfer):
            raise InputError("a SignedTransfer needs a Transfer")
        _check_signature(self.signature)

    @property
    def id(self) -> TransferId:
        return self.transfer.id

    @property
    def digest(self) -> bytes:
        """The transfer's digest (the signature is not part of it)."""
        return self.transfer.digest

    def encode(self) -> bytes:
        """The bytes of the record and of the ledger's journal entry (computed once)."""
        return _cached(
            self,
            "_encoded",
            lambda: SIGNED_TRANSFER_SCHEMA.encode(
                {"transfer": self.transfer.encode(), "signature": self.signature}
            ),
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedTransfer:
        """Decode and validate the transfer; call :meth:`verify` before trusting it."""
        values = SIGNED_TRANSFER_SCHEMA.decode(data)
        return cls(Transfer.decode(values["transfer"]), values["signature"])

    def verify(self) -> None:
        """Raise :class:`SignatureError` unless the key in ``transfer.sender`` signed it."""
        try:
            self.transfer.sender_identity.verify(self.signature, self.transfer.signing_message())
        except SignatureError as exc:
            raise SignatureError(
                f"transfer {self.id.hex()} is not signed by its sender {self.transfer.sender}"
            ) from exc


def sign_transfer(identity: Identity, transfer: Transfer) -> SignedTransfer:
    """Sign ``transfer`` as its sender; ValueError if ``identity`` is not the sender."""
    if identity.address != transfer.sender:
        raise ValueError("only the transfer's sender can sign it")
    return SignedTransfer(transfer, identity.sign(transfer.signing_message()))


# --- receipts ------------------------------------------------------------------


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
    return SignedReceipt(receipt, identity.sign(receipt.signing_message()))


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


# --- idempotency ---------------------------------------------------------------


class Comparison(enum.Enum):
    """How an incoming transfer relates to one already known."""

    DIFFERENT_ID = "different-id"
    """Unrelated transfers."""
    SAME = "same"
    """The same transfer again (a retry): answer with the stored receipt, apply nothing."""
    CONFLICT = "conflict"
    """Same id, different content: refuse it (RejectReason.CONFLICT), apply nothing."""


def compare(a: Transfer, b: Transfer) -> Comparison:
    """Classify ``b`` against ``a`` for idempotency (see :class:`Comparison`)."""
    if not primitives.constant_time_equal(a.id, b.id):
        return Comparison.DIFFERENT_ID
    return Comparison.SAME if a.same_content(b) else Comparison.CONFLICT
