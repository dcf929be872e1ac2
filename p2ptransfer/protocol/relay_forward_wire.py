"""The relay's live frames: authentication, forwarding, presence, the handle directory.

Type ids 0x30-0x3F; the conversation is drawn in :mod:`.relay_wire`, which
re-exports every name here and decodes. Each frame is frozen, owns its type
id and size limit, and validates in ``__post_init__``.

Free text (``Refused.detail``, ``Auth.relay_url``) is bounded and may hold no
control, bidi or separator character: the decoder refuses such a frame, so a
hostile relay or peer cannot hand escape sequences to a terminal or a log
through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from ..errors import InputError
from . import primitives
from .encoding import Bytes, Field, FixedBytes, Schema, Text, UInt
from .identity import PublicIdentity
from .relay_frame import (
    ADDRESS,
    CHALLENGE_SIZE,
    HANDLE,
    REF,
    RelayFrame,
    check_address,
    check_handle,
    check_ref,
)
from .relay_limits import (
    MAX_FRAME_SIZE,
    MAX_PAYLOAD_SIZE,
    MAX_URL_SIZE,
    first_unsafe_char,
    normalize_relay_url,
)

__all__ = [
    "Auth",
    "AuthOk",
    "Challenge",
    "Claim",
    "ClaimOk",
    "Deliver",
    "HandleUnknown",
    "Lookup",
    "LookupResult",
    "Offline",
    "Online",
    "Refused",
    "Release",
    "Released",
    "Send",
    "Watch",
]

_MAX_REASON = 32
_MAX_DETAIL = 200


@dataclass(frozen=True)
class Challenge(RelayFrame):
    """Relay -> peer, first frame: a fresh random 32-byte challenge."""

    challenge: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Challenge", 0x30, [Field(1, "challenge", FixedBytes(CHALLENGE_SIZE))], 64
    )

    def __post_init__(self) -> None:
        if type(self.challenge) is not bytes or len(self.challenge) != CHALLENGE_SIZE:
            raise ValueError("a challenge is 32 bytes")


@dataclass(frozen=True)
class Auth(RelayFrame):
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
class AuthOk(RelayFrame):
    """Relay -> peer: authenticated; frames for ``address`` now reach this connection."""

    address: str
    SCHEMA: ClassVar[Schema] = Schema("relay.AuthOk", 0x32, [Field(1, "address", ADDRESS)], 128)

    def __post_init__(self) -> None:
        check_address(self.address)


@dataclass(frozen=True)
class Send(RelayFrame):
    """Peer -> relay: deliver ``payload`` to every connection of ``to``."""

    ref: int
    to: str
    payload: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Send",
        0x33,
        [
            Field(1, "ref", REF),
            Field(2, "to", ADDRESS),
            Field(3, "payload", Bytes(MAX_PAYLOAD_SIZE)),
        ],
        MAX_FRAME_SIZE,
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_address(self.to)
        if type(self.payload) is not bytes or len(self.payload) > MAX_PAYLOAD_SIZE:
            raise ValueError(f"a payload is at most {MAX_PAYLOAD_SIZE} bytes")


@dataclass(frozen=True)
class Deliver(RelayFrame):
    """Relay -> peer: ``payload`` from the authenticated address ``sender``."""

    sender: str
    payload: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Deliver",
        0x34,
        [Field(1, "sender", ADDRESS), Field(2, "payload", Bytes(MAX_PAYLOAD_SIZE))],
        MAX_FRAME_SIZE,
    )

    def __post_init__(self) -> None:
        check_address(self.sender)
        if type(self.payload) is not bytes or len(self.payload) > MAX_PAYLOAD_SIZE:
            raise ValueError(f"a payload is at most {MAX_PAYLOAD_SIZE} bytes")


@dataclass(frozen=True)
class Offline(RelayFrame):
    """Relay -> peer: Send ``ref`` reached nobody, ``to`` has no connection."""

    ref: int
    to: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Offline", 0x35, [Field(1, "ref", REF), Field(2, "to", ADDRESS)], 128
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_address(self.to)


@dataclass(frozen=True)
class Watch(RelayFrame):
    """Peer -> relay: send Online{address} now if it is connected, else once it connects."""

    ref: int
    address: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Watch", 0x36, [Field(1, "ref", REF), Field(2, "address", ADDRESS)], 128
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_address(self.address)


@dataclass(frozen=True)
class Online(RelayFrame):
    """Relay -> peer: a watched address has an authenticated connection (watch is spent)."""

    address: str
    SCHEMA: ClassVar[Schema] = Schema("relay.Online", 0x37, [Field(1, "address", ADDRESS)], 128)

    def __post_init__(self) -> None:
        check_address(self.address)


@dataclass(frozen=True)
class Claim(RelayFrame):
    """Peer -> relay: bind ``handle`` to my key in the directory."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Claim", 0x38, [Field(1, "ref", REF), Field(2, "handle", HANDLE)], 64
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class ClaimOk(RelayFrame):
    """Relay -> peer: ``handle`` is bound to the claimer's key (new or already)."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.ClaimOk", 0x39, [Field(1, "ref", REF), Field(2, "handle", HANDLE)], 64
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class Lookup(RelayFrame):
    """Peer -> relay: which address holds ``handle``?"""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Lookup", 0x3A, [Field(1, "ref", REF), Field(2, "handle", HANDLE)], 64
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class LookupResult(RelayFrame):
    """Relay -> peer: ``handle`` is bound to ``address`` (an unverified hint, not trust)."""

    ref: int
    handle: str
    address: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.LookupResult",
        0x3B,
        [Field(1, "ref", REF), Field(2, "handle", HANDLE), Field(3, "address", ADDRESS)],
        160,
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_handle(self.handle)
        check_address(self.address)


@dataclass(frozen=True)
class HandleUnknown(RelayFrame):
    """Relay -> peer: nobody claimed ``handle``."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.HandleUnknown", 0x3C, [Field(1, "ref", REF), Field(2, "handle", HANDLE)], 64
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class Release(RelayFrame):
    """Peer -> relay: unbind ``handle`` from my key (it becomes free for anybody)."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Release", 0x3E, [Field(1, "ref", REF), Field(2, "handle", HANDLE)], 64
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class Released(RelayFrame):
    """Relay -> peer: ``handle`` was the requester's and is free now."""

    ref: int
    handle: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Released", 0x3F, [Field(1, "ref", REF), Field(2, "handle", HANDLE)], 64
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_handle(self.handle)


@dataclass(frozen=True)
class Refused(RelayFrame):
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
            Field(1, "ref", REF),
            Field(2, "request", UInt(8)),
            Field(3, "reason", Text(_MAX_REASON)),
            Field(4, "detail", Text(_MAX_DETAIL)),
        ],
        1 + 4 * 5 + 4 + 1 + _MAX_REASON + _MAX_DETAIL,
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
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
