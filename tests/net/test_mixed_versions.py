"""A peer of this version against one of the first: no batch record ever reaches it.

The first version knows only single TRANSFER and RECEIPT records and ends a
session on any other record type; it cannot parse a FEATURES frame, so its
reader drops it. :class:`FirstVersionSession` behaves like that; the tests
swap it in for one side's sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

import pytest

from p2ptransfer.errors import ProtocolError
from p2ptransfer.net import peer as peer_module
from p2ptransfer.net import sessions as sessions_module
from p2ptransfer.net.peer import FaultHooks, Peer
from p2ptransfer.net.sessions import SessionHost
from p2ptransfer.protocol.receipt import SignedReceipt
from p2ptransfer.protocol.session import Event, FrameKind, RecordType, Session
from tests.net.test_peer import assert_agree
from tests.peers import Side, listening

FIRST_VERSION_RECORDS = {
    RecordType.TRANSFER,
    RecordType.RECEIPT,
    RecordType.CLOSE,
    RecordType.RECONCILE,
    RecordType.REQUEST,
    RecordType.REQUEST_ANSWER,
}


class FirstVersionSession(Session):
    """A session as the first version runs it (records it does not know end it)."""

    record_types: ClassVar[list[int]] = []  # every record type any such session was sent

    def offer_batches(self) -> None:
        """The first version has no FEATURES frame."""

    def _dispatch(self, kind: FrameKind, body: bytes) -> list[Event]:
        if kind is FrameKind.FEATURES:
            return []  # its reader cannot parse the frame and drops it
        if kind is FrameKind.RECORD and self.is_open:
            record_type = body[1]  # the record header: version, type, ...
            FirstVersionSession.record_types.append(record_type)
            if record_type not in FIRST_VERSION_RECORDS:
                self._fail()
                raise ProtocolError(f"unknown record type {record_type:#04x}")
        return super()._dispatch(kind, body)


class SlowCommits(FaultHooks):
    """Receiver: a pause after each commit, so transfers pile up and receipts leave in groups
    large enough for the sender to refill its window with a batch."""

    async def after_commit(self, peer: SessionHost, receipts: Sequence[SignedReceipt]) -> None:
        await asyncio.sleep(0.02)


@pytest.fixture
def first_version_log() -> list[int]:
    FirstVersionSession.record_types = []
    return FirstVersionSession.record_types


async def test_a_long_send_to_a_first_version_receiver_never_sends_a_batch(
    relay_url: str,
    alice: Side,
    bob: Side,
    monkeypatch: pytest.MonkeyPatch,
    first_version_log: list[int],
) -> None:
    monkeypatch.setattr(peer_module, "Session", FirstVersionSession)  # bob's responders
    count = 300
    async with (
        listening(bob, relay_url, hooks=SlowCommits()) as receiver,
        Peer(alice.identity, alice.ledger, relay_url, window=64) as peer,
    ):
        outcomes = await peer.send_many(
            bob.address, [(n + 1, "EUR", "") for n in range(count)], timeout=60
        )
    assert all(o.accepted for o in outcomes)
    assert_agree(alice, bob, count)
    assert set(first_version_log) == {RecordType.TRANSFER, RecordType.CLOSE}
    assert receiver.stats.largest_batch > 1  # still group commit on its side


async def test_a_first_version_sender_gets_single_receipts(
    relay_url: str,
    alice: Side,
    bob: Side,
    monkeypatch: pytest.MonkeyPatch,
    first_version_log: list[int],
) -> None:
    monkeypatch.setattr(sessions_module, "Session", FirstVersionSession)  # alice's initiators
    count = 200
    async with (
        listening(bob, relay_url),
        Peer(alice.identity, alice.ledger, relay_url, window=64) as peer,
    ):
        outcomes = await peer.send_many(
            bob.address, [(n + 1, "EUR", "") for n in range(count)], timeout=60
        )
    assert all(o.accepted for o in outcomes)
    assert_agree(alice, bob, count)
    assert set(first_version_log) == {RecordType.RECEIPT}


async def test_two_peers_of_this_version_batch_once_receipts_prove_it(
    relay_url: str, alice: Side, bob: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    original = Session.send_transfers

    def counting(self: Session, signed: list) -> None:  # type: ignore[type-arg]
        sent.append(len(signed))
        original(self, signed)

    monkeypatch.setattr(Session, "send_transfers", counting)
    count = 300
    async with (
        listening(bob, relay_url, hooks=SlowCommits()),
        Peer(alice.identity, alice.ledger, relay_url, window=64) as peer,
    ):
        outcomes = await peer.send_many(
            bob.address, [(n + 1, "EUR", "") for n in range(count)], timeout=60
        )
    assert all(o.accepted for o in outcomes)
    assert_agree(alice, bob, count)
    assert max(sent) > 1  # refills travel batched
