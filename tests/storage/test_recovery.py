"""What reconciliation reads from a ledger and restores into it."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2ptransfer.errors import InputError, LedgerIntegrityError
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, accept, reject
from p2ptransfer.protocol.reconcile import Item
from p2ptransfer.storage.ledger import Ledger, TransferStatus
from tests.storage.builders import T0, make_transfer, new_identity, restore, snapshot


def test_settled_with_lists_receipted_transfers_in_both_directions(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    carol = new_identity()
    with Ledger.open(tmp_path / "l.sqlite3", owner=me) as ledger:
        out = make_transfer(me, bob, 100)
        ledger.record_outgoing(out, T0)
        pending = make_transfer(me, bob, 200)
        ledger.record_outgoing(pending, T0)
        ledger.complete_outgoing(accept(bob, out, T0), T0)
        incoming = make_transfer(bob, me, 300)
        refused = reject(me, incoming, RejectReason.OVER_LIMIT, T0)
        ledger.record_incoming(incoming, refused, T0)
        other = make_transfer(carol, me, 400)
        ledger.record_incoming(other, accept(me, other, T0), T0)
        items = ledger.settled_with(bob.address)
        assert {i.transfer_id: i.accepted for i in items} == {out.id: True, incoming.id: False}
        assert Item.of(refused) in items
        proofs = ledger.proofs(bob.address, [out.id, incoming.id, pending.id, other.id])
        assert set(proofs) == {out.id, incoming.id}
        assert proofs[incoming.id] == (incoming, refused)


def test_recover_restores_what_a_rollback_lost(tmp_path: Path, me: Identity, bob: Identity) -> None:
    path = tmp_path / "home" / "ledger.sqlite3"
    backup = tmp_path / "backup.sqlite3"
    out = make_transfer(me, bob, 100)
    still_pending = make_transfer(me, bob, 150)
    incoming = make_transfer(bob, me, 5000)
    with Ledger.open(path, owner=me) as ledger:
        ledger.record_outgoing(still_pending, T0)
        snapshot(path, backup)
        ledger.record_outgoing(out, T0 + 1)
        ledger.complete_outgoing(accept(bob, out, T0 + 2), T0 + 2)
        ledger.record_incoming(incoming, accept(me, incoming, T0 + 3), T0 + 3)
        ledger.complete_outgoing(accept(bob, still_pending, T0 + 4), T0 + 4)
        lost = ledger.proofs(bob.address, [out.id, incoming.id, still_pending.id])
    restore(path, backup)
    with Ledger.open(path, owner=me) as ledger:
        assert {r.id: r.status for r in ledger.transfers()} == {
            still_pending.id: TransferStatus.PENDING
        }
        rows = ledger.recover(list(lost.values()), T0 + 10)
        assert {(r.id, r.direction, r.status) for r in rows} == {
            (out.id, "out", TransferStatus.COMPLETED),
            (incoming.id, "in", TransferStatus.COMPLETED),
            (still_pending.id, "out", TransferStatus.COMPLETED),
        }
        assert ledger.balances() == {(bob.address, "EUR"): 5000 - 100 - 150}
        # Recovering again changes nothing: those ids are settled now.
        assert ledger.recover(list(lost.values()), T0 + 11) == []
        with pytest.raises(
            LedgerIntegrityError, match="journal entry 6 is not the one the signed checkpoint names"
        ):
            ledger.verify(me)  # the old checkpoint still names the lost history...
        ledger.reset_checkpoint()  # ...until the owner accepts the recovered one
        assert ledger.verify(me) == 6


def test_recover_refuses_what_is_not_the_owners(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    carol = new_identity()
    between_others = make_transfer(bob, carol, 100)
    with Ledger.open(tmp_path / "l.sqlite3", owner=me) as ledger:
        with pytest.raises(LedgerIntegrityError, match="not addressed to this ledger's owner"):
            ledger.recover([(between_others, accept(carol, between_others, T0))], T0)
        assert ledger.transfers() == []
    with (
        Ledger.open(tmp_path / "ownerless.sqlite3") as ledger,
        pytest.raises(InputError, match="knows its owner"),
    ):
        ledger.recover([], T0)
