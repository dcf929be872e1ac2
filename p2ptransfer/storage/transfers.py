"""Transfers: the journal's write path and the rows and balances it implies.

Exactly-once rests on three properties of this write path: every write is
one ``BEGIN IMMEDIATE`` transaction (journal entries + state rows + head, or
nothing), commits are durable (WAL with ``synchronous=FULL``), and an
incoming transfer id is unique — the same id again is answered from storage,
never applied twice. Every entry passes :func:`.journal.apply_entry` before
it is written, the same check ``verify`` runs later.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..errors import InputError, NotFound, StorageError, TransferConflict
from ..protocol.receipt import RejectReason, SignedReceipt
from ..protocol.transfer import (
    Comparison,
    SignedTransfer,
    check_timestamp,
    check_transfer_id,
    compare,
)
from .journal import apply_entry
from .records import (
    ROW_COLUMNS,
    TransferRow,
    TransferStatus,
    canonical_address,
    reason_text,
    row_from_sql,
)
from .schema import EntryKind
from .store import PendingWrites, Store

__all__ = ["Recorded", "TransferBook"]

_UPDATE_ROW = (
    "UPDATE transfers SET status = ?, reason = ?, updated_at = ?, "
    "signed_receipt = ?, updated_seq = ? WHERE id = ? AND direction = ?"
)
_INSERT_ROW = (
    f"INSERT INTO transfers ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
)
_LOOKUP_CHUNK = 500  # ids per "IN (...)" lookup: far below SQLite's variable limit
_DECODED_CACHE = 4096  # signed transfers remembered by their bytes (see TransferBook._decoded)


class Recorded(NamedTuple):
    """One incoming transfer's outcome: the receipt to send, and the row written (if any)."""

    receipt: SignedReceipt
    row: TransferRow | None


class TransferBook(Store):
    """Outgoing and incoming transfers (a part of :class:`~.ledger.Ledger`)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        super().__init__(conn, path)
        # The owner's public key once the ledger names one: every entry written is
        # checked to be the owner's business (see .journal).
        self._owner_key: bytes | None = None
        # Signed transfers this ledger wrote, by their exact bytes: a row read back
        # (the sender's pending transfer, when its receipt comes) gets its decoded
        # object from here instead of decoding and validating the blob again.
        # Keyed by the bytes themselves, so a hit is the very object they encode.
        self._decoded: OrderedDict[bytes, SignedTransfer] = OrderedDict()

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
        bulk just before COMMIT (see :class:`PendingWrites`).
        """
        signed_blob = signed.encode() if signed is not None else None
        receipt_blob = receipt.encode() if receipt is not None else None
        entry = self._next_entry(conn, kind, transfer_id, at, signed_blob, receipt_blob)
        row = apply_entry(
            entry, current, owner=self._owner_key, decoded_transfer=signed, decoded_receipt=receipt
        )
        pending = self._chain(entry)
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

    def _flush(self, conn: sqlite3.Connection, pending: PendingWrites) -> None:
        """The journal and head first (rows refer to them), then the rows, in bulk."""
        super()._flush(conn, pending)
        if pending.rows:
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
            f"SELECT {ROW_COLUMNS} FROM transfers WHERE id = ? AND direction = ?",  # noqa: S608
            (transfer_id, direction),
        ).fetchone()
        return None if found is None else self._with_known_decode(row_from_sql(found))

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
                f"SELECT {ROW_COLUMNS} FROM transfers "  # noqa: S608
                f"WHERE direction = ? AND id IN ({marks})",
                (direction, *chunk),
            ):
                row = self._with_known_decode(row_from_sql(values))
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
        check_timestamp(at)
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
        check_timestamp(at)
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
        check_transfer_id(transfer_id)
        check_timestamp(at)
        with self._transaction() as conn:
            current = self._current(conn, transfer_id, "out")
            if current is None:
                raise NotFound(f"no outgoing transfer {transfer_id.hex()} in the ledger")
            if current.status is TransferStatus.FAILED:
                return current
            if current.status not in (TransferStatus.PENDING, TransferStatus.QUEUED):
                raise InputError(
                    f"transfer {transfer_id.hex()} is already {current.status}; "
                    "only a pending or queued transfer can be marked failed"
                )
            return self._append(conn, EntryKind.OUT_FAILED, transfer_id, at, current)

    def mark_queued(self, transfer_ids: Sequence[bytes], at: int) -> list[TransferRow]:
        """Record that these pending transfers were deposited in the recipient's mailbox.

        In one transaction. A transfer already queued, or already decided (its
        receipt raced the deposit), is left as it is; its row is returned.
        """
        for transfer_id in transfer_ids:
            check_transfer_id(transfer_id)
        check_timestamp(at)
        rows: list[TransferRow] = []
        with self._transaction() as conn:
            self._prefetch(conn, list(transfer_ids), "out")
            for transfer_id in transfer_ids:
                current = self._current(conn, transfer_id, "out")
                if current is None:
                    raise NotFound(f"no outgoing transfer {transfer_id.hex()} in the ledger")
                if current.status is TransferStatus.PENDING:
                    current = self._append(conn, EntryKind.OUT_QUEUED, transfer_id, at, current)
                rows.append(current)
        return rows

    def pending_outgoing(self) -> list[SignedTransfer]:
        """Outgoing transfers still waiting for a receipt (pending or queued), oldest first."""
        return [row.signed for row in self.waiting_outgoing()]

    def waiting_outgoing(self) -> list[TransferRow]:
        """The rows of the outgoing transfers still waiting for a receipt, oldest first."""
        rows = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM transfers "  # noqa: S608
            "WHERE direction = 'out' AND status IN ('pending', 'queued') ORDER BY recorded_seq"
        ).fetchall()
        return [self._with_known_decode(row_from_sql(values)) for values in rows]

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
        ((result, _row),) = self.record_incoming_batch([(signed, receipt)], at)
        return result

    def record_incoming_batch(
        self,
        items: Sequence[tuple[SignedTransfer, SignedReceipt]],
        at: int,
        *,
        on_conflict: Callable[[SignedTransfer], SignedReceipt] | None = None,
        on_request: Callable[[SignedTransfer, RejectReason], SignedReceipt] | None = None,
    ) -> list[Recorded]:
        """Group commit: record many incoming transfers in ONE transaction (one fsync).

        Returns, per item and in order, the receipt to send — the given one
        for a new transfer, the stored one for a repeat — and the row written
        (None when nothing was: a repeat, also within the batch, or a
        conflict), so the runtime reports new rows without reading them back.
        A conflicting item (known id, other content) is not written and does
        not stop the others; its answer is ``on_conflict(signed)``, which must
        be a *rejection* of that transfer (typically ``reject(identity,
        signed, RejectReason.CONFLICT, at)``). Without ``on_conflict`` a
        conflict raises TransferConflict and nothing of the batch is written.

        **Payments of requests.** A new item whose transfer carries a
        ``request_id`` and whose receipt accepts it is judged here, under the
        write lock, against our request of that id (``check_payment``; no such
        request is REQUEST_MISMATCH). If it passes, the request is marked paid
        by this transfer in this same transaction; if not, the item is recorded
        with the rejection ``on_request(signed, reason)`` returns (a rejection
        of that transfer for that reason, checked), called inside the
        transaction — so two transfers paying one request, in one batch or
        from two processes, are never both accepted. Without ``on_request``
        such an item raises InputError and nothing of the batch is written.
        """
        check_timestamp(at)
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
                    if signed.transfer.request_id is not None and receipt.receipt.accepted:
                        receipt = self._payment_answer(conn, signed, receipt, at, on_request)
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
                if on_conflict is None:
                    raise TransferConflict(
                        f"transfer {signed.id.hex()} is already recorded with different "
                        "content; refusing it (nothing was applied)"
                    )
                conflicts.append(signed)
                results.append(None)
                written.append(None)
        # Conflict answers are made after the commit: they are not stored, and a
        # failing callback must not undo the others.
        out: list[Recorded] = []
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
            out.append(Recorded(result, new_row))
        return out

    def _payment_answer(
        self,
        conn: sqlite3.Connection,
        signed: SignedTransfer,
        receipt: SignedReceipt,
        at: int,
        on_request: Callable[[SignedTransfer, RejectReason], SignedReceipt] | None,
    ) -> SignedReceipt:
        """The receipt to record for a new accepted transfer that pays a request.

        ``receipt`` itself when the request takes the payment (it is then
        marked paid, in this transaction), else the checked rejection from
        ``on_request``.
        """
        reason = self._settle_request(conn, signed, at)
        if reason is None:
            return receipt
        request_id = signed.transfer.request_id
        assert request_id is not None
        if on_request is None:
            raise InputError(
                f"transfer {signed.id.hex()} cannot pay payment request {request_id.hex()} "
                f"({reason_text(reason)}); nothing was recorded"
            )
        answer = on_request(signed, reason)
        answer.verify(signed)
        if answer.receipt.accepted or answer.receipt.reason is not reason:
            raise ValueError(
                f"on_request must return a rejection of that transfer for {reason_text(reason)}"
            )
        return answer

    def _settle_request(
        self, conn: sqlite3.Connection, signed: SignedTransfer, at: int
    ) -> RejectReason | None:
        """Why our request refuses ``signed`` as its payment, or None once marked paid by it.

        Inside the write transaction. This part of the ledger keeps no
        requests, so every payment names an unknown one; :class:`.requests.
        RequestBook` looks them up.
        """
        return RejectReason.REQUEST_MISMATCH

    def _recovered_payment(self, conn: sqlite3.Connection, signed: SignedTransfer, at: int) -> None:
        """An accepted payment was recovered (reconciliation): mark its open request paid.

        Inside the write transaction; no requests are kept by this part.
        """

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
                f"SELECT {ROW_COLUMNS} FROM transfers ORDER BY recorded_seq"  # noqa: S608
            ).fetchall()
        else:
            canonical, _ = canonical_address(contact_address)
            rows = self._conn.execute(
                f"SELECT {ROW_COLUMNS} FROM transfers WHERE counterparty = ? "  # noqa: S608
                "ORDER BY recorded_seq",
                (canonical,),
            ).fetchall()
        return [row_from_sql(row) for row in rows]

    def balances(self, contact_address: str | None = None) -> dict[tuple[str, str], int]:
        """(counterparty, currency) -> received minus sent, in minor units, completed only.

        Derived on every call by SQL ``SUM``; never stored. Should a sum leave
        SQLite's 64-bit range (about 9,000 maximal transfers with one peer),
        it is recomputed exactly in Python instead of failing.
        """
        only: str | None = None
        if contact_address is not None:
            only = canonical_address(contact_address)[0]
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
