"""Opening the ledger file, migrating it, and the transactions every part writes in.

:class:`Store` owns the SQLite connection; the ledger's parts
(:mod:`.contacts`, :mod:`.transfers`, :mod:`.quarantine`) are mixins over it
and :class:`~.ledger.Ledger` puts them together. One connection, used by one
thread at a time: the caller's (the event loop's, in the peer), and for the
``COMMIT`` of :meth:`Store.write_off_loop` a committer thread, while the
caller's thread waits for any statement of its own (see that method).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import P2PTransferError, StorageError
from . import schema
from .records import TransferRow

__all__ = ["BUSY_TIMEOUT_MS", "PendingWrites", "Store", "connect"]

_INSERT_ENTRY = (
    "INSERT INTO journal (seq, kind, transfer_id, at, signed_transfer, signed_receipt, "
    "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

_T = TypeVar("_T")

BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another process's write transaction before giving up."""


def _create_private_file(path: Path) -> None:
    """Create ``path`` 0600 (inside a 0700 parent) before SQLite ever opens it."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if os.name == "posix" and mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot create the ledger {path}: {exc.strerror}") from exc


def _tighten_sidecars(path: Path) -> None:
    """SQLite gives -wal/-shm the database's mode; make sure, in case they pre-existed."""
    if os.name != "posix":
        return
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(side.lstat().st_mode) & 0o077:
                side.chmod(0o600)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    migrations = schema.MIGRATIONS
    while True:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > len(migrations):
            raise StorageError(
                f"the ledger {path} has schema version {version}, newer than this program "
                f"knows ({len(migrations)}); upgrade p2ptransfer"
            )
        if version == len(migrations):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            (locked_version,) = conn.execute("PRAGMA user_version").fetchone()
            if locked_version == version:  # nobody else migrated meanwhile
                for statement in migrations[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class PendingWrites:
    """What one write transaction has appended so far, written to SQLite just before COMMIT.

    A batch of N transfers would otherwise cost 3N statements (journal row,
    head, state row); held here, it is one ``executemany`` per table and one
    head update. Nothing is visible to other connections before COMMIT either
    way, so what is committed — and when — is unchanged: the same rows, in
    the same order per table, in one transaction. Reads inside the
    transaction see these writes through :meth:`TransferBook._current`.
    """

    __slots__ = ("entries", "fetched", "head", "rows")

    def __init__(self) -> None:
        self.head: tuple[int, bytes] | None = None  # (seq, hash) after the last append
        self.entries: list[tuple[Any, ...]] = []  # journal rows, in seq order
        # (transfer id, direction) -> (row after this transaction, inserted by it?).
        # Dict order is first-write order: the order the rows were inserted before.
        self.rows: dict[tuple[bytes, str], tuple[TransferRow, bool]] = {}
        # Rows looked up in bulk inside this transaction (None: not in the ledger).
        self.fetched: dict[tuple[bytes, str], TransferRow | None] = {}


class _Connection(sqlite3.Connection):
    """The ledger's connection: a statement waits while a COMMIT runs in the committer thread.

    ``_busy`` is held from just before a COMMIT is handed to the committer
    thread until that thread is done with the connection; every statement
    issued meanwhile (from the event loop: another session's lookup, the
    next transaction's BEGIN) waits for it, so the connection is never used
    by two threads at once and nothing sees the transaction half-committed.
    """

    _busy: threading.Lock

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        with self._busy:
            return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        with self._busy:
            return super().executemany(sql, parameters)

    def close(self) -> None:
        with self._busy:
            super().close()


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """Open (creating 0600 and migrating as needed) the SQLite file at ``path``.

    ``busy_timeout_ms`` bounds how long a write waits for another process's
    write transaction before it fails with StorageError.
    """
    if type(busy_timeout_ms) is not int or busy_timeout_ms < 0:
        raise ValueError("busy_timeout_ms must be a non-negative int")
    _create_private_file(path)
    old_umask = os.umask(0o077)
    conn: sqlite3.Connection | None = None
    try:
        # check_same_thread=False: only for write_off_loop's COMMIT, which runs in the
        # committer thread while _Connection._busy keeps every other use out.
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            factory=_Connection,
            check_same_thread=False,
        )
        conn._busy = threading.Lock()
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise StorageError(f"the ledger {path} cannot use WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise StorageError(f"cannot open the ledger {path}: {exc}") from exc
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    finally:
        os.umask(old_umask)
    _tighten_sidecars(path)
    return conn


class Store:
    """The connection and its transactions; the base of every part of the ledger."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._pending: PendingWrites | None = None
        self._defer_commit = False  # inside write_off_loop: leave the COMMIT to it
        self._due: PendingWrites | None = None  # a transaction waiting for that COMMIT
        self._committer: ThreadPoolExecutor | None = None
        self._turn: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    async def write_off_loop(self, write: Callable[[], _T]) -> _T:
        """Run ``write`` (a call that makes one write transaction) with its COMMIT in a thread.

        Everything but the COMMIT — BEGIN, the reads, the checks, the
        inserts — runs here, on the caller's thread, as in a plain call; only
        the COMMIT (the fsync that makes it durable) goes to one committer
        thread, so an event loop keeps serving other sessions meanwhile, and
        other calls of this method wait their turn without blocking it. The
        work in the transaction holds the GIL, so it stays here (in a thread
        it would only compete with the loop), and so does the checkpoint
        written after the COMMIT: each of its system calls would hand the
        GIL back and forth. Returns once the COMMIT is durable: the caller
        acts on the result (sends a receipt, a transfer) only then, exactly
        as after a plain call. An error of the COMMIT rolls the transaction
        back and is raised here as StorageError.

        Why this is safe with one connection: the connection is opened with
        ``check_same_thread=False``, and ``_Connection._busy`` is taken
        before the COMMIT is handed over and released by the committer
        thread when it is done, so no statement of this thread runs in
        between (it waits), and the committer touches the connection only
        then. SQLite itself serializes calls on a connection as well
        (Python builds it threadsafe); the lock is what keeps a BEGIN or a
        read from slipping in while the transaction is still open.
        """
        if not isinstance(self._conn, _Connection) or self._defer_commit:
            return write()  # a connection of our own making only; never nested
        loop = asyncio.get_running_loop()
        if self._turn is None or self._turn[0] is not loop:
            self._turn = (loop, asyncio.Lock())
        async with self._turn[1]:  # writers here wait their turn without blocking the loop
            return await self._write_then_commit(write)

    async def _write_then_commit(self, write: Callable[[], _T]) -> _T:
        self._defer_commit = True
        try:
            result = write()
        finally:
            self._defer_commit = False
            due, self._due = self._due, None
            if due is not None:  # committed also when write raised after its transaction
                await self._commit_in_thread(due)
        return result

    async def _commit_in_thread(self, pending: PendingWrites) -> None:
        conn = self._conn
        assert isinstance(conn, _Connection)
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="ledger-commit")
        conn._busy.acquire()
        try:
            done = asyncio.get_running_loop().run_in_executor(
                self._committer, self._commit_and_release, conn
            )
        except BaseException:
            conn._busy.release()
            raise
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            # The COMMIT still completes in its thread; its checkpoint follows it then,
            # on the loop, rather than waiting for a next commit that may never come.
            if pending.entries:
                done.add_done_callback(lambda future: self._checkpoint_after(future, pending))
            raise
        if pending.entries:
            self._after_commit(pending)  # here: its file I/O would pass the GIL to and fro

    def _checkpoint_after(self, future: asyncio.Future[None], pending: PendingWrites) -> None:
        """The checkpoint of a COMMIT whose caller was cancelled, once it has landed."""
        if future.cancelled() or future.exception() is not None:
            return  # rolled back: nothing new to checkpoint
        # A ledger closed meanwhile, a full disk: the next commit (or verify) writes one.
        with contextlib.suppress(OSError, sqlite3.Error, P2PTransferError):
            self._after_commit(pending)

    def _commit_and_release(self, conn: _Connection) -> None:
        """The committer thread's part: COMMIT (or roll back), then release the connection."""
        try:
            try:
                sqlite3.Connection.execute(conn, "COMMIT")  # _busy is ours: not conn.execute
            except BaseException as exc:
                if conn.in_transaction:
                    sqlite3.Connection.execute(conn, "ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"writing the ledger {self.path} failed: {exc}") from exc
                raise
        finally:
            conn._busy.release()

    def _close_committer(self) -> None:
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None

    def _next_entry(
        self,
        conn: sqlite3.Connection,
        kind: schema.EntryKind,
        transfer_id: bytes,
        at: int,
        signed_blob: bytes | None,
        receipt_blob: bytes | None,
    ) -> schema.JournalEntry:
        """The entry that would follow the head; inside a write transaction only."""
        pending = self._pending
        if pending is None:
            raise RuntimeError("journal entries are written inside a write transaction only")
        if pending.head is None:
            pending.head = conn.execute("SELECT seq, hash FROM ledger_head").fetchone()
            assert pending.head is not None
        head_seq, head_hash = pending.head
        seq = head_seq + 1
        encoded = schema.encode_entry(seq, kind, transfer_id, at, signed_blob, receipt_blob)
        digest = schema.entry_hash(head_hash, encoded)
        return schema.JournalEntry(
            seq, kind, transfer_id, at, signed_blob, receipt_blob, head_hash, digest
        )

    def _chain(self, entry: schema.JournalEntry) -> PendingWrites:
        """Hold ``entry`` (checked by the caller) for the COMMIT and make it the head."""
        pending = self._pending
        assert pending is not None and pending.head is not None
        pending.entries.append(
            (entry.seq, entry.kind.text, entry.transfer_id, entry.at, entry.signed_transfer,
             entry.signed_receipt, entry.prev_hash, entry.hash)
        )  # fmt: skip
        pending.head = (entry.seq, entry.hash)
        return pending

    def _flush(self, conn: sqlite3.Connection, pending: PendingWrites) -> None:
        """Write the transaction's journal entries and new head, just before COMMIT."""
        if pending.entries:
            conn.executemany(_INSERT_ENTRY, pending.entries)
            assert pending.head is not None
            conn.execute("UPDATE ledger_head SET seq = ?, hash = ?", pending.head)

    def _after_commit(self, pending: PendingWrites) -> None:
        """Runs after a COMMIT that appended journal entries (the checkpoint's hook)."""

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits, or none of it (any exception rolls back).

        BEGIN IMMEDIATE takes the write lock up front, so the decisions made
        inside (is this id known?) cannot be invalidated by another writer.
        """
        conn = self._conn
        if self._due is not None:
            raise RuntimeError("one write transaction per write_off_loop call")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the ledger {self.path}: {exc}") from exc
        self._pending = PendingWrites()
        pending = self._pending
        try:
            yield conn
            self._flush(conn, pending)
            if self._defer_commit:
                self._due = pending  # write_off_loop commits it, in its thread
            else:
                conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"writing the ledger {self.path} failed: {exc}") from exc
            raise
        finally:
            self._pending = None
        if pending.entries and self._due is not pending:
            self._after_commit(pending)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
