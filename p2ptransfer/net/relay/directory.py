"""The handle directory: first come, first served, bound to a key, kept in SQLite.

A convenience for finding somebody's address, never a root of trust: the relay
operator can answer a lookup with any address it likes. A looked-up address is
trusted on first use and checked by safety number like any other.

Only the holder may release a handle; the server caps how many one address
holds (:meth:`Directory.count_for`) and how fast it claims.

:class:`HandleDirectory` is what the server calls; :class:`Directory` is the
one-process SQLite implementation, and a cluster backend implements it again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal, Protocol

from ...protocol.relay_wire import check_handle

__all__ = ["DIRECTORY_FILE", "Directory", "HandleDirectory", "ReleaseOutcome"]

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


class HandleDirectory(Protocol):
    """Handles -> addresses, first come first served; one implementation per deployment."""

    def claim(self, handle: str, address: str, now: int) -> bool:
        """Bind ``handle`` to ``address``; True if it is now (or already was) theirs."""
        ...

    def lookup(self, handle: str) -> str | None:
        """The address holding ``handle``, or None."""
        ...

    def release(self, handle: str, address: str) -> ReleaseOutcome:
        """Unbind ``handle`` if ``address`` holds it; otherwise say whose problem it is."""
        ...

    def count_for(self, address: str) -> int:
        """How many handles ``address`` holds."""
        ...

    def count(self) -> int:
        """How many handles there are (a metrics gauge)."""
        ...

    def close(self) -> None:
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

    def claim(self, handle: str, address: str, now: int) -> bool:
        """Bind ``handle`` to ``address``; True if it is now (or already was) theirs."""
        check_handle(handle)
        self._db.execute(
            "INSERT OR IGNORE INTO handles (handle, address, claimed_at) VALUES (?, ?, ?)",
            (handle, address, now),
        )
        return self.lookup(handle) == address

    def lookup(self, handle: str) -> str | None:
        row = self._db.execute("SELECT address FROM handles WHERE handle = ?", (handle,)).fetchone()
        return None if row is None else str(row[0])

    def release(self, handle: str, address: str) -> ReleaseOutcome:
        """Unbind ``handle`` if ``address`` holds it; otherwise say whose problem it is."""
        check_handle(handle)
        deleted = self._db.execute(
            "DELETE FROM handles WHERE handle = ? AND address = ?", (handle, address)
        ).rowcount
        if deleted:
            return "released"
        return "unknown" if self.lookup(handle) is None else "not-yours"

    def count_for(self, address: str) -> int:
        """How many handles ``address`` holds."""
        row = self._db.execute("SELECT count(*) FROM handles WHERE address = ?", (address,))
        return int(row.fetchone()[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM handles").fetchone()[0])

    def close(self) -> None:
        self._db.close()
