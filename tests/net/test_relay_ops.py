"""Operating the relay: health, metrics, 500 connections, TLS, logs, SIGTERM, the real process."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import resource
import signal
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p2ptransfer.errors import RelayUnreachable
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import Deliver, RelayClient

from .conftest import (
    StartRelay,
    closed_with,
    make_identity,
    raw_auth,
    raw_connect,
    recv_frame,
    spawn_relay,
)

ALICE, BOB = make_identity(21), make_identity(22)


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    async with asyncio.timeout(5):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        body = await reader.readexactly(int(headers["content-length"]))
    writer.close()
    return int(lines[0].split()[1]), headers, body.decode()


async def test_healthz(relay: RelayServer) -> None:
    status, headers, body = await http_get(relay.port, "/healthz")
    assert (status, body) == (200, "ok\n")
    assert "server" not in headers


async def test_metrics(relay: RelayServer) -> None:
    async with (
        await RelayClient.connect(relay.url, ALICE) as alice,
        await RelayClient.connect(relay.url, BOB) as bob,
    ):
        await alice.send(BOB.address, b"12345")
        await asyncio.wait_for(bob.recv(), 5)
        await alice.send(make_identity(23).address, b"nobody")
        await asyncio.wait_for(alice.recv(), 5)
        status, headers, text = await http_get(relay.port, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert samples["p2pt_relay_connections"] == "2"
    assert samples["p2pt_relay_authenticated_peers"] == "2"
    assert samples["p2pt_relay_addresses_online"] == "2"
    assert samples["p2pt_relay_frames_forwarded_total"] == "1"
    assert samples["p2pt_relay_bytes_forwarded_total"] == "5"
    assert samples['p2pt_relay_frames_refused_total{reason="offline"}'] == "1"
    assert samples["p2pt_relay_rate_limited_total"] == "0"
    assert "# TYPE p2pt_relay_frames_forwarded_total counter" in text


async def test_plain_http_elsewhere_is_not_a_websocket(relay: RelayServer) -> None:
    status, _, _ = await http_get(relay.port, "/")
    assert status == 426


async def test_500_concurrent_connections(start_relay: StartRelay) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    config = RelayConfig(port=0, connection_rate_per_ip=0.0, max_connections_per_ip=1000)
    async with start_relay(config) as relay:
        conns = []
        try:
            for batch in range(10):
                batch_conns = await asyncio.gather(
                    *(raw_connect(relay.url, ping_interval=None) for _ in range(50))
                )
                conns += batch_conns
                await asyncio.gather(
                    *(
                        raw_auth(ws, make_identity(1000 + 50 * batch + i), relay.url)
                        for i, ws in enumerate(batch_conns)
                    )
                )
            assert relay.metrics.gauges["p2pt_relay_connections"][1]() == 500
            assert relay.metrics.gauges["p2pt_relay_addresses_online"][1]() == 500
            status, _, body = await http_get(relay.port, "/healthz")
            assert (status, body) == (200, "ok\n")
            async with (
                await RelayClient.connect(relay.url, ALICE) as alice,
                await RelayClient.connect(relay.url, BOB) as bob,
            ):
                await alice.send(BOB.address, b"among 500")
                assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, b"among 500")
        finally:
            await asyncio.gather(*(ws.close() for ws in conns))


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_round_trip(tmp_path: Path, start_relay: StartRelay) -> None:
    cert, key = _self_signed(tmp_path)
    async with start_relay(RelayConfig(port=0, tls_cert=cert, tls_key=key)) as relay:
        assert relay.url.startswith("wss://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        async with (
            await RelayClient.connect(relay.url, ALICE, ssl=trust) as alice,
            await RelayClient.connect(
                relay.url.replace("127.0.0.1", "localhost"), BOB, ssl=trust
            ) as bob,
        ):
            await alice.send(BOB.address, b"over tls")
            assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, b"over tls")
        with pytest.raises(RelayUnreachable, match=r"TLS certificate not trusted \(self-signed"):
            await RelayClient.connect(relay.url, ALICE, open_timeout=5)  # not trusted


# --- the real process ---------------------------------------------------------------


async def test_sigterm_closes_peers_1001_and_exits_0() -> None:
    relay = spawn_relay("--log-format", "json")
    try:
        ws = await raw_connect(relay.url)
        await recv_frame(ws)
        async with (
            await RelayClient.connect(relay.url, ALICE) as alice,
            await RelayClient.connect(relay.url, BOB) as bob,
        ):
            await alice.send(BOB.address, b"SECRET-PAYLOAD-MARKER")
            assert await asyncio.wait_for(bob.recv(), 5) == Deliver(
                ALICE.address, b"SECRET-PAYLOAD-MARKER"
            )
            loop = asyncio.get_running_loop()
            start = loop.time()
            code = await asyncio.to_thread(relay.terminate, signal.SIGTERM)
            assert code == 0
            assert loop.time() - start < 5
            assert (await closed_with(ws))[0] == 1001
            assert alice.close_code == 1001
    finally:
        relay.terminate()
    events = [json.loads(line) for line in relay.stderr_lines]
    names = [e["event"] for e in events]
    assert names[0] == "listening"
    assert events[0]["msg"] == f"listening on {relay.url}"
    assert {"auth", "shutdown", "stopped"} <= set(names)
    assert all(e["level"] in ("debug", "info", "warning", "error") for e in events)
    assert not any("SECRET" in line for line in relay.stderr_lines)


def test_sigint_also_exits_0() -> None:
    relay = spawn_relay()
    assert relay.terminate(signal.SIGINT) == 0
    assert "stopped: relay stopped" in relay.stderr_lines[-1]


def test_rendezvous_prints_one_line_then_serves(relay_process: object) -> None:
    from .conftest import RelayProcess

    assert isinstance(relay_process, RelayProcess)
    assert relay_process.url.startswith("ws://127.0.0.1:")
    assert relay_process.proc.poll() is None


def test_bad_options_are_a_usage_error() -> None:
    import subprocess
    import sys

    from .conftest import ROOT

    done = subprocess.run(
        [sys.executable, str(ROOT / "rendezvous.py"), "--tls-cert", __file__],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--tls-cert and --tls-key go together" in done.stderr
