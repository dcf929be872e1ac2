"""Abuse of the relay itself: handle floods, presence probing, metrics scraping, log injection.

Each test runs a real relay on 127.0.0.1 (port 0) and attacks it with real
websocket clients, then checks the relay's answer and that it kept nothing
the attacker should not have got.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from p2ptransfer.cli import cli
from p2ptransfer.errors import NotFound, RelayRefused, RelayUnreachable
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


# --- A. handle-claim flood ----------------------------------------------------------

QUOTA = (
    "you already hold 3 handles at this relay (the limit); "
    "release one with 'p2ptransfer unregister HANDLE'"
)


async def test_one_key_holds_at_most_three_handles_and_can_release_them(
    relay: RelayServer,
) -> None:
    async with (
        await RelayClient.connect(relay.url, ident(10)) as owner,
        await RelayClient.connect(relay.url, ident(11)) as other,
    ):
        for handle in ("h-one", "h-two", "h-three"):
            await owner.claim_handle(handle)
        with pytest.raises(RelayRefused) as info:
            await owner.claim_handle("h-four")
        assert str(info.value) == f"the relay refused to register h-four: {QUOTA}"
        with pytest.raises(RelayRefused) as info:
            await other.release_handle("h-one")
        assert str(info.value) == (
            "the relay refused to release h-one: "
            "h-one belongs to another key; only it can release it"
        )
        assert await other.lookup_handle("h-one") == ident(10).address  # still the owner's
        with pytest.raises(RelayRefused, match="nobody holds h-none at this relay"):
            await owner.release_handle("h-none")
        await owner.release_handle("h-one")
        with pytest.raises(NotFound):
            await other.lookup_handle("h-one")
        await owner.claim_handle("h-four")  # room again
    assert relay.directory.count() == 3


async def _flood(url: str, n: int, seconds: float) -> int:
    """One key claims fresh handles as fast as the relay answers; how many it got."""
    got = 0
    async with await RelayClient.connect(url, ident(n)) as client:
        loop = asyncio.get_running_loop()
        end, i = loop.time() + seconds, 0
        while loop.time() < end and i < 5_000:
            try:
                await client.claim_handle(f"flood-{n}-{i}")
                got += 1
            except RelayRefused:
                pass
            i += 1
    return got


async def test_a_claim_flood_gets_three_handles_per_key(relay: RelayServer) -> None:
    """Before: one key claimed 3,000 handles in 4 s, four keys 43,400 in 20 s."""
    assert await _flood(relay.url, 20, 0.5) == 3
    got = await asyncio.gather(*(_flood(relay.url, n, 0.5) for n in (21, 22, 23, 24)))
    assert all(n <= 3 for n in got), got  # the quota per key
    assert relay.directory.count() == 3 + sum(got) <= 15
    refused = relay.metrics.frames_refused
    assert refused["handle-quota"] > 0
    assert refused["rate-limited"] > 0  # all keys from one IP share the per-IP bucket


async def test_claim_and_release_cycling_is_rate_limited() -> None:
    config = RelayConfig(host="127.0.0.1", port=0, claim_burst=4, claim_rate=0.5)
    async with (
        RelayServer(config) as relay,
        await RelayClient.connect(relay.url, ident(30)) as client,
    ):
        await client.claim_handle("cycle")
        await client.release_handle("cycle")
        await client.claim_handle("cycle")
        await client.release_handle("cycle")
        with pytest.raises(RelayRefused) as info:
            await client.claim_handle("cycle")
        assert str(info.value) == (
            "the relay refused to register cycle: "
            "too many handle requests; wait a minute and try again"
        )
    async with (
        RelayServer(config) as relay,
        await RelayClient.connect(relay.url, ident(31)) as first,
    ):
        for i in range(4):
            with contextlib.suppress(RelayRefused):
                await first.claim_handle(f"c-{i}")
        await first.close()
        async with await RelayClient.connect(relay.url, ident(31)) as again:
            with pytest.raises(RelayRefused, match="too many handle requests"):
                await again.claim_handle("c-9")  # reconnecting does not refill the bucket


def test_register_and_unregister_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2PTRANSFER_KDF_LOG_N", "10")
    monkeypatch.setenv("P2PTRANSFER_PASSPHRASE", "correct horse battery staple")
    monkeypatch.setenv("NO_COLOR", "1")
    with relay_in_thread() as url:

        def run(home: str, *args: str) -> Result:
            result = CliRunner().invoke(
                cli, ["--home", str(tmp_path / home), "--relay", url, *args]
            )
            assert "Traceback" not in result.output
            return result

        assert run("a", "init", "--name", "a").exit_code == 0
        assert run("b", "init", "--name", "b").exit_code == 0
        for handle in ("a-1", "a-2", "a-3"):
            assert run("a", "register", handle).exit_code == 0
        full = run("a", "register", "a-4")
        assert (full.exit_code, full.stderr) == (
            10,
            f"error: the relay refused to register a-4: {QUOTA}\n",
        )
        theirs = run("b", "unregister", "a-1")
        assert (theirs.exit_code, theirs.stderr) == (
            10,
            "error: the relay refused to release a-1: "
            "a-1 belongs to another key; only it can release it\n",
        )
        done = run("a", "unregister", "a-1")
        assert (done.exit_code, done.stdout) == (0, f"released handle a-1 at {url}\n")
        assert run("a", "register", "a-4").exit_code == 0
        typo = run("a", "unregister", "A!")
        assert typo.exit_code == 3 and "is not a valid handle" in typo.stderr


@contextlib.contextmanager
def relay_in_thread() -> Iterator[str]:
    """A real relay on its own event loop in a thread (the CLI runs its own loop)."""
    loop = asyncio.new_event_loop()
    relay = RelayServer(RelayConfig(host="127.0.0.1", port=0))
    ready = threading.Event()
    stop: list[asyncio.Event] = []

    async def serve_until_stopped() -> None:
        stop.append(asyncio.Event())
        async with relay:
            ready.set()
            await stop[0].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve_until_stopped(),))
    thread.start()
    try:
        assert ready.wait(10)
        yield relay.url
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


# --- B. presence, enumeration, metrics ---------------------------------------------


async def test_lookups_are_rate_limited_per_connection(relay: RelayServer) -> None:
    """Before: 1,000 look-ups answered in 0.14 s."""
    answered = refused = 0
    async with await RelayClient.connect(relay.url, ident(40)) as prober:
        for i in range(100):
            try:
                await prober.lookup_handle(f"probe-{i}")
            except NotFound:
                answered += 1
            except RelayRefused as exc:
                assert str(exc) == (
                    f"the relay refused to look up probe-{i}: too many look-ups; slow down"
                )
                refused += 1
    assert answered <= 21 and answered + refused == 100  # the burst (20), maybe one refill


async def test_watches_are_rate_limited_per_connection(relay: RelayServer) -> None:
    async with (
        await RelayClient.connect(relay.url, ident(41)) as online,
        await RelayClient.connect(relay.url, ident(42)) as prober,
    ):
        assert online.address
        outcomes: list[str] = []
        for _ in range(40):
            try:
                await prober.wait_online(ident(41).address, 2)
                outcomes.append("online")
            except RelayRefused as exc:
                assert str(exc).endswith(": too many watch requests; slow down")
                outcomes.append("refused")
    assert 20 <= outcomes.count("online") <= 21
    assert outcomes.count("online") + outcomes.count("refused") == 40


async def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
    async with asyncio.timeout(5):
        raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


TOKEN = "s3cret-metrics-token-0123"


async def test_metrics_can_require_a_bearer_token() -> None:
    config = RelayConfig(host="127.0.0.1", port=0, metrics_token=TOKEN)
    async with RelayServer(config) as relay:
        assert await _get(relay.port, "/metrics") == (401, "unauthorized\n")
        assert (await _get(relay.port, "/metrics", "wrong-token-wrong-token"))[0] == 401
        status, body = await _get(relay.port, "/metrics", TOKEN)
        assert status == 200 and "p2pt_relay_connections " in body
        assert await _get(relay.port, "/healthz") == (200, "ok\n")


async def test_metrics_can_move_to_their_own_listener_or_be_off() -> None:
    config = RelayConfig(host="127.0.0.1", port=0, metrics_port=0, metrics_token=TOKEN)
    async with RelayServer(config) as relay:
        assert relay.metrics_port not in (0, relay.port)
        assert await _get(relay.port, "/metrics", TOKEN) == (404, "not found\n")
        assert (await _get(relay.metrics_port, "/metrics"))[0] == 401
        status, body = await _get(relay.metrics_port, "/metrics", TOKEN)
        assert status == 200 and "p2pt_relay_handles " in body
        assert (await _get(relay.metrics_port, "/other", TOKEN))[0] == 404
    async with RelayServer(RelayConfig(host="127.0.0.1", port=0, metrics=False)) as relay:
        assert await _get(relay.port, "/metrics") == (404, "not found\n")


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        RelayConfig(metrics_token="short")
