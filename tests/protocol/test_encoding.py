"""The canonical encoding: exact bytes, every strictness rule, and round trips.

Signatures and transcript hashes are only as good as the claim "one value,
one byte string", so each rule the module docstring states is tested here
with a message built to break exactly that rule, and hypothesis checks the
two round-trip laws and that hostile bytes only ever raise DecodeError.
Test-only schemas use type ids 0x60-0x6F (the registry is process-global).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import DecodeError, ProtocolError
from p2ptransfer.protocol.encoding import Bytes, Field, FixedBytes, Schema, Text, UInt

MSG = Schema(
    "test-message",
    0x60,
    [
        Field(1, "kind", UInt(8)),
        Field(2, "count", UInt(16)),
        Field(3, "seq", UInt(32)),
        Field(4, "amount", UInt(64)),
        Field(5, "key", FixedBytes(4)),
        Field(7, "blob", Bytes(8)),
        Field(9, "memo", Text(12)),
    ],
    # type id + 7 field headers (5 bytes each) + 1+2+4+8+4 fixed + 8 + 12 at most
    max_size=1 + 7 * 5 + 19 + 8 + 12,
)
BIG = Schema("test-big", 0x61, [Field(1, "data", Bytes(100))], max_size=20)
EMPTY = Schema("test-empty", 0x62, [], max_size=8)

SAMPLE: dict[str, Any] = {
    "kind": 1,
    "count": 0x0203,
    "seq": 0x04050607,
    "amount": 2**64 - 1,
    "key": b"\xaa\xbb\xcc\xdd",
    "blob": b"xy",
    "memo": "é!",
}
SAMPLE_HEX = (
    "60"
    "01" "00000001" "01"
    "02" "00000002" "0203"
    "03" "00000004" "04050607"
    "04" "00000008" "ffffffffffffffff"
    "05" "00000004" "aabbccdd"
    "07" "00000002" "7879"
    "09" "00000003" "c3a921"
)  # fmt: skip
SAMPLE_BYTES = bytes.fromhex(SAMPLE_HEX)


def field(tag: int, value: bytes) -> bytes:
    return struct.pack(">BI", tag, len(value)) + value


FIELDS = {  # the sample's fields, by tag, each as header + value
    1: field(1, b"\x01"),
    2: field(2, b"\x02\x03"),
    3: field(3, b"\x04\x05\x06\x07"),
    4: field(4, b"\xff" * 8),
    5: field(5, b"\xaa\xbb\xcc\xdd"),
    7: field(7, b"xy"),
    9: field(9, "é!".encode()),
}


def message(*parts: bytes, type_id: int = 0x60) -> bytes:
    return bytes([type_id]) + b"".join(parts)


def sample_with(tag: int, value: bytes) -> bytes:
    """The sample with one field's value replaced (header length adjusted)."""
    return message(*(field(tag, value) if t == tag else f for t, f in FIELDS.items()))


def test_sample_encodes_to_exact_bytes() -> None:
    assert MSG.encode(SAMPLE) == SAMPLE_BYTES
    assert message(*FIELDS.values()) == SAMPLE_BYTES
    assert MSG.decode(SAMPLE_BYTES) == SAMPLE


def test_encoding_ignores_mapping_order() -> None:
    reordered = dict(reversed(list(SAMPLE.items())))
    assert MSG.encode(reordered) == SAMPLE_BYTES


def test_empty_values_and_extremes() -> None:
    values = {
        "kind": 0,
        "count": 0xFFFF,
        "seq": 0,
        "amount": 0,
        "key": bytes(4),
        "blob": b"",
        "memo": "",
    }
    encoded = MSG.encode(values)
    assert encoded.hex() == (
        "60"
        "0100000001" "00"
        "0200000002" "ffff"
        "0300000004" "00000000"
        "0400000008" "0000000000000000"
        "0500000004" "00000000"
        "0700000000"
        "0900000000"
    )  # fmt: skip
    assert MSG.decode(encoded) == values


def test_largest_message_is_exactly_max_size() -> None:
    values = SAMPLE | {"blob": b"\x00" * 8, "memo": "x" * 12}
    encoded = MSG.encode(values)
    assert len(encoded) == MSG.max_size == 75
    assert MSG.decode(encoded) == values


def test_schema_with_no_fields() -> None:
    assert EMPTY.encode({}) == b"\x62"
    assert EMPTY.decode(b"\x62") == {}
    with pytest.raises(DecodeError, match=r"^test-empty: 1 trailing bytes$"):
        EMPTY.decode(b"\x62\x00")


def test_decode_accepts_bytes_like_and_returns_plain_bytes() -> None:
    for data in (bytearray(SAMPLE_BYTES), memoryview(SAMPLE_BYTES)):
        decoded = MSG.decode(data)  # type: ignore[arg-type]  # documented to accept these
        assert decoded == SAMPLE
        assert type(decoded["key"]) is bytes
        assert type(decoded["blob"]) is bytes


# --- decode strictness: each rule, with its exact message -------------------

STRICT_CASES: list[tuple[str, bytes, str]] = [
    ("empty-input", b"", "test-message: empty message"),
    ("wrong-type-id", b"\x61" + SAMPLE_BYTES[1:], "test-message: wrong message type 0x61"),
    ("type-id-only", b"\x60", "test-message: truncated before field 'kind'"),
    (
        "unknown-tag-first",
        message(field(6, b"\x01"), *list(FIELDS.values())[1:]),
        "test-message: unexpected field tag 6",
    ),
    (
        "unknown-tag-extra",
        message(*FIELDS.values(), field(10, b"")),
        "test-message: 5 trailing bytes",
    ),
    (
        "unknown-tag-in-gap",
        message(*(FIELDS[t] for t in (1, 2, 3, 4, 5)), field(6, b""), FIELDS[7], FIELDS[9]),
        "test-message: unexpected field tag 6",
    ),
    (
        "missing-middle-field",
        message(*(f for t, f in FIELDS.items() if t != 3)),
        "test-message: field tag 4 out of order or repeated",
    ),
    (
        "missing-last-field",
        message(*(f for t, f in FIELDS.items() if t != 9)),
        "test-message: truncated before field 'memo'",
    ),
    (
        "repeated-tag",
        message(FIELDS[1], FIELDS[1], *(f for t, f in FIELDS.items() if t != 1)),
        "test-message: field tag 1 out of order or repeated",
    ),
    (
        "repeated-last-tag",
        message(*FIELDS.values(), FIELDS[9]),
        "test-message: 8 trailing bytes",
    ),
    (
        "out-of-order",
        message(FIELDS[2], FIELDS[1], *(f for t, f in FIELDS.items() if t > 2)),
        "test-message: field tag 2 out of order or repeated",
    ),
    (
        "out-of-order-last-two",
        message(*(f for t, f in FIELDS.items() if t < 7), FIELDS[9], FIELDS[7]),
        "test-message: field tag 9 out of order or repeated",
    ),
    ("fixed-too-short", sample_with(5, b"\xaa\xbb\xcc"), "field 'key': expected 4 bytes, got 3"),
    ("fixed-too-long", sample_with(5, b"\xaa" * 5), "field 'key': expected 4 bytes, got 5"),
    ("fixed-empty", sample_with(5, b""), "field 'key': expected 4 bytes, got 0"),
    ("uint8-two-bytes", sample_with(1, b"\x00\x01"), "field 'kind': expected 1 bytes, got 2"),
    ("uint16-one-byte", sample_with(2, b"\x02"), "field 'count': expected 2 bytes, got 1"),
    ("uint32-empty", sample_with(3, b""), "field 'seq': expected 4 bytes, got 0"),
    ("uint64-nine-bytes", sample_with(4, bytes(9)), "field 'amount': expected 8 bytes, got 9"),
    ("bytes-over-max", sample_with(7, b"z" * 9), "field 'blob': 9 bytes exceeds 8"),
    ("text-over-max", sample_with(9, b"a" * 13), "field 'memo': text longer than 12 bytes"),
    ("utf8-invalid-byte", sample_with(9, b"\xff"), "field 'memo': invalid UTF-8"),
    ("utf8-truncated", sample_with(9, b"ok\xc3"), "field 'memo': invalid UTF-8"),
    ("utf8-overlong-slash", sample_with(9, b"\xc0\xaf"), "field 'memo': invalid UTF-8"),
    ("utf8-overlong-nul", sample_with(9, b"\xe0\x80\x80"), "field 'memo': invalid UTF-8"),
    ("utf8-surrogate", sample_with(9, b"\xed\xa0\x80"), "field 'memo': invalid UTF-8"),
    ("utf8-above-10ffff", sample_with(9, b"\xf4\x90\x80\x80"), "field 'memo': invalid UTF-8"),
    ("utf8-lone-continuation", sample_with(9, b"\x80"), "field 'memo': invalid UTF-8"),
    ("trailing-byte", SAMPLE_BYTES + b"\x00", "test-message: 1 trailing bytes"),
    ("trailing-field", SAMPLE_BYTES + field(1, b"\x01"), "test-message: 6 trailing bytes"),
    ("truncated-header", SAMPLE_BYTES[:3], "test-message: truncated before field 'kind'"),
    ("truncated-value", SAMPLE_BYTES[:6], "test-message: field 'kind' runs past the end"),
    (
        "truncated-last-value",
        SAMPLE_BYTES[:-1],
        "test-message: field 'memo' runs past the end",
    ),
    (
        "length-0xffffffff",
        message(struct.pack(">BI", 1, 0xFFFFFFFF), b"\x01"),
        "test-message: field 'kind' runs past the end",
    ),
    (
        "oversize",
        SAMPLE_BYTES + bytes(75 - len(SAMPLE_BYTES) + 1),
        "test-message: 76 bytes exceeds the limit of 75",
    ),
    (
        "oversize-huge",
        b"\x60" + bytes(1 << 20),
        f"test-message: {(1 << 20) + 1} bytes exceeds the limit of 75",
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [(d, m) for _, d, m in STRICT_CASES],
    ids=[name for name, _, _ in STRICT_CASES],
)
def test_decode_rejects(data: bytes, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        MSG.decode(data)
    assert str(info.value) == expected


def test_decode_checks_size_before_anything_else() -> None:
    """An oversize input is refused on its length alone, even with a wrong type id."""
    with pytest.raises(DecodeError, match=r"^test-message: 76 bytes exceeds the limit of 75$"):
        MSG.decode(b"\x00" * 76)


def test_every_proper_prefix_is_rejected() -> None:
    for end in range(len(SAMPLE_BYTES)):
        with pytest.raises(DecodeError):
            MSG.decode(SAMPLE_BYTES[:end])


@pytest.mark.parametrize("data", ["60", 0x60, None, [0x60]], ids=["str", "int", "none", "list"])
def test_decode_refuses_non_bytes(data: object) -> None:
    with pytest.raises(DecodeError, match=r"^test-message: expected bytes$"):
        MSG.decode(data)  # type: ignore[arg-type]


def test_decode_error_is_a_protocol_error_and_a_value_error() -> None:
    with pytest.raises(DecodeError) as info:
        MSG.decode(b"")
    assert isinstance(info.value, ProtocolError)
    assert isinstance(info.value, ValueError)


def test_peek_type() -> None:
    assert Schema.peek_type(SAMPLE_BYTES) == 0x60
    assert Schema.peek_type(b"\x00") == 0
    with pytest.raises(DecodeError, match=r"^empty message$"):
        Schema.peek_type(b"")


# --- encode-side validation: a bad value is the caller's bug (ValueError) ---

ENCODE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-field", SAMPLE | {"zzz": 1}, "test-message: unknown fields ['zzz']"),
    (
        "missing-field",
        {k: v for k, v in SAMPLE.items() if k != "memo"},
        "test-message: missing field 'memo'",
    ),
    ("uint-negative", SAMPLE | {"kind": -1}, "field 'kind': expected an unsigned 8-bit integer"),
    ("uint8-256", SAMPLE | {"kind": 256}, "field 'kind': expected an unsigned 8-bit integer"),
    (
        "uint16-65536",
        SAMPLE | {"count": 65536},
        "field 'count': expected an unsigned 16-bit integer",
    ),
    (
        "uint64-2**64",
        SAMPLE | {"amount": 2**64},
        "field 'amount': expected an unsigned 64-bit integer",
    ),
    ("uint-bool", SAMPLE | {"kind": True}, "field 'kind': expected an unsigned 8-bit integer"),
    ("uint-float", SAMPLE | {"kind": 1.0}, "field 'kind': expected an unsigned 8-bit integer"),
    ("uint-str", SAMPLE | {"kind": "1"}, "field 'kind': expected an unsigned 8-bit integer"),
    ("fixed-short", SAMPLE | {"key": b"abc"}, "field 'key': expected exactly 4 bytes"),
    ("fixed-long", SAMPLE | {"key": b"abcde"}, "field 'key': expected exactly 4 bytes"),
    ("fixed-bytearray", SAMPLE | {"key": bytearray(4)}, "field 'key': expected exactly 4 bytes"),
    ("fixed-str", SAMPLE | {"key": "abcd"}, "field 'key': expected exactly 4 bytes"),
    ("bytes-long", SAMPLE | {"blob": b"z" * 9}, "field 'blob': expected at most 8 bytes"),
    ("bytes-str", SAMPLE | {"blob": "xy"}, "field 'blob': expected at most 8 bytes"),
    ("bytes-none", SAMPLE | {"blob": None}, "field 'blob': expected at most 8 bytes"),
    ("text-bytes", SAMPLE | {"memo": b"hi"}, "field 'memo': expected text"),
    (
        "text-lone-surrogate",
        SAMPLE | {"memo": "a\ud800"},
        "field 'memo': text is not encodable as UTF-8",
    ),
    ("text-long", SAMPLE | {"memo": "é" * 7}, "field 'memo': text longer than 12 bytes"),
]


@pytest.mark.parametrize(
    ("values", "expected"),
    [(v, m) for _, v, m in ENCODE_CASES],
    ids=[name for name, _, _ in ENCODE_CASES],
)
def test_encode_rejects(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError) as info:
        MSG.encode(values)
    assert not isinstance(info.value, DecodeError)
    assert str(info.value) == expected


def test_encode_refuses_message_over_max_size() -> None:
    assert len(BIG.encode({"data": b"\x00" * 14})) == 20
    with pytest.raises(ValueError, match=r"^test-big: 21 bytes exceeds the limit of 20$"):
        BIG.encode({"data": b"\x00" * 15})


def test_text_limit_counts_utf8_bytes_not_characters() -> None:
    assert MSG.decode(MSG.encode(SAMPLE | {"memo": "é" * 6}))["memo"] == "é" * 6
    with pytest.raises(ValueError, match="text longer than 12 bytes"):
        MSG.encode(SAMPLE | {"memo": "€" * 5})  # 5 characters, 15 bytes


# --- schema definition errors ------------------------------------------------


@pytest.mark.parametrize("type_id", [-1, 256, 1000], ids=lambda t: f"id-{t}")
def test_schema_type_id_must_fit_a_byte(type_id: int) -> None:
    with pytest.raises(ValueError, match=r"^type_id must fit in one byte$"):
        Schema("test-bad-id", type_id, [], max_size=1)


def test_schema_type_id_reuse_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^type id 0x60 already used by test-message$"):
        Schema("test-other", 0x60, [], max_size=1)


@pytest.mark.parametrize(
    "fields",
    [
        [Field(2, "a", UInt(8)), Field(1, "b", UInt(8))],
        [Field(1, "a", UInt(8)), Field(1, "b", UInt(8))],
        [Field(256, "a", UInt(8))],
        [Field(-1, "a", UInt(8))],
    ],
    ids=["descending", "duplicate", "tag-256", "tag-negative"],
)
def test_schema_tags_must_ascend(fields: list[Field]) -> None:
    with pytest.raises(
        ValueError, match=r"^field tags must be unique one-byte values in ascending order$"
    ):
        Schema("test-bad-tags", 0x6E, fields, max_size=64)


def test_schema_field_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match=r"^field names must be unique$"):
        Schema("test-bad-names", 0x6E, [Field(1, "a", UInt(8)), Field(2, "a", UInt(8))], 64)


def test_failed_schema_does_not_reserve_its_type_id() -> None:
    with pytest.raises(ValueError):
        Schema("test-failed", 0x6F, [Field(2, "a", UInt(8)), Field(1, "b", UInt(8))], 64)
    ok = Schema("test-after-failure", 0x6F, [Field(1, "a", UInt(8))], 64)
    assert ok.encode({"a": 7}) == bytes.fromhex("6f010000000107")


@pytest.mark.parametrize("bits", [0, 1, 12, 128], ids=lambda b: f"bits-{b}")
def test_uint_bits(bits: int) -> None:
    with pytest.raises(ValueError, match=r"^UInt bits must be 8, 16, 32 or 64$"):
        UInt(bits)


def test_schema_repr() -> None:
    assert repr(MSG) == "Schema('test-message', type_id=0x60)"


# --- hypothesis --------------------------------------------------------------

VALUES = st.fixed_dictionaries(
    {
        "kind": st.integers(0, 2**8 - 1),
        "count": st.integers(0, 2**16 - 1),
        "seq": st.integers(0, 2**32 - 1),
        "amount": st.integers(0, 2**64 - 1),
        "key": st.binary(min_size=4, max_size=4),
        "blob": st.binary(max_size=8),
        "memo": st.text(max_size=12).filter(lambda s: len(s.encode("utf-8")) <= 12),
    }
)


@settings(max_examples=250)
@given(VALUES)
def test_decode_encode_round_trip(values: dict[str, Any]) -> None:
    encoded = MSG.encode(values)
    assert MSG.decode(encoded) == values
    assert MSG.encode(MSG.decode(encoded)) == encoded


def _check_bytes(data: bytes) -> None:
    """Either a DecodeError, or a value that re-encodes to exactly ``data``."""
    try:
        decoded = MSG.decode(data)
    except DecodeError:
        return
    assert MSG.encode(decoded) == data


@settings(max_examples=250)
@given(st.binary(max_size=96))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    _check_bytes(data)
    _check_bytes(b"\x60" + data)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few byte-level edits: reaches every decoder branch."""
    data = bytearray(MSG.encode(draw(VALUES)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data.insert(pos, draw(st.integers(0, 255)))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@settings(max_examples=300)
@given(mutated_encodings())
def test_mutated_encodings_decode_canonically_or_raise_decode_error(data: bytes) -> None:
    _check_bytes(data)


@st.composite
def field_soup(draw: st.DrawFn) -> bytes:
    """Well-framed fields with arbitrary tags and lengths: exercises tag and kind rules."""
    tags = draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), max_size=9))
    parts = [field(t, draw(st.binary(max_size=10))) for t in tags]
    return message(*parts)


@settings(max_examples=250)
@given(field_soup())
def test_field_soup_decodes_canonically_or_raises_decode_error(data: bytes) -> None:
    _check_bytes(data)
