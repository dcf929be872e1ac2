"""Every relay limit hit on purpose, while a well-behaved pair keeps talking through the relay."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.exceptions import InvalidStatus

from p2ptransfer.errors import RelayRefused, RelayUnreachable
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import Deliver, Offline, RelayClient

from .conftest import StartRelay, closed_with, make_identity, raw_auth, raw_connect

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
