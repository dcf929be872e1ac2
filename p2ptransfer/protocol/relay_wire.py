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

Mail (store and forward, type ids 0x40-0x4F)::

    relay -> peer   MailInfo{max_mail_age_ms, max_envelope}    once, right after AuthOk
    peer  -> relay  PublishPrekey{ref, signed_prekey}          -> Prekeys{ref, me, newest two}
    peer  -> relay  GetPrekeys{ref, address}                   -> Prekeys{ref, address, 0-2}
    peer  -> relay  Deposit{ref, to, slot, envelope}           -> Deposited{ref, slot} once durable
    relay -> peer   Mail{sender, slot, envelope, deposited_at} on connect (oldest first), on arrival
    peer  -> relay  Ack{ref, sender, slot, envelope_hash}      -> Acked{ref, slot}

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
    MAX_ENVELOPE_SIZE,
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
    "ENVELOPE_HASH_SIZE",
    "HANDLE_PATTERN",
    "MAX_ENVELOPE_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MAX_PREKEYS",
    "MAX_SIGNED_PREKEY_SIZE",
    "MAX_URL_SIZE",
    "SEND_OVERHEAD",
    "SERVER_FRAMES",
    "SLOT_SIZE",
    "Ack",
    "Acked",
    "Auth",
    "AuthOk",
    "Challenge",
    "Claim",
    "ClaimOk",
    "ClientFrame",
    "Deliver",
    "Deposit",
    "Deposited",
    "Frame",
    "GetPrekeys",
    "HandleUnknown",
    "Lookup",
    "LookupResult",
    "Mail",
    "MailInfo",
    "Offline",
    "Online",
    "Prekeys",
    "PublishPrekey",
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

SLOT_SIZE = 16
"""A mail slot: the depositor's own 16-byte name for one piece of mail (replace on write)."""
MAX_SIGNED_PREKEY_SIZE = 2 * 1024
"""Largest signed prekey a frame carries (an ML-KEM-768 + X25519 one is about 1.4 KB)."""
MAX_PREKEYS = 2
"""Signed prekeys a relay keeps, and serves, per address: the newest two."""
ENVELOPE_HASH_SIZE = 32

_REF = UInt(32)
_ADDRESS = Text(ADDRESS_LENGTH)
_HANDLE = Text(_MAX_HANDLE)
_SLOT = FixedBytes(SLOT_SIZE)


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


def _check_bytes(name: str, value: bytes, size: int, *, exact: bool = False) -> None:
    if type(value) is not bytes or (len(value) != size if exact else len(value) > size):
        raise ValueError(f"{name} is {'' if exact else 'at most '}{size} bytes")


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


# --- mail (store and forward) ------------------------------------------------


@dataclass(frozen=True)
class PublishPrekey(_Frame):
    """Peer -> relay: keep this signed prekey of mine for senders (answered by Prekeys)."""

    ref: int
    signed_prekey: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.PublishPrekey",
        0x40,
        [Field(1, "ref", _REF), Field(2, "signed_prekey", Bytes(MAX_SIGNED_PREKEY_SIZE))],
        1 + 2 * 5 + 4 + MAX_SIGNED_PREKEY_SIZE,
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_bytes("a signed prekey", self.signed_prekey, MAX_SIGNED_PREKEY_SIZE)
        if not self.signed_prekey:
            raise ValueError("a signed prekey is not empty")


@dataclass(frozen=True)
class GetPrekeys(_Frame):
    """Peer -> relay: the signed prekeys ``address`` published (to seal mail to it)."""

    ref: int
    address: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.GetPrekeys", 0x41, [Field(1, "ref", _REF), Field(2, "address", _ADDRESS)], 128
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_address(self.address)


_PREKEY_LENGTH = struct.Struct(">H")


@dataclass(frozen=True)
class Prekeys(_Frame):
    """Relay -> peer: ``address``'s signed prekeys, newest first (none: it has none valid).

    Unverified: the relay could serve anything, so the sender checks each one
    against the address it pays before sealing to it. On the wire the list is
    packed into one field, each item ``u16be(length) ‖ signed prekey``.
    """

    ref: int
    address: str
    signed_prekeys: tuple[bytes, ...]
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Prekeys",
        0x42,
        [
            Field(1, "ref", _REF),
            Field(2, "address", _ADDRESS),
            Field(3, "signed_prekeys", Bytes(MAX_PREKEYS * (2 + MAX_SIGNED_PREKEY_SIZE))),
        ],
        1 + 3 * 5 + 4 + ADDRESS_LENGTH + MAX_PREKEYS * (2 + MAX_SIGNED_PREKEY_SIZE),
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_address(self.address)
        if type(self.signed_prekeys) is not tuple or len(self.signed_prekeys) > MAX_PREKEYS:
            raise ValueError(f"a Prekeys frame holds a tuple of at most {MAX_PREKEYS} prekeys")
        for item in self.signed_prekeys:
            _check_bytes("a signed prekey", item, MAX_SIGNED_PREKEY_SIZE)
            if not item:
                raise ValueError("a signed prekey is not empty")

    def encode(self) -> bytes:
        packed = b"".join(_PREKEY_LENGTH.pack(len(p)) + p for p in self.signed_prekeys)
        return self.SCHEMA.encode(
            {"ref": self.ref, "address": self.address, "signed_prekeys": packed}
        )

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> Any:
        packed: bytes = values["signed_prekeys"]
        items: list[bytes] = []
        at = 0
        while at < len(packed):
            if at + 2 > len(packed):
                raise DecodeError("relay.Prekeys: truncated prekey length")
            (length,) = _PREKEY_LENGTH.unpack_from(packed, at)
            at += 2
            if length == 0 or at + length > len(packed):
                raise DecodeError("relay.Prekeys: bad prekey length")
            items.append(packed[at : at + length])
            at += length
        return cls(values["ref"], values["address"], tuple(items))


@dataclass(frozen=True)
class Deposit(_Frame):
    """Peer -> relay: keep ``envelope`` for ``to`` under my ``slot``, replacing what is there."""

    ref: int
    to: str
    slot: bytes
    envelope: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Deposit",
        0x43,
        [
            Field(1, "ref", _REF),
            Field(2, "to", _ADDRESS),
            Field(3, "slot", _SLOT),
            Field(4, "envelope", Bytes(MAX_ENVELOPE_SIZE)),
        ],
        1 + 4 * 5 + 4 + ADDRESS_LENGTH + SLOT_SIZE + MAX_ENVELOPE_SIZE,
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_address(self.to)
        _check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)
        _check_bytes("an envelope", self.envelope, MAX_ENVELOPE_SIZE)
        if not self.envelope:
            raise ValueError("an envelope is not empty")


@dataclass(frozen=True)
class Deposited(_Frame):
    """Relay -> peer: Deposit ``ref`` is stored durably (it survives a relay restart)."""

    ref: int
    slot: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Deposited", 0x44, [Field(1, "ref", _REF), Field(2, "slot", _SLOT)], 64
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)


@dataclass(frozen=True)
class Mail(_Frame):
    """Relay -> peer: mail for me from the authenticated depositor ``sender``.

    Pushed for everything waiting when the owner connects (oldest first) and
    as it arrives; it stays at the relay until acknowledged or expired.
    ``deposited_at`` is the relay's clock (ms since the epoch): a hint.
    """

    sender: str
    slot: bytes
    envelope: bytes
    deposited_at: int
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Mail",
        0x45,
        [
            Field(1, "sender", _ADDRESS),
            Field(2, "slot", _SLOT),
            Field(3, "envelope", Bytes(MAX_ENVELOPE_SIZE)),
            Field(4, "deposited_at", UInt(64)),
        ],
        1 + 4 * 5 + ADDRESS_LENGTH + SLOT_SIZE + MAX_ENVELOPE_SIZE + 8,
    )

    def __post_init__(self) -> None:
        _check_address(self.sender)
        _check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)
        _check_bytes("an envelope", self.envelope, MAX_ENVELOPE_SIZE)
        if not self.envelope:
            raise ValueError("an envelope is not empty")
        if type(self.deposited_at) is not int or not 0 <= self.deposited_at < 1 << 64:
            raise ValueError("deposited_at is an unsigned 64-bit integer")


@dataclass(frozen=True)
class Ack(_Frame):
    """Peer -> relay: delete mail (``sender``, ``slot``) if its envelope still hashes so.

    Naming the hash means an acknowledgement never deletes a replacement
    the owner has not seen yet.
    """

    ref: int
    sender: str
    slot: bytes
    envelope_hash: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Ack",
        0x46,
        [
            Field(1, "ref", _REF),
            Field(2, "sender", _ADDRESS),
            Field(3, "slot", _SLOT),
            Field(4, "envelope_hash", FixedBytes(ENVELOPE_HASH_SIZE)),
        ],
        192,
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_address(self.sender)
        _check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)
        _check_bytes("an envelope hash", self.envelope_hash, ENVELOPE_HASH_SIZE, exact=True)


@dataclass(frozen=True)
class Acked(_Frame):
    """Relay -> peer: Ack ``ref`` is done (deleted, or already gone, or replaced since)."""

    ref: int
    slot: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Acked", 0x47, [Field(1, "ref", _REF), Field(2, "slot", _SLOT)], 64
    )

    def __post_init__(self) -> None:
        _check_ref(self.ref)
        _check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)


@dataclass(frozen=True)
class MailInfo(_Frame):
    """Relay -> peer, once right after AuthOk: how long mail is kept, how big it may be.

    Peers keep a prekey's private half until its validity plus
    ``max_mail_age_ms`` has passed: no mail sealed to it can still be waiting.
    """

    max_mail_age_ms: int
    max_envelope: int
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.MailInfo",
        0x48,
        [Field(1, "max_mail_age_ms", UInt(64)), Field(2, "max_envelope", UInt(32))],
        32,
    )

    def __post_init__(self) -> None:
        if type(self.max_mail_age_ms) is not int or not 0 < self.max_mail_age_ms < 1 << 64:
            raise ValueError("max_mail_age_ms is a positive 64-bit integer")
        if type(self.max_envelope) is not int or not 0 < self.max_envelope <= MAX_ENVELOPE_SIZE:
            raise ValueError(f"max_envelope is 1 to {MAX_ENVELOPE_SIZE}")


ClientFrame: TypeAlias = (
    Auth | Send | Watch | Claim | Lookup | Release | PublishPrekey | GetPrekeys | Deposit | Ack
)
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
    | Prekeys
    | Deposited
    | Mail
    | Acked
    | MailInfo
)
Frame: TypeAlias = ClientFrame | ServerFrame

CLIENT_FRAMES: dict[int, type[_Frame]] = {
    cls.SCHEMA.type_id: cls
    for cls in (Auth, Send, Watch, Claim, Lookup, Release, PublishPrekey, GetPrekeys, Deposit, Ack)
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
        Prekeys,
        Deposited,
        Mail,
        Acked,
        MailInfo,
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
