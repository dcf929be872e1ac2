"""Benchmarks for p2ptransfer: relay forwarding, crypto core, end to end, ledger.

Run:  .venv/bin/python scripts/bench.py [--quick] [--json-out FILE] [--profile]

Speed is compared as *ratios within one run* (our relay against a bare
websockets forwarder started here, window 1 against window 64, batch 1
against batch 64), never as absolute thresholds: the absolute numbers depend
on the machine and on whatever else it is doing. Everything listens on
127.0.0.1 with an OS-chosen port; every loop is bounded in count and in time.

Output: a human table on stderr, ONE JSON object on stdout (and in
``--json-out``). ``--profile`` additionally prints the top functions of each
section (cProfile, by own time) to stderr. docs/performance.md explains
every number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from p2ptransfer.net.peer import Peer
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import RelayClient
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.channel import SecureChannel
from p2ptransfer.protocol.handshake import Initiator, Responder
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.relay_wire import (
    MAX_FRAME_SIZE,
    AuthOk,
    Challenge,
    Deliver,
    Send,
    decode_server_frame,
    make_auth,
)
from p2ptransfer.protocol.transfer import Transfer, accept, sign_transfer
from p2ptransfer.storage.ledger import Ledger

SIZES = (256, 16 * 1024)
SECTION_DEADLINE = 60.0  # no section may run longer than this, whatever the machine
CLIENT_OPTIONS: dict[str, Any] = {
    "compression": None,
    "max_size": MAX_FRAME_SIZE,
    "max_queue": 16,
    "open_timeout": 10,
    "close_timeout": 2,
    "proxy": None,
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def relay_config() -> RelayConfig:
    """Our relay with its rate limits raised out of the way (queues stay at their defaults)."""
    big = 1e12
    return RelayConfig(
        host="127.0.0.1",
        port=0,
        frame_rate=big,
        frame_burst=big,
        byte_rate=big,
        byte_burst=big,
        connection_rate_per_ip=big,
        connection_burst_per_ip=big,
        log_level="warning",
    )


# --- 1. relay forwarding ----------------------------------------------------------


class BareForwarder:
    """The least a relay can do: the first message names (me, partner); later ones go there."""

    def __init__(self) -> None:
        self.conns: dict[bytes, ServerConnection] = {}
        self.url = ""
        self._server: Any = None

    async def _handler(self, ws: ServerConnection) -> None:
        hello = await ws.recv()
        assert isinstance(hello, bytes)
        me, _, partner = hello.partition(b"|")
        self.conns[me] = ws
        await ws.send(b"ok")
        try:
            async for message in ws:
                target = self.conns.get(partner)
                if target is not None:
                    await target.send(message)
        finally:
            self.conns.pop(me, None)

    async def __aenter__(self) -> BareForwarder:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            compression=None,
            max_size=MAX_FRAME_SIZE,
            max_queue=8,
            write_limit=64 * 1024,
            server_header=None,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


class Link:
    """One raw websocket client and the bytes it sends to reach its partner."""

    def __init__(self, ws: ClientConnection, frame_for: Callable[[bytes], bytes]) -> None:
        self.ws = ws
        self.frame_for = frame_for


async def bare_pair(url: str, n: int) -> tuple[Link, Link]:
    a = await connect(url, **CLIENT_OPTIONS)
    b = await connect(url, **CLIENT_OPTIONS)
    await a.send(f"a{n}|b{n}".encode())
    await b.send(f"b{n}|a{n}".encode())
    assert await a.recv() == b"ok" and await b.recv() == b"ok"
    return Link(a, lambda payload: payload), Link(b, lambda payload: payload)


async def ours_raw_pair(url: str, n: int) -> tuple[Link, Link]:
    """Two raw websocket clients authenticated to our relay; frames are pre-encodable Sends."""
    ids = [Identity(secrets.token_bytes(32)) for _ in range(2)]
    links: list[ClientConnection] = []
    for identity in ids:
        ws = await connect(url, **CLIENT_OPTIONS)
        challenge = decode_server_frame(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(challenge, Challenge)
        await ws.send(make_auth(identity, url, challenge.challenge).encode())
        assert decode_server_frame(await ws.recv()) == AuthOk(identity.address)  # type: ignore[arg-type]
        links.append(ws)
    a_addr, b_addr = ids[0].address, ids[1].address
    return (
        Link(links[0], lambda payload: Send(n + 1, b_addr, payload).encode()),
        Link(links[1], lambda payload: Send(n + 1, a_addr, payload).encode()),
    )


async def throughput_raw(pairs: list[tuple[Link, Link]], size: int, count: int) -> float:
    """Every sender sends ``count`` frames of ``size`` bytes; seconds until all arrived."""
    payload = secrets.token_bytes(size)

    async def sender(link: Link) -> None:
        frame = link.frame_for(payload)  # encoded once: only the forwarder's cost varies
        for _ in range(count):
            await link.ws.send(frame)

    async def receiver(link: Link) -> None:
        last: bytes | str = b""
        for _ in range(count):
            last = await link.ws.recv()
        assert isinstance(last, bytes) and len(last) >= size

    start = time.perf_counter()
    async with asyncio.timeout(SECTION_DEADLINE):
        await asyncio.gather(*[sender(a) for a, _ in pairs], *[receiver(b) for _, b in pairs])
    return time.perf_counter() - start


async def pingpong_raw(a: Link, b: Link, size: int, rounds: int) -> list[float]:
    payload = secrets.token_bytes(size)
    to_b, to_a = a.frame_for(payload), b.frame_for(payload)

    async def echo() -> None:
        for _ in range(rounds):
            await b.ws.recv()
            await b.ws.send(to_a)

    task = asyncio.create_task(echo())
    rtts: list[float] = []
    async with asyncio.timeout(SECTION_DEADLINE):
        for _ in range(rounds):
            t0 = time.perf_counter()
            await a.ws.send(to_b)
            await a.ws.recv()
            rtts.append(time.perf_counter() - t0)
        await task
    return rtts


async def client_pair(url: str) -> tuple[RelayClient, RelayClient]:
    a = await RelayClient.connect(url, Identity(secrets.token_bytes(32)))
    b = await RelayClient.connect(url, Identity(secrets.token_bytes(32)))
    return a, b


async def throughput_client(
    pairs: list[tuple[RelayClient, RelayClient]], size: int, count: int
) -> float:
    """As :func:`throughput_raw`, through the product's RelayClient on both ends."""
    payload = secrets.token_bytes(size)

    async def sender(a: RelayClient, to: str) -> None:
        for _ in range(count):
            await a.send(to, payload)

    async def receiver(b: RelayClient) -> None:
        for _ in range(count):
            got = await b.recv()
            assert isinstance(got, Deliver)

    start = time.perf_counter()
    async with asyncio.timeout(SECTION_DEADLINE):
        await asyncio.gather(
            *[sender(a, b.address) for a, b in pairs], *[receiver(b) for _, b in pairs]
        )
    return time.perf_counter() - start


async def pingpong_client(a: RelayClient, b: RelayClient, size: int, rounds: int) -> list[float]:
    payload = secrets.token_bytes(size)

    async def echo() -> None:
        for _ in range(rounds):
            await b.recv()
            await b.send(a.address, payload)

    task = asyncio.create_task(echo())
    rtts: list[float] = []
    async with asyncio.timeout(SECTION_DEADLINE):
        for _ in range(rounds):
            t0 = time.perf_counter()
            await a.send(b.address, payload)
            await a.recv()
            rtts.append(time.perf_counter() - t0)
        await task
    return rtts


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": round(q[49] * 1e3, 3), "p99_ms": round(q[98] * 1e3, 3)}


def rate(frames: int, size: int, seconds: float) -> dict[str, float]:
    return {
        "frames_per_s": round(frames / seconds, 1),
        "mb_per_s": round(frames * size / seconds / 1e6, 2),
        "seconds": round(seconds, 3),
    }


async def bench_relay(quick: bool, pairs_n: int) -> dict[str, Any]:
    counts = {256: 1500 if quick else 6000, 16 * 1024: 400 if quick else 1500}
    rounds = 300 if quick else 2000
    results: dict[str, Any] = {"pairs": pairs_n, "counts_per_pair": counts, "rounds": rounds}
    async with BareForwarder() as bare, RelayServer(relay_config()) as relay:
        makers: dict[str, Callable[[str, int], Awaitable[tuple[Link, Link]]]] = {
            "bare": bare_pair,
            "ours": ours_raw_pair,
        }
        urls = {"bare": bare.url, "ours": relay.url}
        for name, make in makers.items():
            pairs = [await make(urls[name], i) for i in range(pairs_n)]
            try:
                await throughput_raw(pairs, 256, 50)  # warm up
                for size in SIZES:
                    seconds = await throughput_raw(pairs, size, counts[size])
                    results[f"{name}_{size}"] = rate(pairs_n * counts[size], size, seconds)
                results[f"{name}_rtt_256"] = percentiles(await pingpong_raw(*pairs[0], 256, rounds))
            finally:
                for a, b in pairs:
                    await a.ws.close()
                    await b.ws.close()
        clients = [await client_pair(relay.url) for _ in range(pairs_n)]
        try:
            await throughput_client(clients, 256, 50)
            for size in SIZES:
                seconds = await throughput_client(clients, size, counts[size])
                results[f"ours_client_{size}"] = rate(pairs_n * counts[size], size, seconds)
            results["ours_client_rtt_256"] = percentiles(
                await pingpong_client(*clients[0], 256, rounds)
            )
        finally:
            for first, second in clients:
                await first.close()
                await second.close()
    return results


# --- 2. crypto core --------------------------------------------------------------


def handshake_pair(alice: Identity, bob: Identity) -> tuple[SecureChannel, SecureChannel]:
    initiator = Initiator(alice, bob.public, ephemeral_private=os.urandom(32), nonce=os.urandom(32))
    responder = Responder(bob, ephemeral_private=os.urandom(32))
    msg2 = responder.receive(initiator.start())
    assert msg2 is not None
    assert responder.receive(initiator.receive(msg2)) is None
    return initiator.result.channel, responder.result.channel


def timed_loop(step: Callable[[], object], max_count: int, max_seconds: float) -> float:
    """Run ``step`` up to ``max_count`` times or ``max_seconds``; operations per second."""
    done = 0
    start = time.perf_counter()
    while done < max_count:
        step()
        done += 1
        if done % 16 == 0 and time.perf_counter() - start > max_seconds:
            break
    return done / (time.perf_counter() - start)


def bench_crypto(quick: bool) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    seconds = 0.5 if quick else 2.0
    alice, bob = Identity(os.urandom(32)), Identity(os.urandom(32))
    results: dict[str, Any] = {
        "handshakes_per_s": round(
            timed_loop(lambda: handshake_pair(alice, bob), 100_000, seconds), 1
        )
    }
    for size in SIZES:
        send, recv = handshake_pair(alice, bob)
        plaintext = os.urandom(size)

        def seal_open(
            send: SecureChannel = send, recv: SecureChannel = recv, plaintext: bytes = plaintext
        ) -> None:
            recv.open(send.seal(0x11, plaintext))

        per_s = timed_loop(seal_open, 10_000_000, seconds)
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

        raw_s = timed_loop(raw, 10_000_000, seconds)
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


# --- 3. end to end and ledger ---------------------------------------------------


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


class Timed:
    """Wraps one ledger method on one instance: calls, seconds, and the sizes of batches."""

    def __init__(self, ledger: Ledger, name: str) -> None:
        self.inner = getattr(ledger, name)
        self.calls = 0
        self.items = 0
        self.seconds = 0.0
        setattr(ledger, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1
            self.items += len(args[0]) if isinstance(args[0], list) else 1

    def reset(self) -> None:
        self.calls = self.items = 0
        self.seconds = 0.0


async def bench_e2e(quick: bool, root: Path) -> dict[str, Any]:
    count = 200 if quick else 1000
    windows = (1, 32) if quick else (1, 32, 64)
    alice, bob = Identity(os.urandom(32)), Identity(os.urandom(32))
    results: dict[str, Any] = {"transfers": count}
    async with RelayServer(relay_config()) as relay:
        bob_ledger = Ledger.open(root / "bob.sqlite3")
        bob_ledger.add_contact("alice", alice.address, 1)
        commits = Timed(bob_ledger, "record_incoming_batch")
        receiver = Peer(bob, bob_ledger, relay.url)
        await receiver.connect()
        stop = asyncio.Event()
        listening = asyncio.create_task(receiver.listen(stop))
        try:
            for window in windows:
                ledger = Ledger.open(root / f"alice-w{window}.sqlite3")
                ledger.add_contact("bob", bob.address, 1)
                pending = Timed(ledger, "record_outgoing_batch")
                completing = Timed(ledger, "complete_outgoing_batch")
                async with Peer(alice, ledger, relay.url, window=window) as sender:
                    await sender.send(bob.address, 1, "EUR", timeout=30)  # warm up
                    for timed in (commits, pending, completing):
                        timed.reset()
                    t0 = time.perf_counter()
                    largest = receiver.stats.largest_batch = 0
                    signed = sender.prepare_many(  # what send_many does, timed in two parts
                        bob.address, [(100 + i, "EUR", "b") for i in range(count)]
                    )
                    t1 = time.perf_counter()
                    outcomes = await sender.deliver(signed, timeout=SECTION_DEADLINE)
                    t2 = time.perf_counter()
                    largest = receiver.stats.largest_batch
                assert len(outcomes) == count and all(o.accepted for o in outcomes)
                ledger.close()
                results[f"window_{window}"] = {
                    "transfers_per_s": round(count / (t2 - t0), 1),
                    "deliver_only_per_s": round(count / (t2 - t1), 1),
                    "prepare_ms_per_transfer": round((t1 - t0) / count * 1e3, 3),
                    "seconds": round(t2 - t0, 3),
                    "receiver_commits": commits.calls,
                    "receiver_mean_batch": round(commits.items / max(commits.calls, 1), 1),
                    "receiver_largest_batch": largest,
                    "receiver_commit_s": round(commits.seconds, 3),
                    "sender_record_outgoing_s": round(pending.seconds, 3),
                    "sender_complete_outgoing_s": round(completing.seconds, 3),
                }
        finally:
            stop.set()
            await asyncio.wait_for(listening, 10)
            await receiver.close()
            bob_ledger.close()
    return results


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


# --- driver ------------------------------------------------------------------------


def profiled(enabled: bool, name: str, run: Callable[[], Any]) -> Any:
    if not enabled:
        return run()
    profile = cProfile.Profile()
    result = profile.runcall(run)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(22)
    log(f"\n===== profile: {name} (by own time) =====\n{out.getvalue()}")
    return result


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def summarize(results: dict[str, Any]) -> dict[str, float]:
    relay, e2e, ledger = results["relay"], results["e2e"], results["ledger"]
    crypto = results["crypto"]
    out: dict[str, float] = {}
    for size in SIZES:
        bare = relay[f"bare_{size}"]["frames_per_s"]
        out[f"relay_ours_over_bare_{size}"] = ratio(relay[f"ours_{size}"]["frames_per_s"], bare)
        out[f"relay_client_over_bare_{size}"] = ratio(
            relay[f"ours_client_{size}"]["frames_per_s"], bare
        )
        out[f"channel_over_aesgcm_floor_{size}"] = ratio(
            crypto[f"channel_{size}"]["records_per_s"],
            crypto[f"aesgcm_floor_{size}"]["records_per_s"],
        )
    out["relay_rtt_p50_ours_over_bare"] = ratio(
        relay["ours_rtt_256"]["p50_ms"], relay["bare_rtt_256"]["p50_ms"]
    )
    w1 = e2e["window_1"]["transfers_per_s"]
    for key, value in e2e.items():
        if key.startswith("window_") and key != "window_1":
            out[f"e2e_{key}_over_window_1"] = ratio(value["transfers_per_s"], w1)
    out["ledger_batch_64_over_batch_1"] = ratio(
        ledger["batch_64"]["entries_per_s"], ledger["batch_1"]["entries_per_s"]
    )
    return out


def table(results: dict[str, Any], ratios: dict[str, float]) -> str:
    lines = ["", "p2ptransfer benchmarks (higher is better unless ms)", ""]
    relay = results["relay"]
    lines.append(f"relay forwarding, {relay['pairs']} pair(s), one event loop:")
    lines.append(f"  {'path':<22}{'size':>8}{'frames/s':>12}{'MB/s':>9}")
    for name in ("bare", "ours", "ours_client"):
        for size in SIZES:
            r = relay[f"{name}_{size}"]
            lines.append(f"  {name:<22}{size:>8}{r['frames_per_s']:>12.0f}{r['mb_per_s']:>9.2f}")
    for name in ("bare", "ours", "ours_client"):
        r = relay[f"{name}_rtt_256"]
        lines.append(f"  rtt {name:<18} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms")
    crypto = results["crypto"]
    lines += ["", "crypto core:", f"  handshakes/s {crypto['handshakes_per_s']:.0f}"]
    for size in SIZES:
        c, f = crypto[f"channel_{size}"], crypto[f"aesgcm_floor_{size}"]
        lines.append(
            f"  seal+open {size:>6} B  {c['records_per_s']:>9.0f} rec/s {c['mb_per_s']:>8.2f} MB/s"
            f"   (AES-GCM floor {f['records_per_s']:.0f} rec/s)"
        )
    lines.append(
        f"  transfer sign/s {crypto['transfer_sign_per_s']:.0f}  "
        f"verify/s cold {crypto['transfer_verify_cold_per_s']:.0f}, "
        f"cached {crypto['transfer_verify_cached_per_s']:.0f}"
    )
    e2e = results["e2e"]
    lines += ["", f"end to end, {e2e['transfers']} transfers, 2 peers + relay, SQLite on disk:"]
    for key, r in e2e.items():
        if key.startswith("window_"):
            lines.append(
                f"  {key:<10} {r['transfers_per_s']:>8.1f} transfers/s  "
                f"(deliver only {r['deliver_only_per_s']:.1f}/s, "
                f"prepare_many {r['prepare_ms_per_transfer']:.2f} ms each)"
            )
            lines.append(
                f"  {'':<10} receiver {r['receiver_commits']} commits (mean batch "
                f"{r['receiver_mean_batch']}, largest {r['receiver_largest_batch']}) "
                f"{r['receiver_commit_s']:.3f} s; sender ledger "
                f"{r['sender_record_outgoing_s']:.3f} s pending + "
                f"{r['sender_complete_outgoing_s']:.3f} s receipts"
            )
    ledger = results["ledger"]
    lines += ["", f"ledger, {ledger['entries']} incoming entries:"]
    for batch in (1, 64):
        r = ledger[f"batch_{batch}"]
        lines.append(f"  batch {batch:<3} {r['entries_per_s']:>9.1f} entries/s")
    lines.append(f"  verify  {ledger['verify_s_per_1000']:.3f} s per 1000 entries")
    lines += ["", "ratios:"] + [f"  {k:<40} {v}" for k, v in ratios.items()] + [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (~20 s)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON summary here")
    parser.add_argument("--profile", action="store_true", help="cProfile each section")
    parser.add_argument("--pairs", type=int, default=2, help="sender/receiver pairs (relay)")
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    log("relay forwarding ...")
    results["relay"] = profiled(
        args.profile, "relay", lambda: asyncio.run(bench_relay(args.quick, args.pairs))
    )
    log("crypto core ...")
    results["crypto"] = profiled(args.profile, "crypto", lambda: bench_crypto(args.quick))
    with tempfile.TemporaryDirectory(prefix="p2pt-bench-") as tmp:
        root = Path(tmp)
        log("end to end ...")
        results["e2e"] = profiled(
            args.profile, "e2e", lambda: asyncio.run(bench_e2e(args.quick, root))
        )
        log("ledger ...")
        results["ledger"] = profiled(args.profile, "ledger", lambda: bench_ledger(args.quick, root))
    ratios = summarize(results)
    summary = {
        "version": 1,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "ratios": ratios,
    }
    log(table(results, ratios))
    text = json.dumps(summary, sort_keys=True)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
