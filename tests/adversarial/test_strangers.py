"""What strangers may cost a listener: never a contact's session slot, never its ledger.

Anyone can mint relay addresses. Before, eight throwaway keys opening
handshakes they never finished held all 64 session slots of a listener, so
a contact's ``send`` failed after its whole timeout; and a stranger's 5,000
transfers were journaled as rejections, growing the append-only ledger from
64 KB to 12 MB for good. Now strangers share a small group of slots (oldest
half-open first out) and their transfers are answered, quarantined (the
newest 100), never journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

import pytest
from adv_support import Side, listening

from p2ptransfer.net.peer import Peer
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import RelayClient
from p2ptransfer.protocol.identity import Identity, PublicIdentity
from p2ptransfer.protocol.receipt import RejectReason
from p2ptransfer.protocol.session import Session
from p2ptransfer.storage.quarantine import QUARANTINE_LIMIT

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def relay_url() -> AsyncIterator[str]:
    config = RelayConfig(
        host="127.0.0.1",
        port=0,
        shutdown_timeout=1.0,
        connection_rate_per_ip=10_000.0,
        connection_burst_per_ip=10_000.0,
    )
    server = RelayServer(config)
    await server.start()
    try:
        yield server.url
    finally:
        await server.close()


def on_disk(side: Side) -> int:
    """The ledger's bytes on disk, its write-ahead log included."""
    wal = side.path.with_name(side.path.name + "-wal")
    return side.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def hello(me: Identity, remote: str) -> bytes:
    """The first frame of a handshake that its sender will never finish."""
    session = Session.initiate(
        me,
        PublicIdentity.from_address(remote),
        tag=secrets.token_bytes(16),
        ephemeral_private=secrets.token_bytes(32),
        nonce=secrets.token_bytes(32),
    )
    (frame,) = session.data_to_send()
    return frame


async def open_and_abandon(
    clients: list[tuple[Identity, RelayClient]], target: str, stop: asyncio.Event, rate: float
) -> int:
    """Keep sending fresh handshake openings to ``target`` at ``rate`` frames/s in all."""
    sent = 0
    deadline = time.monotonic() + 60  # bounded even if the test forgets to stop it
    while not stop.is_set() and time.monotonic() < deadline:
        for identity, client in clients:
            await client.send(target, hello(identity, target))
            sent += 1
            await asyncio.sleep(1 / rate)
            if stop.is_set():
                break
    return sent


@pytest.mark.parametrize("keys", [8, 100])
async def test_throwaway_keys_never_crowd_out_a_contact(
    relay_url: str, alice: Side, bob: Side, keys: int
) -> None:
    clients = []
    for _ in range(keys):
        identity = Identity(secrets.token_bytes(32))
        clients.append((identity, await RelayClient.connect(relay_url, identity)))
    stop = asyncio.Event()
    try:
        async with listening(bob, relay_url):
            # Fill every slot there is, then keep the pressure on while alice sends.
            for identity, client in clients:
                for _ in range(max(1, 96 // keys)):
                    await client.send(bob.address, hello(identity, bob.address))
            flood = asyncio.create_task(open_and_abandon(clients, bob.address, stop, 250.0))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            async with Peer(alice.identity, alice.ledger, relay_url) as peer:
                outcome = await peer.send(bob.address, 1250, "EUR", timeout=20)
            elapsed = time.monotonic() - started
            stop.set()
            sent = await flood
    finally:
        stop.set()
        for _, client in clients:
            with contextlib.suppress(Exception):
                await client.close()
    assert outcome.accepted
    assert sent > 0
    print(f"{keys} throwaway keys, {sent} abandoned openings: contact's send took {elapsed:.2f} s")
    ((counterparty, currency),) = bob.ledger.balances()
    assert (counterparty, currency) == (alice.address, "EUR")


async def test_a_strangers_flood_leaves_the_ledger_as_it_was(
    relay_url: str, alice: Side, bob: Side
) -> None:
    stranger = Side(bob.path.parent, "stranger")
    count = 2 * QUARANTINE_LIMIT + 50
    async with listening(bob, relay_url):
        head_before = bob.ledger.head
        size_before = on_disk(bob)
        async with Peer(stranger.identity, stranger.ledger, relay_url) as peer:
            outcomes = await peer.send_many(
                bob.address, [(100 + n, "EUR", f"spam {n}") for n in range(count)], timeout=60
            )
        # A contact still gets through, and is journaled as usual.
        async with Peer(alice.identity, alice.ledger, relay_url) as peer:
            assert (await peer.send(bob.address, 700, "EUR", timeout=20)).accepted
    assert all(o.receipt.receipt.reason is RejectReason.UNKNOWN_SENDER for o in outcomes)
    # Every refusal is signed and final on the stranger's side...
    assert {row.status for row in stranger.ledger.transfers()} == {"rejected"}
    stranger.ledger.verify()
    # ...and nothing of it is in bob's journal: one new entry, alice's transfer.
    assert bob.ledger.head[0] == head_before[0] + 1
    assert [row.counterparty for row in bob.ledger.transfers()] == [alice.address]
    bob.ledger.verify()
    # The quarantine keeps the newest ones, bounded.
    kept = bob.ledger.quarantined()
    assert len(kept) == QUARANTINE_LIMIT
    assert kept[0].memo == f"spam {count - 1}"
    growth = on_disk(bob) - size_before
    print(f"{count} strangers' transfers: ledger grew {growth} bytes, journal by 0 entries")
    assert growth < 1_000_000


async def test_a_repeat_from_a_stranger_gets_the_same_refusal(relay_url: str, bob: Side) -> None:
    stranger = Side(bob.path.parent, "stranger")
    async with (
        listening(bob, relay_url),
        Peer(stranger.identity, stranger.ledger, relay_url) as peer,
    ):
        first = await peer.send(bob.address, 100, "EUR", timeout=10)
        # Replay the very same signed transfer: the stored refusal comes back.
        again = await peer.deliver([first.row.signed], timeout=10)
    assert again[0].receipt.encode() == first.receipt.encode()
    (kept,) = bob.ledger.quarantined()
    assert kept.times_seen == 2
