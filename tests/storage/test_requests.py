"""Payment requests in the ledger: recorded both ways, answered, and paid at most once.

Every ledger here is a real SQLite file opened with its owner's key (the
direction of a request comes from the owner). Paying is judged inside the
write transaction that records the paying transfer, so the tests look at
both the transfer row and the request after each batch — and after a
failure, at neither having changed.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2ptransfer.errors import (
    InputError,
    LedgerIntegrityError,
    NotFound,
    ProtocolError,
    SignatureError,
    TransferConflict,
)
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, SignedReceipt, accept, reject
from p2ptransfer.protocol.request import (
    RequestAnswerKind,
    RequestState,
    SignedRequest,
    sign_answer,
    sign_request,
)
from p2ptransfer.protocol.transfer import SignedTransfer
from p2ptransfer.storage import schema
from p2ptransfer.storage.ledger import Ledger, TransferStatus
from tests.storage.builders import T0, make_request, make_transfer, new_identity

AT = T0 + 60_000  # when the payee's ledger records things: well before the requests expire


@pytest.fixture
def owned(tmp_path: Path, me: Identity) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "home" / "ledger.sqlite3", owner=me) as opened:
        yield opened


def _refuse_with(me: Identity) -> Callable[[SignedTransfer, RejectReason], SignedReceipt]:
    return lambda signed, reason: reject(me, signed, reason, AT)


def _pay(
    ledger: Ledger,
    me: Identity,
    payments: list[SignedTransfer],
    at: int = AT,
) -> list[tuple[SignedReceipt, TransferStatus | None]]:
    """Record ``payments`` as accepted by ``me`` in one batch, refusals via on_request."""
    recorded = ledger.record_incoming_batch(
        [(signed, accept(me, signed, at)) for signed in payments],
        at,
        on_request=lambda signed, reason: reject(me, signed, reason, at),
    )
    return [(r.receipt, None if r.row is None else r.row.status) for r in recorded]


def _count(ledger: Ledger, table: str) -> int:
    return int(ledger._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --- recording ----------------------------------------------------------------------


def test_a_request_is_recorded_in_the_direction_the_owner_has_in_it(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500, memo="pizza")
    asked_of_me = make_request(bob, me, 700, "usd", created_at=T0 + 1)
    out = owned.record_request(asked, AT)
    inc = owned.record_request(asked_of_me, AT)
    assert (out.direction, out.counterparty, out.amount, out.memo) == (
        "out",
        bob.address,
        "5.00",
        "pizza",
    )
    assert (inc.direction, inc.counterparty, inc.amount, inc.currency) == (
        "in",
        bob.address,
        "7.00",
        "USD",
    )
    assert out.state is inc.state is RequestState.OPEN
    assert out.paid_by is None and out.signed_answer is None and out.updated_at == AT
    assert out.signed == asked and out.expires_at == T0 + 3_600_000
    assert owned.get_request(asked.id) == out == owned.get_request(asked.id, "out")
    with pytest.raises(NotFound, match=f"no payment request {asked.id.hex()} in the ledger"):
        owned.get_request(asked.id, "in")
    assert owned.requests(AT) == [inc, out]  # newest first
    assert owned.requests(AT, direction="in") == [inc]


def test_a_request_between_two_others_or_badly_signed_is_refused(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    carol = new_identity()
    others = make_request(bob, carol)
    with pytest.raises(InputError, match=f"payment request {others.id.hex()} is not yours"):
        owned.record_request(others, AT)
    forged = SignedRequest(make_request(me, bob).request, bytes(64))
    with pytest.raises(SignatureError, match="not signed by its payee"):
        owned.record_request(forged, AT)
    assert _count(owned, "requests") == 0


def test_recording_a_request_is_idempotent_and_a_second_content_is_refused(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    first = owned.record_request(asked, AT)
    assert owned.record_request(asked, AT + 5) == first  # same bytes: nothing changes
    other = sign_request(me, dataclasses.replace(asked.request, amount=600))
    with pytest.raises(
        TransferConflict,
        match=f"^payment request {asked.id.hex()} is already recorded with other content; "
        "the first is kept$",
    ):
        owned.record_request(other, AT + 6)
    assert owned.requests(AT) == [first]


def test_an_unowned_ledger_cannot_tell_a_request_s_direction(
    ledger: Ledger, me: Identity, bob: Identity
) -> None:
    with pytest.raises(InputError, match="does not name its owner"):
        ledger.record_request(make_request(me, bob), AT)


# --- answers ------------------------------------------------------------------------


def test_the_payer_declines_and_the_same_answer_again_changes_nothing(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob)
    owned.record_request(asked, AT)
    declined = sign_answer(bob, asked, RequestAnswerKind.DECLINED, AT + 1)
    row = owned.answer_request(declined, AT + 2)
    assert (row.state, row.updated_at, row.answer) == (RequestState.DECLINED, AT + 2, declined)
    assert owned.answer_request(declined, AT + 9) == row
    # A later cancellation of a request already declined keeps the first answer.
    cancelled = sign_answer(me, asked, RequestAnswerKind.CANCELLED, AT + 3)
    assert owned.answer_request(cancelled, AT + 4) == row


def test_the_payee_cancels_and_the_payer_declines_a_request_to_it(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    mine, theirs = make_request(me, bob), make_request(bob, me)
    owned.record_request(mine, AT)
    owned.record_request(theirs, AT)
    cancelled = owned.answer_request(sign_answer(me, mine, RequestAnswerKind.CANCELLED, AT), AT)
    declined = owned.answer_request(sign_answer(me, theirs, RequestAnswerKind.DECLINED, AT), AT)
    assert (cancelled.direction, cancelled.state) == ("out", RequestState.CANCELLED)
    assert (declined.direction, declined.state) == ("in", RequestState.DECLINED)
    bob_cancels = sign_answer(bob, theirs, RequestAnswerKind.CANCELLED, AT)
    assert owned.answer_request(bob_cancels, AT).state is RequestState.DECLINED


def test_an_answer_that_does_not_close_the_stored_request_changes_nothing(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    unknown = make_request(me, bob)
    with pytest.raises(NotFound, match=f"^no payment request {unknown.id.hex()} in the ledger$"):
        owned.answer_request(sign_answer(bob, unknown, RequestAnswerKind.DECLINED, AT), AT)
    # Same id, other content (a request the payer was shown that is not the one we keep).
    twin = sign_request(me, dataclasses.replace(asked.request, amount=501))
    with pytest.raises(ProtocolError, match="digest mismatch"):
        owned.answer_request(sign_answer(bob, twin, RequestAnswerKind.DECLINED, AT), AT)
    answer = sign_answer(bob, asked, RequestAnswerKind.DECLINED, AT)
    forged = dataclasses.replace(answer, signature=bytes(64))
    with pytest.raises(SignatureError):
        owned.answer_request(forged, AT)
    assert owned.get_request(asked.id).state is RequestState.OPEN


def test_a_paid_request_cannot_be_declined_or_cancelled(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    payment = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 1)
    _pay(owned, me, [payment])
    for signer, kind, word in ((bob, RequestAnswerKind.DECLINED, "declined"),
                               (me, RequestAnswerKind.CANCELLED, "cancelled")):  # fmt: skip
        with pytest.raises(
            InputError,
            match=f"^payment request {asked.id.hex()} is already paid \\(by transfer "
            f"{payment.id.hex()}\\); it cannot be {word}$",
        ):
            owned.answer_request(sign_answer(signer, asked, kind, AT), AT)
    assert owned.get_request(asked.id).state is RequestState.PAID


# --- paying (the payee's side) ------------------------------------------------------


def test_a_payment_is_accepted_once_and_marks_its_request_paid(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    payment = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 1)
    receipt = accept(me, payment, AT)
    (recorded,) = owned.record_incoming_batch([(payment, receipt)], AT)
    assert recorded.receipt == receipt
    assert recorded.row is not None and recorded.row.status is TransferStatus.COMPLETED
    row = owned.get_request(asked.id)
    assert (row.state, row.paid_by, row.updated_at) == (RequestState.PAID, payment.id, AT)
    assert row.state_at(asked.request.expires_at + 1) is RequestState.PAID  # paid stays paid
    # The same transfer again is answered from storage, before any request check.
    assert owned.record_incoming(payment, accept(me, payment, AT + 1), AT + 1) == receipt
    assert owned.verify(me) == 2  # the owner entry and the payment


def test_a_second_payment_of_one_request_is_refused_request_paid(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    first, second, third = (
        make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + i) for i in (1, 2, 3)
    )
    # Two in one batch: only the first is accepted.
    (r1, s1), (r2, s2) = _pay(owned, me, [first, second])
    assert (r1.receipt.accepted, s1) == (True, TransferStatus.COMPLETED)
    assert (r2.receipt.accepted, r2.receipt.reason, s2) == (
        False, RejectReason.REQUEST_PAID, TransferStatus.REJECTED)  # fmt: skip
    # And one in a later batch.
    ((r3, s3),) = _pay(owned, me, [third], AT + 1)
    assert (r3.receipt.reason, s3) == (RejectReason.REQUEST_PAID, TransferStatus.REJECTED)
    assert owned.get_transfer(third.id, "in").reason == "request_paid"
    assert owned.get_request(asked.id).paid_by == first.id
    assert owned.balances() == {(bob.address, "EUR"): 500}
    assert owned.verify(me) == 4


def test_a_second_process_paying_the_same_request_is_refused(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    first = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 1)
    second = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 2)
    with Ledger.open(owned.path, owner=me) as other:
        _pay(other, me, [first])
    ((answer, status),) = _pay(owned, me, [second])
    assert (answer.receipt.reason, status) == (RejectReason.REQUEST_PAID, TransferStatus.REJECTED)


def test_marking_paid_and_recording_the_transfer_commit_together_or_not_at_all(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    payment = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 1)
    known = make_transfer(bob, me, 100)
    owned.record_incoming(known, accept(me, known, AT), AT)
    conflicting = make_transfer(bob, me, 999, transfer_id=known.id)
    before = owned.head
    with pytest.raises(TransferConflict):  # a later item of the batch fails: all rolls back
        owned.record_incoming_batch(
            [(payment, accept(me, payment, AT)), (conflicting, accept(me, conflicting, AT))], AT
        )
    assert owned.head == before
    assert owned.get_request(asked.id).state is RequestState.OPEN
    with pytest.raises(NotFound):
        owned.get_transfer(payment.id, "in")
    # The request is still payable, by the very same transfer.
    ((answer, status),) = _pay(owned, me, [payment])
    assert answer.receipt.accepted and status is TransferStatus.COMPLETED


def test_without_on_request_a_refused_payment_raises_and_writes_nothing(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    ordinary = make_transfer(bob, me, 100)
    wrong = make_transfer(bob, me, 499, request_id=asked.id, created_at=T0 + 1)
    before = owned.head
    with pytest.raises(
        InputError,
        match=f"^transfer {wrong.id.hex()} cannot pay payment request {asked.id.hex()} "
        r"\(request_mismatch\); nothing was recorded$",
    ):
        owned.record_incoming_batch(
            [(ordinary, accept(me, ordinary, AT)), (wrong, accept(me, wrong, AT))], AT
        )
    assert owned.head == before and owned.transfers() == []


def test_on_request_must_return_a_rejection_of_that_transfer_for_that_reason(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    wrong = make_transfer(bob, me, 499, request_id=asked.id, created_at=T0 + 1)
    other = make_transfer(bob, me, 100)
    bad_answers: list[Callable[[SignedTransfer, RejectReason], SignedReceipt]] = [
        lambda signed, reason: accept(me, signed, AT),
        lambda signed, reason: reject(me, signed, RejectReason.POLICY, AT),
        lambda signed, reason: reject(me, other, reason, AT),
    ]
    for bad in bad_answers:
        with pytest.raises((ValueError, ProtocolError)):
            owned.record_incoming_batch([(wrong, accept(me, wrong, AT))], AT, on_request=bad)
    assert owned.transfers() == []


@pytest.mark.parametrize(
    ("amount", "currency", "payer_is_bob"),
    [(499, "EUR", True), (500, "USD", True), (500, "EUR", False)],
    ids=["amount", "currency", "payer"],
)
def test_a_payment_that_does_not_match_its_request_is_refused_request_mismatch(
    owned: Ledger, me: Identity, bob: Identity, amount: int, currency: str, payer_is_bob: bool
) -> None:
    asked = make_request(me, bob, 500, "EUR")
    owned.record_request(asked, AT)
    sender = bob if payer_is_bob else new_identity()
    payment = make_transfer(sender, me, amount, currency, request_id=asked.id, created_at=T0 + 1)
    ((answer, status),) = _pay(owned, me, [payment])
    assert (answer.receipt.reason, status) == (RejectReason.REQUEST_MISMATCH,
                                               TransferStatus.REJECTED)  # fmt: skip
    assert owned.get_request(asked.id).state is RequestState.OPEN


def test_a_payment_of_an_unknown_or_foreign_request_is_refused_request_mismatch(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    theirs = make_request(bob, me, 500)  # bob asked *me*: not a request I can be paid for
    owned.record_request(theirs, AT)
    unknown = make_transfer(bob, me, 500, request_id=bytes(range(16)), created_at=T0 + 1)
    foreign = make_transfer(bob, me, 500, request_id=theirs.id, created_at=T0 + 1)
    results = _pay(owned, me, [unknown, foreign])
    assert [answer.receipt.reason for answer, _ in results] == [RejectReason.REQUEST_MISMATCH] * 2
    assert owned.get_request(theirs.id).state is RequestState.OPEN


def test_an_expired_or_closed_request_refuses_its_payment(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    expiring = make_request(me, bob, 500, expires_in=1000)
    cancelled = make_request(me, bob, 500)
    declined = make_request(me, bob, 500)
    for signed in (expiring, cancelled, declined):
        owned.record_request(signed, T0)
    owned.answer_request(sign_answer(me, cancelled, RequestAnswerKind.CANCELLED, T0), T0)
    owned.answer_request(sign_answer(bob, declined, RequestAnswerKind.DECLINED, T0), T0)
    expires_at = expiring.request.expires_at
    row = owned.get_request(expiring.id)
    assert row.state_at(expires_at - 1) is RequestState.OPEN
    assert row.state_at(expires_at) is RequestState.EXPIRED  # strict: at the instant itself
    payments = [
        make_transfer(bob, me, 500, request_id=signed.id, created_at=T0 + 1)
        for signed in (expiring, cancelled, declined)
    ]
    results = _pay(owned, me, payments, at=expires_at)  # the payee's clock decides
    assert [answer.receipt.reason for answer, _ in results] == [
        RejectReason.REQUEST_EXPIRED,
        RejectReason.REQUEST_CANCELLED,
        RejectReason.REQUEST_CANCELLED,
    ]
    stored = owned.get_request(expiring.id)
    assert stored.state is RequestState.OPEN  # expiry is read, never stored
    assert owned.requests(expires_at, state=RequestState.EXPIRED) == [stored]
    assert owned.requests(expires_at, state=RequestState.OPEN) == []
    assert owned.requests(expires_at, state="expired") == [stored]
    with pytest.raises(InputError, match=r"^unknown request state 'gone'$"):
        owned.requests(expires_at, state="gone")
    with pytest.raises(InputError, match=r"^direction is 'in' or 'out'$"):
        owned.requests(expires_at, direction="both")


def test_a_rejected_payment_stays_rejected_and_an_ordinary_transfer_ignores_requests(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    refused = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 1)
    owned.record_incoming(refused, reject(me, refused, RejectReason.POLICY, AT), AT)
    plain = make_transfer(bob, me, 500)
    owned.record_incoming(plain, accept(me, plain, AT), AT)
    assert owned.get_request(asked.id).state is RequestState.OPEN


# --- paying (the payer's side) ------------------------------------------------------


def test_paid_request_ids_are_those_our_live_or_completed_transfers_pay(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    ids = [bytes([i]) * 16 for i in range(1, 5)]
    pays = [make_transfer(me, bob, 100, request_id=rid) for rid in ids]
    plain = make_transfer(me, bob, 100)
    owned.record_outgoing_batch([*pays, plain], AT)
    owned.mark_queued([pays[1].id], AT)
    owned.complete_outgoing(accept(bob, pays[2], AT), AT)
    owned.mark_failed(pays[3].id, AT)
    assert owned.paid_request_ids() == {ids[0], ids[1], ids[2]}
    owned.complete_outgoing(reject(bob, pays[0], RejectReason.REQUEST_EXPIRED, AT), AT)
    assert owned.paid_request_ids() == {ids[1], ids[2]}
    with Ledger.open(owned.path, owner=me) as reopened:  # decoded from the file, not a cache
        assert reopened.paid_request_ids() == {ids[1], ids[2]}


# --- migration and verify -----------------------------------------------------------


def test_a_version_5_ledger_keeps_its_data_and_gains_requests(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    source = tmp_path / "current.sqlite3"
    with Ledger.open(source) as ledger:
        done, waiting = make_transfer(me, bob, 100), make_transfer(me, bob, 200)
        ledger.record_outgoing_batch([done, waiting], T0)
        ledger.complete_outgoing(accept(bob, done, T0), T0)
        ledger.add_contact("bob", bob.address, T0)
        expected = ledger.transfers()
    old = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(old, isolation_level=None)
    for version, statements in enumerate(schema.MIGRATIONS[:5]):
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version + 1}")
    conn.execute(f"ATTACH DATABASE '{source}' AS src")
    for table in ("journal", "transfers", "contacts"):
        conn.execute(f"INSERT INTO {table} SELECT * FROM src.{table}")
    conn.execute("UPDATE ledger_head SET seq = (SELECT seq FROM src.ledger_head), "
                 "hash = (SELECT hash FROM src.ledger_head)")  # fmt: skip
    conn.execute("DETACH DATABASE src")
    conn.close()
    with Ledger.open(old) as ledger:
        assert ledger.schema_version == schema.SCHEMA_VERSION == 6
        assert ledger.transfers() == expected
        assert [c.name for c in ledger.contacts()] == ["bob"]
        assert ledger.verify() == 3
        ledger.unlock(me)
        assert ledger.record_request(make_request(me, bob), AT).state is RequestState.OPEN


def test_verify_refuses_a_paid_request_without_the_transfer_that_paid_it(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    payment = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 1)
    plain = make_transfer(bob, me, 500)
    refused = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 2)
    owned.record_incoming(plain, accept(me, plain, AT), AT)
    owned.record_incoming(refused, reject(me, refused, RejectReason.POLICY, AT), AT)
    _pay(owned, me, [payment])
    assert owned.verify(me) == 4
    label = asked.id.hex()
    cases = [
        (bytes(16), f"transfer {bytes(16).hex()}, which is not an incoming transfer"),
        (plain.id, f"transfer {plain.id.hex()}, which does not pay it"),
        (refused.id, f"transfer {refused.id.hex()}, which is rejected, not completed"),
    ]
    for paid_by, message in cases:
        owned._conn.execute("UPDATE requests SET paid_by = ? WHERE id = ?", (paid_by, asked.id))
        with pytest.raises(
            LedgerIntegrityError, match=f"^payment request {label} is marked paid by {message}"
        ):
            owned.verify(me)
    owned._conn.execute("UPDATE requests SET paid_by = ? WHERE id = ?", (payment.id, asked.id))
    assert owned.verify(me) == 4


def test_a_recovered_accepted_payment_marks_its_open_request_paid(
    owned: Ledger, me: Identity, bob: Identity
) -> None:
    """After a restore, reconciliation brings back the payment: the request must not reopen."""
    asked = make_request(me, bob, 500)
    owned.record_request(asked, AT)
    payment = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 1)
    (row,) = owned.recover([(payment, accept(me, payment, AT))], AT + 1)
    assert row.status is TransferStatus.COMPLETED
    stored = owned.get_request(asked.id)
    assert (stored.state, stored.paid_by) == (RequestState.PAID, payment.id)
    assert owned.verify(me) == 2
    second = make_transfer(bob, me, 500, request_id=asked.id, created_at=T0 + 2)
    ((answer, _),) = _pay(owned, me, [second])
    assert answer.receipt.reason is RejectReason.REQUEST_PAID
