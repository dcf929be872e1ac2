"""The relay over real sockets: authentication, routing, fan-out, watches, directory, garbage."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from p2ptransfer.errors import (
    AddressError,
    InputError,
    NotFound,
    PeerOffline,
    RelayRefused,
    RelayUnreachable,
)
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import Deliver, Offline, RelayClient
from p2ptransfer.protocol.relay_wire import (
    Auth,
    Challenge,
    Send,
    make_auth,
)

from .conftest import StartRelay, closed_with, make_identity, raw_auth, raw_connect, recv_frame

ALICE, BOB, CAROL, MALLORY = (make_identity(n) for n in (1, 2, 3, 4))


async def nothing_arrives(client: RelayClient, within: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(within):
            await client.recv()


# --- authentication ---------------------------------------------------------------


async def test_authenticated_address_is_the_key_address(relay: RelayServer) -> None:
    async with await RelayClient.connect(relay.url, ALICE) as client:
        assert client.address == ALICE.address


async def test_signature_by_another_key_is_refused(relay: RelayServer) -> None:
    ws = await raw_connect(relay.url)
    challenge = await recv_frame(ws)
    assert isinstance(challenge, Challenge)
    genuine = make_auth(MALLORY, relay.url, challenge.challenge)
    await ws.send(Auth(BOB.public.public_key, genuine.signature, genuine.relay_url).encode())
    assert await closed_with(ws) == (1008, "authentication failed: signature does not verify")


async def test_replayed_auth_answer_is_refused(relay: RelayServer) -> None:
    first = await raw_connect(relay.url)
    recorded = await raw_auth(first, ALICE, relay.url)
    await first.close()
    second = await raw_connect(relay.url)
    assert isinstance(await recv_frame(second), Challenge)
    await second.send(recorded.encode())  # a fresh challenge was issued: the old answer fails
    assert await closed_with(second) == (1008, "authentication failed: signature does not verify")


async def test_signature_for_another_relay_url_is_refused(relay: RelayServer) -> None:
    ws = await raw_connect(relay.url)
    challenge = await recv_frame(ws)
    assert isinstance(challenge, Challenge)
    await ws.send(make_auth(ALICE, "wss://other-relay.example", challenge.challenge).encode())
    code, reason = await closed_with(ws)
    assert code == 1008
    assert (
        reason
        == "authentication failed: signed for another relay URL (wss://other-relay.example:443/)"
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_names_are_accepted(relay: RelayServer, host: str) -> None:
    async with await RelayClient.connect(f"ws://{host}:{relay.port}", ALICE) as client:
        assert client.address == ALICE.address


async def test_frame_before_auth_is_refused(relay: RelayServer) -> None:
    ws = await raw_connect(relay.url)
    await recv_frame(ws)
    await ws.send(Send(1, BOB.address, b"hi").encode())
    assert await closed_with(ws) == (1008, "authenticate first")


async def test_nobody_receives_frames_for_a_key_they_do_not_hold(relay: RelayServer) -> None:
    async with (
        await RelayClient.connect(relay.url, ALICE) as alice,
        await RelayClient.connect(relay.url, BOB) as bob,
        await RelayClient.connect(relay.url, MALLORY) as mallory,
    ):
        await alice.send(BOB.address, b"for bob only")
        assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, b"for bob only")
        await nothing_arrives(mallory)
    # Mallory cannot register Bob's address: her only proof would be Bob's signature.
    ws = await raw_connect(relay.url)
    challenge = await recv_frame(ws)
    assert isinstance(challenge, Challenge)
    forged = make_auth(MALLORY, relay.url, challenge.challenge)
    await ws.send(Auth(BOB.public.public_key, forged.signature, forged.relay_url).encode())
    assert (await closed_with(ws))[0] == 1008


async def test_second_auth_closes(relay: RelayServer) -> None:
    ws = await raw_connect(relay.url)
    auth = await raw_auth(ws, ALICE, relay.url)
    await ws.send(auth.encode())
    assert await closed_with(ws) == (1008, "already authenticated")


# --- routing ----------------------------------------------------------------------


async def test_routing_between_real_peers(relay: RelayServer) -> None:
    async with (
        await RelayClient.connect(relay.url, ALICE) as alice,
        await RelayClient.connect(relay.url, BOB) as bob,
    ):
        for i in range(20):
            await alice.send(BOB.address, f"ping {i}".encode())
            assert await asyncio.wait_for(bob.recv(), 5) == Deliver(
                ALICE.address, f"ping {i}".encode()
            )
            await bob.send(ALICE.address, bytes([i]) * 60 * 1024)
            assert await asyncio.wait_for(alice.recv(), 5) == Deliver(
                BOB.address, bytes([i]) * 60 * 1024
            )
    assert relay.metrics.frames_forwarded == 40


@pytest.mark.parametrize("size", [0, 1, 256, 61440])
async def test_forwarded_bytes_are_exactly_the_codecs_deliver(
    relay: RelayServer, size: int
) -> None:
    """The relay splices Deliver frames from Send bytes; they must be the canonical encoding."""
    alice, bob = await raw_connect(relay.url), await raw_connect(relay.url)
    await raw_auth(alice, ALICE, relay.url)
    await raw_auth(bob, BOB, relay.url)
    payload = os.urandom(size)
    await alice.send(Send(0xFFFFFFFF, BOB.address, payload).encode())
    async with asyncio.timeout(5):
        assert await bob.recv() == Deliver(ALICE.address, payload).encode()
    await alice.close()
    await bob.close()
    assert relay.metrics.bytes_forwarded == size


@pytest.mark.parametrize(
    "to",
    [BOB.address.upper(), BOB.address[:-1] + ("q" if BOB.address[-1] != "q" else "p")],
    ids=["upper-case", "bad-checksum"],
)
async def test_a_send_that_only_resembles_an_online_address_is_malformed(
    relay: RelayServer, to: str
) -> None:
    """Such a Send misses the routing table, and the full decoder then refuses it."""
    bob = await raw_connect(relay.url)
    await raw_auth(bob, BOB, relay.url)
    mallory = await raw_connect(relay.url)
    await raw_auth(mallory, MALLORY, relay.url)
    good = Send(1, BOB.address, b"x").encode()
    await mallory.send(good.replace(BOB.address.encode(), to.encode()))
    code, reason = await closed_with(mallory)
    assert (code, reason.split(":")[0]) == (1008, "malformed frame")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await bob.recv()
    await bob.close()


async def test_offline_answer(relay: RelayServer) -> None:
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        await alice.send(CAROL.address, b"anyone?")
        answer = await asyncio.wait_for(alice.recv(), 5)
        assert isinstance(answer, Offline)
        assert answer.to == CAROL.address
        bob = await RelayClient.connect(relay.url, BOB)
        await bob.close()
        await asyncio.sleep(0.05)
        await alice.send(BOB.address, b"gone?")
        assert isinstance(await asyncio.wait_for(alice.recv(), 5), Offline)


async def test_online_notification(relay: RelayServer) -> None:
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        with pytest.raises(PeerOffline, match=r"did not come online within 0\.2 s"):
            await alice.wait_online(BOB.address, 0.2)
        waiting = asyncio.create_task(alice.wait_online(BOB.address, 5))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        async with await RelayClient.connect(relay.url, BOB):
            await asyncio.wait_for(waiting, 5)
            await alice.wait_online(BOB.address, 1)  # already online: answered at once


async def test_fan_out_to_every_connection_of_an_address(relay: RelayServer) -> None:
    async with (
        await RelayClient.connect(relay.url, ALICE) as alice,
        await RelayClient.connect(relay.url, BOB) as bob_listen,
        await RelayClient.connect(relay.url, BOB) as bob_send,
    ):
        await alice.send(BOB.address, b"to both")
        for bob in (bob_listen, bob_send):
            assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, b"to both")
        # one of Bob's connections leaving does not make Bob offline
        await bob_send.close()
        await asyncio.sleep(0.05)
        await alice.send(BOB.address, b"still there")
        assert await asyncio.wait_for(bob_listen.recv(), 5) == Deliver(
            ALICE.address, b"still there"
        )


async def test_client_validates_before_sending(relay: RelayServer) -> None:
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        with pytest.raises(AddressError):
            await alice.send("p2pt1nonsense", b"x")
        with pytest.raises(InputError, match="not a valid handle"):
            await alice.claim_handle("No")


# --- directory --------------------------------------------------------------------


async def test_directory_rules(relay: RelayServer) -> None:
    async with (
        await RelayClient.connect(relay.url, ALICE) as alice,
        await RelayClient.connect(relay.url, BOB) as bob,
    ):
        await alice.claim_handle("alice")
        await alice.claim_handle("alice")  # same key again: idempotent
        with pytest.raises(RelayRefused, match="alice belongs to another key"):
            await bob.claim_handle("alice")
        assert await bob.lookup_handle("alice") == ALICE.address
        with pytest.raises(NotFound, match="nobody has claimed the handle 'carol'"):
            await bob.lookup_handle("carol")
    assert relay.metrics.frames_refused["handle-taken"] == 1


async def test_directory_persists_across_restart(tmp_path: Path, start_relay: StartRelay) -> None:
    config = RelayConfig(port=0, data_dir=tmp_path / "relay")
    async with (
        start_relay(config) as first,
        await RelayClient.connect(first.url, ALICE) as alice,
    ):
        await alice.claim_handle("alice_1")
    assert oct(os.stat(tmp_path / "relay").st_mode & 0o777) == "0o700"
    async with (
        start_relay(config) as second,
        await RelayClient.connect(second.url, BOB) as bob,
    ):
        assert await bob.lookup_handle("alice_1") == ALICE.address
        with pytest.raises(RelayRefused):
            await bob.claim_handle("alice_1")


async def test_directory_in_memory_without_data_dir(start_relay: StartRelay) -> None:
    for _ in range(2):
        async with (
            start_relay(RelayConfig(port=0)) as server,
            await RelayClient.connect(server.url, BOB) as bob,
        ):
            with pytest.raises(NotFound):
                await bob.lookup_handle("alice")
            await bob.claim_handle("alice")


# --- garbage: the offender is closed, the relay stays up ----------------------------


def _nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        ("hello relay", 1003, "text frames are not part of the protocol"),
        (
            json.dumps({"to": "bob", "payload": "x"}),
            1003,
            "text frames are not part of the protocol",
        ),
        (_nested_json(30_000), 1003, "text frames are not part of the protocol"),
        (os.urandom(1000), 1008, "malformed frame"),
        (b"", 1008, "malformed frame: empty message"),
        (b"\x31" + os.urandom(200), 1008, "malformed frame"),
        (bytes(2 * 1024 * 1024), 1009, ""),
    ],
    ids=["text", "json", "nested-json", "random-binary", "empty", "auth-garbage", "2MiB"],
)
async def test_garbage_before_auth(
    relay: RelayServer, message: str | bytes, code: int, reason: str
) -> None:
    ws = await raw_connect(relay.url)
    await recv_frame(ws)
    await ws.send(message)
    got_code, got_reason = await closed_with(ws)
    assert got_code == code
    assert got_reason.startswith(reason)
    async with (
        await RelayClient.connect(relay.url, ALICE) as alice,
        await RelayClient.connect(relay.url, BOB) as bob,
    ):
        await alice.send(BOB.address, b"still up")
        assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, b"still up")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("text after auth", 1003),
        (os.urandom(64), 1008),
        (bytes(2 * 1024 * 1024), 1009),
        (b"\x34" + os.urandom(100), 1008),
    ],
    ids=["text", "random-binary", "2MiB", "server-frame"],
)
async def test_garbage_after_auth(relay: RelayServer, message: str | bytes, code: int) -> None:
    ws = await raw_connect(relay.url)
    await raw_auth(ws, MALLORY, relay.url)
    await ws.send(message)
    assert (await closed_with(ws))[0] == code


async def test_silent_connection_is_closed_after_auth_timeout(start_relay: StartRelay) -> None:
    async with start_relay(RelayConfig(port=0, auth_timeout=0.3)) as relay:
        ws = await raw_connect(relay.url)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await closed_with(ws, timeout=5) == (1008, "authentication timeout")
        assert 0.25 < loop.time() - start < 4
        assert relay.metrics.auth_failures == 1


async def test_client_maps_failures_to_relay_unreachable(relay: RelayServer) -> None:
    port = relay.port
    await relay.close()
    with pytest.raises(RelayUnreachable) as info:
        await RelayClient.connect(f"ws://127.0.0.1:{port}", ALICE, open_timeout=2)
    assert str(info.value) == f"cannot reach the relay at ws://127.0.0.1:{port}: connection refused"


async def test_client_sees_relay_going_away(start_relay: StartRelay) -> None:
    async with start_relay(RelayConfig(port=0)) as server:
        client = await RelayClient.connect(server.url, ALICE)
    with pytest.raises(RelayUnreachable, match=r"lost the connection .* \(code 1001"):
        await asyncio.wait_for(client.recv(), 5)
    with pytest.raises(RelayUnreachable):
        await client.send(BOB.address, b"x")
    await client.close()


async def test_waiters_wake_when_the_connection_ends(start_relay: StartRelay) -> None:
    async with start_relay(RelayConfig(port=0)) as server:
        client = await RelayClient.connect(server.url, ALICE)
        waiting = asyncio.create_task(client.wait_online(BOB.address, 30))
        receiving = asyncio.create_task(client.recv())
        await asyncio.sleep(0.05)
    for task in (waiting, receiving):
        with pytest.raises(RelayUnreachable, match="code 1001"):
            await asyncio.wait_for(task, 5)
    await client.close()


async def test_recv_after_close_raises(relay: RelayServer) -> None:
    client = await RelayClient.connect(relay.url, ALICE)
    await client.close()
    with pytest.raises(RelayUnreachable, match="is closed"):
        await asyncio.wait_for(client.recv(), 1)
