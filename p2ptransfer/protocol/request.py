"""Payment requests: "please pay me", signed by the payee, single use, expiring.

A :class:`PaymentRequest` says "``payer``, please pay ``payee`` ``amount``
minor units of ``currency``", under a 128-bit id the payee chose at random,
valid from ``created_at`` until ``expires_at`` (unix ms). The payee signs it
(:class:`SignedRequest`); it travels live (a ``REQUEST`` session record),
through the mailbox (:data:`.envelope.MailKind.REQUEST`) or as text
(:func:`request_code`, bech32m with the prefix ``p2ptreq``).

The payer answers in one of two ways:

* **pay** — an ordinary transfer whose ``request_id`` is the request's id
  (:class:`.transfer.Transfer`, the v2 encoding). The payee judges it with
  :func:`check_payment`, which must say None before the normal acceptance
  policy runs, and records the transfer and "paid" in one transaction, so a
  request is paid at most once by the same idempotency rules as transfers;
* **decline** — a :class:`SignedRequestAnswer` of kind DECLINED. The payee
  may likewise withdraw its request with an answer of kind CANCELLED.

Why each rule is here:

* **The payee's clock decides expiry, strictly.** ``now_ms >= expires_at``
  is expired, with no tolerance for skew: the payee both wrote
  ``expires_at`` and reads the clock that judges it, so there is no second
  clock to be tolerant of. The payer's clock only informs the payer.
* **Exact match.** A paying transfer must name the request's payer as
  sender, its payee as recipient, and exactly its amount and currency;
  anything else is :attr:`.receipt.RejectReason.REQUEST_MISMATCH`. The memo
  is free (the payer may write its own).
* **Bounded.** A request is valid for at most :data:`MAX_EXPIRY_MS` (90
  days), so neither side keeps an open obligation forever.
* **Domain separation.** Requests, their digests and answers are signed or
  hashed under their own context strings, distinct from every transfer one.

Pure: no I/O, no clock, no randomness; ids and times come from the caller.
docs/protocol.md ("Payment requests") gives the bytes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import cached_property

from ..errors import (
    AddressError,
    DecodeError,
    InputError,
    ProtocolError,
    SignatureError,
)
from . import bech32m, primitives
from .amounts import MAX_MEMO_BYTES, check_amount, check_currency, check_memo
from .encoding import Bytes, Field, FixedBytes, Schema, Text, UInt
from .identity import ADDRESS_HRP, Identity, PublicIdentity
from .receipt import RejectReason
from .transfer import (
    Transfer,
    _cached,
    _check_signature,
    _parse_address,
    check_timestamp,
    check_transfer_id,
)

__all__ = [
    "MAX_EXPIRY_MS",
    "MAX_REQUEST_CODE_LENGTH",
    "REQUEST_ANSWER_SCHEMA",
    "REQUEST_ANSWER_SIGNATURE_CONTEXT",
    "REQUEST_CODE_HRP",
    "REQUEST_DIGEST_CONTEXT",
    "REQUEST_ID_SIZE",
    "REQUEST_SCHEMA",
    "REQUEST_SIGNATURE_CONTEXT",
    "SIGNED_REQUEST_ANSWER_SCHEMA",
    "SIGNED_REQUEST_SCHEMA",
    "PaymentRequest",
    "RequestAnswer",
    "RequestAnswerKind",
    "RequestState",
    "SignedRequest",
    "SignedRequestAnswer",
    "check_payment",
    "parse_expiry",
    "parse_request_code",
    "request_code",
    "sign_answer",
    "sign_request",
]

REQUEST_ID_SIZE = 16
"""16 random bytes chosen by the payee; a paying transfer carries them as ``request_id``."""

MAX_EXPIRY_MS = 90 * 24 * 3600 * 1000
"""The longest a request may stay open: 90 days, in milliseconds."""

REQUEST_SIGNATURE_CONTEXT = b"p2ptransfer-request-v1\x00"
REQUEST_DIGEST_CONTEXT = b"p2ptransfer-request-digest-v1\x00"
REQUEST_ANSWER_SIGNATURE_CONTEXT = b"p2ptransfer-request-answer-v1\x00"

REQUEST_CODE_HRP = "p2ptreq"
"""The bech32m prefix of a request code; bound into its checksum."""

_KEY = primitives.ED25519_KEY_SIZE
_SIG = primitives.ED25519_SIG_SIZE
_DIGEST_SIZE = 32

REQUEST_SCHEMA = Schema(
    "payment-request",
    0xA0,
    [
        Field(1, "id", FixedBytes(REQUEST_ID_SIZE)),
        Field(2, "payee", FixedBytes(_KEY)),
        Field(3, "payer", FixedBytes(_KEY)),
        Field(4, "amount", UInt(64)),
        Field(5, "currency", Text(3)),
        Field(6, "memo", Text(MAX_MEMO_BYTES)),
        Field(7, "created_at", UInt(64)),
        Field(8, "expires_at", UInt(64)),
    ],
    max_size=512,
)
SIGNED_REQUEST_SCHEMA = Schema(
    "signed-request",
    0xA1,
    [
        Field(1, "request", Bytes(REQUEST_SCHEMA.max_size)),
        Field(2, "signature", FixedBytes(_SIG)),
    ],
    max_size=640,
)
REQUEST_ANSWER_SCHEMA = Schema(
    "request-answer",
    0xA2,
    [
        Field(1, "request_id", FixedBytes(REQUEST_ID_SIZE)),
        Field(2, "request_digest", FixedBytes(_DIGEST_SIZE)),
        Field(3, "kind", UInt(8)),
        Field(4, "signer", FixedBytes(_KEY)),
        Field(5, "at", UInt(64)),
    ],
    max_size=256,
)
SIGNED_REQUEST_ANSWER_SCHEMA = Schema(
    "signed-request-answer",
    0xA3,
    [
        Field(1, "answer", Bytes(REQUEST_ANSWER_SCHEMA.max_size)),
        Field(2, "signature", FixedBytes(_SIG)),
    ],
    max_size=384,
)

_CODE_PREFIX = REQUEST_CODE_HRP + "1"
MAX_REQUEST_CODE_LENGTH = len(_CODE_PREFIX) + -(-SIGNED_REQUEST_SCHEMA.max_size * 8 // 5) + 6
"""1038: the longest request code (prefix, data, checksum); longer text is refused unread."""

_CODE_NOUN = "payment request code"


# --- requests ------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentRequest:
    """``payer``, please pay ``payee`` ``amount`` minor units of ``currency``.

    Validated on construction like :class:`.transfer.Transfer` (the same
    amount, currency and memo rules, and the same normalising: canonical
    addresses, upper-case currency, NFC memo), plus: payee and payer differ,
    ``created_at < expires_at <= created_at + MAX_EXPIRY_MS``. Bad values
    raise an :class:`InputError` subclass; :meth:`decode` accepts only
    canonical bytes.
    """

    id: bytes
    payee: str
    payer: str
    amount: int
    currency: str
    memo: str
    created_at: int
    expires_at: int

    def __post_init__(self) -> None:
        check_transfer_id(self.id, "a payment request id")
        payee = _parse_address(self.payee, "payee")
        payer = _parse_address(self.payer, "payer")
        if payee == payer:
            raise AddressError("payee and payer are the same address")
        check_amount(self.amount)
        currency = check_currency(self.currency)
        memo = check_memo(self.memo)
        check_timestamp(self.created_at, "created_at")
        check_timestamp(self.expires_at, "expires_at")
        if self.expires_at <= self.created_at:
            raise InputError("a payment request must expire after it is created")
        if self.expires_at - self.created_at > MAX_EXPIRY_MS:
            raise InputError("a payment request may stay open for at most 90 days")
        object.__setattr__(self, "payee", payee.address)
        object.__setattr__(self, "payer", payer.address)
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "memo", memo)
        self.__dict__["payee_identity"] = payee
        self.__dict__["payer_identity"] = payer

    @cached_property
    def payee_identity(self) -> PublicIdentity:
        """The payee's public key (whose signature the request needs)."""
        return PublicIdentity.from_address(self.payee)

    @cached_property
    def payer_identity(self) -> PublicIdentity:
        """The payer's public key (whose signature a decline needs)."""
        return PublicIdentity.from_address(self.payer)

    def encode(self) -> bytes:
        """The canonical bytes: what is signed and hashed (computed once)."""
        return _cached(self, "_encoded", self._encode)

    def _encode(self) -> bytes:
        return REQUEST_SCHEMA.encode(
            {
                "id": self.id,
                "payee": self.payee_identity.public_key,
                "payer": self.payer_identity.public_key,
                "amount": self.amount,
                "currency": self.currency,
                "memo": self.memo,
                "created_at": self.created_at,
                "expires_at": self.expires_at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> PaymentRequest:
        """Decode and fully validate; any problem is a :class:`DecodeError`."""
        values = REQUEST_SCHEMA.decode(data)
        try:
            request = cls(
                id=values["id"],
                payee=PublicIdentity(values["payee"]).address,
                payer=PublicIdentity(values["payer"]).address,
                amount=values["amount"],
                currency=values["currency"],
                memo=values["memo"],
                created_at=values["created_at"],
                expires_at=values["expires_at"],
            )
        except InputError as exc:
            raise DecodeError(f"payment request: {exc}") from exc
        if request.currency != values["currency"]:
            raise DecodeError("payment request: currency code must be upper case on the wire")
        if request.memo != values["memo"]:
            raise DecodeError("payment request: memo must be in Unicode NFC on the wire")
        return request

    @property
    def digest(self) -> bytes:
        """SHA-256 over the digest context and the canonical bytes; answers carry it."""
        return _cached(
            self, "_digest", lambda: primitives.sha256(REQUEST_DIGEST_CONTEXT, self.encode())
        )

    def signing_message(self) -> bytes:
        """The bytes the payee signs: the request signature context, then the body."""
        return REQUEST_SIGNATURE_CONTEXT + self.encode()


@dataclass(frozen=True)
class SignedRequest:
    """A request with the payee's Ed25519 signature; decoding does not verify."""

    request: PaymentRequest
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.request, PaymentRequest):
            raise InputError("a SignedRequest needs a PaymentRequest")
        _check_signature(self.signature)

    @property
    def id(self) -> bytes:
        return self.request.id

    @property
    def digest(self) -> bytes:
        """The request's digest (the signature is not part of it)."""
        return self.request.digest

    def encode(self) -> bytes:
        """The bytes of the record, the mail, the code and the stored row (computed once)."""
        return _cached(
            self,
            "_encoded",
            lambda: SIGNED_REQUEST_SCHEMA.encode(
                {"request": self.request.encode(), "signature": self.signature}
            ),
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedRequest:
        """Decode and validate the request; call :meth:`verify` before trusting it."""
        values = SIGNED_REQUEST_SCHEMA.decode(data)
        return cls(PaymentRequest.decode(values["request"]), values["signature"])

    def verify(self) -> None:
        """Raise :class:`SignatureError` unless the key in ``request.payee`` signed it."""
        try:
            self.request.payee_identity.verify(self.signature, self.request.signing_message())
        except SignatureError as exc:
            raise SignatureError(
                f"payment request {self.id.hex()} is not signed by its payee {self.request.payee}"
            ) from exc


def sign_request(identity: Identity, request: PaymentRequest) -> SignedRequest:
    """Sign ``request`` as its payee; ValueError if ``identity`` is not the payee."""
    if identity.address != request.payee:
        raise ValueError("only the request's payee can sign it")
    return SignedRequest(request, identity.sign(request.signing_message()))


# --- answers: decline (payer) and cancel (payee) ---------------------------------


class RequestAnswerKind(enum.IntEnum):
    """How a request was closed without payment. The numbers are on the wire: never renumber."""

    DECLINED = 1
    """By the payer: "I will not pay this"."""
    CANCELLED = 2
    """By the payee: "do not pay this any more"."""


_ANSWER_SIGNER_ROLE = {RequestAnswerKind.DECLINED: "payer", RequestAnswerKind.CANCELLED: "payee"}


@dataclass(frozen=True)
class RequestAnswer:
    """A decline or cancellation of one request, bound to its id and digest.

    ``signer`` must be the payer for DECLINED and the payee for CANCELLED;
    that needs the request, so :meth:`SignedRequestAnswer.verify` checks it.
    """

    request_id: bytes
    request_digest: bytes
    kind: RequestAnswerKind
    signer: str
    at: int

    def __post_init__(self) -> None:
        check_transfer_id(self.request_id, "a payment request id")
        if type(self.request_digest) is not bytes or len(self.request_digest) != _DIGEST_SIZE:
            raise InputError(f"a request digest must be exactly {_DIGEST_SIZE} bytes")
        try:
            kind = RequestAnswerKind(self.kind)
        except ValueError as exc:
            raise InputError(f"unknown request answer kind: {exc}") from exc
        signer = _parse_address(self.signer, "signer")
        check_timestamp(self.at, "at")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "signer", signer.address)
        self.__dict__["signer_identity"] = signer

    @cached_property
    def signer_identity(self) -> PublicIdentity:
        return PublicIdentity.from_address(self.signer)

    def encode(self) -> bytes:
        """The canonical bytes: what is signed and stored (computed once)."""
        return _cached(self, "_encoded", self._encode)

    def _encode(self) -> bytes:
        return REQUEST_ANSWER_SCHEMA.encode(
            {
                "request_id": self.request_id,
                "request_digest": self.request_digest,
                "kind": int(self.kind),
                "signer": self.signer_identity.public_key,
                "at": self.at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> RequestAnswer:
        """Decode and fully validate; any problem is a :class:`DecodeError`."""
        values = REQUEST_ANSWER_SCHEMA.decode(data)
        try:
            return cls(
                request_id=values["request_id"],
                request_digest=values["request_digest"],
                kind=values["kind"],
                signer=PublicIdentity(values["signer"]).address,
                at=values["at"],
            )
        except InputError as exc:
            raise DecodeError(f"request answer: {exc}") from exc

    def signing_message(self) -> bytes:
        """The bytes the signer signs: the answer signature context, then the body."""
        return REQUEST_ANSWER_SIGNATURE_CONTEXT + self.encode()


@dataclass(frozen=True)
class SignedRequestAnswer:
    """An answer with its signer's Ed25519 signature; decoding does not verify."""

    answer: RequestAnswer
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.answer, RequestAnswer):
            raise InputError("a SignedRequestAnswer needs a RequestAnswer")
        _check_signature(self.signature)

    @property
    def request_id(self) -> bytes:
        return self.answer.request_id

    @property
    def kind(self) -> RequestAnswerKind:
        return self.answer.kind

    def encode(self) -> bytes:
        """The bytes of the record, the mail and the stored row (computed once)."""
        return _cached(
            self,
            "_encoded",
            lambda: SIGNED_REQUEST_ANSWER_SCHEMA.encode(
                {"answer": self.answer.encode(), "signature": self.signature}
            ),
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedRequestAnswer:
        """Decode and validate the answer; call :meth:`verify` before trusting it."""
        values = SIGNED_REQUEST_ANSWER_SCHEMA.decode(data)
        return cls(RequestAnswer.decode(values["answer"]), values["signature"])

    def verify_signature(self) -> None:
        """Raise :class:`SignatureError` unless ``answer.signer`` signed this answer.

        On its own this proves only who wrote it; :meth:`verify` also proves
        it closes a given request and that the signer may close it that way.
        """
        try:
            self.answer.signer_identity.verify(self.signature, self.answer.signing_message())
        except SignatureError as exc:
            raise SignatureError(
                f"answer to payment request {self.request_id.hex()} is not signed by "
                f"its signer {self.answer.signer}"
            ) from exc

    def verify(self, signed_request: SignedRequest | PaymentRequest) -> None:
        """Check that this is a valid decline or cancellation of exactly ``signed_request``.

        In order: the signature is by ``answer.signer`` (SignatureError); the
        signer is the request's payer for DECLINED, its payee for CANCELLED
        (SignatureError); the request id and digest match (ProtocolError).
        """
        request = (
            signed_request.request if isinstance(signed_request, SignedRequest) else signed_request
        )
        answer = self.answer
        self.verify_signature()
        role = _ANSWER_SIGNER_ROLE[answer.kind]
        allowed = request.payer if answer.kind is RequestAnswerKind.DECLINED else request.payee
        if answer.signer != allowed:
            raise SignatureError(
                f"a {answer.kind.name.lower()} answer must be signed by the request's {role} "
                f"{allowed}, not by {answer.signer}"
            )
        if not primitives.constant_time_equal(answer.request_id, request.id):
            raise ProtocolError(
                f"answer closes payment request {answer.request_id.hex()}, not {request.id.hex()}"
            )
        if not primitives.constant_time_equal(answer.request_digest, request.digest):
            raise ProtocolError(
                f"answer to payment request {request.id.hex()} is for different content "
                "(digest mismatch)"
            )


def sign_answer(
    identity: Identity, signed_request: SignedRequest, kind: RequestAnswerKind, at: int
) -> SignedRequestAnswer:
    """``identity``'s signed decline (as the payer) or cancellation (as the payee).

    :class:`InputError` (the user's mistake, worded for them) when
    ``identity`` is neither party, or is the party that may not give this
    answer: only the payer declines, only the payee cancels.
    """
    kind = RequestAnswerKind(kind)
    request = signed_request.request
    me = identity.address
    if me not in (request.payee, request.payer):
        raise InputError(
            f"you are neither the payee nor the payer of payment request {request.id.hex()}"
        )
    if kind is RequestAnswerKind.DECLINED and me != request.payer:
        raise InputError(
            f"only the payer can decline payment request {request.id.hex()}; "
            "you asked for it, so cancel it instead"
        )
    if kind is RequestAnswerKind.CANCELLED and me != request.payee:
        raise InputError(
            f"only the payee can cancel payment request {request.id.hex()}; "
            "it asks you to pay, so decline it instead"
        )
    answer = RequestAnswer(
        request_id=request.id,
        request_digest=request.digest,
        kind=kind,
        signer=me,
        at=at,
    )
    return SignedRequestAnswer(answer, identity.sign(answer.signing_message()))


# --- the text code ---------------------------------------------------------------


def request_code(signed: SignedRequest) -> str:
    """The copy-pasteable text of a signed request: bech32m, prefix ``p2ptreq``.

    Longer than bech32m's usual 90 characters (the checksum still catches
    typos; the signature inside carries the integrity).
    """
    return bech32m.encode(REQUEST_CODE_HRP, bech32m.to_words(signed.encode()), max_length=None)


def parse_request_code(text: str) -> SignedRequest:
    """The signed request in ``text``, its signature verified.

    Every problem is an :class:`InputError` with one sentence for the user:
    an address or other text where a code was expected, a mistyped character
    (the checksum), text too long, bytes that are not a request, or a request
    not signed by its payee. The caller still checks that the payer is itself.
    """
    if not isinstance(text, str):
        raise InputError(f"a {_CODE_NOUN} must be text")
    stripped = text.strip()
    if stripped[: len(ADDRESS_HRP) + 1].lower() == ADDRESS_HRP + "1":
        raise InputError(f"this is an address, not a {_CODE_NOUN} (those start with p2ptreq1)")
    if len(stripped) > MAX_REQUEST_CODE_LENGTH:
        raise InputError(
            f"{_CODE_NOUN} is too long: {len(stripped)} characters, "
            f"at most {MAX_REQUEST_CODE_LENGTH}"
        )
    words = bech32m.decode(stripped, REQUEST_CODE_HRP, max_length=None, noun=_CODE_NOUN)
    data = bech32m.from_words(words, noun=_CODE_NOUN)
    try:
        signed = SignedRequest.decode(data)
    except DecodeError as exc:
        raise InputError(f"{_CODE_NOUN} does not hold a valid payment request ({exc})") from exc
    try:
        signed.verify()
    except SignatureError as exc:
        raise InputError(
            f"{_CODE_NOUN} holds a payment request not signed by its payee: "
            "it was altered or forged"
        ) from exc
    return signed


# --- expiry text ------------------------------------------------------------------

_UNIT_MS = {"s": 1000, "m": 60 * 1000, "h": 3600 * 1000, "d": 24 * 3600 * 1000}
_EXPIRY = re.compile(r"([0-9]+)([smhd])", re.ASCII)
_MAX_EXPIRY_TEXT = 16
_EXPIRY_FORM = "a whole number followed by s, m, h or d (e.g. 90s, 15m, 24h, 7d)"


def parse_expiry(text: str) -> int:
    """How long a request stays open, in milliseconds, from ``--expires`` text.

    ``N`` then one unit — ``s`` seconds, ``m`` minutes, ``h`` hours, ``d``
    days — with N a positive whole number (``90s``, ``15m``, ``24h``, ``7d``)
    and the total at most 90 days. Nothing else is read: no sign, no
    fraction, no space, no upper-case unit (``M`` could mean months), no
    other unit. Each refusal is an :class:`InputError` naming the problem.
    """
    if not isinstance(text, str):
        raise InputError("an expiry must be text")
    shown = text if len(text) <= _MAX_EXPIRY_TEXT else text[:_MAX_EXPIRY_TEXT] + "…"
    if len(text) > _MAX_EXPIRY_TEXT:
        raise InputError(f"invalid expiry {shown!r}: too long")
    match = _EXPIRY.fullmatch(text)
    if match is None:
        raise InputError(f"invalid expiry {shown!r}: expected {_EXPIRY_FORM}")
    count = int(match.group(1))
    if count == 0:
        raise InputError(f"invalid expiry {shown!r}: must be greater than zero")
    ms = count * _UNIT_MS[match.group(2)]
    if ms > MAX_EXPIRY_MS:
        raise InputError(f"invalid expiry {shown!r}: a request may stay open for at most 90 days")
    return ms


# --- the payee's judgement of a paying transfer -----------------------------------


class RequestState(enum.Enum):
    """Where a request stands, as either side's store keeps it (values shown in JSON)."""

    OPEN = "open"
    PAID = "paid"
    EXPIRED = "expired"
    DECLINED = "declined"
    CANCELLED = "cancelled"


def check_payment(
    request: PaymentRequest, state: RequestState, transfer: Transfer, now_ms: int
) -> RejectReason | None:
    """Why the payee must refuse ``transfer`` as payment of ``request``, or None to go on.

    The payee's receiver calls this for a new transfer (not a retry of one
    already recorded: transfer-id idempotency answers those first) whose
    ``request_id`` names ``request``, with the request's stored ``state`` and
    its own clock. The checks, in this order, first failure wins:

    1. sender is the request's payer, recipient its payee, amount and
       currency equal -> else REQUEST_MISMATCH (the transfer itself is wrong,
       whatever the request's state);
    2. state PAID -> REQUEST_PAID (the answer the payer most needs, even if
       the request has since expired);
    3. state CANCELLED or DECLINED -> REQUEST_CANCELLED;
    4. state EXPIRED, or ``now_ms >= expires_at`` (strict, no skew
       tolerance) -> REQUEST_EXPIRED.

    None means the request is satisfied; the ordinary acceptance policy
    still runs, and an accepted transfer marks the request PAID in the same
    transaction. ValueError if ``transfer`` does not name ``request`` (the
    caller looked up the wrong one); a transfer naming a request the payee
    does not have is answered REQUEST_MISMATCH by the caller.
    """
    if transfer.request_id is None or not primitives.constant_time_equal(
        transfer.request_id, request.id
    ):
        raise ValueError("check_payment needs the request the transfer names")
    state = RequestState(state)
    check_timestamp(now_ms, "now")
    if (
        transfer.sender != request.payer
        or transfer.recipient != request.payee
        or transfer.amount != request.amount
        or transfer.currency != request.currency
    ):
        return RejectReason.REQUEST_MISMATCH
    if state is RequestState.PAID:
        return RejectReason.REQUEST_PAID
    if state in (RequestState.CANCELLED, RequestState.DECLINED):
        return RejectReason.REQUEST_CANCELLED
    if state is RequestState.EXPIRED or now_ms >= request.expires_at:
        return RejectReason.REQUEST_EXPIRED
    return None
