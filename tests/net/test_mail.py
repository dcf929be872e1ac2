"""Offline delivery between two real peers through a real relay with a data directory.

Alice sends while Bob is away: the transfer is sealed into Bob's mailbox and
stays ``queued``; the relay restarts; Bob collects and records it once,
answering with a receipt left in Alice's mailbox; Alice collects that and the
transfer completes. Both ledgers agree and verify.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2ptransfer.errors import MailUnavailable
from p2ptransfer.net.peer import SendOutcome
from p2ptransfer.protocol.acceptance import AcceptancePolicy
from p2ptransfer.storage.ledger import TransferRow, TransferStatus
from tests.peers import Side, listening
from tests.peers import mail_peer as peer
from tests.peers import relay_with_data as relay_with

pytestmark = pytest.mark.timeout(60)


async def test_a_transfer_sent_while_away_completes_after_both_were_offline(
    tmp_path: Path, alice: Side, bob: Side
) -> None:
    data = tmp_path / "relay-data"
    async with relay_with(data) as relay:
        async with peer(bob, relay.url):
            pass  # bob was online once: his prekey is at the relay
        async with peer(alice, relay.url) as sender:
            (queued,) = await sender.deliver_or_queue(
                [sender.prepare(bob.address, 1250, "EUR", "while you were away")],
                wait=0.5,
                timeout=5,
            )
    assert isinstance(queued, TransferRow) and queued.status is TransferStatus.QUEUED
    async with relay_with(data) as relay:  # restarted: the mail was kept on disk
        async with peer(bob, relay.url) as receiver:
            collected = await receiver.sync(timeout=10)
            assert [row.id for row in collected.transfers] == [queued.id]
            again = await receiver.sync(timeout=10)  # acknowledged: nothing is applied twice
            assert again.transfers == []
        async with peer(alice, relay.url) as sender:
            result = await sender.sync(timeout=10)
    assert [row.id for row in result.receipts] == [queued.id]
    (mine,) = alice.ledger.transfers()
    (theirs,) = bob.ledger.transfers()
    assert mine.status is theirs.status is TransferStatus.COMPLETED
    assert mine.signed_receipt == theirs.signed_receipt
    assert bob.ledger.balances() == {(alice.address, "EUR"): 1250}
    alice.ledger.verify(alice.identity)
    bob.ledger.verify(bob.identity)


async def test_online_recipient_is_reached_live(tmp_path: Path, alice: Side, bob: Side) -> None:
    async with (
        relay_with(tmp_path / "data") as relay,
        listening(bob, relay.url),
        peer(alice, relay.url) as sender,
    ):
        (outcome,) = await sender.deliver_or_queue(
            [sender.prepare(bob.address, 100, "EUR")], wait=5, timeout=10
        )
    assert isinstance(outcome, SendOutcome) and outcome.accepted


async def test_no_prekey_means_no_queue_and_the_transfer_stays_pending(
    tmp_path: Path, alice: Side, bob: Side
) -> None:
    """Bob never connected: nothing can be sealed to him; wait, then pending, as before."""
    async with relay_with(tmp_path / "data") as relay, peer(alice, relay.url) as sender:
        signed = sender.prepare(bob.address, 100, "EUR")
        with pytest.raises(MailUnavailable) as info:
            await sender.deliver_or_queue([signed], wait=0.3, timeout=1.0)
    assert str(info.value).startswith(
        "bob did not come online within 1 s and cannot be mailed: they have no prekey at the relay"
    )
    assert info.value.pending == (signed.id,)
    assert alice.ledger.get_transfer(signed.id, "out").status is TransferStatus.PENDING


async def test_a_listener_collects_mail_and_the_receipt_comes_back_by_mail(
    tmp_path: Path, alice: Side, bob: Side
) -> None:
    async with relay_with(tmp_path / "data") as relay:
        async with peer(bob, relay.url):
            pass
        async with peer(alice, relay.url) as sender:
            (queued,) = await sender.deliver_or_queue(
                [sender.prepare(bob.address, 700, "EUR")], wait=0.3, timeout=5
            )
        # Bob listens: the waiting mail is collected without any command.
        receiver = peer(bob, relay.url, policy=AcceptancePolicy())
        await receiver.connect()
        try:
            row = await receiver.receive(timeout=10)
        finally:
            await receiver.close()
        assert row.id == queued.id
        async with peer(alice, relay.url) as sender:
            await sender.sync(timeout=10)
    assert alice.ledger.get_transfer(queued.id, "out").status is TransferStatus.COMPLETED


async def test_a_restored_home_republishes_a_prekey_it_can_open(
    tmp_path: Path, alice: Side, bob: Side
) -> None:
    """The relay serves a newer prekey than the restored home holds: a fresh one replaces it."""
    from p2ptransfer.clock import now_ms
    from p2ptransfer.storage.prekeys import PrekeyStore

    prekeys = bob.path.with_name(bob.name + ".prekeys")
    async with relay_with(tmp_path / "data") as relay:
        async with peer(bob, relay.url):
            pass
        old_copy = prekeys.read_bytes()
        PrekeyStore(prekeys, bob.identity).rotate(now_ms() + 60_000)  # newer, then lost
        async with peer(bob, relay.url):
            pass
        prekeys.write_bytes(old_copy)  # the home comes back from the old copy
        async with peer(bob, relay.url):
            pass  # the relay serves a prekey this home cannot open: republished
        async with peer(alice, relay.url) as sender:
            (queued,) = await sender.deliver_or_queue(
                [sender.prepare(bob.address, 500, "EUR")], wait=0.3, timeout=5
            )
        async with peer(bob, relay.url) as receiver:
            collected = await receiver.sync(timeout=10)
    assert [row.id for row in collected.transfers] == [queued.id]
