"""The journal's legal moves, its owner, and the walk that verifies the chain.

A transfer's row is a fold over its journal entries. What each entry may do
is written once, as data (:data:`MOVES`), and checked by one function,
:func:`apply_entry`, which both the write path and :func:`walk` use — so
what can be written is exactly what verifies::

    kind           from            carries                       to
    out-pending    (none)          signed transfer               pending
    out-queued     pending         -                             queued (sealed into the mailbox)
    out-receipt    pending|queued|failed  signed receipt         completed | rejected
    out-failed     pending|queued  -                             failed
    in-recorded    (none)          signed transfer + receipt     completed | rejected

A "failed" outgoing transfer can still complete: *failed* is the user giving
up, while a receipt is the recipient's signed word about what happened.

**The owner.** A ledger names its owner in an ``owner`` entry (the owner's
public key, signed by it). From then on every transfer entry must be the
owner's own business: an outgoing transfer is signed *by* the owner, an
incoming one is addressed *to* the owner and answered by a receipt the owner
signed. A validly signed transfer between two other people, or a ledger
file moved under another identity, is refused on write and named by
``verify``. Entries written before an older ledger learnt its owner are held
to the same rule: the owner is looked up before the walk starts.
"""

from __future__ import annotations

import dataclasses
import enum
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DecodeError, LedgerIntegrityError, P2PTransferError
from ..protocol.encoding import Field, FixedBytes, Schema
from ..protocol.identity import Identity, PublicIdentity
from ..protocol.receipt import SignedReceipt
from ..protocol.transfer import SignedTransfer
from . import schema
from .records import ROW_COLUMNS, TransferRow, TransferStatus, reason_text
from .schema import GENESIS_HASH, EntryKind, JournalEntry

__all__ = [
    "MOVES",
    "OWNER_TRANSFER_ID",
    "Move",
    "TransitionError",
    "apply_entry",
    "decode_owner",
    "entry_from_sql",
    "owner_record",
    "walk",
]

OWNER_CONTEXT = b"p2ptransfer-ledger-owner-v1\x00"
OWNER_TRANSFER_ID = bytes(16)
"""The transfer id column of an owner entry (it concerns no transfer)."""

OWNER_SCHEMA = Schema(
    "ledger-owner",
    0x51,
    [Field(1, "public_key", FixedBytes(32)), Field(2, "signature", FixedBytes(64))],
    max_size=128,
)
"""What an owner entry carries (in the entry's ``signed_transfer`` field)."""


class TransitionError(LedgerIntegrityError):
    """Raised when an entry is not a legal move, or not the owner's business.

    On the write path it refuses the entry (nothing is written); ``verify``
    reports it with the entry's seq.
    """


_DECIDED = "decided"  # completed or rejected, as the receipt says
_WAITING: frozenset[TransferStatus | None] = frozenset(
    {TransferStatus.PENDING, TransferStatus.QUEUED}
)  # an outgoing transfer that still waits for its receipt


@dataclass(frozen=True)
class Move:
    """What one kind of entry may do: from which states, carrying what, to which state."""

    sources: frozenset[TransferStatus | None]
    carries_transfer: bool
    carries_receipt: bool
    target: TransferStatus | str  # a status, or _DECIDED


MOVES: dict[EntryKind, Move] = {
    EntryKind.OUT_PENDING: Move(frozenset({None}), True, False, TransferStatus.PENDING),
    EntryKind.OUT_QUEUED: Move(
        frozenset({TransferStatus.PENDING}), False, False, TransferStatus.QUEUED
    ),
    EntryKind.OUT_RECEIPT: Move(_WAITING | {TransferStatus.FAILED}, False, True, _DECIDED),
    EntryKind.OUT_FAILED: Move(_WAITING, False, False, TransferStatus.FAILED),
    EntryKind.IN_RECORDED: Move(frozenset({None}), True, True, _DECIDED),
}
"""The legal moves of a transfer row; a (kind, state) not listed here is refused."""


def _illegal(entry: JournalEntry, current: TransferRow | None) -> TransitionError:
    tid = entry.transfer_id.hex()
    if current is None:
        return TransitionError(f"transfer {tid} ({entry.kind.direction}) was never recorded")
    if entry.kind in (EntryKind.OUT_PENDING, EntryKind.IN_RECORDED):
        return TransitionError(f"transfer {tid} ({entry.kind.direction}) is already recorded")
    if entry.kind in (EntryKind.OUT_FAILED, EntryKind.OUT_QUEUED):
        return TransitionError(f"transfer {tid} is {current.status}, not pending")
    return TransitionError(f"transfer {tid} is already {current.status}")


def apply_entry(
    entry: JournalEntry,
    current: TransferRow | None,
    *,
    owner: bytes | None = None,
    decoded_transfer: SignedTransfer | None = None,
    decoded_receipt: SignedReceipt | None = None,
) -> TransferRow:
    """The transfer row after ``entry``, given the row before it (None: not yet known).

    Checks everything the entry claims: the move is in :data:`MOVES`, the
    signed transfer is by its sender, the receipt is by the transfer's
    recipient and answers exactly that transfer, and — given the ledger's
    ``owner`` public key — that the transfer is the owner's. Raises
    SignatureError, ProtocolError/DecodeError or TransitionError.

    ``decoded_transfer``/``decoded_receipt`` may pass the objects whose
    ``encode()`` the entry's blobs are, so the write path skips decoding them
    again (encoding is canonical). Signatures are checked either way.
    """
    move = MOVES.get(entry.kind)
    if move is None:
        raise TransitionError(f"a {entry.kind.text} entry changes no transfer")
    if (current.status if current is not None else None) not in move.sources:
        raise _illegal(entry, current)
    if (entry.signed_transfer is not None) != move.carries_transfer:
        needs = "needs the" if move.carries_transfer else "carries no"
        raise TransitionError(f"a {entry.kind.text} entry {needs} signed transfer")
    if (entry.signed_receipt is not None) != move.carries_receipt:
        needs = "needs the signed" if move.carries_receipt else "carries no"
        raise TransitionError(f"a {entry.kind.text} entry {needs} receipt")

    if current is None:
        assert entry.signed_transfer is not None
        signed = decoded_transfer or SignedTransfer.decode(entry.signed_transfer)
        if signed.id != entry.transfer_id:
            raise TransitionError("the signed transfer has another id than the entry")
        signed.verify()
    else:
        signed = current.signed
    transfer = signed.transfer
    incoming = entry.kind.direction == "in"
    if owner is not None:
        ours = transfer.recipient if incoming else transfer.sender
        if PublicIdentity.from_address(ours).public_key != owner:
            role = "addressed to" if incoming else "sent by"
            raise TransitionError(
                f"transfer {transfer.id.hex()} was not {role} this ledger's owner "
                "(an entry from another ledger?)"
            )

    receipt: SignedReceipt | None = None
    if move.carries_receipt:
        assert entry.signed_receipt is not None
        receipt = decoded_receipt or SignedReceipt.decode(entry.signed_receipt)
        receipt.verify(signed)  # by the transfer's recipient: the owner, for incoming ones
    if move.target == _DECIDED:
        assert receipt is not None
        accepted = receipt.receipt.accepted
        status = TransferStatus.COMPLETED if accepted else TransferStatus.REJECTED
        reason = None if accepted else reason_text(receipt.receipt.reason)
    else:
        status, reason = TransferStatus(move.target), None

    if current is None:
        assert entry.signed_transfer is not None
        row = TransferRow(
            id=transfer.id,
            direction=entry.kind.direction,
            counterparty=transfer.sender if incoming else transfer.recipient,
            amount_minor=transfer.amount,
            currency=transfer.currency,
            memo=transfer.memo,
            status=status,
            reason=reason,
            created_at=transfer.created_at,
            updated_at=entry.at,
            signed_transfer=entry.signed_transfer,
            signed_receipt=entry.signed_receipt,
            recorded_seq=entry.seq,
            updated_seq=entry.seq,
        )
    else:
        row = dataclasses.replace(  # a new row: replace() carries no decode cache over
            current,
            status=status,
            reason=reason,
            updated_at=entry.at,
            signed_receipt=entry.signed_receipt,
            updated_seq=entry.seq,
        )
    return with_decoded(row, signed, receipt)


def with_decoded(
    row: TransferRow, signed: SignedTransfer, receipt: SignedReceipt | None
) -> TransferRow:
    """Fill the row's decode caches with objects already at hand (saves a decode per use)."""
    row.__dict__["signed"] = signed
    row.__dict__["receipt"] = receipt
    return row


# --- the owner entry ---------------------------------------------------------------


def _owner_message(public_key: bytes, at: int) -> bytes:
    return OWNER_CONTEXT + public_key + at.to_bytes(8, "big")


def owner_record(identity: Identity, at: int) -> bytes:
    """The payload of an owner entry: the owner's key, signed by that key."""
    public_key = PublicIdentity.from_address(identity.address).public_key
    signature = identity.sign(_owner_message(public_key, at))
    return OWNER_SCHEMA.encode({"public_key": public_key, "signature": signature})


def decode_owner(entry: JournalEntry) -> bytes:
    """The owner public key an owner entry names, after checking its signature."""
    if entry.kind is not EntryKind.OWNER:
        raise TransitionError(f"entry {entry.seq} is not an owner entry")
    if entry.transfer_id != OWNER_TRANSFER_ID or entry.signed_receipt is not None:
        raise TransitionError("an owner entry carries only the owner record")
    if entry.signed_transfer is None:
        raise TransitionError("an owner entry needs the owner record")
    fields = OWNER_SCHEMA.decode(entry.signed_transfer)
    public_key: bytes = fields["public_key"]
    PublicIdentity(public_key).verify(fields["signature"], _owner_message(public_key, entry.at))
    return public_key


# --- reading and walking ---------------------------------------------------------------


_ENTRY_COLUMNS = "seq, kind, transfer_id, at, signed_transfer, signed_receipt, prev_hash, hash"


def entry_from_sql(values: Sequence[Any]) -> JournalEntry:
    """An entry as SQLite returned it; LedgerIntegrityError naming it if malformed."""
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


def entries(
    conn: sqlite3.Connection, where: str = "", params: Sequence[Any] = ()
) -> Iterator[JournalEntry]:
    """Journal entries in seq order (``where`` is a fixed SQL condition, never user text)."""
    query = f"SELECT {_ENTRY_COLUMNS} FROM journal {where} ORDER BY seq"  # noqa: S608
    for values in conn.execute(query, params):
        yield entry_from_sql(values)


def find_owner(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
    """(seq, public key) of the ledger's owner entry, None if it names none yet.

    Two owner entries, or one whose signature fails, is an integrity error:
    a ledger has one owner for life.
    """
    found = list(entries(conn, "WHERE kind = ?", (EntryKind.OWNER.text,)))
    if not found:
        return None
    if len(found) > 1:
        raise LedgerIntegrityError(
            f"journal entry {found[1].seq} names a second owner for this ledger", row=found[1].seq
        )
    (entry,) = found
    try:
        return entry.seq, decode_owner(entry)
    except P2PTransferError as exc:
        raise LedgerIntegrityError(
            f"journal entry {entry.seq} (owner): {exc}", row=entry.seq
        ) from exc


def walk(
    conn: sqlite3.Connection, owner: bytes | None
) -> tuple[int, bytes, dict[tuple[bytes, str], TransferRow]]:
    """Re-check every entry in order; return (last seq, last hash, the rows they imply).

    Checks seq continuity from 1, each link to the previous hash, each
    entry's own hash, every signature, every move, and — with ``owner`` —
    that every transfer is the owner's. The first problem raises
    LedgerIntegrityError with ``row`` = that entry's seq.
    """
    state: dict[tuple[bytes, str], TransferRow] = {}
    expected_seq, prev_hash = 1, GENESIS_HASH
    for entry in entries(conn):
        seq = entry.seq
        if seq != expected_seq:
            raise LedgerIntegrityError(
                f"journal entry {expected_seq} is missing (the next entry is {seq})",
                row=expected_seq,
            )
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
        try:
            if entry.kind is EntryKind.OWNER:
                decode_owner(entry)  # which owner counts was settled before the walk
            else:
                key = (entry.transfer_id, entry.kind.direction)
                state[key] = apply_entry(entry, state.get(key), owner=owner)
        except P2PTransferError as exc:
            raise LedgerIntegrityError(f"journal entry {seq}: {exc}", row=seq) from exc
        prev_hash = entry.hash
        expected_seq += 1
    return expected_seq - 1, prev_hash, state


def compare_table(conn: sqlite3.Connection, expected: dict[tuple[bytes, str], TransferRow]) -> None:
    """The transfers table must be exactly what the journal implies; name the first difference."""
    columns = ROW_COLUMNS.split(", ")
    problems: list[tuple[int, str]] = []
    seen: set[tuple[bytes, str]] = set()
    for values in conn.execute(f"SELECT {ROW_COLUMNS} FROM transfers"):  # noqa: S608
        key = (values[0], values[1])
        seen.add(key)
        want = expected.get(key)
        label = f"transfer {bytes(values[0]).hex()} ({values[1]})"
        if want is None:
            seq = values[12] if isinstance(values[12], int) else 0
            problems.append((seq, f"{label} is in the transfers table but not in the journal"))
            continue
        got = dict(zip(columns, values, strict=True))
        for name in columns:
            wanted = getattr(want, name)
            if isinstance(wanted, enum.Enum):
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
