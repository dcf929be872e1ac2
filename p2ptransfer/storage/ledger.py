"""The peer's ledger: contacts and pins, transfers, receipts, a hash-chained journal.

The money part is an append-only **journal**; everything else is derived::

    journal entry  = (seq, kind, transfer id, at, signed transfer?, signed receipt?)
    entry hash     = SHA-256(context || previous entry's hash || canonical entry bytes)
    transfers row  = fold of :func:`apply_entry` over the transfer's entries
    balance        = SUM(+amount in, -amount out) over completed rows

Transitions of one transfer (anything else is refused, when writing *and*
when verifying, by the same function :func:`apply_entry`)::

    out:  (none) --out-pending--> pending --out-receipt--> completed | rejected
          pending --out-failed--> failed --out-receipt--> completed | rejected
    in:   (none) --in-recorded--> completed | rejected

A "failed" outgoing transfer can still complete: *failed* is the user giving
up, while a receipt is the recipient's signed word about what happened.

Exactly-once rests on three properties of the write path: every write is one
``BEGIN IMMEDIATE`` transaction (journal entry + state row + head, or nothing),
commits are durable (WAL with ``synchronous=FULL``), and an incoming transfer id
is unique — the same id again is answered from storage, never applied twice.

Time is passed in by the caller (unix milliseconds), ids come from the caller.
docs/ledger.md describes the schema, the chain and what is guaranteed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import re
import sqlite3
import stat
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import (
    AlreadyExists,
    DecodeError,
    InputError,
    LedgerIntegrityError,
    NotFound,
    P2PTransferError,
    PinMismatch,
    StorageError,
    TransferConflict,
)
from ..protocol.amounts import check_currency, format_amount
from ..protocol.identity import PublicIdentity
from ..protocol.transfer import (
    MAX_TIMESTAMP_MS,
    TRANSFER_ID_SIZE,
    Comparison,
    RejectReason,
    SignedReceipt,
    SignedTransfer,
    compare,
)
from . import export, schema
from .schema import GENESIS_HASH, EntryKind, JournalEntry

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Contact",
    "HandlePin",
    "Ledger",
    "TransferRow",
    "TransferStatus",
    "apply_entry",
    "check_contact_name",
]

BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another process's write transaction before giving up."""

_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ADDRESS_PREFIX = "p2pt1"
_MAX_NOTE = 1000


class TransferStatus(enum.StrEnum):
    """Status of a transfer row; compares equal to its text ("pending", ...)."""

    PENDING = "pending"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"


def _reason_text(reason: RejectReason) -> str:
    return reason.name.lower()


def check_contact_name(name: str, what: str = "contact name") -> str:
    """Return ``name`` if it is a valid contact name (or handle); InputError otherwise.

    1-64 ASCII letters, digits, '.', '_' or '-': safe in a terminal and in a
    file name, with no look-alike Unicode. A name may not look like an address
    (start with "p2pt1"), so ``send bob`` and ``send p2pt1...`` can never be
    confused.
    """
    if not isinstance(name, str):
        raise InputError(f"a {what} must be text")
    if not _NAME_RE.fullmatch(name):
        shown = repr(name) if len(name) <= 80 else f"{len(name)} characters"
        raise InputError(
            f"invalid {what} {shown}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'"
        )
    if name.lower().startswith(_ADDRESS_PREFIX):
        raise InputError(f"invalid {what} {name!r}: it must not look like an address (p2pt1...)")
    return name


def _check_note(note: object) -> None:
    """Notes are shown in terminals: no control, format or line-separator characters."""
    if not isinstance(note, str) or len(note) > _MAX_NOTE:
        raise InputError(f"a contact note is text of at most {_MAX_NOTE} characters")
    for ch in note:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise InputError(
                f"a contact note may not contain control or invisible characters "
                f"(found U+{ord(ch):04X})"
            )


def _check_time(at: object, what: str = "time") -> int:
    if type(at) is not int or not 0 <= at <= MAX_TIMESTAMP_MS:
        raise InputError(f"{what} must be unix time in milliseconds, 0 to {MAX_TIMESTAMP_MS}")
    return at


def _check_transfer_id(transfer_id: object) -> bytes:
    if type(transfer_id) is not bytes or len(transfer_id) != TRANSFER_ID_SIZE:
        raise InputError(f"a transfer id is exactly {TRANSFER_ID_SIZE} bytes")
    return transfer_id


def _canonical_address(address: str) -> tuple[str, bytes]:
    identity = PublicIdentity.from_address(address)
    return identity.address, identity.public_key


def _describe_key(address: str) -> str:
    return f"{address} (fingerprint {PublicIdentity.from_address(address).fingerprint})"


# --- records -------------------------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """A named peer whose key is pinned: its address *is* the key."""

    name: str
    address: str
    public_key: bytes
    added_at: int
    verified_at: int | None
    note: str

    @property
    def verified(self) -> bool:
        """True once the user compared safety numbers with this contact."""
        return self.verified_at is not None

    @property
    def fingerprint(self) -> str:
        return PublicIdentity(self.public_key).fingerprint


@dataclass(frozen=True)
class HandlePin:
    """A relay-directory handle pinned to the key it resolved to on first use."""

    handle: str
    address: str
    public_key: bytes
    pinned_at: int


@dataclass(frozen=True)
class TransferRow:
    """The current state of one transfer, as the journal implies it.

    ``created_at`` is the time inside the signed transfer (the sender's clock);
    ``updated_at`` is the ``at`` of the last journal entry for it.
    ``recorded_seq``/``updated_seq`` are the journal entries that created and
    last changed it.
    """

    id: bytes
    direction: str
    counterparty: str
    amount_minor: int
    currency: str
    memo: str
    status: TransferStatus
    reason: str | None
    created_at: int
    updated_at: int
    signed_transfer: bytes = field(repr=False)
    signed_receipt: bytes | None = field(repr=False)
    recorded_seq: int
    updated_seq: int

    @cached_property
    def signed(self) -> SignedTransfer:
        """The decoded signed transfer."""
        return SignedTransfer.decode(self.signed_transfer)

    @cached_property
    def receipt(self) -> SignedReceipt | None:
        """The decoded signed receipt (None while pending or failed)."""
        if self.signed_receipt is None:
            return None
        return SignedReceipt.decode(self.signed_receipt)

    @property
    def amount(self) -> str:
        """The amount as decimal text ("12.50")."""
        return format_amount(self.amount_minor, self.currency)

    @property
    def reject_reason(self) -> RejectReason | None:
        """Why it was rejected, for rejected rows."""
        receipt = self.receipt
        if receipt is None or receipt.receipt.accepted:
            return None
        return receipt.receipt.reason


_CONTACT_QUERIES = {
    "name": "SELECT name, address, public_key, added_at, verified_at, note FROM contacts "
    "WHERE name = ?",
    "address": "SELECT name, address, public_key, added_at, verified_at, note FROM contacts "
    "WHERE address = ?",
}

_INSERT_ENTRY = (
    "INSERT INTO journal (seq, kind, transfer_id, at, signed_transfer, signed_receipt, "
    "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_ROW = (
    "UPDATE transfers SET status = ?, reason = ?, updated_at = ?, "
    "signed_receipt = ?, updated_seq = ? WHERE id = ? AND direction = ?"
)
_LOOKUP_CHUNK = 500  # ids per "IN (...)" lookup: far below SQLite's variable limit
_DECODED_CACHE = 4096  # signed transfers remembered by their bytes (see Ledger._decoded)

_ROW_COLUMNS = (
    "id, direction, counterparty, amount_minor, currency, memo, status, reason, created_at, "
    "updated_at, signed_transfer, signed_receipt, recorded_seq, updated_seq"
)
_INSERT_ROW = (
    f"INSERT INTO transfers ({_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
)


def _row_from_sql(values: Sequence[Any]) -> TransferRow:
    (tid, direction, counterparty, amount, currency, memo, status, reason, created, updated,
     st_blob, sr_blob, recorded_seq, updated_seq) = values  # fmt: skip
    return TransferRow(
        id=tid,
        direction=direction,
        counterparty=counterparty,
        amount_minor=amount,
        currency=currency,
        memo=memo,
        status=TransferStatus(status),
        reason=reason,
        created_at=created,
        updated_at=updated,
        signed_transfer=st_blob,
        signed_receipt=sr_blob,
        recorded_seq=recorded_seq,
        updated_seq=updated_seq,
    )


# --- the one state-transition function -------------------------------------------------


class _TransitionError(P2PTransferError):
    """An entry that the state machine does not allow (internal; surfaced differently)."""


def _decode_transfer(entry: JournalEntry, given: SignedTransfer | None) -> SignedTransfer:
    if entry.signed_transfer is None:
        raise _TransitionError(f"a {entry.kind.text} entry needs the signed transfer")
    signed = given if given is not None else SignedTransfer.decode(entry.signed_transfer)
    if signed.id != entry.transfer_id:
        raise _TransitionError("the signed transfer has another id than the entry")
    signed.verify()
    return signed


def _decode_receipt(
    entry: JournalEntry, signed: SignedTransfer, given: SignedReceipt | None
) -> SignedReceipt:
    if entry.signed_receipt is None:
        raise _TransitionError(f"a {entry.kind.text} entry needs the signed receipt")
    receipt = given if given is not None else SignedReceipt.decode(entry.signed_receipt)
    receipt.verify(signed)
    return receipt


def _decided(receipt: SignedReceipt) -> tuple[TransferStatus, str | None]:
    if receipt.receipt.accepted:
        return TransferStatus.COMPLETED, None
    return TransferStatus.REJECTED, _reason_text(receipt.receipt.reason)


def apply_entry(
    entry: JournalEntry,
    current: TransferRow | None,
    *,
    decoded_transfer: SignedTransfer | None = None,
    decoded_receipt: SignedReceipt | None = None,
) -> TransferRow:
    """The transfer row after ``entry``, given the row before it (None: not yet known).

    ``decoded_transfer``/``decoded_receipt`` may pass the objects whose
    ``encode()`` the entry's blobs are, so the write path skips decoding them
    again (encoding is canonical: decoding the blob gives the same object).
    Signatures and bindings are checked either way.

    Checks everything the entry claims: the signed transfer is by its sender,
    the receipt is by the transfer's recipient and answers exactly that
    transfer, and the transition is legal. Raises SignatureError,
    ProtocolError/DecodeError or a P2PTransferError naming the illegal
    transition. The write path and ``verify()`` both use this function, so
    what can be written is exactly what verifies.
    """
    kind = entry.kind
    if kind in (EntryKind.OUT_PENDING, EntryKind.IN_RECORDED):
        if current is not None:
            raise _TransitionError(
                f"transfer {entry.transfer_id.hex()} ({kind.direction}) is already recorded"
            )
        signed = _decode_transfer(entry, decoded_transfer)
        assert entry.signed_transfer is not None  # _decode_transfer checked it
        t = signed.transfer
        if kind is EntryKind.OUT_PENDING:
            if entry.signed_receipt is not None:
                raise _TransitionError("an out-pending entry carries no receipt")
            receipt: SignedReceipt | None = None
            status, reason = TransferStatus.PENDING, None
            counterparty = t.recipient
        else:
            receipt = _decode_receipt(entry, signed, decoded_receipt)
            status, reason = _decided(receipt)
            counterparty = t.sender
        row = TransferRow(
            id=t.id,
            direction=kind.direction,
            counterparty=counterparty,
            amount_minor=t.amount,
            currency=t.currency,
            memo=t.memo,
            status=status,
            reason=reason,
            created_at=t.created_at,
            updated_at=entry.at,
            signed_transfer=entry.signed_transfer,
            signed_receipt=entry.signed_receipt,
            recorded_seq=entry.seq,
            updated_seq=entry.seq,
        )
        return _with_decoded(row, signed, receipt)
    if current is None:
        raise _TransitionError(f"transfer {entry.transfer_id.hex()} (out) was never recorded")
    if entry.signed_transfer is not None:
        raise _TransitionError(f"a {kind.text} entry carries no signed transfer")
    if kind is EntryKind.OUT_RECEIPT:
        if current.status not in (TransferStatus.PENDING, TransferStatus.FAILED):
            raise _TransitionError(
                f"transfer {entry.transfer_id.hex()} is already {current.status}"
            )
        receipt = _decode_receipt(entry, current.signed, decoded_receipt)
        status, reason = _decided(receipt)
    else:  # OUT_FAILED
        if current.status is not TransferStatus.PENDING:
            raise _TransitionError(
                f"transfer {entry.transfer_id.hex()} is {current.status}, not pending"
            )
        if entry.signed_receipt is not None:
            raise _TransitionError("an out-failed entry carries no receipt")
        receipt = None
        status, reason = TransferStatus.FAILED, None
    row = dataclasses.replace(  # a new row: replace() carries no decode cache over
        current,
        status=status,
        reason=reason,
        updated_at=entry.at,
        signed_receipt=entry.signed_receipt,
        updated_seq=entry.seq,
    )
    return _with_decoded(row, current.signed, receipt)


def _with_decoded(
    row: TransferRow, signed: SignedTransfer, receipt: SignedReceipt | None
) -> TransferRow:
    """Fill the row's decode caches with objects already at hand (saves a decode per use)."""
    row.__dict__["signed"] = signed
    row.__dict__["receipt"] = receipt
    return row


# --- opening -----------------------------------------------------------------------


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


# --- the ledger --------------------------------------------------------------------


class _PendingWrites:
    """What one write transaction has appended so far, written to SQLite just before COMMIT.

    A batch of N transfers would otherwise cost 3N statements (journal row,
    head, state row); held here, it is one ``executemany`` per table and one
    head update. Nothing is visible to other connections before COMMIT either
    way, so what is committed — and when — is unchanged: the same rows, in
    the same order per table, in one transaction. Reads inside the
    transaction see these writes through :meth:`Ledger._current`.
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


class Ledger:
    """One peer's ledger file. Not thread-safe: use it from one thread (the event loop)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._pending: _PendingWrites | None = None
        # Signed transfers this ledger wrote, by their exact bytes: a row read back
        # (the sender's pending transfer, when its receipt comes) gets its decoded
        # object from here instead of decoding and validating the blob again.
        # Keyed by the bytes themselves, so a hit is the very object they encode.
        self._decoded: OrderedDict[bytes, SignedTransfer] = OrderedDict()

    # --- lifecycle ---

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Ledger:
        """Open (creating 0600 and migrating as needed) the ledger at ``path``.

        ``busy_timeout_ms`` bounds how long a write waits for another
        process's write transaction before it fails with StorageError.
        """
        path = Path(path)
        if type(busy_timeout_ms) is not int or busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must be a non-negative int")
        _create_private_file(path)
        old_umask = os.umask(0o077)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
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
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        return int(version)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits, or none of it (any exception rolls back).

        BEGIN IMMEDIATE takes the write lock up front, so the decisions made
        inside (is this id known?) cannot be invalidated by another writer.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the ledger {self.path}: {exc}") from exc
        self._pending = _PendingWrites()
        try:
            yield conn
            self._flush(conn, self._pending)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"writing the ledger {self.path} failed: {exc}") from exc
            raise
        finally:
            self._pending = None

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

    # --- contacts and pins ---

    def add_contact(
        self, name: str, address: str, at: int, note: str = "", *, handle: str | None = None
    ) -> Contact:
        """Save ``name`` for ``address`` and pin its key.

        One name per address and one address per name: AlreadyExists if the
        name is taken or the address is already saved under another name (so
        "who is this key?" always has one answer). To change a contact's key,
        remove it first — deliberately a separate step. With ``handle`` (the
        address came from the relay directory) the handle is pinned in the
        same transaction: both are written, or neither.
        """
        check_contact_name(name)
        canonical, public_key = _canonical_address(address)
        _check_time(at, "added_at")
        _check_note(note)
        if handle is not None:
            check_contact_name(handle, "handle")
        with self._transaction() as conn:
            if handle is not None:
                self._pin_handle(conn, handle, canonical, public_key, at)
            existing = self._contact_row(conn, "name", name)
            if existing is not None:
                if existing.address == canonical:
                    raise AlreadyExists(f"contact {name!r} already exists with this address")
                raise AlreadyExists(
                    f"contact {name!r} already exists and is pinned to "
                    f"{_describe_key(existing.address)}; remove it first if their key "
                    "really changed"
                )
            other = self._contact_row(conn, "address", canonical)
            if other is not None:
                raise AlreadyExists(f"this address is already saved as contact {other.name!r}")
            conn.execute(
                "INSERT INTO contacts (name, address, public_key, added_at, verified_at, note) "
                "VALUES (?, ?, ?, ?, NULL, ?)",
                (name, canonical, public_key, at, note),
            )
        return Contact(name, canonical, public_key, at, None, note)

    def set_limit(self, name: str, currency: str, max_minor: int | None) -> None:
        """Accept at most ``max_minor`` of ``currency`` per transfer from contact ``name``.

        ``None`` removes the limit. NotFound for an unknown contact.
        """
        code = check_currency(currency)
        if max_minor is not None and (type(max_minor) is not int or max_minor <= 0):
            raise InputError("a limit is a positive amount")
        with self._transaction() as conn:
            if self._contact_row(conn, "name", name) is None:
                raise NotFound(self._no_contact(name))
            if max_minor is None:
                conn.execute(
                    "DELETE FROM contact_limits WHERE name = ? AND currency = ?", (name, code)
                )
            else:
                conn.execute(
                    "INSERT INTO contact_limits (name, currency, max_minor) VALUES (?, ?, ?) "
                    "ON CONFLICT (name, currency) DO UPDATE SET max_minor = excluded.max_minor",
                    (name, code, max_minor),
                )

    def limits(self) -> dict[tuple[str, str], int]:
        """Every per-contact limit: (address, currency) -> max minor units per transfer."""
        rows = self._conn.execute(
            "SELECT c.address, l.currency, l.max_minor "
            "FROM contact_limits l JOIN contacts c ON c.name = l.name"
        ).fetchall()
        return {(address, currency): max_minor for address, currency, max_minor in rows}

    def remove_contact(self, name: str) -> None:
        """Forget a contact and its pin (its transfers stay in the ledger)."""
        with self._transaction() as conn:
            if conn.execute("DELETE FROM contacts WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(self._no_contact(name))

    def mark_verified(self, name: str, at: int) -> Contact:
        """Record that the user compared safety numbers with ``name`` at ``at``."""
        _check_time(at, "verified_at")
        with self._transaction() as conn:
            if (
                conn.execute(
                    "UPDATE contacts SET verified_at = ? WHERE name = ?", (at, name)
                ).rowcount
                == 0
            ):
                raise NotFound(self._no_contact(name))
        return self.get_contact(name)

    def get_contact(self, name: str) -> Contact:
        contact = self._contact_row(self._conn, "name", name)
        if contact is None:
            raise NotFound(self._no_contact(name))
        return contact

    def contacts(self) -> list[Contact]:
        rows = self._conn.execute(
            "SELECT name, address, public_key, added_at, verified_at, note FROM contacts "
            "ORDER BY name"
        ).fetchall()
        return [Contact(*row) for row in rows]

    def contact_for_address(self, address: str) -> Contact | None:
        """The contact whose pinned key is the one in ``address``, if any."""
        canonical, _ = _canonical_address(address)
        return self._contact_row(self._conn, "address", canonical)

    @staticmethod
    def _no_contact(name: str) -> str:
        return f"no contact named {name!r}; 'p2ptransfer contacts list' shows your contacts"

    @staticmethod
    def _contact_row(conn: sqlite3.Connection, column: str, value: str) -> Contact | None:
        row = conn.execute(_CONTACT_QUERIES[column], (value,)).fetchone()
        return None if row is None else Contact(*row)

    def pin_handle(self, handle: str, address: str, at: int) -> HandlePin:
        """Pin a relay-directory handle to the key it resolved to, on first use.

        The same key again returns the pin; a different key raises
        PinMismatch (the relay, or whoever answers for it, is not trusted to
        change who a handle is). Handles are compared exactly as given.
        """
        check_contact_name(handle, "handle")
        canonical, public_key = _canonical_address(address)
        _check_time(at, "pinned_at")
        with self._transaction() as conn:
            return self._pin_handle(conn, handle, canonical, public_key, at)

    @staticmethod
    def _pin_handle(
        conn: sqlite3.Connection, handle: str, canonical: str, public_key: bytes, at: int
    ) -> HandlePin:
        row = conn.execute(
            "SELECT handle, address, public_key, pinned_at FROM handle_pins WHERE handle = ?",
            (handle,),
        ).fetchone()
        if row is not None:
            pin = HandlePin(*row)
            if pin.public_key != public_key:
                raise PinMismatch(
                    f"IDENTITY CHANGED: handle {handle!r} was pinned to "
                    f"{_describe_key(pin.address)} and the relay now says "
                    f"{_describe_key(canonical)}; refusing. Someone may be impersonating "
                    f"{handle!r}. If they really changed keys, compare safety numbers with "
                    "them and remove the old pin deliberately."
                )
            return pin
        conn.execute(
            "INSERT INTO handle_pins (handle, address, public_key, pinned_at) VALUES (?, ?, ?, ?)",
            (handle, canonical, public_key, at),
        )
        return HandlePin(handle, canonical, public_key, at)

    def unpin_handle(self, handle: str) -> None:
        """Forget a handle's pin (the explicit step after a verified key change)."""
        with self._transaction() as conn:
            if conn.execute("DELETE FROM handle_pins WHERE handle = ?", (handle,)).rowcount == 0:
                raise NotFound(f"handle {handle!r} is not pinned")

    def handle_pin(self, handle: str) -> HandlePin | None:
        row = self._conn.execute(
            "SELECT handle, address, public_key, pinned_at FROM handle_pins WHERE handle = ?",
            (handle,),
        ).fetchone()
        return None if row is None else HandlePin(*row)

    def check_pin(self, address: str, name: str | None = None) -> Contact | None:
        """Check a presented key against the pins; return its contact (None if unknown).

        With ``name`` (the contact name or handle the user meant): if that
        name is pinned to a different key, PinMismatch — loudly, like SSH's
        changed host key. Without it, an unknown address is simply not a
        contact (None); the acceptance policy decides what that means.
        """
        canonical, public_key = _canonical_address(address)
        if name is not None:
            contact = self._contact_row(self._conn, "name", name)
            pinned = contact.address if contact is not None else None
            what = "contact"
            if contact is None:
                pin = self.handle_pin(name)
                pinned = pin.address if pin is not None else None
                what = "handle"
            if pinned is not None and pinned != canonical:
                raise PinMismatch(
                    f"IDENTITY CHANGED: {what} {name!r} is pinned to {_describe_key(pinned)} "
                    f"but the peer presented {_describe_key(canonical)}; refusing. Someone may "
                    f"be impersonating {name!r}. If they really changed keys, compare safety "
                    "numbers with them and re-add the contact deliberately."
                )
        del public_key
        return self._contact_row(self._conn, "address", canonical)

    # --- the journal ---

    def _append(
        self,
        conn: sqlite3.Connection,
        kind: EntryKind,
        transfer_id: bytes,
        at: int,
        current: TransferRow | None,
        *,
        signed: SignedTransfer | None = None,
        receipt: SignedReceipt | None = None,
    ) -> TransferRow:
        """Append one entry and the row it implies; inside a write transaction only.

        Both are held in the transaction's pending writes and reach SQLite in
        bulk just before COMMIT (see :class:`_PendingWrites`).
        """
        pending = self._pending
        if pending is None:
            raise RuntimeError("_append runs inside a write transaction only")
        signed_blob = signed.encode() if signed is not None else None
        receipt_blob = receipt.encode() if receipt is not None else None
        if pending.head is None:
            pending.head = conn.execute("SELECT seq, hash FROM ledger_head").fetchone()
            assert pending.head is not None
        head_seq, head_hash = pending.head
        seq = head_seq + 1
        encoded = schema.encode_entry(seq, kind, transfer_id, at, signed_blob, receipt_blob)
        digest = schema.entry_hash(head_hash, encoded)
        entry = JournalEntry(
            seq, kind, transfer_id, at, signed_blob, receipt_blob, head_hash, digest
        )
        row = apply_entry(entry, current, decoded_transfer=signed, decoded_receipt=receipt)
        pending.entries.append(
            (seq, kind.text, transfer_id, at, signed_blob, receipt_blob, head_hash, digest)
        )
        pending.head = (seq, digest)
        key = (transfer_id, kind.direction)
        earlier = pending.rows.get(key)
        pending.rows[key] = (row, current is None or (earlier is not None and earlier[1]))
        if signed is not None and signed_blob is not None:
            self._remember(signed_blob, signed)
        return row

    def _remember(self, blob: bytes, signed: SignedTransfer) -> None:
        decoded = self._decoded
        decoded[blob] = signed
        decoded.move_to_end(blob)
        if len(decoded) > _DECODED_CACHE:
            decoded.popitem(last=False)

    def _flush(self, conn: sqlite3.Connection, pending: _PendingWrites) -> None:
        """Write the transaction's pending entries, head and rows (journal first: rows refer
        to it)."""
        if not pending.entries:
            return
        conn.executemany(_INSERT_ENTRY, pending.entries)
        assert pending.head is not None
        conn.execute("UPDATE ledger_head SET seq = ?, hash = ?", pending.head)
        self._write_rows(conn, list(pending.rows.values()))

    @staticmethod
    def _write_rows(conn: sqlite3.Connection, rows: Sequence[tuple[TransferRow, bool]]) -> None:
        """Insert the new rows and update the changed ones, in bulk and in the given order."""
        conn.executemany(
            _INSERT_ROW,
            [
                (
                    row.id,
                    row.direction,
                    row.counterparty,
                    row.amount_minor,
                    row.currency,
                    row.memo,
                    str(row.status),
                    row.reason,
                    row.created_at,
                    row.updated_at,
                    row.signed_transfer,
                    row.signed_receipt,
                    row.recorded_seq,
                    row.updated_seq,
                )
                for row, new in rows
                if new
            ],
        )
        conn.executemany(
            _UPDATE_ROW,
            [
                (
                    str(row.status),
                    row.reason,
                    row.updated_at,
                    row.signed_receipt,
                    row.updated_seq,
                    row.id,
                    row.direction,
                )
                for row, new in rows
                if not new
            ],
        )

    def _with_known_decode(self, row: TransferRow) -> TransferRow:
        signed = self._decoded.get(row.signed_transfer)
        if signed is not None:
            row.__dict__["signed"] = signed
        return row

    def _row(
        self, conn: sqlite3.Connection, transfer_id: bytes, direction: str
    ) -> TransferRow | None:
        found = conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM transfers WHERE id = ? AND direction = ?",  # noqa: S608
            (transfer_id, direction),
        ).fetchone()
        return None if found is None else self._with_known_decode(_row_from_sql(found))

    def _rows(
        self, conn: sqlite3.Connection, transfer_ids: Iterable[bytes], direction: str
    ) -> dict[bytes, TransferRow]:
        """The rows of ``direction`` among ``transfer_ids``, a few hundred ids per query."""
        ids = list(dict.fromkeys(transfer_ids))
        found: dict[bytes, TransferRow] = {}
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for values in conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM transfers "  # noqa: S608
                f"WHERE direction = ? AND id IN ({marks})",
                (direction, *chunk),
            ):
                row = self._with_known_decode(_row_from_sql(values))
                found[row.id] = row
        return found

    def _prefetch(
        self, conn: sqlite3.Connection, transfer_ids: Sequence[bytes], direction: str
    ) -> None:
        """Look up a batch's rows in bulk, inside its write transaction (see :meth:`_current`)."""
        pending = self._pending
        assert pending is not None
        if len(transfer_ids) < 2:
            return  # one id: the plain lookup in _current is as cheap
        found = self._rows(conn, transfer_ids, direction)
        for transfer_id in transfer_ids:
            pending.fetched[(transfer_id, direction)] = found.get(transfer_id)

    def _current(
        self, conn: sqlite3.Connection, transfer_id: bytes, direction: str
    ) -> TransferRow | None:
        """The row as this write transaction sees it: its own pending writes first."""
        pending = self._pending
        if pending is not None:
            key = (transfer_id, direction)
            written = pending.rows.get(key)
            if written is not None:
                return written[0]
            if key in pending.fetched:
                return pending.fetched[key]
        return self._row(conn, transfer_id, direction)

    # --- sending ---

    def record_outgoing(self, signed: SignedTransfer, at: int) -> TransferRow:
        """Commit ``signed`` as pending; the caller sends it only after this returns.

        The same signed transfer again returns its row (no second entry);
        different content under a known id is a TransferConflict.
        """
        (row,) = self.record_outgoing_batch([signed], at)
        return row

    def record_outgoing_batch(self, items: Sequence[SignedTransfer], at: int) -> list[TransferRow]:
        """Commit many transfers as pending in ONE transaction (one fsync), all or none."""
        _check_time(at)
        if not all(isinstance(signed, SignedTransfer) for signed in items):
            raise InputError("record_outgoing needs SignedTransfer objects")
        rows: list[TransferRow] = []
        with self._transaction() as conn:
            self._prefetch(conn, [signed.id for signed in items], "out")
            for signed in items:
                current = self._current(conn, signed.id, "out")
                if current is not None:
                    if current.signed_transfer == signed.encode():
                        rows.append(current)
                        continue
                    raise TransferConflict(
                        f"outgoing transfer {signed.id.hex()} is already recorded "
                        "with other content"
                    )
                rows.append(
                    self._append(conn, EntryKind.OUT_PENDING, signed.id, at, None, signed=signed)
                )
        return rows

    def complete_outgoing(self, signed_receipt: SignedReceipt, at: int) -> TransferRow:
        """Store the recipient's receipt: the transfer becomes completed or rejected.

        The receipt must verify against the stored transfer (SignatureError /
        ProtocolError otherwise, and the transfer stays as it was). A receipt
        for an already decided transfer is idempotent if it says the same
        thing (the first one is kept); a receipt contradicting the stored one
        is a TransferConflict (the recipient signed both: keep both sides'
        evidence, decide by hand). A failed transfer may still complete.
        """
        (row,) = self.complete_outgoing_batch([signed_receipt], at)
        return row

    def complete_outgoing_batch(
        self, receipts: Sequence[SignedReceipt], at: int
    ) -> list[TransferRow]:
        """``complete_outgoing`` for many receipts in ONE transaction: all stored, or none."""
        _check_time(at)
        if not all(isinstance(r, SignedReceipt) for r in receipts):
            raise InputError("complete_outgoing needs SignedReceipt objects")
        with self._transaction() as conn:
            self._prefetch(conn, [r.receipt.transfer_id for r in receipts], "out")
            return [self._complete(conn, receipt, at) for receipt in receipts]

    def _complete(
        self, conn: sqlite3.Connection, signed_receipt: SignedReceipt, at: int
    ) -> TransferRow:
        transfer_id = signed_receipt.receipt.transfer_id
        current = self._current(conn, transfer_id, "out")
        if current is None:
            raise NotFound(f"no outgoing transfer {transfer_id.hex()} in the ledger")
        if current.status in (TransferStatus.COMPLETED, TransferStatus.REJECTED):
            if current.signed_receipt == signed_receipt.encode():
                return current
            signed_receipt.verify(current.signed)
            stored = current.receipt
            assert stored is not None
            if stored.receipt.status == signed_receipt.receipt.status:
                return current
            raise TransferConflict(
                f"the recipient signed two different answers for transfer "
                f"{transfer_id.hex()}: it is {current.status} here, the new receipt says "
                f"{signed_receipt.receipt.status.name.lower()}"
            )
        return self._append(
            conn, EntryKind.OUT_RECEIPT, transfer_id, at, current, receipt=signed_receipt
        )

    def mark_failed(self, transfer_id: bytes, at: int) -> TransferRow:
        """The user gives up on a pending outgoing transfer (never done automatically).

        Idempotent for a failed transfer; InputError for a decided one.
        """
        _check_transfer_id(transfer_id)
        _check_time(at)
        with self._transaction() as conn:
            current = self._current(conn, transfer_id, "out")
            if current is None:
                raise NotFound(f"no outgoing transfer {transfer_id.hex()} in the ledger")
            if current.status is TransferStatus.FAILED:
                return current
            if current.status is not TransferStatus.PENDING:
                raise InputError(
                    f"transfer {transfer_id.hex()} is already {current.status}; "
                    "only a pending transfer can be marked failed"
                )
            return self._append(conn, EntryKind.OUT_FAILED, transfer_id, at, current)

    def pending_outgoing(self) -> list[SignedTransfer]:
        """Outgoing transfers still waiting for a receipt, oldest first (what resend retries)."""
        rows = self._conn.execute(
            "SELECT signed_transfer FROM transfers WHERE direction = 'out' AND status = 'pending' "
            "ORDER BY recorded_seq"
        ).fetchall()
        return [SignedTransfer.decode(blob) for (blob,) in rows]

    # --- receiving ---

    def incoming(self, transfer_id: bytes) -> tuple[SignedTransfer, SignedReceipt] | None:
        """The stored incoming transfer with this id and the receipt we answered it with."""
        row = self._row(self._conn, transfer_id, "in")
        if row is None:
            return None
        receipt = row.receipt
        assert receipt is not None  # incoming rows always hold their receipt
        return row.signed, receipt

    def incoming_many(
        self, transfer_ids: Iterable[bytes]
    ) -> dict[bytes, tuple[SignedTransfer, SignedReceipt]]:
        """:meth:`incoming` for many ids in a few queries: only the known ones are keys."""
        found: dict[bytes, tuple[SignedTransfer, SignedReceipt]] = {}
        for transfer_id, row in self._rows(self._conn, transfer_ids, "in").items():
            receipt = row.receipt
            assert receipt is not None  # incoming rows always hold their receipt
            found[transfer_id] = (row.signed, receipt)
        return found

    def record_incoming(
        self, signed: SignedTransfer, receipt: SignedReceipt, at: int
    ) -> SignedReceipt:
        """Commit an incoming transfer and our receipt in one transaction; return what to send.

        Rejections are recorded too (status rejected). A known id with the
        same content returns the *stored* receipt and applies nothing; with
        different content it raises TransferConflict and changes nothing.
        """
        ((result, _row),) = self._record_incoming([(signed, receipt)], at, None, single=True)
        return result

    def record_incoming_batch(
        self,
        items: Sequence[tuple[SignedTransfer, SignedReceipt]],
        at: int,
        *,
        on_conflict: Callable[[SignedTransfer], SignedReceipt] | None = None,
    ) -> list[SignedReceipt]:
        """Group commit: record many incoming transfers in ONE transaction (one fsync).

        Returns, per item and in order, the receipt to send: the given one for
        a new transfer, the stored one for a repeat. A conflicting item (known
        id, other content — also within the batch) is not written and does not
        stop the others; its answer is ``on_conflict(signed)``, which must be a
        *rejection* of that transfer (typically ``reject(identity, signed,
        RejectReason.CONFLICT, at)``). Without ``on_conflict`` a conflict
        raises TransferConflict and nothing of the batch is written.
        """
        return [receipt for receipt, _row in self.record_incoming_many(items, at, on_conflict)]

    def record_incoming_many(
        self,
        items: Sequence[tuple[SignedTransfer, SignedReceipt]],
        at: int,
        on_conflict: Callable[[SignedTransfer], SignedReceipt] | None = None,
    ) -> list[tuple[SignedReceipt, TransferRow | None]]:
        """:meth:`record_incoming_batch`, with the row each item wrote (None: nothing written).

        For the runtime, which reports every newly recorded row: it gets them
        here rather than reading each one back after the commit.
        """
        return self._record_incoming(items, at, on_conflict, single=False)

    def _record_incoming(
        self,
        items: Sequence[tuple[SignedTransfer, SignedReceipt]],
        at: int,
        on_conflict: Callable[[SignedTransfer], SignedReceipt] | None,
        *,
        single: bool,
    ) -> list[tuple[SignedReceipt, TransferRow | None]]:
        _check_time(at)
        for pair in items:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not isinstance(pair[0], SignedTransfer)
                or not isinstance(pair[1], SignedReceipt)
            ):
                raise InputError("each item must be a (SignedTransfer, SignedReceipt) pair")
        results: list[SignedReceipt | None] = []
        written: list[TransferRow | None] = []
        conflicts: list[SignedTransfer] = []
        with self._transaction() as conn:
            self._prefetch(conn, [signed.id for signed, _ in items], "in")
            for signed, receipt in items:
                known = self._current(conn, signed.id, "in")
                if known is None:
                    row = self._append(
                        conn,
                        EntryKind.IN_RECORDED,
                        signed.id,
                        at,
                        None,
                        signed=signed,
                        receipt=receipt,
                    )
                    results.append(receipt)
                    written.append(row)
                    continue
                if compare(known.signed.transfer, signed.transfer) is Comparison.SAME:
                    stored = known.receipt
                    assert stored is not None
                    results.append(stored)
                    written.append(None)
                    continue
                if single or on_conflict is None:
                    raise TransferConflict(
                        f"transfer {signed.id.hex()} is already recorded with different "
                        "content; refusing it (nothing was applied)"
                    )
                conflicts.append(signed)
                results.append(None)
                written.append(None)
        # Conflict answers are made after the commit: they are not stored, and a
        # failing callback must not undo the others.
        out: list[tuple[SignedReceipt, TransferRow | None]] = []
        pending = iter(conflicts)
        for result, new_row in zip(results, written, strict=True):
            if result is None:
                assert on_conflict is not None
                signed = next(pending)
                answer = on_conflict(signed)
                answer.verify(signed)
                if answer.receipt.accepted:
                    raise ValueError("on_conflict must return a rejection, not an acceptance")
                result = answer
            out.append((result, new_row))
        return out

    # --- reading ---

    def get_transfer(self, transfer_id: bytes, direction: str) -> TransferRow:
        if direction not in ("in", "out"):
            raise InputError("direction is 'in' or 'out'")
        row = self._row(self._conn, transfer_id, direction)
        if row is None:
            word = "incoming" if direction == "in" else "outgoing"
            raise NotFound(f"no {word} transfer {transfer_id.hex()} in the ledger")
        return row

    def transfers(self, contact_address: str | None = None) -> list[TransferRow]:
        """History in ledger order, optionally only with one counterparty."""
        if contact_address is None:
            rows = self._conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM transfers ORDER BY recorded_seq"  # noqa: S608
            ).fetchall()
        else:
            canonical, _ = _canonical_address(contact_address)
            rows = self._conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM transfers WHERE counterparty = ? "  # noqa: S608
                "ORDER BY recorded_seq",
                (canonical,),
            ).fetchall()
        return [_row_from_sql(row) for row in rows]

    def balances(self, contact_address: str | None = None) -> dict[tuple[str, str], int]:
        """(counterparty, currency) -> received minus sent, in minor units, completed only.

        Derived on every call by SQL ``SUM``; never stored. Should a sum leave
        SQLite's 64-bit range (about 9,000 maximal transfers with one peer),
        it is recomputed exactly in Python instead of failing.
        """
        only: str | None = None
        if contact_address is not None:
            only = _canonical_address(contact_address)[0]
        params = (only, only)
        try:
            rows = self._conn.execute(
                "SELECT counterparty, currency, "
                "SUM(CASE direction WHEN 'in' THEN amount_minor ELSE -amount_minor END) "
                "FROM transfers WHERE status = 'completed' AND (? IS NULL OR counterparty = ?) "
                "GROUP BY counterparty, currency ORDER BY counterparty, currency",
                params,
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "overflow" not in str(exc):
                raise StorageError(f"cannot read the ledger {self.path}: {exc}") from exc
            totals: dict[tuple[str, str], int] = {}
            for counterparty, currency, direction, amount in self._conn.execute(
                "SELECT counterparty, currency, direction, amount_minor FROM transfers "
                "WHERE status = 'completed' AND (? IS NULL OR counterparty = ?)",
                params,
            ):
                key = (counterparty, currency)
                totals[key] = totals.get(key, 0) + (amount if direction == "in" else -amount)
            return dict(sorted(totals.items()))
        return {(counterparty, currency): int(total) for counterparty, currency, total in rows}

    def export_json(self) -> str:
        """History and balances as a JSON document (decimal amounts, ISO 8601 UTC times)."""
        with self._snapshot():
            rows, balances = self.transfers(), self.balances()
        return export.to_json(rows, balances)

    def export_csv(self) -> str:
        """History as CSV, one transfer per line (decimal amounts, ISO 8601 UTC times)."""
        return export.to_csv(self.transfers())

    @property
    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last journal entry: write it down to anchor the chain."""
        seq, digest = self._conn.execute("SELECT seq, hash FROM ledger_head").fetchone()
        return int(seq), bytes(digest)

    # --- verification ---

    def verify(self) -> int:
        """Re-check the whole ledger; return the number of journal entries checked.

        In order: SQLite's own page check; every journal entry (seq continuity
        from 1, the link to the previous hash, its own hash, every signature it
        holds, the legality of its transition) up to the recorded head; then
        that the transfers table is exactly what the journal implies. The
        first problem raises LedgerIntegrityError with ``row`` = the seq of
        the first bad journal entry (None when no entry is to blame).
        """
        with self._snapshot() as conn:
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise LedgerIntegrityError(f"the SQLite file is damaged: {check}")
            state: dict[tuple[bytes, str], TransferRow] = {}
            expected_seq, prev_hash = 1, GENESIS_HASH
            cursor = conn.execute(
                "SELECT seq, kind, transfer_id, at, signed_transfer, signed_receipt, prev_hash, "
                "hash FROM journal ORDER BY seq"
            )
            for values in cursor:
                seq = values[0]
                if seq != expected_seq:
                    raise LedgerIntegrityError(
                        f"journal entry {expected_seq} is missing (the next entry is {seq})",
                        row=expected_seq,
                    )
                entry = _entry_from_sql(values)
                if entry.prev_hash != prev_hash:
                    raise LedgerIntegrityError(
                        f"journal entry {seq} does not link to entry {seq - 1} "
                        "(entries were removed, reordered or edited)",
                        row=seq,
                    )
                if schema.entry_hash(prev_hash, entry.encode()) != entry.hash:
                    raise LedgerIntegrityError(
                        f"journal entry {seq} was altered: its hash does not match its content",
                        row=seq,
                    )
                key = (entry.transfer_id, entry.kind.direction)
                try:
                    state[key] = apply_entry(entry, state.get(key))
                except P2PTransferError as exc:
                    raise LedgerIntegrityError(f"journal entry {seq}: {exc}", row=seq) from exc
                prev_hash = entry.hash
                expected_seq += 1
            last_seq = expected_seq - 1
            head_seq, head_hash = conn.execute("SELECT seq, hash FROM ledger_head").fetchone()
            if head_seq != last_seq or head_hash != prev_hash:
                first_bad = last_seq + 1 if head_seq > last_seq else head_seq + 1
                raise LedgerIntegrityError(
                    f"the journal ends at entry {last_seq} but the ledger head says "
                    f"{head_seq}: entries were cut off or appended outside the ledger",
                    row=first_bad,
                )
            self._compare_table(conn, state)
        return last_seq

    @staticmethod
    def _compare_table(
        conn: sqlite3.Connection, expected: dict[tuple[bytes, str], TransferRow]
    ) -> None:
        problems: list[tuple[int, str]] = []
        seen: set[tuple[bytes, str]] = set()
        for values in conn.execute(f"SELECT {_ROW_COLUMNS} FROM transfers"):  # noqa: S608
            key = (values[0], values[1])
            seen.add(key)
            want = expected.get(key)
            label = f"transfer {bytes(values[0]).hex()} ({values[1]})"
            if want is None:
                seq = values[12] if isinstance(values[12], int) else 0
                problems.append((seq, f"{label} is in the transfers table but not in the journal"))
                continue
            got = dict(zip(_ROW_COLUMNS.split(", "), values, strict=True))
            for name in _ROW_COLUMNS.split(", "):
                wanted = getattr(want, name)
                if isinstance(wanted, TransferStatus):
                    wanted = str(wanted)
                if got[name] != wanted or type(got[name]) is not type(wanted):
                    problems.append(
                        (
                            want.updated_seq,
                            f"{label}: the transfers table says {name} = {got[name]!r} but the "
                            f"journal implies {wanted!r}",
                        )
                    )
                    break
        for key, want in expected.items():
            if key not in seen:
                problems.append(
                    (want.updated_seq, f"transfer {key[0].hex()} ({key[1]}) is missing from the "
                     "transfers table")
                )  # fmt: skip
        if problems:
            seq, message = min(problems)
            raise LedgerIntegrityError(message, row=seq or None)


def _entry_from_sql(values: Sequence[Any]) -> JournalEntry:
    seq, kind_text, tid, at, st_blob, sr_blob, prev_hash, digest = values
    try:
        kind = EntryKind.from_text(kind_text)
        ok = (
            type(tid) is bytes
            and type(at) is int
            and (st_blob is None or type(st_blob) is bytes)
            and (sr_blob is None or type(sr_blob) is bytes)
            and type(prev_hash) is bytes
            and type(digest) is bytes
        )
        if not ok:
            raise ValueError("a column has the wrong type")
        entry = JournalEntry(seq, kind, tid, at, st_blob, sr_blob, prev_hash, digest)
        entry.encode()  # values out of range for the canonical encoding
    except (ValueError, DecodeError) as exc:
        raise LedgerIntegrityError(f"journal entry {seq} is malformed: {exc}", row=seq) from exc
    return entry
