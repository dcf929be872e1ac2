"""A local attacker with the home directory, and secrets that must never leak.

Permissions on what ``init`` creates; a tampered ledger caught by ``ledger
verify`` (exit 9, naming the entry); a wrong passphrase that reveals
nothing; and no secret (seed, private key, passphrase, session keys) in any
log line, ``-v`` output or exception text, in hex, base64 or raw form.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from adv_support import Side, listening
from click.testing import CliRunner, Result

from p2ptransfer.cli import cli
from p2ptransfer.errors import WrongPassphrase
from p2ptransfer.net.peer import Peer
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.protocol import handshake
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.storage.home import Home
from p2ptransfer.storage.ledger import Ledger

pytestmark = pytest.mark.timeout(60)

PASSPHRASE = "tr0ub4dor & 3 purple staplers"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("P2PTRANSFER_PASSPHRASE", "P2PTRANSFER_HOME", "P2PTRANSFER_RELAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("P2PTRANSFER_KDF_LOG_N", "10")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield


def run(*args: str, passphrase: str | None = PASSPHRASE) -> Result:
    env = {"P2PTRANSFER_PASSPHRASE": passphrase} if passphrase is not None else {}
    return CliRunner().invoke(cli, list(args), env=env)


def init(home: Path, name: str) -> Result:
    result = run("--home", str(home), "init", "--name", name)
    assert result.exit_code == 0, result.output
    return result


def forms(secret: bytes) -> list[bytes]:
    """Every way a secret could show up in text."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        base64.b64encode(secret).rstrip(b"="),
        repr(secret).encode(),
    ]


def assert_no_secret(text: str | bytes, secrets_: dict[str, bytes]) -> None:
    blob = text.encode() if isinstance(text, str) else text
    for name, secret in secrets_.items():
        for form in forms(secret):
            assert form not in blob, f"{name} leaked ({form[:12]!r}...)"


# --- files on disk -------------------------------------------------------------------


def test_home_key_file_and_ledger_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init(home, "alice")
    h = Home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(h.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(h.ledger_path.stat().st_mode) == 0o600
    # Key material is encrypted at rest: the seed is nowhere in the home directory.
    seed = h.load_identity(PASSPHRASE).seed
    for path in home.rglob("*"):
        if path.is_file():
            assert_no_secret(path.read_bytes(), {"seed": seed})
            if path.name.endswith(("-wal", "-shm", "-journal")) or path == h.key_path:
                continue


def test_a_group_readable_key_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init(home, "alice")
    Home(home).key_path.chmod(0o640)
    result = run("--home", str(home), "whoami", "--json")
    assert result.exit_code != 0
    assert "chmod 600" in result.output


def test_wrong_passphrase_reveals_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init(home, "alice")
    h = Home(home)
    seed = h.load_identity(PASSPHRASE).seed
    for wrong in ("", "x", PASSPHRASE + " ", PASSPHRASE.upper()):
        with pytest.raises(WrongPassphrase) as info:
            h.load_identity(wrong)
        text = f"{info.value!s} {info.value!r} {info.value.__cause__!r}"
        assert_no_secret(text, {"seed": seed})
        assert PASSPHRASE not in text and (not wrong or wrong not in text)
    someone = Identity(bytes(range(32))).address
    result = run(
        "--home",
        str(home),
        "--relay",
        "ws://127.0.0.1:9",
        "-vv",
        "send",
        someone,
        "1",
        "EUR",
        passphrase="wrong one",
    )
    assert result.exit_code != 0
    assert "passphrase" in result.output.lower()
    assert "wrong one" not in result.output
    assert_no_secret(result.output, {"seed": seed})


# --- a tampered ledger ---------------------------------------------------------------


async def _fill(tmp_path: Path, alice_home: Path, bob_home: Path) -> None:
    alice = Home(alice_home).load_identity(PASSPHRASE)
    bob = Home(bob_home).load_identity(PASSPHRASE)
    a_ledger = Ledger.open(Home(alice_home).ledger_path)
    b_side = Side.__new__(Side)
    b_side.name, b_side.identity = "bob", bob
    b_side.path = Home(bob_home).ledger_path
    b_side.ledger = Ledger.open(b_side.path)
    b_side.ledger.add_contact("alice", alice.address, 1)
    a_ledger.add_contact("bob", bob.address, 1)
    config = RelayConfig(host="127.0.0.1", port=0, shutdown_timeout=1)
    async with RelayServer(config) as relay:  # noqa: SIM117 - the relay must be up first
        async with listening(b_side, relay.url), Peer(alice, a_ledger, relay.url) as peer:
            await peer.send_many(bob.address, [(1000, "EUR", "a"), (2000, "EUR", "b")], timeout=10)
    a_ledger.close()
    b_side.ledger.close()


@pytest.mark.parametrize("where", ["derived-row", "journal-entry"])
def test_tampered_amount_is_found_by_ledger_verify(tmp_path: Path, where: str) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    init(alice_home, "alice")
    init(bob_home, "bob")
    asyncio.run(_fill(tmp_path, alice_home, bob_home))
    assert run("--home", str(bob_home), "ledger", "verify").exit_code == 0
    db = sqlite3.connect(Home(bob_home).ledger_path)
    with db:
        if where == "derived-row":
            db.execute("UPDATE transfers SET amount_minor = 999000 WHERE memo = 'b'")
        else:
            # The attacker drops the append-only trigger and edits the signed bytes.
            db.execute("DROP TRIGGER journal_no_update")
            (seq, blob) = db.execute(
                "SELECT seq, signed_transfer FROM journal WHERE signed_transfer IS NOT NULL "
                "ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            data = bytearray(blob)
            amount_at = data.find((2000).to_bytes(8, "big"))
            assert amount_at > 0
            data[amount_at : amount_at + 8] = (999000).to_bytes(8, "big")
            db.execute("UPDATE journal SET signed_transfer = ? WHERE seq = ?", (bytes(data), seq))
    db.close()
    result = run("--home", str(bob_home), "ledger", "verify")
    assert result.exit_code == 9, result.output
    if where == "derived-row":
        (row,) = [r for r in Ledger.open(Home(bob_home).ledger_path).transfers() if r.memo == "b"]
        assert row.id.hex() in result.output and "999000" in result.output, result.output
    else:
        assert re.search(r"journal entry \d+ was altered", result.output), result.output


# --- secrets in logs, -v output and exceptions -------------------------------------------


def test_no_secret_in_debug_logs_verbose_output_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    init(alice_home, "alice")
    init(bob_home, "bob")
    secrets_: dict[str, bytes] = {"passphrase": PASSPHRASE.encode()}
    for name, home in (("alice", alice_home), ("bob", bob_home)):
        identity = Home(home).load_identity(PASSPHRASE)
        secrets_[f"{name} seed"] = identity.seed
    # Observe the session keys as they are derived (a spy: the result is returned unchanged).
    real = handshake.traffic_keys

    def spy(secret: bytes, th: bytes):  # type: ignore[no-untyped-def]
        keys = real(secret, th)
        for i, direction in enumerate(keys):
            secrets_[f"traffic key {len(secrets_)}.{i}"] = direction.key
            secrets_[f"traffic iv {len(secrets_)}.{i}"] = direction.iv
        secrets_[f"handshake secret {len(secrets_)}"] = secret
        return keys

    monkeypatch.setattr(handshake, "traffic_keys", spy)
    caplog.set_level(logging.DEBUG)
    asyncio.run(_fill(tmp_path, alice_home, bob_home))
    assert any(k.startswith("traffic key") for k in secrets_)
    outputs: list[str] = []
    for args in (
        ("whoami",),
        ("whoami", "--json"),
        ("ledger",),
        ("ledger", "--json"),
        ("ledger", "verify"),
        ("contacts", "list"),
        ("send", "nobody", "1", "EUR"),  # fails: no such contact
        ("send", "bob", "1", "EUR", "--timeout", "1"),  # fails: no relay there
    ):
        for home in (alice_home, bob_home):
            result = run("--home", str(home), "--relay", "ws://127.0.0.1:9", "-vv", *args)
            outputs.append(result.output)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                outputs.append(repr(result.exception) + str(result.exception))
    wrong = run("--home", str(alice_home), "-vv", "whoami", passphrase="not it")
    outputs.append(wrong.output)
    logs = "\n".join(r.getMessage() + repr(r.args) + str(r.exc_info) for r in caplog.records)
    assert caplog.records  # DEBUG logging was on and produced lines
    everything = "\n".join(outputs) + logs
    assert_no_secret(everything, secrets_)
    # The environment variable's value must not leak either.
    assert os.environ.get("P2PTRANSFER_PASSPHRASE") is None
