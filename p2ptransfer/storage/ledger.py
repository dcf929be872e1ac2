"""The peer's ledger: contacts and pins, transfers, receipts, a hash-chained journal.

The money part is an append-only **journal**; everything else is derived::

    journal entry  = (seq, kind, transfer id, at, signed transfer?, signed receipt?)
    entry hash     = SHA-256(context || previous entry's hash || canonical entry bytes)
    transfers row  = fold of :func:`.journal.apply_entry` over the transfer's entries
    balance        = SUM(+amount in, -amount out) over completed rows

:class:`Ledger` is the facade that owns the SQLite connection and puts the
parts together, each in its own module: :mod:`.contacts` (trust decisions),
:mod:`.transfers` (the write path), :mod:`.recovery` (what reconciliation reads and
restores), :mod:`.quarantine` (strangers' refused
transfers, outside the chain), :mod:`.requests` (payment requests both ways,
outside the chain; paid in the transaction that records the paying
transfer), :mod:`.journal` (the legal moves, the owner and the verifying
walk) and :mod:`.checkpoint` (the owner's signed head, which
makes a rollback visible).

**Owner.** Opened with the owner's :class:`~..protocol.identity.Identity`, a
ledger records that owner once (a signed entry in the chain), refuses to be
opened under any other key, refuses entries that are not the owner's, and
writes a signed checkpoint after every commit. Opened with only the owner's
public identity, it checks the owner but cannot write a checkpoint.

Time is passed in by the caller (unix milliseconds), ids come from the caller.
docs/ledger.md describes the schema, the chain and what is guaranteed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType

from ..clock import now_ms
from ..errors import LedgerIntegrityError, LedgerOwnerMismatch, P2PTransferError
from ..protocol.identity import Identity, PublicIdentity
from ..protocol.primitives import fresh_verification
from . import journal
from .checkpoint import Checkpoint, checkpoint_path, read_checkpoint, write_checkpoint
from .contacts import ContactBook
from .journal import OWNER_TRANSFER_ID, apply_entry, find_owner, owner_record
from .quarantine import QuarantineBook, QuarantinedTransfer
from .records import Contact, HandlePin, TransferRow, TransferStatus, check_contact_name
from .recovery import Recovery
from .requests import RequestBook, RequestRow, check_requests
from .schema import EntryKind
from .store import BUSY_TIMEOUT_MS, PendingWrites, connect

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Contact",
    "HandlePin",
    "Ledger",
    "QuarantinedTransfer",
    "RequestRow",
    "TransferRow",
    "TransferStatus",
    "apply_entry",
    "check_contact_name",
]

Owner = Identity | PublicIdentity


def _public(owner: Owner) -> PublicIdentity:
    return (
        owner if isinstance(owner, PublicIdentity) else PublicIdentity.from_address(owner.address)
    )


class Ledger(ContactBook, Recovery, RequestBook, QuarantineBook):
    """One peer's ledger file. Not thread-safe: use it from one thread (the event loop)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        super().__init__(conn, path)
        self._signer: Identity | None = None
        self._checkpoint_trusted = False  # the stored checkpoint is on our chain
        self._checkpointed = -1  # the seq this ledger last signed a checkpoint for

    # --- lifecycle ---

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        owner: Owner | None = None,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> Ledger:
        """Open (creating 0600 and migrating as needed) the ledger at ``path``.

        With ``owner``: a ledger that names another owner is refused with
        LedgerOwnerMismatch (a swapped key file or ledger); one that names
        none yet records this one (with an Identity: it signs the entry).
        ``busy_timeout_ms`` bounds how long a write waits for another
        process's write transaction before it fails with StorageError.
        """
        path = Path(path)
        ledger = cls(connect(path, busy_timeout_ms), path)
        try:
            ledger._adopt(owner)
        except BaseException:
            ledger.close()
            raise
        return ledger

    def _adopt(self, owner: Owner | None) -> None:
        found = find_owner(self._conn)
        if found is not None:
            self._owner_key = found[1]
        if owner is not None:
            self._refuse_other_owner(_public(owner))
        if isinstance(owner, Identity):
            self.unlock(owner)

    def _refuse_other_owner(self, public: PublicIdentity) -> None:
        if self._owner_key is not None and self._owner_key != public.public_key:
            recorded = PublicIdentity(self._owner_key)
            raise LedgerOwnerMismatch(
                f"the ledger {self.path} belongs to {recorded.address} (fingerprint "
                f"{recorded.fingerprint}), not to the identity in this home "
                f"({public.address}): the key file or the ledger was swapped; refusing "
                "to use them together"
            )

    def unlock(self, identity: Identity) -> None:
        """Give the ledger its owner's key: it then signs a checkpoint after each commit.

        LedgerOwnerMismatch if the ledger belongs to someone else. A ledger
        that names no owner yet records this one, in a signed journal entry.
        Idempotent for the same identity.
        """
        public = _public(identity)
        self._refuse_other_owner(public)
        if self._signer is not None:
            return
        if self._owner_key is None:
            # An older ledger learns its owner: no checkpoint of ours can exist yet, so
            # a file already there was not written for this history.
            self._checkpoint_trusted = read_checkpoint(self.path) is None
            at = now_ms()
            # Set before the COMMIT: its hook signs the first checkpoint with them.
            self._owner_key, self._signer = public.public_key, identity
            try:
                with self._transaction() as conn:
                    raced = find_owner(conn)  # another process may have got here first
                    if raced is None:
                        payload = owner_record(identity, at)
                        entry = self._next_entry(
                            conn, EntryKind.OWNER, OWNER_TRANSFER_ID, at, payload, None
                        )
                        self._chain(entry)
                    elif raced[1] != public.public_key:
                        self._owner_key = raced[1]
                        self._refuse_other_owner(public)
            except BaseException:
                self._owner_key = self._signer = None
                raise
            return
        self._checkpoint_trusted = self._checkpoint_matches()
        self._signer = identity

    def _checkpoint_matches(self) -> bool:
        """True if the stored checkpoint names an entry of this journal, as it is now."""
        stored = read_checkpoint(self.path)
        if stored is None:
            return False
        row = self._conn.execute("SELECT hash FROM journal WHERE seq = ?", (stored.seq,)).fetchone()
        return row is not None and row[0] == stored.hash

    def _after_commit(self, pending: PendingWrites) -> None:
        """Sign the new head — unless the stored checkpoint says our history was cut.

        A checkpoint that does not match this journal is evidence of a
        rollback: it is kept, untouched, until the user has reconciled and
        accepts the current history with :meth:`reset_checkpoint`.
        """
        if self._signer is None or pending.head is None or not self._checkpoint_trusted:
            return
        seq, digest = pending.head
        if seq <= self._checkpointed:
            return  # a later commit (its COMMIT finished first) already signed a newer head
        write_checkpoint(self.path, Checkpoint.sign(self._signer, seq, digest))
        self._checkpointed = seq

    def reset_checkpoint(self) -> tuple[int, bytes]:
        """Sign the current head as the checkpoint, accepting the history as it is now.

        For after a rollback was found and reconciled. Needs the owner's key.
        """
        if self._signer is None:
            raise LedgerIntegrityError("resetting the checkpoint needs the owner's key")
        seq, digest = self.head
        write_checkpoint(self.path, Checkpoint.sign(self._signer, seq, digest))
        self._checkpoint_trusted = True
        self._checkpointed = seq
        return seq, digest

    def close(self) -> None:
        self._close_committer()
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

    @property
    def owner(self) -> PublicIdentity | None:
        """Whose ledger this is, as its owner entry says (None: it names none yet)."""
        return None if self._owner_key is None else PublicIdentity(self._owner_key)

    @property
    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last journal entry."""
        seq, digest = self._conn.execute("SELECT seq, hash FROM ledger_head").fetchone()
        return int(seq), bytes(digest)

    # --- verification ---

    def verify(self, owner: Owner | None = None) -> int:
        """Re-check the whole ledger; return the number of journal entries checked.

        In order: SQLite's own page check; the owner entry (with ``owner``:
        that it exists and names that identity); every journal entry (seq
        continuity from 1, the link to the previous hash, its own hash, every
        signature, the legality of its move, that it is the owner's) up to
        the recorded head; that the transfers table is exactly what the
        journal implies; that the signed checkpoint names an entry of this
        journal; and that every request marked paid names a completed
        incoming transfer that pays it (requests are outside the chain: this
        is consistency, not history). The first problem raises LedgerIntegrityError with
        ``row`` = the seq of the first bad journal entry (None when no entry
        is to blame).
        """
        with self._snapshot() as conn, fresh_verification():  # an audit trusts no cache
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise LedgerIntegrityError(f"the SQLite file is damaged: {check}")
            found = find_owner(conn)
            owner_key = found[1] if found is not None else None
            last_seq, last_hash, state = journal.walk(conn, owner_key)
            if owner is not None:
                self._check_owner(owner, owner_key, last_seq)
            head_seq, head_hash = conn.execute("SELECT seq, hash FROM ledger_head").fetchone()
            if head_seq != last_seq or head_hash != last_hash:
                first_bad = last_seq + 1 if head_seq > last_seq else head_seq + 1
                raise LedgerIntegrityError(
                    f"the journal ends at entry {last_seq} but the ledger head says "
                    f"{head_seq}: entries were cut off or appended outside the ledger",
                    row=first_bad,
                )
            journal.compare_table(conn, state)
            self._check_checkpoint(conn, owner_key, last_seq)
            check_requests(conn)
        return last_seq

    def _check_owner(self, owner: Owner, owner_key: bytes | None, last_seq: int) -> None:
        public = _public(owner)
        if owner_key is None:
            if last_seq > 0:
                raise LedgerIntegrityError(
                    "the ledger does not name its owner: it was written by an older version "
                    "or its owner entry was removed; open it with your key (any command that "
                    "asks for your passphrase) to record you as its owner"
                )
            return
        if owner_key != public.public_key:
            raise LedgerOwnerMismatch(
                f"the ledger belongs to {PublicIdentity(owner_key).address}, not to "
                f"{public.address}: the key file or the ledger was swapped"
            )

    def _check_checkpoint(
        self, conn: sqlite3.Connection, owner_key: bytes | None, last_seq: int
    ) -> None:
        stored = read_checkpoint(self.path)
        where = checkpoint_path(self.path)
        if stored is None:
            if owner_key is not None:
                raise LedgerIntegrityError(
                    f"the signed checkpoint {where} is missing: the ledger may have been "
                    "replaced by an older copy. If you know why (a restore you made), run "
                    "'p2ptransfer ledger reconcile CONTACT' with your contacts, then "
                    "'p2ptransfer ledger verify --reset-checkpoint'"
                )
            return
        if owner_key is None:
            raise LedgerIntegrityError(
                f"a signed checkpoint {where} exists but the ledger names no owner: the "
                "ledger was replaced by another file"
            )
        try:
            stored.verify(owner_key)
        except P2PTransferError as exc:
            raise LedgerIntegrityError(f"the checkpoint {where} does not verify: {exc}") from exc
        advice = (
            "run 'p2ptransfer ledger reconcile CONTACT' with each contact to recover what they "
            "hold, then 'p2ptransfer ledger verify --reset-checkpoint'"
        )
        if stored.seq > last_seq:
            raise LedgerIntegrityError(
                f"the ledger was rolled back or its newest entries were cut off: the signed "
                f"checkpoint names entry {stored.seq}, the journal ends at {last_seq}; {advice}",
                row=last_seq + 1,
            )
        row = conn.execute("SELECT hash FROM journal WHERE seq = ?", (stored.seq,)).fetchone()
        if row is None or row[0] != stored.hash:
            raise LedgerIntegrityError(
                f"the ledger was replaced by another copy: journal entry {stored.seq} is not the "
                f"one the signed checkpoint names; {advice}",
                row=stored.seq,
            )
