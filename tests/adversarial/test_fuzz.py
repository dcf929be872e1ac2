"""Fuzzing: every decoder, and the relay's frame handling over a real socket.

Bounded by default (a few dozen examples each, the whole file in seconds);
``P2PT_FUZZ_LONG=1`` or ``-m slow`` runs the long mode. Each relay test ends
by checking the relay is still up and a well-behaved pair still exchanges
frames through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus

from p2ptransfer.errors import P2PTransferError
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import Deliver, RelayClient
from p2ptransfer.protocol import handshake, session, transfer
from p2ptransfer.protocol import receipt as receipts
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.relay_wire import (
    Challenge,
    Claim,
    Lookup,
    Send,
    Watch,
    decode_client_frame,
    decode_frame,
    decode_server_frame,
    make_auth,
)

pytestmark = pytest.mark.timeout(120)

LONG = os.environ.get("P2PT_FUZZ_LONG") == "1"
LONG_EXAMPLES = 5000
SHORT_EXAMPLES = LONG_EXAMPLES if LONG else 100

FUZZ_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "derandomize": False,
    "database": None,
}


# --- every decoder: mutated valid encodings decode to something valid or fail cleanly ----


def _samples() -> list[tuple[str, Callable[[bytes], object], bytes]]:
    me, you = Identity(bytes(range(32))), Identity(bytes(range(1, 33)))
    t = transfer.Transfer(
        id=bytes(16),  # type: ignore[arg-type]
        sender=me.address,
        recipient=you.address,
        amount=1250,
        currency="EUR",
        memo="rent",
        created_at=1,
    )
    signed = transfer.sign_transfer(me, t)
    receipt = receipts.accept(you, signed, 2)
    hello = session.Session.initiate(
        me,
        you.public,
        tag=bytes(16),
        ephemeral_private=bytes(range(32)),
        nonce=bytes(32),
    ).data_to_send()[0]
    init = session.FRAME.decode(hello)["body"]
    auth = make_auth(me, "ws://127.0.0.1:1", bytes(32))
    return [
        ("transfer", transfer.Transfer.decode, t.encode()),
        ("signed-transfer", transfer.SignedTransfer.decode, signed.encode()),
        ("receipt", receipts.Receipt.decode, receipt.receipt.encode()),
        ("signed-receipt", receipts.SignedReceipt.decode, receipt.encode()),
        ("session-frame", session.FRAME.decode, hello),
        ("handshake-init", handshake.HANDSHAKE_INIT.decode, init),
        ("relay-auth", decode_client_frame, auth.encode()),
        ("relay-send", decode_client_frame, Send(1, you.address, hello).encode()),
        ("relay-deliver", decode_server_frame, Deliver(me.address, hello).encode()),
        ("relay-challenge", decode_server_frame, Challenge(bytes(32)).encode()),
        ("relay-any", decode_frame, Watch(3, you.address).encode()),
    ]


SAMPLES = _samples()


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "splice", "random"]))
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "extend":
        return data + draw(st.binary(min_size=1, max_size=64))
    if kind == "splice":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(max_size=16)) + data[i:]
    return draw(st.binary(max_size=len(data) * 2))


@pytest.mark.parametrize(("name", "decoder", "valid"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_every_decoder_fails_closed_on_mutated_input(
    name: str, decoder: Callable[[bytes], object], valid: bytes
) -> None:
    @settings(max_examples=SHORT_EXAMPLES * 3, **FUZZ_SETTINGS)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        mutated = data.draw(mutation(valid))
        # DecodeError and friends are the only allowed failure; anything else
        # (IndexError, UnicodeDecodeError, a bare ValueError...) fails the test.
        with contextlib.suppress(P2PTransferError):
            decoder(mutated)

    check()


# --- the relay over a real socket ------------------------------------------------------


FUZZ_RELAY = RelayConfig(
    host="127.0.0.1",
    port=0,
    auth_timeout=1.0,
    connection_rate_per_ip=1e6,
    connection_burst_per_ip=1e6,
    max_connections_per_ip=10_000,
    shutdown_timeout=1.0,
)


@pytest.fixture
async def relay() -> AsyncIterator[RelayServer]:
    server = RelayServer(FUZZ_RELAY)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def pair_still_works(relay: RelayServer) -> None:
    """Two well-behaved clients exchange a frame each way."""
    a, b = Identity(secrets.token_bytes(32)), Identity(secrets.token_bytes(32))
    async with (
        await RelayClient.connect(relay.url, a) as ca,
        await RelayClient.connect(relay.url, b) as cb,
    ):
        await ca.send(b.address, b"ping")
        await cb.send(a.address, b"pong")
        async with asyncio.timeout(5):
            got_b, got_a = await cb.recv(), await ca.recv()
    assert got_b == Deliver(a.address, b"ping") and got_a == Deliver(b.address, b"pong")


async def _raw(url: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(url, compression=None, open_timeout=5, max_size=None, close_timeout=1)


async def _drain(ws: Any, seconds: float) -> None:
    """Read whatever the relay answers for a moment (or until it closes us)."""
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()


def frame_strategy(me: Identity, other: str) -> st.SearchStrategy[bytes]:
    """Random binary, and frames that are almost valid (right type id, odd body)."""
    valid = st.sampled_from(
        [
            Send(1, other, b"x").encode(),
            Watch(2, other).encode(),
            Claim(3, "abc").encode(),
            Lookup(4, "abc").encode(),
            make_auth(me, "ws://127.0.0.1:1", bytes(32)).encode(),
        ]
    )
    near = st.builds(
        lambda t, body: bytes([t]) + body,
        st.integers(0x28, 0x48),
        st.binary(max_size=256),
    )
    mutated = valid.flatmap(lambda v: mutation(v))
    return st.one_of(st.binary(max_size=512), near, mutated, valid)


class Counter:
    def __init__(self) -> None:
        self.cases = 0
        self.frames = 0
        self.started = time.monotonic()


async def _fuzz_unauthenticated(relay: RelayServer, frames: list[bytes], counter: Counter) -> None:
    counter.cases += 1
    counter.frames += len(frames)
    try:
        ws = await _raw(relay.url)
    except InvalidStatus as exc:  # pragma: no cover - limits are wide open here
        raise AssertionError(f"relay refused a connection: {exc}") from exc
    try:
        await ws.recv()  # the challenge
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await ws.send(frame)
        await _drain(ws, 0.05)
    finally:
        await ws.close()


async def _fuzz_authenticated(
    relay: RelayServer, frames: list[bytes], counter: Counter, me: Identity, other: str
) -> None:
    counter.cases += 1
    counter.frames += len(frames)
    ws = await _raw(relay.url)
    try:
        challenge = decode_server_frame(await ws.recv())
        assert isinstance(challenge, Challenge)
        await ws.send(make_auth(me, relay.url, challenge.challenge).encode())
        await ws.recv()  # AuthOk
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await ws.send(frame)
        await _drain(ws, 0.05)
    finally:
        await ws.close()


def _run_relay_fuzz(
    relay: RelayServer, examples: int, authenticated: bool, loop: asyncio.AbstractEventLoop
) -> Counter:
    counter = Counter()
    me, other = Identity(secrets.token_bytes(32)), Identity(secrets.token_bytes(32))
    strategy = st.lists(frame_strategy(me, other.address), min_size=1, max_size=8)

    @settings(max_examples=examples, **FUZZ_SETTINGS)
    @given(strategy)
    def one(frames: list[bytes]) -> None:
        if authenticated:
            coro = _fuzz_authenticated(relay, frames, counter, me, other.address)
        else:
            coro = _fuzz_unauthenticated(relay, frames, counter)
        asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    one()
    return counter


async def _relay_fuzz(relay: RelayServer, examples: int, authenticated: bool) -> None:
    # Hypothesis drives examples synchronously: run it in a thread, the relay on this loop.
    loop = asyncio.get_running_loop()
    counter = await asyncio.to_thread(_run_relay_fuzz, relay, examples, authenticated, loop)
    elapsed = time.monotonic() - counter.started
    print(
        f"relay fuzz ({'authenticated' if authenticated else 'unauthenticated'}): "
        f"{counter.cases} cases, {counter.frames} frames, {elapsed:.1f} s"
    )
    assert counter.cases >= min(examples, 10)
    await pair_still_works(relay)
    assert relay.metrics.connections_total >= counter.cases


@pytest.mark.parametrize("authenticated", [False, True], ids=["unauthenticated", "authenticated"])
async def test_relay_survives_random_frames(relay: RelayServer, authenticated: bool) -> None:
    await _relay_fuzz(relay, SHORT_EXAMPLES, authenticated)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("authenticated", [False, True], ids=["unauthenticated", "authenticated"])
async def test_relay_survives_random_frames_long(relay: RelayServer, authenticated: bool) -> None:
    await _relay_fuzz(relay, LONG_EXAMPLES, authenticated)
