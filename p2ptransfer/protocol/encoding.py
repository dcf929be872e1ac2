"""Canonical binary encoding for every message that is signed, hashed or sent.

Signatures and hashes are only meaningful over bytes that have exactly one
encoding, so every wire type is described by a :class:`Schema` and encoded
deterministically::

    message = type_id:u8  field*
    field   = tag:u8  length:u32be  value[length]

Fields appear in strictly ascending tag order, every field of the schema
exactly once. Decoding is strict: a wrong type id, an unknown, missing,
repeated or out-of-order tag, a value of the wrong length or type, invalid
UTF-8, trailing bytes, or input above the schema's size limit is a
:class:`~p2ptransfer.errors.DecodeError`. So ``decode(encode(x)) == x`` and
``encode(decode(b)) == b`` for every ``b`` that decodes at all: one value,
one byte string.

docs/protocol.md describes the same format for implementers in other languages.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import DecodeError

__all__ = [
    "Bytes",
    "Field",
    "FixedBytes",
    "Kind",
    "Schema",
    "Text",
    "UInt",
]

_FIELD_HEADER = struct.Struct(">BI")


class Kind:
    """How one field's value maps to bytes; subclasses validate both ways."""

    python_type: ClassVar[type]

    def encode(self, name: str, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, name: str, raw: bytes) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class UInt(Kind):
    """Unsigned big-endian integer of exactly ``bits`` bits (8, 16, 32 or 64)."""

    bits: int = 64
    python_type: ClassVar[type] = int

    def __post_init__(self) -> None:
        if self.bits not in (8, 16, 32, 64):
            raise ValueError("UInt bits must be 8, 16, 32 or 64")

    def encode(self, name: str, value: Any) -> bytes:
        if type(value) is not int or not 0 <= value < (1 << self.bits):
            raise ValueError(f"field {name!r}: expected an unsigned {self.bits}-bit integer")
        return value.to_bytes(self.bits // 8, "big")

    def decode(self, name: str, raw: bytes) -> int:
        if len(raw) != self.bits // 8:
            raise DecodeError(f"field {name!r}: expected {self.bits // 8} bytes, got {len(raw)}")
        return int.from_bytes(raw, "big")


@dataclass(frozen=True)
class FixedBytes(Kind):
    """A byte string of exactly ``size`` bytes (keys, ids, signatures, hashes)."""

    size: int
    python_type: ClassVar[type] = bytes

    def encode(self, name: str, value: Any) -> bytes:
        if type(value) is not bytes or len(value) != self.size:
            raise ValueError(f"field {name!r}: expected exactly {self.size} bytes")
        return value

    def decode(self, name: str, raw: bytes) -> bytes:
        if len(raw) != self.size:
            raise DecodeError(f"field {name!r}: expected {self.size} bytes, got {len(raw)}")
        return raw


@dataclass(frozen=True)
class Bytes(Kind):
    """A byte string of at most ``max_size`` bytes."""

    max_size: int
    python_type: ClassVar[type] = bytes

    def encode(self, name: str, value: Any) -> bytes:
        if type(value) is not bytes or len(value) > self.max_size:
            raise ValueError(f"field {name!r}: expected at most {self.max_size} bytes")
        return value

    def decode(self, name: str, raw: bytes) -> bytes:
        if len(raw) > self.max_size:
            raise DecodeError(f"field {name!r}: {len(raw)} bytes exceeds {self.max_size}")
        return raw


@dataclass(frozen=True)
class Text(Kind):
    """UTF-8 text of at most ``max_size`` encoded bytes (strict: no lone surrogates)."""

    max_size: int
    python_type: ClassVar[type] = str

    def encode(self, name: str, value: Any) -> bytes:
        if type(value) is not str:
            raise ValueError(f"field {name!r}: expected text")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"field {name!r}: text is not encodable as UTF-8") from exc
        if len(raw) > self.max_size:
            raise ValueError(f"field {name!r}: text longer than {self.max_size} bytes")
        return raw

    def decode(self, name: str, raw: bytes) -> str:
        if len(raw) > self.max_size:
            raise DecodeError(f"field {name!r}: text longer than {self.max_size} bytes")
        try:
            return raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"field {name!r}: invalid UTF-8") from exc


@dataclass(frozen=True)
class Field:
    """One field of a schema: a wire tag, a Python name and a kind."""

    tag: int
    name: str
    kind: Kind


class Schema:
    """A message type: its one-byte type id, its fields in tag order and its size limit."""

    _registry: ClassVar[dict[int, str]] = {}

    def __init__(self, name: str, type_id: int, fields: Sequence[Field], max_size: int) -> None:
        if not 0 <= type_id <= 0xFF:
            raise ValueError("type_id must fit in one byte")
        tags = [f.tag for f in fields]
        if tags != sorted(set(tags)) or not all(0 <= t <= 0xFF for t in tags):
            raise ValueError("field tags must be unique one-byte values in ascending order")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError("field names must be unique")
        # Registered last, so a schema that failed validation does not hold its id.
        if Schema._registry.setdefault(type_id, name) != name:
            raise ValueError(f"type id {type_id:#04x} already used by {Schema._registry[type_id]}")
        self.name = name
        self.type_id = type_id
        self.fields = tuple(fields)
        self.max_size = max_size
        self._by_tag = {f.tag: f for f in fields}
        self._names = frozenset(names)
        # (name, encoder, tag, decoder) per field, bound once: every message runs through.
        self._plan = tuple((f.name, f.kind.encode, f.tag, f.kind.decode) for f in fields)

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, type_id={self.type_id:#04x})"

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """Encode ``values`` (exactly the schema's field names) canonically.

        A value the schema cannot hold is a programming error of the caller
        (validation belongs before encoding), so it raises ValueError.
        """
        if values.keys() != self._names:
            extra = set(values) - self._names
            if extra:
                raise ValueError(f"{self.name}: unknown fields {sorted(extra)}")
            missing = next(f.name for f in self.fields if f.name not in values)
            raise ValueError(f"{self.name}: missing field {missing!r}")
        parts = [bytes((self.type_id,))]
        pack = _FIELD_HEADER.pack
        for name, encode, tag, _decode in self._plan:
            raw = encode(name, values[name])
            parts.append(pack(tag, len(raw)))
            parts.append(raw)
        out = b"".join(parts)
        if len(out) > self.max_size:
            raise ValueError(f"{self.name}: {len(out)} bytes exceeds the limit of {self.max_size}")
        return out

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode strictly; any deviation from the canonical form is a DecodeError."""
        if type(data) is not bytes:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise DecodeError(f"{self.name}: expected bytes")
            data = bytes(data)
        size = len(data)
        if size > self.max_size:
            raise DecodeError(f"{self.name}: {size} bytes exceeds the limit of {self.max_size}")
        if not size:
            raise DecodeError(f"{self.name}: empty message")
        if data[0] != self.type_id:
            raise DecodeError(f"{self.name}: wrong message type {data[0]:#04x}")
        values: dict[str, Any] = {}
        pos = 1
        unpack = _FIELD_HEADER.unpack_from
        header = _FIELD_HEADER.size
        for name, _encode, expected, decode in self._plan:
            if pos + header > size:
                raise DecodeError(f"{self.name}: truncated before field {name!r}")
            tag, length = unpack(data, pos)
            pos += header
            if tag != expected:
                if tag in self._by_tag:
                    raise DecodeError(f"{self.name}: field tag {tag} out of order or repeated")
                raise DecodeError(f"{self.name}: unexpected field tag {tag}")
            if length > size - pos:
                raise DecodeError(f"{self.name}: field {name!r} runs past the end")
            values[name] = decode(name, data[pos : pos + length])
            pos += length
        if pos != size:
            raise DecodeError(f"{self.name}: {size - pos} trailing bytes")
        return values

    @staticmethod
    def peek_type(data: bytes) -> int:
        """The type id of an encoded message, to dispatch before decoding."""
        if not data:
            raise DecodeError("empty message")
        return data[0]
