"""Peers for tests: one identity and ledger file per side, and a background listener."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from p2ptransfer.net.peer import AcceptancePolicy, FaultHooks, Peer
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.storage.ledger import Ledger


class Side:
    """One peer's identity and ledger file, reopened as a 'new process' when needed."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.identity = Identity(secrets.token_bytes(32))
        self.path = root / f"{name}.sqlite3"
        self.ledger = Ledger.open(self.path)

    def reopen(self) -> None:
        self.ledger.close()
        self.ledger = Ledger.open(self.path)

    @property
    def address(self) -> str:
        return self.identity.address


@pytest.fixture
def alice(tmp_path: Path) -> Side:
    """Alice, with Bob as a contact once ``bob`` is asked for too (conftests re-export this)."""
    return Side(tmp_path, "alice")


@pytest.fixture
def bob(tmp_path: Path, alice: Side) -> Side:
    """Bob; Alice and Bob know each other as contacts."""
    side = Side(tmp_path, "bob")
    side.ledger.add_contact("alice", alice.address, 1)
    alice.ledger.add_contact("bob", side.address, 1)
    return side


@contextlib.asynccontextmanager
async def listening(
    side: Side,
    url: str,
    *,
    policy: AcceptancePolicy | None = None,
    hooks: FaultHooks | None = None,
    max_records: int | None = None,
    **options: Any,
) -> AsyncIterator[Peer]:
    """``side`` serving incoming sessions in the background until the block ends."""
    peer = Peer(
        side.identity,
        side.ledger,
        url,
        policy=policy,
        hooks=hooks,
        max_records=max_records,
        **options,
    )
    await peer.connect()
    stop = asyncio.Event()
    task = asyncio.create_task(peer.listen(stop))
    try:
        yield peer
    finally:
        stop.set()
        await peer.close()  # first: listen() then has no half-open session to drain
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def relay_with_data(data: Path) -> AsyncIterator[RelayServer]:
    """A relay on 127.0.0.1 that keeps handles and mailboxes in ``data`` (a restart keeps them)."""
    server = RelayServer(RelayConfig(host="127.0.0.1", port=0, data_dir=data))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def mail_peer(side: Side, url: str, **options: Any) -> Peer:
    """``side``'s peer with offline delivery on (its prekeys beside its ledger)."""
    prekeys = side.path.with_name(side.name + ".prekeys")
    return Peer(side.identity, side.ledger, url, prekeys_path=prekeys, **options)
