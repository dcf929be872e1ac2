"""The rendezvous relay (server side); see :mod:`.server` and docs/relay.md.

Public API: :class:`RelayConfig`, :class:`RelayServer` and :func:`run_relay`.
The ``relay`` command (run by ``rendezvous.py`` and ``p2ptransfer relay``)
is the CLI's, in ``p2ptransfer/cli/commands/relay.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import RelayConfig
from .run import run_relay

if TYPE_CHECKING:
    from .server import RelayServer

__all__ = ["RelayConfig", "RelayServer", "run_relay"]


def __getattr__(name: str) -> Any:
    """``RelayServer`` on first use: ``p2ptransfer relay --help`` needs no websockets server."""
    if name == "RelayServer":
        from .server import RelayServer

        return RelayServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
