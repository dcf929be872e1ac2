"""Routing: which connections receive frames for an address, and who waits for it.

The relay server keeps no routing state of its own; it asks a :class:`Routes`.
The interface is what a cluster backend (one channel per connected address,
subscribed on the first local connection, unsubscribed on the last) needs to
implement again; :class:`LocalRoutes` is the one-process implementation, plain
dict operations, because the forwarding fast path looks a recipient up in
:attr:`Routes.table` once per frame (docs/performance.md).

Connections are opaque to this module except for their ``watches`` set (the
addresses a connection waits for), which lives on the connection so that an
idle peer costs no entry here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, Protocol, TypeVar

__all__ = ["LocalRoutes", "Routes", "Watcher", "route_key"]


class Watcher(Protocol):
    """What routing needs of a connection: the addresses it watches (None: none yet)."""

    watches: set[str] | None


C = TypeVar("C", bound=Watcher)


def route_key(address: str) -> bytes:
    """The routing table's key for ``address``: its bytes, as they stand in a Send's ``to``."""
    return address.encode("ascii")


class Routes(Protocol[C]):
    """Where frames for an address go; one implementation per deployment (local, cluster)."""

    @property
    def table(self) -> Mapping[bytes, tuple[C, ...]]:
        """This node's connections by :func:`route_key`, read by the forwarding fast path.

        Read-only to callers, and live: the read loop holds it for a
        connection's whole life. An address online only on another node is
        not in it; a Send to it takes the slow path, :meth:`route`.
        """
        ...

    async def subscribe(self, address: str, conn: C) -> set[C]:
        """Route ``address``'s frames to ``conn`` too; this node's watchers to tell it came.

        Returns once frames published for ``address`` anywhere reach ``conn``
        (the server sends AuthOk only then). The set is non-empty only on the
        address's first connection here (every watcher is told once; their
        watch is spent and already dropped); a cluster also tells other nodes'
        watchers itself.
        """
        ...

    def unsubscribe(self, conn: C, address: str | None) -> None:
        """Route nothing more to ``conn`` (connected as ``address``) and drop its watches.

        Synchronous (a slow consumer is dropped from a write path): whatever a
        cluster must tell Redis follows in the background.
        """
        ...

    def connections(self, address: str) -> tuple[C, ...]:
        """The local connections of ``address`` (empty if none)."""
        ...

    async def online(self, address: str) -> bool:
        """True while ``address`` has a connection anywhere (this node or another)."""
        ...

    async def address_connections(self, address: str) -> int:
        """How many connections ``address`` has, all nodes together (a cap is checked on it)."""
        ...

    async def route(self, address: str, data: bytes) -> int:
        """Deliver ``data`` to every connection of ``address``; how many took it (0: offline).

        Across nodes the count is of nodes that received it, never of sockets:
        only zero means something (the exact ``offline`` answer).
        """
        ...

    async def forward(self, address: str, data: bytes, done: Callable[[int], None]) -> None:
        """Deliver ``data`` like :meth:`route`, without waiting to learn how many took it.

        Returns once ``data`` is on its way (after waiting for room: that is
        the sender's back-pressure); ``done(count)`` follows, in order with the
        sender's other frames (a cluster learns the count a round trip later).
        """
        ...

    async def watch(self, address: str, conn: C) -> bool:
        """Tell ``conn`` (once) when ``address`` connects; ``conn.watches`` holds it meanwhile.

        True instead if ``address`` turned out to be online already (nothing is
        then registered): a cluster listens for the arrival before it looks.
        """
        ...

    # --- this node's figures, for metrics gauges ------------------------------------

    def connection_count(self) -> int:
        """Authenticated connections routed to on this node."""
        ...

    def address_count(self) -> int:
        """Distinct addresses with at least one connection on this node."""
        ...

    def watch_count(self) -> int:
        """Pending watches of this node's connections."""
        ...


class LocalRoutes(Generic[C]):
    """:class:`Routes` within one process: two dicts.

    ``deliver(conn, data)`` is the server's write-with-back-pressure; it is
    only used by :meth:`route`, the slow path (the server's read loop reads
    :attr:`table` itself for the fast one, one dict lookup per frame).
    """

    __slots__ = ("_deliver", "_watchers", "table")

    def __init__(self, deliver: Callable[[C, bytes], Awaitable[bool]]) -> None:
        self._deliver = deliver
        self.table: dict[bytes, tuple[C, ...]] = {}
        """Connections by :func:`route_key`; tuples, so a snapshot is free."""
        self._watchers: dict[str, set[C]] = {}

    async def subscribe(self, address: str, conn: C) -> set[C]:
        return self.add(address, conn)

    def add(self, address: str, conn: C) -> set[C]:
        """:meth:`subscribe`'s local half: the table entry and the local watchers it wakes."""
        key = route_key(address)
        peers = self.table.get(key)
        self.table[key] = (conn,) if peers is None else (*peers, conn)
        if peers is not None:
            return set()
        return self.take_watchers(address)

    def unsubscribe(self, conn: C, address: str | None) -> None:
        if address is not None:
            key = route_key(address)
            peers = self.table.get(key)
            if peers is not None and conn in peers:
                rest = tuple(peer for peer in peers if peer is not conn)
                if rest:
                    self.table[key] = rest
                else:
                    del self.table[key]
        if conn.watches:
            for watched in conn.watches:
                watchers = self._watchers.get(watched)
                if watchers is not None:
                    watchers.discard(conn)
                    if not watchers:
                        del self._watchers[watched]
        conn.watches = None

    def connections(self, address: str) -> tuple[C, ...]:
        return self.table.get(route_key(address), ())

    async def online(self, address: str) -> bool:
        return route_key(address) in self.table

    async def address_connections(self, address: str) -> int:
        return len(self.table.get(route_key(address), ()))

    async def route(self, address: str, data: bytes) -> int:
        delivered = 0
        for target in self.table.get(route_key(address), ()):
            if await self._deliver(target, data):
                delivered += 1
        return delivered

    async def forward(self, address: str, data: bytes, done: Callable[[int], None]) -> None:
        done(await self.route(address, data))

    async def watch(self, address: str, conn: C) -> bool:
        self.add_watch(address, conn)
        return False

    def watched(self, address: str) -> bool:
        """Whether a connection here waits for ``address``."""
        return address in self._watchers

    def take_watchers(self, address: str) -> set[C]:
        """The connections waiting for ``address``, whose watch is now spent (dropped)."""
        watchers = self._watchers.pop(address, None)
        if not watchers:
            return set()
        for watcher in watchers:
            if watcher.watches is not None:
                watcher.watches.discard(address)
        return watchers

    def add_watch(self, address: str, conn: C) -> None:
        """:meth:`watch`'s local half: remember that ``conn`` waits for ``address``."""
        if conn.watches is None:
            conn.watches = set()
        conn.watches.add(address)
        self._watchers.setdefault(address, set()).add(conn)

    # --- for metrics ------------------------------------------------------------

    def connection_count(self) -> int:
        """Authenticated connections routed to."""
        return sum(len(peers) for peers in self.table.values())

    def address_count(self) -> int:
        """Distinct addresses with at least one connection."""
        return len(self.table)

    def watch_count(self) -> int:
        """Pending watches, all connections together."""
        return sum(len(w) for w in self._watchers.values())
