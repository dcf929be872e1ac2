"""A session that starts before the receiver serves is kept, not dropped.

``receive`` and ``listen`` connect first and start serving a moment later
(prekeys, mail). A sender that was waiting for the receiver to come online
sends its first frame in that moment; it used to be dropped, and the sender
then waited out its handshake timeout (15 s) or queued the transfer.
"""

from __future__ import annotations

import asyncio
import secrets

from p2ptransfer.net.peer import Peer
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.session import Session
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


def hello_from(identity: Identity, to: Identity) -> bytes:
    """The first frame of a session from ``identity`` to ``to``."""
    session = Session.initiate(
        identity,
        to.public,
        tag=secrets.token_bytes(16),
        ephemeral_private=secrets.token_bytes(32),
        nonce=secrets.token_bytes(32),
    )
    return session.data_to_send()[0]


async def test_throwaway_keys_cannot_push_a_contact_out_of_the_early_frames(
    relay_url: str, alice: Side, bob: Side
) -> None:
    async with Peer(bob.identity, bob.ledger, relay_url) as receiver:
        strangers = [Identity(secrets.token_bytes(32)) for _ in range(40)]
        for stranger in strangers:  # far more than there are places, two frames each
            for _ in range(2):
                receiver._route(stranger.address, hello_from(stranger, bob.identity))
        receiver._route(alice.address, hello_from(alice.identity, bob.identity))
        kept = [remote for remote, _, _, _ in receiver._early_hellos]
    assert alice.address in kept  # a contact takes a stranger's place
    assert len(kept) <= 16
    assert max(kept.count(remote) for remote in set(kept)) <= 2
