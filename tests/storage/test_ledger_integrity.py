"""verify() against tampering, and crash safety of the ledger's transactions.

Tampering is done with a separate plain sqlite3 connection, as someone editing
the file would. A "capable" tamperer also recomputes the hash chain (the
algorithm is public), so the test shows which *other* check catches the edit.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2ptransfer.errors import LedgerIntegrityError, StorageError
from p2ptransfer.protocol.receipt import RejectReason, accept, reject
from p2ptransfer.protocol.transfer import SignedTransfer, Transfer
from p2ptransfer.storage import schema
from p2ptransfer.storage.ledger import Ledger
from p2ptransfer.storage.schema import GENESIS_HASH, EntryKind
from tests.storage.builders import T0, make_transfer, new_identity


class Fixture:
    """An honest ledger with five journal entries:

    1 out-pending  t1 (me -> bob, 10.00)
    2 in-recorded  t2 (bob -> me, 5.00, accepted)
    3 out-receipt  t1 (accepted)
    4 out-pending  t3 (me -> bob, 1.00)
    5 in-recorded  t4 (bob -> me, 2.00, rejected)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.me, self.bob = new_identity(), new_identity()
        me, bob = self.me, self.bob
        self.t1 = make_transfer(me, bob, 1000)
        self.t2 = make_transfer(bob, me, 500)
        self.t3 = make_transfer(me, bob, 100)
        self.t4 = make_transfer(bob, me, 200)
        with Ledger.open(path) as ledger:
            ledger.record_outgoing(self.t1, T0 + 1)
            ledger.record_incoming(self.t2, accept(me, self.t2, T0 + 2), T0 + 2)
            ledger.complete_outgoing(accept(bob, self.t1, T0 + 3), T0 + 3)
            ledger.record_outgoing(self.t3, T0 + 4)
            ledger.record_incoming(
                self.t4, reject(me, self.t4, RejectReason.POLICY, T0 + 5), T0 + 5
            )
            assert ledger.verify() == 5

    def raw(self) -> sqlite3.Connection:
        """A plain connection with the journal's append-only triggers dropped (as an attacker)."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("DROP TRIGGER IF EXISTS journal_no_update")
        conn.execute("DROP TRIGGER IF EXISTS journal_no_delete")
        return conn

    def verify_error(self) -> LedgerIntegrityError:
        with Ledger.open(self.path) as ledger, pytest.raises(LedgerIntegrityError) as caught:
            ledger.verify()
        return caught.value


def rechain(conn: sqlite3.Connection) -> None:
    """Recompute every prev_hash/hash and the head, as a tamperer who knows the algorithm."""
    prev = GENESIS_HASH
    rows = conn.execute(
        "SELECT seq, kind, transfer_id, at, signed_transfer, signed_receipt FROM journal "
        "ORDER BY seq"
    ).fetchall()
    seq = 0
    for seq, kind, tid, at, st, sr in rows:
        encoded = schema.encode_entry(seq, EntryKind.from_text(kind), tid, at, st, sr)
        digest = schema.entry_hash(prev, encoded)
        conn.execute(
            "UPDATE journal SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq)
        )
        prev = digest
    conn.execute("UPDATE ledger_head SET seq = ?, hash = ?", (seq, prev))


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path / "ledger.sqlite3")


@pytest.fixture
def ledger(fx: Fixture) -> Iterator[Ledger]:
    with Ledger.open(fx.path) as opened:
        yield opened


def test_honest_ledger_verifies(fx: Fixture) -> None:
    with Ledger.open(fx.path) as ledger:
        assert ledger.verify() == 5
        assert ledger.head[0] == 5


def test_the_journal_refuses_update_and_delete(ledger: Ledger) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ledger._conn.execute("UPDATE journal SET at = 0 WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ledger._conn.execute("DELETE FROM journal WHERE seq = 5")
    assert ledger.verify() == 5


def test_edited_amount_in_the_transfers_table(fx: Fixture) -> None:
    conn = fx.raw()
    conn.execute("UPDATE transfers SET amount_minor = 99999 WHERE id = ?", (fx.t2.id,))
    conn.close()
    error = fx.verify_error()
    assert error.row == 2
    assert str(error) == (
        f"transfer {fx.t2.id.hex()} (in): the transfers table says amount_minor = 99999 but "
        "the journal implies 500"
    )


def test_edited_status_names_the_entry_that_set_it(fx: Fixture) -> None:
    conn = fx.raw()
    conn.execute("UPDATE transfers SET status = 'failed' WHERE id = ?", (fx.t3.id,))
    conn.execute("UPDATE transfers SET status = 'completed', reason = NULL WHERE id = ?",
                 (fx.t4.id,))  # fmt: skip
    conn.close()
    error = fx.verify_error()
    assert error.row == 4  # t3's entry comes before t4's
    assert "status = 'failed' but the journal implies 'pending'" in str(error)


def test_deleted_transfers_row(fx: Fixture) -> None:
    conn = fx.raw()
    conn.execute("DELETE FROM transfers WHERE id = ?", (fx.t1.id,))
    conn.close()
    error = fx.verify_error()
    assert error.row == 3
    assert str(error) == f"transfer {fx.t1.id.hex()} (out) is missing from the transfers table"


def test_edited_amount_in_the_journal(fx: Fixture) -> None:
    forged = SignedTransfer(
        Transfer(
            id=fx.t2.id,
            sender=fx.bob.address,
            recipient=fx.me.address,
            amount=99999,
            currency="EUR",
            memo="",
            created_at=T0,
        ),
        fx.t2.signature,
    )
    conn = fx.raw()
    conn.execute("UPDATE journal SET signed_transfer = ? WHERE seq = 2", (forged.encode(),))
    conn.close()
    error = fx.verify_error()
    assert error.row == 2
    assert str(error) == "journal entry 2 was altered: its hash does not match its content"

    # Even with the chain recomputed, the sender's signature gives it away.
    conn = fx.raw()
    rechain(conn)
    conn.close()
    error = fx.verify_error()
    assert error.row == 2
    assert str(error).startswith(
        f"journal entry 2: transfer {fx.t2.id.hex()} is not signed by its sender"
    )


def test_deleted_journal_row(fx: Fixture) -> None:
    conn = fx.raw()
    conn.execute("DELETE FROM journal WHERE seq = 3")
    conn.close()
    error = fx.verify_error()
    assert error.row == 3
    assert str(error) == "journal entry 3 is missing (the next entry is 4)"


def test_deleted_last_journal_row(fx: Fixture) -> None:
    conn = fx.raw()
    conn.execute("DELETE FROM journal WHERE seq = 5")
    conn.close()
    error = fx.verify_error()
    assert error.row == 5
    assert str(error) == (
        "the journal ends at entry 4 but the ledger head says 5: entries were cut off or "
        "appended outside the ledger"
    )


def test_deleted_journal_row_with_a_recomputed_chain(fx: Fixture) -> None:
    conn = fx.raw()
    conn.execute("DELETE FROM journal WHERE seq = 3")
    conn.execute("UPDATE journal SET seq = seq - 1 WHERE seq > 3")
    rechain(conn)
    conn.close()
    error = fx.verify_error()  # the chain is whole again, but t1's state betrays it
    assert error.row == 1
    assert "status = 'completed' but the journal implies 'pending'" in str(error)


def test_reordered_journal_rows(fx: Fixture) -> None:
    conn = fx.raw()
    conn.execute("UPDATE journal SET seq = 100 WHERE seq = 2")
    conn.execute("UPDATE journal SET seq = 2 WHERE seq = 3")
    conn.execute("UPDATE journal SET seq = 3 WHERE seq = 100")
    conn.close()
    error = fx.verify_error()
    assert error.row == 2
    assert str(error) == (
        "journal entry 2 does not link to entry 1 (entries were removed, reordered or edited)"
    )


def test_reordered_rows_with_a_recomputed_chain(fx: Fixture) -> None:
    # Move t1's receipt (3) before its pending entry (1): an illegal transition.
    conn = fx.raw()
    conn.execute("UPDATE journal SET seq = 100 WHERE seq = 1")
    conn.execute("UPDATE journal SET seq = 1 WHERE seq = 3")
    conn.execute("UPDATE journal SET seq = 3 WHERE seq = 100")
    rechain(conn)
    conn.close()
    error = fx.verify_error()
    assert error.row == 1
    assert str(error) == f"journal entry 1: transfer {fx.t1.id.hex()} (out) was never recorded"


def test_forged_transfer_signature(fx: Fixture) -> None:
    mallory = new_identity()
    forged = SignedTransfer(fx.t3.transfer, mallory.sign(fx.t3.transfer.signing_message()))
    conn = fx.raw()
    conn.execute("UPDATE journal SET signed_transfer = ? WHERE seq = 4", (forged.encode(),))
    conn.execute("UPDATE transfers SET signed_transfer = ? WHERE id = ?",
                 (forged.encode(), fx.t3.id))  # fmt: skip
    rechain(conn)
    conn.close()
    error = fx.verify_error()
    assert error.row == 4
    assert "is not signed by its sender" in str(error)


def test_forged_receipt_signature(fx: Fixture) -> None:
    mallory = new_identity()
    good = accept(fx.bob, fx.t1, T0 + 3)
    forged = type(good)(good.receipt, mallory.sign(good.receipt.signing_message()))
    conn = fx.raw()
    conn.execute("UPDATE journal SET signed_receipt = ? WHERE seq = 3", (forged.encode(),))
    rechain(conn)
    conn.close()
    error = fx.verify_error()
    assert error.row == 3
    assert "receipt for transfer" in str(error)
    assert "is not signed by its receiver" in str(error)


def test_receipt_moved_to_another_transfer(fx: Fixture) -> None:
    # A genuine receipt (for t1), stored as the answer to t3: bound to the wrong transfer.
    conn = fx.raw()
    receipt = conn.execute("SELECT signed_receipt FROM journal WHERE seq = 3").fetchone()[0]
    conn.execute(
        "INSERT INTO journal (seq, kind, transfer_id, at, signed_transfer, signed_receipt, "
        "prev_hash, hash) VALUES (6, 'out-receipt', ?, ?, NULL, ?, x'', x'')",
        (fx.t3.id, T0 + 6, receipt),
    )
    rechain(conn)
    conn.close()
    error = fx.verify_error()
    assert error.row == 6
    assert f"receipt answers transfer {fx.t1.id.hex()}, not {fx.t3.id.hex()}" in str(error)


def test_garbage_in_a_journal_column(fx: Fixture) -> None:
    conn = fx.raw()
    conn.execute("UPDATE journal SET kind = 'out-gift' WHERE seq = 2")
    conn.close()
    error = fx.verify_error()
    assert error.row == 2
    assert "journal entry 2 is malformed: unknown journal entry kind 'out-gift'" in str(error)


# --- crashes -------------------------------------------------------------------


def test_exception_inside_a_write_leaves_nothing(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    t5 = make_transfer(fx.bob, fx.me, 777)
    receipt = accept(fx.me, t5, T0 + 6)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    with Ledger.open(fx.path) as ledger:
        before = (ledger.head, ledger.transfers(), ledger.balances())
        # The journal entry and head are written, then the state row fails.
        monkeypatch.setattr(Ledger, "_write_rows", staticmethod(boom))
        with pytest.raises(RuntimeError, match="disk on fire"):
            ledger.record_incoming(t5, receipt, T0 + 6)
        monkeypatch.undo()
        assert not ledger._conn.in_transaction
        assert (ledger.head, ledger.transfers(), ledger.balances()) == before
        assert ledger.incoming(t5.id) is None
        assert ledger.verify() == 5
        assert ledger.record_incoming(t5, receipt, T0 + 7) == receipt  # the retry applies once
        assert ledger.verify() == 6


def test_sqlite_error_inside_a_write_is_a_storage_error(ledger: Ledger) -> None:
    with pytest.raises(StorageError, match="writing the ledger"), ledger._transaction() as conn:
        conn.execute("INSERT INTO journal (seq) VALUES (1)")
    assert not ledger._conn.in_transaction
    assert ledger.verify() == 5


_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from p2ptransfer.protocol.identity import Identity
    from p2ptransfer.protocol.receipt import accept
    from p2ptransfer.protocol.transfer import Transfer, TransferId, sign_transfer
    from p2ptransfer.storage.ledger import Ledger
    from p2ptransfer.storage.schema import EntryKind

    path, me_seed, bob_seed, count, mode = sys.argv[1:6]
    me, bob = Identity(bytes.fromhex(me_seed)), Identity(bytes.fromhex(bob_seed))

    def incoming(i):
        t = sign_transfer(bob, Transfer(TransferId(os.urandom(16)), bob.address, me.address,
                                        100 + i, "EUR", "", 1767225600000))
        return t, accept(me, t, 1767225600000 + i)

    ledger = Ledger.open(path)
    for i in range(int(count)):
        t, r = incoming(i)
        ledger.record_incoming(t, r, 1767225600000 + i)
        print("committed", i + 1, flush=True)
    t, r = incoming(10_000)
    with ledger._transaction() as conn:
        ledger._append(conn, EntryKind.IN_RECORDED, t.id, 1, None, signed=t, receipt=r)
        print("holding", flush=True)
        if mode == "self":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    """
)


def _run_child(fx: Fixture, count: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(fx.path),
            fx.me.seed.hex(),
            fx.bob.seed.hex(),
            str(count),
            mode,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
@pytest.mark.parametrize("mode", ["self", "parent"], ids=["killed-itself", "killed-by-parent"])
def test_sigkill_while_holding_a_write_transaction(fx: Fixture, mode: str) -> None:
    child = _run_child(fx, 3, mode)
    assert child.stdout is not None
    lines = []
    try:
        for line in child.stdout:  # bounded: the child prints 4 lines, then dies or sleeps
            lines.append(line.strip())
            if line.startswith("holding"):
                break
        if mode == "parent":
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        child.stdout.close()
    assert lines == ["committed 1", "committed 2", "committed 3", "holding"]
    assert child.returncode == -signal.SIGKILL
    with Ledger.open(fx.path) as ledger:
        assert ledger.verify() == 8  # 5 + the 3 acknowledged commits, not the held one
        assert ledger.head[0] == 8
        incoming = [r for r in ledger.transfers() if r.direction == "in"]
        assert sorted(r.amount_minor for r in incoming)[:3] == [100, 101, 102]
        # The lock died with the process: writing works at once.
        t = make_transfer(fx.me, fx.bob, 5)
        ledger.record_outgoing(t, T0 + 100)
        assert ledger.verify() == 9


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_sigkill_at_an_arbitrary_point_of_a_stream_of_commits(fx: Fixture) -> None:
    child = _run_child(fx, 100_000, "parent")
    assert child.stdout is not None
    acknowledged = 0
    try:
        for line in child.stdout:  # bounded: killed after 25 acknowledged commits
            acknowledged = int(line.split()[1])
            if acknowledged >= 25:
                child.send_signal(signal.SIGKILL)  # somewhere inside commit 26, 27 or later
                break
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        child.stdout.close()
    with Ledger.open(fx.path) as ledger:
        checked = ledger.verify()
        assert checked >= 5 + acknowledged  # every acknowledged commit survived
        incoming = [r.amount_minor for r in ledger.transfers() if r.direction == "in"]
        assert sorted(incoming)[: checked - 5] == list(range(100, 100 + checked - 5))
