"""Offline delivery survives SIGKILL at each of its three crash windows.

Each peer runs as a real process (``mail_process.py``) against a real relay
process with ``--data``; a FaultHooks point kills it with SIGKILL, the test
restarts it, and every scenario ends with the transfer settled exactly once:
the same status and the same signed receipt bytes on both sides, the right
balances, and both hash chains verifying. Between the steps the test looks
into the mailboxes the way their owners would (a plain relay connection that
never acknowledges), to see what the relay holds at each point.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from p2ptransfer.net.relay_client import Mail, RelayClient
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.storage.ledger import Ledger, TransferStatus

from .conftest import RelayProcess, spawn_relay

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).resolve().parent
AMOUNT = 4_200


@dataclass
class Party:
    """One peer's seed and files; each :meth:`run` is a new process of that peer."""

    name: str
    seed: bytes
    root: Path

    @property
    def identity(self) -> Identity:
        return Identity(self.seed)

    @property
    def address(self) -> str:
        return self.identity.address

    @property
    def ledger_path(self) -> Path:
        return self.root / f"{self.name}.sqlite3"

    async def run(self, action: str, url: str, *options: str) -> tuple[int, dict[str, Any]]:
        """Run ``mail_process.py ACTION`` as this peer; its exit code and JSON output."""
        args = [
            sys.executable,
            str(HERE / "mail_process.py"),
            action,
            url,
            self.seed.hex(),
            str(self.ledger_path),
            str(self.root / f"{self.name}.prekeys"),
            *options,
        ]
        done = await asyncio.to_thread(
            subprocess.run, args, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            return done.returncode, {"stderr": done.stderr}
        assert done.stdout.count("\n") == 1, done.stdout + done.stderr
        return 0, json.loads(done.stdout)

    async def ok(self, action: str, url: str, *options: str) -> dict[str, Any]:
        code, out = await self.run(action, url, *options)
        assert code == 0, out
        return out

    async def killed(self, action: str, url: str, point: str, *options: str) -> None:
        code, out = await self.run(action, url, "--crash-at", point, *options)
        assert code == -signal.SIGKILL, (code, out)

    def ledger(self) -> Ledger:
        return Ledger.open(self.ledger_path)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay process whose mailboxes live in a data directory."""
    process = spawn_relay("--data", str(tmp_path / "relay-data"))
    try:
        yield process
    finally:
        process.terminate()


@pytest.fixture
def parties(tmp_path: Path) -> tuple[Party, Party]:
    """Alice and Bob, contacts of each other, with empty ledgers."""
    alice = Party("alice", secrets.token_bytes(32), tmp_path)
    bob = Party("bob", secrets.token_bytes(32), tmp_path)
    with alice.ledger() as ledger:
        ledger.add_contact("bob", bob.address, 1)
    with bob.ledger() as ledger:
        ledger.add_contact("alice", alice.address, 1)
    return alice, bob


async def mailbox(url: str, owner: Party) -> list[Mail]:
    """What the relay holds for ``owner`` (looked at without acknowledging anything).

    The relay pushes waiting mail right after authenticating and before it
    answers a request, so one answered request is the barrier.
    """
    async with await RelayClient.connect(url, owner.identity) as client:
        await client.get_prekeys(owner.address)
        held: list[Mail] = []
        for _ in range(client.waiting):
            frame = await client.recv()
            assert isinstance(frame, Mail), frame
            held.append(frame)
    return held


async def queued_transfer(alice: Party, bob: Party, url: str) -> str:
    """Bob was online once (his prekey is at the relay); Alice queues a transfer to him."""
    await bob.ok("online", url)
    sent = await alice.ok("send", url, "--to", bob.address, "--amount", str(AMOUNT))
    ((transfer_id, status),) = [(r["id"], r["status"]) for r in sent["results"]]
    assert status == "queued"
    return str(transfer_id)


def assert_settled_once(alice: Party, bob: Party, transfer_id: str) -> None:
    """One row each side, completed, with the same receipt bytes; balances; chains verify."""
    with alice.ledger() as mine, bob.ledger() as theirs:
        (sent,) = mine.transfers()
        (received,) = theirs.transfers()
        assert sent.id.hex() == received.id.hex() == transfer_id
        assert sent.status is received.status is TransferStatus.COMPLETED
        assert sent.signed_receipt is not None
        assert sent.signed_receipt == received.signed_receipt
        assert mine.balances() == {(bob.address, "EUR"): -AMOUNT}
        assert theirs.balances() == {(alice.address, "EUR"): AMOUNT}
        mine.verify(alice.identity)
        theirs.verify(bob.identity)


def status_of(party: Party, transfer_id: str) -> TransferStatus:
    with party.ledger() as ledger:
        (row,) = ledger.transfers()
        assert row.id.hex() == transfer_id
        return row.status


async def test_recipient_killed_after_its_commit_answers_from_the_stored_receipt(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    """Window 1: Bob committed the mailed transfer and died before depositing or acking."""
    alice, bob = parties
    url = relay.url
    transfer_id = await queued_transfer(alice, bob, url)

    await bob.killed("sync", url, "after_mail_committed")
    assert status_of(bob, transfer_id) is TransferStatus.COMPLETED  # committed before death
    assert status_of(alice, transfer_id) is TransferStatus.QUEUED
    assert [m.sender for m in await mailbox(url, bob)] == [alice.address]  # not acknowledged
    assert await mailbox(url, alice) == []  # no receipt was deposited

    again = await bob.ok("sync", url)  # the same mail, answered from the stored receipt
    assert again["transfers"] == []
    assert await mailbox(url, bob) == []  # acknowledged now
    (receipt_mail,) = await mailbox(url, alice)
    assert receipt_mail.sender == bob.address

    collected = await alice.ok("sync", url)
    assert collected["receipts"] == [transfer_id]
    assert collected["events"].count("completed") == 1
    assert_settled_once(alice, bob, transfer_id)


async def test_sender_killed_after_depositing_resends_into_the_same_slot(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    """Window 2: Alice deposited and died before recording ``queued``."""
    alice, bob = parties
    url = relay.url
    await bob.ok("online", url)

    await alice.killed("send", url, "after_deposit", "--to", bob.address, "--amount", str(AMOUNT))
    with alice.ledger() as ledger:
        (row,) = ledger.transfers()
    transfer_id = row.id.hex()
    assert row.status is TransferStatus.PENDING  # still pending: resend is offered
    (first,) = await mailbox(url, bob)
    assert first.sender == alice.address

    resent = await alice.ok("resend", url)
    assert resent["results"] == [{"id": transfer_id, "status": "queued"}]
    (second,) = await mailbox(url, bob)  # replaced, not added
    assert (second.sender, second.slot) == (first.sender, first.slot)
    assert second.envelope != first.envelope  # sealed again, fresh encapsulation

    received = await bob.ok("sync", url)
    assert received["transfers"] == [transfer_id]
    assert (await bob.ok("sync", url))["transfers"] == []
    collected = await alice.ok("sync", url)
    assert collected["receipts"] == [transfer_id]
    assert collected["events"].count("completed") == 1
    assert_settled_once(alice, bob, transfer_id)


async def test_recipient_killed_after_depositing_its_receipt_completes_the_sender_once(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    """Window 3: Bob deposited the receipt and died before acknowledging the transfer."""
    alice, bob = parties
    url = relay.url
    transfer_id = await queued_transfer(alice, bob, url)

    await bob.killed("sync", url, "after_receipt_deposited")
    assert [m.sender for m in await mailbox(url, bob)] == [alice.address]  # comes again
    collected = await alice.ok("sync", url)  # the receipt was already there
    assert collected["receipts"] == [transfer_id]
    assert collected["events"].count("completed") == 1
    with alice.ledger() as ledger:
        head = ledger.head

    again = await bob.ok("sync", url)  # the transfer again: answered from the stored receipt
    assert again["transfers"] == []
    assert await mailbox(url, bob) == []
    (receipt_mail,) = await mailbox(url, alice)  # mailed back again, once
    assert receipt_mail.sender == bob.address

    late = await alice.ok("sync", url)  # the same receipt again: nothing new happens
    assert late["receipts"] == []
    assert "completed" not in late["events"]
    assert await mailbox(url, alice) == []
    with alice.ledger() as ledger:
        assert ledger.head == head
    assert_settled_once(alice, bob, transfer_id)


async def test_mail_for_a_lost_prekey_is_dropped_and_the_resend_uses_a_fresh_one(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    """Bob's home lost its prekeys' private halves (restored from a backup without them)."""
    alice, bob = parties
    url = relay.url
    transfer_id = await queued_transfer(alice, bob, url)
    (bob.root / "bob.prekeys").unlink()

    dropped = await bob.ok("sync", url)  # unreadable: acknowledged, a new prekey published
    assert dropped["transfers"] == []
    assert dropped["events"] == ["mail-unreadable"]
    assert await mailbox(url, bob) == []
    assert status_of(alice, transfer_id) is TransferStatus.QUEUED

    resent = await alice.ok("resend", url)  # sealed to the fresh prekey
    assert resent["results"] == [{"id": transfer_id, "status": "queued"}]
    assert (await bob.ok("sync", url))["transfers"] == [transfer_id]
    collected = await alice.ok("sync", url)
    assert collected["receipts"] == [transfer_id]
    assert_settled_once(alice, bob, transfer_id)
