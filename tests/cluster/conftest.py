"""Cluster fixtures: one private ``redis-server`` per test session, a key prefix per test.

The session's server is shared by every cluster test (starting Redis costs
tens of milliseconds, and a session is many tests). Tests never ``FLUSHDB``:
each takes its own key prefix (``redis_prefix``), so tests stay independent,
the ``stats`` hash each store reads starts from zero, and a relay node
process still using the server is never wiped under its feet. A test that
kills or reconfigures Redis starts its own :class:`~tests.rediskit.RedisServer`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.peers import alice, bob  # noqa: F401  (fixtures, shared with tests/net)
from tests.rediskit import RedisServer, require_redis_server

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's ``redis-server`` (skips, or fails under P2PTRANSFER_REQUIRE_REDIS=1)."""
    binary = require_redis_server()
    with RedisServer(tmp_path_factory.mktemp("redis"), binary=binary) as server:
        yield server


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test of the session uses."""
    return f"test{next(_prefixes)}:"


def async_client(url: str) -> aioredis.Redis:
    """An asyncio client as a relay node makes one: bytes replies, bounded waits.

    One retry without back-off, so a lost Redis is reported in well under a
    second instead of after redis-py's default ten retries.
    """
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 1),
    )


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A fresh asyncio client of the session's server, closed after the test."""
    client = async_client(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server for this test alone (to kill, restart or reconfigure)."""
    binary = require_redis_server()
    with RedisServer(tmp_path / "redis", binary=binary) as server:
        yield server
