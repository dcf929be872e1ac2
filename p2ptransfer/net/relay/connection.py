"""One relay connection and its write path: one socket write per turn, else a bounded backlog.

Outgoing frames are framed into the recipient's websocket protocol object at
once, and written to its transport by one flush at the end of the event-loop
turn (:meth:`Outbox.write`): a burst of frames read in one turn costs one
``send`` syscall per recipient instead of one per frame. This holds while the
transport's write buffer plus the frames waiting for the flush stay below
``write_limit``; beyond that frames wait in a bounded backlog, drained by a
writer task that exists only while there is a backlog (an idle peer costs no
task, queue or event). A frame for a recipient whose backlog is full makes the
relay stop reading from the *sender* until there is room
(:meth:`Outbox.offer_waiting`: back-pressure, so a burst from one peer can
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

from websockets.asyncio.server import ServerConnection
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
        "unflushed",
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
        self.unflushed = 0
        """Bytes framed in the protocol object, waiting for this turn's flush (0: none)."""
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
        "_dirty",
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
        self._dirty: list[Conn] = []
        """Connections with frames waiting for the flush scheduled for the end of this turn."""

    def offer(self, conn: Conn, data: bytes) -> bool:
        """Write ``data`` to ``conn`` or add it to its backlog; False if that is full (or dropped).

        Written at once (:meth:`write`) while the backlog is empty and the
        transport's write buffer plus what waits for this turn's flush is
        below ``write_limit`` (every earlier frame is then already in the
        protocol object or the transport, so order is kept); otherwise queued
        behind the backlog. A connection that is closing takes the frame and
        discards it, as its writer would have.
        """
        if conn.dropped:
            return False
        ws = conn.ws
        if ws.protocol.state is not _OPEN:
            return True
        backlog = conn.backlog
        if not backlog:
            if ws.transport.get_write_buffer_size() + conn.unflushed < self.write_limit:
                self.write(conn, data)
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

    def write(self, conn: Conn, data: bytes) -> None:
        """Frame ``data`` for ``conn`` now; its bytes reach the socket at the end of this turn.

        The caller has checked the room (backlog empty, buffer + ``unflushed``
        below ``write_limit``). Framing goes through websockets' protocol
        object, so anything websockets writes itself meanwhile (a pong, a close
        frame) flushes these frames first and order is kept; one callback per
        turn then writes what is left for every connection, one ``write`` each.
        A connection that is no longer open discards the frame, as
        ``broadcast`` would.
        """
        ws = conn.ws
        protocol = ws.protocol
        if protocol.state is not _OPEN:
            return
        protocol.send_binary(data)
        if not conn.unflushed:
            dirty = self._dirty
            if not dirty:
                asyncio.get_running_loop().call_soon(self._flush)
            dirty.append(conn)
        conn.unflushed += len(data)

    def _flush(self) -> None:
        """Write every waiting connection's framed bytes, joined: one socket write each."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.unflushed = 0
            ws = conn.ws
            try:
                if ws.protocol.state is _OPEN:
                    writes = ws.protocol.data_to_send()
                    if writes:
                        ws.transport.write(writes[0] if len(writes) == 1 else b"".join(writes))
                else:  # closing: websockets' own path knows about the end of the stream
                    ws.send_data()
            except Exception as exc:  # one broken transport must not keep the others waiting
                log_event(logging.DEBUG, "write", f"flush failed: {exc}", conn=conn.cid)

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
        """Drain ``backlog`` in order.

        While the transport has room, frames move to the protocol object in a
        run (one flush writes them all, as on the direct path); without room,
        ``ws.send`` writes one and waits for the transport to drain.
        """
        ws = conn.ws
        transport = ws.transport
        limit = self.write_limit
        try:
            while backlog:
                if ws.protocol.state is not _OPEN:
                    break
                data = backlog.popleft()
                conn.backlog_bytes -= len(data)
                if conn.room is not None:
                    conn.room.set()
                if transport.get_write_buffer_size() + conn.unflushed < limit:
                    self.write(conn, data)
                else:
                    await ws.send(data)
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
