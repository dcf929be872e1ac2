"""The one decision a receiver makes about an arriving transfer, as a table."""

from __future__ import annotations

import dataclasses

import pytest

from p2ptransfer.protocol.acceptance import AcceptancePolicy, Action, Verdict, decide
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, accept
from p2ptransfer.protocol.request import PaymentRequest, RequestState
from p2ptransfer.protocol.transfer import SignedTransfer, Transfer, TransferId, sign_transfer
from tests.storage.builders import T0, make_transfer, new_identity

ALICE, BOB = new_identity(), new_identity()
HOUR = 3_600_000
REQUEST = PaymentRequest(
    id=bytes(range(16)),
    payee=BOB.address,
    payer=ALICE.address,
    amount=1250,
    currency="EUR",
    memo="dinner",
    created_at=T0,
    expires_at=T0 + 24 * HOUR,
)


def paying(
    request_id: bytes = REQUEST.id, amount: int = 1250, sender: Identity = ALICE
) -> SignedTransfer:
    transfer = Transfer(
        id=TransferId(bytes([7]) * 16),
        sender=sender.address,
        recipient=BOB.address,
        amount=amount,
        currency="EUR",
        memo="",
        created_at=T0,
        request_id=request_id,
    )
    return sign_transfer(sender, transfer)


def verdict(
    signed: SignedTransfer,
    *,
    known: bool = True,
    policy: AcceptancePolicy | None = None,
    state: RequestState | None = RequestState.OPEN,
    now: int = T0 + HOUR,
    problem: RejectReason | None = None,
) -> Verdict:
    request = None if state is None else (REQUEST, state)
    return decide(
        signed,
        problem=problem,
        stored=None,
        known_sender=known,
        policy=policy or AcceptancePolicy(),
        request=request,
        now_ms=now,
    )


def test_plain_transfers() -> None:
    plain = make_transfer(ALICE, BOB)
    assert verdict(plain, state=None) == Verdict(Action.RECORD, None)
    assert verdict(plain, known=False, state=None) == Verdict(
        Action.QUARANTINE, RejectReason.UNKNOWN_SENDER
    )
    assert verdict(plain, problem=RejectReason.WRONG_RECIPIENT) == Verdict(
        Action.REFUSE, RejectReason.WRONG_RECIPIENT
    )
    eur_only = AcceptancePolicy(currencies=frozenset({"USD"}))
    assert verdict(plain, policy=eur_only, state=None).reason is (
        RejectReason.CURRENCY_NOT_ACCEPTED
    )


def test_repeats_and_conflicts_come_first() -> None:
    plain = make_transfer(ALICE, BOB)
    stored = (plain, accept(BOB, plain, T0))
    again = decide(
        plain, problem=None, stored=stored, known_sender=False, policy=AcceptancePolicy()
    )
    assert again == Verdict(Action.REPEAT, stored=stored[1])
    other = dataclasses.replace(plain.transfer, amount=9999)
    changed = sign_transfer(ALICE, other)
    assert decide(
        changed, problem=None, stored=stored, known_sender=True, policy=AcceptancePolicy()
    ) == Verdict(Action.CONFLICT, RejectReason.CONFLICT)


@pytest.mark.parametrize(
    ("signed", "state", "now", "reason"),
    [
        (paying(), RequestState.OPEN, T0 + HOUR, None),
        (paying(amount=1), RequestState.OPEN, T0 + HOUR, RejectReason.REQUEST_MISMATCH),
        (paying(), RequestState.PAID, T0 + HOUR, RejectReason.REQUEST_PAID),
        (paying(), RequestState.CANCELLED, T0 + HOUR, RejectReason.REQUEST_CANCELLED),
        (paying(), RequestState.DECLINED, T0 + HOUR, RejectReason.REQUEST_CANCELLED),
        (paying(), RequestState.OPEN, T0 + 24 * HOUR, RejectReason.REQUEST_EXPIRED),
        (paying(), None, T0 + HOUR, RejectReason.REQUEST_MISMATCH),
    ],
    ids=["open", "other-amount", "paid", "cancelled", "declined", "expired", "unknown-request"],
)
def test_a_payment_is_held_to_its_request(
    signed: SignedTransfer, state: RequestState | None, now: int, reason: RejectReason | None
) -> None:
    assert verdict(signed, state=state, now=now) == Verdict(Action.RECORD, reason)


def test_a_strangers_payment_goes_to_quarantine_like_any_strangers_transfer() -> None:
    carol = new_identity()
    assert verdict(paying(sender=carol), known=False, state=None) == Verdict(
        Action.QUARANTINE, RejectReason.UNKNOWN_SENDER
    )


def test_a_satisfied_request_still_meets_the_policy() -> None:
    usd_only = AcceptancePolicy(currencies=frozenset({"USD"}))
    assert verdict(paying(), policy=usd_only).reason is RejectReason.CURRENCY_NOT_ACCEPTED
