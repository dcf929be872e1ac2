"""The reconcile exchange as a pure machine: two sides wired together in memory."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from p2ptransfer.errors import DecodeError, ProtocolError
from p2ptransfer.protocol.handshake import Role
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, SignedReceipt, accept, reject, sign_receipt
from p2ptransfer.protocol.reconcile import (
    MAX_ITEMS,
    Done,
    Inventory,
    Item,
    Proof,
    Reconciliation,
    decode_message,
    receipt_digest,
)
from p2ptransfer.protocol.transfer import SignedTransfer
from tests.storage.builders import T0, make_transfer


def pair(
    sender: Identity, recipient: Identity, amount: int = 100, accepted: bool = True
) -> tuple[SignedTransfer, SignedReceipt]:
    signed = make_transfer(sender, recipient, amount)
    if accepted:
        return signed, accept(recipient, signed, T0)
    return signed, reject(recipient, signed, RejectReason.OVER_LIMIT, T0)


Held = dict[bytes, tuple[SignedTransfer, SignedReceipt]]


def run(
    a: Identity, b: Identity, held_a: Held, held_b: Held
) -> tuple[Reconciliation, Reconciliation]:
    """Both sides to the end, each message delivered at once, proofs looked up in ``held``."""
    sides = {
        "a": (Reconciliation(Role.INITIATOR, a.address, b.address, items(held_a)), held_a),
        "b": (Reconciliation(Role.RESPONDER, b.address, a.address, items(held_b)), held_b),
    }
    for _ in range(20):  # bounded: the exchange takes three rounds
        moved = False
        for name, other in (("a", "b"), ("b", "a")):
            side, held = sides[name]
            if side.proofs_due:
                side.send_proofs({tid: held[tid] for tid in side.owed})
            for message in side.messages_to_send():
                moved = True
                sides[other][0].receive(decode_message(message.encode()))
        if not moved:
            break
    return sides["a"][0], sides["b"][0]


def items(held: Held) -> list[Item]:
    return [Item.of(receipt) for _, receipt in held.values()]


@pytest.fixture
def alice() -> Identity:
    return Identity(secrets.token_bytes(32))


@pytest.fixture
def bob() -> Identity:
    return Identity(secrets.token_bytes(32))


def test_each_side_gets_back_exactly_what_it_lacks(alice: Identity, bob: Identity) -> None:
    both = pair(alice, bob)
    only_alice = pair(alice, bob, 200)
    only_bob = pair(bob, alice, 300, accepted=False)
    held_a = {both[0].id: both, only_alice[0].id: only_alice}
    held_b = {both[0].id: both, only_bob[0].id: only_bob}
    a, b = run(alice, bob, held_a, held_b)
    assert a.finished and b.finished
    assert [(p.signed, p.receipt) for p in a.proven] == [only_bob]
    assert [(p.signed, p.receipt) for p in b.proven] == [only_alice]
    assert a.disagreements == b.disagreements == []


def test_nothing_to_exchange_still_finishes(alice: Identity, bob: Identity) -> None:
    a, b = run(alice, bob, {}, {})
    assert a.finished and b.finished and a.proven == b.proven == []


def test_inventories_larger_than_one_message_are_chunked(alice: Identity, bob: Identity) -> None:
    digest = bytes(32)
    many = [Item(secrets.token_bytes(16), True, digest) for _ in range(MAX_ITEMS + 5)]
    side = Reconciliation(Role.INITIATOR, alice.address, bob.address, many)
    sent = side.messages_to_send()
    assert [(type(m), len(m.items), m.final) for m in sent if isinstance(m, Inventory)] == [
        (Inventory, MAX_ITEMS, False),
        (Inventory, 5, True),
    ]


def test_contradicting_receipts_are_named_not_settled(alice: Identity, bob: Identity) -> None:
    signed, accepted = pair(alice, bob)
    rejected = reject(bob, signed, RejectReason.OVER_LIMIT, T0 + 1)
    a, b = run(alice, bob, {signed.id: (signed, accepted)}, {signed.id: (signed, rejected)})
    (disagreement,) = a.disagreements
    assert disagreement.transfer_id == signed.id and disagreement.contradicting
    assert a.proven == b.proven == []


# --- a hostile peer ----------------------------------------------------------------------


def responder_after_inventory(alice: Identity, bob: Identity, theirs: list[Item]) -> Reconciliation:
    side = Reconciliation(Role.RESPONDER, bob.address, alice.address, [])
    side.receive(Inventory(tuple(theirs), final=True))
    side.messages_to_send()
    return side


def test_an_unsolicited_proof_ends_the_exchange(alice: Identity, bob: Identity) -> None:
    side = responder_after_inventory(alice, bob, [])
    signed, receipt = pair(alice, bob)
    with pytest.raises(ProtocolError, match="did not lack"):
        side.receive(Proof(signed, receipt))
    assert side.state.value == "error"
    with pytest.raises(ProtocolError):
        side.receive(Done())


def test_a_proof_that_is_not_what_the_inventory_named(alice: Identity, bob: Identity) -> None:
    signed, receipt = pair(alice, bob)
    other = reject(bob, signed, RejectReason.OVER_LIMIT, T0)
    side = responder_after_inventory(alice, bob, [Item.of(receipt)])
    with pytest.raises(ProtocolError, match="not what the inventory named"):
        side.receive(Proof(signed, other))


def test_a_proof_between_other_people_is_refused(alice: Identity, bob: Identity) -> None:
    carol = Identity(secrets.token_bytes(32))
    signed, receipt = pair(alice, carol)
    side = responder_after_inventory(alice, bob, [Item.of(receipt)])
    with pytest.raises(ProtocolError, match="between other people"):
        side.receive(Proof(signed, receipt))


def test_a_receipt_not_signed_by_the_recipient_is_refused(alice: Identity, bob: Identity) -> None:
    signed, honest = pair(alice, bob)
    # "bob accepted", signed by alice: the receipt names bob but bob never signed it.
    forged_by = dataclasses.replace(honest.receipt, receiver=alice.address)
    forged = SignedReceipt(honest.receipt, sign_receipt(alice, forged_by).signature)
    side = responder_after_inventory(alice, bob, [Item.of(forged)])
    with pytest.raises(ProtocolError):
        side.receive(Proof(signed, forged))


def test_done_while_owing_proofs_is_refused(alice: Identity, bob: Identity) -> None:
    _, receipt = pair(alice, bob)
    side = responder_after_inventory(alice, bob, [Item.of(receipt)])
    with pytest.raises(ProtocolError, match="still owes 1 proof"):
        side.receive(Done())


def test_out_of_order_messages_are_refused(alice: Identity, bob: Identity) -> None:
    side = Reconciliation(Role.RESPONDER, bob.address, alice.address, [])
    with pytest.raises(ProtocolError, match="unexpected done while waiting"):
        side.receive(Done())
    side = responder_after_inventory(alice, bob, [])
    with pytest.raises(ProtocolError, match="unexpected inventory-final while proving"):
        side.receive(Inventory((), final=True))


def test_an_id_listed_twice_is_refused(alice: Identity, bob: Identity) -> None:
    item = Item(bytes(16), True, bytes(32))
    side = Reconciliation(Role.RESPONDER, bob.address, alice.address, [])
    with pytest.raises(ProtocolError, match="listed twice"):
        side.receive(Inventory((item, item), final=True))


# --- bytes -----------------------------------------------------------------------------------


def test_messages_round_trip_to_exact_bytes(alice: Identity, bob: Identity) -> None:
    item = Item(bytes(range(16)), True, bytes(range(32)))
    encoded = Inventory((item,), final=True).encode()
    assert encoded.hex() == (
        "80"  # type id
        "0100000001"
        "01"  # final
        "0200000031" + bytes(range(16)).hex() + "01" + bytes(range(32)).hex()
    )
    assert decode_message(encoded) == Inventory((item,), final=True)
    assert Done().encode() == b"\x82"
    signed, receipt = pair(alice, bob)
    proof = Proof(signed, receipt)
    assert decode_message(proof.encode()) == proof
    assert receipt_digest(receipt.encode()) == Item.of(receipt).digest


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", b"\x83", b"\x82\x00", bytes.fromhex("800100000001020200000000")],
    ids=["empty", "truncated", "unknown-type", "trailing", "bad-final"],
)
def test_malformed_messages_do_not_decode(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(data)
