"""The cluster side of a relay node: its Redis link, routes, stores and health.

Imported only when the relay runs with ``--cluster``: the ``redis`` package
is an optional extra, and a single relay neither needs nor loads it.

What Redis is trusted with (docs/relay.md, docs/threat-model.md): routing,
never secrets. Whoever reaches it can forge the sender between nodes, drop or
replay frames, rebind handles and wipe mail; end-to-end signatures and
exactly-once turn each of those into a denial of service, never a forgery.
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import NetworkError, P2PTransferError
from .config import RelayConfig
from .connection import Conn, Outbox
from .mail import mail_limits
from .metrics import Metrics

try:
    from .redis_directory import RedisDirectory
    from .redis_link import ClusterLink, ClusterUnavailable
    from .redis_mailbox import RedisMailStore
    from .redis_routes import ClusterRoutes
except ImportError as missing:  # pragma: no cover - depends on the installed extras
    raise P2PTransferError(
        f"--cluster needs the redis package ({missing.name} is missing): "
        "pip install 'p2ptransfer[cluster]'"
    ) from None

__all__ = ["Cluster"]


class Cluster:
    """One node's membership of a cluster: ``await start()`` before serving peers."""

    def __init__(
        self,
        config: RelayConfig,
        metrics: Metrics,
        outbox: Outbox,
        *,
        on_health: Callable[[str | None], None],
    ) -> None:
        assert config.cluster is not None
        self.config = config
        self.link = ClusterLink(
            config.cluster,
            on_message=lambda channel, data: None,  # set to the routes' just below
            on_health=on_health,
            prefix=config.cluster_prefix,
            queue_frames=config.cluster_publish_frames,
        )
        self.routes: ClusterRoutes[Conn] = ClusterRoutes(
            self.link,
            offer=outbox.offer,
            offer_waiting=outbox.offer_waiting,
            push=outbox.push,
            drop=outbox.drop_slow,
            overflow_bytes=config.outgoing_bytes,
        )
        self.link.on_message = self.routes.on_message
        prefix = config.cluster_prefix
        self.directory = RedisDirectory(self.link.client, prefix=prefix)
        self.mail_store = RedisMailStore(
            self.link.client,
            mail_limits(config),
            prefix=prefix,
        )
        self.link.on_beat.extend([self.directory.refresh_figures, self.mail_store.refresh_figures])
        self._ip_prefix = f"{prefix}ip:".encode()
        link = self.link
        metrics.counter(
            "p2pt_relay_cluster_frames_out_total",
            "Frames published for peers on other nodes.",
            lambda: link.frames_out,
        )
        metrics.counter(
            "p2pt_relay_cluster_frames_in_total",
            "Frames received from other nodes.",
            lambda: link.frames_in,
        )
        metrics.counter(
            "p2pt_relay_cluster_frames_dropped_total",
            "Frames from other nodes not delivered (the address left, or its reader is stuck).",
            lambda: self.routes.dropped_frames,
        )
        metrics.counter(
            "p2pt_relay_cluster_reconnects_total",
            "Times the node reconnected to Redis after losing it.",
            lambda: link.reconnects,
        )
        metrics.gauge(
            "p2pt_relay_cluster_publish_queue",
            "Frames waiting to be published.",
            lambda: link.queue_depth,
        )
        metrics.gauge(
            "p2pt_relay_cluster_redis_rtt_microseconds",
            "Round-trip time of the last liveness write to Redis.",
            lambda: link.rtt_us,
        )
        metrics.gauge(
            "p2pt_relay_cluster_subscriptions",
            "Redis channels this node subscribes to (connected addresses and watches).",
            lambda: len(link.channels),
        )
        metrics.gauge(
            "p2pt_relay_cluster_healthy",
            "1 while the node's link to Redis works, else 0.",
            lambda: int(link.healthy),
        )

    @property
    def reason(self) -> str | None:
        """Why the node cannot use the cluster now (None: it can)."""
        return self.link.reason

    async def start(self) -> None:
        """Connect to Redis (NetworkError naming the reason if it cannot be reached)."""
        try:
            await self.link.start()
        except ClusterUnavailable as exc:
            raise NetworkError(f"cannot reach the cluster's Redis: {exc}") from None
        await self.directory.refresh_figures()
        await self.mail_store.refresh_figures()

    async def close(self) -> None:
        await self.link.close()

    # --- per-IP connection counts, cluster-wide --------------------------------------

    def ip_opened(self, ip: str) -> None:
        self.link.add_count(self._ip_prefix + ip.encode("utf-8", "replace"), 1)

    def ip_closed(self, ip: str) -> None:
        self.link.add_count(self._ip_prefix + ip.encode("utf-8", "replace"), -1)

    async def ip_connections(self, ip: str) -> int:
        """Connections from ``ip`` on every live node (ClusterUnavailable if Redis is lost)."""
        return await self.link.total(self._ip_prefix + ip.encode("utf-8", "replace"))
