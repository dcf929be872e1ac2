"""The handle directory: first come, first served, bound to a key, kept in SQLite.

A convenience for finding somebody's address, never a root of trust: the relay
operator can answer a lookup with any address it likes. A looked-up address is
trusted on first use and checked by safety number like any other.

Only the holder may release a handle; a claim past the per-address quota is
refused in the same step that would bind it (one transaction here, one Lua
script in a cluster), so two claims racing on two nodes cannot both pass.

:class:`HandleDirectory` is what the server awaits; :class:`Directory` is the
one-process SQLite implementation (fast indexed statements, run on the loop),
and ``redis_directory.py`` is the cluster's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal, Protocol

from ...protocol.relay_wire import check_handle

__all__ = ["DIRECTORY_FILE", "ClaimOutcome", "Directory", "HandleDirectory", "ReleaseOutcome"]

DIRECTORY_FILE = "relay-directory.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handles (
    handle     TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    claimed_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS handles_by_address ON handles (address);
"""

ReleaseOutcome = Literal["released", "not-yours", "unknown"]
ClaimOutcome = Literal["claimed", "yours", "taken", "quota"]
"""``claimed``: bound now; ``yours``: it already was; ``taken``: another key holds it;
``quota``: the address already holds ``max_per_address`` handles (nothing changed)."""


class HandleDirectory(Protocol):
    """Handles -> addresses, first come first served; one implementation per deployment.

    Methods may raise :class:`~.mailbox.StoreUnavailable` (a cluster's Redis lost).
    """

    async def claim(
        self, handle: str, address: str, now: int, max_per_address: int
    ) -> ClaimOutcome:
        """Bind ``handle`` to ``address`` unless another key holds it or the quota is full."""
        ...

    async def lookup(self, handle: str) -> str | None:
        """The address holding ``handle``, or None."""
        ...

    async def release(self, handle: str, address: str) -> ReleaseOutcome:
        """Unbind ``handle`` if ``address`` holds it; otherwise say whose problem it is."""
        ...

    def count(self) -> int:
        """How many handles there are (a metrics gauge: must not block; may lag)."""
        ...

    async def close(self) -> None:
        """Release the store (the server calls it once, at shutdown)."""
        ...


class Directory:
    """Handles -> addresses; ``data_dir=None`` keeps it in memory (lost on exit)."""

    def __init__(self, data_dir: Path | None) -> None:
        if data_dir is None:
            target = ":memory:"
        else:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            target = str(data_dir / DIRECTORY_FILE)
        self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        if data_dir is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    async def claim(
        self, handle: str, address: str, now: int, max_per_address: int
    ) -> ClaimOutcome:
        check_handle(handle)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            owner = self._owner(handle)
            if owner is not None:
                outcome: ClaimOutcome = "yours" if owner == address else "taken"
            else:
                (held,) = db.execute(
                    "SELECT count(*) FROM handles WHERE address = ?", (address,)
                ).fetchone()
                if held >= max_per_address:
                    outcome = "quota"
                else:
                    db.execute(
                        "INSERT INTO handles (handle, address, claimed_at) VALUES (?, ?, ?)",
                        (handle, address, now),
                    )
                    outcome = "claimed"
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcome

    async def lookup(self, handle: str) -> str | None:
        return self._owner(handle)

    def _owner(self, handle: str) -> str | None:
        row = self._db.execute("SELECT address FROM handles WHERE handle = ?", (handle,)).fetchone()
        return None if row is None else str(row[0])

    async def release(self, handle: str, address: str) -> ReleaseOutcome:
        check_handle(handle)
        deleted = self._db.execute(
            "DELETE FROM handles WHERE handle = ? AND address = ?", (handle, address)
        ).rowcount
        if deleted:
            return "released"
        return "unknown" if self._owner(handle) is None else "not-yours"

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM handles").fetchone()[0])

    async def close(self) -> None:
        self._db.close()
