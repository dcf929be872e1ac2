"""A hostile relay against offline delivery: replays, bad prekeys, swapped depositors, lost
mailboxes, reordered and altered mail, and mail racing the live session.

Every test has one shape: Bob was online once (his prekey is at the relay),
Alice queues transfers into his mailbox through the hostile hop, the attack
runs, the hop turns honest where the attack would never end, and the test
checks that each transfer settled exactly once on each side (same status,
the same signed receipt bytes on both), the balances are right, nothing
altered or injected was applied, and both ledgers verify against their
owners. Whatever Bob deposits is opened here with Alice's prekeys, so a
receipt answered from the ledger is told apart from one made again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from adv_support import Side, assert_exactly_once
from conftest import Net
from hostile import DOWN, UP, Action, Frame, drop, flip, forward, on_wire, reorder_wire

from p2ptransfer.errors import MailUnavailable, PrekeyError
from p2ptransfer.net.mail import Collected
from p2ptransfer.net.peer import Peer, PeerEvent
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import RelayClient
from p2ptransfer.protocol import envelope, primitives
from p2ptransfer.protocol.envelope import Envelope, MailKind
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.prekey import (
    PREKEY_VALIDITY_MS,
    Prekey,
    PrekeyId,
    SignedPrekey,
    select_prekey,
    sign_prekey,
)
from p2ptransfer.protocol.relay_wire import Ack, Deposit, Deposited, Mail, Prekeys
from p2ptransfer.storage.ledger import TransferRow, TransferStatus
from p2ptransfer.storage.prekeys import PrekeyStore

pytestmark = pytest.mark.timeout(60)

Item = tuple[int, str, str]
ONE: list[Item] = [(1250, "EUR", "rent")]
TWO: list[Item] = [(100, "EUR", "one"), (200, "EUR", "two")]
THREE: list[Item] = [*TWO, (300, "EUR", "three")]
DAY_MS = 86_400_000


# --- peers with a mailbox -------------------------------------------------------


def prekeys_of(side: Side) -> Path:
    return side.path.with_name(side.name + ".prekeys")


def mailer(side: Side, url: str, **options: object) -> Peer:
    """``side`` as a peer with offline delivery (it publishes prekeys and opens mail)."""
    return Peer(side.identity, side.ledger, url, prekeys_path=prekeys_of(side), **options)  # type: ignore[arg-type]


async def online_once(side: Side, url: str) -> None:
    """``side`` connects once: its prekey is at the relay from now on."""
    async with mailer(side, url):
        pass


async def queue(alice: Side, bob: Side, url: str, items: list[Item]) -> list[bytes]:
    """Alice sends ``items`` while Bob is away: each is deposited and left queued."""
    async with mailer(alice, url) as sender:
        signed = sender.prepare_many(bob.address, items)
        rows = await sender.deliver_or_queue(signed, wait=0.2, timeout=2)
    assert [r.status for r in rows if isinstance(r, TransferRow)] == [TransferStatus.QUEUED] * len(
        items
    )
    return [s.id for s in signed]


async def sync(side: Side, url: str, events: list[PeerEvent] | None = None) -> Collected:
    """``side`` connects, collects every piece of mail waiting once, and disconnects."""
    on_event = None if events is None else events.append
    async with mailer(side, url, on_event=on_event) as peer:
        return await peer.sync(timeout=10)


@contextlib.asynccontextmanager
async def mail_listening(side: Side, url: str) -> AsyncIterator[Peer]:
    """``side`` listening (live sessions and mail) until the block ends."""
    peer = mailer(side, url)
    await peer.connect()
    stop = asyncio.Event()
    task = asyncio.create_task(peer.listen(stop))
    try:
        yield peer
    finally:
        stop.set()
        await peer.close()
        await asyncio.wait_for(task, 10)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def status_of(side: Side, transfer_id: bytes) -> TransferStatus:
    return side.ledger.get_transfer(transfer_id, "out").status


# --- what crossed the hop -------------------------------------------------------


def wire(net: Net, frame_type: type, direction: str, address: str) -> list[Frame]:
    """Relay frames of ``frame_type`` sent by ``address`` (UP) or pushed to it (DOWN)."""
    return [
        f
        for f in net.hop.log
        if f.direction == direction and f.address == address and isinstance(f.wire, frame_type)
    ]


def receipts_deposited(net: Net, bob: Side, alice: Side) -> list[bytes]:
    """Every receipt Bob deposited for Alice, opened with Alice's prekeys."""
    store = PrekeyStore(prekeys_of(alice), alice.identity)
    opened: list[bytes] = []
    for frame in wire(net, Deposit, UP, bob.address):
        sealed = Envelope.decode(frame.wire.envelope)
        private = store.private_for(sealed.prekey_id)
        assert private is not None
        kind, blob = envelope.open(
            sealed, private, bob.identity.public.public_key, alice.identity.public.public_key
        )
        assert kind is MailKind.RECEIPT
        opened.append(blob)
    return opened


def assert_settled(alice: Side, bob: Side, expected: list[Item]) -> None:
    """Exactly once on each side, the same receipts, right balances, both ledgers verify."""
    assert_exactly_once(alice, bob, expected)
    total = sum(amount for amount, _currency, _memo in expected)
    assert bob.ledger.balances() == {(alice.address, "EUR"): total}
    assert alice.ledger.balances() == {(bob.address, "EUR"): -total}
    alice.ledger.verify(alice.identity)
    bob.ledger.verify(bob.identity)


def stored_receipt(bob: Side, transfer_id: bytes) -> bytes:
    receipt = bob.ledger.get_transfer(transfer_id, "in").signed_receipt
    assert receipt is not None
    return receipt


# --- 1. a replayed mail ---------------------------------------------------------


async def test_replayed_mail_is_applied_once_and_answered_from_the_stored_receipt(
    net: Net, alice: Side, bob: Side
) -> None:
    await online_once(bob, net.url)
    (tid,) = await queue(alice, bob, net.url, ONE)
    net.hop.rules.append(
        on_wire(Mail, peer=bob.address, then=lambda f: forward(f.raw, f.raw, f.raw))
    )
    first = await sync(bob, net.url)
    assert [row.id for row in first.transfers] == [tid]
    (pushed,) = wire(net, Mail, DOWN, bob.address)
    # After the acknowledgement, the relay replays it once more on a later connection.
    async with mailer(bob, net.url) as receiver:
        await net.hop.pipe_of(bob.address).send(DOWN, pushed.raw)
        again = await receiver.sync(timeout=10)
    assert again.transfers == []
    # Four copies, four answers, every one the receipt stored the first time, each acked.
    assert receipts_deposited(net, bob, alice) == [stored_receipt(bob, tid)] * 4
    assert len(wire(net, Ack, UP, bob.address)) == 4
    result = await sync(alice, net.url)
    assert [row.id for row in result.receipts] == [tid]
    assert_settled(alice, bob, ONE)


# --- 2. stale, early and foreign prekeys ----------------------------------------


def prekey(owner: Identity, not_before: int, signer: Identity | None = None) -> bytes:
    """A prekey of ``owner`` valid for 14 days from ``not_before``, signed by ``signer``."""
    key = Prekey(
        owner.public.public_key,
        PrekeyId(secrets.token_bytes(8)),
        primitives.hpke_public_from_private(secrets.token_bytes(primitives.HPKE_PRIVATE_KEY_SIZE)),
        not_before,
        not_before + PREKEY_VALIDITY_MS,
    )
    if signer is None:
        return sign_prekey(owner, key).encode()
    return SignedPrekey(key, signer.sign(key.signing_message())).encode()


def bad_prekey(kind: str, bob: Identity) -> bytes:
    now = time.time_ns() // 1_000_000
    mallory = Identity(secrets.token_bytes(32))
    if kind == "expired":  # Bob's own, replayed after its window closed
        return prekey(bob, now - PREKEY_VALIDITY_MS - DAY_MS)
    if kind == "not-yet-valid":  # Bob's own, from a window that has not begun
        return prekey(bob, now + DAY_MS)
    if kind == "other-identity":  # someone else's valid prekey
        return prekey(mallory, now - 1000)
    assert kind == "forged-signature"  # names Bob, signed by another key
    return prekey(bob, now - 1000, signer=mallory)


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("expired", MailUnavailable, "their prekeys at the relay have expired"),
        ("not-yet-valid", MailUnavailable, "their only prekey at the relay is not valid yet"),
        ("other-identity", PrekeyError, "the relay served someone else's key"),
        ("forged-signature", PrekeyError, "is not signed by"),
    ],
)
async def test_a_bad_prekey_from_the_relay_is_refused_and_nothing_is_sealed(
    net: Net, alice: Side, bob: Side, kind: str, error: type[Exception], message: str
) -> None:
    await online_once(bob, net.url)
    bad = bad_prekey(kind, bob.identity)

    def serve_bad(frame: Frame) -> Action | None:
        answer = frame.wire
        if not (frame.direction == DOWN and isinstance(answer, Prekeys)):
            return None
        if answer.address != bob.address:
            return None  # Alice's own prekeys, answering her publication
        return forward(Prekeys(answer.ref, answer.address, (bad,)).encode())

    net.hop.rules.append(serve_bad)
    async with mailer(alice, net.url) as sender:
        signed = sender.prepare(bob.address, *ONE[0])
        with pytest.raises(error, match=message):
            await sender.deliver_or_queue([signed], wait=0.2, timeout=0.5)
    assert status_of(alice, signed.id) is TransferStatus.PENDING
    assert wire(net, Deposit, UP, alice.address) == []  # nothing sealed, to any key
    assert bob.ledger.transfers() == []
    # An honest relay again: the same transfer is queued, collected and settled once.
    net.hop.honest()
    async with mailer(alice, net.url) as sender:
        (row,) = await sender.resend_or_queue(None, wait=0.2, timeout=2)
    assert isinstance(row, TransferRow) and row.status is TransferStatus.QUEUED
    assert [r.id for r in (await sync(bob, net.url)).transfers] == [signed.id]
    assert [r.id for r in (await sync(alice, net.url)).receipts] == [signed.id]
    assert_settled(alice, bob, ONE)


async def test_a_foreign_prekey_served_beside_the_genuine_one_is_never_sealed_to(
    net: Net, alice: Side, bob: Side
) -> None:
    """The relay puts a newer prekey of its own first: the sender skips it."""
    await online_once(bob, net.url)
    foreign = prekey(Identity(secrets.token_bytes(32)), time.time_ns() // 1_000_000 + 60_000)

    def add_foreign(frame: Frame) -> Action | None:
        answer = frame.wire
        if not (frame.direction == DOWN and isinstance(answer, Prekeys)):
            return None
        if answer.address != bob.address:
            return None
        served = (foreign, *answer.signed_prekeys)
        return forward(Prekeys(answer.ref, answer.address, served).encode())

    net.hop.rules.append(add_foreign)
    events: list[PeerEvent] = []
    async with mailer(alice, net.url, on_event=events.append) as sender:
        signed = sender.prepare_many(bob.address, ONE)
        (row,) = await sender.deliver_or_queue(signed, wait=0.2, timeout=2)
    assert isinstance(row, TransferRow) and row.status is TransferStatus.QUEUED
    tid = row.id
    # The lie is not used, and not kept quiet either.
    assert [e.detail for e in events if e.kind == "relay-lied"] == [
        f"forged prekey for {bob.address}"
    ]
    genuine = {p.prekey_id for p in PrekeyStore(prekeys_of(bob), bob.identity).published()}
    (deposit,) = wire(net, Deposit, UP, alice.address)
    assert Envelope.decode(deposit.wire.envelope).prekey_id in genuine
    net.hop.honest()
    assert [r.id for r in (await sync(bob, net.url)).transfers] == [tid]
    assert [r.id for r in (await sync(alice, net.url)).receipts] == [tid]
    assert_settled(alice, bob, ONE)


# --- 3. another depositor -------------------------------------------------------


@pytest.fixture
def carol(tmp_path: Path, bob: Side) -> Side:
    """Carol, a contact of Bob's: a depositor he would take mail from."""
    side = Side(tmp_path, "carol")
    bob.ledger.add_contact("carol", side.address, 1)
    return side


async def test_a_swapped_depositor_opens_nothing_and_a_redeposit_completes_once(
    net: Net, alice: Side, bob: Side, carol: Side
) -> None:
    await online_once(bob, net.url)
    (tid,) = await queue(alice, bob, net.url, ONE)

    def as_carol(frame: Frame) -> Action:
        mail = frame.wire
        return forward(Mail(carol.address, mail.slot, mail.envelope, mail.deposited_at).encode())

    net.hop.rules.append(on_wire(Mail, peer=bob.address, then=as_carol, times=100))
    events: list[PeerEvent] = []
    collected = await sync(bob, net.url, events)
    assert collected.transfers == [] and bob.ledger.transfers() == []
    assert [e.detail for e in events if e.kind == "mail-refused"] == [
        f"{carol.address}: the mail does not open (altered, or not from this depositor)"
    ]
    # Acknowledged as what it was shown, so the relay's real copy cannot be deleted by it.
    assert [f.wire.sender for f in wire(net, Ack, UP, bob.address)] == [carol.address]
    assert status_of(alice, tid) is TransferStatus.QUEUED
    net.hop.honest()
    async with mailer(alice, net.url) as sender:
        (row,) = await sender.resend_or_queue([tid], wait=0.2, timeout=2)
    assert isinstance(row, TransferRow) and row.status is TransferStatus.QUEUED
    assert [r.id for r in (await sync(bob, net.url)).transfers] == [tid]
    assert [r.id for r in (await sync(alice, net.url)).receipts] == [tid]
    assert_settled(alice, bob, ONE)


async def test_a_transfer_resealed_by_another_depositor_is_refused(
    net: Net, alice: Side, bob: Side, carol: Side
) -> None:
    """Carol got a copy of Alice's signed transfer and mails it to Bob under her own name."""
    await online_once(bob, net.url)
    (tid,) = await queue(alice, bob, net.url, ONE)
    copied = alice.ledger.get_transfer(tid, "out").signed_transfer
    async with await RelayClient.connect(net.url, carol.identity) as client:
        target = select_prekey(
            await client.get_prekeys(bob.address), bob.address, time.time_ns() // 1_000_000
        )
        sealed = envelope.seal(
            MailKind.TRANSFER, copied, carol.identity.public.public_key, target.prekey
        )
        await client.deposit(bob.address, secrets.token_bytes(16), sealed.encode())
    events: list[PeerEvent] = []
    collected = await sync(bob, net.url, events)
    assert [row.id for row in collected.transfers] == [tid]  # Alice's own deposit, once
    assert [e.detail for e in events if e.kind == "mail-refused"] == [f"{carol.address}: invalid"]
    assert sorted(f.wire.sender for f in wire(net, Ack, UP, bob.address)) == sorted(
        [alice.address, carol.address]
    )
    assert [r.id for r in (await sync(alice, net.url)).receipts] == [tid]
    assert_settled(alice, bob, ONE)
    assert bob.ledger.transfers(carol.address) == []


# --- 4. a lost mailbox ----------------------------------------------------------


@pytest.mark.parametrize("loss", ["relay-restarted", "deposit-faked"])
async def test_a_lost_mailbox_leaves_the_transfer_queued_until_a_redeposit(
    net: Net, alice: Side, bob: Side, relay_config: RelayConfig, loss: str
) -> None:
    await online_once(bob, net.url)
    if loss == "deposit-faked":  # the relay confirms a deposit it never stored

        def fake(frame: Frame) -> Action:
            deposit = frame.wire
            return Action(reply=[Deposited(deposit.ref, deposit.slot).encode()])

        net.hop.rules.append(on_wire(Deposit, direction=UP, peer=alice.address, then=fake))
    (tid,) = await queue(alice, bob, net.url, ONE)
    async with contextlib.AsyncExitStack() as stack:
        if loss == "relay-restarted":  # a relay keeping mail in memory restarts: all is gone
            await net.relay.close()
            restarted = RelayServer(relay_config.replace(public_urls=(net.hop.url,)))
            await restarted.start()
            stack.push_async_callback(restarted.close)
            net.hop.upstream = restarted.url
        assert (await sync(bob, net.url)).transfers == []  # and Bob publishes his prekey again
        assert status_of(alice, tid) is TransferStatus.QUEUED
        net.hop.honest()
        async with mailer(alice, net.url) as sender:
            assert [row.id for row in await sender.redeposit()] == [tid]
        assert [r.id for r in (await sync(bob, net.url)).transfers] == [tid]
        assert [r.id for r in (await sync(alice, net.url)).receipts] == [tid]
    assert_settled(alice, bob, ONE)


# --- 5. reordered and altered mail ----------------------------------------------


@pytest.mark.parametrize("position", [-1, 40], ids=["gcm-tag", "kem-ciphertext"])
async def test_reordered_mail_applies_once_each_and_a_flipped_envelope_never(
    net: Net, alice: Side, bob: Side, position: int
) -> None:
    await online_once(bob, net.url)

    def flipped(frame: Frame) -> Action:
        d = frame.wire
        return forward(Deposit(d.ref, d.to, d.slot, flip(d.envelope, position)).encode())

    # The relay stores the third envelope with one bit changed (and confirms it).
    net.hop.rules.append(on_wire(Deposit, 3, direction=UP, peer=alice.address, then=flipped))
    first, second, third = await queue(alice, bob, net.url, THREE)
    net.hop.rules[:] = [reorder_wire(Mail, peer=bob.address)]  # and pushes the first two swapped
    events: list[PeerEvent] = []
    collected = await sync(bob, net.url, events)
    assert [row.id for row in collected.transfers] == [second, first]
    assert [e.detail for e in events if e.kind == "mail-refused"] == [
        f"{alice.address}: the mail does not open (altered, or not from this depositor)"
    ]
    # The altered piece was acknowledged and dropped: the next connection is not pushed it.
    pushed = len(wire(net, Mail, DOWN, bob.address))
    assert (await sync(bob, net.url)).transfers == []
    assert len(wire(net, Mail, DOWN, bob.address)) == pushed
    assert sorted(r.id for r in (await sync(alice, net.url)).receipts) == sorted([first, second])
    assert status_of(alice, third) is TransferStatus.QUEUED
    async with mailer(alice, net.url) as sender:
        assert [row.id for row in await sender.redeposit()] == [third]
    assert [r.id for r in (await sync(bob, net.url)).transfers] == [third]
    assert [r.id for r in (await sync(alice, net.url)).receipts] == [third]
    assert_settled(alice, bob, THREE)


# --- 6. mail and the live session deliver the same transfer ---------------------


@pytest.mark.parametrize("first", ["live", "mail", "together"])
async def test_mail_racing_the_live_session_applies_once_with_one_receipt(
    net: Net, alice: Side, bob: Side, first: str
) -> None:
    await online_once(bob, net.url)
    (tid,) = await queue(alice, bob, net.url, ONE)
    if first == "live":  # the relay holds the mail back until the live session is over
        net.hop.rules.append(on_wire(Mail, peer=bob.address, then=lambda f: drop()))
    async with mail_listening(bob, net.url):
        if first == "mail":
            await until(lambda: len(wire(net, Ack, UP, bob.address)) == 1)
        # Alice resends live; a peer without a mailbox, so her resend cannot learn of the
        # mailed receipt first and skip the session.
        async with Peer(alice.identity, alice.ledger, net.url) as sender:
            (outcome,) = await sender.resend([tid], timeout=10)
        assert outcome.accepted
        if first == "live":
            (held,) = wire(net, Mail, DOWN, bob.address)
            await net.hop.pipe_of(bob.address).send(DOWN, held.raw)
        await until(lambda: len(wire(net, Ack, UP, bob.address)) >= 1)
    receipt = stored_receipt(bob, tid)
    assert outcome.receipt.encode() == receipt
    assert receipts_deposited(net, bob, alice) == [receipt]  # mailed back once, the same
    # The live session already completed it: the mailed copy is taken silently, not
    # reported as a second completion.
    assert (await sync(alice, net.url)).receipts == []
    assert_settled(alice, bob, ONE)
