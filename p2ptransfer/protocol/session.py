"""One peer-to-peer session: handshake, then transfers and receipts over records.

The relay moves opaque *payloads* between addresses. A session lives inside
those payloads as **frames**::

    frame = canonical Schema "session-frame": tag (16 bytes), kind (u8), body

The **tag** is chosen at random by the initiator and names the session, so
one peer can run many sessions at once, and several connections of one
address (the relay fans frames out to all of them) can tell which frames are
theirs. The tag is bound into the handshake prologue, so frames of one
session cannot be spliced into another.

The machine::

    initiator:  HANDSHAKING --msg2 ok--> OPEN --close()/CLOSE record--> CLOSED
    responder:  HANDSHAKING --msg3 ok--> OPEN --close()/CLOSE record--> CLOSED
    any state:  any error (bad frame, failed handshake, failed record) --> ERROR

ERROR and CLOSED are final: every later call raises. An ``ABORT`` frame is
unauthenticated (the relay could forge one), so it only ever *ends* a
session, which the relay could do anyway by dropping frames; it never
changes what was recorded.

Inside OPEN, records carry whole signed messages: a ``TRANSFER`` record one
:class:`~p2ptransfer.protocol.transfer.SignedTransfer`, a ``RECEIPT`` record one
:class:`~p2ptransfer.protocol.receipt.SignedReceipt`; a ``TRANSFERS`` or
``RECEIPTS`` record several of them, each still signed on its own (a record
is per-hop packaging, never what is signed or stored). Batches go only to a
peer that has shown it reads them, so a peer of the first version, which
knows only the single forms, never receives one: the initiator offers them
with a ``FEATURES`` frame (:meth:`Session.offer_batches`; a first-version
responder drops the unknown frame), the responder then answers in
``RECEIPTS`` records (also to an initiator that sent ``TRANSFERS``), and the
initiator sends ``TRANSFERS`` only once a ``RECEIPTS`` record has arrived
(:attr:`Session.peer_reads_batches`). Transfers flow only from
initiator to responder and receipts only back: a transfer arriving at the
initiator, or a receipt at the responder, is a remote protocol error and
moves the session to ERROR like any other bad record. This module decodes them
and checks what can be checked without the ledger (signature, that the
transfer's sender is the authenticated peer and its recipient is us); the
acceptance policy and idempotency belong to the runtime and the ledger.

Payment requests ride in the same sessions, in either direction: a
``REQUEST`` record carries one :class:`~p2ptransfer.protocol.request.SignedRequest`
(from its payee to its payer), a ``REQUEST_ANSWER`` record one
:class:`~p2ptransfer.protocol.request.SignedRequestAnswer` (a decline from the
payer, a cancellation from the payee). They get no receipt, so there is nobody
to answer a bad one: a request not signed by the authenticated peer as payee,
or not addressed to us as payer, and an answer not signed by the peer, are
remote protocol errors that end the session. Whether an answer closes a
request the store knows (:meth:`~p2ptransfer.protocol.request.SignedRequestAnswer.verify`)
is the runtime's check.

Pure: no I/O, no clock, no randomness; tags and ephemeral keys are passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import (
    DecodeError,
    HandshakeError,
    P2PTransferError,
    ProtocolError,
)
from . import reconcile
from .channel import MAX_PLAINTEXT, SecureChannel
from .encoding import Bytes, Field, FixedBytes, Schema, UInt
from .handshake import HandshakeResult, Initiator, Responder, Role
from .identity import Identity, PublicIdentity
from .receipt import RejectReason, SignedReceipt
from .request import SignedRequest, SignedRequestAnswer
from .transfer import SignedTransfer

__all__ = [
    "TAG_SIZE",
    "Aborted",
    "Established",
    "Event",
    "Feature",
    "Frame",
    "FrameKind",
    "PeerClosed",
    "ReceiptArrived",
    "ReconcileArrived",
    "RecordType",
    "RequestAnswerArrived",
    "RequestArrived",
    "Session",
    "SessionState",
    "TransferArrived",
    "decode_batch",
    "encode_batches",
    "frame_tag",
    "is_session_start",
    "parse_frame",
]

TAG_SIZE = 16
MAX_FRAME_BODY = 60 * 1024
_PROLOGUE = b"p2ptransfer/1 session\x00"


class FrameKind(enum.IntEnum):
    HELLO = 1  # handshake message 1 (initiator -> responder)
    HELLO_REPLY = 2  # handshake message 2
    HELLO_FINISH = 3  # handshake message 3
    RECORD = 4  # one sealed channel record
    ABORT = 5  # unauthenticated "I am giving up on this session"
    FEATURES = 6  # unauthenticated "I also read these record types" (initiator -> responder)


class Feature(enum.IntFlag):
    """What a FEATURES frame says its sender reads, beyond the version 1 record types."""

    BATCHES = 1  # TRANSFERS and RECEIPTS records


class RecordType(enum.IntEnum):
    TRANSFER = 0x11
    RECEIPT = 0x12
    CLOSE = 0x13
    RECONCILE = 0x14  # one message of a ledger reconciliation (protocol/reconcile.py)
    REQUEST = 0x15  # one signed payment request, payee -> payer (protocol/request.py)
    REQUEST_ANSWER = 0x16  # one signed decline (payer) or cancellation (payee)
    TRANSFERS = 0x17  # several signed transfers (see encode_batches)
    RECEIPTS = 0x19  # several signed receipts, answering TRANSFERS


_ITEM_LENGTH = 2  # u16be before each item of a batch record

FEATURES = Schema("session-features", 0x1A, [Field(1, "flags", UInt(32))], max_size=16)


FRAME = Schema(
    "session-frame",
    0x18,
    [
        Field(1, "tag", FixedBytes(TAG_SIZE)),
        Field(2, "kind", UInt(8)),
        Field(3, "body", Bytes(MAX_FRAME_BODY)),
    ],
    max_size=MAX_FRAME_BODY + 64,
)


class SessionState(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


# --- events ------------------------------------------------------------------


@dataclass(frozen=True)
class Established:
    """The handshake finished: ``peer`` proved its identity; records may flow."""

    peer: PublicIdentity
    session_id: bytes


@dataclass(frozen=True)
class TransferArrived:
    """A transfer record arrived. ``problem`` is set when it must be rejected as invalid.

    ``signed`` is always the decoded transfer: a record that does not even decode
    has nothing to bind a receipt to, so it ends the session instead of arriving.
    """

    signed: SignedTransfer
    problem: RejectReason | None


@dataclass(frozen=True)
class ReceiptArrived:
    """A receipt record arrived (not yet matched to a transfer: the runtime does that)."""

    signed: SignedReceipt


@dataclass(frozen=True)
class ReconcileArrived:
    """A reconcile message arrived (the exchange itself is :mod:`.reconcile`'s machine)."""

    message: reconcile.Message


@dataclass(frozen=True)
class RequestArrived:
    """A payment request arrived: signed by the peer as payee, addressed to us as payer.

    The signature is verified; what to do with it (store, quarantine a
    stranger's, ignore a repeat) is the runtime's business.
    """

    signed: SignedRequest


@dataclass(frozen=True)
class RequestAnswerArrived:
    """A decline or cancellation arrived, signed by the peer (signature verified).

    Not yet matched to a request: the runtime looks the request up and calls
    :meth:`~p2ptransfer.protocol.request.SignedRequestAnswer.verify` with it.
    """

    signed: SignedRequestAnswer


@dataclass(frozen=True)
class PeerClosed:
    """The peer ended the session cleanly."""


@dataclass(frozen=True)
class Aborted:
    """The peer (or someone on the path) sent ABORT; the session is over."""


Event = (
    Established
    | TransferArrived
    | ReceiptArrived
    | ReconcileArrived
    | RequestArrived
    | RequestAnswerArrived
    | PeerClosed
    | Aborted
)


def _decode_frame(payload: bytes) -> tuple[bytes, FrameKind, bytes]:
    values = FRAME.decode(payload)
    try:
        kind = FrameKind(values["kind"])
    except ValueError as exc:
        raise DecodeError(f"unknown session frame kind {values['kind']}") from exc
    return values["tag"], kind, values["body"]


def _encode_frame(tag: bytes, kind: FrameKind, body: bytes) -> bytes:
    return FRAME.encode({"tag": tag, "kind": int(kind), "body": body})


def frame_tag(payload: bytes) -> bytes:
    """The session tag of a payload, to route it to its session (DecodeError if malformed)."""
    return _decode_frame(payload)[0]


def is_session_start(payload: bytes) -> bool:
    """Whether a payload opens a new session (a HELLO frame)."""
    return _decode_frame(payload)[1] is FrameKind.HELLO


class Frame(NamedTuple):
    """A decoded payload: what the runtime routes on, and what the session then reads."""

    tag: bytes
    kind: FrameKind
    body: bytes


def parse_frame(payload: bytes) -> Frame:
    """Decode a payload once (DecodeError if malformed), to route it and then feed it.

    :meth:`Session.receive_frame` takes the result as it takes the bytes, so a
    runtime that must read the tag to find the session decodes each frame once.
    """
    return Frame(*_decode_frame(payload))


def abort_frame(tag: bytes) -> bytes:
    """An ABORT frame for ``tag``: what to answer a frame for an unknown session."""
    return _encode_frame(tag, FrameKind.ABORT, b"")


def encode_batches(items: list[bytes], limit: int = MAX_PLAINTEXT) -> list[bytes]:
    """Pack encoded messages into as few batch plaintexts as fit ``limit`` bytes each, in order.

    A batch plaintext is ``(length:u16be ‖ item)+``: one or more items, no
    padding, nothing after the last. ValueError for an item that could not
    travel alone (our misuse: signed messages are far smaller).
    """
    batches: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for item in items:
        need = _ITEM_LENGTH + len(item)
        if not item or need > limit:
            raise ValueError("a batch item must be 1 to limit - 2 bytes")
        if size + need > limit:
            batches.append(b"".join(parts))
            parts, size = [], 0
        parts.append(len(item).to_bytes(_ITEM_LENGTH, "big"))
        parts.append(item)
        size += need
    if parts:
        batches.append(b"".join(parts))
    return batches


def decode_batch(plaintext: bytes) -> list[bytes]:
    """The items of a batch plaintext (DecodeError unless it is exactly one or more items)."""
    if not plaintext:
        raise DecodeError("empty batch record")
    items: list[bytes] = []
    view = memoryview(plaintext)
    at, end = 0, len(plaintext)
    while at < end:
        if end - at < _ITEM_LENGTH:
            raise DecodeError("batch record ends inside an item length")
        length = int.from_bytes(view[at : at + _ITEM_LENGTH], "big")
        at += _ITEM_LENGTH
        if length == 0 or length > end - at:
            raise DecodeError("batch record item is empty or runs past the end")
        items.append(bytes(view[at : at + length]))
        at += length
    return items


class Session:
    """A session as a state machine over frames; see the module docstring."""

    def __init__(
        self,
        role: Role,
        identity: Identity,
        tag: bytes,
        handshake: Initiator | Responder,
    ) -> None:
        if len(tag) != TAG_SIZE:
            raise ValueError("session tag must be 16 bytes")
        self.role = role
        self.identity = identity
        self.tag = tag
        self.state = SessionState.HANDSHAKING
        self._handshake: Initiator | Responder | None = handshake
        self._channel: SecureChannel | None = None
        self.peer: PublicIdentity | None = None
        self.session_id: bytes | None = None
        self._outgoing: list[bytes] = []
        self._peer_batches = False
        """Responder: the initiator reads RECEIPTS (it said so, or it sent TRANSFERS).
        Initiator: the responder sent a RECEIPTS record, so it reads TRANSFERS too."""

    # --- construction ---------------------------------------------------------

    @classmethod
    def initiate(
        cls,
        identity: Identity,
        expected_peer: PublicIdentity,
        *,
        tag: bytes,
        ephemeral_private: bytes,
        nonce: bytes,
        max_records: int | None = None,
    ) -> Session:
        """Start a session to ``expected_peer``; the first frame is queued at once."""
        kwargs = {} if max_records is None else {"max_records": max_records}
        handshake = Initiator(
            identity,
            expected_peer,
            ephemeral_private=ephemeral_private,
            nonce=nonce,
            prologue=_PROLOGUE + tag,
            **kwargs,
        )
        session = cls(Role.INITIATOR, identity, tag, handshake)
        session._outgoing.append(_encode_frame(tag, FrameKind.HELLO, handshake.start()))
        return session

    @classmethod
    def respond(
        cls,
        identity: Identity,
        *,
        tag: bytes,
        ephemeral_private: bytes,
        max_records: int | None = None,
    ) -> Session:
        """A responder for the session ``tag``; feed it the HELLO frame next."""
        kwargs = {} if max_records is None else {"max_records": max_records}
        handshake = Responder(
            identity, ephemeral_private=ephemeral_private, prologue=_PROLOGUE + tag, **kwargs
        )
        return cls(Role.RESPONDER, identity, tag, handshake)

    # --- I/O-free interface ---------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Payloads to hand to the relay, in order; empties the queue."""
        out, self._outgoing = self._outgoing, []
        return out

    @property
    def is_open(self) -> bool:
        return self.state is SessionState.OPEN

    @property
    def finished(self) -> bool:
        return self.state in (SessionState.CLOSED, SessionState.ERROR)

    @property
    def needs_rekey(self) -> bool:
        """True when this session's key is near its record cap: finish and start a new one."""
        return self._channel is not None and self._channel.needs_rekey

    def receive_frame(self, payload: bytes | Frame) -> list[Event]:
        """Feed one payload from the relay (or its :func:`parse_frame`); returns what it meant.

        Raises a ProtocolError (and moves to ERROR) on anything not allowed.
        """
        self._require_live()
        try:
            tag, kind, body = payload if isinstance(payload, Frame) else _decode_frame(payload)
            if tag != self.tag:
                raise ProtocolError("frame belongs to another session")
            return self._dispatch(kind, body)
        except P2PTransferError:
            self._fail()
            raise

    def send_transfer(self, signed: SignedTransfer) -> None:
        self._seal(RecordType.TRANSFER, signed.encode())

    def send_receipt(self, signed: SignedReceipt) -> None:
        self._seal(RecordType.RECEIPT, signed.encode())

    def send_transfers(self, signed: list[SignedTransfer]) -> None:
        """Send several transfers in as few records as fit (one: the single form).

        Several go in TRANSFERS records: for a session where
        :attr:`peer_reads_batches` is true (the caller's check; a peer of the
        first version would end the session on them).
        """
        if len(signed) == 1:
            self.send_transfer(signed[0])
            return
        for plaintext in encode_batches([s.encode() for s in signed]):
            self._seal(RecordType.TRANSFERS, plaintext)

    @property
    def peer_reads_batches(self) -> bool:
        """Whether the peer has shown it reads batch records (see :meth:`offer_batches`).

        The initiator's :meth:`send_transfers` of several transfers is for a
        session where this is true: before, a peer of the first version would
        end the session on the TRANSFERS record.
        """
        return self._peer_batches

    def offer_batches(self) -> None:
        """Initiator: tell the responder that RECEIPTS records are welcome here.

        A FEATURES frame, queued after the HELLO. A responder of the first
        version drops it (an unknown frame kind is a malformed frame) and
        answers one RECEIPT a record; one that reads batches answers in
        RECEIPTS records from its first receipt on, and that authenticated
        record is what tells the initiator it may send TRANSFERS. The frame
        itself is unauthenticated: forged, it only makes a responder send
        RECEIPTS to an initiator that cannot read them (a session ended, as
        dropping frames would); stripped, the session runs on single records.
        """
        if self.role is not Role.INITIATOR:
            raise ValueError("only the initiator offers batches")
        self._require_live()
        body = FEATURES.encode({"flags": int(Feature.BATCHES)})
        self._outgoing.append(_encode_frame(self.tag, FrameKind.FEATURES, body))

    def send_receipts(self, signed: list[SignedReceipt]) -> None:
        """Send several receipts: batched if the peer reads batches, else one a record.

        To a peer that offered batches even a lone receipt goes as RECEIPTS:
        that record is how the initiator learns it may send TRANSFERS.
        """
        if not self._peer_batches:
            for receipt in signed:
                self.send_receipt(receipt)
            return
        for plaintext in encode_batches([r.encode() for r in signed]):
            self._seal(RecordType.RECEIPTS, plaintext)

    def send_reconcile(self, message: reconcile.Message) -> None:
        self._seal(RecordType.RECONCILE, message.encode())

    def send_request(self, signed: SignedRequest) -> None:
        """Send a payment request to the peer, who must be its payer (either role may)."""
        self._check_outgoing(signed.request.payee, signed.request.payer, "payment request")
        self._seal(RecordType.REQUEST, signed.encode())

    def send_request_answer(self, signed: SignedRequestAnswer) -> None:
        """Send our own decline or cancellation of a request to the peer (either role may)."""
        if signed.answer.signer != self.identity.address:
            raise ValueError("a request answer sent in a session must be our own")
        self._seal(RecordType.REQUEST_ANSWER, signed.encode())

    def close(self) -> None:
        """End the session cleanly, telling the peer (if the session is open)."""
        if self.state is SessionState.OPEN:
            self._seal(RecordType.CLOSE, b"")
        self._finish(SessionState.CLOSED)

    def abort(self) -> None:
        """Give up locally and tell the peer with an (unauthenticated) ABORT frame."""
        if not self.finished:
            self._outgoing.append(abort_frame(self.tag))
        self._fail()

    # --- internals ------------------------------------------------------------

    def _check_outgoing(self, author: str, addressee: str, what: str) -> None:
        """ValueError (our misuse, nothing sent) unless it is ours and for the peer."""
        if author != self.identity.address:
            raise ValueError(f"a {what} sent in a session must be our own")
        if self.peer is not None and addressee != self.peer.address:
            raise ValueError(f"this {what} is for someone other than the session's peer")

    def _require_live(self) -> None:
        if self.finished:
            raise ProtocolError(f"session is {self.state.value}")

    def _fail(self) -> None:
        self._finish(SessionState.ERROR)

    def _finish(self, state: SessionState) -> None:
        self.state = state
        self._handshake = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _seal(self, record_type: RecordType, plaintext: bytes) -> None:
        self._require_live()
        if self._channel is None:
            raise ProtocolError("session is not open yet")
        try:
            record = self._channel.seal(int(record_type), plaintext)
        except P2PTransferError:
            self._fail()
            raise
        self._outgoing.append(_encode_frame(self.tag, FrameKind.RECORD, record))

    def _dispatch(self, kind: FrameKind, body: bytes) -> list[Event]:
        if kind is FrameKind.ABORT:
            self._fail()
            return [Aborted()]
        if kind is FrameKind.FEATURES:
            if self.role is Role.INITIATOR:
                return []  # responders send none (yet): ignored, whatever it holds
            flags = FEATURES.decode(body)["flags"]  # bits we do not know: features we lack
            if flags & Feature.BATCHES:
                self._peer_batches = True
            return []
        if self.state is SessionState.HANDSHAKING:
            step = _HANDSHAKE_STEPS.get((self.role, kind))
            if step is None:
                raise HandshakeError(f"unexpected {kind.name} frame during the handshake")
            return step(self, body)
        if kind is FrameKind.HELLO_REPLY and self.role is Role.INITIATOR:
            # Another connection of the responder's address (the relay fans frames
            # out to all of them) answered our HELLO too; we already chose one.
            return []
        if kind is not FrameKind.RECORD:
            raise ProtocolError(f"unexpected {kind.name} frame in an open session")
        return self._on_record(body)

    def _initiator_on_reply(self, body: bytes) -> list[Event]:
        assert isinstance(self._handshake, Initiator)
        finish = self._handshake.receive(body)
        self._outgoing.append(_encode_frame(self.tag, FrameKind.HELLO_FINISH, finish))
        return self._established(self._handshake.result)

    def _responder_on_hello(self, body: bytes) -> list[Event]:
        assert isinstance(self._handshake, Responder)
        reply = self._handshake.receive(body)
        if reply is None:
            raise HandshakeError("responder produced no reply to HELLO")
        self._outgoing.append(_encode_frame(self.tag, FrameKind.HELLO_REPLY, reply))
        return []

    def _responder_on_finish(self, body: bytes) -> list[Event]:
        assert isinstance(self._handshake, Responder)
        self._handshake.receive(body)
        return self._established(self._handshake.result)

    def _established(self, result: HandshakeResult | None) -> list[Event]:
        if result is None:
            raise HandshakeError("handshake did not complete")
        self._handshake = None
        self._channel = result.channel
        self.peer = result.peer
        self.session_id = result.session_id
        self.state = SessionState.OPEN
        return [Established(result.peer, result.session_id)]

    def _on_record(self, body: bytes) -> list[Event]:
        assert self._channel is not None
        record_type, plaintext = self._channel.open(body)
        if record_type == RecordType.CLOSE:
            if plaintext:
                raise ProtocolError("CLOSE record must be empty")
            self._finish(SessionState.CLOSED)
            return [PeerClosed()]
        if record_type == RecordType.TRANSFER:
            if self.role is not Role.RESPONDER:
                raise ProtocolError("the peer sent a transfer in our session")
            return [self._on_transfer(plaintext)]
        if record_type == RecordType.RECEIPT:
            if self.role is not Role.INITIATOR:
                raise ProtocolError("the peer sent a receipt in its own session")
            return [ReceiptArrived(SignedReceipt.decode(plaintext))]
        if record_type == RecordType.TRANSFERS:
            if self.role is not Role.RESPONDER:
                raise ProtocolError("the peer sent a transfer in our session")
            self._peer_batches = True
            return [self._on_transfer(item) for item in decode_batch(plaintext)]
        if record_type == RecordType.RECEIPTS:
            if self.role is not Role.INITIATOR:
                raise ProtocolError("the peer sent a receipt in its own session")
            self._peer_batches = True
            return [ReceiptArrived(SignedReceipt.decode(item)) for item in decode_batch(plaintext)]
        if record_type == RecordType.RECONCILE:
            return [ReconcileArrived(reconcile.decode_message(plaintext))]
        if record_type == RecordType.REQUEST:
            return [self._on_request(plaintext)]
        if record_type == RecordType.REQUEST_ANSWER:
            return [self._on_request_answer(plaintext)]
        raise ProtocolError(f"unknown record type {record_type:#04x}")

    def _on_transfer(self, plaintext: bytes) -> TransferArrived:
        signed = SignedTransfer.decode(plaintext)
        assert self.peer is not None
        problem: RejectReason | None = None
        if signed.transfer.sender != self.peer.address:
            # Signed by, or claiming, somebody other than who proved themselves in the handshake.
            problem = RejectReason.INVALID
        elif signed.transfer.recipient != self.identity.address:
            problem = RejectReason.WRONG_RECIPIENT
        else:
            try:
                signed.verify()
            except P2PTransferError:
                problem = RejectReason.INVALID
        return TransferArrived(signed, problem)

    def _on_request(self, plaintext: bytes) -> RequestArrived:
        signed = SignedRequest.decode(plaintext)
        assert self.peer is not None
        if signed.request.payee != self.peer.address:
            raise ProtocolError("the peer sent a payment request that asks for someone else")
        if signed.request.payer != self.identity.address:
            raise ProtocolError("the peer sent a payment request addressed to someone else")
        signed.verify()
        return RequestArrived(signed)

    def _on_request_answer(self, plaintext: bytes) -> RequestAnswerArrived:
        signed = SignedRequestAnswer.decode(plaintext)
        assert self.peer is not None
        if signed.answer.signer != self.peer.address:
            raise ProtocolError("the peer sent a request answer signed by someone else")
        signed.verify_signature()
        return RequestAnswerArrived(signed)


_HANDSHAKE_STEPS: dict[tuple[Role, FrameKind], Callable[[Session, bytes], list[Event]]] = {
    (Role.INITIATOR, FrameKind.HELLO_REPLY): Session._initiator_on_reply,
    (Role.RESPONDER, FrameKind.HELLO): Session._responder_on_hello,
    (Role.RESPONDER, FrameKind.HELLO_FINISH): Session._responder_on_finish,
}
