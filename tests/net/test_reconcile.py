"""``reconcile`` between two real peers over a real relay: what a rollback lost comes back.

Bob's ledger is put back to an older copy (as a restored backup would be):
his checkpoint names the lost history, and reconciling with Alice, who
still holds every settled transfer with both signatures, brings each one
back, checked, once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2ptransfer.errors import LedgerIntegrityError, NotFound, ProtocolError
from p2ptransfer.net.peer import Peer
from p2ptransfer.protocol.receipt import RejectReason, accept, reject
from p2ptransfer.storage.ledger import Ledger
from tests.peers import Side, listening
from tests.storage.builders import T0, make_transfer, restore, snapshot

pytestmark = pytest.mark.timeout(60)


def restore_side(side: Side, copy: Path) -> None:
    """Put ``side``'s ledger back to ``copy`` and reopen it as its owner would."""
    side.ledger.close()
    restore(side.path, copy)
    side.ledger = Ledger.open(side.path, owner=side.identity)


def history(side: Side) -> set[tuple[bytes, str, str, bytes | None]]:
    return {(r.id, r.direction, str(r.status), r.signed_receipt) for r in side.ledger.transfers()}


async def test_a_rolled_back_ledger_gets_everything_back(
    relay_url: str, alice: Side, bob: Side, tmp_path: Path
) -> None:
    backup = tmp_path / "bob-backup.sqlite3"
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        await peer.send(bob.address, 100, "EUR", timeout=10)
        snapshot(bob.path, backup)
        for amount in (2500, 700):
            await peer.send(bob.address, amount, "EUR", timeout=10)
    async with listening(alice, relay_url), Peer(bob.identity, bob.ledger, relay_url) as peer:
        await peer.send(alice.address, 300, "EUR", timeout=10)
    before = history(bob)
    assert len(before) == 4

    restore_side(bob, backup)
    assert len(history(bob)) == 1
    with pytest.raises(LedgerIntegrityError, match="rolled back"):
        bob.ledger.verify(bob.identity)

    async with listening(alice, relay_url), Peer(bob.identity, bob.ledger, relay_url) as peer:
        report = await peer.reconcile(alice.address, timeout=10)
    assert report.settled and report.disagreements == [] and report.proofs_sent == 0
    assert {row.amount_minor for row in report.recovered} == {2500, 700, 300}
    assert history(bob) == before
    assert bob.ledger.balances() == {(alice.address, "EUR"): 100 + 2500 + 700 - 300}
    bob.ledger.reset_checkpoint()
    bob.ledger.verify(bob.identity)
    alice.ledger.verify(alice.identity)

    # Both sides agree now: a second reconcile moves nothing.
    async with listening(alice, relay_url), Peer(bob.identity, bob.ledger, relay_url) as peer:
        again = await peer.reconcile(alice.address, timeout=10)
    assert (again.recovered, again.proofs_sent) == ([], 0)


async def test_the_side_that_did_not_lose_anything_hands_it_over(
    relay_url: str, alice: Side, bob: Side, tmp_path: Path
) -> None:
    """Alice reconciles; Bob (listening) is the one who lost the history, and recovers it."""
    backup = tmp_path / "bob-backup.sqlite3"
    snapshot(bob.path, backup)
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        await peer.send(bob.address, 4200, "EUR", timeout=10)
    restore_side(bob, backup)
    assert bob.ledger.transfers() == []
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        report = await peer.reconcile(bob.address, timeout=10)
    assert (report.recovered, report.proofs_sent) == ([], 1)
    (row,) = bob.ledger.transfers()
    assert (row.direction, row.amount_minor, str(row.status)) == ("in", 4200, "completed")


async def test_a_pending_transfer_completes_from_the_counterpartys_receipt(
    relay_url: str, alice: Side, bob: Side
) -> None:
    """The receipt never reached Alice (she crashed): reconcile delivers it."""
    signed = make_transfer(alice.identity, bob.identity, 900, created_at=T0)
    alice.ledger.unlock(alice.identity)
    alice.ledger.record_outgoing(signed, T0)
    bob.ledger.unlock(bob.identity)
    bob.ledger.record_incoming(signed, accept(bob.identity, signed, T0), T0)
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        report = await peer.reconcile(bob.address, timeout=10)
    ((row),) = report.recovered
    assert (row.id, str(row.status)) == (signed.id, "completed")
    assert report.pending == []
    alice.ledger.verify(alice.identity)


async def test_contradicting_receipts_are_reported_and_left_alone(
    relay_url: str, alice: Side, bob: Side
) -> None:
    signed = make_transfer(alice.identity, bob.identity, 900, created_at=T0)
    alice.ledger.unlock(alice.identity)
    bob.ledger.unlock(bob.identity)
    alice.ledger.record_outgoing(signed, T0)
    alice.ledger.complete_outgoing(accept(bob.identity, signed, T0), T0)
    bob.ledger.record_incoming(signed, reject(bob.identity, signed, RejectReason.POLICY, T0), T0)
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        report = await peer.reconcile(bob.address, timeout=10)
    assert not report.settled
    (disagreement,) = report.disagreements
    assert (disagreement.transfer_id, disagreement.mine.accepted) == (signed.id, True)
    assert not disagreement.theirs.accepted
    assert [str(r.status) for r in alice.ledger.transfers()] == ["completed"]
    assert [str(r.status) for r in bob.ledger.transfers()] == ["rejected"]


async def test_only_contacts_are_answered(
    relay_url: str, alice: Side, bob: Side, tmp_path: Path
) -> None:
    stranger = Side(tmp_path, "stranger")
    stranger.ledger.add_contact("bob", bob.address, T0)  # bob does not know the stranger
    async with (
        listening(bob, relay_url),
        Peer(stranger.identity, stranger.ledger, relay_url) as peer,
    ):
        with pytest.raises(ProtocolError):
            await peer.reconcile(bob.address, timeout=5)
        with pytest.raises(NotFound, match="not one of your contacts"):
            await peer.reconcile(alice.address, timeout=5)
