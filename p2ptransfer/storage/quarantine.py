"""Transfers from strangers: answered, shown, never journaled.

A transfer whose sender is not a contact (and not accepted from strangers)
gets a signed ``unknown_sender`` rejection like any refusal, but it is not
written to the journal: the journal is append-only, so every stranger's
transfer recorded there would grow the ledger for good — thousands of
throwaway keys could fill a disk. Instead the last :data:`QUARANTINE_LIMIT`
are kept here, outside the hash chain, for the user to see; older ones are
pruned. A repeat of a quarantined id is answered with the same stored
rejection, so a stranger never holds two different answers for one transfer.

Accepting money from a stranger later means adding the contact and asking
them to send again: a new transfer, never a second answer to this one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from ..errors import InputError
from ..protocol.amounts import format_amount
from ..protocol.receipt import SignedReceipt
from ..protocol.transfer import SignedTransfer, check_timestamp
from .store import Store

__all__ = ["QUARANTINE_LIMIT", "QuarantineBook", "QuarantinedTransfer"]

QUARANTINE_LIMIT = 100
"""How many refused strangers' transfers are kept to be shown (the newest)."""

_COLUMNS = (
    "transfer_id, sender, amount_minor, currency, memo, created_at, received_at, times_seen, "
    "signed_transfer, signed_receipt"
)


@dataclass(frozen=True)
class QuarantinedTransfer:
    """A refused transfer from a stranger, as last seen."""

    id: bytes
    sender: str
    amount_minor: int
    currency: str
    memo: str
    created_at: int
    received_at: int
    times_seen: int
    signed_transfer: bytes = field(repr=False)
    signed_receipt: bytes = field(repr=False)

    @property
    def amount(self) -> str:
        return format_amount(self.amount_minor, self.currency)

    @cached_property
    def receipt(self) -> SignedReceipt:
        """The signed rejection this transfer was answered with."""
        return SignedReceipt.decode(self.signed_receipt)


class QuarantineBook(Store):
    """The bounded list of strangers' refused transfers (a part of :class:`~.ledger.Ledger`)."""

    quarantine_limit: int = QUARANTINE_LIMIT

    def quarantine_many(
        self, items: Iterable[tuple[SignedTransfer, SignedReceipt]], at: int
    ) -> list[SignedReceipt]:
        """Keep strangers' transfers with their rejections; return the answer to send for each.

        A repeat gets the rejection stored the first time. The table is then
        pruned to the newest :attr:`quarantine_limit` rows, in the same
        transaction.
        """
        check_timestamp(at)
        pairs = list(items)
        for signed, receipt in pairs:
            if receipt.receipt.accepted or receipt.receipt.transfer_id != signed.id:
                raise InputError("only a rejection of that transfer can be quarantined")
        answers: list[SignedReceipt] = []
        with self._transaction() as conn:
            for signed, receipt in pairs:
                stored = conn.execute(
                    "SELECT signed_transfer, signed_receipt FROM quarantine WHERE transfer_id = ?",
                    (signed.id,),
                ).fetchone()
                if stored is not None and stored[0] == signed.encode():
                    conn.execute(
                        "UPDATE quarantine SET times_seen = times_seen + 1, received_at = ? "
                        "WHERE transfer_id = ?",
                        (at, signed.id),
                    )
                    answers.append(SignedReceipt.decode(stored[1]))
                    continue
                transfer = signed.transfer
                conn.execute(
                    f"INSERT OR REPLACE INTO quarantine ({_COLUMNS}) "  # noqa: S608
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                    (
                        signed.id,
                        transfer.sender,
                        transfer.amount,
                        transfer.currency,
                        transfer.memo,
                        transfer.created_at,
                        at,
                        signed.encode(),
                        receipt.encode(),
                    ),
                )
                answers.append(receipt)
            conn.execute(
                "DELETE FROM quarantine WHERE transfer_id NOT IN ("
                "SELECT transfer_id FROM quarantine ORDER BY received_at DESC, rowid DESC "
                "LIMIT ?)",
                (self.quarantine_limit,),
            )
        return answers

    def quarantined(self) -> list[QuarantinedTransfer]:
        """The kept strangers' transfers, newest first."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM quarantine ORDER BY received_at DESC, rowid DESC"  # noqa: S608
        ).fetchall()
        return [QuarantinedTransfer(*row) for row in rows]

    def clear_quarantine(self) -> int:
        """Forget every kept stranger's transfer; return how many there were."""
        with self._transaction() as conn:
            return int(conn.execute("DELETE FROM quarantine").rowcount)
