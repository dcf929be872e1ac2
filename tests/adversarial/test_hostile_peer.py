"""Hostile peers (issue 6) and attacks 9b, 12, 13 of security.md.

Mallory speaks the real protocol over a real relay with the real session
code, but puts whatever she likes into the records (``Session._seal`` with
hand-made bytes). Every case must be refused or throttled with a reason;
nothing is half-applied; both ledgers verify; the attacked peer keeps
working for the next honest sender.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator

import pytest
from adv_support import Side, assert_exactly_once, listening

from p2ptransfer.errors import LimitError, ProtocolError, SessionTimeout
from p2ptransfer.net.peer import Peer, now_ms
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import Deliver, RelayClient
from p2ptransfer.protocol.identity import Identity, PublicIdentity
from p2ptransfer.protocol.receipt import (
    ReceiptStatus,
    RejectReason,
    SignedReceipt,
    accept,
    sign_receipt,
)
from p2ptransfer.protocol.session import (
    Aborted,
    Event,
    ReceiptArrived,
    RecordType,
    Session,
    TransferArrived,
)
from p2ptransfer.protocol.transfer import (
    SIGNED_TRANSFER_SCHEMA,
    TRANSFER_SCHEMA,
    TRANSFER_SIGNATURE_CONTEXT,
    Transfer,
    sign_transfer,
)
from p2ptransfer.storage.ledger import TransferStatus

pytestmark = pytest.mark.timeout(60)

# Ed25519 group order: S + L is the classic malleated signature.
L = 2**252 + 27742317777372353535851937790883648493


@pytest.fixture
async def relay_url() -> AsyncIterator[str]:
    server = RelayServer(RelayConfig(host="127.0.0.1", port=0, shutdown_timeout=1.0))
    await server.start()
    try:
        yield server.url
    finally:
        await server.close()


class RawPeer:
    """One end of one session driven by hand: the real session code, hostile content."""

    def __init__(self, client: RelayClient, session: Session, remote: str) -> None:
        self.client = client
        self.session = session
        self.remote = remote

    @classmethod
    async def initiate(cls, client: RelayClient, me: Identity, remote: str) -> RawPeer:
        session = Session.initiate(
            me,
            PublicIdentity.from_address(remote),
            tag=secrets.token_bytes(16),
            ephemeral_private=secrets.token_bytes(32),
            nonce=secrets.token_bytes(32),
        )
        raw = cls(client, session, remote)
        await raw.flush()
        while not session.is_open:
            await raw.events()
        return raw

    async def flush(self) -> None:
        for payload in self.session.data_to_send():
            await self.client.send(self.remote, payload)

    async def events(self, timeout: float = 5.0) -> list[Event]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.client.recv()
                if isinstance(message, Deliver) and message.sender == self.remote:
                    events = self.session.receive_frame(message.payload)
                    await self.flush()
                    return events

    async def send_record(self, plaintext: bytes, kind: RecordType = RecordType.TRANSFER) -> None:
        self.session._seal(kind, plaintext)
        await self.flush()

    async def answer(self, timeout: float = 5.0) -> Event:
        """The next receipt or abort."""
        while True:
            for event in await self.events(timeout):
                if isinstance(event, ReceiptArrived | Aborted):
                    return event


def raw_transfer(signer: Identity, **fields: object) -> bytes:
    """A signed transfer encoded by hand, so values the constructor refuses get through."""
    values: dict[str, object] = {
        "id": secrets.token_bytes(16),
        "sender": signer.public.public_key,
        "amount": 100,
        "currency": "EUR",
        "memo": "",
        "created_at": now_ms(),
    }
    values.update(fields)
    body = TRANSFER_SCHEMA.encode(values)
    signature = signer.sign(TRANSFER_SIGNATURE_CONTEXT + body)
    return SIGNED_TRANSFER_SCHEMA.encode({"transfer": body, "signature": signature})


async def bob_is_still_fine(relay_url: str, alice: Side, bob: Side) -> None:
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        outcome = await peer.send(bob.address, 42, "EUR", "honest", timeout=10)
    assert outcome.accepted
    assert_exactly_once(alice, bob, [(42, "EUR", "honest")])


def mallory_side(tmp_path, bob: Side) -> Side:  # type: ignore[no-untyped-def]
    side = Side(tmp_path, "mallory")
    bob.ledger.add_contact("mallory", side.address, 1)  # known: refusals are about content
    return side


# --- transfers Bob must refuse --------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "signed-by-another-key",
        "claims-another-sender",
        "for-another-recipient",
        "malleated-signature",
        "unsigned",
    ],
)
async def test_transfer_not_validly_signed_by_the_session_peer_is_rejected(
    relay_url: str, alice: Side, bob: Side, tmp_path, case: str
) -> None:
    mallory = mallory_side(tmp_path, bob)
    eve = Identity(secrets.token_bytes(32))
    me = mallory.identity
    transfer = Transfer(
        id=secrets.token_bytes(16),  # type: ignore[arg-type]
        sender=me.address,
        recipient=bob.address,
        amount=100,
        currency="EUR",
        memo="",
        created_at=now_ms(),
    )
    body = transfer.encode()
    signature = me.sign(TRANSFER_SIGNATURE_CONTEXT + body)
    expected = RejectReason.INVALID
    if case == "signed-by-another-key":
        signature = eve.sign(TRANSFER_SIGNATURE_CONTEXT + body)
    elif case == "claims-another-sender":  # Alice's name, signed by Mallory
        forged = dataclasses.replace(transfer, sender=alice.address)
        body = forged.encode()
        signature = me.sign(TRANSFER_SIGNATURE_CONTEXT + body)
    elif case == "for-another-recipient":
        other = dataclasses.replace(transfer, recipient=alice.address)
        body = other.encode()
        signature = me.sign(TRANSFER_SIGNATURE_CONTEXT + body)
        expected = RejectReason.WRONG_RECIPIENT
    elif case == "malleated-signature":
        s = int.from_bytes(signature[32:], "little") + L
        signature = signature[:32] + s.to_bytes(32, "little")
    elif case == "unsigned":
        signature = bytes(64)
    payload = SIGNED_TRANSFER_SCHEMA.encode({"transfer": body, "signature": signature})
    async with listening(bob, relay_url), await RelayClient.connect(relay_url, me) as client:
        raw = await RawPeer.initiate(client, me, bob.address)
        await raw.send_record(payload)
        answer = await raw.answer()
    assert isinstance(answer, ReceiptArrived)
    receipt = answer.signed.receipt
    assert receipt.status is ReceiptStatus.REJECTED and receipt.reason is expected
    answer.signed.verify_signature()  # Bob signed his refusal
    assert bob.ledger.transfers() == []  # refusals of invalid transfers are not recorded
    bob.ledger.verify()
    await bob_is_still_fine(relay_url, alice, bob)


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": 0},
        {"amount": 10**15 + 1},
        {"currency": "XXQ"},
        {"currency": "eur"},
        {"memo": "pay\x1b[2Jnow"},
        {"memo": "bell\x07"},
        {"memo": "rtl\u202eevil"},
        {"memo": "x" * 281},
    ],
    ids=[
        "zero-amount",
        "amount-over-max",
        "unknown-currency",
        "lower-case-currency",
        "memo-ansi-escape",
        "memo-control-char",
        "memo-bidi-override",
        "memo-over-280-bytes",
    ],
)
async def test_invalid_transfer_content_ends_the_session_and_records_nothing(
    relay_url: str, alice: Side, bob: Side, tmp_path, fields: dict[str, object]
) -> None:
    mallory = mallory_side(tmp_path, bob)
    me = mallory.identity
    try:
        payload = raw_transfer(me, recipient=bob.identity.public.public_key, **fields)
    except ValueError:  # the encoder itself refuses (memo over the Text limit)
        body = TRANSFER_SCHEMA.encode(
            {
                "id": secrets.token_bytes(16),
                "sender": me.public.public_key,
                "recipient": bob.identity.public.public_key,
                "amount": 1,
                "currency": "EUR",
                "memo": "",
                "created_at": 1,
            }
        )
        # Grow the memo field by hand past its limit: the decoder must refuse it.
        memo = str(fields["memo"]).encode()
        body = body.replace(b"\x06\x00\x00\x00\x00", b"\x06" + len(memo).to_bytes(4, "big") + memo)
        payload = SIGNED_TRANSFER_SCHEMA.encode(
            {"transfer": body, "signature": me.sign(TRANSFER_SIGNATURE_CONTEXT + body)}
        )
    events = []
    async with (
        listening(bob, relay_url) as receiver,
        await RelayClient.connect(relay_url, me) as client,
    ):
        receiver._on_event = events.append
        raw = await RawPeer.initiate(client, me, bob.address)
        await raw.send_record(payload)
        answer = await raw.answer()
    assert isinstance(answer, Aborted)  # undecodable: nothing to bind a receipt to
    failed = [e.detail for e in events if e.kind == "session-failed"]
    assert len(failed) == 1 and ("transfer" in failed[0] or "memo" in failed[0]), failed
    assert bob.ledger.transfers() == []
    bob.ledger.verify()
    await bob_is_still_fine(relay_url, alice, bob)


async def test_a_megabyte_memo_never_reaches_the_peer(
    relay_url: str, alice: Side, bob: Side, tmp_path
) -> None:
    """1 MB of memo does not fit a record, a payload or a relay frame: refused locally."""
    mallory = mallory_side(tmp_path, bob)
    me = mallory.identity
    with pytest.raises(ValueError, match=r"memo|long|large|size|bytes"):
        raw_transfer(me, recipient=bob.identity.public.public_key, memo="m" * (1 << 20))
    async with listening(bob, relay_url), await RelayClient.connect(relay_url, me) as client:
        raw = await RawPeer.initiate(client, me, bob.address)
        with pytest.raises(ValueError):
            await raw.send_record(b"m" * (1 << 20))
        with pytest.raises(LimitError, match="exceeds"):
            await client.send(bob.address, b"m" * (1 << 20))
    assert bob.ledger.transfers() == []
    await bob_is_still_fine(relay_url, alice, bob)


async def test_reused_id_with_different_content_is_refused(
    relay_url: str, alice: Side, bob: Side
) -> None:
    """Attack 12: same id, another amount or memo -> CONFLICT; the first stays as it was."""
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        first = await peer.send(bob.address, 500, "EUR", "original", timeout=10)
    assert first.accepted
    original = first.row.signed
    answers = []
    async with (
        listening(bob, relay_url),
        await RelayClient.connect(relay_url, alice.identity) as client,
    ):
        for change in ({"amount": 501}, {"memo": "edited"}, {"currency": "USD"}):
            twin = dataclasses.replace(original.transfer, **change)  # type: ignore[arg-type]
            raw = await RawPeer.initiate(client, alice.identity, bob.address)
            await raw.send_record(sign_transfer(alice.identity, twin).encode())
            answers.append(await raw.answer())
        # And the very same bytes again: the stored receipt, byte for byte.
        raw = await RawPeer.initiate(client, alice.identity, bob.address)
        await raw.send_record(original.encode())
        again = await raw.answer()
    for answer in answers:
        assert isinstance(answer, ReceiptArrived)
        assert answer.signed.receipt.reason is RejectReason.CONFLICT
    assert isinstance(again, ReceiptArrived) and again.signed == first.receipt
    (row,) = bob.ledger.transfers()
    assert (row.amount_minor, row.memo, row.currency) == (500, "original", "EUR")
    assert_exactly_once(alice, bob, [(500, "EUR", "original")])


# --- receipts Alice must not believe (attack 13) ------------------------------------


async def serve_hostile_receipts(client: RelayClient, me: Identity, make) -> None:  # type: ignore[no-untyped-def]
    """Bob's key, Bob's address, but every answer is ``make(signed_transfer)``."""
    sessions: dict[bytes, Session] = {}
    while True:
        message = await client.recv()
        if not isinstance(message, Deliver):
            continue
        from p2ptransfer.protocol.session import frame_tag, is_session_start

        tag = frame_tag(message.payload)
        session = sessions.get(tag)
        if session is None:
            if not is_session_start(message.payload):
                continue
            session = Session.respond(me, tag=tag, ephemeral_private=secrets.token_bytes(32))
            sessions[tag] = session
        if session.finished:
            continue
        try:
            events = session.receive_frame(message.payload)
        except ProtocolError:
            continue
        for event in events:
            if isinstance(event, TransferArrived):
                session.send_receipt(make(event.signed))
        for payload in session.data_to_send():
            await client.send(message.sender, payload)


@pytest.mark.parametrize(
    "case",
    ["other-transfer-id", "other-content", "signed-by-another-key", "zero-signature"],
)
async def test_forged_or_mismatched_receipt_keeps_the_transfer_pending(
    relay_url: str, alice: Side, bob: Side, case: str
) -> None:
    eve = Identity(secrets.token_bytes(32))

    def make(signed) -> SignedReceipt:  # type: ignore[no-untyped-def]
        good = accept(bob.identity, signed, now_ms())
        r = good.receipt
        if case == "other-transfer-id":
            r = dataclasses.replace(r, transfer_id=secrets.token_bytes(16))
            return sign_receipt(bob.identity, r)
        if case == "other-content":
            r = dataclasses.replace(r, transfer_digest=secrets.token_bytes(32))
            return sign_receipt(bob.identity, r)
        if case == "signed-by-another-key":
            return SignedReceipt(r, eve.sign(r.signing_message()))
        return SignedReceipt(r, bytes(64))

    async with await RelayClient.connect(relay_url, bob.identity) as hostile:
        task = asyncio.create_task(serve_hostile_receipts(hostile, bob.identity, make))
        try:
            async with Peer(alice.identity, alice.ledger, relay_url) as peer:
                with pytest.raises(SessionTimeout, match=r"transfer [0-9a-f]{32} stays pending"):
                    await peer.send(bob.address, 900, "EUR", "rent", timeout=1.5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    (row,) = alice.ledger.transfers()
    assert row.status == TransferStatus.PENDING and row.signed_receipt is None
    alice.ledger.verify()
    # The honest Bob comes online: the same signed transfer completes, once.
    async with listening(bob, relay_url), Peer(alice.identity, alice.ledger, relay_url) as peer:
        (outcome,) = await peer.resend(timeout=10)
    assert outcome.accepted
    assert_exactly_once(alice, bob, [(900, "EUR", "rent")])


# --- a flood of transfers --------------------------------------------------------


async def test_thousands_of_transfers_per_second_are_throttled(
    relay_url: str, alice: Side, bob: Side, tmp_path
) -> None:
    """Mallory pushes 2,000 transfers without waiting for receipts: her session is cut.

    Bob answers at most his in-flight cap and then ends the session with a
    reason; whatever he recorded is valid, signed and verifies; the honest
    sender is served right after.
    """
    mallory = mallory_side(tmp_path, bob)
    me = mallory.identity
    events = []
    async with (
        listening(bob, relay_url) as receiver,
        await RelayClient.connect(relay_url, me) as client,
    ):
        receiver._on_event = events.append
        raw = await RawPeer.initiate(client, me, bob.address)
        sent = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for i in range(2000):
                t = Transfer(
                    id=secrets.token_bytes(16),  # type: ignore[arg-type]
                    sender=me.address,
                    recipient=bob.address,
                    amount=i + 1,
                    currency="EUR",
                    memo="",
                    created_at=now_ms(),
                )
                await raw.send_record(sign_transfer(me, t).encode())
                sent += 1
        except Exception:
            pass
        elapsed = loop.time() - started
        for _ in range(300):
            if any(e.kind == "session-failed" for e in events):
                break
            await asyncio.sleep(0.01)
    failed = [e.detail for e in events if e.kind == "session-failed"]
    assert failed and ("too many" in failed[0] or "flooded" in failed[0]), failed
    rows = bob.ledger.transfers()
    assert len(rows) < sent
    assert all(r.status == TransferStatus.COMPLETED and r.counterparty == me.address for r in rows)
    bob.ledger.verify()
    print(f"flood: {sent} sent in {elapsed:.2f} s, {len(rows)} recorded, reason: {failed[0]}")
    await bob_is_still_fine(relay_url, alice, bob)
