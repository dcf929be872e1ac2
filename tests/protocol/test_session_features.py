"""Batches only for a peer that reads them: the FEATURES frame and the RECEIPTS proof."""

from __future__ import annotations

import pytest

from p2ptransfer.errors import DecodeError
from p2ptransfer.protocol.receipt import accept
from p2ptransfer.protocol.session import (
    TAG_SIZE,
    FrameKind,
    ReceiptArrived,
    RecordType,
    parse_frame,
)
from tests.protocol.test_session import BOB, Pair, make_transfer


def features_frame(tag: bytes, body: bytes) -> bytes:
    """A session-frame of kind FEATURES, spelled out byte by byte."""
    return (
        bytes([0x18, 1, 0, 0, 0, TAG_SIZE]) + tag
        + bytes([2, 0, 0, 0, 1, FrameKind.FEATURES])
        + bytes([3]) + len(body).to_bytes(4, "big") + body
    )  # fmt: skip


def flags_body(flags: int) -> bytes:
    return bytes([0x1A, 1, 0, 0, 0, 4]) + flags.to_bytes(4, "big")  # session-features


def test_the_features_frame_is_exact_bytes_after_the_hello():
    pair = Pair()
    pair.i.offer_batches()
    hello, features = pair.i.data_to_send()
    assert parse_frame(hello).kind is FrameKind.HELLO
    assert features == features_frame(pair.i.tag, flags_body(1))  # flags = BATCHES


def test_a_responder_offered_batches_answers_even_one_receipt_batched():
    pair = Pair()
    pair.i.offer_batches()
    pair.handshake()
    assert not pair.i.peer_reads_batches
    transfer = make_transfer()
    pair.i.send_transfer(transfer)
    pair.i_to_r()
    pair.r.send_receipts([accept(BOB, transfer, 1_700_000_000_500)])
    (frame,) = pair.r.data_to_send()
    header = parse_frame(frame).body
    assert header[1] == RecordType.RECEIPTS
    assert pair.i.receive_frame(frame) == [ReceiptArrived(accept(BOB, transfer, 1_700_000_000_500))]
    assert pair.i.peer_reads_batches  # an authenticated RECEIPTS record proved it


def test_without_the_offer_receipts_stay_single_and_the_initiator_never_learns_batches():
    pair = Pair()
    pair.handshake()
    transfers = [make_transfer(), make_transfer()]
    for t in transfers:
        pair.i.send_transfer(t)
    pair.i_to_r()
    pair.r.send_receipts([accept(BOB, t, 1_700_000_000_500) for t in transfers])
    frames = pair.r.data_to_send()
    assert [parse_frame(f).body[1] for f in frames] == [RecordType.RECEIPT] * 2
    for frame in frames:
        pair.i.receive_frame(frame)
    assert not pair.i.peer_reads_batches


def test_unknown_feature_bits_are_ignored():
    pair = Pair()
    (hello,) = pair.i.data_to_send()
    pair.r.receive_frame(hello)
    assert pair.r.receive_frame(features_frame(pair.i.tag, flags_body(0xFFFF_FFFE))) == []
    pair.r_to_i()
    pair.i_to_r()  # the handshake completes as usual
    transfers = [make_transfer(), make_transfer()]
    for t in transfers:
        pair.i.send_transfer(t)
    pair.i_to_r()
    pair.r.send_receipts([accept(BOB, t, 1_700_000_000_500) for t in transfers])
    assert len(pair.r.data_to_send()) == 2  # every bit but BATCHES: still single receipts


def test_a_malformed_features_body_ends_the_session():
    pair = Pair()
    (hello,) = pair.i.data_to_send()
    pair.r.receive_frame(hello)
    with pytest.raises(DecodeError):
        pair.r.receive_frame(features_frame(pair.i.tag, flags_body(1)[:-1]))
    assert pair.r.finished


def test_only_the_initiator_offers_batches():
    pair = Pair()
    with pytest.raises(ValueError):
        pair.r.offer_batches()


def test_an_initiator_ignores_a_features_frame_whatever_it_holds():
    pair = Pair()
    pair.handshake()
    assert pair.i.receive_frame(features_frame(pair.i.tag, b"garbage")) == []
    assert pair.i.is_open and not pair.i.peer_reads_batches
