""":class:`~.routes.Routes` for a relay cluster: one Redis channel per connected address.

A node subscribes to ``PREFIX a:ADDRESS`` when the address gets its first
connection here, and waits for Redis's confirmation before the server tells
the peer it is authenticated; from then on a frame published for it anywhere
reaches this node. It unsubscribes when the address's last connection here
goes. There is no address-to-node map to go stale: a node that dies takes
its subscriptions with it.

A frame for an address with a connection on this node goes there directly,
exactly as on a single relay; only a frame for an address with no local
connection is published, and PUBLISH's receiver count keeps the exact
``offline`` answer (0: no node has it). So an address connected to two nodes
at once gets a frame on the sender's node if it has a connection there, else
on every node that has one.

Presence: ``online`` asks Redis how many nodes subscribe to the address's
channel. A watch subscribes this node to ``PREFIX w:ADDRESS`` *before*
looking, and a node announces an address's first connection on that channel,
so an arrival between the look and the subscription is never missed (a
watcher may hear of it twice; the second is dropped, its watch being spent).

Frames from Redis go into the per-connection outboxes in the order they
came. A connection whose outbox is full gets an overflow queue of its own
(up to ``outgoing-bytes``) drained by a task, so a reader slower than a burst
holds up nobody and loses nothing; one that fills even that, or stays full
for ``slow-consumer-timeout``, is dropped as a slow consumer (1013), as on a
single relay. The node's one reader of Redis never waits for a connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic

from ...protocol.relay_wire import Online
from .redis_link import ClusterLink, ClusterUnavailable
from .routes import C, LocalRoutes, route_key

__all__ = ["ClusterRoutes"]


class ClusterRoutes(Generic[C]):
    """Local routing plus a :class:`~.redis_link.ClusterLink` for every other node.

    ``offer(conn, data)`` writes without waiting (False: the outbox is full),
    ``offer_waiting`` waits for room (False: the connection was dropped) and
    ``push`` writes a notice nobody waits for: the server's outbox methods.
    """

    def __init__(
        self,
        link: ClusterLink,
        *,
        offer: Callable[[C, bytes], bool],
        offer_waiting: Callable[[C, bytes], Awaitable[bool]],
        push: Callable[[C, bytes], None],
        drop: Callable[[C], None],
        overflow_frames: int = 4096,
        overflow_bytes: int = 1 << 20,
    ) -> None:
        self.link = link
        self.local: LocalRoutes[C] = LocalRoutes(offer_waiting)
        self._offer = offer
        self._offer_waiting = offer_waiting
        self._push = push
        self._drop = drop
        self._overflow_frames = overflow_frames
        self._overflow_bytes = overflow_bytes
        self._overflows: dict[C, _Overflow] = {}
        self._joining: dict[bytes, int] = {}
        """Channels with a subscription under way, and how many wait for it (see subscribe)."""
        prefix = link.prefix.encode()
        self._address_prefix = prefix + b"a:"
        self._watch_prefix = prefix + b"w:"
        self._count_prefix = prefix + b"conns:"
        self.dropped_frames = 0
        """Frames from Redis not delivered: the address just left, or its reader was dropped."""

    # --- the Routes interface -------------------------------------------------------

    @property
    def table(self) -> Mapping[bytes, tuple[C, ...]]:
        return self.local.table

    async def subscribe(self, address: str, conn: C) -> set[C]:
        key = route_key(address)
        channel = self._address_prefix + key
        first = key not in self.local.table
        if first:
            await self._join(channel)
            first = key not in self.local.table  # another connection may have won the race
        watchers = self.local.add(address, conn)
        self.link.add_count(self._count_prefix + key, 1)
        if first:
            # Other nodes' watchers of this address: told through its watch channel.
            self.link.publish(self._watch_prefix + key, b"", _ignore)
            self._stop_watching(address)
        return watchers

    def unsubscribe(self, conn: C, address: str | None) -> None:
        was_routed = address is not None and conn in self.local.connections(address)
        watched = set(conn.watches or ())
        self.local.unsubscribe(conn, address)
        self._overflows.pop(conn, None)
        if was_routed and address is not None:
            key = route_key(address)
            self.link.add_count(self._count_prefix + key, -1)
            if key not in self.local.table:
                self._leave(self._address_prefix + key)
        for gone in watched:
            self._stop_watching(gone)

    async def _join(self, channel: bytes) -> None:
        """Subscribe to ``channel`` (once for everyone asking at the same time).

        Whoever joins while a subscription is under way waits for that one;
        ``_joining`` also keeps a leaving connection from unsubscribing a
        channel that a newcomer is about to use. On failure the channel is
        left again unless somebody here still uses it.
        """
        self._joining[channel] = self._joining.get(channel, 0) + 1
        try:
            if channel not in self.link.channels:
                await self.link.subscribe(channel)
            else:
                await self.link.confirmed(channel)
        except BaseException:
            self._joining[channel] -= 1
            if not self._joining[channel]:
                del self._joining[channel]
            self._leave(channel)
            raise
        self._joining[channel] -= 1
        if not self._joining[channel]:
            del self._joining[channel]

    def _leave(self, channel: bytes) -> None:
        """Unsubscribe from ``channel`` unless a connection here uses it or is joining it."""
        if channel in self._joining or channel not in self.link.channels:
            return
        if channel.startswith(self._address_prefix):
            if channel[len(self._address_prefix) :] in self.local.table:
                return
        elif self.local.watched(channel[len(self._watch_prefix) :].decode("ascii", "replace")):
            return
        self.link.unsubscribe(channel)

    def _stop_watching(self, address: str) -> None:
        """Leave ``address``'s watch channel if no connection here waits for it any more."""
        self._leave(self._watch_prefix + route_key(address))

    def connections(self, address: str) -> tuple[C, ...]:
        return self.local.connections(address)

    async def online(self, address: str) -> bool:
        if self.local.connections(address):
            return True
        if not self.link.healthy:
            return False
        return await self.link.receivers(self._address_prefix + route_key(address)) > 0

    async def address_connections(self, address: str) -> int:
        if not self.link.healthy:
            return len(self.local.connections(address))
        return await self.link.total(self._count_prefix + route_key(address))

    async def route(self, address: str, data: bytes) -> int:
        received: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def done(count: int) -> None:
            if not received.done():  # the caller may have been cancelled meanwhile
                received.set_result(count)

        await self.forward(address, data, done)
        return await received

    async def forward(self, address: str, data: bytes, done: Callable[[int], None]) -> None:
        if self.local.connections(address):
            done(await self.local.route(address, data))
            return
        await self.link.wait_room()
        self.publish(route_key(address), data, done)

    def publish(self, key: bytes, data: bytes, done: Callable[[int], None]) -> bool:
        """The relay's fast path for an address with no connection here (``key``: its bytes).

        ``data`` goes to the other nodes as it is; ``done(count)`` follows. False
        if the publish queue is now full: the caller waits for :meth:`wait_room`
        before reading on (back-pressure on the sender).
        """
        link = self.link
        link.publish(self._address_prefix + key, data, done)
        return link.has_room()

    async def wait_room(self) -> None:
        await self.link.wait_room()

    async def watch(self, address: str, conn: C) -> bool:
        channel = self._watch_prefix + route_key(address)
        self._joining[channel] = self._joining.get(channel, 0) + 1
        try:
            if not self.local.watched(address):
                # Without Redis a local watch still works; other nodes' arrivals are missed.
                with contextlib.suppress(ClusterUnavailable):
                    await self._join(channel)
            online = await self.online(address)
            if not online:
                self.local.add_watch(address, conn)
        finally:
            self._joining[channel] -= 1
            if not self._joining[channel]:
                del self._joining[channel]
        if online:
            self._stop_watching(address)
        return online

    def connection_count(self) -> int:
        return self.local.connection_count()

    def address_count(self) -> int:
        return self.local.address_count()

    def watch_count(self) -> int:
        return self.local.watch_count()

    # --- frames from Redis --------------------------------------------------------

    def on_message(self, channel: bytes, data: bytes) -> None:
        """A frame another node published (the subscriber reader calls this, in order).

        Never waits: the reader is shared by every connection of the node, so
        one connection that does not read must not hold up the others. A
        connection whose outbox is full gets an overflow queue (bounded like an
        outbox, in bytes and frames); one that fills even that is dropped as a
        slow consumer (1013) and its sessions retry elsewhere.
        """
        if channel.startswith(self._address_prefix):
            targets = self.local.table.get(channel[len(self._address_prefix) :])
            if not targets:
                self.dropped_frames += 1  # the address just left this node
                return
            for target in targets:
                self._deliver(target, data)
        elif channel.startswith(self._watch_prefix):
            address = channel[len(self._watch_prefix) :].decode("ascii", "replace")
            watchers = self.local.take_watchers(address)
            if watchers:
                online = Online(address).encode()
                for watcher in watchers:
                    self._push(watcher, online)
            self._stop_watching(address)

    def _deliver(self, conn: C, data: bytes) -> None:
        overflow = self._overflows.get(conn)
        if overflow is None:
            if self._offer(conn, data):
                return
            overflow = self._overflows[conn] = _Overflow()
            task = asyncio.ensure_future(self._drain(conn, overflow))
            task.add_done_callback(_quiet)
        if (
            len(overflow.frames) >= self._overflow_frames
            or overflow.size + len(data) > self._overflow_bytes
        ):
            self.dropped_frames += 1 + len(overflow.frames)
            overflow.frames.clear()
            self._overflows.pop(conn, None)
            self._drop(conn)
            return
        overflow.frames.append(data)
        overflow.size += len(data)

    async def _drain(self, conn: C, overflow: _Overflow) -> None:
        """Feed ``conn``'s outbox from its overflow, in order, as room appears."""
        frames = overflow.frames
        try:
            while frames:
                if not await self._offer_waiting(conn, frames[0]):
                    self.dropped_frames += len(frames)  # dropped as a slow consumer
                    frames.clear()
                    return
                overflow.size -= len(frames.popleft())
        finally:
            if self._overflows.get(conn) is overflow:
                del self._overflows[conn]


class _Overflow:
    """Frames from other nodes waiting for a connection's outbox."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: collections.deque[bytes] = collections.deque()
        self.size = 0


def _ignore(receivers: int) -> None:
    """A watch announcement's receiver count: nobody needs it."""


def _quiet(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
