"""CliRunner tests of the online commands' failures that need no working relay."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .conftest import Invoke, Person, snapshot


@pytest.fixture
def dead_relay() -> str:
    """A ws:// URL on a local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def test_wrong_passphrase_writes_nothing(invoke: Invoke, alice: Person, bob: Person) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    before = snapshot(alice.home)
    run = invoke(*alice.args("send", "bob", "1", "EUR"), passphrase="not it")
    assert run.code == 4
    assert run.err.startswith("error: ")
    assert "passphrase" in run.err
    assert snapshot(alice.home) == before


@pytest.mark.parametrize(
    "command",
    [
        ("send", "bob", "1.00", "EUR", "--timeout", "2"),
        ("receive", "--timeout", "2"),
        ("listen",),
        ("register", "alice"),
        ("contacts", "add", "carol", "--lookup", "carol"),
    ],
    ids=["send", "receive", "listen", "register", "lookup"],
)
def test_relay_unreachable_writes_nothing(
    invoke: Invoke, alice: Person, bob: Person, dead_relay: str, command: tuple[str, ...]
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    before = snapshot(alice.home)
    run = invoke("--relay", dead_relay, *alice.args(*command))
    assert run.code == 10, run
    assert run.err.startswith("error: ")
    assert run.err.count("\n") == 1  # one sentence, no traceback
    assert snapshot(alice.home) == before


def test_relay_unreachable_verbose_gives_the_cause(
    invoke: Invoke, alice: Person, bob: Person, dead_relay: str
) -> None:
    run = invoke("-v", "--relay", dead_relay, *alice.args("send", bob.address, "1", "EUR"))
    assert run.code == 10
    lines = run.err.splitlines()
    assert lines[1] == "  (RelayUnreachable, exit code 10)"


def test_resend_with_relay_unreachable_keeps_pending(
    invoke: Invoke, alice: Person, bob: Person, dead_relay: str, tmp_path: Path
) -> None:
    from .test_offline import _pending_transfer

    tid = _pending_transfer(alice, bob.address, 500, "later")
    run = invoke("--relay", dead_relay, *alice.args("resend", tid.hex()[:6]))
    assert run.code == 10
    data = invoke(*alice.args("ledger", "--json")).json()
    assert [t["status"] for t in data["transfers"]] == ["pending"]
