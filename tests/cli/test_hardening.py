"""Option checks that refuse bad input before anything starts."""

from __future__ import annotations

import pytest

from .conftest import Invoke, Person, snapshot
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
