"""The ``queued`` state: a pending transfer deposited in the recipient's relay mailbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from p2ptransfer.errors import LedgerIntegrityError, NotFound
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, accept, reject
from p2ptransfer.storage import schema
from p2ptransfer.storage.ledger import Ledger, TransferStatus
from tests.storage.builders import T0, make_transfer


def test_queued_waits_like_pending_and_ends_by_a_receipt(
    ledger: Ledger, me: Identity, bob: Identity
) -> None:
    first, second, third = (make_transfer(me, bob, n) for n in (100, 200, 300))
    ledger.record_outgoing_batch([first, second, third], T0)
    rows = ledger.mark_queued([first.id, second.id, third.id], T0 + 1)
    assert [r.status for r in rows] == [TransferStatus.QUEUED] * 3
    # Queued is still waiting: resend retries it, balances ignore it.
    assert [s.id for s in ledger.pending_outgoing()] == [first.id, second.id, third.id]
    assert ledger.balances() == {}
    # Queuing again changes nothing (no second journal entry).
    head = ledger.head
    assert [r.status for r in ledger.mark_queued([first.id], T0 + 2)] == [TransferStatus.QUEUED]
    assert ledger.head == head
    assert ledger.complete_outgoing(accept(bob, first, T0), T0 + 3).status == "completed"
    rejection = reject(bob, second, RejectReason.OVER_LIMIT, T0)
    assert ledger.complete_outgoing(rejection, T0 + 3).status == "rejected"
    assert ledger.mark_failed(third.id, T0 + 4).status == "failed"
    # A receipt that raced the deposit: the decided row is left alone.
    assert ledger.mark_queued([first.id], T0 + 5)[0].status == "completed"
    assert ledger.pending_outgoing() == []
    assert ledger.balances() == {(bob.address, "EUR"): -100}
    assert ledger.verify() == 3 + 3 + 3


def test_only_known_outgoing_transfers_can_be_queued(ledger: Ledger, me: Identity) -> None:
    with pytest.raises(NotFound):
        ledger.mark_queued([bytes(16)], T0)


def test_a_queued_entry_before_its_transfer_does_not_verify(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    path = tmp_path / "l.sqlite3"
    signed = make_transfer(me, bob)
    with Ledger.open(path) as ledger:
        ledger.record_outgoing(signed, T0)
        ledger.mark_queued([signed.id], T0)
        ledger.complete_outgoing(accept(bob, signed, T0), T0)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER journal_no_update")
        # Swap the kinds of entries 2 and 3: a receipt before the deposit, then a deposit.
        conn.execute("UPDATE journal SET kind = 'out-receipt' WHERE seq = 2")
    conn.close()
    with Ledger.open(path) as ledger, pytest.raises(LedgerIntegrityError):
        ledger.verify()


def test_a_version_3_ledger_keeps_its_rows_through_the_migration(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    """The status CHECK changes, so the table is rebuilt: nothing may be lost."""
    source = tmp_path / "current.sqlite3"
    paid, waiting = make_transfer(me, bob, 100), make_transfer(me, bob, 200)
    with Ledger.open(source) as ledger:
        ledger.record_outgoing_batch([paid, waiting], T0)
        ledger.complete_outgoing(accept(bob, paid, T0), T0)
        expected = ledger.transfers()
    old = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(old, isolation_level=None)
    for version, statements in enumerate(schema.MIGRATIONS[:3]):
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version + 1}")
    conn.execute(f"ATTACH DATABASE '{source}' AS src")
    for table in ("journal", "transfers"):
        conn.execute(f"INSERT INTO {table} SELECT * FROM src.{table}")
    conn.execute("UPDATE ledger_head SET seq = (SELECT seq FROM src.ledger_head), "
                 "hash = (SELECT hash FROM src.ledger_head)")  # fmt: skip
    conn.execute("DETACH DATABASE src")
    conn.close()
    with Ledger.open(old) as ledger:
        assert ledger.schema_version == schema.SCHEMA_VERSION
        assert ledger.transfers() == expected
        assert ledger.mark_queued([waiting.id], T0)[0].status == "queued"
        assert ledger.verify() == 4
