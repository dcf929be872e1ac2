"""What every relay frame shares: the frame base, the field kinds and checks, the auth message.

The frames themselves live in :mod:`.relay_forward_wire` (authentication,
forwarding, presence, the handle directory) and :mod:`.relay_mail_wire`
(store and forward); :mod:`.relay_wire` gathers them and decodes. Both
frame modules import this one and neither imports the other, so the three
stay free of cycles.

This module makes no randomness and does no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import InputError
from . import primitives
from .encoding import Schema, Text, UInt
from .identity import ADDRESS_LENGTH, decode_address
from .relay_limits import normalize_relay_url

__all__ = [
    "ADDRESS",
    "AUTH_CONTEXT",
    "CHALLENGE_SIZE",
    "HANDLE",
    "HANDLE_PATTERN",
    "REF",
    "RelayFrame",
    "auth_message",
    "check_address",
    "check_bytes",
    "check_handle",
    "check_ref",
]

AUTH_CONTEXT = b"p2ptransfer-relay-auth-v1\x00"
CHALLENGE_SIZE = 32
_MAX_HANDLE = 32
HANDLE_PATTERN = re.compile(r"[a-z0-9_-]{3,32}")

REF = UInt(32)
"""A request's reference: the peer's number, echoed in the relay's answer."""
ADDRESS = Text(ADDRESS_LENGTH)
"""An address, in canonical (lower-case) form."""
HANDLE = Text(_MAX_HANDLE)
"""A directory handle (see :func:`check_handle`)."""


def check_handle(handle: str) -> str:
    """Return ``handle`` if it follows the directory's rule, else raise InputError."""
    if type(handle) is not str or HANDLE_PATTERN.fullmatch(handle) is None:
        raise InputError(
            f"{handle!r} is not a valid handle: use 3 to 32 characters of a-z, 0-9, '_' and '-'"
        )
    return handle


def check_address(address: str) -> None:
    """Refuse an address that is invalid or not in its one canonical (lower-case) spelling."""
    decode_address(address)  # AddressError (a ValueError) if anything is off
    if address != address.strip().lower():
        raise InputError("relay frames carry addresses in canonical (lower-case) form")


def check_ref(ref: int) -> None:
    """Refuse a ref that does not fit the wire's unsigned 32 bits."""
    if type(ref) is not int or not 0 <= ref < 1 << 32:
        raise ValueError("ref must be an unsigned 32-bit integer")


def check_bytes(name: str, value: bytes, size: int, *, exact: bool = False) -> None:
    """Refuse ``value`` unless it is bytes of at most (``exact``: exactly) ``size``."""
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


@dataclass(frozen=True)
class RelayFrame:
    """Base of every relay frame: a frozen, validated value with exact bytes."""

    SCHEMA: ClassVar[Schema]

    def encode(self) -> bytes:
        """The canonical bytes of this frame (one binary websocket message)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return self.SCHEMA.encode(values)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Any:
        """The frame for the field values its schema decoded (validated by the constructor).

        A frame whose wire layout differs from its fields (``Prekeys``) overrides it.
        """
        return cls(**values)
