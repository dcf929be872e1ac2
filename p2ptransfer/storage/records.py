"""The ledger's value types and the checks on what callers hand it.

Rows are what the journal implies (see :mod:`.journal`); contacts and handle
pins are local trust decisions. The checks here run before any transaction
starts, so bad input changes nothing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..errors import InputError, LedgerIntegrityError
from ..protocol.amounts import format_amount
from ..protocol.identity import PublicIdentity
from ..protocol.receipt import RejectReason, SignedReceipt
from ..protocol.text import check_display_text
from ..protocol.transfer import TRANSFER_V2_SCHEMA, SignedTransfer

__all__ = [
    "ROW_COLUMNS",
    "Contact",
    "HandlePin",
    "TransferRow",
    "TransferStatus",
    "canonical_address",
    "check_contact_name",
    "check_note",
    "describe_key",
    "reason_text",
    "row_from_sql",
]

_INNER_TYPE_AT = 6  # a signed transfer: type byte, field 1's tag and u32 length, the transfer
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ADDRESS_PREFIX = "p2pt1"
_MAX_NOTE = 1000


class TransferStatus(enum.StrEnum):
    """Status of a transfer row; compares equal to its text ("pending", ...)."""

    PENDING = "pending"
    QUEUED = "queued"  # sealed into the recipient's relay mailbox: still waiting for a receipt
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"


def reason_text(reason: RejectReason) -> str:
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


def check_note(note: object) -> None:
    """Notes are shown in terminals: the one display-text rule applies."""
    if not isinstance(note, str):
        raise InputError("a contact note must be text")
    check_display_text(note, what="a contact note", max_chars=_MAX_NOTE)


def canonical_address(address: str) -> tuple[str, bytes]:
    identity = PublicIdentity.from_address(address)
    return identity.address, identity.public_key


def describe_key(address: str) -> str:
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

    @cached_property
    def request_id(self) -> bytes | None:
        """The payment request this transfer pays, None if it pays none.

        Only a version-2 transfer can carry one; its type byte sits at a fixed
        offset of the signed bytes, so other rows are answered without decoding.
        """
        blob = self.signed_transfer
        if len(blob) <= _INNER_TYPE_AT or blob[_INNER_TYPE_AT] != TRANSFER_V2_SCHEMA.type_id:
            return None
        return self.signed.transfer.request_id

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


ROW_COLUMNS = (
    "id, direction, counterparty, amount_minor, currency, memo, status, reason, created_at, "
    "updated_at, signed_transfer, signed_receipt, recorded_seq, updated_seq"
)
"""The ``transfers`` table's columns, in :class:`TransferRow`'s field order."""


def row_from_sql(values: Sequence[Any]) -> TransferRow:
    """A row as SQLite returned it; LedgerIntegrityError naming it if a column was edited.

    The table is derived data, but it is read before ``verify`` ever runs: a
    status someone typed into the file must be named, not crash the reader.
    """
    (tid, direction, counterparty, amount, currency, memo, status, reason, created, updated,
     st_blob, sr_blob, recorded_seq, updated_seq) = values  # fmt: skip
    try:
        parsed_status = TransferStatus(status)
    except ValueError:
        label = bytes(tid).hex() if isinstance(tid, bytes) else repr(tid)
        raise LedgerIntegrityError(
            f"transfer {label} ({direction}) has an unknown status {status!r} in the transfers "
            "table: the ledger file was edited; run 'p2ptransfer ledger verify'",
            row=recorded_seq if isinstance(recorded_seq, int) else None,
        ) from None
    return TransferRow(
        id=tid,
        direction=direction,
        counterparty=counterparty,
        amount_minor=amount,
        currency=currency,
        memo=memo,
        status=parsed_status,
        reason=reason,
        created_at=created,
        updated_at=updated,
        signed_transfer=st_blob,
        signed_receipt=sr_blob,
        recorded_seq=recorded_seq,
        updated_seq=updated_seq,
    )
