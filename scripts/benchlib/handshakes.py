"""Sessions established per second through the relay, and the crypto ceiling they are held to.

``ceiling``: one handshake's primitives, both sides, called straight on
pyca/cryptography in a tight loop on one core: two X25519 key pairs and
exchanges, two Ed25519 signatures and verifications, the AES-GCM sealing and
opening of both identity proofs, the HKDF extract/expand calls of the key
schedule and the transcript hashes. No encoding, no state machine, no I/O:
what a handshake would cost if everything of ours were free.

``connect_floor``: websockets' own cost of a connection that is opened,
used for one exchange and closed, both ends counted: what every session
pays on top of its cryptography when it connects and authenticates first.

``responders``: ``--pairs`` listening :class:`~p2ptransfer.net.peer.Peer`
objects (the product's listener, each with a ledger on disk), counting the
sessions they establish. ``initiators``: one initiator per responder, each
running complete sessions back to back: the product's
:class:`~p2ptransfer.protocol.session.Session` over the product's
:class:`~p2ptransfer.net.relay_client.RelayClient`: HELLO, reply, FINISH,
then a CLOSE record (no transfer); with ``--reconnect`` each session also
connects and authenticates to the relay first. Every session is a fresh
X25519 exchange with both identities proven.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from benchlib import profiling
from benchlib.timing import per_second
from p2ptransfer.net import eventloop

DEADLINE = 90.0


def _hash(*parts: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    for part in parts:
        digest.update(part)
    return digest.finalize()


def _extract(salt: bytes, ikm: bytes) -> bytes:
    mac = hmac.HMAC(salt, hashes.SHA256())
    mac.update(ikm)
    return mac.finalize()


def _expand(prk: bytes, info: bytes, size: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), size, info).derive(prk)


def one_handshake_of_primitives(
    identity_i: Ed25519PrivateKey, identity_r: Ed25519PrivateKey
) -> None:
    """Both sides' cryptography for one session, and nothing else.

    The long-term Ed25519 keys are loaded once, as a running peer holds them.
    """
    eph_i, eph_r = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    pub_i, pub_r = eph_i.public_key().public_bytes_raw(), eph_r.public_key().public_bytes_raw()
    th = _hash(b"prologue", pub_i, pub_r)
    for mine, theirs in ((eph_i, pub_r), (eph_r, pub_i)):  # each side derives the same keys
        secret = _extract(th, mine.exchange(X25519PublicKey.from_public_bytes(theirs)))
        key, _ = _expand(secret, b"i2r", 32), _expand(secret, b"r2i", 32)
    for signer in (identity_r, identity_i):  # the responder proves itself first
        public = signer.public_key().public_bytes_raw()
        signed = th + public
        sealed = AESGCM(key).encrypt(bytes(12), public + signer.sign(signed), th)
        opened = AESGCM(key).decrypt(bytes(12), sealed, th)  # by the other side
        Ed25519PublicKey.from_public_bytes(opened[:32]).verify(opened[32:], signed)
        th = _hash(th, sealed)
    for side in (b"i", b"r"):
        master = _extract(th, secret)
        for label in (b"key-i2r", b"iv-i2r", b"key-r2i", b"iv-r2i"):
            _expand(master, label + side, 32)


def ceiling(seconds: float) -> dict[str, Any]:
    keys = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    one_handshake_of_primitives(*keys)  # warm
    rate = per_second(lambda: one_handshake_of_primitives(*keys), seconds)
    return {"handshakes_per_s": rate, "us_per_handshake": 1e6 / rate}


async def connect_floor(seconds: float) -> dict[str, Any]:
    """What websockets alone costs a session that connects: the floor under ``--reconnect``.

    A server and 50 clients in this one process (so the CPU of both ends is
    counted, on one core): each client connects, receives one message,
    sends one (a challenge and its answer), and closes; no authentication,
    no handshake, no relay logic.
    """
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        await ws.send(os.urandom(40))
        await ws.recv()
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        done = 0

        async def client(until: float) -> None:
            nonlocal done
            while time.monotonic() < until:
                ws = await connect(url, compression=None, proxy=None)
                await ws.recv()
                await ws.send(os.urandom(130))
                await ws.close()
                done += 1

        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*[client(time.monotonic() + 0.2) for _ in range(50)])  # warm
            done = 0
            cpu, start = time.process_time(), time.perf_counter()
            await asyncio.gather(*[client(time.monotonic() + seconds) for _ in range(50)])
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"connections_per_s": done / elapsed, "cpu_us_per_connection": cpu / done * 1e6}


async def responders(args: argparse.Namespace) -> dict[str, Any]:
    """Listen with ``--pairs`` peers; on ``count`` report sessions established so far."""
    from p2ptransfer.net.peer import AcceptancePolicy, Peer, PeerEvent
    from p2ptransfer.protocol.identity import Identity
    from p2ptransfer.storage.ledger import Ledger

    established = 0
    last = 0.0

    def on_event(event: PeerEvent) -> None:
        nonlocal established, last
        if event.kind == "session":
            established += 1
            last = time.monotonic()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="p2pt-bench-") as tmp:
        peers = []
        for n in range(args.pairs):
            ledger = Ledger.open(Path(tmp) / f"responder-{n}.sqlite3")
            peer = Peer(
                Identity(os.urandom(32)),
                ledger,
                args.url,
                policy=AcceptancePolicy(accept_unknown=True),
                on_event=on_event,
            )
            await peer.connect()
            peers.append((peer, ledger))
        listening = [asyncio.create_task(peer.listen(stop)) for peer, _ in peers]
        ready = {"addresses": [peer.address for peer, _ in peers]}
        print(f"ready {json.dumps(ready)}", flush=True)
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "count":
            print(f"count {json.dumps({'established': established, 'last': last})}", flush=True)
        stop.set()
        await asyncio.wait(listening, timeout=10)
        for peer, ledger in peers:
            await peer.close()
            ledger.close()
    return {"established": established}


async def initiators(args: argparse.Namespace) -> dict[str, Any]:
    """One initiator per responder, each running ``--per-pair`` sessions back to back.

    With ``--reconnect`` each session is what one ``p2ptransfer send`` does
    before its first transfer: connect to the relay, authenticate (challenge
    signed, checked by the relay), handshake, close. Without it, sessions
    reuse one authenticated connection per initiator, as a long-running
    peer's do.
    """
    from p2ptransfer.net.relay_client import RelayClient
    from p2ptransfer.protocol.identity import Identity, PublicIdentity
    from p2ptransfer.protocol.relay_wire import Deliver
    from p2ptransfer.protocol.session import Established, Session

    loop = asyncio.get_running_loop()
    targets = json.loads(sys.stdin.readline())["addresses"]
    identities = [Identity(os.urandom(32)) for _ in targets]
    clients: list[RelayClient | None] = [None] * len(targets)
    if not args.reconnect:
        clients = [await RelayClient.connect(args.url, identity) for identity in identities]

    async def one_session(identity: Identity, client: RelayClient, address: str) -> None:
        session = Session.initiate(
            identity,
            PublicIdentity.from_address(address),
            tag=os.urandom(16),
            ephemeral_private=os.urandom(32),
            nonce=os.urandom(32),
        )
        while not session.is_open:
            for frame in session.data_to_send():
                await client.send(address, frame)
            message = await client.recv()
            assert isinstance(message, Deliver), message
            events = session.receive_frame(message.payload)
            assert all(isinstance(e, Established) for e in events), events
        session.close()  # FINISH, then a CLOSE record
        for frame in session.data_to_send():
            await client.send(address, frame)

    async def sessions(n: int, count: int) -> None:
        identity, address = identities[n], targets[n]
        for _ in range(count):
            client = clients[n]
            if client is not None:
                await one_session(identity, client, address)
                continue
            client = await RelayClient.connect(args.url, identity)
            try:
                await one_session(identity, client, address)
            finally:
                await client.close()

    async def run(count: int) -> None:
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*[sessions(n, count) for n in range(len(targets))])

    try:
        await run(2)  # warm up: caches, first-session paths, relay routes
        print("ready {}", flush=True)  # the driver reads everyone's CPU time now
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        cpu = time.process_time()
        start = time.monotonic()
        await run(args.per_pair)
        end = time.monotonic()
        cpu = time.process_time() - cpu
    finally:
        for client in clients:
            if client is not None:
                await client.close()
    return {"sessions": len(targets) * args.per_pair, "start": start, "end": end, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchlib.handshakes")
    parser.add_argument("command", choices=["ceiling", "connect_floor", "responders", "initiators"])
    parser.add_argument("--url", default="")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--per-pair", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--reconnect", action="store_true")
    args = parser.parse_args()
    if args.command == "ceiling":
        result = ceiling(args.seconds)
    elif args.command == "connect_floor":
        result = asyncio.run(connect_floor(args.seconds))
    else:
        work = responders if args.command == "responders" else initiators
        result = profiling.run(f"handshakes-{args.command}", lambda: eventloop.run(work(args)))
    print(f"result {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
