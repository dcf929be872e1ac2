"""Every relay limit hit on purpose, while a well-behaved pair keeps talking through the relay."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidStatus
from websockets.protocol import State

from p2ptransfer.errors import RelayRefused, RelayUnreachable
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay.connection import Conn
from p2ptransfer.net.relay.limits import FrameThrottle, TokenBucket
from p2ptransfer.net.relay_client import Deliver, Offline, RelayClient

from .conftest import (
    StartRelay,
    closed_with,
    make_identity,
    raw_auth,
    raw_connect,
    recv_frame,
)

ALICE, BOB, CAROL, DAVE, EVE = (make_identity(n) for n in (11, 12, 13, 14, 15))


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Poll ``condition`` (the relay updates its counters after the peer sees the close)."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


class GoodPair:
    """Alice and Bob ping-ponging through the relay until stopped; counts rounds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rounds = 0
        self.slowest = 0.0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with (
            await RelayClient.connect(self.url, ALICE) as alice,
            await RelayClient.connect(self.url, BOB) as bob,
        ):
            self.ready.set()
            loop = asyncio.get_running_loop()
            while not self._stop.is_set():
                start = loop.time()
                payload = f"ping {self.rounds}".encode()
                await alice.send(BOB.address, payload)
                assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, payload)
                await bob.send(ALICE.address, payload)
                assert await asyncio.wait_for(alice.recv(), 5) == Deliver(BOB.address, payload)
                self.rounds += 1
                self.slowest = max(self.slowest, loop.time() - start)
                await asyncio.sleep(0.005)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[GoodPair]:
        self.ready = asyncio.Event()
        task = asyncio.create_task(self.run())
        waiter = asyncio.create_task(self.ready.wait())
        await asyncio.wait({task, waiter}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()
        before = 0
        try:
            await asyncio.sleep(0.05)
            before = self.rounds
            yield self
        finally:
            await asyncio.sleep(0.1)  # the pair must still be talking after the attack
            self._stop.set()
            await asyncio.wait_for(task, 10)
        assert self.rounds > before, "the well-behaved pair stopped exchanging frames"
        assert self.slowest < 3.0


@contextlib.asynccontextmanager
async def attacked(start: StartRelay, **settings: object) -> AsyncIterator[RelayServer]:
    config = RelayConfig(port=0).replace(**settings)
    async with start(config) as server, GoodPair(server.url).running():
        yield server


async def test_oversized_frame_closes_1009(start_relay: StartRelay) -> None:
    async with attacked(start_relay) as relay:
        ws = await raw_connect(relay.url)
        await raw_auth(ws, EVE, relay.url)
        await ws.send(bytes(2 * 1024 * 1024))
        assert (await closed_with(ws))[0] == 1009
        await eventually(lambda: relay.metrics.connections_closed["frame-too-big"] == 1)


async def test_silent_connection_closes_1008(start_relay: StartRelay) -> None:
    async with attacked(start_relay, auth_timeout=0.3) as relay:
        ws = await raw_connect(relay.url)
        assert await closed_with(ws) == (1008, "authentication timeout")


async def test_flooder_is_throttled_not_dropped(start_relay: StartRelay) -> None:
    count = 120
    async with (
        attacked(start_relay, frame_rate=100.0, frame_burst=10.0) as relay,
        await RelayClient.connect(relay.url, EVE) as flooder,
        await RelayClient.connect(relay.url, CAROL) as sink,
    ):
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(count):
            await flooder.send(CAROL.address, i.to_bytes(4, "big"))
        for i in range(count):  # every frame arrives, in order: throttling loses nothing
            assert await asyncio.wait_for(sink.recv(), 5) == Deliver(
                EVE.address, i.to_bytes(4, "big")
            )
        assert loop.time() - start >= 0.9  # (120 - 10 burst) / 100 per second
        assert relay.metrics.rate_limited > 50


async def test_slow_reader_is_disconnected_1013(start_relay: StartRelay) -> None:
    settings = {
        "outgoing_frames": 8,
        "outgoing_bytes": 256 * 1024,
        "write_limit": 16 * 1024,
        "slow_consumer_timeout": 0.5,
    }
    async with attacked(start_relay, byte_rate=0.0, **settings) as relay:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.port))
        slow = await raw_connect(relay.url, sock=sock, max_queue=1)
        await raw_auth(slow, DAVE, relay.url)  # ...and then never reads again
        async with await RelayClient.connect(relay.url, EVE) as sender:
            answers: asyncio.Queue[object] = asyncio.Queue()

            async def drain() -> None:  # Eve reads her answers: she is not the slow one
                while True:
                    answers.put_nowait(await sender.recv())

            draining = asyncio.create_task(drain())
            chunk = os.urandom(60 * 1024)
            # While Dave's queue is full the relay stops reading from Eve (back-pressure);
            # after slow_consumer_timeout Dave, who never reads, is dropped.
            for _ in range(400):  # at most ~24 MB; the relay gives up long before
                await sender.send(DAVE.address, chunk)
                await asyncio.sleep(0)
                if relay.metrics.connections_closed["slow-consumer"]:
                    break
            assert relay.metrics.connections_closed["slow-consumer"] == 1
            assert relay.metrics.render().count('reason="slow-consumer"') == 2
            await sender.send(DAVE.address, b"after")  # Dave is no longer routed
            answer = await asyncio.wait_for(answers.get(), 5)
            assert isinstance(answer, Offline)
            assert answer.to == DAVE.address
            draining.cancel()
        assert (await closed_with(slow, timeout=10))[0] == 1013


async def test_senders_paused_by_a_recipient_that_leaves_resume_at_once(
    start_relay: StartRelay,
) -> None:
    """A full recipient that disconnects frees its senders now, and is no slow consumer."""
    settings = {
        "outgoing_frames": 8,
        "outgoing_bytes": 256 * 1024,
        "write_limit": 16 * 1024,
        "slow_consumer_timeout": 60.0,  # far beyond this test's patience
    }
    async with start_relay(RelayConfig(port=0, byte_rate=0.0).replace(**settings)) as relay:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.port))
        slow = await raw_connect(relay.url, sock=sock, max_queue=1)
        await raw_auth(slow, DAVE, relay.url)  # never reads
        dave = next(c for c in relay._conns if c.address == DAVE.address)
        async with await RelayClient.connect(relay.url, EVE) as sender:
            chunk = os.urandom(60 * 1024)
            for _ in range(400):  # until the relay makes Eve wait for room at Dave's
                await sender.send(DAVE.address, chunk)
                await asyncio.sleep(0.01)
                if dave.room is not None:
                    break
            assert dave.room is not None, "Eve was never paused"
            slow.transport.abort()  # Dave goes away
            await sender.send(DAVE.address, b"after")
            async with asyncio.timeout(10):  # not slow_consumer_timeout: Eve is read again
                while not isinstance(answer := await sender.recv(), Offline):
                    pass
            assert answer.to == DAVE.address
        assert relay.metrics.connections_closed["slow-consumer"] == 0


async def test_a_burst_pauses_the_sender_and_never_drops_a_reading_recipient(
    start_relay: StartRelay,
) -> None:
    """A flood into a recipient that *is* reading: back-pressure, not a 1013 for the victim."""
    async with attacked(start_relay, outgoing_frames=8, frame_rate=0.0) as relay:
        async with (
            await RelayClient.connect(relay.url, EVE) as flooder,
            await RelayClient.connect(relay.url, CAROL) as victim,
        ):
            count = 2_000
            received = 0

            async def read_slowly() -> None:
                nonlocal received
                while received < count:
                    assert await asyncio.wait_for(victim.recv(), 10) == Deliver(
                        EVE.address, received.to_bytes(4, "big")
                    )
                    received += 1
                    if received % 100 == 0:
                        await asyncio.sleep(0.01)  # slower than the flood

            reader = asyncio.create_task(read_slowly())
            for i in range(count):
                await flooder.send(CAROL.address, i.to_bytes(4, "big"))
            await asyncio.wait_for(reader, 30)
        assert received == count
        assert relay.metrics.connections_closed["slow-consumer"] == 0


@pytest.mark.parametrize(
    ("write_limit", "outgoing_frames", "count", "size"),
    [(1024, 4, 60, 60 * 1024 - 5), (16 * 1024, 64, 3000, 1000)],
    ids=["big-frames", "small-frames"],
)
async def test_a_backlog_keeps_each_senders_order_and_goes_away_when_drained(
    start_relay: StartRelay,
    write_limit: int,
    outgoing_frames: int,
    count: int,
    size: int,
) -> None:
    """Frames that do not fit the recipient's transport wait in a backlog, in order.

    Two senders, each one's frames numbered, into a reader whose socket buffer
    is tiny and who starts reading only once the relay's transport is full and
    the backlog in use (7 MB: more than the kernel's socket buffers take).
    """
    settings = {
        "write_limit": write_limit,
        "outgoing_frames": outgoing_frames,
        "outgoing_bytes": max(1 << 20, outgoing_frames * size),
        "frame_rate": 0.0,
        "byte_rate": 0.0,
    }
    queued = "p2pt_relay_outgoing_queued_bytes"
    async with attacked(start_relay, **settings) as relay:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.port))
        reader = await raw_connect(relay.url, sock=sock, max_queue=1)
        await raw_auth(reader, DAVE, relay.url)
        seen: dict[str, list[int]] = {EVE.address: [], CAROL.address: []}

        async def send_all(client: RelayClient, tag: bytes) -> None:
            for i in range(count):
                await client.send(DAVE.address, tag + i.to_bytes(4, "big") + bytes(size))

        async def read_all() -> None:
            await eventually(lambda: relay.metrics.gauges[queued][1]() > 0, within=5)
            for _ in range(2 * count):
                frame = await recv_frame(reader)
                assert isinstance(frame, Deliver)
                tag = b"E" if frame.sender == EVE.address else b"C"
                assert frame.payload[:1] == tag and len(frame.payload) == size + 5
                seen[frame.sender].append(int.from_bytes(frame.payload[1:5], "big"))

        async with (
            await RelayClient.connect(relay.url, EVE) as eve,
            await RelayClient.connect(relay.url, CAROL) as carol,
        ):
            try:
                async with asyncio.timeout(30):
                    await asyncio.gather(send_all(eve, b"E"), send_all(carol, b"C"), read_all())
            finally:
                await reader.close()
        assert seen == {EVE.address: list(range(count)), CAROL.address: list(range(count))}
        assert relay.metrics.gauges[queued][1]() == 0
        assert relay.metrics.connections_closed["slow-consumer"] == 0
        await eventually(
            lambda: not [t for t in asyncio.all_tasks() if t.get_name().startswith("relay-writer")]
        )


class _FakeConnection:
    """What the relay's outgoing path touches, with a write buffer level the test sets.

    ``wire`` records frames in the order they reach the transport; ``send``
    (the writer's path) writes, then waits until the test lets the buffer drain.
    """

    def __init__(self) -> None:
        self.wire: list[bytes] = []
        self.buffered = 0
        self.drained = asyncio.Event()
        self.send_in_progress = None
        self.protocol = self
        self.transport = self
        self.state = State.OPEN

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def send_binary(self, data: bytes) -> None:
        self.wire.append(data)

    def send_data(self) -> None:
        pass

    def data_to_send(self) -> list[bytes]:
        return []  # send_binary already put the frame on the wire

    async def send(self, data: bytes) -> None:
        self.wire.append(data)
        await self.drained.wait()


async def test_no_frame_overtakes_the_backlog() -> None:
    """Direct writes only while nothing waits in the backlog: the order is the order offered."""
    relay = RelayServer(RelayConfig(port=0, write_limit=100, outgoing_frames=3))
    ws = _FakeConnection()
    conn = Conn(cast(ServerConnection, ws), 1, "127.0.0.1", None)
    offer = relay.outbox.offer
    try:
        assert offer(conn, b"1")  # room in the transport: written at once
        assert ws.wire == [b"1"]
        ws.buffered = 100  # the transport is at its limit: frames wait
        assert offer(conn, b"2") and offer(conn, b"3")
        await asyncio.sleep(0)  # the writer writes 2 and waits for the transport to drain
        assert ws.wire == [b"1", b"2"]
        ws.buffered = 0  # room again, but 3 is still waiting: 4 goes behind it
        assert offer(conn, b"4") and offer(conn, b"5")
        assert not offer(conn, b"6")  # the backlog holds outgoing_frames (3): full
        assert conn.backlog_bytes == 3
        ws.drained.set()
        await eventually(lambda: conn.writer is None)
        assert ws.wire == [b"1", b"2", b"3", b"4", b"5"]
        assert conn.backlog is None and conn.backlog_bytes == 0  # an idle peer keeps no deque
        assert offer(conn, b"6")  # and writes directly again
        assert ws.wire[-1] == b"6"
    finally:
        await relay.directory.close()


@given(
    frame_rate=st.sampled_from([0.0, 1.0, 100.0, 500.0]),
    frame_burst=st.sampled_from([0.0, 1.0, 10.0, 1000.0]),
    byte_rate=st.sampled_from([0.0, 1000.0, 4.0 * 1024 * 1024]),
    byte_burst=st.sampled_from([1.0, 65536.0, 8.0 * 1024 * 1024]),
    steps=st.lists(st.tuples(st.floats(0, 0.5), st.integers(0, 70_000)), max_size=40),
)
def test_frame_throttle_is_a_frame_bucket_and_a_byte_bucket(
    frame_rate: float,
    frame_burst: float,
    byte_rate: float,
    byte_burst: float,
    steps: list[tuple[float, int]],
) -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    frames = TokenBucket(frame_rate, frame_burst, clock)
    sizes = TokenBucket(byte_rate, byte_burst, clock)
    throttle = FrameThrottle(frame_rate, frame_burst, byte_rate, byte_burst, clock)
    for elapsed, size in steps:
        now[0] += elapsed
        expected = max(frames.reserve(1), sizes.reserve(size))
        assert throttle.delay(size) == pytest.approx(expected, rel=1e-12, abs=1e-12)


async def test_connections_per_ip_429(start_relay: StartRelay) -> None:
    async with attacked(start_relay, max_connections_per_ip=4) as relay:
        extra = [await raw_connect(relay.url) for _ in range(2)]  # the pair holds two
        with pytest.raises(RelayUnreachable) as info:
            await RelayClient.connect(relay.url, EVE)
        assert str(info.value) == (
            f"cannot reach the relay at {relay.url}: "
            "HTTP 429 (too many connections from your address)"
        )
        for ws in extra:
            await ws.close()


async def test_connections_total_503(start_relay: StartRelay) -> None:
    async with attacked(start_relay, max_connections=3) as relay:
        extra = await raw_connect(relay.url)
        with pytest.raises(InvalidStatus) as info:
            await raw_connect(relay.url)
        assert info.value.response.status_code == 503
        assert relay.metrics.connections_refused["relay-full"] == 1
        await extra.close()


async def test_connection_rate_per_ip_429(start_relay: StartRelay) -> None:
    async with attacked(
        start_relay, connection_rate_per_ip=0.5, connection_burst_per_ip=5.0
    ) as relay:
        refused = 0
        opened = []
        for _ in range(10):
            try:
                opened.append(await raw_connect(relay.url))
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                assert exc.response.headers["Retry-After"] == "1"
                refused += 1
        assert len(opened) == 3  # burst 5, minus the pair's two
        assert refused == 7
        assert relay.metrics.rate_limited == 7
        for ws in opened:
            await ws.close()


async def test_connections_per_address_1013(start_relay: StartRelay) -> None:
    async with (
        attacked(start_relay, max_connections_per_address=2) as relay,
        await RelayClient.connect(relay.url, EVE),
        await RelayClient.connect(relay.url, EVE),
    ):
        with pytest.raises(RelayUnreachable) as info:
            await RelayClient.connect(relay.url, EVE)
        assert str(info.value) == (
            f"the relay at {relay.url} refused authentication "
            "(code 1013: too many connections for this address)"
        )


async def test_watches_per_connection(start_relay: StartRelay) -> None:
    async with (
        attacked(start_relay, max_watches=2) as relay,
        await RelayClient.connect(relay.url, EVE) as eve,
    ):
        for who in (CAROL, DAVE):
            with pytest.raises(Exception, match="did not come online"):
                await eve.wait_online(who.address, 0.05)
        with pytest.raises(RelayRefused, match="too many addresses watched at once"):
            await eve.wait_online(make_identity(99).address, 2)
        assert relay.metrics.frames_refused["too-many-watches"] == 1


async def test_peer_that_never_answers_pings_is_closed_1011(start_relay: StartRelay) -> None:
    settings = {"ping_interval": 0.2, "ping_timeout": 0.2, "close_timeout": 0.5}
    async with attacked(start_relay, **settings) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        received = b""
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):  # never answer: no pong, no auth
                received += chunk
        writer.close()
        assert received.startswith(b"HTTP/1.1 101 ")
        assert b"\x88\x18\x03\xf3keepalive ping timeout" in received
        await eventually(lambda: relay.metrics.connections_closed["ping-timeout"] == 1)


async def test_trusted_proxy_forwarded_for_is_the_client_ip(start_relay: StartRelay) -> None:
    config = RelayConfig(port=0, trusted_proxies=("127.0.0.1",), max_connections_per_ip=1)
    async with start_relay(config) as relay:

        def client(ip: str) -> dict[str, object]:
            return {"additional_headers": {"X-Forwarded-For": f"198.51.100.1, {ip}"}}

        first = await raw_connect(relay.url, **client("203.0.113.5"))
        second = await raw_connect(relay.url, **client("203.0.113.6"))  # another client
        with pytest.raises(InvalidStatus) as info:
            await raw_connect(relay.url, **client("203.0.113.5"))
        assert info.value.response.status_code == 429
        await first.close()
        await second.close()
