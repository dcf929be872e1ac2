"""The secure channel: AES-256-GCM records after a completed handshake.

The machine has two states, OPEN and CLOSED, and only one way back: none.
Each direction has its own key, static IV and sequence counter; the
counters start at zero and move by one per record. A record is::

    header = version:u8  record_type:u8  seq:u64be  length:u32be     (14 bytes)
    record = header  ciphertext‖tag[length]

The header is the AEAD associated data, so none of its bytes can change
without the record failing. The nonce is never sent and never random: it is
``seq`` as 12 big-endian bytes XOR the direction's IV (TLS 1.3 §5.3), so a
nonce repeats only if a counter repeats, and counters never wrap: sealing
stops with :class:`RecordLimitReached` at ``max_records``, far below the
AES-GCM limits, and :attr:`SecureChannel.needs_rekey` tells the runtime to
run a new handshake well before that.

The transport under us (a websocket over TCP, through the relay) is ordered,
so there is no replay window: the receiver accepts exactly ``last + 1``. Any
gap, duplicate, reorder, malformed header, oversized record or failed
decryption is either an attack or a broken relay; nothing it carried may be
applied, so the channel closes for good and every later :meth:`seal` or
:meth:`open` raises :class:`ChannelError`. The receive counter advances only
after a record decrypted.

Local misuse (a record type outside the channel's range, an oversized
plaintext) is a ValueError and changes nothing: no counter is consumed.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from ..errors import ChannelError, RecordLimitReached
from . import primitives

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "HEADER_SIZE",
    "MAX_PLAINTEXT",
    "MAX_RECORD_SIZE",
    "RECORD_TYPE_MAX",
    "RECORD_TYPE_MIN",
    "RECORD_VERSION",
    "ChannelState",
    "DirectionKeys",
    "SecureChannel",
    "record_nonce",
]

RECORD_VERSION = 1
"""Record-layer version byte; bumped only with an incompatible record format."""

MAX_PLAINTEXT = 16 * 1024
"""Largest plaintext in one record (TLS 1.3's 2**14): bounds buffering and per-record cost."""

DEFAULT_MAX_RECORDS = 1 << 24
"""Per-direction, per-key record cap; also the highest cap allowed.

TLS 1.3 (RFC 8446 §5.5) allows about 2**24.5 full-size AES-GCM records per
key; 2**24 stays under it, and the runtime re-handshakes when fewer than an
eighth remain.
"""

RECORD_TYPE_MIN = 0x10
RECORD_TYPE_MAX = 0x1F
"""Record types live in the channel/session range of the type-id registry."""

_HEADER = struct.Struct(">BBQI")
HEADER_SIZE = _HEADER.size
MAX_RECORD_SIZE = HEADER_SIZE + MAX_PLAINTEXT + primitives.AEAD_TAG_SIZE
_REKEY_FRACTION = 8


def record_nonce(iv: bytes, seq: int) -> bytes:
    """The AES-GCM nonce of record ``seq``: seq as 12 big-endian bytes XOR ``iv``."""
    if len(iv) != primitives.AEAD_NONCE_SIZE:
        raise ValueError("an IV is 12 bytes")
    if not 0 <= seq < 1 << 64:
        raise ValueError("sequence numbers are unsigned 64-bit")
    padded = seq.to_bytes(primitives.AEAD_NONCE_SIZE, "big")
    return bytes(a ^ b for a, b in zip(padded, iv, strict=True))


@dataclass(frozen=True)
class DirectionKeys:
    """The AES-256-GCM key and static IV of one direction; never shown in repr."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if type(self.key) is not bytes or len(self.key) != primitives.AEAD_KEY_SIZE:
            raise ValueError("a direction key is 32 bytes")
        if type(self.iv) is not bytes or len(self.iv) != primitives.AEAD_NONCE_SIZE:
            raise ValueError("a direction IV is 12 bytes")


class _Direction:
    """One direction's keys made ready for use: the cipher keyed once, the IV as an int.

    The nonce is then one XOR of two ints, the same value :func:`record_nonce`
    computes byte by byte.
    """

    __slots__ = ("_iv", "cipher")

    def __init__(self, keys: DirectionKeys) -> None:
        self.cipher = primitives.AeadCipher(keys.key)
        self._iv = int.from_bytes(keys.iv, "big")

    def __repr__(self) -> str:
        return "_Direction(<keys>)"

    def nonce(self, seq: int) -> bytes:
        return (self._iv ^ seq).to_bytes(primitives.AEAD_NONCE_SIZE, "big")


class ChannelState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class SecureChannel:
    """One session's record protection; see the module docstring for the rules."""

    def __init__(
        self,
        send: DirectionKeys,
        recv: DirectionKeys,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
    ) -> None:
        if type(max_records) is not int or not 1 <= max_records <= DEFAULT_MAX_RECORDS:
            raise ValueError(f"max_records must be between 1 and {DEFAULT_MAX_RECORDS}")
        if primitives.constant_time_equal(send.key, recv.key):
            # With one key for both directions a reflected record would decrypt.
            raise ValueError("send and receive keys must differ")
        self._send: DirectionKeys | None = send
        self._recv: DirectionKeys | None = recv
        self._sealer: _Direction | None = _Direction(send)
        self._opener: _Direction | None = _Direction(recv)
        self._max_records = max_records
        self._send_seq = 0
        self._recv_seq = 0
        self._state = ChannelState.OPEN
        self._close_reason = ""

    def __repr__(self) -> str:
        return (
            f"SecureChannel(state={self._state.value}, sent={self._send_seq}, "
            f"received={self._recv_seq}, max_records={self._max_records})"
        )

    # --- state -----------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is ChannelState.CLOSED

    @property
    def max_records(self) -> int:
        return self._max_records

    @property
    def send_seq(self) -> int:
        """Sequence number the next sealed record will carry (= records sealed so far)."""
        return self._send_seq

    @property
    def recv_seq(self) -> int:
        """Sequence number the next accepted record must carry (= records opened so far)."""
        return self._recv_seq

    @property
    def send_remaining(self) -> int:
        """Records this side may still seal under the current keys."""
        return self._max_records - self._send_seq

    @property
    def recv_remaining(self) -> int:
        """Records this side may still accept under the current keys."""
        return self._max_records - self._recv_seq

    @property
    def needs_rekey(self) -> bool:
        """True once either direction has less than an eighth of its cap left.

        The runtime should then run a new handshake and move to its channel;
        either peer may notice first, since both directions are counted.
        """
        remaining = min(self.send_remaining, self.recv_remaining)
        return remaining * _REKEY_FRACTION < self._max_records

    def close(self) -> None:
        """Local teardown: drop our references to the keys; idempotent."""
        self._fail("channel closed locally")

    # --- records ---------------------------------------------------------

    def seal(self, record_type: int, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Protect one record for the peer; raises RecordLimitReached at the cap."""
        keys = self._usable_send()
        if type(record_type) is not int or not RECORD_TYPE_MIN <= record_type <= RECORD_TYPE_MAX:
            raise ValueError(
                f"record type must be in {RECORD_TYPE_MIN:#04x}..{RECORD_TYPE_MAX:#04x}"
            )
        if not isinstance(plaintext, bytes | bytearray | memoryview):
            raise TypeError("record plaintext must be bytes")
        plaintext = bytes(plaintext)
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValueError(f"record plaintext exceeds {MAX_PLAINTEXT} bytes")
        if self._send_seq >= self._max_records:
            self._fail("send record limit reached")
            raise RecordLimitReached(
                f"record limit of {self._max_records} reached: a new handshake is required"
            )
        seq = self._send_seq
        header = _HEADER.pack(
            RECORD_VERSION,
            record_type,
            seq,
            len(plaintext) + primitives.AEAD_TAG_SIZE,
        )
        body = keys.cipher.seal(keys.nonce(seq), plaintext, header)
        self._send_seq = seq + 1
        return header + body

    def open(self, record: bytes | bytearray | memoryview) -> tuple[int, bytes]:
        """Check and decrypt the next record from the peer: ``(record_type, plaintext)``."""
        keys = self._usable_recv()
        if not isinstance(record, bytes | bytearray | memoryview):
            raise TypeError("a record must be bytes")
        try:
            return self._open(keys, bytes(record))
        except ChannelError as exc:
            self._fail(str(exc))
            raise

    def _open(self, keys: _Direction, record: bytes) -> tuple[int, bytes]:
        if len(record) < HEADER_SIZE:
            raise ChannelError(f"record shorter than its {HEADER_SIZE}-byte header")
        if len(record) > MAX_RECORD_SIZE:
            raise ChannelError(f"record of {len(record)} bytes exceeds {MAX_RECORD_SIZE}")
        version, record_type, seq, length = _HEADER.unpack_from(record)
        if version != RECORD_VERSION:
            raise ChannelError(f"unsupported record version {version}")
        if not RECORD_TYPE_MIN <= record_type <= RECORD_TYPE_MAX:
            raise ChannelError(f"record type {record_type:#04x} outside the channel range")
        if length != len(record) - HEADER_SIZE:
            raise ChannelError(
                f"record length field says {length}, record carries {len(record) - HEADER_SIZE}"
            )
        if length < primitives.AEAD_TAG_SIZE:
            raise ChannelError("record shorter than its authentication tag")
        if seq != self._recv_seq:
            raise ChannelError(
                f"record out of sequence: expected {self._recv_seq}, got {seq} "
                "(dropped, replayed or reordered)"
            )
        if seq >= self._max_records:
            raise RecordLimitReached(
                f"peer exceeded the record limit of {self._max_records} without a new handshake"
            )
        header = record[:HEADER_SIZE]
        plaintext = keys.cipher.open(keys.nonce(seq), record[HEADER_SIZE:], header)
        self._recv_seq = seq + 1
        return record_type, plaintext

    # --- failing closed --------------------------------------------------

    def _usable_send(self) -> _Direction:
        if self._sealer is None:
            raise ChannelError(f"channel is closed ({self._close_reason})")
        return self._sealer

    def _usable_recv(self) -> _Direction:
        if self._opener is None:
            raise ChannelError(f"channel is closed ({self._close_reason})")
        return self._opener

    def _fail(self, reason: str) -> None:
        if self._state is ChannelState.CLOSED:
            return
        self._state = ChannelState.CLOSED
        self._close_reason = reason
        # Python cannot wipe immutable bytes; dropping our references is as far as it goes.
        self._send = self._recv = None
        self._sealer = self._opener = None
