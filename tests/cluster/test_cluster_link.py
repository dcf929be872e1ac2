"""A node's link to Redis under the races and failures a review found, in-process.

Each test runs real relay nodes (in this process, over real sockets) against
a real ``redis-server`` and looks at what Redis itself holds afterwards:
subscriptions (PUBSUB NUMSUB) and counters, not only what the node believes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay.redis_routes import ClusterRoutes
from p2ptransfer.net.relay.routes import route_key
from p2ptransfer.net.relay_client import Deliver, RelayClient
from tests.net.conftest import make_identity, raw_auth, raw_connect
from tests.rediskit import RedisServer

ALICE, BOB, CAROL, DAVE = (make_identity(n) for n in (71, 72, 73, 74))


@contextlib.asynccontextmanager
async def node(url: str, prefix: str, **settings: object) -> AsyncIterator[RelayServer]:
    server = RelayServer(
        RelayConfig(host="127.0.0.1", port=0, cluster=url, cluster_prefix=prefix).replace(
            **settings
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def routes_of(server: RelayServer) -> ClusterRoutes:  # type: ignore[type-arg]
    assert server.cluster is not None
    return server.cluster.routes


async def until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not so after {seconds} s: {what}")


def subscribers(redis: RedisServer, channel: bytes) -> int:
    with redis.client() as client:
        return int(client.pubsub_numsub(channel)[0][1])


async def test_leaving_and_coming_back_at_once_stays_subscribed(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """The last connection leaves and a new one arrives in the same instant: still reachable."""
    async with (
        node(redis_server.url, redis_prefix) as one,
        node(redis_server.url, redis_prefix) as two,
    ):
        channel = f"{redis_prefix}a:{ALICE.address}".encode()
        first = await RelayClient.connect(one.url, ALICE)
        await first.close()
        async with await RelayClient.connect(one.url, ALICE) as again:
            await until(lambda: not routes_of(one).link._sub_queue, "subscriptions written")
            await asyncio.sleep(0.2)  # let Redis apply both commands
            assert subscribers(redis_server, channel) == 1
            async with await RelayClient.connect(two.url, BOB) as bob:
                await bob.send(ALICE.address, b"across")
                assert await asyncio.wait_for(again.recv(), 5) == Deliver(BOB.address, b"across")


async def test_one_reader_that_does_not_read_holds_up_nobody_else(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with (
        node(redis_server.url, redis_prefix, frame_rate=0.0, byte_rate=0.0) as one,
        node(redis_server.url, redis_prefix, slow_consumer_timeout=60.0) as two,
    ):
        stuck = await raw_connect(two.url, max_queue=1)  # authenticates, then never reads
        await raw_auth(stuck, CAROL, two.url)
        async with (
            await RelayClient.connect(one.url, ALICE) as alice,
            await RelayClient.connect(two.url, BOB) as bob,
        ):
            for _ in range(400):  # far past what Carol's socket and outbox hold
                await alice.send(CAROL.address, b"x" * 4000)
            await alice.send(BOB.address, b"for bob")
            # Carol's reader would hold Bob's frame for 60 s if the node waited for her.
            assert await asyncio.wait_for(bob.recv(), 20) == Deliver(ALICE.address, b"for bob")
        stuck.transport.abort()  # a closing handshake would wait for a reader that never reads


async def test_counts_are_right_after_redis_comes_back(
    own_redis: RedisServer, redis_prefix: str
) -> None:
    """A connection that came and went while Redis was away leaves no count standing."""
    async with node(own_redis.url, redis_prefix, cluster_grace=60.0) as one:
        link = routes_of(one).link
        key = f"{redis_prefix}conns:{ALICE.address}".encode()
        async with await RelayClient.connect(one.url, ALICE):
            await until(lambda: link.queue_depth == 0, "count written")
            own_redis.kill()
            await until(lambda: not link.healthy, "link lost")
        # Alice left while Redis was away.
        await until(lambda: not one.routes.connections(ALICE.address), "alice gone")
        own_redis.restart()
        await until(lambda: link.healthy, "link back", 20)
        assert await link.total(key) == 0
        async with await RelayClient.connect(one.url, ALICE):
            await until(lambda: link.queue_depth == 0, "count written")
            assert await link.total(key) == 1


async def test_a_failed_subscription_leaves_no_ghost(
    own_redis: RedisServer, redis_prefix: str
) -> None:
    async with node(own_redis.url, redis_prefix, cluster_grace=60.0) as one:
        routes = routes_of(one)
        own_redis.kill()
        await until(lambda: not routes.link.healthy, "link lost")
        with pytest.raises(Exception, match=r"lost its cluster|503"):
            await RelayClient.connect(one.url, ALICE, open_timeout=3)
        channel = f"{redis_prefix}a:{ALICE.address}".encode()
        assert channel not in routes.link.channels
        own_redis.restart()
        await until(lambda: routes.link.healthy, "link back", 20)
        assert subscribers(own_redis, channel) == 0  # Alice is not online anywhere


async def test_a_refused_command_does_not_bring_the_link_down(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A counter key of the wrong type (a prefix clash): that count fails, nothing else."""
    with redis_server.client() as client:
        client.set(f"{redis_prefix}ip:127.0.0.1", "not a hash")
    async with (
        node(redis_server.url, redis_prefix) as one,
        node(redis_server.url, redis_prefix) as two,
    ):
        async with (
            await RelayClient.connect(one.url, ALICE) as alice,
            await RelayClient.connect(two.url, BOB) as bob,
        ):
            await alice.send(BOB.address, b"still fine")
            assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, b"still fine")
        link = routes_of(one).link
        assert link.healthy and link.reconnects == 0 and link.errors >= 1


def test_route_keys_are_the_channel_suffix() -> None:
    assert route_key(ALICE.address) == ALICE.address.encode()
