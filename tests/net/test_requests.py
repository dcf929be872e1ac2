"""Payment requests between two real peers: asked, paid once, refused when paid again.

Bob (the payee) asks Alice (the payer); Alice pays with a transfer that names
the request; Bob's ledger marks it paid in the transaction that records the
payment. Online and through the mailbox.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2ptransfer.clock import now_ms
from p2ptransfer.net.peer import Peer, SendOutcome
from p2ptransfer.protocol.receipt import RejectReason
from p2ptransfer.protocol.request import (
    PaymentRequest,
    RequestState,
    SignedRequest,
    sign_request,
)
from p2ptransfer.storage.ledger import TransferRow, TransferStatus
from tests.peers import Side
from tests.peers import mail_peer as peer
from tests.peers import relay_with_data as relay_with

pytestmark = pytest.mark.timeout(60)
HOUR = 3_600_000


@contextlib.asynccontextmanager
async def listening(side: Side, url: str) -> AsyncIterator[Peer]:
    import asyncio

    listener = peer(side, url)
    await listener.connect()
    stop = asyncio.Event()
    task = asyncio.create_task(listener.listen(stop))
    try:
        yield listener
    finally:
        stop.set()
        await listener.close()
        await asyncio.wait_for(task, 10)


def ask(bob: Side, alice: Side, amount: int = 1250, lifetime: int = 24 * HOUR) -> SignedRequest:
    created = now_ms()
    return sign_request(
        bob.identity,
        PaymentRequest(
            id=secrets.token_bytes(16),
            payee=bob.address,
            payer=alice.address,
            amount=amount,
            currency="EUR",
            memo="dinner",
            created_at=created,
            expires_at=created + lifetime,
        ),
    )


async def pay(alice: Side, url: str, signed: SignedRequest) -> SendOutcome | TransferRow:
    request = signed.request
    async with peer(alice, url) as payer:
        transfer = payer.prepare(
            request.payee, request.amount, request.currency, request.memo, request_id=request.id
        )
        (result,) = await payer.deliver_or_queue([transfer], wait=2, timeout=5)
    return result


async def test_asked_and_paid_online_once(tmp_path: Path, alice: Side, bob: Side) -> None:
    async with relay_with(tmp_path / "data") as relay:
        signed = ask(bob, alice)
        async with peer(bob, relay.url) as payee:
            payee.ledger.record_request(signed, now_ms())
        async with listening(alice, relay.url), peer(bob, relay.url) as payee:
            assert await payee.send_request(signed, wait=5) == "delivered"
        (asked,) = alice.ledger.requests(now_ms())
        assert (asked.direction, asked.state) == ("in", RequestState.OPEN)
        async with listening(bob, relay.url):
            paid = await pay(alice, relay.url, signed)
            assert isinstance(paid, SendOutcome) and paid.accepted
            # The same request again, with a new transfer: refused, nothing recorded twice.
            again = await pay(alice, relay.url, signed)
    assert isinstance(again, SendOutcome)
    assert again.receipt.receipt.reason is RejectReason.REQUEST_PAID
    (mine,) = bob.ledger.requests(now_ms())
    assert (mine.state, mine.paid_by) == (RequestState.PAID, paid.row.id)
    assert alice.ledger.paid_request_ids() == {signed.request.id}
    assert bob.ledger.balances() == {(alice.address, "EUR"): 1250}
    bob.ledger.verify(bob.identity)
    alice.ledger.verify(alice.identity)


async def test_asked_and_paid_through_the_mailbox(tmp_path: Path, alice: Side, bob: Side) -> None:
    async with relay_with(tmp_path / "data") as relay:
        async with peer(alice, relay.url):
            pass  # Alice was online once: her prekey is at the relay
        signed = ask(bob, alice, 700)
        async with peer(bob, relay.url) as payee:
            payee.ledger.record_request(signed, now_ms())
            assert await payee.send_request(signed, wait=0.3) == "queued"
        async with peer(alice, relay.url) as payer:
            await payer.sync(timeout=10)
        (asked,) = alice.ledger.requests(now_ms())
        assert asked.id == signed.request.id
        queued = await pay(alice, relay.url, signed)  # Bob is away: by mail too
        assert isinstance(queued, TransferRow) and queued.status is TransferStatus.QUEUED
        async with peer(bob, relay.url) as payee:
            collected = await payee.sync(timeout=10)
        assert [row.id for row in collected.transfers] == [queued.id]
        async with peer(alice, relay.url) as payer:
            await payer.sync(timeout=10)
    (mine,) = bob.ledger.requests(now_ms())
    assert mine.state is RequestState.PAID
    assert alice.ledger.get_transfer(queued.id, "out").status is TransferStatus.COMPLETED


async def test_an_expired_or_cancelled_request_is_refused_and_records_nothing_paid(
    tmp_path: Path, alice: Side, bob: Side
) -> None:
    from p2ptransfer.protocol.request import RequestAnswerKind, sign_answer

    expired = ask(bob, alice, 100, lifetime=1)
    cancelled = ask(bob, alice, 200)
    async with relay_with(tmp_path / "data") as relay:
        async with peer(bob, relay.url) as payee:
            payee.ledger.record_request(expired, now_ms())
            payee.ledger.record_request(cancelled, now_ms())
            payee.ledger.answer_request(
                sign_answer(bob.identity, cancelled, RequestAnswerKind.CANCELLED, now_ms()),
                now_ms(),
            )
        async with listening(bob, relay.url):
            late = await pay(alice, relay.url, expired)
            withdrawn = await pay(alice, relay.url, cancelled)
    assert isinstance(late, SendOutcome) and isinstance(withdrawn, SendOutcome)
    assert late.receipt.receipt.reason is RejectReason.REQUEST_EXPIRED
    assert withdrawn.receipt.receipt.reason is RejectReason.REQUEST_CANCELLED
    assert bob.ledger.balances() == {}
    assert {r.state for r in bob.ledger.requests(now_ms())} == {
        RequestState.OPEN,
        RequestState.CANCELLED,
    }


async def test_a_decline_and_a_cancel_reach_the_other_side(
    tmp_path: Path, alice: Side, bob: Side
) -> None:
    from p2ptransfer.protocol.request import RequestAnswerKind, sign_answer

    declined, cancelled = ask(bob, alice, 100), ask(bob, alice, 200)
    async with relay_with(tmp_path / "data") as relay:
        async with peer(alice, relay.url):
            pass  # both have prekeys: answers can go by mail too
        async with peer(bob, relay.url) as payee:
            for signed in (declined, cancelled):
                payee.ledger.record_request(signed, now_ms())
        async with listening(alice, relay.url), peer(bob, relay.url) as payee:
            for signed in (declined, cancelled):
                assert await payee.send_request(signed, wait=5) == "delivered"
            withdraw = sign_answer(bob.identity, cancelled, RequestAnswerKind.CANCELLED, now_ms())
            payee.ledger.answer_request(withdraw, now_ms())
            assert await payee.send_request_answer(withdraw, alice.address, wait=5) == ("delivered")
        # Alice declines while Bob listens.
        async with listening(bob, relay.url), peer(alice, relay.url) as payer:
            refusal = sign_answer(alice.identity, declined, RequestAnswerKind.DECLINED, now_ms())
            payer.ledger.answer_request(refusal, now_ms())
            assert await payer.send_request_answer(refusal, bob.address, wait=5) == "delivered"
    states = {r.id: r.state for r in bob.ledger.requests(now_ms())}
    assert states == {
        declined.request.id: RequestState.DECLINED,
        cancelled.request.id: RequestState.CANCELLED,
    }
    theirs = {r.id: r.state for r in alice.ledger.requests(now_ms())}
    assert theirs == states
