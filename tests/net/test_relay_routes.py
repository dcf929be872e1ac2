"""LocalRoutes: the one-process routing table behind the relay (no network needed)."""

from __future__ import annotations

from p2ptransfer.net.relay.routes import LocalRoutes, Routes, route_key


class Conn:
    """A stand-in connection: routing only reads and writes ``watches``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.watches: set[str] | None = None
        self.got: list[bytes] = []


async def _deliver(conn: Conn, data: bytes) -> bool:
    conn.got.append(data)
    return True


async def test_subscribe_route_unsubscribe_and_watchers() -> None:
    routes: LocalRoutes[Conn] = LocalRoutes(_deliver)
    implements: Routes[Conn] = routes  # the interface a cluster backend implements too
    a1, a2, w = Conn("a1"), Conn("a2"), Conn("w")
    assert not await implements.watch("alice", w)
    assert w.watches == {"alice"} and routes.watch_count() == 1
    assert await routes.subscribe("alice", a1) == {w}  # first connection: watchers told once
    assert w.watches == set() and routes.watch_count() == 0
    assert await routes.subscribe("alice", a2) == set()
    assert routes.table[route_key("alice")] == (a1, a2)
    assert await routes.online("alice") and routes.connections("alice") == (a1, a2)
    assert await routes.address_connections("alice") == 2
    assert await routes.route("alice", b"x") == 2 and a1.got == a2.got == [b"x"]
    assert await routes.route("bob", b"x") == 0
    routes.unsubscribe(a1, "alice")
    assert routes.connections("alice") == (a2,)
    routes.unsubscribe(a2, "alice")
    assert not await routes.online("alice") and routes.address_count() == 0
    await routes.watch("bob", w)
    routes.unsubscribe(w, None)  # a closing watcher leaves nothing behind
    assert routes.watch_count() == 0 and w.watches is None
