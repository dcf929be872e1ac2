"""Every setting of the relay, with its safe default (docs/relay.md lists them all)."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ...protocol.relay_limits import MAX_ENVELOPE_SIZE, MAX_FRAME_SIZE, normalize_relay_url

__all__ = ["RelayConfig"]

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class RelayConfig:
    """Settings of one relay; ``dataclasses.replace`` it to change one."""

    host: str = "127.0.0.1"
    port: int = 8765
    public_urls: tuple[str, ...] = ()
    """URLs peers dial (and sign); empty = derived from the bind address."""
    data_dir: Path | None = None
    """Where the handle directory lives; None = in memory, lost on exit."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    trusted_proxies: tuple[str, ...] = ()
    """Peer IPs (a reverse proxy) whose X-Forwarded-For names the real client for limits."""
    log_format: str = "text"
    log_level: str = "info"

    # frames
    max_frame_size: int = MAX_FRAME_SIZE
    max_queue: int = 8
    """Incoming frames buffered per connection before TCP back-pressure (websockets max_queue)."""
    outgoing_frames: int = 64
    """Frames queued for one reader; when full, senders to it are paused."""
    outgoing_bytes: int = 1 << 20
    slow_consumer_timeout: float = 5.0
    """A reader whose queue stays full this long is disconnected (1013)."""
    write_limit: int = 64 * 1024

    # per-connection token buckets (frames and bytes per second, burst); a connection
    # over its rate is throttled: the relay stops reading from it until it is back
    # under, so TCP back-pressure slows the sender and no frame is dropped.
    frame_rate: float = 500.0
    frame_burst: float = 1000.0
    byte_rate: float = float(4 << 20)
    byte_burst: float = float(8 << 20)

    # connections
    max_connections: int = 4096
    max_connections_per_ip: int = 256
    connection_rate_per_ip: float = 20.0
    connection_burst_per_ip: float = 100.0
    max_connections_per_address: int = 4
    max_watches: int = 32

    # requests: presence (Watch), directory look-ups and claims. Token buckets whose
    # defaults a person never meets; a request over its rate is Refused (rate-limited).
    watch_rate: float = 5.0
    """Watch requests per second per connection (after the burst); 0 disables."""
    watch_burst: float = 20.0
    lookup_rate: float = 5.0
    """Handle look-ups per second per connection (after the burst); 0 disables."""
    lookup_burst: float = 20.0
    max_handles_per_address: int = 3
    """Handles one address (key) may hold in the directory at once."""
    claim_rate: float = 0.2
    """Claims and releases per second per address, surviving reconnects; 0 disables."""
    claim_burst: float = 10.0
    claim_rate_per_ip: float = 1.0
    """Claims and releases per second per client IP, all keys together; 0 disables."""
    claim_burst_per_ip: float = 20.0

    # mail (store and forward): per mailbox (recipient) limits, split into per-sender
    # rooms so that one sender, or a flood of throwaway keys, never fills another's room.
    max_envelope: int = 4096
    """Largest envelope accepted in a Deposit, bytes (a mailed transfer is about 1.9 KB)."""
    max_mail_items: int = 1000
    """Pieces of mail waiting in one mailbox (for one recipient)."""
    max_mail_per_sender: int = 100
    """Slots one sender may fill in one mailbox."""
    max_mailbox_bytes: int = 4 << 20
    """Envelope bytes waiting in one mailbox."""
    max_mail_age_days: float = 14.0
    """Mail not acknowledged by then is deleted (announced to peers in MailInfo)."""
    deposit_rate: float = 600.0
    """Deposits per hour per sender address (token bucket, survives reconnects); 0 disables."""
    deposit_burst: float = 100.0
    deposit_rate_per_ip: float = 3000.0
    """Deposits per hour per client IP, every key together; 0 disables."""
    deposit_burst_per_ip: float = 300.0
    mail_sweep_interval: float = 600.0
    """Seconds between sweeps deleting expired mail and prekeys (also deleted on read)."""

    # metrics (Prometheus text at /metrics)
    metrics: bool = True
    """Serve /metrics at all."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    """None: /metrics on the relay's own port; a number: only on this separate listener."""
    metrics_token: str | None = None
    """If set, /metrics needs ``Authorization: Bearer TOKEN`` (else 401)."""

    # cluster (several nodes sharing one Redis; docs/relay.md "Running a cluster")
    cluster: str | None = None
    """``redis://[:PASSWORD@]HOST:PORT/DB``, ``rediss://…`` or ``unix://PATH``; None: one relay."""
    cluster_insecure: bool = False
    """Accept a Redis on another machine with neither a password nor TLS."""
    cluster_prefix: str = "p2pt:"
    """Prefix of every key and channel the cluster uses in Redis."""
    cluster_grace: float = 10.0
    """Seconds without Redis before the node closes its peers (1012) so they move to another."""
    cluster_publish_frames: int = 4096
    """Frames waiting to be published; when full, the senders are paused."""

    # timeouts (seconds)
    auth_timeout: float = 10.0
    open_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 5.0
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0-65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.log_format not in ("text", "json"):
            raise ValueError("log format is text or json")
        for name in (
            "max_frame_size",
            "max_queue",
            "outgoing_frames",
            "outgoing_bytes",
            "max_connections",
            "max_connections_per_ip",
            "max_connections_per_address",
            "max_handles_per_address",
            "max_envelope",
            "max_mail_items",
            "max_mail_per_sender",
            "max_mailbox_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_envelope > MAX_ENVELOPE_SIZE:
            raise ValueError(f"max_envelope is at most {MAX_ENVELOPE_SIZE} (the wire's limit)")
        if self.max_mailbox_bytes < self.max_envelope:
            raise ValueError("max_mailbox_bytes must hold at least one envelope")
        if not 0 < self.max_mail_age_days <= 366:
            raise ValueError("max_mail_age_days must be above 0 and at most 366")
        if self.mail_sweep_interval <= 0:
            raise ValueError("mail_sweep_interval must be above 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics port must be 0-65535")
        if self.metrics_token is not None and (
            len(self.metrics_token) < 16
            or not self.metrics_token.isascii()
            or not self.metrics_token.isprintable()
            or " " in self.metrics_token
        ):
            raise ValueError(
                "the metrics token is at least 16 printable ASCII characters, no spaces"
            )
        for url in self.public_urls:
            normalize_relay_url(url)
        if self.cluster is not None:
            _check_cluster_url(self.cluster, self.cluster_insecure)
        if self.cluster_grace < 0:
            raise ValueError("cluster_grace must be 0 or more")
        if self.cluster_publish_frames < 1:
            raise ValueError("cluster_publish_frames must be at least 1")
        if not self.cluster_prefix or not self.cluster_prefix.isascii():
            raise ValueError("cluster_prefix is a non-empty ASCII string")

    @property
    def max_mail_age_ms(self) -> int:
        """How long mail is kept, in milliseconds (what MailInfo announces)."""
        return int(self.max_mail_age_days * 86_400_000)

    @property
    def scheme(self) -> str:
        return "wss" if self.tls_cert is not None else "ws"

    def replace(self, **changes: object) -> RelayConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def accepted_urls(self, port: int) -> frozenset[str]:
        """The normalised URLs a peer may sign for, given the port actually bound."""
        if self.public_urls:
            return frozenset(normalize_relay_url(u) for u in self.public_urls)
        hosts: set[str] = {_url_host(self.host)}
        if _is_loopback(self.host) or _is_wildcard(self.host):
            hosts.update(_LOOPBACK_NAMES)
        if _is_wildcard(self.host):
            # No public URL given: accept the machine's own names. Operators behind a
            # proxy or with a DNS name must set --public-url (docs/relay.md).
            for name in {socket.gethostname(), socket.getfqdn()}:
                if name:
                    hosts.add(_url_host(name))
        return frozenset(normalize_relay_url(f"{self.scheme}://{h}:{port}") for h in hosts)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - naming it, not binding it


def _check_cluster_url(url: str, insecure: bool) -> None:
    """Refuse a malformed cluster URL, or a remote Redis anyone on the path could use.

    Whoever reaches the cluster's Redis can drop, replay or misroute frames and
    wipe mail (never forge: peers sign end to end); on another machine it needs
    a password or TLS unless the operator says otherwise. The message never
    repeats the password.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("the cluster URL is malformed (redis://HOST:PORT/DB)") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("the cluster URL starts with redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// cluster URL names the socket's path")
        return
    host = parts.hostname
    if not host:
        raise ValueError("the cluster URL names no host (redis://HOST:PORT/DB)")
    if port is not None and not 0 < port <= 65535:
        raise ValueError("the cluster URL's port must be 1-65535")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError("the cluster URL's database is a number (redis://HOST:PORT/0)")
    if insecure or parts.scheme == "rediss" or parts.password or _is_loopback(host):
        return
    raise ValueError(
        f"refusing the Redis at {host} without a password or TLS: anyone who reaches it "
        "can disrupt the relay; give one (redis://:PASSWORD@HOST or rediss://) "
        "or pass --cluster-insecure"
    )
