"""The relay's plain-HTTP side: health, metrics, and refusing a connection before the upgrade.

Refusing in the opening handshake (503 when full, shutting down or cut off
from its cluster, 429 over a per-IP limit) costs the relay no websocket, no
task and no challenge; the per-IP connection count kept here is what that
check reads (a cluster node adds the other nodes' counts: see
:class:`SharedCounts`).
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .config import RelayConfig
from .limits import BucketMap
from .logs import log_event
from .mailbox import StoreUnavailable
from .metrics import Metrics

__all__ = ["HttpFront", "SharedCounts", "client_ip"]

_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def client_ip(connection: ServerConnection, trusted_proxies: tuple[str, ...]) -> str:
    """The client's IP: the peer's, or the last ``X-Forwarded-For`` hop from a trusted proxy."""
    peer = connection.remote_address
    ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    request = connection.request
    if ip in trusted_proxies and request is not None:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            ip = forwarded.split(",")[-1].strip() or ip
    return ip


class SharedCounts(Protocol):
    """Per-IP connection counts across a cluster's nodes (approximate: see docs/relay.md)."""

    @property
    def reason(self) -> str | None:
        """Why the cluster cannot be used now (None: it can)."""
        ...

    def ip_opened(self, ip: str) -> None: ...

    def ip_closed(self, ip: str) -> None: ...

    async def ip_connections(self, ip: str) -> int:
        """Connections from ``ip`` on every live node; may raise if the cluster is lost."""
        ...


class HttpFront:
    """Answers plain HTTP requests and admits (or refuses) websocket upgrades.

    ``open_connections()`` and ``closing()`` are read from the server at each
    request; :meth:`opened` and :meth:`closed` keep the per-IP count.
    """

    def __init__(
        self,
        config: RelayConfig,
        metrics: Metrics,
        *,
        open_connections: Callable[[], int],
        closing: Callable[[], bool],
        cluster: SharedCounts | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._open_connections = open_connections
        self._closing = closing
        self._cluster = cluster
        self._per_ip: defaultdict[str, int] = defaultdict(int)
        self._ip_rate = BucketMap(config.connection_rate_per_ip, config.connection_burst_per_ip)

    def opened(self, ip: str) -> None:
        """Count a connection from ``ip`` (an upgrade went through)."""
        self._per_ip[ip] += 1
        if self._cluster is not None:
            self._cluster.ip_opened(ip)

    def closed(self, ip: str) -> None:
        """Forget a connection from ``ip``; an IP with none left keeps no entry."""
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        if self._cluster is not None:
            self._cluster.ip_closed(ip)

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """websockets' ``process_request``: a response ends the request, None upgrades it."""
        path = request.path.partition("?")[0]
        cut_off = self._cluster.reason if self._cluster is not None else None
        if path == "/healthz":
            if cut_off is not None:
                return connection.respond(
                    http.HTTPStatus.SERVICE_UNAVAILABLE, f"cluster unavailable: {cut_off}\n"
                )
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/metrics":
            if not self.config.metrics or self.config.metrics_port is not None:
                return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
            status = self._metrics_status(request.headers.get("Authorization"))
            if status is not http.HTTPStatus.OK:
                response = connection.respond(status, f"{status.phrase.lower()}\n")
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
                return response
            response = connection.respond(http.HTTPStatus.OK, self.metrics.render())
            headers = Headers(response.headers)
            del headers["Content-Type"]
            headers["Content-Type"] = _METRICS_TYPE
            response.headers = headers
            return response
        cfg = self.config
        ip = client_ip(connection, cfg.trusted_proxies)
        refusal: tuple[http.HTTPStatus, str, str] | None = None
        if self._closing():
            refusal = (http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting-down", "relay shutting down")
        elif cut_off is not None:
            refusal = (
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                "cluster-unavailable",
                "this relay node lost its cluster; try another node",
            )
        elif self._open_connections() >= cfg.max_connections:
            refusal = (http.HTTPStatus.SERVICE_UNAVAILABLE, "relay-full", "relay full")
        elif await self._ip_connections(ip) >= cfg.max_connections_per_ip:
            refusal = (
                http.HTTPStatus.TOO_MANY_REQUESTS,
                "ip-connections",
                "too many connections from your address",
            )
        elif not self._ip_rate.take(ip):
            refusal = (http.HTTPStatus.TOO_MANY_REQUESTS, "ip-rate", "connecting too fast")
            self.metrics.rate_limited += 1
        if refusal is None:
            return None
        status, metric, text = refusal
        self.metrics.connections_refused[metric] += 1
        # DEBUG: a flood of refusals must not become a flood of log lines (metrics count them).
        log_event(logging.DEBUG, "refused", text, ip=ip, status=int(status))
        response = connection.respond(status, text + "\n")
        if status == http.HTTPStatus.TOO_MANY_REQUESTS:
            response.headers["Retry-After"] = "1"
        return response

    async def _ip_connections(self, ip: str) -> int:
        """Connections from ``ip``: here, or on every node of a cluster."""
        here = self._per_ip.get(ip, 0)
        if self._cluster is None or here >= self.config.max_connections_per_ip:
            return here
        try:
            return max(here, await self._cluster.ip_connections(ip))
        except StoreUnavailable:  # the cluster just went: judge by this node's count
            return here

    def _metrics_status(self, authorization: str | None) -> http.HTTPStatus:
        """OK if /metrics needs no token or ``authorization`` carries it, else UNAUTHORIZED."""
        token = self.config.metrics_token
        if token is None:
            return http.HTTPStatus.OK
        expected = f"Bearer {token}".encode()
        given = (authorization or "").encode("utf-8", "replace")
        return (
            http.HTTPStatus.OK
            if hmac.compare_digest(given, expected)
            else http.HTTPStatus.UNAUTHORIZED
        )

    async def serve_metrics(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The separate metrics listener: one bounded GET per connection, then close.

        Deliberately tiny (no keep-alive, 8 KiB of headers, 5 s to send them):
        it serves one scraper on an operator's network, not the public.
        """
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, _, rest = lines[0].partition(" ")
            target = rest.partition(" ")[0].partition("?")[0]
            authorization = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "authorization":
                    authorization = value.strip()
            if method != "GET" or target != "/metrics":
                status, body, extra = http.HTTPStatus.NOT_FOUND, "not found\n", ""
            else:
                status = self._metrics_status(authorization)
                if status is http.HTTPStatus.OK:
                    body, extra = self.metrics.render(), f"Content-Type: {_METRICS_TYPE}\r\n"
                else:
                    body, extra = "unauthorized\n", 'WWW-Authenticate: Bearer realm="metrics"\r\n'
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status.value} {status.phrase}\r\n{extra}"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
            pass  # a bad or slow request just gets closed (LimitOverrunError is a ValueError)
        finally:
            writer.close()
