"""Transfer instructions: pure code over bytes.

A :class:`Transfer` says "``sender`` pays ``recipient`` ``amount`` minor units
of ``currency``", under a 128-bit id the sender chose at random. The sender
signs it (:class:`SignedTransfer`); the recipient validates it, decides, and
answers with a signed receipt (:mod:`.receipt`) bound to the transfer's id
*and* its digest, so a receipt can never be replayed for other content under
the same id.

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
* **Domain separation.** Transfer signatures, receipt signatures
  (:data:`.receipt.RECEIPT_SIGNATURE_CONTEXT`) and transfer digests are
  computed over ``context || body`` with three different context strings, so
  no signature or hash made for one purpose is valid for another.
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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import NewType

from ..errors import AddressError, DecodeError, InputError, SignatureError
from . import primitives
from .amounts import MAX_MEMO_BYTES, check_amount, check_currency, check_memo
from .encoding import Bytes, Field, FixedBytes, Schema, Text, UInt
from .identity import Identity, PublicIdentity

__all__ = [
    "MAX_TIMESTAMP_MS",
    "SIGNED_TRANSFER_SCHEMA",
    "TRANSFER_DIGEST_CONTEXT",
    "TRANSFER_ID_SIZE",
    "TRANSFER_SCHEMA",
    "TRANSFER_SIGNATURE_CONTEXT",
    "TRANSFER_V2_SCHEMA",
    "Comparison",
    "SignedTransfer",
    "Transfer",
    "TransferId",
    "check_timestamp",
    "check_transfer_id",
    "compare",
    "sign_transfer",
]

TransferId = NewType("TransferId", bytes)
"""16 random bytes chosen by the sender; the idempotency key of a transfer."""

TRANSFER_ID_SIZE = 16
MAX_TIMESTAMP_MS = 2**63 - 1
"""Timestamps must fit a signed 64-bit integer (SQLite INTEGER) as well as the wire's u64."""

TRANSFER_SIGNATURE_CONTEXT = b"p2ptransfer-transfer-v1\x00"
TRANSFER_DIGEST_CONTEXT = b"p2ptransfer-transfer-digest-v1\x00"

_KEY = primitives.ED25519_KEY_SIZE
_SIG = primitives.ED25519_SIG_SIZE

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
    return SignedTransfer(transfer, identity.sign_checked(transfer.signing_message()))


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
