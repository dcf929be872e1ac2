"""The relay wire protocol: frames between a peer and the rendezvous relay (sans-I/O).

Every frame is one binary websocket message holding one canonically encoded
message (:mod:`.encoding`, type ids 0x30-0x3F). The conversation::

    relay -> peer   Challenge{challenge}                       right after the upgrade
    peer  -> relay  Auth{public_key, signature, relay_url}     within the auth timeout
    relay -> peer   AuthOk{address}                            the address is now registered
    then, in any order:
    peer  -> relay  Send{ref, to, payload}      -> Deliver{sender, payload} to every connection
                                                   of ``to``; Offline{ref, to} back if none
    peer  -> relay  Watch{ref, address}         -> Online{address} now or when it connects
    peer  -> relay  Claim{ref, handle}          -> ClaimOk{ref, handle} | Refused{ref, ...}
    peer  -> relay  Lookup{ref, handle}         -> LookupResult{ref, handle, address}
                                                   | HandleUnknown{ref, handle}
    peer  -> relay  Release{ref, handle}        -> Released{ref, handle} | Refused{ref, ...}
    relay -> peer   Refused{ref, request, reason, detail}   a request was not carried out

The authentication signature covers a context string, the relay URL the peer
dialled, the relay's fresh challenge and the public key (:func:`auth_message`):
the challenge stops a recorded answer being replayed on a later connection,
the URL stops an answer made for one relay being replayed at another (NIP-42
style). It only proves the peer holds the key of the address it registers;
end-to-end authentication is the session handshake's job.

Free text (``Refused.detail``, ``Auth.relay_url``) is bounded and may hold no
control, bidi or separator character: the decoder refuses such a frame, so a
hostile relay or peer cannot hand escape sequences to a terminal or a log
through it.

This module makes no randomness and does no I/O: the relay passes its
challenge in, the client passes its identity in.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from ..errors import DecodeError, InputError, P2PTransferError, ProtocolError
from . import primitives
from .encoding import Bytes, Field, FixedBytes, Schema, Text, UInt
from .identity import ADDRESS_LENGTH, Identity, PublicIdentity, decode_address, encode_address
from .relay_limits import (
    MAX_FRAME_SIZE,
    MAX_PAYLOAD_SIZE,
    MAX_URL_SIZE,
    escape_text,
    first_unsafe_char,
    normalize_relay_url,
)

__all__ = [
    "AUTH_CONTEXT",
    "CHALLENGE_SIZE",
    "CLIENT_FRAMES",
    "HANDLE_PATTERN",
    "MAX_FRAME_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MAX_URL_SIZE",
    "SEND_OVERHEAD",
    "SERVER_FRAMES",
    "Auth",
    "AuthOk",
    "Challenge",
    "Claim",
    "ClaimOk",
    "ClientFrame",
    "Deliver",
    "Frame",
    "HandleUnknown",
    "Lookup",
    "LookupResult",
    "Offline",
    "Online",
    "Refused",
    "Release",
    "Released",
    "Send",
    "ServerFrame",
    "Watch",
    "auth_message",
    "check_handle",
    "decode_client_frame",
    "decode_frame",
    "decode_server_frame",
    "deliver_from_send",
    "deliver_header",
    "escape_text",
    "first_unsafe_char",
    "make_auth",
    "normalize_relay_url",
    "send_recipient",
    "verify_auth",
]

AUTH_CONTEXT = b"p2ptransfer-relay-auth-v1\x00"
CHALLENGE_SIZE = 32
_MAX_REASON = 32
_MAX_DETAIL = 200
_MAX_HANDLE = 32
HANDLE_PATTERN = re.compile(r"[a-z0-9_-]{3,32}")

_REF = UInt(32)
_ADDRESS = Text(ADDRESS_LENGTH)
_HANDLE = Text(_MAX_HANDLE)


def check_handle(handle: str) -> str:
    """Return ``handle`` if it follows the directory's rule, else raise InputError."""
    if type(handle) is not str or HANDLE_PATTERN.fullmatch(handle) is None:
        raise InputError(
            f"{handle!r} is not a valid handle: use 3 to 32 characters of a-z, 0-9, '_' and '-'"
        )
    return handle


def _check_address(address: str) -> None:
    decode_address(address)  # AddressError (a ValueError) if anything is off
    if address != address.strip().lower():
        raise InputError("relay frames carry addresses in canonical (lower-case) form")


def _check_ref(ref: int) -> None:
    if type(ref) is not int or not 0 <= ref < 1 << 32:
        raise ValueError("ref must be an unsigned 32-bit integer")


def auth_message(relay_url: str, challenge: bytes, public_key: bytes) -> bytes:
    """The bytes a peer signs to claim its address at ``relay_url``.

    ``"p2ptransfer-relay-auth-v1\\x00" ‖ u32be(len(url)) ‖ url ‖ challenge ‖ public_key``
    with ``url`` the UTF-8 of :func:`normalize_relay_url`.
    """
    if len(challenge) != CHALLENGE_SIZE or len(public_key) != primitives.ED25519_KEY_SIZE:
        raise ValueError("challenge and public key must be 32 bytes each")
    url = normalize_relay_url(relay_url).encode("ascii")
    return AUTH_CONTEXT + len(url).to_bytes(4, "big") + url + challenge + public_key


# --- frames ------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """Base of every relay frame: a frozen, validated value with exact bytes."""

    SCHEMA: ClassVar[Schema]

    def encode(self) -> bytes:
        """The canonical bytes of this frame (one binary websocket message)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return self.SCHEMA.encode(values)

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> Any:
        return cls(**values)


@dataclass(frozen=True)
class Challenge(_Frame):
    """Relay -> peer, first frame: a fresh random 32-byte challenge."""

    challenge: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Challenge", 0x30, [Field(1, "challenge", FixedBytes(CHALLENGE_SIZE))], 64
    )

    def __post_init__(self) -> None:
        if type(self.challenge) is not bytes or len(self.challenge) != CHALLENGE_SIZE:
            raise ValueError("a challenge is 32 bytes")


@dataclass(frozen=True)
class Auth(_Frame):
    """Peer -> relay: the key claimed, a signature over :func:`auth_message`, the URL signed."""

    public_key: bytes
    signature: bytes
    relay_url: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Auth",
        0x31,
        [
            Field(1, "public_key", FixedBytes(primitives.ED25519_KEY_SIZE)),
            Field(2, "signature", FixedBytes(primitives.ED25519_SIG_SIZE)),
            Field(3, "relay_url", Text(MAX_URL_SIZE)),
        ],
        1 + 3 * 5 + 32 + 64 + MAX_URL_SIZE,
    )

    def __post_init__(self) -> None:
        PublicIdentity(self.public_key)
        if type(self.signature) is not bytes or len(self.signature) != 64:
            raise ValueError("an Ed25519 signature is 64 bytes")
        if normalize_relay_url(self.relay_url) != self.relay_url:
            raise InputError("Auth.relay_url must be in normalised form")


@dataclass(frozen=True)
class AuthOk(_Frame):
    """Relay -> peer: authenticated; frames for ``address`` now reach this connection."""

    address: str
    SCHEMA: ClassVar[Schema] = Schema("relay.AuthOk", 0x32, [Field(1, "address", _ADDRESS)], 128)

    def __post_init__(self) -> None:
        _check_address(self.address)


@dataclass(frozen=True)
class Send(_Frame):
    """Peer -> relay: deliver ``payload`` to every connection of ``to``."""

    ref: int
    to: str
    payload: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Send",
        0x33,
        [
            Field(1, "ref", _REF),
            Field(2, "to", _ADDRESS),
            Field(3, "payload", Bytes(MAX_PAYLOAD_SIZE)),
        ],
        MAX_FRAME_SIZE,
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_address(self.to)
        if type(self.payload) is not bytes or len(self.payload) > MAX_PAYLOAD_SIZE:
            raise ValueError(f"a payload is at most {MAX_PAYLOAD_SIZE} bytes")


@dataclass(frozen=True)
class Deliver(_Frame):
    """Relay -> peer: ``payload`` from the authenticated address ``sender``."""

    sender: str
    payload: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Deliver",
        0x34,
        [Field(1, "sender", _ADDRESS), Field(2, "payload", Bytes(MAX_PAYLOAD_SIZE))],
        MAX_FRAME_SIZE,
    )

    def __post_init__(self) -> None:
        _check_address(self.sender)
        if type(self.payload) is not bytes or len(self.payload) > MAX_PAYLOAD_SIZE:
            raise ValueError(f"a payload is at most {MAX_PAYLOAD_SIZE} bytes")


@dataclass(frozen=True)
class Offline(_Frame):
    """Relay -> peer: Send ``ref`` reached nobody, ``to`` has no connection."""

    ref: int
    to: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Offline", 0x35, [Field(1, "ref", _REF), Field(2, "to", _ADDRESS)], 128
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_address(self.to)


@dataclass(frozen=True)
class Watch(_Frame):
    """Peer -> relay: send Online{address} now if it is connected, else once it connects."""

    ref: int
    address: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Watch", 0x36, [Field(1, "ref", _REF), Field(2, "address", _ADDRESS)], 128
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_address(self.address)


@dataclass(frozen=True)
class Online(_Frame):
    """Relay -> peer: a watched address has an authenticated connection (watch is spent)."""

    address: str
    SCHEMA: ClassVar[Schema] = Schema("relay.Online", 0x37, [Field(1, "address", _ADDRESS)], 128)

    def __post_init__(self) -> None:
        _check_address(self.address)


@dataclass(frozen=True)
class Claim(_Frame):
    """Peer -> relay: bind ``handle`` to my key in the directory."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Claim", 0x38, [Field(1, "ref", _REF), Field(2, "handle", _HANDLE)], 64
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class ClaimOk(_Frame):
    """Relay -> peer: ``handle`` is bound to the claimer's key (new or already)."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.ClaimOk", 0x39, [Field(1, "ref", _REF), Field(2, "handle", _HANDLE)], 64
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class Lookup(_Frame):
    """Peer -> relay: which address holds ``handle``?"""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Lookup", 0x3A, [Field(1, "ref", _REF), Field(2, "handle", _HANDLE)], 64
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class LookupResult(_Frame):
    """Relay -> peer: ``handle`` is bound to ``address`` (an unverified hint, not trust)."""

    ref: int
    handle: str
    address: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.LookupResult",
        0x3B,
        [Field(1, "ref", _REF), Field(2, "handle", _HANDLE), Field(3, "address", _ADDRESS)],
        160,
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        check_handle(self.handle)
        _check_address(self.address)


@dataclass(frozen=True)
class HandleUnknown(_Frame):
    """Relay -> peer: nobody claimed ``handle``."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.HandleUnknown", 0x3C, [Field(1, "ref", _REF), Field(2, "handle", _HANDLE)], 64
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class Release(_Frame):
    """Peer -> relay: unbind ``handle`` from my key (it becomes free for anybody)."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Release", 0x3E, [Field(1, "ref", _REF), Field(2, "handle", _HANDLE)], 64
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class Released(_Frame):
    """Relay -> peer: ``handle`` was the requester's and is free now."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Released", 0x3F, [Field(1, "ref", _REF), Field(2, "handle", _HANDLE)], 64
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class Refused(_Frame):
    """Relay -> peer: request ``ref`` (of type ``request``) was not carried out.

    ``reason`` is a short machine-readable code (``rate-limited``,
    ``handle-taken``, ``handle-quota``, ``not-yours``, ``too-many-watches``…);
    ``detail`` a sentence for humans: at most 200 bytes of UTF-8 and no
    control, bidi or separator character (it ends up on a terminal).
    """

    ref: int
    request: int
    reason: str
    detail: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Refused",
        0x3D,
        [
            Field(1, "ref", _REF),
            Field(2, "request", UInt(8)),
            Field(3, "reason", Text(_MAX_REASON)),
            Field(4, "detail", Text(_MAX_DETAIL)),
        ],
        1 + 4 * 5 + 4 + 1 + _MAX_REASON + _MAX_DETAIL,
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        if type(self.request) is not int or not 0 <= self.request <= 0xFF:
            raise ValueError("request is a one-byte type id")
        if re.fullmatch(r"[a-z][a-z0-9-]{0,31}", self.reason) is None:
            raise ValueError("reason is a short lower-case code")
        if type(self.detail) is not str or len(self.detail.encode()) > _MAX_DETAIL:
            raise ValueError(f"detail is at most {_MAX_DETAIL} bytes")
        unsafe = first_unsafe_char(self.detail)
        if unsafe is not None:
            raise ValueError(
                f"detail holds the character U+{ord(unsafe):04X} "
                "(control, bidi and separator characters are refused)"
            )


ClientFrame: TypeAlias = Auth | Send | Watch | Claim | Lookup | Release
ServerFrame: TypeAlias = (
    Challenge
    | AuthOk
    | Deliver
    | Offline
    | Online
    | ClaimOk
    | LookupResult
    | HandleUnknown
    | Released
    | Refused
)
Frame: TypeAlias = ClientFrame | ServerFrame

CLIENT_FRAMES: dict[int, type[_Frame]] = {
    cls.SCHEMA.type_id: cls for cls in (Auth, Send, Watch, Claim, Lookup, Release)
}
SERVER_FRAMES: dict[int, type[_Frame]] = {
    cls.SCHEMA.type_id: cls
    for cls in (
        Challenge,
        AuthOk,
        Deliver,
        Offline,
        Online,
        ClaimOk,
        LookupResult,
        HandleUnknown,
        Released,
        Refused,
    )
}


def _decode(data: bytes, table: dict[int, type[_Frame]], side: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"a {side} frame is binary")
    data = bytes(data)
    if len(data) > MAX_FRAME_SIZE:
        raise DecodeError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_SIZE}")
    cls = table.get(Schema.peek_type(data))
    if cls is None:
        raise DecodeError(f"type {data[0]:#04x} is not a {side} frame")
    values = cls.SCHEMA.decode(data)
    try:
        return cls._from_values(values)
    except DecodeError:
        raise
    except (ValueError, P2PTransferError) as exc:
        raise DecodeError(f"{cls.SCHEMA.name}: {exc}") from exc


def decode_client_frame(data: bytes) -> ClientFrame:
    """Decode a frame a peer sent to the relay; anything else is a DecodeError."""
    frame: ClientFrame = _decode(data, CLIENT_FRAMES, "peer-to-relay")
    return frame


def decode_server_frame(data: bytes) -> ServerFrame:
    """Decode a frame the relay sent to a peer; anything else is a DecodeError."""
    frame: ServerFrame = _decode(data, SERVER_FRAMES, "relay-to-peer")
    return frame


def decode_frame(data: bytes) -> Frame:
    """Decode any relay frame (both directions), for tools and tests."""
    frame: Frame = _decode(data, {**CLIENT_FRAMES, **SERVER_FRAMES}, "relay")
    return frame


# --- forwarding fast path -----------------------------------------------------
#
# Almost every frame a relay handles is a Send to forward as a Deliver. Both
# frames have fixed layouts up to the payload, and their payload length fields
# are the same four bytes, so the relay need not decode and re-encode them:
#
#   Send     33 | 01 00000004 ref | 02 00000040 to[64]     | 03 len:u32be payload
#   Deliver  34 | 01 00000040 sender[64]                   | 02 len:u32be payload
#
# :func:`send_recipient` checks the Send layout and hands back ``to`` as raw
# bytes; :func:`deliver_header` + the Send's bytes from the length field on is
# then exactly ``Deliver(sender, payload).encode()``. Tests check both against
# the full codec.

_SEND_LAYOUT = struct.Struct(">6s4x5s64sBI")
_SEND_HEAD = bytes([Send.SCHEMA.type_id, 1, 0, 0, 0, 4])
_SEND_TO = bytes([2, 0, 0, 0, ADDRESS_LENGTH])
_SEND_PAYLOAD_TAG = 3
SEND_OVERHEAD = _SEND_LAYOUT.size
"""Bytes of a Send before its payload (84): a Send's payload is ``len(frame) - SEND_OVERHEAD``."""
_SEND_LENGTH_AT = SEND_OVERHEAD - 4
_DELIVER_HEAD = bytes([Deliver.SCHEMA.type_id, 1, 0, 0, 0, ADDRESS_LENGTH])


def send_recipient(data: bytes) -> bytes | None:
    """The ``to`` field of ``data``, undecoded, if ``data`` is laid out as a Send; else None.

    The layout check is complete but for the address itself: ``data`` is a
    valid Send exactly when this returns bytes that are a canonical address.
    The relay checks that by finding them among its authenticated addresses
    (all canonical); for anything else it must fall back to
    :func:`decode_client_frame`, which also finds the right error to report.
    """
    size = len(data)
    if size < SEND_OVERHEAD or size > SEND_OVERHEAD + MAX_PAYLOAD_SIZE:
        return None
    head, to_tag, to, payload_tag, length = _SEND_LAYOUT.unpack_from(data)
    if (
        head != _SEND_HEAD
        or to_tag != _SEND_TO
        or payload_tag != _SEND_PAYLOAD_TAG
        or length != size - SEND_OVERHEAD
    ):
        return None
    to_raw: bytes = to
    return to_raw


def deliver_header(sender: str) -> bytes:
    """The first bytes of every Deliver from ``sender``, up to the payload's length field.

    Computed once per authenticated connection; see :func:`deliver_from_send`.
    """
    _check_address(sender)
    return _DELIVER_HEAD + sender.encode("ascii") + b"\x02"


def deliver_from_send(header: bytes, send: bytes) -> bytes:
    """``Deliver(sender, payload).encode()`` for a ``send`` that :func:`send_recipient` accepted.

    ``header`` is :func:`deliver_header` of the sender. One copy, no decoding.
    """
    return header + send[_SEND_LENGTH_AT:]


# --- authentication ----------------------------------------------------------


def make_auth(identity: Identity, relay_url: str, challenge: bytes) -> Auth:
    """The peer's answer to ``challenge`` from the relay it dialled at ``relay_url``."""
    url = normalize_relay_url(relay_url)
    public_key = identity.public.public_key
    signature = identity.sign(auth_message(url, challenge, public_key))
    return Auth(public_key=public_key, signature=signature, relay_url=url)


def verify_auth(auth: Auth, challenge: bytes, accepted_urls: frozenset[str]) -> str:
    """The address ``auth`` proves, or ProtocolError/SignatureError saying why not.

    ``accepted_urls`` are the normalised URLs this relay answers to; a
    signature made for any other URL is refused before it is checked.
    """
    if auth.relay_url not in accepted_urls:
        raise ProtocolError(f"signed for another relay URL ({auth.relay_url})")
    PublicIdentity(auth.public_key).verify(
        auth.signature, auth_message(auth.relay_url, challenge, auth.public_key)
    )
    return encode_address(auth.public_key)
