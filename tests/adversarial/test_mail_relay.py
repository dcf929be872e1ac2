"""Hostile peers against the relay's mailboxes: forged frames, other people's mail, floods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from p2ptransfer.errors import ProtocolError, RelayRefused
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import Mail, RelayClient
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.prekey import (
    PREKEY_VALIDITY_MS,
    Prekey,
    PrekeyId,
    SignedPrekey,
    sign_prekey,
)
from p2ptransfer.protocol.relay_wire import (
    AuthOk,
    Challenge,
    Deposit,
    GetPrekeys,
    MailInfo,
    Prekeys,
    PublishPrekey,
    decode_client_frame,
    decode_server_frame,
    make_auth,
)
from p2ptransfer.protocol.relay_wire import (
    Mail as MailFrame,
)

ALICE, BOB, MALLORY = (Identity(bytes([n]) * 32) for n in (41, 42, 43))
SLOT = bytes(16)


def signed_prekey(owner: Identity) -> bytes:
    start = time.time_ns() // 1_000_000 - 1000
    kem = primitives.hpke_public_from_private(bytes(range(96)))
    key = Prekey(
        owner.public.public_key, PrekeyId(bytes(8)), kem, start, start + PREKEY_VALIDITY_MS
    )
    return sign_prekey(owner, key).encode()


@pytest.fixture
async def relay() -> AsyncIterator[RelayServer]:
    server = RelayServer(RelayConfig(host="127.0.0.1", port=0, deposit_burst_per_ip=30))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def authed(url: str, identity: Identity) -> ClientConnection:
    ws = await connect(url, compression=None, open_timeout=5)
    challenge = decode_server_frame(await ws.recv())  # type: ignore[arg-type]
    assert isinstance(challenge, Challenge)
    await ws.send(make_auth(identity, url, challenge.challenge).encode())
    assert decode_server_frame(await ws.recv()) == AuthOk(identity.address)  # type: ignore[arg-type]
    assert isinstance(decode_server_frame(await ws.recv()), MailInfo)  # type: ignore[arg-type]
    return ws


@pytest.mark.parametrize(
    "frame",
    [
        MailFrame(ALICE.address, SLOT, b"forged", 0).encode(),
        MailInfo(1, 1).encode(),
        Deposit(1, BOB.address, SLOT, b"x").encode()[:-1],  # truncated
    ],
    ids=["mail", "mail-info", "truncated-deposit"],
)
async def test_relay_frames_from_a_peer_close_it(relay: RelayServer, frame: bytes) -> None:
    ws = await authed(relay.url, MALLORY)
    await ws.send(frame)
    async with asyncio.timeout(5):
        await ws.wait_closed()
    assert ws.close_code == 1008


async def test_the_mail_sender_is_the_authenticated_depositor(relay: RelayServer) -> None:
    ws = await authed(relay.url, BOB)
    await ws.send(PublishPrekey(1, signed_prekey(BOB)).encode())
    assert isinstance(decode_server_frame(await ws.recv()), Prekeys)  # type: ignore[arg-type]
    await ws.close()
    async with await RelayClient.connect(relay.url, MALLORY) as mallory:
        await mallory.deposit(BOB.address, SLOT, b"I am alice, honest")
    async with await RelayClient.connect(relay.url, BOB) as bob:
        mail = await asyncio.wait_for(bob.recv(), 5)
        assert isinstance(mail, Mail)
        assert mail.sender == MALLORY.address


async def test_throwaway_keys_from_one_ip_run_into_the_ip_bucket(relay: RelayServer) -> None:
    async with await RelayClient.connect(relay.url, BOB) as bob:
        await bob.publish_prekey(SignedPrekey.decode(signed_prekey(BOB)))
    refused = 0
    for n in range(40):
        async with await RelayClient.connect(relay.url, Identity(n.to_bytes(32, "big"))) as key:
            try:
                await key.deposit(BOB.address, SLOT, b"spam")
            except RelayRefused as exc:
                assert exc.reason == "rate-limited"
                refused += 1
    assert refused == 10  # the per-IP burst is 30


async def test_a_relay_serving_a_malformed_prekey_is_a_protocol_error() -> None:
    async def fake_relay(ws: ServerConnection) -> None:
        await ws.send(Challenge(bytes(32)).encode())
        await ws.recv()
        await ws.send(AuthOk(ALICE.address).encode())
        request = decode_client_frame(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(request, GetPrekeys)
        await ws.send(Prekeys(request.ref, request.address, (b"not a prekey",)).encode())
        await ws.wait_closed()

    async with serve(fake_relay, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with await RelayClient.connect(f"ws://127.0.0.1:{port}", ALICE) as alice:
            with pytest.raises(ProtocolError, match="malformed prekey"):
                await alice.get_prekeys(BOB.address)
