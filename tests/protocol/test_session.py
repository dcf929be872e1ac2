"""The session machine, two endpoints wired together in memory (h11's ConnectionPair idea)."""

from __future__ import annotations

import contextlib
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import (
    ChannelError,
    DecodeError,
    HandshakeError,
    IdentityMismatch,
    P2PTransferError,
    ProtocolError,
)
from p2ptransfer.protocol.channel import MAX_PLAINTEXT
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, accept
from p2ptransfer.protocol.request import (
    PaymentRequest,
    RequestAnswerKind,
    SignedRequest,
    sign_answer,
    sign_request,
)
from p2ptransfer.protocol.session import (
    FRAME,
    Aborted,
    Established,
    FrameKind,
    PeerClosed,
    ReceiptArrived,
    RecordType,
    RequestAnswerArrived,
    RequestArrived,
    Session,
    SessionState,
    TransferArrived,
    abort_frame,
    decode_batch,
    encode_batches,
    frame_tag,
    is_session_start,
)
from p2ptransfer.protocol.transfer import SignedTransfer, Transfer

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))
MALLORY = Identity(bytes(range(2, 34)))


def make_transfer(
    sender: Identity = ALICE,
    recipient: Identity = BOB,
    amount: int = 1250,
    signer: Identity | None = None,
) -> SignedTransfer:
    """A transfer signed by ``signer`` (default: its sender), valid or not."""
    transfer = Transfer(
        id=secrets.token_bytes(16),  # type: ignore[arg-type]
        sender=sender.address,
        recipient=recipient.address,
        amount=amount,
        currency="EUR",
        memo="rent",
        created_at=1_700_000_000_000,
    )
    return SignedTransfer(transfer, (signer or sender).sign(transfer.signing_message()))


class Pair:
    """An initiator and a responder session with a loss-free pipe between them."""

    def __init__(
        self,
        initiator: Identity = ALICE,
        responder: Identity = BOB,
        expected=None,
        max_records=None,
    ):
        self.tag = secrets.token_bytes(16)
        self.i = Session.initiate(
            initiator,
            (expected or responder).public,
            tag=self.tag,
            ephemeral_private=secrets.token_bytes(32),
            nonce=secrets.token_bytes(32),
            max_records=max_records,
        )
        self.r = Session.respond(
            responder,
            tag=self.tag,
            ephemeral_private=secrets.token_bytes(32),
            max_records=max_records,
        )

    def i_to_r(self):
        events = []
        for frame in self.i.data_to_send():
            events += self.r.receive_frame(frame)
        return events

    def r_to_i(self):
        events = []
        for frame in self.r.data_to_send():
            events += self.i.receive_frame(frame)
        return events

    def handshake(self):
        assert self.i_to_r() == []
        i_events = self.r_to_i()
        r_events = self.i_to_r()
        return i_events, r_events


def test_handshake_establishes_both_sides_with_the_same_session_id():
    pair = Pair()
    (i_est,), (r_est,) = pair.handshake()
    assert isinstance(i_est, Established) and isinstance(r_est, Established)
    assert i_est.peer == BOB.public and r_est.peer == ALICE.public
    assert i_est.session_id == r_est.session_id
    assert pair.i.is_open and pair.r.is_open


def test_transfer_and_receipt_flow_and_clean_close():
    pair = Pair()
    pair.handshake()
    signed = make_transfer()
    pair.i.send_transfer(signed)
    (arrived,) = pair.i_to_r()
    assert arrived == TransferArrived(signed, None)
    receipt = accept(BOB, signed, 1_700_000_000_500)
    pair.r.send_receipt(receipt)
    (got,) = pair.r_to_i()
    assert got == ReceiptArrived(receipt)
    pair.i.close()
    assert pair.i.state is SessionState.CLOSED
    assert pair.i_to_r() == [PeerClosed()]
    assert pair.r.state is SessionState.CLOSED


def test_first_frame_is_a_session_start_with_the_tag():
    pair = Pair()
    (hello,) = pair.i.data_to_send()
    assert is_session_start(hello)
    assert frame_tag(hello) == pair.tag


@pytest.mark.parametrize(
    ("sender", "signer", "recipient", "problem"),
    [
        (MALLORY, MALLORY, BOB, RejectReason.INVALID),  # claims another sender than the peer
        (ALICE, MALLORY, BOB, RejectReason.INVALID),  # signed by another key
        (ALICE, ALICE, MALLORY, RejectReason.WRONG_RECIPIENT),
    ],
    ids=["sender-is-not-peer", "signed-by-other-key", "wrong-recipient"],
)
def test_transfers_that_must_be_refused_are_flagged(sender, signer, recipient, problem):
    pair = Pair()
    pair.handshake()
    signed = make_transfer(sender=sender, recipient=recipient, signer=signer)
    pair.i.send_transfer(signed)
    (arrived,) = pair.i_to_r()
    assert arrived.problem is problem


def test_wrong_expected_identity_fails_before_any_record():
    pair = Pair(expected=MALLORY)
    pair.i_to_r()
    with pytest.raises(IdentityMismatch):
        pair.r_to_i()
    assert pair.i.state is SessionState.ERROR
    with pytest.raises(ProtocolError):
        pair.i.send_transfer(make_transfer())


def test_frame_for_another_session_is_refused():
    pair = Pair()
    pair.handshake()
    other = FRAME.encode({"tag": bytes(16), "kind": int(FrameKind.RECORD), "body": b"x"})
    with pytest.raises(ProtocolError, match="another session"):
        pair.r.receive_frame(other)
    assert pair.r.state is SessionState.ERROR


def test_a_transfer_sent_to_the_initiator_fails_its_session_closed():
    """Transfers flow initiator -> responder only: the other way is the peer misbehaving."""
    pair = Pair()
    pair.handshake()
    pair.r.send_transfer(make_transfer())  # a hostile responder may seal anything
    with pytest.raises(ProtocolError, match=r"^the peer sent a transfer in our session$"):
        pair.r_to_i()
    assert pair.i.state is SessionState.ERROR
    with pytest.raises(ProtocolError, match="session is error"):
        pair.i.send_transfer(make_transfer())
    assert pair.i.data_to_send() == []


def test_a_receipt_sent_to_the_responder_fails_its_session_closed():
    """Receipts flow responder -> initiator only: a receipt in its own session is refused."""
    pair = Pair()
    pair.handshake()
    signed = make_transfer()
    pair.i.send_receipt(accept(BOB, signed, 1_700_000_000_500))
    with pytest.raises(ProtocolError, match=r"^the peer sent a receipt in its own session$"):
        pair.i_to_r()
    assert pair.r.state is SessionState.ERROR
    pair.i.send_transfer(signed)  # nothing later is read: the session failed closed
    with pytest.raises(ProtocolError, match="session is error"):
        pair.i_to_r()


def test_replayed_record_closes_the_session():
    pair = Pair()
    pair.handshake()
    pair.i.send_transfer(make_transfer())
    (frame,) = pair.i.data_to_send()
    pair.r.receive_frame(frame)
    with pytest.raises(ChannelError):
        pair.r.receive_frame(frame)
    assert pair.r.state is SessionState.ERROR
    with pytest.raises(ProtocolError):
        pair.r.receive_frame(frame)


def test_flipped_byte_in_a_record_closes_the_session():
    pair = Pair()
    pair.handshake()
    pair.i.send_transfer(make_transfer())
    (frame,) = pair.i.data_to_send()
    tampered = bytearray(frame)
    tampered[-1] ^= 0x01
    with pytest.raises(ChannelError):
        pair.r.receive_frame(bytes(tampered))
    assert pair.r.finished


def test_abort_frame_ends_the_session():
    pair = Pair()
    pair.handshake()
    assert pair.r.receive_frame(abort_frame(pair.tag)) == [Aborted()]
    assert pair.r.state is SessionState.ERROR


def test_record_during_handshake_is_refused():
    pair = Pair()
    record = FRAME.encode({"tag": pair.tag, "kind": int(FrameKind.RECORD), "body": b"\x00" * 40})
    with pytest.raises(HandshakeError, match="unexpected RECORD"):
        pair.r.receive_frame(record)


def test_reflected_hello_is_refused_by_the_initiator():
    pair = Pair()
    (hello,) = pair.i.data_to_send()
    with pytest.raises(HandshakeError):
        pair.i.receive_frame(hello)


def test_needs_rekey_near_the_record_cap():
    pair = Pair(max_records=10)
    pair.handshake()
    sent = 0
    while not pair.i.needs_rekey:
        pair.i.send_transfer(make_transfer())
        pair.i_to_r()
        sent += 1
        assert sent < 10
    assert pair.i.needs_rekey


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_frames_only_raise_package_errors(data):
    pair = Pair()
    pair.handshake()
    try:
        pair.r.receive_frame(data)
    except P2PTransferError:
        assert pair.r.finished


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_frames_into_a_fresh_responder_only_raise_package_errors(data):
    session = Session.respond(BOB, tag=bytes(16), ephemeral_private=secrets.token_bytes(32))
    with contextlib.suppress(P2PTransferError):
        session.receive_frame(data)


def test_frame_decoder_is_strict():
    with pytest.raises(DecodeError):
        frame_tag(b"")
    with pytest.raises(DecodeError, match="unknown session frame kind"):
        frame_tag(FRAME.encode({"tag": bytes(16), "kind": 99, "body": b""}))


def test_second_reply_from_another_connection_of_the_responder_is_ignored():
    """The relay fans a HELLO out to every connection of an address; two may answer."""
    tag = secrets.token_bytes(16)
    initiator = Session.initiate(
        ALICE,
        BOB.public,
        tag=tag,
        ephemeral_private=secrets.token_bytes(32),
        nonce=secrets.token_bytes(32),
    )
    (hello,) = initiator.data_to_send()
    first = Session.respond(BOB, tag=tag, ephemeral_private=secrets.token_bytes(32))
    second = Session.respond(BOB, tag=tag, ephemeral_private=secrets.token_bytes(32))
    first.receive_frame(hello)
    second.receive_frame(hello)
    (reply_1,), (reply_2,) = first.data_to_send(), second.data_to_send()
    assert isinstance(initiator.receive_frame(reply_1)[0], Established)
    assert initiator.receive_frame(reply_2) == []
    (finish,) = initiator.data_to_send()
    assert isinstance(first.receive_frame(finish)[0], Established)
    with pytest.raises(HandshakeError):
        second.receive_frame(finish)  # the loser cannot open it: it ends, quietly, on its side
    initiator.send_transfer(make_transfer())
    (record,) = initiator.data_to_send()
    assert isinstance(first.receive_frame(record)[0], TransferArrived)


# --- payment requests and their answers ------------------------------------------------


def make_request(payee: Identity = ALICE, payer: Identity = BOB, signer=None) -> SignedRequest:
    request = PaymentRequest(
        id=secrets.token_bytes(16),
        payee=payee.address,
        payer=payer.address,
        amount=1250,
        currency="EUR",
        memo="dinner",
        created_at=1_700_000_000_000,
        expires_at=1_700_086_400_000,
    )
    if signer is None:
        return sign_request(payee, request)
    return SignedRequest(request, signer.sign(request.signing_message()))


def test_a_request_and_its_answers_flow_both_ways():
    """The payee may be either side of a session; so may whoever answers."""
    pair = Pair()  # ALICE initiates, BOB responds
    pair.handshake()
    request = make_request(payee=ALICE, payer=BOB)
    pair.i.send_request(request)
    assert pair.i_to_r() == [RequestArrived(request)]
    decline = sign_answer(BOB, request, RequestAnswerKind.DECLINED, 1_700_000_001_000)
    pair.r.send_request_answer(decline)
    assert pair.r_to_i() == [RequestAnswerArrived(decline)]

    other = make_request(payee=BOB, payer=ALICE)
    pair.r.send_request(other)
    assert pair.r_to_i() == [RequestArrived(other)]
    cancel = sign_answer(BOB, other, RequestAnswerKind.CANCELLED, 1_700_000_002_000)
    pair.r.send_request_answer(cancel)
    assert pair.r_to_i() == [RequestAnswerArrived(cancel)]
    pair.i.close()
    assert pair.i_to_r() == [PeerClosed()]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (make_request(payee=MALLORY, payer=BOB), "asks for someone else"),
        (make_request(payee=ALICE, payer=MALLORY), "addressed to someone else"),
        (make_request(payee=ALICE, payer=BOB, signer=MALLORY), "not signed by its payee"),
    ],
    ids=["payee-is-not-peer", "payer-is-not-us", "signed-by-other-key"],
)
def test_a_request_the_peer_may_not_send_us_ends_the_session(request_, message):
    pair = Pair()
    pair.handshake()
    pair.i._seal(0x15, request_.encode())  # a hostile peer seals whatever it likes
    with pytest.raises(ProtocolError, match=message):
        pair.i_to_r()
    assert pair.r.state is SessionState.ERROR


def test_an_answer_not_signed_by_the_peer_ends_the_session():
    pair = Pair()
    pair.handshake()
    request = make_request(payee=MALLORY, payer=BOB)
    answer = sign_answer(MALLORY, request, RequestAnswerKind.CANCELLED, 1_700_000_001_000)
    pair.i._seal(0x16, answer.encode())
    with pytest.raises(ProtocolError, match="signed by someone else"):
        pair.i_to_r()
    assert pair.r.state is SessionState.ERROR


def test_an_answer_with_a_bad_signature_ends_the_session():
    pair = Pair()
    pair.handshake()
    answer = sign_answer(ALICE, make_request(), RequestAnswerKind.CANCELLED, 1_700_000_001_000)
    forged = type(answer)(answer.answer, bytes(64))
    pair.i._seal(0x16, forged.encode())
    with pytest.raises(ProtocolError, match="not signed by its signer"):
        pair.i_to_r()


def test_a_request_record_that_does_not_decode_ends_the_session():
    pair = Pair()
    pair.handshake()
    pair.i._seal(0x15, make_transfer().encode())
    with pytest.raises(DecodeError, match="wrong message type 0x21"):
        pair.i_to_r()
    assert pair.r.state is SessionState.ERROR


def test_sending_a_request_or_answer_that_is_not_ours_is_refused_and_sends_nothing():
    pair = Pair()
    pair.handshake()
    with pytest.raises(ValueError, match="must be our own"):
        pair.i.send_request(make_request(payee=BOB, payer=ALICE))
    with pytest.raises(ValueError, match="someone other than the session's peer"):
        pair.i.send_request(make_request(payee=ALICE, payer=MALLORY))
    decline = sign_answer(BOB, make_request(), RequestAnswerKind.DECLINED, 1_700_000_001_000)
    with pytest.raises(ValueError, match="must be our own"):
        pair.i.send_request_answer(decline)
    assert pair.i.data_to_send() == []
    assert pair.i.is_open


# --- batches: several transfers / receipts in one record ------------------------


def test_a_batch_plaintext_is_length_prefixed_items_to_the_exact_byte():
    assert encode_batches([b"ab", b"c"]) == [b"\x00\x02ab\x00\x01c"]
    assert decode_batch(b"\x00\x02ab\x00\x01c") == [b"ab", b"c"]
    # Split to fit the limit, in order, every item whole.
    assert encode_batches([b"ab", b"cd", b"e"], limit=8) == [b"\x00\x02ab\x00\x02cd", b"\x00\x01e"]
    with pytest.raises(ValueError):
        encode_batches([b""])
    with pytest.raises(ValueError):
        encode_batches([b"abcdefg"], limit=8)


@pytest.mark.parametrize(
    "plaintext",
    [b"", b"\x00", b"\x00\x00", b"\x00\x00x", b"\x00\x03ab", b"\x00\x01a\x00"],
    ids=["empty", "half-length", "zero-length", "zero-length-then-byte", "past-end", "trailing"],
)
def test_a_malformed_batch_plaintext_is_refused(plaintext):
    with pytest.raises(DecodeError):
        decode_batch(plaintext)


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=80))
@settings(max_examples=50, deadline=None)
def test_batches_round_trip_and_respect_the_record_limit(items):
    batches = encode_batches(items)
    assert all(0 < len(b) <= MAX_PLAINTEXT for b in batches)
    assert [item for b in batches for item in decode_batch(b)] == items


def test_transfers_travel_in_one_record_and_receipts_come_back_batched():
    pair = Pair()
    pair.handshake()
    transfers = [make_transfer(amount=n) for n in range(1, 6)]
    pair.i.send_transfers(transfers)
    (frame,) = pair.i.data_to_send()  # one record for all five
    arrived = pair.r.receive_frame(frame)
    assert arrived == [TransferArrived(t, None) for t in transfers]
    receipts = [accept(BOB, t, 1_700_000_000_500) for t in transfers]
    pair.r.send_receipts(receipts)
    (frame,) = pair.r.data_to_send()
    assert pair.i.receive_frame(frame) == [ReceiptArrived(r) for r in receipts]


def test_a_batch_is_judged_item_by_item():
    pair = Pair()
    pair.handshake()
    good, forged = make_transfer(), make_transfer(signer=MALLORY)
    pair.i.send_transfers([good, forged])
    assert pair.i_to_r() == [
        TransferArrived(good, None),
        TransferArrived(forged, RejectReason.INVALID),
    ]


def test_a_peer_that_sends_single_transfers_gets_single_receipts():
    pair = Pair()
    pair.handshake()
    transfers = [make_transfer(), make_transfer()]
    for t in transfers:
        pair.i.send_transfer(t)
    pair.i_to_r()
    pair.r.send_receipts([accept(BOB, t, 1_700_000_000_500) for t in transfers])
    assert len(pair.r.data_to_send()) == 2  # one RECEIPT record each


def test_a_single_transfer_uses_the_single_form():
    pair = Pair()
    pair.handshake()
    pair.i.send_transfers([make_transfer()])
    pair.i_to_r()
    pair.r.send_receipts([accept(BOB, make_transfer(), 1_700_000_000_500)])
    assert len(pair.r.data_to_send()) == 1


def test_batches_in_the_wrong_direction_end_the_session():
    pair = Pair()
    pair.handshake()
    transfers = [make_transfer(), make_transfer()]
    pair.i.send_transfers(transfers)
    pair.i_to_r()
    pair.r.send_receipts([accept(BOB, t, 1_700_000_000_500) for t in transfers])
    pair.r_to_i()
    # The responder cannot send transfers, nor the initiator receipts, batched or not.
    pair.r._seal(RecordType.TRANSFERS, encode_batches([make_transfer(BOB, ALICE).encode()])[0])
    with pytest.raises(ProtocolError):
        pair.r_to_i()
    assert pair.i.state is SessionState.ERROR
