"""``python rendezvous.py`` and ``p2ptransfer relay``: one click command, all settings."""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from .config import RelayConfig
from .logs import configure_logging

__all__ = ["main", "relay_command", "run_relay"]

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
    "auth_timeout": "Seconds a new connection has to authenticate (else 1008).",
    "open_timeout": "Seconds for the HTTP/websocket opening handshake.",
    "ping_interval": "Seconds between keepalive pings; 0 disables.",
    "ping_timeout": "Seconds to wait for a pong before closing (1011).",
    "close_timeout": "Seconds to wait for a closing handshake.",
    "shutdown_timeout": "Seconds to wait for peers to go on SIGTERM/SIGINT.",
}


async def run_relay(config: RelayConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Run a relay until SIGTERM/SIGINT (or cancellation), then shut down gracefully.

    ``ready`` is called with the URL once the socket listens; by default it
    prints ``listening on URL`` to stdout, flushed.
    """
    import asyncio  # imported where used: the command's --help should not load an event loop

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):  # before "listening": no window for a signal
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread / not POSIX
            pass
    from .server import RelayServer  # here, so the command's --help loads no server

    server = RelayServer(config)
    try:
        await server.start()
        (ready or _print_ready)(server.url)
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.close()


def _print_ready(url: str) -> None:
    sys.stdout.write(f"listening on {url}\n")
    sys.stdout.flush()


def _limit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    defaults = RelayConfig()
    for f in reversed(dataclasses.fields(RelayConfig)):
        if f.name not in _HELP:
            continue
        value = getattr(defaults, f.name)
        func = click.option(
            "--" + f.name.replace("_", "-"),
            f.name,
            type=type(value),
            default=value,
            show_default=True,
            help=_HELP[f.name],
        )(func)
    return func


@click.command(context_settings={"max_content_width": 100})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="TCP port; 0 lets the OS pick one.",
)
@click.option(
    "--public-url",
    "public_urls",
    multiple=True,
    metavar="URL",
    help="A URL peers dial, e.g. wss://relay.example.org (repeatable). "
    "Default: ws(s)://HOST:PORT, plus the loopback names for a loopback bind.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the handle directory (SQLite). Default: in memory, lost on exit.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM certificate chain: serve wss://.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM private key for --tls-cert.",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="IP",
    help="Reverse-proxy IP whose X-Forwarded-For is used for per-IP limits.",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@_limit_options
def relay_command(**options: Any) -> None:
    """Run the rendezvous relay: it routes opaque frames between authenticated addresses.

    Prints "listening on ws://HOST:PORT" to stdout once ready; logs go to stderr.
    SIGTERM or Ctrl-C closes peers with 1001 and exits 0.
    """
    for key in ("public_urls", "trusted_proxies"):
        options[key] = tuple(options[key])
    try:
        config = RelayConfig(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    configure_logging(config.log_format, config.log_level)
    try:
        import asyncio

        asyncio.run(run_relay(config))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``rendezvous.py``."""
    relay_command.main(args=list(argv) if argv is not None else None, prog_name="rendezvous.py")
