"""The rendezvous relay (server side); see :mod:`.server` and docs/relay.md.

Public API: :class:`RelayConfig`, :class:`RelayServer`, :func:`run_relay`,
the click command :data:`relay_command` (mounted by ``rendezvous.py`` and by
``p2ptransfer relay``) and :func:`main`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cli import main, relay_command, run_relay
from .config import RelayConfig

if TYPE_CHECKING:
    from .server import RelayServer

__all__ = ["RelayConfig", "RelayServer", "main", "relay_command", "run_relay"]


def __getattr__(name: str) -> Any:
    """``RelayServer`` on first use: ``p2ptransfer relay --help`` needs no websockets server."""
    if name == "RelayServer":
        from .server import RelayServer

        return RelayServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
