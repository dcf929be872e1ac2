"""Run a relay until SIGTERM/SIGINT: what ``rendezvous.py`` and ``p2ptransfer relay`` call.

No click here (the command and its options live in ``cli/commands/relay.py``);
asyncio and the server are imported inside :func:`run_relay`, so the command's
``--help`` loads neither.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable

from ...errors import NetworkError
from .config import RelayConfig

__all__ = ["run_relay"]


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
        try:
            await server.start()
        except OSError as exc:
            import ssl

            if isinstance(exc, ssl.SSLError) or exc.errno is None:
                raise
            # Bound the relay's port already? Then it was the separate metrics listener.
            host, port = (
                (config.host, config.port)
                if server.port == 0
                else (config.metrics_host, config.metrics_port)
            )
            raise _bind_error(exc, host, port) from exc
        (ready or _print_ready)(server.url)
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.close()


_REASONS = {
    errno.EADDRINUSE: "address already in use",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "this machine has no such address",
}


def _bind_error(exc: OSError, host: str, port: int | None) -> NetworkError:
    """``cannot listen on 127.0.0.1:8765: address already in use``: the sentence, no errno."""
    assert exc.errno is not None
    reason = _REASONS.get(exc.errno) or os.strerror(exc.errno).lower()
    shown = f"[{host}]" if ":" in host else host
    return NetworkError(f"cannot listen on {shown}:{port}: {reason}")


def _print_ready(url: str) -> None:
    sys.stdout.write(f"listening on {url}\n")
    sys.stdout.flush()
