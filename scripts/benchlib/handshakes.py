"""Sessions established per second through the relay, and the crypto ceiling they are held to.

``ceiling``: one handshake's primitives, both sides, called straight on
pyca/cryptography in a tight loop on one core: two X25519 key pairs and
exchanges, two Ed25519 signatures and verifications, the AES-GCM sealing and
opening of both identity proofs, the HKDF extract/expand calls of the key
schedule and the transcript hashes. No encoding, no state machine, no I/O:
what a handshake would cost if everything of ours were free.

``responders``: ``--pairs`` listening :class:`~p2ptransfer.net.peer.Peer`
objects (the product's listener, each with a ledger on disk), counting the
sessions they establish. ``initiators``: as many relay clients, one per
responder, each running complete sessions back to back: the product's
:class:`~p2ptransfer.protocol.session.Session` over the product's
:class:`~p2ptransfer.net.relay_client.RelayClient`: HELLO, reply, FINISH,
then a CLOSE record (no transfer). Every session is a fresh X25519 exchange
with both identities proven.
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
        key = _expand(secret, b"i2r", 32)
        _expand(secret, b"r2i", 32)
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
    one_handshake_of_primitives(*keys)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(16):
            one_handshake_of_primitives(*keys)
        done += 16
    elapsed = time.perf_counter() - start
    return {"handshakes_per_s": done / elapsed, "us_per_handshake": elapsed / done * 1e6}


async def responders(args: argparse.Namespace) -> dict[str, Any]:
    """Listen with ``--pairs`` peers until told to stop; count established sessions."""
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
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
        stop.set()
        await asyncio.wait(listening, timeout=10)
        for peer, ledger in peers:
            await peer.close()
            ledger.close()
    return {"established": established, "last": last}


async def initiators(args: argparse.Namespace) -> dict[str, Any]:
    """One relay client per responder, each running ``--per-pair`` sessions back to back."""
    from p2ptransfer.net.relay_client import RelayClient
    from p2ptransfer.protocol.identity import Identity, PublicIdentity
    from p2ptransfer.protocol.relay_wire import Deliver
    from p2ptransfer.protocol.session import Established, Session

    targets = json.loads(sys.stdin.readline())["addresses"]
    identities = [Identity(os.urandom(32)) for _ in targets]
    clients = [await RelayClient.connect(args.url, identity) for identity in identities]

    async def sessions(identity: Identity, client: RelayClient, address: str, count: int) -> None:
        peer = PublicIdentity.from_address(address)
        for _ in range(count):
            session = Session.initiate(
                identity,
                peer,
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

    async def run(count: int) -> float:
        start = time.monotonic()
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(
                *[sessions(*job, count) for job in zip(identities, clients, targets, strict=True)]
            )
        return start

    try:
        await run(2)  # warm up: caches, first-session paths, relay routes
        cpu = time.process_time()
        start = await run(args.per_pair)
        end = time.monotonic()
        cpu = time.process_time() - cpu
    finally:
        for client in clients:
            await client.close()
    return {"sessions": len(clients) * args.per_pair, "start": start, "end": end, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchlib.handshakes")
    parser.add_argument("command", choices=["ceiling", "responders", "initiators"])
    parser.add_argument("--url", default="")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--per-pair", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.command == "ceiling":
        result = ceiling(args.seconds)
    else:
        work = responders if args.command == "responders" else initiators
        result = profiling.run(f"handshakes-{args.command}", lambda: asyncio.run(work(args)))
    print(f"result {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
