"""Option checks that refuse bad input before anything starts, and resend's racing answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from p2ptransfer.cli.app import App
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.storage.ledger import Ledger

from .conftest import PASSPHRASE, Invoke, Person, snapshot
from .test_offline import _pending_transfer

# --- float options: finite only -------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "infinity"])
@pytest.mark.parametrize(
    "command",
    [("send", "bob", "1", "EUR"), ("receive",), ("resend",)],
    ids=["send", "receive", "resend"],
)
def test_timeout_refuses_nan_and_infinity(
    invoke: Invoke, alice: Person, value: str, command: tuple[str, ...]
) -> None:
    before = snapshot(alice.home)
    run = invoke(*alice.args(command[0], "--timeout", value, *command[1:]), passphrase=None)
    assert run.code == 2, run
    assert f"Invalid value for '--timeout': {value!r} is not a finite number of seconds" in run.err
    assert snapshot(alice.home) == before


def test_timeout_range_still_applies(invoke: Invoke, alice: Person) -> None:
    run = invoke(*alice.args("receive", "--timeout", "0"), passphrase=None)
    assert run.code == 2
    assert "Invalid value for '--timeout': 0.0 is not in the range 0.1<=x<=86400." in run.err


# --- the relay URL: checked before any passphrase or coroutine ----------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:8765", "a relay URL starts with ws:// or wss://, not 'localhost:8765'"),
        ("ws://", "a relay URL needs a host and no user name: 'ws://'"),
        ("http://x", "a relay URL starts with ws:// or wss://, not 'http://x'"),
        ("ws://x:99999", "not a relay URL: 'ws://x:99999' (Port out of range 0-65535)"),
    ],
    ids=["no-scheme", "no-host", "http", "bad-port"],
)
@pytest.mark.parametrize(
    "command",
    [
        ("send", "bob", "1", "EUR"),
        ("receive",),
        ("listen",),
        ("resend",),
        ("contacts", "add", "carol", "--lookup", "carol"),
    ],
    ids=["send", "receive", "listen", "resend", "lookup"],
)
def test_bad_relay_url_is_a_usage_error_before_the_passphrase(
    invoke: Invoke, alice: Person, bob: Person, url: str, message: str, command: tuple[str, ...]
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    _pending_transfer(alice, bob.address, 700, "x")  # so resend has something to do
    before = snapshot(alice.home)
    # No passphrase anywhere: asking for one would fail with exit 4 instead.
    run = invoke("--relay", url, *alice.args(*command), passphrase=None)
    assert run.code == 2, run
    assert f"Invalid value for '--relay': {message}" in run.err
    assert "coroutine" not in run.err
    assert snapshot(alice.home) == before


def test_bad_relay_url_from_the_environment_names_the_variable(
    invoke: Invoke, alice: Person
) -> None:
    run = invoke(*alice.args("receive"), env={"P2PTRANSFER_RELAY": "http://x"})
    assert run.code == 2, run
    assert (
        "Invalid value for 'P2PTRANSFER_RELAY': a relay URL starts with ws:// or wss://" in run.err
    )


def test_offline_commands_do_not_care_about_the_relay_url(invoke: Invoke, alice: Person) -> None:
    run = invoke(*alice.args("ledger", "--json"), env={"P2PTRANSFER_RELAY": "nonsense"})
    assert run.code == 0, run


# --- resend that loses a race ------------------------------------------------------------


@pytest.fixture
def live_relay() -> Iterator[str]:
    """A real relay on 127.0.0.1 (OS-chosen port), running on its own loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = RelayServer(RelayConfig(port=0))
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield server.url
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _settle_while_asking(monkeypatch: pytest.MonkeyPatch, alice: Person, tid: bytes) -> None:
    """Another process abandons the transfer while this one reads the passphrase."""

    def read_passphrase(self: App, *, confirm: bool = False) -> str:
        with Ledger.open(alice.home / "ledger.sqlite3") as other:
            other.mark_failed(tid, 1_790_000_001_000)
        return PASSPHRASE

    monkeypatch.setattr(App, "read_passphrase", read_passphrase)


@pytest.mark.parametrize("output", ["text", "json"])
def test_racing_resend_of_one_id_says_it_is_settled(
    invoke: Invoke,
    alice: Person,
    bob: Person,
    live_relay: str,
    monkeypatch: pytest.MonkeyPatch,
    output: str,
) -> None:
    tid = _pending_transfer(alice, bob.address, 800, "race")
    _settle_while_asking(monkeypatch, alice, tid)
    extra = ("--json",) if output == "json" else ()
    run = invoke("--relay", live_relay, *alice.args("resend", tid.hex()[:8], *extra))
    assert run.code == 0, run
    assert run.err == f"nothing to resend: transfer {tid.hex()} is already failed\n"
    assert run.out == ('{\n  "transfers": []\n}\n' if output == "json" else "")


@pytest.mark.parametrize("output", ["text", "json"])
def test_racing_resend_of_all_says_nothing_is_pending(
    invoke: Invoke,
    alice: Person,
    bob: Person,
    live_relay: str,
    monkeypatch: pytest.MonkeyPatch,
    output: str,
) -> None:
    tid = _pending_transfer(alice, bob.address, 900, "race")
    _settle_while_asking(monkeypatch, alice, tid)
    extra = ("--json",) if output == "json" else ()
    run = invoke("--relay", live_relay, *alice.args("resend", *extra))
    assert run.code == 0, run
    assert run.err == "nothing to resend: no pending outgoing transfers\n"
    assert run.out == ('{\n  "transfers": []\n}\n' if output == "json" else "")


# --- the home's modes: checked by every command, not only init --------------------------


@pytest.mark.parametrize(
    ("target", "bad_mode", "fix"),
    [(".", 0o755, "700"), ("ledger.sqlite3", 0o644, "600"), ("profile.json", 0o664, "600")],
    ids=["home-directory", "ledger", "profile"],
)
@pytest.mark.parametrize(
    "command",
    [("ledger",), ("contacts", "list"), ("whoami",)],
    ids=["ledger", "contacts", "whoami"],
)
def test_every_command_refuses_a_home_others_can_reach(
    invoke: Invoke,
    alice: Person,
    target: str,
    bad_mode: int,
    fix: str,
    command: tuple[str, ...],
) -> None:
    path = alice.home / target if target != "." else alice.home
    path.chmod(bad_mode)
    try:
        run = invoke(*alice.args(*command), passphrase=None)
    finally:
        path.chmod(int(fix, 8))
    assert run.code == 9, run
    assert run.err == (
        f"error: {path} is accessible by other users (mode {bad_mode:04o}); "
        f"run 'chmod {fix} {path}'\n"
    )
