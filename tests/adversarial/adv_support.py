"""Shared helpers of the adversarial suite (peers, ledgers, the exactly-once checks)."""

from __future__ import annotations

from p2ptransfer.storage.ledger import TransferStatus
from tests.peers import Side, listening

__all__ = ["Side", "assert_exactly_once", "assert_untouched_or_pending", "listening"]


Expected = tuple[int, str, str]  # amount, currency, memo


def assert_exactly_once(sender: Side, receiver: Side, expected: list[Expected]) -> None:
    """Every intended transfer recorded once per side, completed, exact content; both verify.

    Also checks that nothing else (an altered or injected transfer) was recorded.
    """
    out = [r for r in sender.ledger.transfers() if r.direction == "out"]
    incoming = {
        r.id: r
        for r in receiver.ledger.transfers()
        if r.direction == "in" and r.counterparty == sender.address
    }
    assert sorted((r.amount_minor, r.currency, r.memo) for r in out) == sorted(expected)
    assert set(incoming) == {r.id for r in out}
    assert not [r for r in receiver.ledger.transfers() if r.direction == "out"]
    for row in out:
        theirs = incoming[row.id]
        assert row.status == TransferStatus.COMPLETED, row
        assert theirs.status == TransferStatus.COMPLETED, theirs
        assert theirs.signed_transfer == row.signed_transfer
        assert theirs.signed_receipt == row.signed_receipt
        assert (theirs.amount_minor, theirs.currency, theirs.memo) == (
            row.amount_minor,
            row.currency,
            row.memo,
        )
        assert theirs.counterparty == sender.address and row.counterparty == receiver.address
    sender.ledger.verify()
    receiver.ledger.verify()


def assert_untouched_or_pending(sender: Side, receiver: Side, expected: list[Expected]) -> None:
    """After a failed attempt: nothing altered anywhere; the sender's rows are pending or done."""
    out = [r for r in sender.ledger.transfers() if r.direction == "out"]
    assert sorted((r.amount_minor, r.currency, r.memo) for r in out) == sorted(expected)
    by_id = {r.id: r for r in out}
    for row in receiver.ledger.transfers():
        assert row.direction == "in"
        mine = by_id[row.id]  # nothing the sender did not sign
        assert row.signed_transfer == mine.signed_transfer
        assert row.status == TransferStatus.COMPLETED
    for row in out:
        assert row.status in (TransferStatus.PENDING, TransferStatus.COMPLETED), row
    sender.ledger.verify()
    receiver.ledger.verify()
