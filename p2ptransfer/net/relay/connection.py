"""One relay connection and its write path: straight to the transport, else a bounded backlog.

Outgoing frames are written straight to the recipient's transport while its
write buffer is below ``write_limit``; beyond that they wait in a bounded
backlog, drained by a writer task that exists only while there is a backlog
(an idle peer costs no task, queue or event). A frame for a recipient whose
backlog is full makes the relay stop reading from the *sender* until there is
room (:meth:`Outbox.offer_waiting`: back-pressure, so a burst from one peer can
neither grow the relay's memory nor get the recipient thrown off); only a
recipient that stays full for ``slow_consumer_timeout`` is disconnected (1013).

The server's read loop inlines :meth:`Outbox.offer`'s common case (no
backlog, room in the buffer); a change to one is a change to both.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from .config import RelayConfig
from .limits import FrameThrottle, TokenBucket
from .logs import log_event
from .metrics import Metrics

__all__ = ["Conn", "Outbox"]

_OPEN = State.OPEN


class Conn:
    """One websocket connection and the relay's bookkeeping for it.

    Slotted, and what only some connections need is made on first use (the
    backlog and its writer task, the room event, the watch set): an idle peer
    should cost little beyond websockets' own state for the connection.
    """

    __slots__ = (
        "address",
        "backlog",
        "backlog_bytes",
        "cid",
        "deliver_header",
        "dropped",
        "ip",
        "lookups",
        "room",
        "throttle",
        "watch_bucket",
        "watches",
        "writer",
        "ws",
    )

    def __init__(
        self, ws: ServerConnection, cid: int, ip: str, throttle: FrameThrottle | None
    ) -> None:
        self.ws = ws
        self.cid = cid
        self.ip = ip
        self.throttle = throttle
        self.address: str | None = None
        self.deliver_header = b""
        """Every Deliver from this connection starts so (set at authentication)."""
        self.backlog: collections.deque[bytes] | None = None
        """Frames waiting for the transport's write buffer to drain; None when there are none."""
        self.backlog_bytes = 0
        self.writer: asyncio.Task[None] | None = None
        """Drains ``backlog``; exists only while there is one."""
        self.room: asyncio.Event | None = None
        """Set whenever the writer takes a frame off ``backlog`` (made for the first waiter)."""
        self.watches: set[str] | None = None
        self.watch_bucket: TokenBucket | None = None
        """Watch requests' rate (made on the first Watch)."""
        self.lookups: TokenBucket | None = None
        """Look-ups' rate (made on the first Lookup)."""
        self.dropped = False


class Outbox:
    """The write path shared by every connection of one relay: its limits, counters and drops.

    ``unroute(conn)`` is called when a connection is dropped as a slow
    consumer, so that nothing more is routed to it (the server passes its
    routes' ``unsubscribe``).
    """

    __slots__ = (
        "_metrics",
        "_unroute",
        "outgoing_bytes",
        "outgoing_frames",
        "slow_timeout",
        "write_limit",
    )

    def __init__(
        self, config: RelayConfig, metrics: Metrics, unroute: Callable[[Conn], None]
    ) -> None:
        self.write_limit = config.write_limit
        self.outgoing_frames = config.outgoing_frames
        self.outgoing_bytes = config.outgoing_bytes
        self.slow_timeout = config.slow_consumer_timeout
        self._metrics = metrics
        self._unroute = unroute

    def offer(self, conn: Conn, data: bytes) -> bool:
        """Write ``data`` to ``conn`` or add it to its backlog; False if that is full (or dropped).

        Written at once while the backlog is empty and the transport's write
        buffer is below ``write_limit`` (every earlier frame is then already in
        the transport, so order is kept); otherwise queued behind the backlog.
        The direct write is websockets' ``broadcast`` to one connection: the
        same frame bytes as ``ws.send`` without its wait for the buffer to
        drain, which the backlog and ``write_limit`` stand in for; it is half
        the cost of ``await ws.send``, which matters on the path every
        forwarded frame takes. A connection that is closing takes the frame
        and discards it, as its writer would have.
        """
        if conn.dropped:
            return False
        ws = conn.ws
        if ws.protocol.state is not _OPEN:
            return True
        backlog = conn.backlog
        if not backlog:
            if ws.transport.get_write_buffer_size() < self.write_limit:
                broadcast((ws,), data)
                return True
            if backlog is None:
                backlog = conn.backlog = collections.deque()
        elif (
            len(backlog) >= self.outgoing_frames
            or conn.backlog_bytes + len(data) > self.outgoing_bytes
        ):
            return False
        backlog.append(data)
        conn.backlog_bytes += len(data)
        if conn.writer is None:
            conn.writer = asyncio.create_task(
                self._write_backlog(conn, backlog), name=f"relay-writer-{conn.cid}"
            )
        return True

    def push(self, conn: Conn, data: bytes) -> None:
        """Offer ``data`` without waiting; a full connection is dropped.

        For frames not caused by a frame being read (challenge, AuthOk, Online
        notices to watchers), where there is no sender to slow down.
        """
        if not self.offer(conn, data) and not conn.dropped:
            self.drop_slow(conn)

    async def offer_waiting(self, conn: Conn, data: bytes) -> bool:
        """Offer ``data``, waiting (and so pausing the sender) while ``conn`` is full.

        A recipient still full after ``slow_consumer_timeout`` is not reading:
        it is dropped (1013) and the frame counts as undelivered.
        """
        if self.offer(conn, data):
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.slow_timeout
        while not conn.dropped:
            room = conn.room
            if room is None:
                room = conn.room = asyncio.Event()
            room.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await room.wait()
            except TimeoutError:
                self.drop_slow(conn)
                return False
            if self.offer(conn, data):
                return True
        return False

    async def _write_backlog(self, conn: Conn, backlog: collections.deque[bytes]) -> None:
        """Drain ``backlog`` in order; ``ws.send`` waits while the transport is over its limit."""
        try:
            while backlog:
                data = backlog.popleft()
                conn.backlog_bytes -= len(data)
                if conn.room is not None:
                    conn.room.set()
                await conn.ws.send(data)
        except ConnectionClosed:
            pass
        finally:
            if conn.writer is asyncio.current_task():
                conn.writer = None
            if conn.backlog is backlog and not backlog:
                conn.backlog = None  # an idle peer keeps no deque

    def drop_slow(self, conn: Conn) -> None:
        """Close ``conn`` with 1013: its outgoing backlog stayed full."""
        if conn.dropped:
            return
        conn.dropped = True
        self._metrics.connections_closed["slow-consumer"] += 1
        self._metrics.frames_refused["slow-consumer"] += 1
        log_event(
            logging.INFO,
            "close",
            "slow consumer: outgoing queue full",
            conn=conn.cid,
            address=conn.address or "-",
            code=int(CloseCode.TRY_AGAIN_LATER),
        )
        self._unroute(conn)  # nothing more is routed to it from now on
        self.stop(conn)
        closing = asyncio.create_task(
            conn.ws.close(CloseCode.TRY_AGAIN_LATER, "slow consumer: outgoing queue full"),
            name=f"relay-drop-{conn.cid}",
        )
        closing.add_done_callback(_ignore_result)

    @staticmethod
    def stop(conn: Conn) -> None:
        """Cancel the writer and forget the backlog: nothing more is written to ``conn``.

        Senders waiting for room in it stop waiting: it is gone.
        """
        if conn.writer is not None:
            conn.writer.cancel()
            conn.writer = None
        if conn.backlog is not None:
            conn.backlog.clear()
            conn.backlog = None
        conn.backlog_bytes = 0
        if conn.room is not None:
            conn.room.set()


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
