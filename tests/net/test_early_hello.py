"""A session that starts before the receiver serves is kept, not dropped.

``receive`` and ``listen`` connect first and start serving a moment later
(prekeys, mail). A sender that was waiting for the receiver to come online
sends its first frame in that moment; it used to be dropped, and the sender
then waited out its handshake timeout (15 s) or queued the transfer.
"""

from __future__ import annotations

import asyncio

from p2ptransfer.net.peer import Peer
from p2ptransfer.storage.ledger import TransferStatus
from tests.peers import Side


async def test_a_hello_before_serving_starts_is_answered_once_serving_starts(
    relay_url: str, alice: Side, bob: Side
) -> None:
    async with (
        Peer(bob.identity, bob.ledger, relay_url) as receiver,
        Peer(alice.identity, alice.ledger, relay_url) as sender,
    ):
        signed = sender.prepare(bob.address, 500, "EUR", "early")
        # Bob is online but not serving: the sender's first frame arrives now.
        sending = asyncio.create_task(sender.deliver([signed], timeout=4))
        await asyncio.sleep(0.3)
        assert not sending.done()
        row = await receiver.receive(timeout=4)  # well inside the 15 s handshake timeout
        (outcome,) = await sending
    assert outcome.accepted and row.id == signed.id
    (mine,) = alice.ledger.transfers()
    assert mine.status is TransferStatus.COMPLETED
