"""Fixtures shared by the ledger tests: two identities and a ledger file in a fresh home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2ptransfer.protocol.identity import Identity
from p2ptransfer.storage.ledger import Ledger
from tests.storage.builders import new_identity


@pytest.fixture
def me() -> Identity:
    return new_identity()


@pytest.fixture
def bob() -> Identity:
    return new_identity()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "home" / "ledger.sqlite3") as opened:
        yield opened
