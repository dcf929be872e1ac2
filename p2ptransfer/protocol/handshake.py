"""The session handshake: SIGMA-I, shaped like Noise XX, as two pure state machines.

Three messages; I is the initiator (who dialled), R the responder::

    msg1  I -> R   version, suite, e_I, nonce_I                      (clear)
    msg2  R -> I   e_R, AEAD_hs_r2i(identity_R, Sig_R("p2ptransfer responder" ‖ TH))
    msg3  I -> R        AEAD_hs_i2r(identity_I, Sig_I("p2ptransfer initiator" ‖ TH))

Every byte is absorbed into a SHA-256 transcript hash TH that starts from a
prologue naming the protocol, its version and the cipher suite (plus the
caller's context, e.g. the relay and both addresses), so a downgraded,
edited, spliced or reflected message changes TH and the next AEAD or
signature check fails. The X25519 ephemerals give forward secrecy; the
identities travel encrypted, so a passive observer (the relay) never sees
them; the role labels in the signed strings mean a signature made as one
role is useless in the other. docs/protocol.md gives the byte layout and
key schedule; security.md §Handshake gives the sources.

The machines (h11 style: :data:`TRANSITIONS` is the whole truth, a missing
entry is an illegal move)::

    Initiator  START --start()--> AWAIT_RESPONSE --receive(msg2)--> DONE
    Responder  START --receive(msg1)--> AWAIT_FINISH --receive(msg3)--> DONE

Anything wrong — a malformed, out-of-order or unauthenticated message, a
low-order point, the wrong identity, a call in the wrong state — moves the
machine to ERROR for good, drops every secret it held, and raises a
:class:`HandshakeError` (or its subclass :class:`IdentityMismatch`). Only a
DONE machine has a :attr:`result`. The initiator checks the responder's
identity against the one it dialled *before* it sends msg3, so it never
proves its own identity to an impostor; the responder reports the
initiator's identity in the result and the runtime checks its pins before
reading any transfer.

No randomness is made here: ephemeral private keys and the nonce are
passed in, so tests pin them and compare exact bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    ChannelError,
    DecodeError,
    HandshakeError,
    IdentityMismatch,
    P2PTransferError,
    SignatureError,
)
from . import primitives
from .channel import DEFAULT_MAX_RECORDS, DirectionKeys, SecureChannel
from .encoding import Field, FixedBytes, Schema, UInt
from .identity import Identity, PublicIdentity

__all__ = [
    "HANDSHAKE_AUTH",
    "HANDSHAKE_FINISH",
    "HANDSHAKE_INIT",
    "HANDSHAKE_RESPONSE",
    "INITIATOR_LABEL",
    "MAX_PROLOGUE",
    "NONCE_SIZE",
    "PROTOCOL_NAME",
    "PROTOCOL_VERSION",
    "RESPONDER_LABEL",
    "SUITE_X25519_ED25519_AES256GCM_SHA256",
    "SUPPORTED_SUITES",
    "SUPPORTED_VERSIONS",
    "TRANSITIONS",
    "HandshakeResult",
    "Initiator",
    "Responder",
    "Role",
    "State",
    "absorb",
    "handshake_keys",
    "initial_transcript",
    "traffic_keys",
]

PROTOCOL_NAME = b"p2ptransfer/1"
PROTOCOL_VERSION = 1
SUITE_X25519_ED25519_AES256GCM_SHA256 = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
SUPPORTED_SUITES = frozenset({SUITE_X25519_ED25519_AES256GCM_SHA256})

NONCE_SIZE = 32
MAX_PROLOGUE = 4096
"""Caller context hashed into TH0; bounded so a hostile caller input stays cheap."""

RESPONDER_LABEL = b"p2ptransfer responder"
INITIATOR_LABEL = b"p2ptransfer initiator"

# HKDF-Expand labels. hs = handshake secret, ms = master secret.
_HS_I2R = b"p2ptransfer/1 hs i2r key"
_HS_R2I = b"p2ptransfer/1 hs r2i key"
_TRAFFIC_I2R_KEY = b"p2ptransfer/1 i2r key"
_TRAFFIC_I2R_IV = b"p2ptransfer/1 i2r iv"
_TRAFFIC_R2I_KEY = b"p2ptransfer/1 r2i key"
_TRAFFIC_R2I_IV = b"p2ptransfer/1 r2i iv"

# Each handshake key seals exactly one message, so a fixed nonce is safe.
_HS_NONCE = bytes(primitives.AEAD_NONCE_SIZE)

_AUTH_SIZE = 1 + (5 + 32) + (5 + primitives.ED25519_SIG_SIZE)
_SEALED_AUTH_SIZE = _AUTH_SIZE + primitives.AEAD_TAG_SIZE

HANDSHAKE_INIT = Schema(
    "handshake-init",
    0x01,
    [
        Field(1, "version", UInt(8)),
        Field(2, "suite", UInt(8)),
        Field(3, "ephemeral", FixedBytes(primitives.X25519_KEY_SIZE)),
        Field(4, "nonce", FixedBytes(NONCE_SIZE)),
    ],
    max_size=128,
)

HANDSHAKE_RESPONSE = Schema(
    "handshake-response",
    0x02,
    [
        Field(1, "ephemeral", FixedBytes(primitives.X25519_KEY_SIZE)),
        Field(2, "sealed", FixedBytes(_SEALED_AUTH_SIZE)),
    ],
    max_size=256,
)

HANDSHAKE_FINISH = Schema(
    "handshake-finish",
    0x03,
    [Field(1, "sealed", FixedBytes(_SEALED_AUTH_SIZE))],
    max_size=256,
)

HANDSHAKE_AUTH = Schema(
    "handshake-auth",
    0x04,
    [
        Field(1, "identity", FixedBytes(primitives.ED25519_KEY_SIZE)),
        Field(2, "signature", FixedBytes(primitives.ED25519_SIG_SIZE)),
    ],
    max_size=_AUTH_SIZE,
)
"""The plaintext inside msg2's and msg3's AEAD: who I am, and my signature over TH."""


class Role(enum.Enum):
    """Which end of the handshake, and of the session built on it (session.py re-uses this)."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(enum.Enum):
    START = "start"
    AWAIT_RESPONSE = "await-response"
    AWAIT_FINISH = "await-finish"
    DONE = "done"
    ERROR = "error"


class _Event(enum.Enum):
    SEND_INIT = "send handshake-init"
    RECEIVE_INIT = "receive handshake-init"
    RECEIVE_RESPONSE = "receive handshake-response"
    RECEIVE_FINISH = "receive handshake-finish"


TRANSITIONS: dict[Role, dict[State, dict[_Event, State]]] = {
    Role.INITIATOR: {
        State.START: {_Event.SEND_INIT: State.AWAIT_RESPONSE},
        State.AWAIT_RESPONSE: {_Event.RECEIVE_RESPONSE: State.DONE},
    },
    Role.RESPONDER: {
        State.START: {_Event.RECEIVE_INIT: State.AWAIT_FINISH},
        State.AWAIT_FINISH: {_Event.RECEIVE_FINISH: State.DONE},
    },
}
"""Legal moves; anything absent (including every move out of DONE and ERROR) is illegal."""

_RECEIVE_EVENT = {
    HANDSHAKE_INIT.type_id: _Event.RECEIVE_INIT,
    HANDSHAKE_RESPONSE.type_id: _Event.RECEIVE_RESPONSE,
    HANDSHAKE_FINISH.type_id: _Event.RECEIVE_FINISH,
}


@dataclass(frozen=True)
class HandshakeResult:
    """What a completed handshake yields.

    ``session_id`` is the final transcript hash: equal on both sides exactly
    when both saw the same bytes, and unique per session (fresh ephemerals),
    so later layers can bind signatures to this session with it.
    """

    role: Role
    peer: PublicIdentity
    session_id: bytes
    channel: SecureChannel


# --- transcript and key schedule (shared with the tests and docs/protocol.md) ----------


def initial_transcript(prologue: bytes) -> bytes:
    """TH0 = SHA-256("p2ptransfer/1" ‖ 0x00 ‖ suite:u8 ‖ len(prologue):u32be ‖ prologue)."""
    return primitives.sha256(
        PROTOCOL_NAME,
        b"\x00",
        bytes([SUITE_X25519_ED25519_AES256GCM_SHA256]),
        struct.pack(">I", len(prologue)),
        prologue,
    )


def absorb(th: bytes, data: bytes) -> bytes:
    """TH' = SHA-256(TH ‖ data), Noise's MixHash."""
    return primitives.sha256(th, data)


@dataclass(frozen=True)
class _HandshakeKeys:
    secret: bytes = field(repr=False)
    i2r: bytes = field(repr=False)
    r2i: bytes = field(repr=False)


def handshake_keys(th2: bytes, dh: bytes) -> _HandshakeKeys:
    """hs = HKDF-Extract(salt=TH2, DH); one AEAD key per direction for msg2/msg3."""
    secret = primitives.hkdf_extract(th2, dh)
    return _HandshakeKeys(
        secret=secret,
        i2r=primitives.hkdf_expand(secret, _HS_I2R, primitives.AEAD_KEY_SIZE),
        r2i=primitives.hkdf_expand(secret, _HS_R2I, primitives.AEAD_KEY_SIZE),
    )


def traffic_keys(handshake_secret: bytes, th_final: bytes) -> tuple[DirectionKeys, DirectionKeys]:
    """(i2r, r2i) record keys: ms = HKDF-Extract(salt=TH_final, hs), then one expand per item."""
    master = primitives.hkdf_extract(th_final, handshake_secret)

    def expand(label: bytes, size: int) -> bytes:
        return primitives.hkdf_expand(master, label, size)

    i2r = DirectionKeys(
        expand(_TRAFFIC_I2R_KEY, primitives.AEAD_KEY_SIZE),
        expand(_TRAFFIC_I2R_IV, primitives.AEAD_NONCE_SIZE),
    )
    r2i = DirectionKeys(
        expand(_TRAFFIC_R2I_KEY, primitives.AEAD_KEY_SIZE),
        expand(_TRAFFIC_R2I_IV, primitives.AEAD_NONCE_SIZE),
    )
    return i2r, r2i


def _seal_auth(identity: Identity, label: bytes, th: bytes, key: bytes) -> tuple[bytes, bytes]:
    """Sign label ‖ H(TH ‖ identity) and seal (identity, signature) with TH as AD.

    Returns (sealed, TH after absorbing the identity). The identity is hashed
    in before signing, as TLS 1.3 signs a transcript that already holds the
    Certificate: the signature names its own signer.
    """
    th_id = absorb(th, identity.public.public_key)
    signature = identity.sign(label + th_id)
    inner = HANDSHAKE_AUTH.encode({"identity": identity.public.public_key, "signature": signature})
    return primitives.aead_seal(key, _HS_NONCE, inner, th), th_id


def _open_auth(
    sealed: bytes, label: bytes, th: bytes, key: bytes, what: str
) -> tuple[PublicIdentity, bytes]:
    """Reverse of :func:`_seal_auth`; every failure names what failed."""
    try:
        inner = primitives.aead_open(key, _HS_NONCE, sealed, th)
    except ChannelError as exc:
        raise HandshakeError(
            f"{what} does not authenticate (edited, spliced or substituted in transit)"
        ) from exc
    try:
        fields = HANDSHAKE_AUTH.decode(inner)
    except DecodeError as exc:
        raise HandshakeError(f"{what} carries a malformed identity proof: {exc}") from exc
    public_key: bytes = fields["identity"]
    th_id = absorb(th, public_key)
    peer = PublicIdentity(public_key)
    try:
        peer.verify(fields["signature"], label + th_id)
    except SignatureError as exc:
        raise HandshakeError(f"{what} signature does not verify") from exc
    return peer, th_id


def _decode(schema: Schema, data: bytes) -> dict[str, Any]:
    try:
        return schema.decode(data)
    except DecodeError as exc:
        raise HandshakeError(f"malformed {schema.name}: {exc}") from exc


def _check_secret(name: str, value: bytes, size: int) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise ValueError(f"{name} must be exactly {size} bytes")
    return value


# --- the machines ------------------------------------------------------------


class _Handshake:
    """Shared plumbing: the state, the transition table, and failing closed."""

    role: Role

    def __init__(self, identity: Identity, prologue: bytes, max_records: int) -> None:
        if not isinstance(identity, Identity):
            raise TypeError("identity must be an Identity")
        if type(prologue) is not bytes or len(prologue) > MAX_PROLOGUE:
            raise ValueError(f"prologue must be bytes of at most {MAX_PROLOGUE}")
        if type(max_records) is not int or not 1 <= max_records <= DEFAULT_MAX_RECORDS:
            raise ValueError(f"max_records must be between 1 and {DEFAULT_MAX_RECORDS}")
        self._identity: Identity | None = identity
        self._state = State.START
        self._th = initial_transcript(prologue)
        self._max_records = max_records
        self._result: HandshakeResult | None = None
        self._error = ""

    @property
    def state(self) -> State:
        return self._state

    @property
    def complete(self) -> bool:
        return self._state is State.DONE

    @property
    def result(self) -> HandshakeResult:
        """The peer, session id and channel; only after the machine reached DONE."""
        if self._result is None:
            if self._state is State.ERROR:
                raise HandshakeError(f"handshake failed ({self._error}); no session exists")
            raise HandshakeError("handshake not complete; no session exists yet")
        return self._result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state={self._state.value})"

    def _transition(self, event: _Event) -> State:
        """The state ``event`` leads to; raises (and fails closed) if it is illegal."""
        if self._state is State.ERROR:
            raise HandshakeError(f"handshake already failed ({self._error}); start a new one")
        target = TRANSITIONS[self.role].get(self._state, {}).get(event)
        if target is None:
            where = self._state.value
            self._fail(f"{event.value} is not allowed while {where}")
            raise HandshakeError(
                f"unexpected message: {event.value} while {where} "
                "(out of order, reflected or replayed)"
            )
        return target

    def _receive_event(self, data: bytes | bytearray | memoryview, expected: _Event) -> _Event:
        """Map the message's type byte to an event; unknown types fail closed."""
        if self._state is State.ERROR:
            raise HandshakeError(f"handshake already failed ({self._error}); start a new one")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("handshake messages are bytes")
        if not data:
            self._fail("empty message")
            raise HandshakeError(f"empty message where {expected.value} was expected")
        event = _RECEIVE_EVENT.get(data[0])
        if event is None:
            self._fail("unknown message type")
            raise HandshakeError(f"unknown handshake message type {data[0]:#04x}")
        return event

    def _fail(self, reason: str) -> None:
        self._state = State.ERROR
        self._error = reason
        self._result = None
        self._identity = None
        self._wipe()

    def _wipe(self) -> None:
        """Drop every secret the subclass holds; Python cannot do more than that."""
        raise NotImplementedError

    def _finish(self, peer: PublicIdentity, session_id: bytes, channel: SecureChannel) -> None:
        self._result = HandshakeResult(self.role, peer, session_id, channel)
        self._state = State.DONE
        self._identity = None
        self._wipe()


class Initiator(_Handshake):
    """The side that dialled: it knows whom it meant to reach (``expected_peer``).

    ``ephemeral_private`` (32 bytes) and ``nonce`` (32 bytes) must be fresh
    random bytes from the caller for every handshake; reusing an ephemeral
    across handshakes forfeits forward secrecy between them.
    """

    role = Role.INITIATOR

    def __init__(
        self,
        identity: Identity,
        expected_peer: PublicIdentity,
        *,
        ephemeral_private: bytes,
        nonce: bytes,
        prologue: bytes = b"",
        max_records: int = DEFAULT_MAX_RECORDS,
    ) -> None:
        super().__init__(identity, prologue, max_records)
        if not isinstance(expected_peer, PublicIdentity):
            raise TypeError("expected_peer must be a PublicIdentity")
        self._expected_peer = expected_peer
        # Parsed once, for both its public key now and the exchange a round trip later.
        self._ephemeral: primitives.X25519Ephemeral | None = primitives.X25519Ephemeral(
            _check_secret("ephemeral_private", ephemeral_private, primitives.X25519_KEY_SIZE)
        )
        self._nonce = _check_secret("nonce", nonce, NONCE_SIZE)
        self._ephemeral_public = self._ephemeral.public

    @property
    def expected_peer(self) -> PublicIdentity:
        return self._expected_peer

    def start(self) -> bytes:
        """msg1, to send to the responder."""
        target = self._transition(_Event.SEND_INIT)
        msg1 = HANDSHAKE_INIT.encode(
            {
                "version": PROTOCOL_VERSION,
                "suite": SUITE_X25519_ED25519_AES256GCM_SHA256,
                "ephemeral": self._ephemeral_public,
                "nonce": self._nonce,
            }
        )
        self._th = absorb(self._th, msg1)
        self._state = target
        return msg1

    def receive(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take msg2; return msg3 to send. The result is ready when this returns."""
        event = self._receive_event(data, _Event.RECEIVE_RESPONSE)
        self._transition(event)
        try:
            return self._receive_response(bytes(data))
        except P2PTransferError as exc:
            self._fail(str(exc))
            raise

    def _receive_response(self, msg2: bytes) -> bytes:
        fields = _decode(HANDSHAKE_RESPONSE, msg2)
        peer_ephemeral: bytes = fields["ephemeral"]
        if primitives.constant_time_equal(peer_ephemeral, self._ephemeral_public):
            raise HandshakeError("responder ephemeral equals ours (reflected handshake)")
        assert self._ephemeral is not None and self._identity is not None
        dh = self._ephemeral.exchange(peer_ephemeral)
        self._ephemeral = None
        th2 = absorb(self._th, peer_ephemeral)
        keys = handshake_keys(th2, dh)
        peer, th2_id = _open_auth(
            fields["sealed"], RESPONDER_LABEL, th2, keys.r2i, "handshake-response"
        )
        if peer != self._expected_peer:
            raise IdentityMismatch(
                f"responder proved identity {peer.address}, "
                f"but {self._expected_peer.address} was dialled"
            )
        th3 = absorb(th2_id, msg2)
        sealed, th3_id = _seal_auth(self._identity, INITIATOR_LABEL, th3, keys.i2r)
        msg3 = HANDSHAKE_FINISH.encode({"sealed": sealed})
        session_id = absorb(th3_id, msg3)
        i2r, r2i = traffic_keys(keys.secret, session_id)
        channel = SecureChannel(send=i2r, recv=r2i, max_records=self._max_records)
        self._finish(peer, session_id, channel)
        return msg3

    def _wipe(self) -> None:
        self._ephemeral = None


class Responder(_Handshake):
    """The side that was dialled; it learns the initiator's identity from msg3.

    ``ephemeral_private`` must be fresh random bytes from the caller for every
    handshake. The result's ``peer`` is *proved*, not yet *trusted*: the
    runtime checks it against its pins before reading any transfer.
    """

    role = Role.RESPONDER

    def __init__(
        self,
        identity: Identity,
        *,
        ephemeral_private: bytes,
        prologue: bytes = b"",
        max_records: int = DEFAULT_MAX_RECORDS,
    ) -> None:
        super().__init__(identity, prologue, max_records)
        self._ephemeral: primitives.X25519Ephemeral | None = primitives.X25519Ephemeral(
            _check_secret("ephemeral_private", ephemeral_private, primitives.X25519_KEY_SIZE)
        )
        self._ephemeral_public = self._ephemeral.public
        self._keys: _HandshakeKeys | None = None

    def receive(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Take msg1 (returns msg2 to send) or msg3 (returns None; the result is ready)."""
        event = self._receive_event(data, _Event.RECEIVE_INIT)
        target = self._transition(event)
        try:
            if event is _Event.RECEIVE_INIT:
                msg2 = self._receive_init(bytes(data))
                self._state = target
                return msg2
            self._receive_finish(bytes(data))
            return None
        except P2PTransferError as exc:
            self._fail(str(exc))
            raise

    def _receive_init(self, msg1: bytes) -> bytes:
        fields = _decode(HANDSHAKE_INIT, msg1)
        if fields["version"] not in SUPPORTED_VERSIONS:
            raise HandshakeError(f"unsupported protocol version {fields['version']}")
        if fields["suite"] not in SUPPORTED_SUITES:
            raise HandshakeError(f"unsupported cipher suite {fields['suite']}")
        peer_ephemeral: bytes = fields["ephemeral"]
        if primitives.constant_time_equal(peer_ephemeral, self._ephemeral_public):
            raise HandshakeError("initiator ephemeral equals ours (reflected handshake)")
        assert self._ephemeral is not None and self._identity is not None
        dh = self._ephemeral.exchange(peer_ephemeral)
        self._ephemeral = None
        th1 = absorb(self._th, msg1)
        th2 = absorb(th1, self._ephemeral_public)
        keys = handshake_keys(th2, dh)
        sealed, th2_id = _seal_auth(self._identity, RESPONDER_LABEL, th2, keys.r2i)
        msg2 = HANDSHAKE_RESPONSE.encode({"ephemeral": self._ephemeral_public, "sealed": sealed})
        self._th = absorb(th2_id, msg2)
        self._keys = keys
        return msg2

    def _receive_finish(self, msg3: bytes) -> None:
        fields = _decode(HANDSHAKE_FINISH, msg3)
        assert self._keys is not None
        th3 = self._th
        peer, th3_id = _open_auth(
            fields["sealed"], INITIATOR_LABEL, th3, self._keys.i2r, "handshake-finish"
        )
        session_id = absorb(th3_id, msg3)
        i2r, r2i = traffic_keys(self._keys.secret, session_id)
        channel = SecureChannel(send=r2i, recv=i2r, max_records=self._max_records)
        self._finish(peer, session_id, channel)

    def _wipe(self) -> None:
        self._ephemeral = None
        self._keys = None
