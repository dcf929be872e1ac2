"""A long send_many signs and commits in chunks: each transfer is pending before it leaves."""

from __future__ import annotations

import pytest

from p2ptransfer.errors import PeerOffline, StorageError
from p2ptransfer.net.outgoing import PREPARE_CHUNK
from p2ptransfer.net.peer import FaultHooks, Peer
from p2ptransfer.net.sessions import SessionHost
from p2ptransfer.protocol.transfer import SignedTransfer
from p2ptransfer.storage.ledger import Ledger, TransferStatus
from tests.net.test_peer import assert_agree
from tests.peers import Side, listening


class CheckCommitted(FaultHooks):
    """Sender: as each transfer is about to be sealed, read it back through another
    connection (what a crash right now would leave) and count what exists so far."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.seen = 0
        self.recorded_at_first_send: int | None = None

    async def before_transfer_sent(self, peer: SessionHost, signed: SignedTransfer) -> None:
        with Ledger.open(self.side.path) as other:  # committed, not just in our transaction
            assert other.get_transfer(signed.id, "out").status is TransferStatus.PENDING
            if self.recorded_at_first_send is None:
                self.recorded_at_first_send = len(other.transfers())
        self.seen += 1


async def test_each_transfer_is_committed_pending_before_it_leaves_and_the_first_leave_early(
    relay_url: str, alice: Side, bob: Side
) -> None:
    count = 5 * PREPARE_CHUNK + 3
    hooks = CheckCommitted(alice)
    async with (
        listening(bob, relay_url),
        Peer(alice.identity, alice.ledger, relay_url, window=16, hooks=hooks) as peer,
    ):
        outcomes = await peer.send_many(
            bob.address, [(n + 1, "EUR", f"#{n}") for n in range(count)], timeout=60
        )
    assert [o.row.memo for o in outcomes] == [f"#{n}" for n in range(count)]  # asked order
    assert [o.receipt.receipt.transfer_id for o in outcomes] == [o.row.id for o in outcomes]
    assert all(o.accepted for o in outcomes)
    assert hooks.seen >= count
    assert hooks.recorded_at_first_send == PREPARE_CHUNK  # the rest not yet signed
    assert_agree(alice, bob, count)


async def test_a_send_that_gives_up_leaves_every_transfer_pending(
    relay_url: str, alice: Side, bob: Side
) -> None:
    count = 3 * PREPARE_CHUNK
    async with Peer(alice.identity, alice.ledger, relay_url) as peer:  # bob never comes online
        with pytest.raises(PeerOffline) as raised:
            await peer.send_many(
                bob.address, [(n + 1, "EUR", "") for n in range(count)], timeout=0.5
            )
    assert len(raised.value.pending) == count
    rows = alice.ledger.transfers()
    assert len(rows) == count and {r.status for r in rows} == {TransferStatus.PENDING}
    assert {r.id for r in rows} == set(raised.value.pending)


async def test_a_chunk_that_cannot_be_committed_loses_nothing_and_says_what_is_where(
    relay_url: str, alice: Side, bob: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later chunk's COMMIT fails (the disk, a lock): what is pending is named, none lost."""
    count = 6 * PREPARE_CHUNK
    real = alice.ledger.write_off_loop
    calls = 0

    async def failing_second_chunk(work):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StorageError("database is locked")
        return await real(work)

    monkeypatch.setattr(alice.ledger, "write_off_loop", failing_second_chunk)
    async with (
        listening(bob, relay_url),
        Peer(alice.identity, alice.ledger, relay_url, window=16) as peer,
    ):
        with pytest.raises(StorageError) as raised:
            await peer.send_many(bob.address, [(n + 1, "EUR", "") for n in range(count)])
    message = str(raised.value)
    never = int(message.split(", ")[-1].split(" ")[0])
    mine = alice.ledger.transfers()
    assert all(r.status in (TransferStatus.PENDING, TransferStatus.COMPLETED) for r in mine)
    assert len(mine) + never == count  # each one asked for: in the ledger, or never signed
    assert "were never signed or sent" in message
