"""A local attacker with file access against the ledger: grafted entries, swapped keys, rollback.

Each attack here passed ``ledger verify`` before the ledger knew its owner
and signed its head: a validly signed Alice→Carol transfer written into
Bob's ledger, a transfer between two throwaway keys, a swapped
``identity.key``, an older copy of the ledger restored, its tail cut off,
its WAL deleted after a crash.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from p2ptransfer.cli import cli
from p2ptransfer.errors import LedgerIntegrityError, LedgerOwnerMismatch
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import accept
from p2ptransfer.storage.home import Home
from p2ptransfer.storage.ledger import Ledger
from tests.storage.builders import T0, make_transfer, new_identity, restore, snapshot

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("P2PTRANSFER_PASSPHRASE", "P2PTRANSFER_HOME", "P2PTRANSFER_RELAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("P2PTRANSFER_KDF_LOG_N", "10")
    monkeypatch.setenv("NO_COLOR", "1")


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(home), *args], env={"P2PTRANSFER_PASSPHRASE": PASSPHRASE}
    )


def init(home: Path, name: str) -> Identity:
    result = run(home, "init", "--name", name)
    assert result.exit_code == 0, result.output
    return Home(home).load_identity(PASSPHRASE)


def receive_from(ledger: Ledger, me: Identity, sender: Identity, amount: int, at: int) -> None:
    signed = make_transfer(sender, me, amount=amount, created_at=at)
    ledger.record_incoming(signed, accept(me, signed, at), at)


# --- grafted entries and swapped keys -----------------------------------------------------


def test_a_transfer_between_others_is_refused_by_an_owned_ledger(tmp_path: Path) -> None:
    alice, bob, carol = new_identity(), new_identity(), new_identity()
    signed = make_transfer(alice, carol, amount=5000)
    receipt = accept(carol, signed, T0)
    with Ledger.open(tmp_path / "bob.sqlite3", owner=bob) as ledger:
        with pytest.raises(LedgerIntegrityError, match="not addressed to this ledger's owner"):
            ledger.record_incoming(signed, receipt, T0)
        with pytest.raises(LedgerIntegrityError, match="not sent by this ledger's owner"):
            ledger.record_outgoing(signed, T0)
        assert ledger.transfers() == []
        assert ledger.verify(bob) == 1  # only the owner entry


def test_a_grafted_entry_in_a_ledger_without_an_owner_fails_verify(tmp_path: Path) -> None:
    """An owner-less file (a library user, an older version) is caught once it is checked."""
    alice, bob, carol = new_identity(), new_identity(), new_identity()
    path = tmp_path / "bob.sqlite3"
    with Ledger.open(path) as ledger:  # no owner: the write path cannot tell
        signed = make_transfer(alice, carol, amount=5000)
        ledger.record_incoming(signed, accept(carol, signed, T0), T0)
        assert ledger.verify() == 1  # nothing says whose it is
        with pytest.raises(LedgerIntegrityError, match="does not name its owner"):
            ledger.verify(bob)
    # Bob's key learns that it owns the file: from then on the graft is named.
    with Ledger.open(path, owner=bob) as ledger, pytest.raises(LedgerIntegrityError) as info:
        ledger.verify(bob)
    assert str(info.value) == (
        f"journal entry 1: transfer {signed.id.hex()} was not addressed to this ledger's "
        "owner (an entry from another ledger?)"
    )
    assert info.value.row == 1


def test_a_swapped_key_file_is_refused_by_every_command(tmp_path: Path) -> None:
    bob_home, mallory_home = tmp_path / "bob", tmp_path / "mallory"
    init(bob_home, "bob")
    init(mallory_home, "mallory")
    shutil.copy(Home(mallory_home).key_path, Home(bob_home).key_path)
    for args in (("ledger",), ("ledger", "verify"), ("contacts", "list")):
        result = run(bob_home, *args)
        assert result.exit_code == 9, (args, result.output)
        assert "the key file or the ledger was swapped" in result.output
        assert "Traceback" not in result.output


def test_a_ledger_moved_under_another_identity_is_refused(tmp_path: Path) -> None:
    bob, mallory = new_identity(), new_identity()
    path = tmp_path / "ledger.sqlite3"
    Ledger.open(path, owner=bob).close()
    with pytest.raises(LedgerOwnerMismatch, match=bob.address):
        Ledger.open(path, owner=mallory)
    with pytest.raises(LedgerOwnerMismatch):
        Ledger.open(path, owner=mallory.public)


def assert_verify_names(path: Path, owner: Identity, problem: str) -> None:
    with (
        Ledger.open(path, owner=owner) as ledger,
        pytest.raises(LedgerIntegrityError, match=problem),
    ):
        ledger.verify(owner)


# --- rollback, truncation, a lost WAL -------------------------------------------------------


def _ledger_files(path: Path) -> list[Path]:
    return [p for p in (path, path.with_name(path.name + "-wal")) if p.exists()]


def test_restoring_an_older_copy_is_named_by_verify(tmp_path: Path) -> None:
    me, alice = new_identity(), new_identity()
    path = tmp_path / "home" / "ledger.sqlite3"
    backup = tmp_path / "backup"
    backup.mkdir()
    with Ledger.open(path, owner=me) as ledger:
        receive_from(ledger, me, alice, 100, T0)
        snapshot(path, backup / "ledger.sqlite3")
        receive_from(ledger, me, alice, 5000, T0 + 1)
        assert ledger.verify(me) == 3
    restore(path, backup / "ledger.sqlite3")
    with Ledger.open(path, owner=me) as ledger, pytest.raises(LedgerIntegrityError) as info:
        ledger.verify(me)
    assert str(info.value).startswith(
        "the ledger was rolled back or its newest entries were cut off: the signed checkpoint "
        "names entry 3, the journal ends at 2;"
    )


def test_a_cut_tail_with_a_rewritten_head_is_named(tmp_path: Path) -> None:
    me, alice = new_identity(), new_identity()
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path, owner=me) as ledger:
        for n in range(3):
            receive_from(ledger, me, alice, 100 + n, T0 + n)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER journal_no_delete")
        conn.execute("DELETE FROM transfers WHERE recorded_seq = 4")
        conn.execute("DELETE FROM journal WHERE seq = 4")
        conn.execute(
            "UPDATE ledger_head SET seq = 3, hash = (SELECT hash FROM journal WHERE seq = 3)"
        )
    conn.close()
    assert_verify_names(path, me, "names entry 4, the journal ends at 3")


def test_a_rewritten_history_of_the_same_length_is_named(tmp_path: Path) -> None:
    me, alice = new_identity(), new_identity()
    path = tmp_path / "ledger.sqlite3"
    copy = tmp_path / "copy.sqlite3"
    with Ledger.open(path, owner=me) as ledger:
        receive_from(ledger, me, alice, 100, T0)
    shutil.copy(path, copy)  # the checkpoint is not copied with it
    with Ledger.open(path, owner=me) as ledger:
        receive_from(ledger, me, alice, 200, T0 + 1)
    with Ledger.open(copy, owner=me) as other:
        receive_from(other, me, alice, 999, T0 + 2)  # another entry 3
    shutil.copy(copy, path)
    assert_verify_names(path, me, "journal entry 3 is not the one the signed")


def test_a_deleted_wal_after_a_crash_is_named(tmp_path: Path) -> None:
    """Commits still in the WAL are lost with it; the checkpoint remembers them."""
    me, alice = new_identity(), new_identity()
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger.open(path, owner=me)
    receive_from(ledger, me, alice, 100, T0)
    wal = path.with_name(path.name + "-wal")
    saved = {p: p.read_bytes() for p in _ledger_files(path)}
    ledger.close()  # closing checkpoints the WAL into the file: put the crash state back
    for p, data in saved.items():
        p.write_bytes(data)
    wal.unlink()
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    assert_verify_names(path, me, "rolled back or its newest entries")


def test_after_a_rollback_the_old_checkpoint_is_kept_until_reset(tmp_path: Path) -> None:
    """New commits on a rolled-back ledger must not paper over the evidence."""
    me, alice = new_identity(), new_identity()
    path = tmp_path / "home" / "ledger.sqlite3"
    backup = tmp_path / "old.sqlite3"
    with Ledger.open(path, owner=me) as ledger:
        receive_from(ledger, me, alice, 100, T0)
        snapshot(path, backup)
        receive_from(ledger, me, alice, 200, T0 + 1)
    restore(path, backup)
    with Ledger.open(path, owner=me) as ledger:
        receive_from(ledger, me, alice, 300, T0 + 2)  # a new entry 3, not the signed one
        with pytest.raises(LedgerIntegrityError, match="journal entry 3 is not the one"):
            ledger.verify(me)
        ledger.reset_checkpoint()
        assert ledger.verify(me) == 3


def test_ledger_verify_reset_checkpoint_from_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "bob"
    me = init(home, "bob")
    alice = new_identity()
    path = Home(home).ledger_path
    with Ledger.open(path, owner=me) as ledger:
        receive_from(ledger, me, alice, 100, T0)
    saved = path.read_bytes()
    with Ledger.open(path, owner=me) as ledger:
        ledger.verify(me)  # closes cleanly: the WAL is folded in
    with Ledger.open(path, owner=me) as ledger:
        receive_from(ledger, me, alice, 200, T0 + 1)
    for leftover in path.parent.glob("ledger.sqlite3-*"):
        leftover.unlink()
    path.write_bytes(saved)
    failed = run(home, "ledger", "verify")
    assert failed.exit_code == 9
    assert "rolled back" in failed.output and "--reset-checkpoint" in failed.output
    reset = run(home, "ledger", "verify", "--reset-checkpoint")
    assert reset.exit_code == 0, reset.output
    assert "ledger OK: 2 journal entries" in reset.output


# --- the CLI on an edited file ---------------------------------------------------------------


def test_a_tampered_status_column_is_named_not_a_crash(tmp_path: Path) -> None:
    home = tmp_path / "bob"
    me = init(home, "bob")
    alice = new_identity()
    path = Home(home).ledger_path
    with Ledger.open(path, owner=me) as ledger:
        receive_from(ledger, me, alice, 100, T0)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")  # as someone editing the file would
        conn.execute("UPDATE transfers SET status = 'bogus'")
    conn.close()
    shown = run(home, "ledger")
    assert shown.exit_code == 9
    assert "has an unknown status 'bogus' in the transfers table" in shown.output
    assert "Traceback" not in shown.output and "internal error" not in shown.output
    verified = run(home, "ledger", "verify")
    assert verified.exit_code == 9
    assert "the SQLite file is damaged: CHECK constraint failed in transfers" in verified.output


def test_abandon_signs_the_new_head_into_the_checkpoint(tmp_path: Path) -> None:
    from p2ptransfer.storage.checkpoint import read_checkpoint

    home = tmp_path / "alice"
    me = init(home, "alice")
    signed = make_transfer(me, new_identity(), 100)
    path = Home(home).ledger_path
    with Ledger.open(path, owner=me) as ledger:
        ledger.record_outgoing(signed, T0)
    result = run(home, "abandon", signed.id.hex(), "--yes")
    assert result.exit_code == 0, result.output
    with Ledger.open(path, owner=me) as ledger:
        head = ledger.head
        assert ledger.verify(me) == 3
    checkpoint = read_checkpoint(path)
    assert checkpoint is not None and (checkpoint.seq, checkpoint.hash) == head
