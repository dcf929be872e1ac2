"""Faults that need real processes: a receiver killed mid-commit, a relay restarted mid-session."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2ptransfer.errors import NetworkError
from p2ptransfer.net.peer import AcceptancePolicy, FaultHooks, Peer
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.transfer import SignedTransfer
from p2ptransfer.storage.ledger import Ledger, TransferStatus

from .conftest import RelayProcess, spawn_relay

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).resolve().parent


def start_receiver(
    relay_url: str, seed: bytes, ledger: Path, marker: Path | None = None
) -> subprocess.Popen[str]:
    """Start the receiver process; return once it is connected to the relay."""
    args = [sys.executable, str(HERE / "receiver_process.py"), relay_url, seed.hex(), str(ledger)]
    if marker is not None:
        args.append(str(marker))
    log = ledger.with_suffix(".log")
    with log.open("a") as stderr:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", log.read_text()
    return proc


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_receiver_sigkill_during_commit(relay_process: RelayProcess, tmp_path: Path) -> None:
    url = relay_process.url
    alice = Identity(secrets.token_bytes(32))
    bob_seed = secrets.token_bytes(32)
    bob_ledger = tmp_path / "bob.sqlite3"
    marker = tmp_path / "in-commit"
    alice_ledger = Ledger.open(tmp_path / "alice.sqlite3")

    receiver = start_receiver(url, bob_seed, bob_ledger, marker)
    try:
        async with Peer(alice, alice_ledger, url) as peer:
            sending = asyncio.create_task(
                peer.send(Identity(bob_seed).address, 31_337, "EUR", "kill -9", timeout=4)
            )
            await asyncio.to_thread(wait_for, marker, 20)
            receiver.send_signal(signal.SIGKILL)  # inside BEGIN IMMEDIATE … COMMIT
            receiver.wait(10)
            with pytest.raises(NetworkError, match="stays pending"):
                await sending
    finally:
        stop(receiver, signal.SIGKILL)

    (pending,) = alice_ledger.transfers()
    assert pending.status == TransferStatus.PENDING
    with Ledger.open(bob_ledger) as bob_view:  # the killed transaction left nothing behind
        assert bob_view.transfers() == []
        bob_view.verify()

    receiver = start_receiver(url, bob_seed, bob_ledger)
    try:
        async with Peer(alice, alice_ledger, url) as peer:
            (outcome,) = await peer.resend(timeout=15)
    finally:
        stop(receiver)
    assert outcome.accepted and outcome.row.id == pending.id
    with Ledger.open(bob_ledger) as bob_view:
        (row,) = bob_view.transfers()
        assert (row.id, row.amount_minor, row.status) == (
            pending.id,
            31_337,
            TransferStatus.COMPLETED,
        )
        assert row.signed_receipt == alice_ledger.get_transfer(pending.id, "out").signed_receipt
        bob_view.verify()
    alice_ledger.verify()


class RestartRelay(FaultHooks):
    """Kill the relay as the transfer is about to leave; start it again on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.relays: list[RelayProcess] = []
        self.done = False

    async def before_transfer_sent(self, peer: Peer, signed: SignedTransfer) -> None:
        if self.done:
            return
        self.done = True
        assert self.relays[-1].terminate(signal.SIGKILL) == -signal.SIGKILL
        self.relays.append(await asyncio.to_thread(spawn_relay, "--port", str(self.port)))


async def test_relay_restart_mid_session(tmp_path: Path) -> None:
    port = free_port()
    hooks = RestartRelay(port)
    hooks.relays.append(spawn_relay("--port", str(port)))
    url = hooks.relays[0].url
    alice, bob = Identity(secrets.token_bytes(32)), Identity(secrets.token_bytes(32))
    alice_ledger = Ledger.open(tmp_path / "alice.sqlite3")
    bob_ledger = Ledger.open(tmp_path / "bob.sqlite3")
    bob_ledger.add_contact("alice", alice.address, 1)
    receiver = Peer(bob, bob_ledger, url, policy=AcceptancePolicy())
    try:
        await receiver.connect()
        stop = asyncio.Event()
        listening = asyncio.create_task(receiver.listen(stop))
        async with Peer(alice, alice_ledger, url, hooks=hooks) as peer:
            outcome = await peer.send(bob.address, 500, "CHF", "through a restart", timeout=30)
        stop.set()
        await asyncio.wait_for(listening, 10)
    finally:
        await receiver.close()
        for relay in hooks.relays:
            relay.terminate()
    assert hooks.done and outcome.accepted
    (row,) = bob_ledger.transfers()
    assert (row.id, row.status) == (outcome.row.id, TransferStatus.COMPLETED)
    assert [r.status for r in alice_ledger.transfers()] == [TransferStatus.COMPLETED]
    alice_ledger.verify()
    bob_ledger.verify()
