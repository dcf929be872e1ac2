"""The relay's mail frames: prekeys and store-and-forward envelopes (type ids 0x40-0x4F).

::

    relay -> peer   MailInfo{max_mail_age_ms, max_envelope}    once, right after AuthOk
    peer  -> relay  PublishPrekey{ref, signed_prekey}          -> Prekeys{ref, me, newest two}
    peer  -> relay  GetPrekeys{ref, address}                   -> Prekeys{ref, address, 0-2}
    peer  -> relay  Deposit{ref, to, slot, envelope}           -> Deposited{ref, slot} once durable
    relay -> peer   Mail{sender, slot, envelope, deposited_at} on connect (oldest first), on arrival
    peer  -> relay  Ack{ref, sender, slot, envelope_hash}      -> Acked{ref, slot}

The relay stores and serves opaque bytes: prekeys are checked by the sender
against the address it pays, envelopes are sealed end to end. :mod:`.relay_wire`
re-exports every name here and decodes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import DecodeError
from .encoding import Bytes, Field, FixedBytes, Schema, UInt
from .identity import ADDRESS_LENGTH
from .relay_frame import ADDRESS, REF, RelayFrame, check_address, check_bytes, check_ref
from .relay_limits import MAX_ENVELOPE_SIZE

__all__ = [
    "ENVELOPE_HASH_SIZE",
    "MAX_PREKEYS",
    "MAX_SIGNED_PREKEY_SIZE",
    "SLOT_SIZE",
    "Ack",
    "Acked",
    "Deposit",
    "Deposited",
    "GetPrekeys",
    "Mail",
    "MailInfo",
    "Prekeys",
    "PublishPrekey",
]

SLOT_SIZE = 16
"""A mail slot: the depositor's own 16-byte name for one piece of mail (replace on write)."""
MAX_SIGNED_PREKEY_SIZE = 2 * 1024
"""Largest signed prekey a frame carries (an ML-KEM-768 + X25519 one is about 1.4 KB)."""
MAX_PREKEYS = 2
"""Signed prekeys a relay keeps, and serves, per address: the newest two."""
ENVELOPE_HASH_SIZE = 32

_SLOT = FixedBytes(SLOT_SIZE)


@dataclass(frozen=True)
class PublishPrekey(RelayFrame):
    """Peer -> relay: keep this signed prekey of mine for senders (answered by Prekeys)."""

    ref: int
    signed_prekey: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.PublishPrekey",
        0x40,
        [Field(1, "ref", REF), Field(2, "signed_prekey", Bytes(MAX_SIGNED_PREKEY_SIZE))],
        1 + 2 * 5 + 4 + MAX_SIGNED_PREKEY_SIZE,
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_bytes("a signed prekey", self.signed_prekey, MAX_SIGNED_PREKEY_SIZE)
        if not self.signed_prekey:
            raise ValueError("a signed prekey is not empty")


@dataclass(frozen=True)
class GetPrekeys(RelayFrame):
    """Peer -> relay: the signed prekeys ``address`` published (to seal mail to it)."""

    ref: int
    address: str
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.GetPrekeys", 0x41, [Field(1, "ref", REF), Field(2, "address", ADDRESS)], 128
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_address(self.address)


_PREKEY_LENGTH = struct.Struct(">H")


@dataclass(frozen=True)
class Prekeys(RelayFrame):
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
            Field(1, "ref", REF),
            Field(2, "address", ADDRESS),
            Field(3, "signed_prekeys", Bytes(MAX_PREKEYS * (2 + MAX_SIGNED_PREKEY_SIZE))),
        ],
        1 + 3 * 5 + 4 + ADDRESS_LENGTH + MAX_PREKEYS * (2 + MAX_SIGNED_PREKEY_SIZE),
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_address(self.address)
        if type(self.signed_prekeys) is not tuple or len(self.signed_prekeys) > MAX_PREKEYS:
            raise ValueError(f"a Prekeys frame holds a tuple of at most {MAX_PREKEYS} prekeys")
        for item in self.signed_prekeys:
            check_bytes("a signed prekey", item, MAX_SIGNED_PREKEY_SIZE)
            if not item:
                raise ValueError("a signed prekey is not empty")

    def encode(self) -> bytes:
        packed = b"".join(_PREKEY_LENGTH.pack(len(p)) + p for p in self.signed_prekeys)
        return self.SCHEMA.encode(
            {"ref": self.ref, "address": self.address, "signed_prekeys": packed}
        )

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Any:
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
class Deposit(RelayFrame):
    """Peer -> relay: keep ``envelope`` for ``to`` under my ``slot``, replacing what is there."""

    ref: int
    to: str
    slot: bytes
    envelope: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Deposit",
        0x43,
        [
            Field(1, "ref", REF),
            Field(2, "to", ADDRESS),
            Field(3, "slot", _SLOT),
            Field(4, "envelope", Bytes(MAX_ENVELOPE_SIZE)),
        ],
        1 + 4 * 5 + 4 + ADDRESS_LENGTH + SLOT_SIZE + MAX_ENVELOPE_SIZE,
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_address(self.to)
        check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)
        check_bytes("an envelope", self.envelope, MAX_ENVELOPE_SIZE)
        if not self.envelope:
            raise ValueError("an envelope is not empty")


@dataclass(frozen=True)
class Deposited(RelayFrame):
    """Relay -> peer: Deposit ``ref`` is stored durably (it survives a relay restart)."""

    ref: int
    slot: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Deposited", 0x44, [Field(1, "ref", REF), Field(2, "slot", _SLOT)], 64
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)


@dataclass(frozen=True)
class Mail(RelayFrame):
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
            Field(1, "sender", ADDRESS),
            Field(2, "slot", _SLOT),
            Field(3, "envelope", Bytes(MAX_ENVELOPE_SIZE)),
            Field(4, "deposited_at", UInt(64)),
        ],
        1 + 4 * 5 + ADDRESS_LENGTH + SLOT_SIZE + MAX_ENVELOPE_SIZE + 8,
    )

    def __post_init__(self) -> None:
        check_address(self.sender)
        check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)
        check_bytes("an envelope", self.envelope, MAX_ENVELOPE_SIZE)
        if not self.envelope:
            raise ValueError("an envelope is not empty")
        if type(self.deposited_at) is not int or not 0 <= self.deposited_at < 1 << 64:
            raise ValueError("deposited_at is an unsigned 64-bit integer")


@dataclass(frozen=True)
class Ack(RelayFrame):
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
            Field(1, "ref", REF),
            Field(2, "sender", ADDRESS),
            Field(3, "slot", _SLOT),
            Field(4, "envelope_hash", FixedBytes(ENVELOPE_HASH_SIZE)),
        ],
        192,
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_address(self.sender)
        check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)
        check_bytes("an envelope hash", self.envelope_hash, ENVELOPE_HASH_SIZE, exact=True)


@dataclass(frozen=True)
class Acked(RelayFrame):
    """Relay -> peer: Ack ``ref`` is done (deleted, or already gone, or replaced since)."""

    ref: int
    slot: bytes
    SCHEMA: ClassVar[Schema] = Schema(
        "relay.Acked", 0x47, [Field(1, "ref", REF), Field(2, "slot", _SLOT)], 64
    )

    def __post_init__(self) -> None:
        check_ref(self.ref)
        check_bytes("a slot", self.slot, SLOT_SIZE, exact=True)


@dataclass(frozen=True)
class MailInfo(RelayFrame):
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
