"""``relay`` (run the rendezvous relay; also ``python rendezvous.py``) and ``demo``.

The relay command's options are made from :class:`~p2ptransfer.net.relay.RelayConfig`'s
fields, so the command is built on first use (module ``__getattr__``): ``demo --help``
and ``p2ptransfer --help`` import this module without loading the relay's settings,
and ``relay --help`` loads the settings but never the server.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ...errors import NetworkError, P2PTransferError
from ..app import App, pass_app

if TYPE_CHECKING:
    from ...net.relay.config import RelayConfig

__all__ = ["demo", "main"]  # and relay_command, made on first use

_HELP: dict[str, str] = {
    "max_frame_size": "Largest websocket frame accepted, bytes; bigger closes with 1009.",
    "max_queue": "Incoming frames buffered per connection before reading pauses.",
    "outgoing_frames": "Frames queued per reader; when full, senders to it are paused.",
    "outgoing_bytes": "Bytes queued per reader; when full, senders to it are paused.",
    "slow_consumer_timeout": "Seconds a reader's queue may stay full before it is closed (1013).",
    "write_limit": "Transport write buffer high-water mark per connection, bytes.",
    "frame_rate": "Per-connection frames per second; over it, reading pauses. 0 disables.",
    "frame_burst": "Per-connection frame burst.",
    "byte_rate": "Per-connection bytes per second; over it, reading pauses. 0 disables.",
    "byte_burst": "Per-connection byte burst.",
    "max_connections": "Open connections in total; more get HTTP 503.",
    "max_connections_per_ip": "Open connections per client IP; more get HTTP 429.",
    "connection_rate_per_ip": "New connections per second per IP (token bucket); 0 disables.",
    "connection_burst_per_ip": "New-connection burst per IP.",
    "max_connections_per_address": "Authenticated connections per address; more close 1013.",
    "max_watches": "Pending Watch requests per connection.",
    "watch_rate": "Watch (presence) requests per second per connection; 0 disables.",
    "watch_burst": "Watch request burst per connection.",
    "lookup_rate": "Handle look-ups per second per connection; 0 disables.",
    "lookup_burst": "Handle look-up burst per connection.",
    "max_handles_per_address": "Handles one address (key) may hold at once.",
    "claim_rate": "Handle claims+releases per second per address; 0 disables.",
    "claim_burst": "Handle claim+release burst per address.",
    "claim_rate_per_ip": "Handle claims+releases per second per client IP; 0 disables.",
    "claim_burst_per_ip": "Handle claim+release burst per client IP.",
    "max_envelope": "Largest envelope a Deposit may carry, bytes (at most 8192).",
    "max_mail_items": "Pieces of mail waiting in one mailbox; more -> mailbox-full.",
    "max_mail_per_sender": "Slots one sender may fill in one mailbox; more -> sender-room-full.",
    "max_mailbox_bytes": "Envelope bytes waiting in one mailbox; more -> mailbox-full.",
    "max_mail_age_days": "Days mail is kept unacknowledged before it is deleted.",
    "deposit_rate": "Deposits per hour per sender address; 0 disables.",
    "deposit_burst": "Deposit burst per sender address.",
    "deposit_rate_per_ip": "Deposits per hour per client IP, all keys together; 0 disables.",
    "deposit_burst_per_ip": "Deposit burst per client IP.",
    "mail_sweep_interval": "Seconds between sweeps deleting expired mail and prekeys.",
    "cluster_prefix": "Prefix of every Redis key and channel of the cluster.",
    "cluster_grace": "Seconds without Redis before peers are closed (1012) to move elsewhere.",
    "cluster_publish_frames": "Frames waiting to be published to Redis; when full, senders pause.",
    "auth_timeout": "Seconds a new connection has to authenticate (else 1008).",
    "open_timeout": "Seconds for the HTTP/websocket opening handshake.",
    "ping_interval": "Seconds between keepalive pings; 0 disables.",
    "ping_timeout": "Seconds to wait for a pong before closing (1011).",
    "close_timeout": "Seconds to wait for a closing handshake.",
    "shutdown_timeout": "Seconds to wait for peers to go on SIGTERM/SIGINT.",
}


_ENV_PREFIX = "P2PTRANSFER_RELAY_"
"""Every limit option may also come from the environment: P2PTRANSFER_RELAY_MAX_MAIL_ITEMS..."""


@click.command()
@click.option(
    "--keep",
    "keep_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Create the two homes in this new directory and keep them (to inspect afterwards).",
)
@pass_app
def demo(app: App, keep_dir: Path | None) -> None:
    """Run a complete tour: a local relay, two throwaway people, real transfers.

    Nothing outside a temporary directory is touched, and it is removed at the end.
    """
    if keep_dir is not None:
        if keep_dir.exists():
            raise click.BadParameter(f"{keep_dir} already exists", param_hint="--keep")
        keep_dir.mkdir(mode=0o700, parents=True)
    from ...demo import run_demo
    from ..demo_report import ConsoleReport

    app.run(run_demo(ConsoleReport(app), keep_dir=keep_dir))
    if keep_dir is not None:
        _explain_kept(app, keep_dir)


def _explain_kept(app: App, keep_dir: Path) -> None:
    """How to look into the kept homes: the flag is for inspecting, so say how."""
    import shlex

    alice, bob = (shlex.quote(str(keep_dir.resolve() / name)) for name in ("alice", "bob"))
    app.say(f"Kept both homes in {keep_dir}. Look inside with, for example:")
    app.say(f"  P2PTRANSFER_HOME={alice} p2ptransfer ledger")
    app.say(f"  P2PTRANSFER_HOME={bob} p2ptransfer ledger verify")
    app.say(f"  p2ptransfer --home {alice} contacts list")
    app.say(
        "Their keys are locked with random passphrases that were not kept: the homes can be "
        "read and verified, not used to send."
    )


def _limit_options(defaults: RelayConfig) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def add(func: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(dataclasses.fields(defaults)):
            if f.name not in _HELP:
                continue
            value = getattr(defaults, f.name)
            func = click.option(
                "--" + f.name.replace("_", "-"),
                f.name,
                type=type(value),
                default=value,
                show_default=True,
                envvar=_ENV_PREFIX + f.name.upper(),
                help=_HELP[f.name],
            )(func)
        return func

    return add


def _run(**options: Any) -> None:
    """Run the rendezvous relay: it routes opaque frames between authenticated addresses.

    Prints "listening on ws://HOST:PORT" to stdout once ready; logs go to stderr.
    SIGTERM or Ctrl-C closes peers with 1001 and exits 0.
    """
    from ...net.relay.config import RelayConfig
    from ...net.relay.logs import configure_logging
    from ...net.relay.run import run_relay

    for key in ("public_urls", "trusted_proxies"):
        options[key] = tuple(options[key])
    try:
        config = RelayConfig(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    configure_logging(config.log_format, config.log_level)
    from ..main import CommandFailed  # one style of error for `p2ptransfer relay` and rendezvous.py

    try:
        from ...net.eventloop import run

        run(run_relay(config))
    except P2PTransferError as exc:
        raise CommandFailed(str(exc), exc.exit_code) from exc
    except OSError as exc:
        raise CommandFailed(
            f"cannot listen on {config.host}:{config.port}: {exc}", NetworkError.exit_code
        ) from exc


@functools.cache
def _relay_command() -> click.Command:
    from ...net.relay.config import RelayConfig

    command: Callable[..., Any] = _limit_options(RelayConfig())(_run)
    for option in reversed(_BASE_OPTIONS):
        command = option(command)
    return click.command("relay", context_settings={"max_content_width": 100})(command)


_BASE_OPTIONS: tuple[Callable[[Callable[..., Any]], Callable[..., Any]], ...] = (
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind."),
    click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=8765,
        show_default=True,
        help="TCP port; 0 lets the OS pick one.",
    ),
    click.option(
        "--public-url",
        "public_urls",
        multiple=True,
        metavar="URL",
        help="A URL peers dial, e.g. wss://relay.example.org (repeatable). "
        "Default: ws(s)://HOST:PORT, plus the loopback names for a loopback bind.",
    ),
    click.option(
        "--data",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Directory for the handle directory and the mailboxes (SQLite). "
        "Default: in memory, lost on exit.",
    ),
    click.option(
        "--cluster",
        metavar="URL",
        envvar="P2PTRANSFER_RELAY_CLUSTER",
        show_envvar=True,
        default=None,
        help="Run as one node of a cluster sharing this Redis: redis://[:PASSWORD@]HOST:PORT/DB, "
        "rediss://... (TLS) or unix://PATH. Needs the 'cluster' extra. Default: a single relay.",
    ),
    click.option(
        "--cluster-insecure",
        is_flag=True,
        default=False,
        help="Accept a Redis on another machine with neither a password nor TLS.",
    ),
    click.option(
        "--tls-cert",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="PEM certificate chain: serve wss://.",
    ),
    click.option(
        "--tls-key",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="PEM private key for --tls-cert.",
    ),
    click.option(
        "--trusted-proxy",
        "trusted_proxies",
        multiple=True,
        metavar="IP",
        help="Reverse-proxy IP whose X-Forwarded-For is used for per-IP limits.",
    ),
    click.option(
        "--metrics/--no-metrics",
        default=True,
        show_default=True,
        help="Serve Prometheus metrics at /metrics.",
    ),
    click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        help="Address of the separate metrics listener (with --metrics-port).",
    ),
    click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Serve /metrics only on this separate port (0: OS-chosen), not on the relay's.",
    ),
    click.option(
        "--metrics-token",
        envvar="P2PTRANSFER_RELAY_METRICS_TOKEN",
        show_envvar=True,
        default=None,
        help="Require 'Authorization: Bearer TOKEN' for /metrics (16+ characters).",
    ),
    click.option(
        "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
    ),
    click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        show_default=True,
    ),
)


def __getattr__(name: str) -> Any:
    """``relay_command`` on first use (see the module docstring)."""
    if name == "relay_command":
        return _relay_command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``rendezvous.py``."""
    _relay_command().main(args=list(argv) if argv is not None else None, prog_name="rendezvous.py")
