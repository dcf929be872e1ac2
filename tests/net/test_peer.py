"""Two in-process peers through a real relay on 127.0.0.1: exactly-once under faults."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from pathlib import Path

import pytest

from p2ptransfer.clock import now_ms
from p2ptransfer.errors import PeerOffline, PinMismatch, WrongPassphrase
from p2ptransfer.net.peer import AcceptancePolicy, FaultHooks, Peer, SendOutcome
from p2ptransfer.net.relay import RelayServer
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason, SignedReceipt
from p2ptransfer.protocol.transfer import SignedTransfer, Transfer, sign_transfer
from p2ptransfer.storage.ledger import Ledger, TransferStatus
from tests.peers import Side, listening

pytestmark = pytest.mark.timeout(60)


class Crash(Exception):
    """The process dying at a hook's point (not a P2PTransferError: nothing retries it)."""


def assert_agree(sender: Side, receiver: Side, count: int) -> None:
    """Each transfer once on each side, same status, and both ledgers verify."""
    out = {r.id: r for r in sender.ledger.transfers() if r.direction == "out"}
    incoming = {r.id: r for r in receiver.ledger.transfers() if r.direction == "in"}
    assert len(out) == count
    assert set(out) == set(incoming)
    for transfer_id, row in out.items():
        assert row.status in (TransferStatus.COMPLETED, TransferStatus.REJECTED)
        assert incoming[transfer_id].status == row.status
        assert incoming[transfer_id].signed_transfer == row.signed_transfer
        assert incoming[transfer_id].signed_receipt == row.signed_receipt
    sender.ledger.verify()
    receiver.ledger.verify()


async def test_send_and_listen(relay_url: str, alice: Side, bob: Side) -> None:
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        outcome = await peer.send(bob.address, 1250, "EUR", "rent", timeout=10)
    assert outcome.accepted
    assert outcome.row.status == TransferStatus.COMPLETED
    (row,) = bob.ledger.transfers()
    assert (row.direction, row.amount, row.currency, row.memo) == ("in", "12.50", "EUR", "rent")
    assert bob.ledger.balances() == {(alice.address, "EUR"): 1250}
    assert alice.ledger.balances() == {(bob.address, "EUR"): -1250}
    assert_agree(alice, bob, 1)


async def test_receive_returns_the_first_recorded_transfer(
    relay_url: str, alice: Side, bob: Side
) -> None:
    async with Peer(bob.identity, bob.ledger, relay_url) as receiver:
        receiving = asyncio.create_task(receiver.receive(timeout=10))
        async with Peer(alice.identity, alice.ledger, relay_url) as sender:
            outcome = await sender.send(bob.address, 5, "JPY", timeout=10)
        row = await receiving
    assert outcome.accepted
    assert (row.amount, row.currency, row.status) == ("5", "JPY", TransferStatus.COMPLETED)
    assert_agree(alice, bob, 1)


@pytest.mark.parametrize(
    ("policy", "amount", "currency", "reason"),
    [
        (
            AcceptancePolicy(currencies=frozenset({"EUR"})),
            100,
            "USD",
            RejectReason.CURRENCY_NOT_ACCEPTED,
        ),
        (None, 100_000, "EUR", RejectReason.OVER_LIMIT),
    ],
    ids=["currency", "over-limit"],
)
async def test_rejections_are_signed_receipts_on_both_sides(
    relay_url: str, alice: Side, bob: Side, policy, amount, currency, reason
) -> None:
    policy = policy or AcceptancePolicy(limits={(alice.address, "EUR"): 50_000})
    async with (
        listening(bob, relay_url, policy=policy),
        Peer(alice.identity, alice.ledger, relay_url) as peer,
    ):
        outcome = await peer.send(bob.address, amount, currency, timeout=10)
    assert not outcome.accepted
    assert outcome.receipt.receipt.reason is reason
    assert outcome.row.status == TransferStatus.REJECTED
    assert bob.ledger.balances() == {}
    assert_agree(alice, bob, 1)


async def test_unknown_sender_is_rejected_unless_accepted(
    relay_url: str, tmp_path: Path, bob: Side
) -> None:
    stranger = Side(tmp_path, "stranger")
    async with (
        listening(bob, relay_url),
        Peer(stranger.identity, stranger.ledger, relay_url) as peer,
    ):
        refused = await peer.send(bob.address, 100, "EUR", timeout=10)
    assert refused.receipt.receipt.reason is RejectReason.UNKNOWN_SENDER
    # A stranger's transfer is answered and shown, never journaled.
    assert bob.ledger.transfers() == []
    (kept,) = bob.ledger.quarantined()
    assert (kept.id, kept.sender, kept.amount) == (refused.row.id, stranger.address, "1.00")
    assert kept.signed_receipt == refused.row.signed_receipt
    async with (
        listening(bob, relay_url, policy=AcceptancePolicy(accept_unknown=True)),
        Peer(stranger.identity, stranger.ledger, relay_url) as peer,
    ):
        accepted = await peer.send(bob.address, 100, "EUR", timeout=10)
    assert accepted.accepted
    assert bob.ledger.balances() == {(stranger.address, "EUR"): 100}
    (incoming,) = bob.ledger.transfers()
    assert incoming.id == accepted.row.id
    stranger.ledger.verify()
    bob.ledger.verify()


async def test_pin_mismatch_is_loud(alice: Side, bob: Side, tmp_path: Path) -> None:
    other = Identity(secrets.token_bytes(32))
    alice.ledger.pin_handle("bob", bob.address, 1)
    with pytest.raises(PinMismatch, match="IDENTITY CHANGED"):
        alice.ledger.pin_handle("bob", other.address, 2)


async def test_offline_recipient_times_out_and_stays_pending(
    relay_url: str, alice: Side, bob: Side
) -> None:
    async with Peer(alice.identity, alice.ledger, relay_url) as peer:
        with pytest.raises(PeerOffline) as info:
            await peer.send(bob.address, 100, "EUR", timeout=0.5)
    (row,) = alice.ledger.transfers()
    assert row.status == TransferStatus.PENDING
    assert info.value.pending == (row.id,)
    assert str(info.value) == (
        f"bob did not come online within 0.5 s; transfer {row.id.hex()} stays pending: "
        "run 'p2ptransfer resend' later"
    )


async def test_many_transfers_left_pending_are_counted_and_listed(
    relay_url: str, alice: Side, tmp_path: Path
) -> None:
    """A recipient who is not a contact is named by address; every pending id is in the error."""
    stranger = Side(tmp_path, "stranger")
    async with Peer(alice.identity, alice.ledger, relay_url) as peer:
        with pytest.raises(PeerOffline) as info:
            await peer.send_many(stranger.address, [(1, "EUR", ""), (2, "EUR", "")], timeout=0.3)
    ids = {row.id for row in alice.ledger.transfers()}
    assert set(info.value.pending) == ids and len(info.value.pending) == 2
    assert str(info.value) == (
        f"{stranger.address} did not come online within 0.3 s; 2 transfers stay pending: "
        "run 'p2ptransfer resend' later"
    )


async def test_send_waits_for_a_recipient_that_comes_online(
    relay_url: str, alice: Side, bob: Side
) -> None:
    async with Peer(alice.identity, alice.ledger, relay_url) as peer:
        sending = asyncio.create_task(peer.send(bob.address, 100, "EUR", timeout=15))
        await asyncio.sleep(0.3)
        assert not sending.done()
        async with listening(bob, relay_url):
            outcome = await sending
    assert outcome.accepted
    assert_agree(alice, bob, 1)


async def test_same_id_same_content_gets_the_stored_receipt(
    relay_url: str, alice: Side, bob: Side
) -> None:
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        first = await peer.send(bob.address, 700, "EUR", timeout=10)
        again = await peer.deliver([first.row.signed], timeout=10)
    assert again[0].receipt == first.receipt
    assert len(bob.ledger.transfers()) == 1
    assert bob.ledger.balances() == {(alice.address, "EUR"): 700}


async def test_same_id_different_content_is_refused(
    relay_url: str, alice: Side, bob: Side, tmp_path: Path
) -> None:
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        first = await peer.send(bob.address, 700, "EUR", timeout=10)
        original = first.row.signed.transfer
        forged = Transfer(
            id=original.id,
            sender=original.sender,
            recipient=original.recipient,
            amount=70_000,
            currency="EUR",
            memo=original.memo,
            created_at=original.created_at,
        )
        other = sign_transfer(alice.identity, forged)
        outcome = await _deliver_unrecorded(peer, other, tmp_path, relay_url)
    assert outcome.receipt.receipt.reason is RejectReason.CONFLICT
    assert outcome.row.status == TransferStatus.REJECTED
    (row,) = bob.ledger.transfers()
    assert row.amount_minor == 700
    assert bob.ledger.balances() == {(alice.address, "EUR"): 700}
    bob.ledger.verify()


async def _deliver_unrecorded(
    peer: Peer, signed: SignedTransfer, tmp_path: Path, relay_url: str
) -> SendOutcome:
    """Send a transfer the sender's own ledger does not hold, from a second home of its key.

    (A diverged copy of the sender's home, or a buggy sender: the receiver sees one id
    with two contents, whichever home sent it.)
    """
    other_home = Ledger.open(tmp_path / "alice-copy.sqlite3")
    try:
        async with Peer(peer.identity, other_home, relay_url) as copy:
            other_home.record_outgoing_batch([signed], now_ms())
            (outcome,) = await copy.deliver([signed], timeout=10)
    finally:
        other_home.close()
    outcome.receipt.verify(signed)
    return outcome


# --- fault injection ------------------------------------------------------------------------


class CrashOnce(FaultHooks):
    def __init__(self, point: str) -> None:
        self.point = point
        self.fired = False

    def _maybe(self, point: str) -> None:
        if point == self.point and not self.fired:
            self.fired = True
            raise Crash(point)

    async def before_transfer_sent(self, peer: Peer, signed: SignedTransfer) -> None:
        self._maybe("before-send")

    async def after_receipt_received(self, peer: Peer, receipt: SignedReceipt) -> None:
        self._maybe("after-receipt")

    async def after_commit(self, peer: Peer, receipts: Sequence[SignedReceipt]) -> None:
        self._maybe("after-commit")


@pytest.mark.parametrize("point", ["before-send", "after-receipt"])
async def test_sender_crash_then_resend_completes_exactly_once(
    relay_url: str, alice: Side, bob: Side, point: str
) -> None:
    async with listening(bob, relay_url):
        async with Peer(alice.identity, alice.ledger, relay_url, hooks=CrashOnce(point)) as peer:
            with pytest.raises(Crash):
                await peer.send(bob.address, 4200, "EUR", "crash", timeout=10)
        alice.reopen()  # a new process on the same ledger
        (pending,) = alice.ledger.pending_outgoing()
        async with Peer(alice.identity, alice.ledger, relay_url) as peer:
            (outcome,) = await peer.resend(timeout=10)
    assert outcome.accepted and outcome.row.id == pending.id
    assert_agree(alice, bob, 1)
    assert bob.ledger.balances() == {(alice.address, "EUR"): 4200}


async def test_receiver_crash_after_commit_before_receipt(
    relay_url: str, alice: Side, bob: Side
) -> None:
    async with (
        listening(bob, relay_url, hooks=CrashOnce("after-commit")),
        Peer(alice.identity, alice.ledger, relay_url) as peer,
    ):
        outcome = await peer.send(bob.address, 999, "EUR", timeout=15)
    assert outcome.accepted
    assert_agree(alice, bob, 1)


class CrashWhileRefilling(FaultHooks):
    """Dies sealing the first transfer beyond the initial window: the window's receipts are in."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.sealed = 0

    async def before_transfer_sent(self, peer: Peer, signed: SignedTransfer) -> None:
        self.sealed += 1
        if self.sealed == self.window + 1:
            raise Crash("the process dies while refilling the window")


async def test_receipts_in_hand_are_stored_even_if_the_refill_dies(
    relay_url: str, alice: Side, bob: Side
) -> None:
    window = 2
    async with (
        listening(bob, relay_url),
        Peer(
            alice.identity, alice.ledger, relay_url, window=window, hooks=CrashWhileRefilling(2)
        ) as peer,
    ):
        with pytest.raises(Crash):
            await peer.send_many(bob.address, [(n, "EUR", "") for n in (1, 2, 3, 4)], timeout=10)
    received = {r.id for r in bob.ledger.transfers() if r.direction == "in"}
    completed = {
        r.id
        for r in alice.ledger.transfers()
        if r.direction == "out" and r.status is not TransferStatus.PENDING
    }
    # The crash comes while refilling, so at least one receipt was in hand: it is stored
    # (before, the refill ran first and its crash lost every receipt of the round).
    assert completed
    assert completed <= received


class DoubleReceipts(FaultHooks):
    """A receiver that answers each transfer twice (two valid receipts, one session)."""

    async def after_commit(self, peer: Peer, receipts: Sequence[SignedReceipt]) -> None:
        for run in list(peer._runs.values()):
            for receipt in receipts:
                run.session.send_receipt(receipt)


async def test_a_second_receipt_for_one_transfer_ends_the_session_not_the_sender(
    relay_url: str, alice: Side, bob: Side
) -> None:
    async with (
        listening(bob, relay_url, hooks=DoubleReceipts()),
        Peer(alice.identity, alice.ledger, relay_url) as peer,
    ):
        # The duplicates make sessions fail (a ProtocolError, retried), never a crash
        # (a KeyError, exit 70): the first receipt of each transfer is stored.
        outcomes = await peer.send_many(bob.address, [(n, "EUR", "") for n in (5, 6)], timeout=20)
    assert all(o.accepted for o in outcomes)
    assert_agree(alice, bob, 2)


async def test_many_transfers_in_one_session_with_several_in_flight(
    relay_url: str, alice: Side, bob: Side
) -> None:
    count = 1000
    async with (
        listening(bob, relay_url) as receiver,
        Peer(alice.identity, alice.ledger, relay_url, window=64) as peer,
    ):
        outcomes = await peer.send_many(
            bob.address, [(i + 1, "EUR", f"#{i}") for i in range(count)], timeout=120
        )
    assert all(o.accepted for o in outcomes)
    assert_agree(alice, bob, count)
    assert bob.ledger.balances() == {(alice.address, "EUR"): count * (count + 1) // 2}
    assert receiver.stats.largest_batch > 1  # group commit: several transfers per transaction
    assert receiver.stats.commits < count


async def test_record_cap_forces_a_new_handshake_not_a_wrap(
    relay_url: str, alice: Side, bob: Side
) -> None:
    """With 10 records per key, 60 transfers need several sessions: each one rekeys, none wraps."""
    sessions: list[str] = []
    bob_peer = Peer(
        bob.identity,
        bob.ledger,
        relay_url,
        max_records=10,
        on_event=lambda e: sessions.append(e.detail) if e.kind == "session" else None,
    )
    await bob_peer.connect()
    stop = asyncio.Event()
    task = asyncio.create_task(bob_peer.listen(stop))
    try:
        async with Peer(alice.identity, alice.ledger, relay_url, max_records=10, window=4) as peer:
            outcomes = await peer.send_many(
                bob.address, [(i + 1, "EUR", "") for i in range(60)], timeout=30
            )
    finally:
        stop.set()
        await task
        await bob_peer.close()
    assert all(o.accepted for o in outcomes)
    assert len(sessions) >= 60 // 9  # at most 9 transfers fit under a cap of 10 records
    assert set(sessions) == {alice.address}
    assert_agree(alice, bob, 60)


async def test_open_connects_while_the_identity_is_still_unlocking(
    relay: RelayServer, alice: Side, bob: Side
) -> None:
    """security.md: overlap the key file's scrypt with the relay connection.

    The "unlock" below only finishes once the relay has seen our connection, so
    it would wait forever (and time out) if Peer.open unlocked before connecting.
    """

    async def unlocking() -> Identity:
        for _ in range(500):
            if relay.metrics.connections_total:
                return alice.identity
            await asyncio.sleep(0.01)
        raise AssertionError("the relay connection did not start while unlocking")

    async with listening(bob, relay.url):
        peer = await Peer.open(unlocking(), alice.ledger, relay.url)
        async with peer:
            outcome = await peer.send(bob.address, 1, "EUR", timeout=10)
    assert outcome.accepted and peer.identity is alice.identity


async def test_a_failed_unlock_wins_over_an_unreachable_relay(alice: Side) -> None:
    """The user's own mistake (wrong passphrase) is reported even when the relay is down too."""

    async def wrong_passphrase() -> Identity:
        await asyncio.sleep(0.05)
        raise WrongPassphrase("wrong passphrase for this key file")

    with pytest.raises(WrongPassphrase):
        await Peer.open(wrong_passphrase(), alice.ledger, "ws://127.0.0.1:9")


async def test_a_peer_hoarding_half_open_sessions_does_not_starve_others(
    relay_url: str, alice: Side, bob: Side, tmp_path: Path
) -> None:
    """Mallory opens many sessions and never finishes them; Alice still gets through."""
    from p2ptransfer.net.relay_client import Deliver, RelayClient
    from p2ptransfer.protocol.session import FrameKind, Session, parse_frame

    mallory = Side(tmp_path, "mallory")
    hoarder = await RelayClient.connect(relay_url, mallory.identity)
    async with listening(bob, relay_url), hoarder:
        for _ in range(100):
            hello = Session.initiate(
                mallory.identity,
                bob.identity.public,
                tag=secrets.token_bytes(16),
                ephemeral_private=secrets.token_bytes(32),
                nonce=secrets.token_bytes(32),
            ).data_to_send()[0]
            await hoarder.send(bob.address, hello)
        # Bob answers a HELLO only for a session he admitted: count the answers.
        answered = 0
        with contextlib.suppress(TimeoutError):
            for _ in range(100):  # bounded: stops at the first quiet half second
                async with asyncio.timeout(0.5):
                    message = await hoarder.recv()
                if isinstance(message, Deliver) and parse_frame(message.payload).kind is (
                    FrameKind.HELLO_REPLY
                ):
                    answered += 1
        assert answered == 8  # the per-remote cap; the other 92 openings were dropped
        async with Peer(alice.identity, alice.ledger, relay_url) as peer:
            outcome = await peer.send(bob.address, 10, "EUR", timeout=10)
    assert outcome.accepted
    assert_agree(alice, bob, 1)
