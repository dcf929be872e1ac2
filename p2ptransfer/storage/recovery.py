"""What reconciliation reads from the ledger and writes back into it.

:mod:`..protocol.reconcile` decides what two peers exchange; this part of
the ledger lists the settled transfers shared with one counterparty and
records the proven ones it lost. Recovery goes through the same journal
moves and checks as everything else (:func:`.journal.apply_entry`), in one
transaction: a recovered outgoing transfer is journaled as it would have
been (pending, then its receipt), a recovered incoming one as recorded with
the receipt we signed back then — our own signature proves we did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import InputError
from ..protocol.receipt import SignedReceipt
from ..protocol.reconcile import Item, receipt_digest
from ..protocol.transfer import SignedTransfer, check_timestamp
from .records import (
    ROW_COLUMNS,
    TransferRow,
    TransferStatus,
    canonical_address,
    row_from_sql,
)
from .schema import EntryKind
from .transfers import TransferBook

__all__ = ["Recovery"]


class Recovery(TransferBook):
    """Reconciliation's view of the ledger (a part of :class:`~.ledger.Ledger`)."""

    def settled_with(self, counterparty: str) -> list[Item]:
        """Every transfer with ``counterparty`` that holds a receipt, as inventory items."""
        canonical, _ = canonical_address(counterparty)
        rows = self._conn.execute(
            "SELECT id, status, signed_receipt FROM transfers "
            "WHERE counterparty = ? AND signed_receipt IS NOT NULL ORDER BY id",
            (canonical,),
        ).fetchall()
        return [
            Item(tid, status == TransferStatus.COMPLETED, receipt_digest(blob))
            for tid, status, blob in rows
        ]

    def proofs(
        self, counterparty: str, transfer_ids: Iterable[bytes]
    ) -> dict[bytes, tuple[SignedTransfer, SignedReceipt]]:
        """The signed transfer and receipt of each settled id with ``counterparty``."""
        canonical, _ = canonical_address(counterparty)
        wanted = set(transfer_ids)
        found: dict[bytes, tuple[SignedTransfer, SignedReceipt]] = {}
        for values in self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM transfers "  # noqa: S608
            "WHERE counterparty = ? AND signed_receipt IS NOT NULL",
            (canonical,),
        ):
            row = row_from_sql(values)
            if row.id in wanted and row.receipt is not None:
                found[row.id] = (row.signed, row.receipt)
        return found

    def recover(
        self, proofs: Sequence[tuple[SignedTransfer, SignedReceipt]], at: int
    ) -> list[TransferRow]:
        """Record proven transfers this ledger lost, in one transaction; return the rows.

        Needs a ledger that knows its owner (to tell in from out). An id the
        ledger already holds settled is left alone (the caller reports a
        disagreement); an outgoing one still pending or failed takes the
        receipt, as it would have had it arrived. A recovered incoming
        transfer we accepted that pays one of our requests still open marks
        it paid, in the same transaction (the receipt we signed says so).
        """
        check_timestamp(at)
        if self._owner_key is None:
            raise InputError("recovering transfers needs a ledger that knows its owner")
        written: list[TransferRow] = []
        with self._transaction() as conn:
            for signed, receipt in proofs:
                outgoing = _key_of(signed.transfer.sender) == self._owner_key
                direction = "out" if outgoing else "in"
                current = self._current(conn, signed.id, direction)
                if current is not None and current.signed_receipt is not None:
                    continue
                if not outgoing:
                    row = self._append(
                        conn, EntryKind.IN_RECORDED, signed.id, at, None, signed=signed,
                        receipt=receipt,
                    )  # fmt: skip
                    if signed.transfer.request_id is not None and receipt.receipt.accepted:
                        self._recovered_payment(conn, signed, at)
                else:
                    if current is None:
                        current = self._append(
                            conn, EntryKind.OUT_PENDING, signed.id, at, None, signed=signed
                        )
                    row = self._append(
                        conn, EntryKind.OUT_RECEIPT, signed.id, at, current, receipt=receipt
                    )
                written.append(row)
        return written


def _key_of(address: str) -> bytes:
    return canonical_address(address)[1]
