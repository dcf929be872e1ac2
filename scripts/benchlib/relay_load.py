"""Load for the relay figures, from a process of its own (see :mod:`benchlib.procs`).

``throughput``: ``--pairs`` sender/receiver pairs each push ``--count`` frames
of ``--size`` bytes as fast as websockets' flow control allows; then one pair
plays ping-pong ``--rounds`` times for the round-trip time. ``idle``: hold
``--warm`` then ``--peers`` authenticated, silent connections for the
driver to read the relay's memory.

The client side is the same for both relays: raw websockets connections
sending a frame encoded once up front (a ``Send`` for ours, the bare payload
for the bare forwarder), and receivers that count messages without decoding
them. What differs between the two runs is only the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from benchlib import profiling
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.relay_wire import (
    MAX_FRAME_SIZE,
    AuthOk,
    Challenge,
    Send,
    decode_server_frame,
    make_auth,
)

DEADLINE = 90.0  # no measurement in this worker may take longer, whatever the machine
CLIENT_OPTIONS: dict[str, Any] = {
    "compression": None,
    "max_size": MAX_FRAME_SIZE,
    "max_queue": 16,
    "open_timeout": 30,
    "close_timeout": 2,
    "ping_interval": None,  # the measured side keeps its keepalive; the load needs none
    "proxy": None,
}
Frame = Callable[[bytes], bytes]
End = tuple[ClientConnection, Frame]
"""A connected client and how it frames a payload for its partner."""


async def authenticated(url: str, identity: Identity) -> ClientConnection:
    """A connection to our relay, authenticated as ``identity``."""
    ws = await connect(url, **CLIENT_OPTIONS)
    challenge = decode_server_frame(await ws.recv())  # type: ignore[arg-type]
    assert isinstance(challenge, Challenge)
    await ws.send(make_auth(identity, url, challenge.challenge).encode())
    assert decode_server_frame(await ws.recv()) == AuthOk(identity.address)  # type: ignore[arg-type]
    return ws


async def introduced(url: str, me: str, partner: str) -> ClientConnection:
    """A connection to the bare forwarder, routed to ``partner``."""
    ws = await connect(url, **CLIENT_OPTIONS)
    await ws.send(f"{me}|{partner}".encode())
    assert await ws.recv() == b"ok"
    return ws


async def pair(kind: str, url: str, n: int) -> tuple[End, End]:
    """Two connected ends and, for each, how a payload is framed to reach the other."""
    if kind == "bare":
        a = await introduced(url, f"a{n}", f"b{n}")
        b = await introduced(url, f"b{n}", f"a{n}")
        return (a, lambda p: p), (b, lambda p: p)
    ids = [Identity(secrets.token_bytes(32)) for _ in range(2)]
    a, b = [await authenticated(url, identity) for identity in ids]
    to_a, to_b = ids[0].address, ids[1].address
    return (a, lambda p: Send(1, to_b, p).encode()), (b, lambda p: Send(1, to_a, p).encode())


async def push(pairs: list[tuple[End, End]], size: int, count: int) -> float:
    """Every sender sends ``count`` frames; seconds until every receiver has them all."""
    payload = secrets.token_bytes(size)

    async def sender(ws: ClientConnection, frame: Frame) -> None:
        data = frame(payload)
        for _ in range(count):
            await ws.send(data)

    async def receiver(ws: ClientConnection) -> None:
        for _ in range(count):
            await ws.recv(decode=False)

    start = time.perf_counter()
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(*[sender(*a) for a, _ in pairs], *[receiver(b[0]) for _, b in pairs])
    return time.perf_counter() - start


async def ping_pong(a: End, b: End, size: int, rounds: int) -> list[float]:
    payload = secrets.token_bytes(size)
    (a_ws, a_frame), (b_ws, b_frame) = a, b
    to_b, to_a = a_frame(payload), b_frame(payload)

    async def echo() -> None:
        for _ in range(rounds):
            await b_ws.recv(decode=False)
            await b_ws.send(to_a)

    echoing = asyncio.create_task(echo())
    rtts: list[float] = []
    async with asyncio.timeout(DEADLINE):
        for _ in range(rounds):
            start = time.perf_counter()
            await a_ws.send(to_b)
            await a_ws.recv(decode=False)
            rtts.append(time.perf_counter() - start)
        await echoing
    return rtts


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [await pair(args.kind, args.url, n) for n in range(args.pairs)]
    loop = asyncio.get_running_loop()
    try:
        await push(pairs, args.size, max(10, args.count // 10))  # warm up
        # The driver reads the relay's CPU time around the measured push only.
        print("ready {}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        seconds = await push(pairs, args.size, args.count)
        print("pushed {}", flush=True)
        await ping_pong(*pairs[0], 256, max(20, args.rounds // 10))  # warm up
        rtts = sorted(await ping_pong(*pairs[0], 256, args.rounds))
    finally:
        for (a, _), (b, _) in pairs:
            await a.close()
            await b.close()
    frames = args.pairs * args.count
    quantiles = statistics.quantiles(rtts, n=100, method="inclusive")
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "mb_per_s": frames * args.size / seconds / 1e6,
        "rtt_p50_ms": quantiles[49] * 1e3,
        "rtt_p99_ms": quantiles[98] * 1e3,
    }


async def hold(kind: str, url: str, count: int, start: int, into: list[ClientConnection]) -> None:
    """Open ``count`` idle connections (authenticated / introduced), 64 at a time."""
    gate = asyncio.Semaphore(64)

    async def one(n: int) -> None:
        async with gate:
            if kind == "bare":
                into.append(await introduced(url, f"idle{n}", f"nobody{n}"))
            else:
                into.append(await authenticated(url, Identity(secrets.token_bytes(32))))

    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(*[one(n) for n in range(start, start + count)])


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    conns: list[ClientConnection] = []
    loop = asyncio.get_running_loop()
    try:
        await hold(args.kind, args.url, args.warm, 0, conns)
        print(f"ready {json.dumps({'connections': len(conns)})}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        await hold(args.kind, args.url, args.peers, args.warm, conns)
        print(f"ready {json.dumps({'connections': len(conns)})}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    finally:
        await asyncio.gather(*[ws.close() for ws in conns], return_exceptions=True)
    return {"connections": len(conns)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchlib.relay_load")
    parser.add_argument("command", choices=["throughput", "idle"])
    parser.add_argument("--kind", choices=["ours", "bare"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--peers", type=int, default=2000)
    args = parser.parse_args()
    run = throughput if args.command == "throughput" else idle
    result = profiling.run(f"relay_load-{args.command}-{args.kind}", lambda: asyncio.run(run(args)))
    print(f"result {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
