"""The rendezvous relay server: authenticate addresses, route opaque frames, stay fair.

One connection's life::

    HTTP request --process_request--> 503/429 (over a limit), 200 (/healthz, /metrics)
        | upgrade
    UNAUTHENTICATED: relay sends Challenge; the first frame must be a valid Auth
        | AuthOk                      (bad/late/other frame -> close 1008 or 1003)
        | MailInfo, then every Mail waiting for the address (mail.py)
    AUTHENTICATED: Send / Watch / Claim / Lookup / Release / mail requests until either side closes
        | rate limit (Refused, then 1008), slow reader (1013), shutdown (1001)
    CLOSED: the address is unregistered; watches dropped

Outgoing frames go through the relay's :class:`~.connection.Outbox`: straight
to the transport, else a bounded backlog, with back-pressure on the sender and
a 1013 for a recipient that stays full (connection.py). Frames to an address go
to *every* authenticated connection of that address (up to
``max_connections_per_address``): a user may run ``listen`` and ``send`` with
the same identity at once, and the peer runtime tells sessions apart by a tag
inside the opaque payload.

The hot path, a Send to an online address, neither decodes nor re-encodes:
:func:`~p2ptransfer.protocol.relay_wire.send_recipient` checks the layout and
yields the recipient's address bytes, which are looked up as they are in the
routing table (only canonical, authenticated addresses are in it), and the
Deliver is the sender's precomputed header plus the Send's tail. Anything else
(other frames, unknown recipients, malformed bytes) takes the full decoder,
which answers Offline or closes 1008 exactly as before.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import ssl
import sys
from typing import TYPE_CHECKING

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request

from ...errors import DecodeError, ProtocolError
from ...protocol.relay_wire import (
    SEND_OVERHEAD,
    Auth,
    AuthOk,
    Challenge,
    ClientFrame,
    Deliver,
    Offline,
    Online,
    Send,
    decode_client_frame,
    deliver_from_send,
    deliver_header,
    send_recipient,
    verify_auth,
)
from .config import RelayConfig
from .connection import Conn, Outbox
from .directory import Directory, HandleDirectory
from .http import HttpFront, client_ip
from .limits import FrameThrottle
from .logs import log_event
from .mail import MAIL_REQUESTS, MailService, open_store
from .mailbox import AsyncMailStore, StoreUnavailable
from .metrics import Metrics
from .routes import LocalRoutes, Routes
from .services import Services

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["RelayServer"]

_MAX_REASON_BYTES = 123
_SELF_CLOSES: dict[int, str] = {
    CloseCode.MESSAGE_TOO_BIG: "frame-too-big",
    CloseCode.INTERNAL_ERROR: "ping-timeout",
}  # RFC 6455: a close reason fits in a 125-byte control frame


_UPGRADED = Request("/", Headers())
"""Stands in for every open connection's handshake request (see ``_handler``)."""


class _Close(Exception):
    """Raised inside a handler to close its connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.metric = metric


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _truncate(reason: str) -> str:
    raw = reason.encode("utf-8")[:_MAX_REASON_BYTES]
    return raw.decode("utf-8", errors="ignore")


class RelayServer:
    """An asyncio relay; ``await start()``, read ``url``, ``await close()``."""

    def __init__(self, config: RelayConfig | None = None) -> None:
        self.config = cfg = config or RelayConfig()
        self.metrics = Metrics()
        self._server: Server | None = None
        self._metrics_server: asyncio.Server | None = None
        self._metrics_port = 0
        self._conns: set[Conn] = set()
        self.outbox = Outbox(cfg, self.metrics, self._unroute)
        """Every connection's write path (connection.py)."""
        self.cluster: Cluster | None = None
        """This node's cluster membership (cluster.py), with ``--cluster``."""
        self._cut_off: asyncio.Task[None] | None = None
        mail_store: AsyncMailStore
        if cfg.cluster is None:
            self.routes: Routes[Conn] = LocalRoutes(self.outbox.offer_waiting)
            self.directory: HandleDirectory = Directory(cfg.data_dir)
            mail_store = open_store(cfg)
        else:
            from .cluster import Cluster  # only now: redis is an optional extra

            self.cluster = Cluster(cfg, self.metrics, self.outbox, on_health=self._on_cluster)
            self.routes = self.cluster.routes
            self.directory = self.cluster.directory
            mail_store = self.cluster.mail_store
        # routes: who receives frames for an address, and who waits for it (routes.py);
        # directory: handles -> addresses (directory.py).
        self.http = HttpFront(
            cfg,
            self.metrics,
            open_connections=lambda: len(self._conns),
            closing=lambda: self._closing,
            cluster=self.cluster,
        )
        """Health, metrics and refusals before the upgrade (http.py)."""
        self.services = Services(cfg, self.metrics, self.directory, self.routes)
        """Watch, Claim, Release and Lookup requests (services.py)."""
        self.mail = MailService(cfg, self.metrics, mail_store, self.routes, self.outbox)
        """Prekeys, deposits, pushes and acknowledgements (mail.py, mailbox.py)."""
        self._sweeper: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._accepted_urls: frozenset[str] = frozenset()
        self._closing = False
        self._port = 0
        m = self.metrics
        m.gauge("p2pt_relay_connections", "Open WebSocket connections.", lambda: len(self._conns))
        m.gauge(
            "p2pt_relay_authenticated_peers",
            "Authenticated connections.",
            self.routes.connection_count,
        )
        m.gauge(
            "p2pt_relay_addresses_online",
            "Distinct addresses with at least one connection.",
            self.routes.address_count,
        )
        m.gauge(
            "p2pt_relay_watches",
            "Pending Watch requests.",
            self.routes.watch_count,
        )
        m.gauge(
            "p2pt_relay_outgoing_queued_bytes",
            "Bytes waiting in per-connection outgoing queues.",
            lambda: sum(c.backlog_bytes for c in self._conns),
        )
        m.gauge("p2pt_relay_handles", "Handles in the directory.", self.directory.count)

    # --- lifecycle ----------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with ``port=0``)."""
        return self._port

    @property
    def metrics_port(self) -> int:
        """The separate metrics listener's port (0 when /metrics is on the relay's own port)."""
        return self._metrics_port

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` (or ``wss://``) of the bound socket."""
        host = self.config.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.config.scheme}://{host}:{self._port}"

    @property
    def accepted_urls(self) -> frozenset[str]:
        """The normalised URLs an Auth may be signed for."""
        return self._accepted_urls

    async def start(self) -> None:
        """Bind and start accepting; returns once the socket listens."""
        cfg = self.config
        if self.cluster is not None:
            await self.cluster.start()
        ssl_context: ssl.SSLContext | None = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        self._server = await serve(
            self._handler,
            cfg.host,
            cfg.port,
            process_request=self.http.process_request,
            compression=None,
            server_header=None,
            open_timeout=cfg.open_timeout,
            ping_interval=cfg.ping_interval or None,
            ping_timeout=cfg.ping_timeout or None,
            close_timeout=cfg.close_timeout,
            max_size=cfg.max_frame_size,
            max_queue=cfg.max_queue,
            write_limit=cfg.write_limit,
            ssl=ssl_context,
        )
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        self._accepted_urls = cfg.accepted_urls(self._port)
        if cfg.metrics and cfg.metrics_port is not None:
            self._metrics_server = await asyncio.start_server(
                self.http.serve_metrics, cfg.metrics_host, cfg.metrics_port, limit=8192
            )
            self._metrics_port = self._metrics_server.sockets[0].getsockname()[1]
            log_event(
                logging.INFO,
                "metrics",
                "metrics listener",
                host=cfg.metrics_host,
                port=self._metrics_port,
                token="yes" if cfg.metrics_token else "no",
            )
        self._sweeper = asyncio.create_task(self.mail.sweep_forever(), name="relay-mail-sweep")
        log_event(
            logging.INFO,
            "listening",
            f"listening on {self.url}",
            url=self.url,
            accepts=",".join(sorted(self._accepted_urls)),
        )
        if cfg.data_dir is None and self.cluster is None:
            log_event(
                logging.WARNING,
                "mail",
                "no --data: mail and prekeys are kept in memory and lost on exit",
            )

    async def close(self) -> None:
        """Stop accepting, close every peer with 1001, wait (bounded) for them to go."""
        if self._closing:
            return
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._cut_off is not None:
            self._cut_off.cancel()
        if self._server is None:  # never started (e.g. the port was taken)
            await self._close_stores()
            return
        log_event(logging.INFO, "shutdown", "closing peers with 1001", peers=len(self._conns))
        if self._metrics_server is not None:
            self._metrics_server.close()
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), self.config.shutdown_timeout)
        except TimeoutError:
            for conn in list(self._conns):
                conn.ws.transport.abort()
        await self._close_stores()
        log_event(logging.INFO, "stopped", "relay stopped")

    async def _close_stores(self) -> None:
        await self.directory.close()
        await self.mail.close()
        if self.cluster is not None:
            await self.cluster.close()

    def _on_cluster(self, reason: str | None) -> None:
        """The link to Redis was lost (``reason``) or is back (None).

        Meanwhile local routing goes on and new connections are refused
        (http.py); a node still cut off after ``cluster_grace`` seconds closes
        its peers with 1012 so that they reconnect to a healthy node.
        """
        if reason is None:
            if self._cut_off is not None:
                self._cut_off.cancel()
                self._cut_off = None
            return
        if self._cut_off is None or self._cut_off.done():
            self._cut_off = asyncio.create_task(self._leave_after_grace(), name="relay-cut-off")

    async def _leave_after_grace(self) -> None:
        await asyncio.sleep(self.config.cluster_grace)
        if self.cluster is None or self.cluster.reason is None or self._closing:
            return
        log_event(
            logging.WARNING,
            "cluster",
            "still cut off from the cluster: closing peers with 1012 so they move",
            peers=len(self._conns),
        )
        for conn in list(self._conns):
            self.outbox.stop(conn)
            closing = asyncio.create_task(
                conn.ws.close(CloseCode.SERVICE_RESTART, "relay node lost its cluster; reconnect"),
                name=f"relay-cut-off-{conn.cid}",
            )
            closing.add_done_callback(_ignore_result)
        self._cut_off = None

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- one connection -----------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        cfg = self.config
        throttle = None
        if cfg.frame_rate > 0 or cfg.byte_rate > 0:
            throttle = FrameThrottle(cfg.frame_rate, cfg.frame_burst, cfg.byte_rate, cfg.byte_burst)
        conn = Conn(ws, next(self._ids), sys.intern(client_ip(ws, cfg.trusted_proxies)), throttle)
        # websockets keeps the upgrade's request and response, headers and all, for the
        # connection's whole life; the relay reads them once (the client's IP, above).
        # A non-None request tells websockets the upgrade is behind it: one shared empty one.
        ws.request, ws.response = _UPGRADED, None
        self._conns.add(conn)
        self.http.opened(conn.ip)
        self.metrics.connections_total += 1
        log_event(logging.DEBUG, "open", "connection opened", conn=conn.cid, ip=conn.ip)
        try:
            if len(self._conns) > cfg.max_connections:  # lost a race in process_request
                raise _Close(CloseCode.TRY_AGAIN_LATER, "relay full", "relay-full")
            challenge = secrets.token_bytes(32)
            self.outbox.push(conn, Challenge(challenge).encode())
            try:
                async with asyncio.timeout(cfg.auth_timeout):
                    address = await self._authenticate(conn, challenge)
                await self._register(conn, address)  # bounded by the cluster's confirmations
            except TimeoutError:
                self.metrics.auth_failures += 1
                raise _Close(
                    CloseCode.POLICY_VIOLATION, "authentication timeout", "auth-timeout"
                ) from None
            except StoreUnavailable:  # a cluster node cut off from Redis
                raise _Close(
                    CloseCode.TRY_AGAIN_LATER,
                    "this relay node lost its cluster; try another node",
                    "cluster-unavailable",
                ) from None
            await self.mail.deliver_waiting(conn, address)
            await self._serve(conn, address)
        except _Close as close:
            self.metrics.connections_closed[close.metric] += 1
            log_event(
                logging.INFO,
                "close",
                close.reason,
                conn=conn.cid,
                ip=conn.ip,
                address=conn.address or "-",
                code=int(close.code),
            )
            self.outbox.stop(conn)
            await ws.close(close.code, _truncate(close.reason))
        except ConnectionClosed as exc:
            # Closes websockets decides itself: message too big, keepalive timeout.
            sent = exc.sent.code if exc.sent is not None else None
            metric = _SELF_CLOSES.get(sent) if sent is not None else None
            if metric is not None and not self._closing:
                self.metrics.connections_closed[metric] += 1
                log_event(
                    logging.INFO,
                    "close",
                    metric,
                    conn=conn.cid,
                    ip=conn.ip,
                    address=conn.address or "-",
                    code=sent,
                )
        finally:
            self._forget(conn)
            self.outbox.stop(conn)
            log_event(
                logging.DEBUG,
                "closed",
                "connection closed",
                conn=conn.cid,
                code=ws.close_code if ws.close_code is not None else "-",
            )

    async def _serve(self, conn: Conn, address: str) -> None:
        """Read an authenticated connection's frames until it closes.

        The loop body is the relay's hot path, kept free of coroutine calls
        for a Send to an online address whose recipients have room: check the
        layout, look the raw address up, frame header + tail for each
        recipient (written to its socket once, at the end of this turn, with
        every other frame for it read in the same turn). Everything else goes
        through :meth:`_on_message`.
        """
        routes = self.routes.table
        metrics = self.metrics
        throttle = conn.throttle
        header = conn.deliver_header
        outbox = self.outbox
        offer = outbox.offer
        offer_waiting = outbox.offer_waiting
        write = outbox.write
        write_limit = self.config.write_limit
        remote = self.cluster.routes if self.cluster is not None else None
        async for message in conn.ws:
            if throttle is not None:
                delay = throttle.delay(len(message))
                if delay > 0:
                    await self._pause(conn, delay)
            if type(message) is bytes:
                to = send_recipient(message)
                targets = routes.get(to) if to is not None else None
                if targets is not None:
                    data = deliver_from_send(header, message)
                    delivered = 0
                    for target in targets:
                        if (
                            not target.backlog
                            and not target.dropped
                            and target.ws.transport.get_write_buffer_size() + target.unflushed
                            < write_limit
                        ):
                            write(target, data)  # Outbox.offer's common case, inlined
                            delivered += 1
                        elif offer(target, data) or await offer_waiting(target, data):
                            delivered += 1
                    if delivered:
                        metrics.frames_forwarded += delivered
                        metrics.bytes_forwarded += delivered * (len(message) - SEND_OVERHEAD)
                        continue
                    # Every recipient was just dropped as a slow consumer: answer Offline.
                elif to is not None and remote is not None:
                    # Not connected here: to the other nodes as it is, undecoded; the
                    # receiver count comes back a round trip later (_published).
                    done = functools.partial(self._published, conn, message)
                    if not remote.publish(to, deliver_from_send(header, message), done):
                        await remote.wait_room()
                    continue
            await self._on_message(conn, address, message)

    def _published(self, conn: Conn, message: bytes, delivered: int) -> None:
        """A Send the fast path published reached ``delivered`` nodes; 0: answer Offline.

        Only then is the Send decoded, for its ``ref`` (and so checked: a
        malformed one closes the connection with 1008, as on the slow path).
        """
        if delivered:
            self.metrics.frames_forwarded += delivered
            self.metrics.bytes_forwarded += delivered * (len(message) - SEND_OVERHEAD)
            return
        try:
            frame = decode_client_frame(message)
        except DecodeError as exc:
            self.metrics.connections_closed["malformed"] += 1
            self.outbox.stop(conn)
            closing = asyncio.create_task(
                conn.ws.close(CloseCode.POLICY_VIOLATION, _truncate(f"malformed frame: {exc}")),
                name=f"relay-malformed-{conn.cid}",
            )
            closing.add_done_callback(_ignore_result)
            return
        assert isinstance(frame, Send)  # send_recipient accepts only a Send's layout
        self._forwarded(conn, frame, 0)

    async def _authenticate(self, conn: Conn, challenge: bytes) -> str:
        frame = self._decode(await conn.ws.recv())
        if not isinstance(frame, Auth):
            self.metrics.auth_failures += 1
            raise _Close(CloseCode.POLICY_VIOLATION, "authenticate first", "auth-failed")
        try:
            address = verify_auth(frame, challenge, self._accepted_urls)
        except ProtocolError as exc:
            self.metrics.auth_failures += 1
            raise _Close(
                CloseCode.POLICY_VIOLATION, f"authentication failed: {exc}", "auth-failed"
            ) from None
        if (
            await self.routes.address_connections(address)
            >= self.config.max_connections_per_address
        ):
            raise _Close(
                CloseCode.TRY_AGAIN_LATER,
                "too many connections for this address",
                "address-connections",
            )
        return address

    def _decode(self, message: str | bytes) -> ClientFrame:
        if isinstance(message, str):
            raise _Close(
                CloseCode.UNSUPPORTED_DATA, "text frames are not part of the protocol", "text"
            )
        try:
            return decode_client_frame(message)
        except DecodeError as exc:
            raise _Close(
                CloseCode.POLICY_VIOLATION, f"malformed frame: {exc}", "malformed"
            ) from None

    async def _register(self, conn: Conn, address: str) -> None:
        conn.address = address
        conn.deliver_header = deliver_header(address)
        watchers = await self.routes.subscribe(address, conn)
        self.outbox.push(conn, AuthOk(address).encode())
        self.outbox.push(conn, self.mail.info)
        log_event(logging.INFO, "auth", "authenticated", conn=conn.cid, ip=conn.ip, address=address)
        if watchers:
            online = Online(address).encode()
            for watcher in watchers:
                self.outbox.push(watcher, online)

    def _unroute(self, conn: Conn) -> None:
        """Route nothing more to ``conn``: it is closed, or being dropped as a slow consumer."""
        self.routes.unsubscribe(conn, conn.address)

    def _forget(self, conn: Conn) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self.http.closed(conn.ip)
        self._unroute(conn)

    # --- frames -------------------------------------------------------------

    async def _pause(self, conn: Conn, delay: float) -> None:
        """Stop reading from ``conn`` for ``delay`` seconds: it is over its frame or byte rate."""
        self.metrics.rate_limited += 1
        if delay > 0.5:
            log_event(logging.DEBUG, "throttle", "over rate", conn=conn.cid, delay=round(delay, 2))
        await asyncio.sleep(delay)

    async def _on_message(self, conn: Conn, address: str, message: str | bytes) -> None:
        """Handle one frame of an authenticated connection (all but the forwarding fast path).

        Every frame it produces is queued with back-pressure: while a queue
        is full, this connection's reading pauses (its own answers count too,
        so a client that sends requests without reading the answers is the
        one slowed down, and dropped if it never reads).
        """
        frame = self._decode(message)
        if isinstance(frame, Send):
            await self._route(conn, address, frame)
        elif isinstance(frame, Auth):
            raise _Close(CloseCode.POLICY_VIOLATION, "already authenticated", "malformed")
        elif isinstance(frame, MAIL_REQUESTS):
            await self.outbox.offer_waiting(conn, await self.mail.answer(conn, address, frame))
        else:
            answer = await self.services.answer(conn, address, frame)
            if answer is not None:
                await self.outbox.offer_waiting(conn, answer)

    async def _route(self, conn: Conn, sender: str, frame: Send) -> None:
        """A Send the fast path did not take: to another node, or to an offline address.

        Returns once the frame is on its way; whether anyone took it is known
        at once locally, a round trip later across nodes, and ``Offline`` is
        answered then (the sender reads on meanwhile: its frames keep their
        order, and one lost frame costs a retry, not a stall).
        """
        done = functools.partial(self._forwarded, conn, frame)
        await self.routes.forward(frame.to, Deliver(sender, frame.payload).encode(), done)

    def _forwarded(self, conn: Conn, frame: Send, delivered: int) -> None:
        """Count a Send that reached ``delivered`` connections (or nodes); 0: answer Offline."""
        if delivered:
            self.metrics.frames_forwarded += delivered
            self.metrics.bytes_forwarded += delivered * len(frame.payload)
        else:
            self.metrics.frames_refused["offline"] += 1
            self.outbox.push(conn, Offline(frame.ref, frame.to).encode())
