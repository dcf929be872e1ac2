"""The relay's mailboxes and published prekeys: what it keeps for peers who are offline.

A mailbox belongs to one recipient address and holds pieces of mail keyed
(recipient, sender, slot); a deposit to a key that is already there replaces
it (a resend takes the same slot, so ten resends cost one). Every deposit is
checked against the limits before anything changes: the sender's room in that
mailbox (``max_per_sender`` slots, so a flood from one sender never fills
another's room), the mailbox's item count and its bytes.
An acknowledgement names the envelope's hash: it deletes the mail only if
the stored envelope still has that hash, so a replacement the owner has not
seen survives it.

Prekeys: the newest two an owner published (by ``not_before``), expired ones
dropped. The relay checks the signer before calling :meth:`MailStore.publish_prekey`;
this module only keeps bytes.

:class:`MailStore` is what the relay's mail service calls (a cluster backend
implements it again); :class:`SqliteMailStore` keeps everything in
``--data``, durable when a method returns; :class:`MemoryMailStore` is for a
relay without ``--data`` (lost on exit). Their methods are synchronous and
may block on a disk write: :class:`ThreadedMailStore` runs them off the event
loop, one at a time, and is the :class:`AsyncMailStore` the mail service
talks to. A cluster's store (``redis_mailbox.py``) is an :class:`AsyncMailStore`
of its own, with the same rules.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, ParamSpec, Protocol, TypeVar

__all__ = [
    "MAILBOX_FILE",
    "AckOutcome",
    "AsyncMailStore",
    "DepositOutcome",
    "MailLimits",
    "MailStore",
    "MemoryMailStore",
    "SqliteMailStore",
    "StoreUnavailable",
    "StoredMail",
    "StoredPrekey",
    "ThreadedMailStore",
]

MAILBOX_FILE = "relay-mail.sqlite3"

DepositOutcome = Literal["stored", "mailbox-full", "sender-room-full"]
AckOutcome = Literal["deleted", "replaced", "unknown"]


class StoreUnavailable(Exception):
    """The store cannot be read or written right now (a full disk, an unreachable Redis).

    Nothing that was confirmed changed; the relay refuses the request as
    ``unavailable`` and keeps the connection.
    """


@dataclass(frozen=True)
class MailLimits:
    """How much one mailbox may hold, and for how long."""

    max_items: int = 1000
    max_per_sender: int = 100
    max_bytes: int = 4 << 20
    max_age_ms: int = 14 * 86_400_000
    max_prekeys: int = 2


@dataclass(frozen=True)
class StoredMail:
    """One piece of mail waiting for ``recipient``."""

    recipient: str
    sender: str
    slot: bytes
    envelope: bytes
    envelope_hash: bytes
    deposited_at: int
    """The relay's clock at the (last) deposit, ms since the epoch."""


@dataclass(frozen=True)
class StoredPrekey:
    """One signed prekey an owner published; ``signed`` is served as it came."""

    owner: str
    prekey_id: bytes
    not_before: int
    not_after: int
    signed: bytes


class MailStore(Protocol):
    """Mailboxes and prekeys; one implementation per deployment (memory, SQLite, cluster)."""

    limits: MailLimits

    def deposit(self, mail: StoredMail) -> DepositOutcome:
        """Store ``mail``, replacing the same (recipient, sender, slot); durable on "stored".

        Expired mail of the recipient is deleted first (it counts for nothing).
        """
        ...

    def pending_for(self, owner: str, now_ms: int) -> list[StoredMail]:
        """Everything waiting for ``owner``, oldest first; expired mail is deleted, not returned."""
        ...

    def ack(self, owner: str, sender: str, slot: bytes, envelope_hash: bytes) -> AckOutcome:
        """Delete (owner, sender, slot) if its envelope still hashes to ``envelope_hash``."""
        ...

    def publish_prekey(self, prekey: StoredPrekey, now_ms: int) -> None:
        """Keep ``prekey``; keep only the owner's newest ``max_prekeys``, none expired."""
        ...

    def prekeys_for(self, owner: str, now_ms: int) -> list[StoredPrekey]:
        """``owner``'s prekeys valid at ``now_ms``, newest first."""
        ...

    def sweep(self, now_ms: int) -> int:
        """Delete expired mail and prekeys everywhere; how many pieces of mail went."""
        ...

    def mail_count(self) -> int:
        """Pieces of mail waiting, all mailboxes together (a metrics gauge)."""
        ...

    def expired_count(self) -> int:
        """Pieces of mail deleted unacknowledged for age since start (a metrics counter)."""
        ...

    def mail_bytes(self) -> int:
        """Envelope bytes waiting, all mailboxes together (a metrics gauge)."""
        ...

    def prekey_count(self) -> int:
        """Prekeys kept, all owners together (a metrics gauge)."""
        ...

    def close(self) -> None:
        """Release the store (the server calls it once, at shutdown)."""
        ...


class AsyncMailStore(Protocol):
    """What the mail service awaits: :class:`MailStore`'s rules, without blocking the loop.

    Every method may raise :class:`StoreUnavailable`. The figures are read
    by metrics gauges on the event loop and must not block; a store that
    cannot count cheaply serves the last figures it refreshed.
    """

    limits: MailLimits

    async def deposit(self, mail: StoredMail) -> DepositOutcome:
        """:meth:`MailStore.deposit`."""
        ...

    async def pending_for(self, owner: str, now_ms: int) -> list[StoredMail]:
        """:meth:`MailStore.pending_for`."""
        ...

    async def ack(self, owner: str, sender: str, slot: bytes, envelope_hash: bytes) -> AckOutcome:
        """:meth:`MailStore.ack`."""
        ...

    async def publish_prekey(self, prekey: StoredPrekey, now_ms: int) -> list[StoredPrekey]:
        """:meth:`MailStore.publish_prekey`; then the owner's prekeys kept, newest first."""
        ...

    async def prekeys_for(self, owner: str, now_ms: int) -> list[StoredPrekey]:
        """:meth:`MailStore.prekeys_for`."""
        ...

    async def sweep(self, now_ms: int) -> int:
        """:meth:`MailStore.sweep`."""
        ...

    def mail_count(self) -> int: ...

    def mail_bytes(self) -> int: ...

    def prekey_count(self) -> int: ...

    def expired_count(self) -> int: ...

    async def close(self) -> None:
        """Finish what is under way and release the store."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS mail (
    recipient     TEXT NOT NULL,
    sender        TEXT NOT NULL,
    slot          BLOB NOT NULL,
    envelope      BLOB NOT NULL,
    envelope_hash BLOB NOT NULL,
    deposited_at  INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    PRIMARY KEY (recipient, sender, slot)
) STRICT;
CREATE INDEX IF NOT EXISTS mail_by_age ON mail (deposited_at);
CREATE INDEX IF NOT EXISTS mail_by_recipient ON mail (recipient, deposited_at, seq);
CREATE TABLE IF NOT EXISTS prekeys (
    owner      TEXT NOT NULL,
    prekey_id  BLOB NOT NULL,
    not_before INTEGER NOT NULL,
    not_after  INTEGER NOT NULL,
    signed     BLOB NOT NULL,
    PRIMARY KEY (owner, prekey_id)
) STRICT;
"""


P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[P, R]) -> Callable[P, R]:
    """Run ``method`` under the store's lock: the mail service calls from a worker
    thread while /metrics reads gauges from the event loop's."""

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with args[0]._lock:  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    run.__doc__ = method.__doc__
    run.__name__ = method.__name__
    return run


class SqliteMailStore:
    """:class:`MailStore` in one SQLite file; ``data_dir=None`` keeps it in memory.

    On disk: ``DATA_DIR/relay-mail.sqlite3``, mode 0600, WAL with
    ``synchronous=FULL``, so a method that returns has its change on disk
    (a Deposited answer means a relay restart keeps the mail).
    """

    def __init__(self, data_dir: Path | None, limits: MailLimits | None = None) -> None:
        self.limits = limits or MailLimits()
        if data_dir is None:
            target = ":memory:"
        else:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = data_dir / MAILBOX_FILE
            os.close(os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600))
            target = str(path)
        self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        if data_dir is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT coalesce(max(seq), 0) FROM mail").fetchone()
        self._seq = int(row[0])
        self._expired = 0
        self._lock = threading.Lock()

    def _expire(self, owner: str, now_ms: int) -> int:
        """Delete ``owner``'s expired mail; how many pieces (counted once committed)."""
        return int(
            self._db.execute(
                "DELETE FROM mail WHERE recipient = ? AND deposited_at <= ?",
                (owner, now_ms - self.limits.max_age_ms),
            ).rowcount
        )

    @_locked
    def deposit(self, mail: StoredMail) -> DepositOutcome:
        lim = self.limits
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            expired = self._expire(mail.recipient, mail.deposited_at)
            key = (mail.recipient, mail.sender, mail.slot)
            old = db.execute(
                "SELECT length(envelope) FROM mail WHERE recipient = ? AND sender = ? AND slot = ?",
                key,
            ).fetchone()
            if old is None:
                (from_sender,) = db.execute(
                    "SELECT count(*) FROM mail WHERE recipient = ? AND sender = ?",
                    (mail.recipient, mail.sender),
                ).fetchone()
                if from_sender >= lim.max_per_sender:
                    db.execute("ROLLBACK")
                    return "sender-room-full"
            items, size = db.execute(
                "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM mail WHERE recipient = ?",
                (mail.recipient,),
            ).fetchone()
            old_size = 0 if old is None else int(old[0])
            if (old is None and items >= lim.max_items) or (
                size - old_size + len(mail.envelope) > lim.max_bytes
            ):
                db.execute("ROLLBACK")
                return "mailbox-full"
            self._seq += 1
            db.execute(
                "INSERT OR REPLACE INTO mail VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, mail.envelope, mail.envelope_hash, mail.deposited_at, self._seq),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._expired += expired  # a refused deposit rolled its expiry back: not counted
        return "stored"

    @_locked
    def pending_for(self, owner: str, now_ms: int) -> list[StoredMail]:
        self._expired += self._expire(owner, now_ms)
        rows = self._db.execute(
            "SELECT sender, slot, envelope, envelope_hash, deposited_at FROM mail "
            "WHERE recipient = ? ORDER BY deposited_at, seq",
            (owner,),
        ).fetchall()
        return [
            StoredMail(owner, s, bytes(sl), bytes(e), bytes(h), int(t)) for s, sl, e, h, t in rows
        ]

    @_locked
    def ack(self, owner: str, sender: str, slot: bytes, envelope_hash: bytes) -> AckOutcome:
        deleted = self._db.execute(
            "DELETE FROM mail "
            "WHERE recipient = ? AND sender = ? AND slot = ? AND envelope_hash = ?",
            (owner, sender, slot, envelope_hash),
        ).rowcount
        if deleted:
            return "deleted"
        row = self._db.execute(
            "SELECT 1 FROM mail WHERE recipient = ? AND sender = ? AND slot = ?",
            (owner, sender, slot),
        ).fetchone()
        return "unknown" if row is None else "replaced"

    @_locked
    def publish_prekey(self, prekey: StoredPrekey, now_ms: int) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR REPLACE INTO prekeys VALUES (?, ?, ?, ?, ?)",
                (
                    prekey.owner,
                    prekey.prekey_id,
                    prekey.not_before,
                    prekey.not_after,
                    prekey.signed,
                ),
            )
            db.execute(
                "DELETE FROM prekeys WHERE owner = ? AND (not_after <= ? OR prekey_id NOT IN "
                "(SELECT prekey_id FROM prekeys WHERE owner = ? AND not_after > ? "
                "ORDER BY not_before DESC, prekey_id DESC LIMIT ?))",
                (prekey.owner, now_ms, prekey.owner, now_ms, self.limits.max_prekeys),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @_locked
    def prekeys_for(self, owner: str, now_ms: int) -> list[StoredPrekey]:
        rows = self._db.execute(
            "SELECT prekey_id, not_before, not_after, signed FROM prekeys "
            "WHERE owner = ? AND not_after > ? ORDER BY not_before DESC, prekey_id DESC LIMIT ?",
            (owner, now_ms, self.limits.max_prekeys),
        ).fetchall()
        return [StoredPrekey(owner, bytes(i), int(b), int(a), bytes(s)) for i, b, a, s in rows]

    @_locked
    def sweep(self, now_ms: int) -> int:
        expired = self._db.execute(
            "DELETE FROM mail WHERE deposited_at <= ?", (now_ms - self.limits.max_age_ms,)
        ).rowcount
        self._db.execute("DELETE FROM prekeys WHERE not_after <= ?", (now_ms,))
        self._expired += expired
        return int(expired)

    def expired_count(self) -> int:
        return self._expired

    @_locked
    def mail_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM mail").fetchone()[0])

    @_locked
    def mail_bytes(self) -> int:
        row = self._db.execute("SELECT coalesce(sum(length(envelope)), 0) FROM mail").fetchone()
        return int(row[0])

    @_locked
    def prekey_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM prekeys").fetchone()[0])

    @_locked
    def close(self) -> None:
        self._db.close()


class MemoryMailStore(SqliteMailStore):
    """:class:`MailStore` for a relay without ``--data``: in memory, lost on exit.

    The same SQL as on disk (one set of rules), in an in-memory database.
    """

    def __init__(self, limits: MailLimits | None = None) -> None:
        super().__init__(None, limits)


T = TypeVar("T")


class ThreadedMailStore:
    """An :class:`AsyncMailStore` over a synchronous :class:`MailStore`: one worker thread.

    One thread, so calls run one at a time in the order they were made (the
    store's transactions never interleave), and a disk flush stalls only the
    mail requests waiting behind it, never the event loop's forwarding.
    SQLite's errors become :class:`StoreUnavailable`.
    """

    def __init__(self, store: MailStore) -> None:
        self.store = store
        self.limits = store.limits
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="relay-mail")

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._worker, call, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"mail store failed: {exc}") from exc

    async def deposit(self, mail: StoredMail) -> DepositOutcome:
        return await self._run(self.store.deposit, mail)

    async def pending_for(self, owner: str, now_ms: int) -> list[StoredMail]:
        return await self._run(self.store.pending_for, owner, now_ms)

    async def ack(self, owner: str, sender: str, slot: bytes, envelope_hash: bytes) -> AckOutcome:
        return await self._run(self.store.ack, owner, sender, slot, envelope_hash)

    async def publish_prekey(self, prekey: StoredPrekey, now_ms: int) -> list[StoredPrekey]:
        return await self._run(self._publish, prekey, now_ms)

    def _publish(self, prekey: StoredPrekey, now_ms: int) -> list[StoredPrekey]:
        self.store.publish_prekey(prekey, now_ms)
        return self.store.prekeys_for(prekey.owner, now_ms)

    async def prekeys_for(self, owner: str, now_ms: int) -> list[StoredPrekey]:
        return await self._run(self.store.prekeys_for, owner, now_ms)

    async def sweep(self, now_ms: int) -> int:
        return await self._run(self.store.sweep, now_ms)

    def mail_count(self) -> int:
        return self.store.mail_count()

    def mail_bytes(self) -> int:
        return self.store.mail_bytes()

    def prekey_count(self) -> int:
        return self.store.prekey_count()

    def expired_count(self) -> int:
        return self.store.expired_count()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._worker.shutdown)
        self.store.close()
