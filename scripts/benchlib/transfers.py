"""Durable transfers per second in one session, and the SQLite commit rate they are held to.

``sqlite``: single-row transactions on a file in ``--dir`` with the pragmas
our ledger uses (WAL, ``synchronous=FULL``): each commit waits for the disk.
That is the reference: a design that commits each transfer alone (on either
side) cannot beat it, and one that groups commits can.

``signatures``: the other bound on a transfer. Each side signs one message
and verifies one per transfer (the sender signs the transfer and checks the
receipt; the receiver checks the transfer and signs the receipt), so one
Ed25519 signature plus one verification, called straight on
pyca/cryptography, is the least CPU a transfer costs each side's core.

``receiver``: a :class:`~p2ptransfer.net.peer.Peer` that ``listen()``s with a
ledger in ``--dir`` and knows the sender as a contact. ``sender``: a peer
that calls ``send_many`` for ``--count`` transfers with ``--window``
in flight in one session: the transfers are signed and committed as pending
(in chunks, the first before anything leaves), then each is encrypted,
verified and committed by the receiver with its signed receipt (group
commit), and each receipt verified and committed by the sender (receipts
that arrive together, together). The figure is
``count`` divided by the seconds ``send_many`` took, measured after a
warm-up transfer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import profiling
from benchlib.timing import per_second
from p2ptransfer.net import eventloop

DEADLINE = 120.0


def sqlite_commits(directory: Path, seconds: float) -> dict[str, Any]:
    path = directory / "commits.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, row BLOB NOT NULL)")
        row = os.urandom(400)  # about one ledger entry (a signed transfer and its receipt)

        def commit_one_row() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (row) VALUES (?)", (row,))
            conn.execute("COMMIT")

        rate = per_second(commit_one_row, seconds)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"commits_per_s": rate, "us_per_commit": 1e6 / rate}


def signatures(seconds: float) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    signer = Ed25519PrivateKey.generate()
    public = signer.public_key().public_bytes_raw()
    message = os.urandom(300)  # about a signed transfer's size

    def sign_and_verify() -> None:
        signature = signer.sign(message)
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)

    rate = per_second(sign_and_verify, seconds)
    return {"transfers_per_s_per_core": rate, "us_per_transfer": 1e6 / rate}


async def receiver(args: argparse.Namespace) -> dict[str, Any]:
    from p2ptransfer.net.peer import Peer
    from p2ptransfer.protocol.identity import Identity
    from p2ptransfer.storage.ledger import Ledger

    setup = json.loads(sys.stdin.readline())
    identity = Identity(bytes.fromhex(setup["seed"]))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with Ledger.open(Path(args.dir) / "receiver.sqlite3") as ledger:
        ledger.add_contact("sender", setup["contact"], int(time.time() * 1000))
        peer = Peer(identity, ledger, args.url)
        await peer.connect()
        listening = asyncio.create_task(peer.listen(stop))
        print("ready {}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
        stop.set()
        await asyncio.wait([listening], timeout=10)
        await peer.close()
        return {
            "commits": peer.stats.commits,
            "largest_batch": peer.stats.largest_batch,
        }


async def sender(args: argparse.Namespace) -> dict[str, Any]:
    from p2ptransfer.net.peer import Peer
    from p2ptransfer.protocol.identity import Identity
    from p2ptransfer.storage.ledger import Ledger

    setup = json.loads(sys.stdin.readline())
    identity = Identity(bytes.fromhex(setup["seed"]))
    to = setup["contact"]
    with Ledger.open(Path(args.dir) / f"sender-w{args.window}.sqlite3") as ledger:
        ledger.add_contact("receiver", to, int(time.time() * 1000))
        async with Peer(identity, ledger, args.url, window=args.window) as peer:
            await peer.send(to, 1, "EUR", "warm-up", timeout=30)
            items = [(100 + n, "EUR", f"bench {n}") for n in range(args.count)]
            cpu = time.process_time()
            start = time.perf_counter()
            outcomes = await peer.send_many(to, items, timeout=DEADLINE)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
        assert len(outcomes) == args.count and all(o.accepted for o in outcomes)
        return {
            "transfers": args.count,
            "seconds": seconds,
            "transfers_per_s": args.count / seconds,
            "cpu_s": cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchlib.transfers")
    parser.add_argument("command", choices=["sqlite", "signatures", "receiver", "sender"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.command == "sqlite":
        result = sqlite_commits(Path(args.dir), args.seconds)
    elif args.command == "signatures":
        result = signatures(args.seconds)
    else:
        work = receiver if args.command == "receiver" else sender
        result = profiling.run(f"transfers-{args.command}", lambda: eventloop.run(work(args)))
    print(f"result {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
