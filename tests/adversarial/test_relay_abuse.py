"""Abuse of the relay itself: handle floods, presence probing, metrics scraping, log injection.

Each test runs a real relay on 127.0.0.1 (port 0) and attacks it with real
websocket clients, then checks the relay's answer and that it kept nothing
the attacker should not have got.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from p2ptransfer.errors import RelayUnreachable
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay.logs import LOGGER_NAME, configure_logging
from p2ptransfer.net.relay_client import RelayClient
from p2ptransfer.protocol.identity import Identity, encode_address
from p2ptransfer.protocol.relay_wire import (
    Auth,
    AuthOk,
    Challenge,
    Refused,
    decode_client_frame,
)

pytestmark = pytest.mark.timeout(60)

UNSAFE = ("\x1b", "\x9b", "\r", "\n", "\u202e", "\u2028")


def ident(n: int) -> Identity:
    return Identity(bytes([n % 256]) * 31 + bytes([n // 256]))


@pytest.fixture
async def relay() -> AsyncIterator[RelayServer]:
    async with RelayServer(RelayConfig(host="127.0.0.1", port=0)) as server:
        yield server


# --- C. log injection ------------------------------------------------------------


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """The relay's text log, captured; the loggers' previous set-up restored afterwards."""
    saved = [
        (lg, lg.handlers[:], lg.level, lg.propagate)
        for lg in (logging.getLogger(LOGGER_NAME), logging.getLogger("websockets"))
    ]
    stream = io.StringIO()
    configure_logging("text", "debug", stream)
    try:
        yield stream
    finally:
        for lg, handlers, level, propagate in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate


FORGED = "\x1b[2K\x1b[1G2026-01-01T00:00:00Z info auth: authenticated conn=1 address=p2pt1forged"


async def test_an_unauthenticated_url_cannot_write_escape_sequences_into_the_text_log(
    relay: RelayServer, text_log: io.StringIO
) -> None:
    async with connect(relay.url, compression=None, open_timeout=5) as ws:
        challenge = Challenge.SCHEMA.decode(await ws.recv())  # type: ignore[arg-type]
        assert set(challenge) == {"challenge"}
        raw = Auth.SCHEMA.encode(
            {
                "public_key": ident(1).public.public_key,
                "signature": bytes(64),
                "relay_url": "ws://evil.example:1/" + FORGED,
            }
        )
        await ws.send(raw)
        await ws.wait_closed()
        assert ws.close_code == 1008
        assert "\x1b" not in (ws.close_reason or "")
    for _ in range(100):  # the relay logs the close just after sending it
        if "closed:" in text_log.getvalue():
            break
        await asyncio.sleep(0.01)
    log = text_log.getvalue()
    assert "\x1b" not in log
    events = [line.split(" ")[2] for line in log.splitlines()]
    assert events == ["open:", "close:", "closed:"]  # no forged "auth:" line
    assert "\\x1b[2K\\x1b[1G2026-01-01T00:00:00Z info auth:" in log  # shown, visibly


@pytest.mark.parametrize("char", UNSAFE)
def test_text_log_escapes_message_and_fields(text_log: io.StringIO, char: str) -> None:
    logging.getLogger(LOGGER_NAME).info(
        f"m{char}x", extra={"event": f"e{char}", "fields": {"k": f"v{char}", "q": f"a b{char}"}}
    )
    line = text_log.getvalue()
    escaped = f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    assert line.endswith(f' info e{escaped}: m{escaped}x k=v{escaped} q="a b{escaped}"\n'), line
    assert line.count("\n") == 1 and char not in line.rstrip("\n")


# --- C. a hostile relay's text reaches the user escaped or not at all ---------------


async def _hostile_relay(script: str) -> tuple[object, str]:
    """A fake relay that authenticates anybody, then misbehaves per ``script``."""

    async def handler(ws: ServerConnection) -> None:
        if script == "close-at-once":
            await ws.close(1008, "\x1b[2K\u202eyou are banned")
            return
        await ws.send(Challenge(bytes(32)).encode())
        auth = decode_client_frame(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(auth, Auth)
        await ws.send(AuthOk(encode_address(auth.public_key)).encode())
        await ws.recv()  # the Claim
        raw_refused = Refused.SCHEMA.encode(
            {"ref": 1, "request": 0x38, "reason": "x", "detail": "\x1b[2K\x1b[1Gregistered!"}
        )
        await ws.send(raw_refused)
        await asyncio.sleep(2)

    server = await serve(handler, "127.0.0.1", 0, compression=None)
    port = next(iter(server.sockets)).getsockname()[1]
    return server, f"ws://127.0.0.1:{port}"


async def test_a_relay_close_reason_is_escaped_in_the_error() -> None:
    server, url = await _hostile_relay("close-at-once")
    try:
        with pytest.raises(RelayUnreachable) as info:
            await RelayClient.connect(url, ident(2), open_timeout=5)
    finally:
        server.close()  # type: ignore[attr-defined]
    message = str(info.value)
    assert not any(c in message for c in UNSAFE)
    assert message.endswith("(code 1008: \\x1b[2K\\u202eyou are banned)")


async def test_a_relay_refusal_with_escape_sequences_is_a_protocol_error() -> None:
    server, url = await _hostile_relay("refuse-with-escapes")
    try:
        client = await RelayClient.connect(url, ident(3), open_timeout=5)
        with pytest.raises(RelayUnreachable) as info:
            await client.claim_handle("alice")
        await client.close()
    finally:
        server.close()  # type: ignore[attr-defined]
    message = str(info.value)
    assert "\x1b" not in message
    assert "broke the protocol" in message and "U+001B" in message
