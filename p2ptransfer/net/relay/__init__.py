"""The rendezvous relay (server side); see :mod:`.server` and docs/relay.md.

Public API: :class:`RelayConfig`, :class:`RelayServer`, :func:`run_relay`,
the click command :data:`relay_command` (mounted by ``rendezvous.py`` and by
``p2ptransfer relay``) and :func:`main`.
"""

from __future__ import annotations

from .cli import main, relay_command, run_relay
from .config import RelayConfig
from .server import RelayServer

__all__ = ["RelayConfig", "RelayServer", "main", "relay_command", "run_relay"]
