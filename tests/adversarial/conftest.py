"""Fixtures for the adversarial suite: a hostile hop in front of a real relay, and peers.

The hop module lives next to this file; with ``--import-mode=importlib`` the
test directory is not on ``sys.path``, so it is added here once.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile import HostileHop

from p2ptransfer.net.relay import RelayConfig, RelayServer
from tests.peers import alice, bob  # noqa: F401  (fixtures, shared with tests/net)


@dataclass
class Net:
    """The hostile hop and the real relay behind it."""

    hop: HostileHop
    relay: RelayServer

    @property
    def url(self) -> str:
        """The URL peers dial: the hop's."""
        return self.hop.url


def _seed() -> int:
    value = os.environ.get("P2PT_SEED")
    return int(value) if value else secrets.randbelow(2**32)


@pytest.fixture
def seed() -> int:
    """One seed drives every random fault; printed so a failing run can be replayed."""
    value = _seed()
    print(f"hostile relay seed: {value} (replay with P2PT_SEED={value})")
    return value


@pytest.fixture
def relay_config() -> RelayConfig:
    return RelayConfig(host="127.0.0.1", port=0)


@pytest.fixture
async def net(seed: int, relay_config: RelayConfig) -> AsyncIterator[Net]:
    hop = HostileHop(seed)
    await hop.start()
    # A compromised operator: the real relay accepts signatures made for the hop's URL.
    relay = RelayServer(relay_config.replace(public_urls=(hop.url,)))
    await relay.start()
    hop.upstream = relay.url
    try:
        yield Net(hop, relay)
    finally:
        await hop.close()
        await relay.close()
