"""Transfer instructions and the receipts that answer them: pure code over bytes.

A :class:`Transfer` says "``sender`` pays ``recipient`` ``amount`` minor units
of ``currency``", under a 128-bit id the sender chose at random. The sender
signs it (:class:`SignedTransfer`); the recipient validates it, decides, and
answers with a :class:`SignedReceipt` bound to the transfer's id *and* its
digest, so a receipt can never be replayed for other content under the same id.

Why each rule is here:

* **Amounts are integers of minor units.** Text is parsed once, strictly
  (:func:`parse_amount`), with the currency's ISO 4217 exponent; no float ever
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

This module makes no randomness and reads no clock: ids and timestamps come
from the caller, so tests pin them and check exact bytes. docs/transfer.md
describes the wire format byte by byte.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import NewType

from ..errors import (
    AddressError,
    AmountError,
    CurrencyError,
    DecodeError,
    InputError,
    MemoError,
    ProtocolError,
    SignatureError,
)
from . import primitives
from .currencies import CURRENCY_EXPONENTS, CURRENCY_NAMES, ISO4217_PUBLISHED, NO_MINOR_UNIT
from .encoding import Bytes, Field, FixedBytes, Schema, Text, UInt
from .identity import Identity, PublicIdentity
from .text import check_display_text

__all__ = [
    "CURRENCY_EXPONENTS",
    "CURRENCY_NAMES",
    "ISO4217_PUBLISHED",
    "MAX_AMOUNT_MINOR",
    "MAX_AMOUNT_TEXT",
    "MAX_MEMO_BYTES",
    "MAX_TIMESTAMP_MS",
    "RECEIPT_SCHEMA",
    "RECEIPT_SIGNATURE_CONTEXT",
    "SIGNED_RECEIPT_SCHEMA",
    "SIGNED_TRANSFER_SCHEMA",
    "TRANSFER_DIGEST_CONTEXT",
    "TRANSFER_ID_SIZE",
    "TRANSFER_SCHEMA",
    "TRANSFER_SIGNATURE_CONTEXT",
    "Comparison",
    "Receipt",
    "ReceiptStatus",
    "RejectReason",
    "SignedReceipt",
    "SignedTransfer",
    "Transfer",
    "TransferId",
    "accept",
    "check_currency",
    "check_memo",
    "compare",
    "format_amount",
    "parse_amount",
    "reject",
    "sign_receipt",
    "sign_transfer",
]

TransferId = NewType("TransferId", bytes)
"""16 random bytes chosen by the sender; the idempotency key of a transfer."""

TRANSFER_ID_SIZE = 16
MAX_AMOUNT_MINOR = 10**15
"""Largest amount in minor units (10 trillion EUR); also keeps sums far from 2**63."""
MAX_MEMO_BYTES = 280
"""Largest memo, counted in UTF-8 bytes (not characters)."""
MAX_AMOUNT_TEXT = 32
"""Longest amount text looked at; longer input is refused before any parsing."""
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
SIGNED_TRANSFER_SCHEMA = Schema(
    "signed-transfer",
    0x21,
    [
        Field(1, "transfer", Bytes(TRANSFER_SCHEMA.max_size)),
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


# --- currencies ---------------------------------------------------------------


def check_currency(code: str) -> str:
    """Return the upper-case ISO 4217 code for ``code``; :class:`CurrencyError` otherwise.

    Case is forgiven ("eur" -> "EUR") because people type codes either way and
    the two cannot mean different things; nothing else is (no whitespace, no
    symbols like "€"). :class:`Transfer` normalises its code with this
    function; on the wire only the upper-case form decodes.
    """
    if not isinstance(code, str):
        raise CurrencyError("a currency code must be text")
    if len(code) != 3:
        shown = repr(code) if len(code) <= 16 else f"{len(code)} characters"
        raise CurrencyError(f"a currency code is three letters (ISO 4217), not {shown}")
    if not (code.isascii() and code.isalpha()):
        raise CurrencyError(f"a currency code is three ASCII letters (ISO 4217), not {code!r}")
    upper = code.upper()
    if upper in NO_MINOR_UNIT:
        raise CurrencyError(
            f"{upper} has no minor unit (precious metal, fund or test code) "
            "and cannot be transferred"
        )
    if upper not in CURRENCY_EXPONENTS:
        raise CurrencyError(f"unknown currency code {upper!r} (not an active ISO 4217 code)")
    return upper


# --- amounts -------------------------------------------------------------------

_SPECIAL_NUMBERS = frozenset({"nan", "snan", "qnan", "inf", "infinity"})
_ASCII_DIGITS = frozenset("0123456789")
_EXPONENT_NOTATION = re.compile(r"[0-9.]+[eE][+-]?[0-9]+", re.ASCII)


def _bad_amount(text: str, problem: str) -> AmountError:
    return AmountError(f"invalid amount {text!r}: {problem}")


def parse_amount(text: str, currency: str) -> int:
    """Parse decimal amount text into minor units of ``currency``.

    The grammar (ASCII only, nothing stripped or guessed)::

        amount   = integer [ "." fraction ]
        integer  = "0" | nonzero-digit *digit
        fraction = 1*exponent(digit)        ; absent when the exponent is 0

    so ``"12"``, ``"12.5"`` and ``"12.50"`` are 1250 cents of EUR. Refused, each
    with a message naming the problem: empty text, whitespace anywhere, a sign
    (amounts are positive; the direction is given by sender and recipient),
    NaN/Infinity, exponents (``1e3``), grouping (``1,000``, ``1_000``), prefixes
    (``0x10``), non-ASCII digits (``"١٢"``: Python's ``int()`` would accept
    them), ``.5``, ``5.``, leading zeros, more decimals than the currency has
    (even zeros: ``"1.500"`` EUR), any decimals for a currency without minor
    unit (``"1.5"`` JPY), zero, and more than :data:`MAX_AMOUNT_MINOR`.
    Text longer than :data:`MAX_AMOUNT_TEXT` characters is refused before it
    is looked at. ``currency`` goes through :func:`check_currency`.
    """
    if not isinstance(text, str):
        raise AmountError("an amount must be given as text")
    if len(text) > MAX_AMOUNT_TEXT:
        raise AmountError(
            f"amount text is {len(text)} characters long; at most {MAX_AMOUNT_TEXT} are accepted"
        )
    code = check_currency(currency)
    exponent = CURRENCY_EXPONENTS[code]
    if not text:
        raise AmountError("the amount is empty")
    if any(ch.isspace() for ch in text):
        where = "leading or trailing" if text.strip() != text else "inner"
        raise _bad_amount(text, f"{where} whitespace is not accepted")
    if text.lstrip("+-").lower() in _SPECIAL_NUMBERS:
        raise _bad_amount(text, "not a finite decimal number")
    if text[0] == "-":
        raise _bad_amount(text, "negative amounts are not accepted (amounts are always positive)")
    if text[0] == "+":
        raise _bad_amount(text, "a sign is not accepted; write the digits only")
    if text[:2].lower() in ("0x", "0o", "0b"):
        raise _bad_amount(text, "only decimal digits are accepted (no 0x/0o/0b prefix)")
    for ch in text:
        if ch in _ASCII_DIGITS or ch == ".":
            continue
        if ch == ",":
            problem = "commas are not accepted: use '.' as the decimal point and no separators"
        elif ch == "_":
            problem = "underscores are not accepted as digit separators"
        elif _EXPONENT_NOTATION.fullmatch(text):
            problem = "exponent notation (like 1e3) is not accepted"
        elif unicodedata.decimal(ch, None) is not None or ch.isdigit():
            problem = "only ASCII digits 0-9 are accepted"
        else:
            problem = f"unexpected character {ch!r}; an amount is digits 0-9 and at most one '.'"
        raise _bad_amount(text, problem)
    if text.count(".") > 1:
        raise _bad_amount(text, "more than one decimal point")
    integer, dot, fraction = text.partition(".")
    if not integer:
        raise _bad_amount(text, f"a digit is needed before the decimal point (write 0{text})")
    if dot and not fraction:
        raise _bad_amount(text, f"digits are needed after the decimal point (write {integer})")
    if len(integer) > 1 and integer[0] == "0":
        raise _bad_amount(text, "leading zeros are not accepted")
    if dot and exponent == 0:
        raise _bad_amount(text, f"{code} has no minor unit, so the amount must be a whole number")
    if len(fraction) > exponent:
        raise _bad_amount(
            text, f"{code} has {exponent} decimal places, this amount has {len(fraction)}"
        )
    # Only ASCII digits remain, at most MAX_AMOUNT_TEXT of them: int() is exact and cheap.
    scale: int = 10**exponent
    minor = int(integer) * scale + int(fraction.ljust(exponent, "0") or "0")
    if minor == 0:
        raise _bad_amount(text, "the amount must be greater than zero")
    if minor > MAX_AMOUNT_MINOR:
        raise _bad_amount(text, f"the maximum is {format_amount(MAX_AMOUNT_MINOR, code)} {code}")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Minor units as decimal text with exactly the currency's decimals ("12.50", "1000").

    The inverse of :func:`parse_amount` for every valid amount. Zero and
    negative values are formatted too ("-3.20"), for balances; no grouping
    separators, so the text can be pasted back into :func:`parse_amount`.
    """
    code = check_currency(currency)
    if type(minor) is not int:
        raise AmountError("an amount in minor units must be an integer")
    exponent = CURRENCY_EXPONENTS[code]
    sign = "-" if minor < 0 else ""
    scale: int = 10**exponent
    whole, fraction = divmod(abs(minor), scale)
    if exponent == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def _check_amount(amount: int) -> None:
    if type(amount) is not int:
        raise AmountError("an amount in minor units must be an integer")
    if not 1 <= amount <= MAX_AMOUNT_MINOR:
        raise AmountError(f"amount must be between 1 and {MAX_AMOUNT_MINOR} minor units")


# --- memos ---------------------------------------------------------------------


def check_memo(memo: str) -> str:
    """Validate a memo and return it in Unicode NFC form; :class:`MemoError` otherwise.

    Why characters are refused — display spoofing. A memo is shown to the
    recipient next to the amount, in terminals, ledgers and CSV exports, so it
    follows the one rule for text people see,
    :func:`~p2ptransfer.protocol.text.check_display_text`: no control
    characters (escape sequences, newlines, NUL can rewrite a terminal line or
    forge CSV rows), no format characters (bidi overrides and isolates reorder
    what is displayed — "Trojan Source"; zero-width characters and joiners hide
    text), no line or paragraph separators, surrogates, unassigned or
    private-use characters, none of the characters that render blank, and no
    pile of more than four combining marks. A signed transfer whose memo breaks
    the rule does not decode.

    Why NFC: the same visible text has several Unicode spellings; normalising
    user input to NFC gives one byte string, so a re-typed memo does not turn a
    retry into a "different content" conflict. :class:`Transfer` normalises
    its memo with this function; a decoded transfer must already be NFC.

    The limit is :data:`MAX_MEMO_BYTES` UTF-8 *bytes*; longer text is refused
    on its character count before any normalisation or scanning work.
    """
    if not isinstance(memo, str):
        raise MemoError("a memo must be text")
    if len(memo) > MAX_MEMO_BYTES:
        raise MemoError(
            f"memo is {len(memo)} characters; at most {MAX_MEMO_BYTES} bytes of UTF-8 are allowed"
        )
    if memo.isascii() and memo.isprintable():
        # The common case, decided in C: printable ASCII holds no Cc character (the
        # only forbidden ones below U+0080), is its own NFC form and is one byte a
        # character, so the length check above already bounds its UTF-8 size.
        return memo
    check_display_text(memo, what="memo", max_chars=MAX_MEMO_BYTES, error=MemoError)
    normalised = unicodedata.normalize("NFC", memo)
    size = len(normalised.encode("utf-8"))
    if size > MAX_MEMO_BYTES:
        raise MemoError(f"memo is {size} bytes of UTF-8; at most {MAX_MEMO_BYTES} are allowed")
    return normalised


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


def _check_id(value: object, what: str) -> None:
    if type(value) is not bytes or len(value) != TRANSFER_ID_SIZE:
        raise InputError(f"{what} must be exactly {TRANSFER_ID_SIZE} bytes")


def _check_timestamp(value: object, what: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TIMESTAMP_MS:
        raise InputError(f"{what} must be unix time in milliseconds, 0 to {MAX_TIMESTAMP_MS}")


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
    to NFC (see :func:`check_memo`) — so a Transfer, once built, has exactly one
    encoding. :meth:`decode` is stricter: it accepts only bytes that are
    already canonical.
    """

    id: TransferId
    sender: str
    recipient: str
    amount: int
    currency: str
    memo: str
    created_at: int

    def __post_init__(self) -> None:
        _check_id(self.id, "a transfer id")
        sender = _parse_address(self.sender, "sender")
        recipient = _parse_address(self.recipient, "recipient")
        if sender == recipient:
            raise AddressError("sender and recipient are the same address")
        _check_amount(self.amount)
        currency = check_currency(self.currency)
        memo = check_memo(self.memo)
        _check_timestamp(self.created_at, "created_at")
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
        return TRANSFER_SCHEMA.encode(
            {
                "id": self.id,
                "sender": self.sender_identity.public_key,
                "recipient": self.recipient_identity.public_key,
                "amount": self.amount,
                "currency": self.currency,
                "memo": self.memo,
                "created_at": self.created_at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Transfer:
        """Decode and fully validate; any problem is a :class:`DecodeError`.

        A field that decodes but fails validation (unknown currency, control
        character in the memo, zero amount, ...) is reported as a DecodeError
        whose message names the field and whose ``__cause__`` is the
        InputError: bytes from a peer that are not a valid transfer are the
        peer breaking the protocol, not the local user's mistake.
        """
        values = TRANSFER_SCHEMA.decode(data)
        try:
            transfer = cls(
                id=TransferId(values["id"]),
                sender=PublicIdentity(values["sender"]).address,
                recipient=PublicIdentity(values["recipient"]).address,
                amount=values["amount"],
                currency=values["currency"],
                memo=values["memo"],
                created_at=values["created_at"],
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
        same; anything that differs is a different instruction.
        """
        return (
            self.sender == other.sender
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
        _check_id(self.transfer_id, "a receipt's transfer id")
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
        _check_timestamp(self.decided_at, "decided_at")
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
