"""Micro figures of the core, in one process: what the primitives cost inside our code.

Not among the goals, but they explain them: a handshake in memory, a record
sealed and opened next to the bare AES-GCM floor, a transfer signed and
verified (cold and cached), ledger group commit and ``verify()``.
``python -m benchlib.core [--quick]`` prints ``result <json>``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import profiling
from benchlib.timing import per_second
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.channel import SecureChannel
from p2ptransfer.protocol.handshake import Initiator, Responder
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import accept
from p2ptransfer.protocol.transfer import Transfer, sign_transfer
from p2ptransfer.storage.ledger import Ledger

SIZES = (256, 16 * 1024)


def handshake_pair(alice: Identity, bob: Identity) -> tuple[SecureChannel, SecureChannel]:
    initiator = Initiator(alice, bob.public, ephemeral_private=os.urandom(32), nonce=os.urandom(32))
    responder = Responder(bob, ephemeral_private=os.urandom(32))
    msg2 = responder.receive(initiator.start())
    assert msg2 is not None
    assert responder.receive(initiator.receive(msg2)) is None
    return initiator.result.channel, responder.result.channel


def bench_crypto(quick: bool) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    seconds = 0.5 if quick else 2.0
    alice, bob = Identity(os.urandom(32)), Identity(os.urandom(32))
    results: dict[str, Any] = {
        "handshakes_per_s": round(
            per_second(lambda: handshake_pair(alice, bob), seconds, 100_000), 1
        )
    }
    for size in SIZES:
        send, recv = handshake_pair(alice, bob)
        plaintext = os.urandom(size)

        def seal_open(
            send: SecureChannel = send, recv: SecureChannel = recv, plaintext: bytes = plaintext
        ) -> None:
            recv.open(send.seal(0x11, plaintext))

        per_s = per_second(seal_open, seconds, 10_000_000)
        results[f"channel_{size}"] = {
            "records_per_s": round(per_s, 1),
            "mb_per_s": round(per_s * size / 1e6, 2),
        }
        # The floor: the same AES-GCM work with one cipher object kept (no framing, no checks).
        aead, nonce, aad = AESGCM(os.urandom(32)), os.urandom(12), os.urandom(14)

        def raw(
            aead: AESGCM = aead,
            nonce: bytes = nonce,
            plaintext: bytes = plaintext,
            aad: bytes = aad,
        ) -> None:
            aead.decrypt(nonce, aead.encrypt(nonce, plaintext, aad), aad)

        raw_s = per_second(raw, seconds, 10_000_000)
        results[f"aesgcm_floor_{size}"] = {
            "records_per_s": round(raw_s, 1),
            "mb_per_s": round(raw_s * size / 1e6, 2),
        }
    transfers = [make_transfer(alice, bob, n) for n in range(300 if quick else 1500)]
    start = time.perf_counter()
    signed = [sign_transfer(alice, t) for t in transfers]
    results["transfer_sign_per_s"] = round(len(signed) / (time.perf_counter() - start), 1)
    # primitives remembers positive Ed25519 verdicts (an LRU cache): clear it so this
    # measures a cold check, as a fresh process (e.g. `ledger verify`) pays it.
    primitives._ed25519_verified.cache_clear()
    start = time.perf_counter()
    for item in signed:
        item.verify()
    results["transfer_verify_cold_per_s"] = round(len(signed) / (time.perf_counter() - start), 1)
    start = time.perf_counter()
    for item in signed:
        item.verify()
    results["transfer_verify_cached_per_s"] = round(len(signed) / (time.perf_counter() - start), 1)
    return results


def make_transfer(sender: Identity, recipient: Identity, n: int) -> Transfer:
    return Transfer(
        id=secrets.token_bytes(16),  # type: ignore[arg-type]
        sender=sender.address,
        recipient=recipient.address,
        amount=100 + n,
        currency="EUR",
        memo=f"bench {n}",
        created_at=1_700_000_000_000 + n,
    )


def bench_ledger(quick: bool, root: Path) -> dict[str, Any]:
    count = 256 if quick else 1024
    alice, bob = Identity(os.urandom(32)), Identity(os.urandom(32))
    items = []
    for n in range(count):
        signed = sign_transfer(alice, make_transfer(alice, bob, n))
        items.append((signed, accept(bob, signed, 1_700_000_000_000 + n)))
    results: dict[str, Any] = {"entries": count}
    for batch in (1, 64):
        with Ledger.open(root / f"ledger-b{batch}.sqlite3") as ledger:
            start = time.perf_counter()
            for i in range(0, count, batch):
                ledger.record_incoming_batch(items[i : i + batch], 1_700_000_000_000)
            seconds = time.perf_counter() - start
            results[f"batch_{batch}"] = {
                "entries_per_s": round(count / seconds, 1),
                "ms_per_entry": round(seconds / count * 1e3, 3),
            }
            if batch == 64:
                primitives._ed25519_verified.cache_clear()  # cold, as in a fresh process
                start = time.perf_counter()
                assert ledger.verify() == count
                seconds = time.perf_counter() - start
                results["verify_s_per_1000"] = round(seconds / count * 1000, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchlib.core")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    def work() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="p2pt-bench-") as tmp:
            return {
                "crypto": bench_crypto(args.quick),
                "ledger": bench_ledger(args.quick, Path(tmp)),
            }

    print(f"result {json.dumps(profiling.run('core', work))}", flush=True)


if __name__ == "__main__":
    main()
