"""Bulk writes and remembered decodes leave the ledger exactly as one write per entry did.

A write transaction holds its journal entries and rows and writes them with
one ``executemany`` per table just before COMMIT; batch lookups fetch a
batch's rows in one query; rows read back get their signed transfer from the
objects the ledger itself wrote. These tests compare every such path with the
plain one: same journal, same rows (in the same order), same answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2ptransfer.errors import TransferConflict
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, accept, reject
from p2ptransfer.protocol.transfer import Transfer, sign_transfer
from p2ptransfer.storage import transfers as transfers_module
from p2ptransfer.storage.ledger import Ledger, TransferStatus
from p2ptransfer.storage.schema import EntryKind
from tests.storage.builders import T0, make_transfer


def _dump(ledger: Ledger) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], object]:
    conn = ledger._conn
    journal = conn.execute("SELECT * FROM journal ORDER BY seq").fetchall()
    rows = conn.execute("SELECT rowid, * FROM transfers ORDER BY rowid").fetchall()
    return journal, rows, conn.execute("SELECT seq, hash FROM ledger_head").fetchone()


def test_a_batch_writes_what_single_writes_write(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    transfers = [make_transfer(me, bob, 100 + i) for i in range(5)]
    with (
        Ledger.open(tmp_path / "one.sqlite3") as one,
        Ledger.open(tmp_path / "many.sqlite3") as many,
    ):
        for signed in transfers:
            one.record_outgoing(signed, T0)
        many.record_outgoing_batch(transfers, T0)
        receipts = [accept(bob, t, T0 + 1) for t in transfers[:3]]
        receipts.append(reject(bob, transfers[3], RejectReason.POLICY, T0 + 1))
        for receipt in receipts:
            one.complete_outgoing(receipt, T0 + 2)
        many.complete_outgoing_batch(receipts, T0 + 2)
        assert _dump(one) == _dump(many)
        assert one.verify() == many.verify() == 9


def test_one_transfer_twice_in_a_batch_sees_its_own_pending_write(
    ledger: Ledger, me: Identity, bob: Identity
) -> None:
    signed = make_transfer(me, bob, 100)
    first, again = ledger.record_outgoing_batch([signed, signed], T0)
    assert first == again and first.status is TransferStatus.PENDING
    receipt = accept(bob, signed, T0 + 1)
    done, repeat = ledger.complete_outgoing_batch([receipt, receipt], T0 + 2)
    assert done == repeat and done.status is TransferStatus.COMPLETED
    assert ledger.verify() == 2
    other = sign_transfer(
        me,
        Transfer(
            id=signed.id,
            sender=me.address,
            recipient=bob.address,
            amount=999,
            currency="EUR",
            memo="",
            created_at=T0,
        ),
    )
    fresh = make_transfer(me, bob, 100)
    with pytest.raises(TransferConflict):
        ledger.record_outgoing_batch([fresh, other], T0)
    assert ledger.verify() == 2  # nothing of the failed batch was written
    assert ledger.get_transfer(signed.id, "out").status is TransferStatus.COMPLETED


def test_incoming_batch_rows_equal_what_is_read_back(
    ledger: Ledger, me: Identity, bob: Identity
) -> None:
    transfers = [make_transfer(bob, me, 10 + i) for i in range(4)]
    items = [(t, accept(me, t, T0)) for t in transfers]
    results = ledger.record_incoming_batch([*items, items[0]], T0)
    assert [receipt for receipt, _ in results] == [r for _, r in items] + [items[0][1]]
    rows = [row for _, row in results]
    assert rows[-1] is None  # the repeat within the batch wrote nothing
    for row, signed in zip(rows, transfers, strict=False):
        assert row == ledger.get_transfer(signed.id, "in")
    assert ledger.incoming_many([t.id for t in transfers] + [bytes(16)]) == {
        t.id: (t, r) for t, r in items
    }
    assert ledger.incoming_many([]) == {}
    again = ledger.record_incoming_batch(items[:2], T0 + 5)
    assert [row for _, row in again] == [None, None]
    assert ledger.verify() == 4


def test_lookups_of_large_batches_are_chunked(
    ledger: Ledger, me: Identity, bob: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfers_module, "_LOOKUP_CHUNK", 3)
    transfers = [make_transfer(me, bob, 1 + i) for i in range(8)]
    ledger.record_outgoing_batch(transfers[:5], T0)
    rows = ledger.record_outgoing_batch(transfers, T0)  # five known, three new
    assert [row.id for row in rows] == [t.id for t in transfers]
    assert ledger.verify() == 8


def test_rows_read_back_reuse_the_written_objects_and_decode_the_same(
    ledger: Ledger, me: Identity, bob: Identity, tmp_path: Path
) -> None:
    signed = make_transfer(me, bob, 100)
    ledger.record_outgoing(signed, T0)
    row = ledger.get_transfer(signed.id, "out")
    assert row.signed is signed  # remembered by its exact bytes
    with Ledger.open(ledger.path) as other:  # a ledger that did not write it decodes it
        fresh = other.get_transfer(signed.id, "out")
        assert fresh.signed == signed and fresh.signed is not signed
        assert fresh.signed.encode() == signed.encode()


def test_the_decode_memory_is_bounded(
    ledger: Ledger, me: Identity, bob: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfers_module, "_DECODED_CACHE", 2)
    transfers = [make_transfer(me, bob, 1 + i) for i in range(4)]
    ledger.record_outgoing_batch(transfers, T0)
    # Only the last two written are remembered; the older ones are decoded again.
    for old in transfers[:2]:
        row = ledger.get_transfer(old.id, "out")
        assert row.signed == old and row.signed is not old
    assert ledger.get_transfer(transfers[3].id, "out").signed is transfers[3]


def test_append_outside_a_write_transaction_is_refused(
    ledger: Ledger, me: Identity, bob: Identity
) -> None:
    signed = make_transfer(me, bob, 100)
    with pytest.raises(RuntimeError, match="inside a write transaction"):
        ledger._append(ledger._conn, EntryKind.OUT_PENDING, signed.id, T0, None, signed=signed)
    assert ledger.verify() == 0


def test_nothing_reaches_sqlite_before_the_end_of_the_transaction(
    ledger: Ledger, me: Identity, bob: Identity
) -> None:
    signed = make_transfer(me, bob, 100)
    with ledger._transaction() as conn:
        ledger._append(conn, EntryKind.OUT_PENDING, signed.id, T0, None, signed=signed)
        assert conn.execute("SELECT count(*) FROM journal").fetchone() == (0,)
        assert ledger._current(conn, signed.id, "out") is not None
    assert ledger.verify() == 1
    # What the transaction held was written once and let go: the next write is its own.
    ledger.record_outgoing(make_transfer(me, bob, 200), T0)
    assert ledger.verify() == 2
