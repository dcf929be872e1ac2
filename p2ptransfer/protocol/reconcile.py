"""Reconciling two ledgers' shared history over a session: what each holds, proven.

A disk restored from an old copy loses transfers its owner's counterparty
still holds. Every settled transfer is self-proving — the sender's signed
transfer and the recipient's signed receipt — so whoever holds the pair can
hand it back, and the one who lost it can check and re-record it without
trusting anyone. Pending transfers (no receipt yet) are the sender's
business alone and are left out; strangers' quarantine too.

The conversation, inside an open session, one message per ``RECONCILE``
record::

    initiator                               responder
    Inventory* (last one final)   ------->
                                  <-------  Inventory* (final), Proof*, Done
    Proof*, Done                  ------->

An **inventory item** is (transfer id, accepted?, SHA-256 of the signed
receipt). Once a side has both inventories it sends a Proof (signed
transfer + signed receipt) for every id it holds that the other lacks, then
Done. Each side accepts only proofs it asked for by lacking them, whose
receipt hashes to what the inventory said, and whose transfer is between
the two peers of the session; anything else fails the exchange. Ids held on
both sides with different outcomes are **disagreements**: two contradicting
receipts signed by one recipient, which only people can settle.

The machine (:data:`TRANSITIONS`, a missing key is a protocol error)::

    initiator:  LISTING --their Inventory(final)--> PROVING --their Done--> FINISHED
    responder:  WAITING --their Inventory(final)--> PROVING --their Done--> FINISHED

and "their Inventory (not final)" keeps the state. Pure: no I/O, no ledger;
the runtime gives it what its ledger holds and records what it hands back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import DecodeError, ProtocolError
from . import primitives
from .encoding import Bytes, Field, Schema, UInt
from .handshake import Role
from .receipt import SIGNED_RECEIPT_SCHEMA, SignedReceipt
from .transfer import SIGNED_TRANSFER_SCHEMA, TRANSFER_ID_SIZE, SignedTransfer

__all__ = [
    "DIGEST_CONTEXT",
    "Disagreement",
    "Done",
    "Inventory",
    "Item",
    "Message",
    "Proof",
    "Reconciliation",
    "decode_message",
    "receipt_digest",
]

DIGEST_CONTEXT = b"p2ptransfer-reconcile-receipt-v1\x00"
_ITEM_SIZE = TRANSFER_ID_SIZE + 1 + 32
MAX_ITEMS = 1000
"""Inventory items per message: 49 KB, inside one session record."""


def receipt_digest(signed_receipt: bytes) -> bytes:
    """The hash an inventory names a receipt by (the receipt binds its transfer)."""
    return primitives.sha256(DIGEST_CONTEXT, signed_receipt)


@dataclass(frozen=True)
class Item:
    """One settled transfer as an inventory names it."""

    transfer_id: bytes
    accepted: bool
    digest: bytes

    def __post_init__(self) -> None:
        if len(self.transfer_id) != TRANSFER_ID_SIZE or len(self.digest) != 32:
            raise ValueError("an inventory item is a 16-byte id and a 32-byte digest")

    @classmethod
    def of(cls, receipt: SignedReceipt) -> Item:
        return cls(
            receipt.receipt.transfer_id, receipt.receipt.accepted, receipt_digest(receipt.encode())
        )


# --- messages -----------------------------------------------------------------------


@dataclass(frozen=True)
class Inventory:
    """Some of the sender's settled transfers with this peer; ``final`` on the last one."""

    items: tuple[Item, ...]
    final: bool

    SCHEMA = Schema(
        "reconcile.Inventory",
        0x80,
        [Field(1, "final", UInt(8)), Field(2, "items", Bytes(MAX_ITEMS * _ITEM_SIZE))],
        max_size=MAX_ITEMS * _ITEM_SIZE + 32,
    )

    def __post_init__(self) -> None:
        if len(self.items) > MAX_ITEMS:
            raise ValueError(f"an inventory message holds at most {MAX_ITEMS} items")

    def encode(self) -> bytes:
        packed = b"".join(i.transfer_id + bytes([i.accepted]) + i.digest for i in self.items)
        return self.SCHEMA.encode({"final": int(self.final), "items": packed})

    @classmethod
    def decode(cls, data: bytes) -> Inventory:
        values = cls.SCHEMA.decode(data)
        packed: bytes = values["items"]
        if values["final"] > 1 or len(packed) % _ITEM_SIZE:
            raise DecodeError("malformed reconcile inventory")
        items = []
        for start in range(0, len(packed), _ITEM_SIZE):
            chunk = packed[start : start + _ITEM_SIZE]
            flag = chunk[TRANSFER_ID_SIZE]
            if flag > 1:
                raise DecodeError("malformed reconcile inventory item")
            items.append(Item(chunk[:TRANSFER_ID_SIZE], bool(flag), chunk[TRANSFER_ID_SIZE + 1 :]))
        return cls(tuple(items), bool(values["final"]))


@dataclass(frozen=True)
class Proof:
    """One settled transfer handed back whole: it proves itself by its two signatures."""

    signed: SignedTransfer
    receipt: SignedReceipt

    SCHEMA = Schema(
        "reconcile.Proof",
        0x81,
        [
            Field(1, "signed_transfer", Bytes(SIGNED_TRANSFER_SCHEMA.max_size)),
            Field(2, "signed_receipt", Bytes(SIGNED_RECEIPT_SCHEMA.max_size)),
        ],
        max_size=SIGNED_TRANSFER_SCHEMA.max_size + SIGNED_RECEIPT_SCHEMA.max_size + 16,
    )

    def encode(self) -> bytes:
        return self.SCHEMA.encode(
            {"signed_transfer": self.signed.encode(), "signed_receipt": self.receipt.encode()}
        )

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        values = cls.SCHEMA.decode(data)
        return cls(
            SignedTransfer.decode(values["signed_transfer"]),
            SignedReceipt.decode(values["signed_receipt"]),
        )


@dataclass(frozen=True)
class Done:
    """The sender has sent every proof it owes."""

    SCHEMA = Schema("reconcile.Done", 0x82, [], max_size=8)

    def encode(self) -> bytes:
        return self.SCHEMA.encode({})

    @classmethod
    def decode(cls, data: bytes) -> Done:
        cls.SCHEMA.decode(data)
        return cls()


Message = Inventory | Proof | Done
_BY_TYPE: dict[int, type[Inventory] | type[Proof] | type[Done]] = {
    Inventory.SCHEMA.type_id: Inventory,
    Proof.SCHEMA.type_id: Proof,
    Done.SCHEMA.type_id: Done,
}


def decode_message(data: bytes) -> Message:
    """One reconcile message from a record's plaintext (DecodeError if it is none)."""
    kind = _BY_TYPE.get(Schema.peek_type(data))
    if kind is None:
        raise DecodeError("not a reconcile message")
    return kind.decode(data)


# --- the exchange -------------------------------------------------------------------


class State(enum.Enum):
    LISTING = "listing"  # initiator: our inventory is out, theirs not complete
    WAITING = "waiting"  # responder: their inventory not complete
    PROVING = "proving"  # both inventories known; proofs flowing until their Done
    FINISHED = "finished"
    ERROR = "error"


_FINAL, _PART = "inventory-final", "inventory-part"
TRANSITIONS: dict[Role, dict[State, dict[str, State]]] = {
    Role.INITIATOR: {
        State.LISTING: {_PART: State.LISTING, _FINAL: State.PROVING},
        State.PROVING: {"proof": State.PROVING, "done": State.FINISHED},
    },
    Role.RESPONDER: {
        State.WAITING: {_PART: State.WAITING, _FINAL: State.PROVING},
        State.PROVING: {"proof": State.PROVING, "done": State.FINISHED},
    },
}
"""role -> state -> message -> next state; anything missing is a protocol error."""


@dataclass(frozen=True)
class Disagreement:
    """One transfer both sides hold settled, with different receipts."""

    transfer_id: bytes
    mine: Item
    theirs: Item

    @property
    def contradicting(self) -> bool:
        """Two answers with different outcomes (a same outcome re-signed is not one)."""
        return self.mine.accepted != self.theirs.accepted


class Reconciliation:
    """One side of a reconcile exchange; see the module docstring.

    ``me`` and ``peer`` are the two addresses of the session; ``mine`` is
    what this side's ledger holds settled with ``peer``. Feed it messages
    with :meth:`receive`; send what :meth:`messages_to_send` returns; when
    :attr:`owed` is non-empty, the runtime looks those ids up and hands the
    pairs to :meth:`send_proofs`.
    """

    def __init__(self, role: Role, me: str, peer: str, mine: Iterable[Item]) -> None:
        self.role = role
        self.me, self.peer = me, peer
        self.mine: dict[bytes, Item] = {item.transfer_id: item for item in mine}
        self.theirs: dict[bytes, Item] = {}
        self.state = State.LISTING if role is Role.INITIATOR else State.WAITING
        self.owed: list[bytes] = []  # ids to prove to the peer, once both inventories are in
        self.proven: list[Proof] = []  # proofs received and checked, for the runtime to record
        self._expected: dict[bytes, Item] = {}  # ids we lack: what their proof must hash to
        self._outgoing: list[Message] = []
        self._done_sent = False
        if role is Role.INITIATOR:
            self._queue_inventory()

    # --- what the runtime reads ---

    def messages_to_send(self) -> list[Message]:
        out, self._outgoing = self._outgoing, []
        return out

    @property
    def proofs_due(self) -> bool:
        """Both inventories are known and our proofs (maybe none) and Done are not sent yet."""
        return self.state in (State.PROVING, State.FINISHED) and not self._done_sent

    @property
    def finished(self) -> bool:
        return self.state is State.FINISHED and self._done_sent

    @property
    def disagreements(self) -> list[Disagreement]:
        both = sorted(self.mine.keys() & self.theirs.keys())
        return [
            Disagreement(tid, self.mine[tid], self.theirs[tid])
            for tid in both
            if self.mine[tid].digest != self.theirs[tid].digest
        ]

    # --- what the runtime feeds ---

    def receive(self, message: Message) -> None:
        """Take one message from the peer (ProtocolError, and the exchange ends, if illegal)."""
        try:
            self._step(message)
        except (ProtocolError, DecodeError, ValueError) as exc:
            self.state = State.ERROR
            if isinstance(exc, ProtocolError):
                raise
            raise ProtocolError(f"reconcile: {exc}") from exc

    def send_proofs(self, proofs: Mapping[bytes, tuple[SignedTransfer, SignedReceipt]]) -> None:
        """Queue a proof for each id in :attr:`owed`, then Done (local misuse: ValueError)."""
        if not self.proofs_due:
            raise ValueError("proofs are sent once, after both inventories are known")
        for tid in self.owed:
            signed, receipt = proofs[tid]
            if receipt_digest(receipt.encode()) != self.mine[tid].digest:
                raise ValueError(f"the proof for {tid.hex()} is not what our inventory named")
            self._outgoing.append(Proof(signed, receipt))
        self.owed = []
        self._outgoing.append(Done())
        self._done_sent = True

    # --- internals ---

    def _queue_inventory(self) -> None:
        items = [self.mine[tid] for tid in sorted(self.mine)]
        chunks = [items[i : i + MAX_ITEMS] for i in range(0, len(items), MAX_ITEMS)] or [[]]
        for n, chunk in enumerate(chunks):
            self._outgoing.append(Inventory(tuple(chunk), final=n == len(chunks) - 1))

    def _step(self, message: Message) -> None:
        if isinstance(message, Inventory):
            event = _FINAL if message.final else _PART
        elif isinstance(message, Proof):
            event = "proof"
        else:
            event = "done"
        following = TRANSITIONS[self.role].get(self.state, {}).get(event)
        if following is None:
            raise ProtocolError(f"reconcile: unexpected {event} while {self.state.value}")
        if isinstance(message, Inventory):
            self._take_inventory(message)
        elif isinstance(message, Proof):
            self._take_proof(message)
        elif self._expected:
            raise ProtocolError(
                f"reconcile: the peer is done but still owes {len(self._expected)} proof(s)"
            )
        self.state = following
        if event == _FINAL:
            self._both_inventories_known()

    def _take_inventory(self, message: Inventory) -> None:
        for item in message.items:
            if item.transfer_id in self.theirs:
                raise ProtocolError("reconcile: an id listed twice")
            self.theirs[item.transfer_id] = item

    def _both_inventories_known(self) -> None:
        if self.role is Role.RESPONDER:
            self._queue_inventory()
        self.owed = sorted(self.mine.keys() - self.theirs.keys())
        self._expected = {tid: item for tid, item in self.theirs.items() if tid not in self.mine}

    def _take_proof(self, proof: Proof) -> None:
        signed, receipt = proof.signed, proof.receipt
        expected = self._expected.pop(signed.id, None)
        if expected is None:
            raise ProtocolError(f"reconcile: a proof for {signed.id.hex()} we did not lack")
        if receipt_digest(receipt.encode()) != expected.digest:
            raise ProtocolError("reconcile: a proof that is not what the inventory named")
        transfer = signed.transfer
        if {transfer.sender, transfer.recipient} != {self.me, self.peer}:
            raise ProtocolError("reconcile: a proof for a transfer between other people")
        signed.verify()
        receipt.verify(signed)  # signed by the transfer's recipient, for exactly this transfer
        self.proven.append(proof)
