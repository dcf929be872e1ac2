"""A relay cluster end to end: real relay node processes sharing one real Redis.

Peers are in-process (a real Peer with its real SQLite ledger) over real
sockets to nodes that are real ``rendezvous.py --cluster`` processes; the
tests kill, stop and cut nodes off while peers keep transacting, and check
what the user relies on: every transfer ends exactly once on both sides, and
both ledgers verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import urllib.request
from collections.abc import Iterator

import pytest

from p2ptransfer.errors import NetworkError, RelayRefused
from p2ptransfer.net.peer import Peer
from p2ptransfer.net.relay_client import Deliver, RelayClient
from p2ptransfer.storage.ledger import TransferStatus
from tests.net.conftest import RelayProcess, make_identity, spawn_relay
from tests.peers import Side, listening, mail_peer
from tests.rediskit import RedisServer

ALICE, BOB, CAROL = (make_identity(n) for n in (61, 62, 63))


@contextlib.contextmanager
def nodes(url: str, prefix: str, count: int, *extra: str) -> Iterator[list[RelayProcess]]:
    """``count`` relay node processes of one cluster, stopped at the end."""
    started: list[RelayProcess] = []
    try:
        for _ in range(count):
            started.append(
                spawn_relay(
                    "--cluster", url, "--cluster-prefix", prefix, "--log-level", "warning", *extra
                )
            )
        yield started
    finally:
        for node in started:
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGCONT)
            node.terminate(timeout=15)


def healthz(url: str) -> tuple[int, str]:
    """GET /healthz of the node at ws ``url``: (status, body)."""
    http = url.replace("ws://", "http://", 1) + "/healthz"
    try:
        with urllib.request.urlopen(http, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def assert_exactly_once(alice: Side, bob: Side, count: int) -> None:
    """``count`` transfers from Alice, each completed once on both sides, ledgers intact."""
    sent = [row for row in alice.ledger.transfers() if row.direction == "out"]
    got = [row for row in bob.ledger.transfers() if row.direction == "in"]
    assert len(sent) == count
    assert all(row.status == TransferStatus.COMPLETED for row in sent)
    assert sorted(row.id for row in sent) == sorted(row.id for row in got)
    alice.ledger.verify()
    bob.ledger.verify()


async def test_peers_on_two_nodes_transfer(
    redis_server: RedisServer, redis_prefix: str, alice: Side, bob: Side
) -> None:
    with nodes(redis_server.url, redis_prefix, 2) as (one, two):
        async with listening(bob, two.url), Peer(alice.identity, alice.ledger, one.url) as peer:
            outcomes = await peer.send_many(
                bob.address, [(100 + i, "EUR", f"n{i}") for i in range(20)], timeout=20
            )
        assert all(outcome.accepted for outcome in outcomes)
        assert_exactly_once(alice, bob, 20)


async def test_a_burst_across_nodes_arrives_whole_and_in_order(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Thousands of frames faster than the receiver reads: paused, never dropped."""
    with nodes(redis_server.url, redis_prefix, 2, "--frame-rate", "0", "--byte-rate", "0") as (
        one,
        two,
    ):
        async with (
            await RelayClient.connect(one.url, ALICE) as alice,
            await RelayClient.connect(two.url, BOB) as bob,
        ):
            count = 3000
            for i in range(count):
                await alice.send(BOB.address, b"%06d" % i + b"." * 250)
            for i in range(count):
                message = await asyncio.wait_for(bob.recv(), 10)
                assert isinstance(message, Deliver) and message.payload[:6] == b"%06d" % i


async def test_a_handle_is_one_clusters_and_goes_to_the_first_claim(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    with nodes(redis_server.url, redis_prefix, 2) as (one, two):
        async with (
            await RelayClient.connect(one.url, ALICE) as alice,
            await RelayClient.connect(two.url, BOB) as bob,
            await RelayClient.connect(two.url, CAROL) as carol,
        ):
            await alice.claim_handle("alice")
            assert await carol.lookup_handle("alice") == ALICE.address  # claimed on 1, found on 2
            results = await asyncio.gather(
                alice.claim_handle("contested"),
                bob.claim_handle("contested"),
                return_exceptions=True,
            )
            winners = [r for r in results if not isinstance(r, BaseException)]
            losers = [r for r in results if isinstance(r, RelayRefused)]
            assert len(winners) == 1 and len(losers) == 1
            assert "contested belongs to another key" in str(losers[0])
            owner = await carol.lookup_handle("contested")
            assert owner in (ALICE.address, BOB.address)


async def test_mail_deposited_through_one_node_is_collected_through_another(
    redis_server: RedisServer, redis_prefix: str, alice: Side, bob: Side
) -> None:
    with nodes(redis_server.url, redis_prefix, 2) as (one, two):
        async with mail_peer(bob, two.url):
            pass  # Bob was online once, through node two: his prekey is in the cluster
        async with mail_peer(alice, one.url) as sender:
            signed = sender.prepare(bob.address, 700, "EUR", "by mail")
            (queued,) = await sender.queue([signed])
            assert queued.status == TransferStatus.QUEUED
        async with mail_peer(bob, one.url) as receiver:
            collected = await receiver.sync(timeout=10)
        assert [row.id for row in collected.transfers] == [signed.id]
        async with mail_peer(alice, two.url) as sender:
            result = await sender.sync(timeout=10)  # the mailed receipt, through the other node
        assert [row.id for row in result.receipts] == [signed.id]
        (row,) = alice.ledger.transfers()
        assert row.status == TransferStatus.COMPLETED
        alice.ledger.verify()
        bob.ledger.verify()


@pytest.mark.slow  # ~10-20 s: run by .ci/run after the default suite
async def test_peers_keep_transacting_while_nodes_die_and_hang(
    redis_server: RedisServer, redis_prefix: str, alice: Side, bob: Side
) -> None:
    """SIGKILL one node and SIGSTOP another mid-run: peers move on; nothing lost or doubled."""
    with nodes(
        redis_server.url, redis_prefix, 3, "--ping-interval", "1", "--ping-timeout", "1"
    ) as (
        one,
        two,
        three,
    ):
        relays_a = ",".join(n.url for n in (one, two, three))
        relays_b = ",".join(n.url for n in (two, three, one))
        sent = 0
        async with (
            listening(bob, relays_b, keepalive=0.5),  # a hung node is noticed within 1 s
            Peer(alice.identity, alice.ledger, relays_a, connect_timeout=3, keepalive=0.5) as peer,
        ):
            for round_ in range(6):
                if round_ == 2:
                    one.proc.send_signal(signal.SIGKILL)  # Alice's node: gone at once
                if round_ == 4:
                    two.proc.send_signal(signal.SIGSTOP)  # Bob's node: hangs, sockets open
                batch = [(1 + round_, "EUR", f"r{round_}.{i}") for i in range(5)]
                signed = peer.prepare_many(bob.address, batch)
                sent += len(signed)
                with contextlib.suppress(NetworkError):
                    await peer.deliver(signed, timeout=15)
            await peer.resend(timeout=20)  # whatever a failure left pending
            assert not alice.ledger.pending_outgoing()
        assert_exactly_once(alice, bob, sent)


async def test_a_node_without_redis_serves_locally_and_recovers(
    own_redis: RedisServer, redis_prefix: str
) -> None:
    with nodes(own_redis.url, redis_prefix, 2, "--cluster-grace", "30") as (one, two):
        async with (
            await RelayClient.connect(one.url, ALICE) as alice,
            await RelayClient.connect(one.url, BOB) as bob,
        ):
            own_redis.kill()
            for _ in range(100):  # bounded: the node notices within a heartbeat or two
                status, body = healthz(one.url)
                if status == 503:
                    break
                await asyncio.sleep(0.1)
            assert status == 503 and "cluster unavailable" in body
            with pytest.raises(NetworkError, match=r"lost its cluster|503"):
                await RelayClient.connect(two.url, CAROL, open_timeout=3)
            await alice.send(BOB.address, b"still local")  # same node: routing goes on
            assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, b"still local")
            own_redis.restart()
            for _ in range(100):
                if healthz(one.url)[0] == 200 and healthz(two.url)[0] == 200:
                    break
                await asyncio.sleep(0.1)
            assert healthz(one.url)[0] == 200 and healthz(two.url)[0] == 200
            async with await RelayClient.connect(two.url, CAROL) as carol:
                await carol.send(ALICE.address, b"across again")
                assert await asyncio.wait_for(alice.recv(), 5) == Deliver(
                    CAROL.address, b"across again"
                )


async def test_a_node_cut_off_too_long_sends_its_peers_elsewhere(
    own_redis: RedisServer, redis_prefix: str
) -> None:
    with nodes(own_redis.url, redis_prefix, 1, "--cluster-grace", "0.5") as (one,):
        async with await RelayClient.connect(one.url, ALICE) as alice:
            own_redis.kill()
            with pytest.raises(NetworkError):
                await asyncio.wait_for(alice.recv(), 10)
            assert alice.close_code == 1012


@pytest.mark.slow  # ~7 s: run by .ci/run after the default suite
async def test_a_subscriber_dropped_for_overflow_resubscribes(
    tmp_path_factory: pytest.TempPathFactory, redis_prefix: str
) -> None:
    """Redis drops a subscriber that falls behind; the node reconnects and delivers again."""
    server = RedisServer(
        tmp_path_factory.mktemp("redis-small"),
        extra_args=["--client-output-buffer-limit", "pubsub 64kb 32kb 1"],
    )
    with (
        server,
        nodes(server.url, redis_prefix, 2, "--frame-rate", "0", "--byte-rate", "0") as (
            one,
            two,
        ),
    ):
        async with (
            await RelayClient.connect(one.url, ALICE) as alice,
            await RelayClient.connect(two.url, BOB) as bob,
        ):
            two.proc.send_signal(signal.SIGSTOP)  # node two stops reading Redis
            # 600 x 16 KB: past the socket buffers, then past Redis's 64 KiB for node two.
            for _ in range(600):
                await alice.send(BOB.address, b"x" * 16_000)
            await asyncio.sleep(0.5)
            two.proc.send_signal(signal.SIGCONT)
            got = 0
            with contextlib.suppress(TimeoutError):
                while got < 600:  # what reached Bob before the drop; the rest is lost
                    await asyncio.wait_for(bob.recv(), 2)
                    got += 1
            assert got < 600
            for _ in range(50):  # bounded: resubscribed within a few heartbeats
                await alice.send(BOB.address, b"after")
                try:
                    message = await asyncio.wait_for(bob.recv(), 0.5)
                except TimeoutError:
                    continue
                if message == Deliver(ALICE.address, b"after"):
                    break
            else:
                raise AssertionError("node two never delivered again")
