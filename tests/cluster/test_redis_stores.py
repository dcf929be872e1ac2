"""The cluster's Redis stores keep the one-node stores' rules, and keep them under races.

Every contract test runs twice, with the same assertions: against the
one-node store (SQLite in memory behind its worker thread) and against the
Redis one (a private ``redis-server``, a key prefix per test). Then what only
a shared store faces: two clients (two nodes) racing on one handle or one
room, and Redis killed mid-use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from p2ptransfer.errors import InputError
from p2ptransfer.net.relay.directory import Directory, HandleDirectory
from p2ptransfer.net.relay.mailbox import (
    AsyncMailStore,
    MailLimits,
    MemoryMailStore,
    StoredMail,
    StoredPrekey,
    StoreUnavailable,
    ThreadedMailStore,
)
from p2ptransfer.net.relay.redis_directory import RedisDirectory
from p2ptransfer.net.relay.redis_mailbox import SWEEP_BATCH, RedisMailStore
from p2ptransfer.protocol.envelope import envelope_hash
from p2ptransfer.protocol.identity import Identity
from tests.rediskit import RedisServer

from .conftest import async_client

T0 = 1_700_000_000_000
AGE = 10_000
LIMITS = MailLimits(max_items=5, max_per_sender=3, max_bytes=1000, max_age_ms=AGE, max_prekeys=2)


def address(n: int) -> str:
    return Identity(bytes([n]) * 32).address


BOB, ALICE, CAROL, DAVE = (address(n) for n in (1, 2, 3, 4))


def mail(
    sender: str = ALICE,
    slot: bytes = b"s1",
    envelope: bytes = b"envelope",
    at: int = T0,
    recipient: str = BOB,
) -> StoredMail:
    return StoredMail(recipient, sender, slot, envelope, envelope_hash(envelope), at)


def prekey(n: int, not_before: int, not_after: int | None = None, owner: str = BOB) -> StoredPrekey:
    after = not_before + 100_000 if not_after is None else not_after
    return StoredPrekey(owner, n.to_bytes(8, "big"), not_before, after, b"signed:%d" % n)


async def figures(store: AsyncMailStore) -> tuple[int, int, int, int]:
    """(items, bytes, prekeys, expired) as the gauges serve them after a refresh."""
    refresh = getattr(store, "refresh_figures", None)
    if refresh is not None:
        await refresh()
    return store.mail_count(), store.mail_bytes(), store.prekey_count(), store.expired_count()


StoreFactory = Callable[..., AsyncMailStore]


@pytest.fixture(params=["sqlite", "redis"])
async def new_store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Any]:
    """``new_store(limits)``: a fresh store of the parametrized kind, closed at the end."""
    made: list[AsyncMailStore] = []
    client: aioredis.Redis | None = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = async_client(server.url)

    def make(limits: MailLimits = LIMITS, **options: Any) -> AsyncMailStore:
        store: AsyncMailStore
        if client is None:
            store = ThreadedMailStore(MemoryMailStore(limits))
        else:
            store = RedisMailStore(client, limits, prefix=redis_prefix, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    if client is not None:
        await client.aclose()


# --- the mail contract ----------------------------------------------------------


async def test_a_deposit_comes_back_exactly(new_store: StoreFactory) -> None:
    store = new_store()
    odd = mail(slot=b"\x00:\xff:1", envelope=bytes(range(256)) + b"12:34:")
    assert await store.deposit(odd) == "stored"
    assert await store.pending_for(BOB, T0) == [odd]
    assert await store.pending_for(ALICE, T0) == []
    assert await figures(store) == (1, len(odd.envelope), 0, 0)


async def test_a_deposit_to_the_same_slot_replaces(new_store: StoreFactory) -> None:
    store = new_store()
    first, other = mail(envelope=b"one", at=T0), mail(slot=b"s2", at=T0 + 1)
    assert await store.deposit(first) == "stored"
    assert await store.deposit(other) == "stored"
    second = mail(envelope=b"second", at=T0 + 2)
    assert await store.deposit(second) == "stored"
    # One piece for the slot, the newest, and it is now the youngest.
    assert await store.pending_for(BOB, T0 + 2) == [other, second]
    assert await figures(store) == (2, len(b"envelope") + len(b"second"), 0, 0)


async def test_each_sender_has_a_room_and_a_replacement_takes_no_more(
    new_store: StoreFactory,
) -> None:
    store = new_store()
    for n in range(3):
        assert await store.deposit(mail(slot=b"s%d" % n)) == "stored"
    assert await store.deposit(mail(slot=b"s3")) == "sender-room-full"
    assert await store.deposit(mail(slot=b"s1", envelope=b"again")) == "stored"
    # Another sender's room is untouched by Alice's.
    assert await store.deposit(mail(sender=CAROL, slot=b"s3")) == "stored"
    # So is Alice's room in another mailbox.
    assert await store.deposit(mail(slot=b"s3", recipient=DAVE)) == "stored"
    assert len(await store.pending_for(BOB, T0)) == 4


async def test_a_mailbox_holds_max_items(new_store: StoreFactory) -> None:
    store = new_store()
    senders = [ALICE, ALICE, ALICE, CAROL, CAROL]
    for n, sender in enumerate(senders):
        assert await store.deposit(mail(sender=sender, slot=b"s%d" % n)) == "stored"
    assert await store.deposit(mail(sender=DAVE, slot=b"x")) == "mailbox-full"
    # Full by count, a replacement still fits.
    assert await store.deposit(mail(sender=CAROL, slot=b"s4", envelope=b"new")) == "stored"
    assert len(await store.pending_for(BOB, T0)) == 5


async def test_a_mailbox_holds_max_bytes(new_store: StoreFactory) -> None:
    store = new_store(MailLimits(max_bytes=100, max_age_ms=AGE))
    assert await store.deposit(mail(slot=b"a", envelope=b"a" * 40)) == "stored"
    assert await store.deposit(mail(slot=b"b", envelope=b"b" * 40)) == "stored"
    assert await store.deposit(mail(slot=b"c", envelope=b"c" * 40)) == "mailbox-full"
    # A replacement counts its new size instead of the old one: 40 + 60 fits, 40 + 61 not.
    assert await store.deposit(mail(slot=b"b", envelope=b"B" * 60)) == "stored"
    assert await store.deposit(mail(slot=b"b", envelope=b"X" * 61)) == "mailbox-full"
    assert [m.envelope for m in await store.pending_for(BOB, T0)] == [b"a" * 40, b"B" * 60]
    assert (await figures(store))[:2] == (2, 100)


async def test_mail_comes_oldest_first_then_in_deposit_order(new_store: StoreFactory) -> None:
    store = new_store(MailLimits(max_age_ms=AGE))
    late = mail(slot=b"late", at=T0 + 5)
    tie_a = mail(sender=CAROL, slot=b"z", at=T0 + 3)
    tie_b = mail(sender=ALICE, slot=b"a", at=T0 + 3)
    early = mail(sender=DAVE, slot=b"e", at=T0 + 1)
    for piece in (late, tie_a, tie_b, early):
        assert await store.deposit(piece) == "stored"
    assert await store.pending_for(BOB, T0 + 5) == [early, tie_a, tie_b, late]


async def test_expired_mail_is_deleted_on_read_and_counted(new_store: StoreFactory) -> None:
    store = new_store()
    old, young = mail(slot=b"old", at=T0), mail(slot=b"young", at=T0 + 1)
    await store.deposit(old)
    await store.deposit(young)
    assert await store.pending_for(BOB, T0 + AGE - 1) == [old, young]
    assert await store.pending_for(BOB, T0 + AGE) == [young]  # at max age it is gone
    assert await figures(store) == (1, len(young.envelope), 0, 1)
    # Gone, not hidden: an earlier clock does not bring it back.
    assert await store.pending_for(BOB, T0) == [young]


async def test_expired_mail_counts_for_nothing_on_deposit(new_store: StoreFactory) -> None:
    store = new_store()
    for n in range(3):
        assert await store.deposit(mail(slot=b"s%d" % n, at=T0)) == "stored"
    later = T0 + AGE
    assert await store.deposit(mail(slot=b"new", at=later)) == "stored"  # the room is free again
    assert await store.pending_for(BOB, later) == [mail(slot=b"new", at=later)]
    assert await figures(store) == (1, len(b"envelope"), 0, 3)


async def test_sweep_deletes_expired_mail_everywhere(new_store: StoreFactory) -> None:
    store = new_store()
    # More mailboxes than one sweep batch visits.
    recipients = [address(10 + n) for n in range(SWEEP_BATCH + 6)]
    for recipient in recipients:
        assert await store.deposit(mail(recipient=recipient, at=T0)) == "stored"
    keep = mail(recipient=recipients[0], slot=b"keep", at=T0 + 5)
    assert await store.deposit(keep) == "stored"
    assert await store.sweep(T0 + AGE - 1) == 0
    assert await store.sweep(T0 + AGE) == len(recipients)
    assert await store.sweep(T0 + AGE) == 0
    assert await store.pending_for(recipients[0], T0 + AGE) == [keep]
    assert await store.pending_for(recipients[1], T0 + AGE) == []
    assert await figures(store) == (1, len(keep.envelope), 0, len(recipients))


async def test_an_ack_deletes_only_the_envelope_the_owner_saw(new_store: StoreFactory) -> None:
    store = new_store()
    seen = mail(envelope=b"seen")
    await store.deposit(seen)
    await store.deposit(mail(envelope=b"replacement", at=T0 + 1))
    assert await store.ack(BOB, ALICE, b"s1", seen.envelope_hash) == "replaced"
    assert [m.envelope for m in await store.pending_for(BOB, T0)] == [b"replacement"]
    assert await store.ack(BOB, ALICE, b"s1", envelope_hash(b"replacement")) == "deleted"
    assert await store.ack(BOB, ALICE, b"s1", envelope_hash(b"replacement")) == "unknown"
    assert await store.pending_for(BOB, T0) == []
    assert await figures(store) == (0, 0, 0, 0)


async def test_an_ack_names_owner_sender_and_slot(new_store: StoreFactory) -> None:
    store = new_store()
    piece = mail()
    await store.deposit(piece)
    assert await store.ack(CAROL, ALICE, b"s1", piece.envelope_hash) == "unknown"
    assert await store.ack(BOB, CAROL, b"s1", piece.envelope_hash) == "unknown"
    assert await store.ack(BOB, ALICE, b"s2", piece.envelope_hash) == "unknown"
    assert await store.pending_for(BOB, T0) == [piece]
    # An acknowledged room is free again.
    assert await store.ack(BOB, ALICE, b"s1", piece.envelope_hash) == "deleted"
    for n in range(3):
        assert await store.deposit(mail(slot=b"n%d" % n)) == "stored"


async def test_only_the_newest_two_prekeys_are_kept(new_store: StoreFactory) -> None:
    store = new_store()
    one, two, three = prekey(1, T0 - 3), prekey(2, T0 - 2), prekey(3, T0 - 1)
    assert await store.publish_prekey(one, T0) == [one]
    assert await store.publish_prekey(three, T0) == [three, one]
    assert await store.publish_prekey(two, T0) == [three, two]
    assert await store.prekeys_for(BOB, T0) == [three, two]
    # Publishing an older one again changes nothing.
    assert await store.publish_prekey(one, T0) == [three, two]
    assert await store.prekeys_for(ALICE, T0) == []
    assert (await figures(store))[2] == 2


async def test_prekeys_of_one_start_are_ordered_by_id(new_store: StoreFactory) -> None:
    store = new_store()
    low = StoredPrekey(BOB, b"\x01\xff", T0, T0 + 1000, b"low")
    high = StoredPrekey(BOB, b"\x80\x00", T0, T0 + 1000, b"high")
    short = StoredPrekey(BOB, b"\x80", T0, T0 + 1000, b"short")
    await store.publish_prekey(low, T0)
    await store.publish_prekey(high, T0)
    assert await store.publish_prekey(short, T0) == [high, short]


async def test_expired_prekeys_are_dropped(new_store: StoreFactory) -> None:
    store = new_store()
    lasting = prekey(1, T0 - 10, T0 + 1000)
    brief = prekey(2, T0 - 5, T0 + 10)
    assert await store.publish_prekey(lasting, T0) == [lasting]
    assert await store.publish_prekey(brief, T0) == [brief, lasting]
    # One that is already expired is not kept at all.
    assert await store.publish_prekey(prekey(3, T0 - 1, T0), T0) == [brief, lasting]
    assert await store.prekeys_for(BOB, T0 + 10) == [lasting]
    assert await store.prekeys_for(BOB, T0 + 1000) == []
    await store.sweep(T0 + 10)
    assert (await figures(store))[2] == 1
    await store.sweep(T0 + 1000)
    assert (await figures(store))[2] == 0
    assert await store.prekeys_for(BOB, T0) == []


async def test_a_store_serves_gauges_without_waiting(new_store: StoreFactory) -> None:
    store = new_store()
    await store.deposit(mail(envelope=b"12345"))
    await store.publish_prekey(prekey(1, T0), T0)
    assert await figures(store) == (1, 5, 1, 0)
    await store.sweep(T0 + AGE)
    assert await figures(store) == (0, 0, 1, 1)


# --- the directory contract ----------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
async def directory(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[HandleDirectory]:
    if request.param == "sqlite":
        store: HandleDirectory = Directory(None)
        yield store
        await store.close()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = async_client(server.url)
    store = RedisDirectory(client, prefix=redis_prefix)
    yield store
    await store.close()
    await client.aclose()


async def handle_count(directory: HandleDirectory) -> int:
    refresh = getattr(directory, "refresh_figures", None)
    if refresh is not None:
        await refresh()
    return directory.count()


async def test_a_handle_is_first_come_first_served(directory: HandleDirectory) -> None:
    assert await directory.lookup("alice") is None
    assert await directory.claim("alice", ALICE, 1, 3) == "claimed"
    assert await directory.claim("alice", ALICE, 2, 3) == "yours"
    assert await directory.claim("alice", CAROL, 3, 3) == "taken"
    assert await directory.lookup("alice") == ALICE
    assert await handle_count(directory) == 1


async def test_an_address_holds_at_most_its_quota(directory: HandleDirectory) -> None:
    for handle in ("one", "two"):
        assert await directory.claim(handle, ALICE, 1, 2) == "claimed"
    assert await directory.claim("three", ALICE, 1, 2) == "quota"
    assert await directory.lookup("three") is None
    # "yours" is not a new claim, and another address has its own quota.
    assert await directory.claim("one", ALICE, 1, 2) == "yours"
    assert await directory.claim("three", CAROL, 1, 2) == "claimed"
    assert await directory.release("one", ALICE) == "released"
    assert await directory.claim("four", ALICE, 1, 2) == "claimed"
    assert await handle_count(directory) == 3


async def test_only_the_holder_releases(directory: HandleDirectory) -> None:
    assert await directory.release("alice", ALICE) == "unknown"
    assert await directory.claim("alice", ALICE, 1, 3) == "claimed"
    assert await directory.release("alice", CAROL) == "not-yours"
    assert await directory.lookup("alice") == ALICE
    assert await directory.release("alice", ALICE) == "released"
    assert await directory.lookup("alice") is None
    assert await directory.claim("alice", CAROL, 1, 3) == "claimed"
    assert await handle_count(directory) == 1


@pytest.mark.parametrize("handle", ["ab", "Alice", "a b", "x" * 33, "héllo"])
async def test_a_bad_handle_is_refused_before_anything(
    directory: HandleDirectory, handle: str
) -> None:
    with pytest.raises(InputError):
        await directory.claim(handle, ALICE, 1, 3)
    with pytest.raises(InputError):
        await directory.release(handle, ALICE)
    assert await handle_count(directory) == 0


# --- two nodes racing ---------------------------------------------------------------


@pytest.fixture
async def two_clients(redis_server: RedisServer) -> AsyncIterator[list[aioredis.Redis]]:
    clients = [async_client(redis_server.url) for _ in range(2)]
    yield clients
    for client in clients:
        await client.aclose()


async def test_concurrent_claims_of_one_handle_have_one_winner(
    two_clients: list[aioredis.Redis], redis_prefix: str
) -> None:
    nodes = [RedisDirectory(c, prefix=redis_prefix) for c in two_clients]
    claimants = [address(20 + n) for n in range(40)]
    outcomes = await asyncio.gather(
        *(nodes[n % 2].claim("contested", a, 1, 3) for n, a in enumerate(claimants))
    )
    assert sorted(outcomes) == ["claimed"] + ["taken"] * 39
    assert await nodes[1].lookup("contested") == claimants[outcomes.index("claimed")]


async def test_concurrent_claims_never_pass_the_quota(
    two_clients: list[aioredis.Redis], redis_prefix: str
) -> None:
    nodes = [RedisDirectory(c, prefix=redis_prefix) for c in two_clients]
    outcomes = await asyncio.gather(
        *(nodes[n % 2].claim(f"handle{n}", ALICE, 1, 3) for n in range(30))
    )
    assert sorted(outcomes) == ["claimed"] * 3 + ["quota"] * 27
    await nodes[0].refresh_figures()
    assert nodes[0].count() == 3


async def test_concurrent_deposits_at_a_rooms_edge_never_pass_it(
    two_clients: list[aioredis.Redis], redis_prefix: str
) -> None:
    roomy = MailLimits(max_items=1000, max_per_sender=3, max_age_ms=AGE)
    nodes = [RedisMailStore(c, roomy, prefix=redis_prefix) for c in two_clients]
    for n in range(2):  # Alice already has two pieces waiting: one place left
        assert await nodes[n].deposit(mail(slot=b"old%d" % n)) == "stored"
    outcomes = await asyncio.gather(
        *(nodes[n % 2].deposit(mail(slot=b"s%d" % n)) for n in range(40))
    )
    assert sorted(outcomes) == ["sender-room-full"] * 39 + ["stored"]
    assert len(await nodes[1].pending_for(BOB, T0)) == 3


async def test_concurrent_deposits_never_pass_a_room_or_a_mailbox(
    two_clients: list[aioredis.Redis], redis_prefix: str
) -> None:
    nodes = [RedisMailStore(c, LIMITS, prefix=redis_prefix) for c in two_clients]
    # Alice's room (3) and then the mailbox (5 items): 40 deposits from each sender.
    deposits = [
        mail(sender=sender, slot=b"s%d" % n) for n in range(40) for sender in (ALICE, CAROL, DAVE)
    ]
    outcomes = await asyncio.gather(*(nodes[n % 2].deposit(m) for n, m in enumerate(deposits)))
    assert outcomes.count("stored") == 5
    waiting = await nodes[0].pending_for(BOB, T0)
    assert len(waiting) == 5
    for sender in (ALICE, CAROL, DAVE):
        assert sum(m.sender == sender for m in waiting) <= 3
    await nodes[1].refresh_figures()
    assert nodes[1].mail_count() == 5


# --- Redis lost ---------------------------------------------------------------------


async def test_redis_killed_mid_use_is_store_unavailable(own_redis: RedisServer) -> None:
    client = async_client(own_redis.url)
    store = RedisMailStore(client, LIMITS)
    directory = RedisDirectory(client)
    try:
        assert await store.deposit(mail()) == "stored"
        assert await directory.claim("alice", ALICE, 1, 3) == "claimed"
        own_redis.kill()
        calls = [
            store.deposit(mail(slot=b"s2")),
            store.pending_for(BOB, T0),
            store.ack(BOB, ALICE, b"s1", mail().envelope_hash),
            store.publish_prekey(prekey(1, T0), T0),
            store.prekeys_for(BOB, T0),
            store.sweep(T0),
            store.refresh_figures(),
            directory.claim("carol", CAROL, 1, 3),
            directory.lookup("alice"),
            directory.release("alice", ALICE),
            directory.refresh_figures(),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="Redis"):
                await call
        # A restarted Redis (empty: no persistence here) serves again; the scripts reload.
        own_redis.restart()
        assert await store.pending_for(BOB, T0) == []
        assert await store.deposit(mail(slot=b"s3")) == "stored"
        assert await directory.claim("alice", CAROL, 1, 3) == "claimed"
    finally:
        await store.close()
        await directory.close()
        await client.aclose()


async def test_close_leaves_a_shared_client_open(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await RedisMailStore(redis_client, LIMITS, prefix=redis_prefix).close()
    await RedisDirectory(redis_client, prefix=redis_prefix).close()
    assert await redis_client.ping()


async def test_a_redis_that_cannot_wait_for_its_disk_is_noted_once(
    redis_client: aioredis.Redis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The kit's Redis runs without an AOF: 7.0 has no WAITAOF, 7.2+ refuses it without one.
    caplog.set_level(logging.WARNING, logger="p2ptransfer.relay")
    store = RedisMailStore(redis_client, LIMITS, prefix=redis_prefix)
    for n in range(3):
        assert await store.deposit(mail(slot=b"s%d" % n)) == "stored"
    assert [r.getMessage() for r in caplog.records] == [
        "Redis cannot confirm deposits on disk (WAITAOF); "
        "a deposit is confirmed once in Redis's memory"
    ]


async def test_an_emptied_mailbox_leaves_no_keys(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    store = RedisMailStore(redis_client, LIMITS, prefix=redis_prefix)
    pieces = [mail(slot=b"a"), mail(slot=b"b", at=T0 + AGE), mail(recipient=CAROL)]
    for piece in pieces:
        await store.deposit(piece)
    await store.publish_prekey(prekey(1, T0, T0 + 5), T0)
    await store.ack(BOB, ALICE, b"b", pieces[1].envelope_hash)
    await store.sweep(T0 + AGE)
    keys = sorted([k async for k in redis_client.scan_iter(match=f"{redis_prefix}*")])
    assert keys == [f"{redis_prefix}stats".encode()]


async def test_deposits_without_a_durable_wait(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    store = RedisMailStore(redis_client, LIMITS, prefix=redis_prefix, durable_wait=False)
    assert await store.deposit(mail()) == "stored"
    assert await store.pending_for(BOB, T0) == [mail()]
