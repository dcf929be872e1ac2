"""Two senders at once: the receiver's commits run in its committer thread while it serves both."""

from __future__ import annotations

import asyncio
from pathlib import Path

from p2ptransfer.net.peer import Peer
from tests.peers import Side, listening


async def test_two_long_sends_at_once_each_land_exactly_once(
    tmp_path: Path, relay_url: str, alice: Side, bob: Side
) -> None:
    carol = Side(tmp_path, "carol")
    carol.ledger.add_contact("bob", bob.address, 1)
    bob.ledger.add_contact("carol", carol.address, 1)
    count = 150

    async def send(side: Side) -> None:
        async with Peer(side.identity, side.ledger, relay_url, window=32) as peer:
            items = [(n + 1, "EUR", f"{side.name} {n}") for n in range(count)]
            outcomes = await peer.send_many(bob.address, items, timeout=60)
        assert all(o.accepted for o in outcomes)

    async with listening(bob, relay_url) as receiver:
        await asyncio.gather(send(alice), send(carol))
    incoming = {r.id: r for r in bob.ledger.transfers() if r.direction == "in"}
    assert len(incoming) == 2 * count
    for sender in (alice, carol):
        out = [r for r in sender.ledger.transfers() if r.direction == "out"]
        assert len(out) == count
        for row in out:  # the same signed transfer and the same signed receipt on both sides
            assert incoming[row.id].signed_transfer == row.signed_transfer
            assert incoming[row.id].signed_receipt == row.signed_receipt
    assert bob.ledger.balances() == {
        (alice.address, "EUR"): count * (count + 1) // 2,
        (carol.address, "EUR"): count * (count + 1) // 2,
    }
    assert receiver.stats.commits < 2 * count  # group commit across both sessions
    for side in (alice, bob, carol):
        side.ledger.verify()
