"""Relay fixtures: an in-process relay and a real ``python rendezvous.py`` subprocess.

Both listen on 127.0.0.1 with an OS-chosen port. The subprocess fixture reads
the one ``listening on ws://HOST:PORT`` line the relay prints to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.relay_wire import (
    Auth,
    AuthOk,
    Challenge,
    MailInfo,
    ServerFrame,
    decode_server_frame,
    make_auth,
)
from tests.peers import alice, bob  # noqa: F401  (fixtures, shared with tests/adversarial)

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


def make_identity(n: int) -> Identity:
    """A deterministic identity per ``n`` (no key files needed here)."""
    return Identity(bytes([n % 256]) * 31 + bytes([(n // 256) % 256]))


@pytest.fixture
def relay_config() -> RelayConfig:
    """The config the in-process ``relay`` fixture uses; override it in a test module."""
    return RelayConfig(host="127.0.0.1", port=0)


@pytest.fixture
async def relay(relay_config: RelayConfig) -> AsyncIterator[RelayServer]:
    server = RelayServer(relay_config)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def relay_url(relay: RelayServer) -> str:
    return relay.url


StartRelay = Callable[[RelayConfig], contextlib.AbstractAsyncContextManager[RelayServer]]


@pytest.fixture
def start_relay() -> Iterator[StartRelay]:
    """``async with start_relay(config) as server``: extra relays, closed at the end."""

    @contextlib.asynccontextmanager
    async def start(config: RelayConfig) -> AsyncIterator[RelayServer]:
        server = RelayServer(config)
        await server.start()
        try:
            yield server
        finally:
            await server.close()

    yield start


@dataclass
class RelayProcess:
    """A ``python rendezvous.py`` child process and what it printed."""

    proc: subprocess.Popen[str]
    url: str
    stderr_lines: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
            for thread in self._threads:
                thread.join(timeout=5)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        return code


def spawn_relay(*args: str) -> RelayProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PTRANSFER_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "rendezvous.py"), "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_lines: list[str] = []
    first_line: list[str] = []
    ready = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not first_line:
                first_line.append(line)
                ready.set()
        ready.set()

    def read_stderr() -> None:
        assert proc.stderr is not None
        stderr_lines.extend(proc.stderr)

    threads = [threading.Thread(target=t, daemon=True) for t in (read_stdout, read_stderr)]
    for thread in threads:
        thread.start()
    if not ready.wait(START_TIMEOUT) or not first_line:
        proc.kill()
        proc.wait(timeout=5)
        raise AssertionError(f"relay did not start: {''.join(stderr_lines)}")
    match = re.fullmatch(r"listening on (wss?://[^\s]+)\n", first_line[0])
    assert match, first_line
    return RelayProcess(proc, match.group(1), stderr_lines, threads)


@pytest.fixture
def relay_process() -> Iterator[RelayProcess]:
    """A real relay subprocess with default settings."""
    relay = spawn_relay()
    try:
        yield relay
    finally:
        relay.terminate()


# --- raw websocket helpers for relay tests ------------------------------------


async def raw_connect(url: str, **kwargs: Any) -> ClientConnection:
    """A plain websockets client (no RelayClient), for talking to the relay by hand."""
    kwargs.setdefault("compression", None)
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("max_size", None)
    return await connect(url, **kwargs)


async def recv_frame(ws: ClientConnection, timeout: float = 5.0) -> ServerFrame:
    async with asyncio.timeout(timeout):
        message = await ws.recv()
    assert isinstance(message, bytes)
    return decode_server_frame(message)


async def raw_auth(ws: ClientConnection, identity: Identity, url: str) -> Auth:
    """Answer the relay's challenge as ``identity`` (reading AuthOk and MailInfo); the Auth sent."""
    challenge = await recv_frame(ws)
    assert isinstance(challenge, Challenge)
    auth = make_auth(identity, url, challenge.challenge)
    await ws.send(auth.encode())
    ok = await recv_frame(ws)
    assert ok == AuthOk(identity.address)
    assert isinstance(await recv_frame(ws), MailInfo)  # always right after AuthOk
    return auth


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str]:
    """Wait (reading and discarding) until the relay closes ``ws``; its code and reason."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason or ""
