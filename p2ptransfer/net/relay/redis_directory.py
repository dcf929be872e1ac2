"""The cluster's handle directory in one shared Redis: :class:`RedisDirectory`.

The same rules as :class:`~.directory.Directory`: first come, first served;
only the holder releases; a claim past the per-address quota is refused.
Two nodes may take claims for one handle, or for one address's last free
place, at the same moment, so the check and the binding are one Lua script
(``EVALSHA``; Redis runs it with nothing interleaved), as they are one
transaction in SQLite.

Key layout (``P`` is the prefix, ``p2pt:`` by default)::

    P handle:H    string  the address holding handle H   (what a look-up reads: one GET)
    P handles:A   hash    handle -> claimed_at (s)        address A's handles (HLEN = its quota use)
    P stats       hash    handles                         how many handles there are (a gauge)

The per-address hash makes the quota one ``HLEN`` instead of a scan, and it
keeps the claim time that :class:`~.directory.Directory` keeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ...protocol.relay_wire import check_handle
from .directory import ClaimOutcome, ReleaseOutcome
from .mailbox import StoreUnavailable
from .redis_mailbox import DEFAULT_PREFIX

__all__ = ["RedisDirectory"]

_CLAIM = r"""
local handle_key, held_key, stats = KEYS[1], KEYS[2], KEYS[3]
local handle, address, now, quota = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local holder = redis.call("GET", handle_key)
if holder then
  if holder == address then return "yours" end
  return "taken"
end
if redis.call("HLEN", held_key) >= quota then return "quota" end
redis.call("SET", handle_key, address)
redis.call("HSET", held_key, handle, now)
redis.call("HINCRBY", stats, "handles", 1)
return "claimed"
"""

_RELEASE = r"""
local handle_key, held_key, stats = KEYS[1], KEYS[2], KEYS[3]
local handle, address = ARGV[1], ARGV[2]
local holder = redis.call("GET", handle_key)
if not holder then return "unknown" end
if holder ~= address then return "not-yours" end
redis.call("DEL", handle_key)
redis.call("HDEL", held_key, handle)
redis.call("HINCRBY", stats, "handles", -1)
return "released"
"""


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """Redis's (and the socket's) failures as :class:`StoreUnavailable`: the
    directory service refuses the request and keeps the connection."""
    try:
        yield
    except (RedisError, OSError, UnicodeError) as exc:  # OSError: ConnectionError, TimeoutError
        # UnicodeError: bytes in Redis this code never wrote (another writer, a prefix clash).
        raise StoreUnavailable(f"handle directory (Redis) could not {what}: {exc}") from exc


class RedisDirectory:
    """:class:`~.directory.HandleDirectory` over a Redis every relay node of a cluster shares.

    ``client`` must be made with ``decode_responses=False``. The directory
    does not own it: :meth:`close` leaves it open (the node shares it)
    unless ``close_client=True``. :meth:`count` serves the figure
    :meth:`refresh_figures` last read (a gauge must not wait for Redis).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        close_client: bool = False,
    ) -> None:
        self.prefix = prefix
        self._client = client
        self._close_client = close_client
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._stats = f"{prefix}stats"
        self._count = 0

    def _keys(self, handle: str, address: str) -> list[str]:
        return [f"{self.prefix}handle:{handle}", f"{self.prefix}handles:{address}", self._stats]

    async def claim(
        self, handle: str, address: str, now: int, max_per_address: int
    ) -> ClaimOutcome:
        check_handle(handle)
        with _unavailable("claim a handle"):
            reply = await self._claim(
                self._keys(handle, address), [handle, address, now, max_per_address]
            )
        return cast("ClaimOutcome", reply.decode())

    async def lookup(self, handle: str) -> str | None:
        with _unavailable("look a handle up"):
            found = await self._client.get(f"{self.prefix}handle:{handle}")
            return None if found is None else cast("bytes", found).decode("ascii")

    async def release(self, handle: str, address: str) -> ReleaseOutcome:
        check_handle(handle)
        with _unavailable("release a handle"):
            reply = await self._release(self._keys(handle, address), [handle, address])
        return cast("ReleaseOutcome", reply.decode())

    async def refresh_figures(self) -> None:
        """Read the cluster's handle count into the cache :meth:`count` serves."""
        with _unavailable("count handles"):
            value = await self._client.hget(self._stats, "handles")
        self._count = int(cast("bytes | None", value) or 0)

    def count(self) -> int:
        return self._count

    async def close(self) -> None:
        """The client stays open unless this directory was given it to close."""
        if self._close_client:
            with _unavailable("close"):
                await self._client.aclose()
