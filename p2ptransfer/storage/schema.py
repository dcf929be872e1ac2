"""The ledger's SQLite schema, its migrations, and the journal entry's canonical bytes.

Why the schema looks the way it does (docs/ledger.md has the full story):

* ``journal`` is the ledger. Every change of a transfer's state is one
  appended entry holding the signed bytes that justify it, chained to the
  previous entry by a SHA-256 hash. Triggers refuse UPDATE and DELETE on it,
  so only a deliberate edit of the file (which ``verify()`` detects) can
  change history.
* ``transfers`` is the current state, a pure function of the journal, kept as
  a table so that history, balances and lookups are plain indexed SQL.
  ``verify()`` recomputes it from the journal and compares.
* ``ledger_head`` records the last entry's seq and hash, so cutting entries
  off the *end* of the journal is detected too, not only gaps in the middle.
* Balances are never stored: they are a SUM over completed transfers.
* ``contacts`` and ``handle_pins`` are local trust decisions, not money: they
  are ordinary mutable tables, outside the journal. So are ``requests``: the
  money a request asks for is the journaled transfer that pays it.

Migrations are an ordered list; migration *i* takes ``PRAGMA user_version``
from *i* to *i + 1* and runs in one transaction together with that version
bump, so a crash mid-migration leaves the previous version intact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..protocol import primitives
from ..protocol.encoding import Bytes, Field, FixedBytes, Schema, UInt
from ..protocol.receipt import SIGNED_RECEIPT_SCHEMA
from ..protocol.transfer import SIGNED_TRANSFER_SCHEMA, TRANSFER_ID_SIZE

__all__ = [
    "ENTRY_HASH_CONTEXT",
    "ENTRY_SCHEMA",
    "GENESIS_HASH",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "EntryKind",
    "JournalEntry",
    "entry_hash",
]

ENTRY_HASH_CONTEXT = b"p2ptransfer-ledger-entry-v1\x00"
GENESIS_HASH = bytes(32)
"""``prev_hash`` of the first journal entry."""


class EntryKind(enum.Enum):
    """What one journal entry does; ``code`` is in the hashed bytes: never renumber."""

    OUT_PENDING = ("out-pending", 1)
    """We signed a transfer and committed it before sending it (status pending)."""
    OUT_RECEIPT = ("out-receipt", 2)
    """The recipient's verified receipt for one of our transfers (completed or rejected)."""
    OUT_FAILED = ("out-failed", 3)
    """The user declared a pending outgoing transfer failed."""
    IN_RECORDED = ("in-recorded", 4)
    """A transfer we received, with the receipt we signed for it (completed or rejected)."""
    OWNER = ("owner", 5)
    """The ledger's owner: its public key, signed by it (once per ledger, no transfer)."""
    OUT_QUEUED = ("out-queued", 6)
    """A pending transfer was sealed into the recipient's relay mailbox (still not final)."""

    def __init__(self, text: str, code: int) -> None:
        self.text = text
        self.code = code

    @property
    def direction(self) -> str:
        """'in' or 'out' for a transfer entry; '' for the owner entry (it concerns none)."""
        if self is EntryKind.OWNER:
            return ""
        return "in" if self is EntryKind.IN_RECORDED else "out"

    @classmethod
    def from_text(cls, text: object) -> EntryKind:
        for kind in cls:
            if kind.text == text:
                return kind
        raise ValueError(f"unknown journal entry kind {text!r}")


ENTRY_SCHEMA = Schema(
    "ledger-entry",
    0x50,
    [
        Field(1, "seq", UInt(64)),
        Field(2, "kind", UInt(8)),
        Field(3, "transfer_id", FixedBytes(TRANSFER_ID_SIZE)),
        Field(4, "at", UInt(64)),
        Field(5, "signed_transfer", Bytes(SIGNED_TRANSFER_SCHEMA.max_size)),
        Field(6, "signed_receipt", Bytes(SIGNED_RECEIPT_SCHEMA.max_size)),
    ],
    max_size=1
    + 6 * 5
    + 8
    + 1
    + 16
    + 8
    + SIGNED_TRANSFER_SCHEMA.max_size
    + SIGNED_RECEIPT_SCHEMA.max_size,
)
"""Canonical bytes of one journal entry (an absent blob is encoded as empty bytes)."""


@dataclass(frozen=True)
class JournalEntry:
    """One journal entry as stored: its content, and the two hashes that chain it."""

    seq: int
    kind: EntryKind
    transfer_id: bytes
    at: int
    signed_transfer: bytes | None
    signed_receipt: bytes | None
    prev_hash: bytes
    hash: bytes

    def encode(self) -> bytes:
        return encode_entry(
            self.seq,
            self.kind,
            self.transfer_id,
            self.at,
            self.signed_transfer,
            self.signed_receipt,
        )


def encode_entry(
    seq: int,
    kind: EntryKind,
    transfer_id: bytes,
    at: int,
    signed_transfer: bytes | None,
    signed_receipt: bytes | None,
) -> bytes:
    """The canonical encoding (ValueError if a value does not fit the schema)."""
    return ENTRY_SCHEMA.encode(
        {
            "seq": seq,
            "kind": kind.code,
            "transfer_id": transfer_id,
            "at": at,
            "signed_transfer": signed_transfer or b"",
            "signed_receipt": signed_receipt or b"",
        }
    )


def entry_hash(prev_hash: bytes, encoded_entry: bytes) -> bytes:
    """SHA-256(context || prev_hash || entry): the link that makes the journal a chain.

    The entry's own seq is inside ``encoded_entry``, so moving an entry to
    another position changes its hash as surely as editing it.
    """
    return primitives.sha256(ENTRY_HASH_CONTEXT, prev_hash, encoded_entry)


_V1: tuple[str, ...] = (
    """
    CREATE TABLE journal (
        seq             INTEGER PRIMARY KEY CHECK (seq >= 1),
        kind            TEXT    NOT NULL,
        transfer_id     BLOB    NOT NULL,
        at              INTEGER NOT NULL,
        signed_transfer BLOB,
        signed_receipt  BLOB,
        prev_hash       BLOB    NOT NULL,
        hash            BLOB    NOT NULL
    )
    """,
    "CREATE INDEX journal_transfer ON journal (transfer_id)",
    """
    CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'the ledger journal is append-only'); END
    """,
    """
    CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    BEGIN SELECT RAISE(ABORT, 'the ledger journal is append-only'); END
    """,
    """
    CREATE TABLE ledger_head (
        one  INTEGER PRIMARY KEY CHECK (one = 1),
        seq  INTEGER NOT NULL,
        hash BLOB    NOT NULL
    )
    """,
    "INSERT INTO ledger_head (one, seq, hash) VALUES (1, 0, zeroblob(32))",
    """
    CREATE TABLE transfers (
        id              BLOB    NOT NULL CHECK (length(id) = 16),
        direction       TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
        counterparty    TEXT    NOT NULL,
        amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
        currency        TEXT    NOT NULL,
        memo            TEXT    NOT NULL,
        status          TEXT    NOT NULL
                        CHECK (status IN ('pending', 'completed', 'rejected', 'failed')),
        reason          TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        signed_transfer BLOB    NOT NULL,
        signed_receipt  BLOB,
        recorded_seq    INTEGER NOT NULL REFERENCES journal (seq),
        updated_seq     INTEGER NOT NULL REFERENCES journal (seq),
        PRIMARY KEY (id, direction),
        CHECK ((status IN ('pending', 'failed')) = (signed_receipt IS NULL))
    )
    """,
    "CREATE INDEX transfers_counterparty ON transfers (counterparty, recorded_seq)",
    "CREATE INDEX transfers_status ON transfers (status, direction)",
    "CREATE UNIQUE INDEX transfers_recorded ON transfers (recorded_seq)",
    """
    CREATE TABLE contacts (
        name        TEXT    PRIMARY KEY,
        address     TEXT    NOT NULL UNIQUE,
        public_key  BLOB    NOT NULL CHECK (length(public_key) = 32),
        added_at    INTEGER NOT NULL,
        verified_at INTEGER,
        note        TEXT    NOT NULL DEFAULT ''
    )
    """,
    """
    CREATE TABLE handle_pins (
        handle     TEXT    PRIMARY KEY,
        address    TEXT    NOT NULL,
        public_key BLOB    NOT NULL CHECK (length(public_key) = 32),
        pinned_at  INTEGER NOT NULL
    )
    """,
)

_V2 = (
    # Per-contact, per-currency acceptance limits (one transfer at most this much).
    # Policy, not history: outside the journal, like contacts and pins.
    """
    CREATE TABLE contact_limits (
        name      TEXT    NOT NULL REFERENCES contacts (name) ON DELETE CASCADE,
        currency  TEXT    NOT NULL,
        max_minor INTEGER NOT NULL CHECK (max_minor > 0),
        PRIMARY KEY (name, currency)
    )
    """,
)

_V3 = (
    # Transfers refused because their sender is not a contact: shown to the user, never
    # journaled (a stranger must not be able to grow the append-only journal), bounded
    # and pruned oldest first by the ledger.
    """
    CREATE TABLE quarantine (
        transfer_id     BLOB    PRIMARY KEY CHECK (length(transfer_id) = 16),
        sender          TEXT    NOT NULL,
        amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
        currency        TEXT    NOT NULL,
        memo            TEXT    NOT NULL,
        created_at      INTEGER NOT NULL,
        received_at     INTEGER NOT NULL,
        times_seen      INTEGER NOT NULL DEFAULT 1 CHECK (times_seen >= 1),
        signed_transfer BLOB    NOT NULL,
        signed_receipt  BLOB    NOT NULL
    )
    """,
    "CREATE INDEX quarantine_received ON quarantine (received_at)",
)

_V4 = (
    # The 'queued' status: SQLite cannot change a CHECK in place, so the table is rebuilt
    # (same columns, same order, same indexes) inside the migration's transaction.
    """
    CREATE TABLE transfers_v4 (
        id              BLOB    NOT NULL CHECK (length(id) = 16),
        direction       TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
        counterparty    TEXT    NOT NULL,
        amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
        currency        TEXT    NOT NULL,
        memo            TEXT    NOT NULL,
        status          TEXT    NOT NULL
                        CHECK (status IN ('pending', 'queued', 'completed', 'rejected', 'failed')),
        reason          TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        signed_transfer BLOB    NOT NULL,
        signed_receipt  BLOB,
        recorded_seq    INTEGER NOT NULL REFERENCES journal (seq),
        updated_seq     INTEGER NOT NULL REFERENCES journal (seq),
        PRIMARY KEY (id, direction),
        CHECK ((status IN ('pending', 'queued', 'failed')) = (signed_receipt IS NULL))
    )
    """,
    "INSERT INTO transfers_v4 SELECT * FROM transfers",
    "DROP TABLE transfers",
    "ALTER TABLE transfers_v4 RENAME TO transfers",
    "CREATE INDEX transfers_counterparty ON transfers (counterparty, recorded_seq)",
    "CREATE INDEX transfers_status ON transfers (status, direction)",
    "CREATE UNIQUE INDEX transfers_recorded ON transfers (recorded_seq)",
)

_V5 = (
    # The stored acceptance policy, so every command that receives (sync, receive, listen)
    # judges the same way unless its flags say otherwise. Policy, not history.
    """
    CREATE TABLE acceptance (
        one            INTEGER PRIMARY KEY CHECK (one = 1),
        accept_unknown INTEGER NOT NULL CHECK (accept_unknown IN (0, 1)),
        currencies     TEXT
    )
    """,
)

_V6 = (
    # Payment requests, both directions. Policy-like state outside the journal: the money is
    # the journaled transfer that pays one (it carries the request id in its signed bytes);
    # this table says what was asked and how it ended. 'expired' is never stored: it is read
    # from expires_at and the clock.
    """
    CREATE TABLE requests (
        id             BLOB    NOT NULL CHECK (length(id) = 16),
        direction      TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
        counterparty   TEXT    NOT NULL,
        amount_minor   INTEGER NOT NULL CHECK (amount_minor > 0),
        currency       TEXT    NOT NULL,
        memo           TEXT    NOT NULL,
        created_at     INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL CHECK (expires_at > created_at),
        state          TEXT    NOT NULL
                       CHECK (state IN ('open', 'paid', 'declined', 'cancelled')),
        paid_by        BLOB    CHECK (paid_by IS NULL OR length(paid_by) = 16),
        signed_request BLOB    NOT NULL,
        signed_answer  BLOB,
        updated_at     INTEGER NOT NULL,
        PRIMARY KEY (id, direction),
        CHECK ((state = 'paid') = (paid_by IS NOT NULL)),
        CHECK ((state IN ('declined', 'cancelled')) = (signed_answer IS NOT NULL))
    )
    """,
    "CREATE INDEX requests_created ON requests (created_at)",
)

MIGRATIONS: list[tuple[str, ...]] = [_V1, _V2, _V3, _V4, _V5, _V6]
"""Migration *i* brings ``user_version`` from *i* to *i + 1*; append, never edit."""

SCHEMA_VERSION = len(MIGRATIONS)
