"""Load for the relay figures, from a process of its own (see :mod:`benchlib.procs`).

``throughput``: one pair plays ping-pong ``--rounds`` times for the round-trip
time; then ``--pairs`` sender/receiver pairs each push ``--count`` frames of
``--size`` bytes as fast as the relay takes them (see :func:`push`: the load
is kept far cheaper than the relay, so the relay is what is measured). ``idle``: hold
``--warm`` then ``--crowds`` times ``--peers`` authenticated, silent connections
for the driver to read the relay's memory between steps.

The client side is the same for both relays: websockets connections (our
relay's authenticated with a real challenge/response), frames encoded once up
front (a ``Send`` for ours, the bare payload for the bare forwarder), and
receivers that do not decode. What differs between the two runs is only the
relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from benchlib import procs, profiling
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.relay_mail_wire import MailInfo
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
    # The relay's mail limits follow AuthOk: read them, or they would be taken for the first
    # delivered frame (the push would count the wrong size, the ping-pong run one frame early).
    assert isinstance(decode_server_frame(await ws.recv()), MailInfo)  # type: ignore[arg-type]
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


def masked_frame(payload: bytes) -> bytes:
    """One complete client-to-server binary websocket frame, masked as RFC 6455 requires."""
    mask = secrets.token_bytes(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x82, 0x80 | size)
    else:
        header = struct.pack("!BBH", 0x82, 0x80 | 126, size)
    keystream = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(size)
    return header + mask + masked


def wire_size(message_size: int) -> int:
    """Bytes of an unmasked server-to-client frame carrying ``message_size`` bytes."""
    return message_size + (2 if message_size < 126 else 4 if message_size < 65536 else 10)


class ByteCounter(asyncio.Protocol):
    """Stands in for a receiving connection's protocol during a push: counts, never parses.

    Every frame of a push has the same size, so the bytes say how many have
    arrived; nothing else is sent to a receiver meanwhile (the relays' pings
    come every 20 s, and would only end a push a few bytes early).
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.expected and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"lost during the push: {exc!r}"))


async def push(pairs: list[tuple[End, End]], size: int, count: int) -> tuple[float, float]:
    """Every sender sends ``count`` frames of ``size`` bytes; (seconds, load CPU seconds).

    The load must cost less than the relay or it measures itself: each sender
    writes its ``count`` frames, framed and masked once up front, straight to
    its socket, and each receiver's protocol is swapped for a
    :class:`ByteCounter`. The relay still parses, routes and frames every
    message. The connections are unusable afterwards (the counters took their
    bytes unparsed): the caller aborts them.
    """
    payload = secrets.token_bytes(size)
    counters = []
    for (a_ws, a_frame), (b_ws, _) in pairs:  # one frame each way first: its delivered size
        await a_ws.send(a_frame(payload))
        delivered = await b_ws.recv(decode=False)
        counter = ByteCounter(wire_size(len(delivered)) * count)
        b_ws.transport.set_protocol(counter)
        b_ws.transport.resume_reading()  # websockets may have paused it (max_queue)
        counters.append(counter)
    blobs = [masked_frame(a_frame(payload)) * count for (_, a_frame), _ in pairs]
    cpu = time.process_time()
    start = time.perf_counter()
    for ((a_ws, _), _), blob in zip(pairs, blobs, strict=True):
        a_ws.transport.write(blob)
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(*[counter.done for counter in counters])
    return time.perf_counter() - start, time.process_time() - cpu


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
    """Round trips first (the connections are still whole), then the push."""
    pairs = [await pair(args.kind, args.url, n) for n in range(args.pairs)]
    return await measure(pairs, args)


async def measure(pairs: list[tuple[End, End]], args: argparse.Namespace) -> dict[str, Any]:
    """Round trips on the first pair (``--rounds``), then the push over all, on the driver's go.

    Shared by every placement of the load (one relay, a bare forwarder, two
    cluster nodes): the connections are made by the caller and closed here.
    """
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = {}
    try:
        if args.rounds:
            await ping_pong(*pairs[0], 256, max(20, args.rounds // 10))  # warm up
            rtts = sorted(await ping_pong(*pairs[0], 256, args.rounds))
            quantiles = statistics.quantiles(rtts, n=100, method="inclusive")
            result["rtt_p50_ms"] = quantiles[49] * 1e3
            result["rtt_p99_ms"] = quantiles[98] * 1e3
        # The driver reads the relay's CPU time around the push only.
        print("ready {}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        seconds, cpu = await push(pairs, args.size, args.count)
        print("pushed {}", flush=True)
    finally:
        for (a, _), (b, _) in pairs:
            a.transport.abort()
            b.transport.abort()
    frames = args.pairs * args.count
    result.update(
        frames=frames,
        seconds=seconds,
        frames_per_s=frames / seconds,
        mb_per_s=frames * args.size / seconds / 1e6,
        load_cpu_share=cpu / seconds,
    )
    return result


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
    """Open ``--warm`` connections, then ``--crowds`` times ``--peers`` more, pausing between.

    After each step it prints ``ready`` and waits for a line on stdin, so the
    driver can read the relay's memory with nothing moving.
    """
    conns: list[ClientConnection] = []
    loop = asyncio.get_running_loop()
    try:
        await hold(args.kind, args.url, args.warm, args.first, conns)
        for crowd in range(args.crowds):
            print(f"ready {json.dumps({'connections': len(conns)})}", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)  # "go"
            first = args.first + args.warm + crowd * args.peers
            await hold(args.kind, args.url, args.peers, first, conns)
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
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--crowds", type=int, default=2)
    parser.add_argument("--first", type=int, default=0, help="number of the first idle peer")
    args = parser.parse_args()
    procs.raise_open_files()  # thousands of idle sockets
    run = throughput if args.command == "throughput" else idle
    result = profiling.run(f"relay_load-{args.command}-{args.kind}", lambda: asyncio.run(run(args)))
    print(f"result {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
