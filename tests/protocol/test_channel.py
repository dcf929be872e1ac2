"""SecureChannel: record format, nonce rule, strict ordering, caps, failing closed."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import ChannelError, P2PTransferError, RecordLimitReached
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.channel import (
    DEFAULT_MAX_RECORDS,
    HEADER_SIZE,
    MAX_PLAINTEXT,
    MAX_RECORD_SIZE,
    RECORD_VERSION,
    ChannelState,
    DirectionKeys,
    SecureChannel,
    record_nonce,
)

A2B = DirectionKeys(key=bytes(range(32)), iv=bytes(range(100, 112)))
B2A = DirectionKeys(key=bytes(range(32, 64)), iv=bytes(range(200, 212)))
DATA = 0x10


def pair(max_records: int = DEFAULT_MAX_RECORDS) -> tuple[SecureChannel, SecureChannel]:
    """Two ends of one channel, wired like a completed handshake would wire them."""
    return (
        SecureChannel(A2B, B2A, max_records=max_records),
        SecureChannel(B2A, A2B, max_records=max_records),
    )


def assert_closed_for_good(channel: SecureChannel) -> None:
    assert channel.closed
    assert channel.state is ChannelState.CLOSED
    with pytest.raises(ChannelError, match="channel is closed"):
        channel.seal(DATA, b"x")
    with pytest.raises(ChannelError, match="channel is closed"):
        channel.open(b"\x01" * 40)


# --- format ------------------------------------------------------------------


def test_record_layout_is_header_then_aead_of_plaintext_with_header_as_ad() -> None:
    a, _b = pair()
    a.seal(DATA, b"first")
    record = a.seal(0x1F, b"hello")
    assert record[:HEADER_SIZE] == struct.pack(">BBQI", RECORD_VERSION, 0x1F, 1, 5 + 16)
    assert len(record) == HEADER_SIZE + 5 + 16
    body = primitives.aead_open(A2B.key, record_nonce(A2B.iv, 1), record[HEADER_SIZE:], record[:14])
    assert body == b"hello"


def test_nonce_is_seq_big_endian_xor_iv() -> None:
    iv = bytes.fromhex("000102030405060708090a0b")
    assert record_nonce(iv, 0) == iv
    assert record_nonce(iv, 1) == bytes.fromhex("000102030405060708090a0a")
    assert record_nonce(iv, 0x0102) == bytes.fromhex("000102030405060708090b09")
    assert record_nonce(iv, (1 << 64) - 1) == bytes.fromhex("00010203fbfaf9f8f7f6f5f4")


@pytest.mark.parametrize(
    ("iv", "seq"),
    [(b"\x00" * 11, 0), (b"\x00" * 12, -1), (b"\x00" * 12, 1 << 64)],
    ids=["short-iv", "negative-seq", "seq-over-64-bits"],
)
def test_nonce_rejects_bad_input(iv: bytes, seq: int) -> None:
    with pytest.raises(ValueError):
        record_nonce(iv, seq)


def test_nonces_never_repeat_over_100k_records_in_either_direction() -> None:
    seen = {record_nonce(keys.iv, seq) for keys in (A2B, B2A) for seq in range(100_000)}
    assert len(seen) == 200_000


def test_seal_uses_the_nonce_rule_for_consecutive_records() -> None:
    a, _b = pair()
    for seq in range(3):
        record = a.seal(DATA, bytes([seq]) * 7)
        nonce = record_nonce(A2B.iv, seq)
        assert primitives.aead_open(A2B.key, nonce, record[14:], record[:14]) == bytes([seq]) * 7


# --- flow ------------------------------------------------------------------------


def test_records_flow_both_ways_and_counters_advance() -> None:
    a, b = pair()
    for i in range(5):
        assert b.open(a.seal(DATA, b"ping %d" % i)) == (DATA, b"ping %d" % i)
        assert a.open(b.seal(0x11, b"pong %d" % i)) == (0x11, b"pong %d" % i)
    assert (a.send_seq, a.recv_seq, b.send_seq, b.recv_seq) == (5, 5, 5, 5)


@pytest.mark.parametrize("size", [0, 1, MAX_PLAINTEXT], ids=["empty", "one-byte", "max"])
def test_plaintext_sizes_round_trip(size: int) -> None:
    a, b = pair()
    record = a.seal(DATA, b"\xab" * size)
    assert len(record) == HEADER_SIZE + size + 16
    assert b.open(record) == (DATA, b"\xab" * size)


def test_channel_refuses_identical_keys_for_both_directions() -> None:
    with pytest.raises(ValueError, match="must differ"):
        SecureChannel(A2B, A2B)


def test_reflected_record_fails_and_closes() -> None:
    a, _b = pair()
    with pytest.raises(ChannelError, match="authentication failed"):
        a.open(a.seal(DATA, b"to myself"))
    assert_closed_for_good(a)


@pytest.mark.parametrize(
    ("keys", "max_records"),
    [
        ((b"k" * 31, b"i" * 12), 10),
        ((b"k" * 32, b"i" * 11), 10),
        ((b"k" * 32, b"i" * 12), 0),
        ((b"k" * 32, b"i" * 12), DEFAULT_MAX_RECORDS + 1),
    ],
    ids=["short-key", "short-iv", "zero-cap", "cap-above-default"],
)
def test_construction_validates(keys: tuple[bytes, bytes], max_records: int) -> None:
    with pytest.raises(ValueError):
        SecureChannel(DirectionKeys(*keys), B2A, max_records=max_records)


def test_direction_keys_stay_out_of_repr() -> None:
    assert A2B.key.hex() not in repr(A2B)
    assert repr(A2B) == "DirectionKeys()"


# --- local misuse: ValueError, nothing consumed -------------------------------------


@pytest.mark.parametrize(
    ("record_type", "plaintext", "match"),
    [
        (0x0F, b"", "record type"),
        (0x20, b"", "record type"),
        (DATA, b"x" * (MAX_PLAINTEXT + 1), "exceeds"),
    ],
    ids=["type-below-range", "type-above-range", "plaintext-too-big"],
)
def test_seal_misuse_is_value_error_and_consumes_nothing(
    record_type: int, plaintext: bytes, match: str
) -> None:
    a, b = pair()
    with pytest.raises(ValueError, match=match):
        a.seal(record_type, plaintext)
    assert a.send_seq == 0
    assert not a.closed
    assert b.open(a.seal(DATA, b"ok")) == (DATA, b"ok")


def test_non_bytes_are_a_type_error_and_change_nothing() -> None:
    a, b = pair()
    with pytest.raises(TypeError, match="plaintext must be bytes"):
        a.seal(DATA, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a record must be bytes"):
        b.open(5)  # type: ignore[arg-type]
    assert b.open(memoryview(a.seal(DATA, bytearray(b"ok")))) == (DATA, b"ok")


# --- tampering, replay, reorder, drop: rejected, closed for good ----------------------


_SAMPLE = SecureChannel(A2B, B2A).seal(DATA, b"hello")
_NAMES = ["version", "type", *[f"seq{i}" for i in range(8)], *[f"len{i}" for i in range(4)]]


def _position_id(i: int) -> str:
    if i < HEADER_SIZE:
        return f"header-{_NAMES[i]}"
    if i < len(_SAMPLE) - 16:
        return f"ciphertext-{i - HEADER_SIZE}"
    return f"tag-{i - (len(_SAMPLE) - 16)}"


@pytest.mark.parametrize("position", range(len(_SAMPLE)), ids=_position_id)
@pytest.mark.parametrize("flip", [0x01, 0x80], ids=["low-bit", "high-bit"])
def test_flipping_any_bit_of_a_record_is_rejected_and_closes(position: int, flip: int) -> None:
    a, b = pair()
    record = bytearray(a.seal(DATA, b"hello"))
    record[position] ^= flip
    with pytest.raises(ChannelError):
        b.open(bytes(record))
    assert b.recv_seq == 0
    assert_closed_for_good(b)


TAMPERS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "version": (lambda r: bytes([2]) + r[1:], "unsupported record version 2"),
    "type": (lambda r: r[:1] + b"\x20" + r[2:], "record type 0x20 outside the channel range"),
    "seq": (
        lambda r: r[:2] + (1).to_bytes(8, "big") + r[10:],
        "out of sequence: expected 0, got 1",
    ),
    "length-field": (
        lambda r: r[:10] + (22).to_bytes(4, "big") + r[14:],
        "length field says 22, record carries 21",
    ),
    "header-only": (lambda r: r[:13], "shorter than its 14-byte header"),
    "truncated-body": (lambda r: r[:-1], "length field says 21, record carries 20"),
    "tag": (lambda r: r[:-1] + bytes([r[-1] ^ 1]), "record authentication failed"),
    "shorter-than-tag": (
        lambda r: r[:10] + (4).to_bytes(4, "big") + r[14:18],
        "shorter than its authentication tag",
    ),
}


@pytest.mark.parametrize("case", TAMPERS, ids=list(TAMPERS))
def test_tampered_record_reasons_are_specific(case: str) -> None:
    tamper, reason = TAMPERS[case]
    a, b = pair()
    with pytest.raises(ChannelError, match=reason):
        b.open(tamper(a.seal(DATA, b"hello")))
    assert_closed_for_good(b)


def test_oversized_record_is_rejected_before_any_work() -> None:
    _a, b = pair()
    with pytest.raises(ChannelError, match=f"exceeds {MAX_RECORD_SIZE}"):
        b.open(b"\x01" * (MAX_RECORD_SIZE + 1))
    assert_closed_for_good(b)


def _stream(n: int) -> tuple[SecureChannel, list[bytes]]:
    a, b = pair()
    return b, [a.seal(DATA, b"record %d" % i) for i in range(n)]


@pytest.mark.parametrize(
    ("order", "fails_at", "reason"),
    [
        ([0, 0], 1, "expected 1, got 0"),
        ([0, 1, 0], 2, "expected 2, got 0"),
        ([1, 0], 0, "expected 0, got 1"),
        ([0, 2, 1], 1, "expected 1, got 2"),
        ([0, 2], 1, "expected 1, got 2"),
        ([0, 1, 2, 1], 3, "expected 3, got 1"),
    ],
    ids=["duplicate", "replay-older", "reorder-first", "reorder-later", "drop", "replay-after"],
)
def test_replay_reorder_drop_duplicate_abort(order: list[int], fails_at: int, reason: str) -> None:
    b, records = _stream(4)
    for step, index in enumerate(order):
        if step < fails_at:
            assert b.open(records[index]) == (DATA, b"record %d" % index)
        else:
            with pytest.raises(ChannelError, match=reason):
                b.open(records[index])
            break
    assert b.recv_seq == fails_at
    assert_closed_for_good(b)
    # Even the record it was waiting for is refused now: nothing more is applied.
    with pytest.raises(ChannelError, match="channel is closed"):
        b.open(records[fails_at])


def test_failed_decrypt_does_not_advance_then_channel_stays_closed() -> None:
    a, b = pair()
    good = a.seal(DATA, b"x")
    forged = good[:-1] + bytes([good[-1] ^ 0xFF])
    with pytest.raises(ChannelError, match="authentication failed"):
        b.open(forged)
    assert b.recv_seq == 0
    with pytest.raises(ChannelError, match=r"channel is closed \(record authentication failed\)"):
        b.open(good)


# --- record cap and rekey signal -----------------------------------------------------


def test_cap_of_ten_is_enforced_on_seal_and_never_wraps() -> None:
    a, b = pair(max_records=10)
    needs = []
    for i in range(10):
        assert a.send_remaining == 10 - i
        b.open(a.seal(DATA, b"%d" % i))
        needs.append(a.needs_rekey)
    # remaining * 8 < 10 only once a single record (or none) is left.
    assert needs == [False] * 8 + [True, True]
    assert a.send_remaining == 0
    with pytest.raises(RecordLimitReached, match="record limit of 10 reached"):
        a.seal(DATA, b"eleventh")
    assert_closed_for_good(a)


def test_receiver_enforces_its_cap_when_the_peer_does_not() -> None:
    a = SecureChannel(A2B, B2A, max_records=20)
    b = SecureChannel(B2A, A2B, max_records=10)
    for i in range(10):
        b.open(a.seal(DATA, b"%d" % i))
    assert b.recv_remaining == 0
    assert b.needs_rekey
    with pytest.raises(RecordLimitReached, match="peer exceeded the record limit of 10"):
        b.open(a.seal(DATA, b"eleventh"))
    assert_closed_for_good(b)


def test_needs_rekey_counts_the_receive_direction_too() -> None:
    a, b = pair(max_records=16)
    for _ in range(14):
        b.open(a.seal(DATA, b""))
    assert b.send_remaining == 16
    assert not b.needs_rekey  # 2 left: 2 * 8 == 16, not below
    b.open(a.seal(DATA, b""))
    assert b.needs_rekey


def test_default_cap_and_rekey_threshold() -> None:
    a, _b = pair()
    assert a.max_records == DEFAULT_MAX_RECORDS == 1 << 24
    assert a.send_remaining == 1 << 24
    assert not a.needs_rekey


# --- closing -------------------------------------------------------------------------


def test_close_is_final_idempotent_and_drops_keys() -> None:
    a, b = pair()
    record = a.seal(DATA, b"late")
    b.close()
    b.close()
    assert b._send is None and b._recv is None
    assert_closed_for_good(b)
    with pytest.raises(ChannelError, match=r"closed \(channel closed locally\)"):
        b.open(record)
    assert "closed" in repr(b) and A2B.key.hex() not in repr(b)


# --- fuzzing -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_only_raise_channel_errors(data: bytes) -> None:
    _a, b = pair()
    with pytest.raises(P2PTransferError):
        b.open(data)
    assert b.closed


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 3),
    st.binary(max_size=64),
)
def test_well_framed_garbage_only_raises_channel_errors(
    version: int, record_type: int, seq: int, body: bytes
) -> None:
    _a, b = pair()
    header = struct.pack(">BBQI", version, record_type, seq, len(body))
    with pytest.raises(ChannelError):
        b.open(header + body)
    assert b.closed
