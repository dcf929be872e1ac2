"""Everyday rough edges a new user met: reading is harmless, near misses get suggestions."""

from __future__ import annotations

import socket

import pytest

from .conftest import Invoke, Person
from .test_offline import _pending_transfer


def test_contacts_limit_without_amount_reads_and_changes_nothing(
    invoke: Invoke, alice: Person, bob: Person
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    none = invoke(*alice.args("contacts", "limit", "bob", "EUR"))
    assert (none.code, none.out, none.err) == (0, "no limit on EUR from bob\n", "")
    done = invoke(*alice.args("contacts", "limit", "bob", "EUR", "50"))
    assert (done.code, done.err) == (0, "bob may send at most 50.00 EUR per transfer\n")
    for _ in range(2):  # reading twice: the limit is still there
        read = invoke(*alice.args("contacts", "limit", "bob", "eur"))
        assert (read.code, read.out) == (0, "bob may send at most 50.00 EUR per transfer\n")
    invoke(*alice.args("contacts", "limit", "bob", "JPY", "3000"))
    shown = invoke(*alice.args("contacts", "show", "bob", "--json"))
    assert shown.json()["limits"] == {"EUR": "50.00", "JPY": "3000"}
    text = invoke(*alice.args("contacts", "show", "bob"))
    assert "limits        50.00 EUR, 3000 JPY per transfer\n" in text.out
    both = invoke(*alice.args("contacts", "limit", "bob", "EUR", "5", "--clear"))
    assert both.code == 2 and "Error: give either AMOUNT or --clear (not both)" in both.err
    cleared = invoke(*alice.args("contacts", "limit", "bob", "EUR", "--clear"))
    assert (cleared.code, cleared.err) == (0, "no limit on EUR from bob\n")
    assert invoke(*alice.args("contacts", "show", "bob", "--json")).json()["limits"] == {
        "JPY": "3000"
    }
    invoke(*alice.args("contacts", "limit", "bob", "JPY", "--clear"))
    assert "limits        none\n" in invoke(*alice.args("contacts", "show", "bob")).out
    unknown = invoke(*alice.args("contacts", "limit", "carol", "EUR"))
    assert unknown.code == 9 and "no contact named 'carol'" in unknown.err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["sned", "bob", "1", "EUR"], "No such command 'sned'; did you mean 'send'?"),
        (["recieve"], "No such command 'recieve'; did you mean 'receive'?"),
        (["contact", "list"], "No such command 'contact'; did you mean 'contacts'?"),
        (["reqest"], "No such command 'reqest'; did you mean 'request' or 'requests'?"),
    ],
)
def test_a_mistyped_command_names_the_one_meant(invoke: Invoke, argv: list[str], hint: str) -> None:
    run = invoke(*argv)
    assert run.code == 2 and run.err.endswith(f"\nError: {hint}\n"), run


def test_an_unlike_command_gets_clicks_plain_answer(invoke: Invoke) -> None:
    run = invoke("xyzzy")
    assert run.code == 2 and run.err.endswith("\nError: No such command 'xyzzy'.\n"), run


def test_a_near_miss_contact_name_names_the_contact_meant(
    invoke: Invoke, alice: Person, bob: Person
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    capital = invoke(*alice.args("send", "Bob", "1", "EUR", "--yes"))
    assert (capital.code, capital.err) == (
        9,
        "error: no contact named 'Bob'; did you mean 'bob'?\n",
    )
    typo = invoke(*alice.args("send", "bbo", "1", "EUR", "--yes"))
    assert (typo.code, typo.err) == (9, "error: no contact named 'bbo'; did you mean 'bob'?\n")
    show = invoke(*alice.args("contacts", "show", "BOB"))
    assert (show.code, show.err) == (9, "error: no contact named 'BOB'; did you mean 'bob'?\n")
    far = invoke(*alice.args("send", "zed", "1", "EUR", "--yes"))
    assert far.err == (
        "error: no contact named 'zed'; give a contact name or an address (p2pt1…)\n"
    )


def _ask_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("p2ptransfer.cli.commands.transfers.stdin_is_tty", lambda: True)


def test_abandon_asks_with_the_amount_and_recipient(
    invoke: Invoke, alice: Person, bob: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    tid = _pending_transfer(alice, bob.address, 1250, "lunch")
    _ask_on_a_terminal(monkeypatch)
    kept = invoke(*alice.args("abandon", tid.hex()[:6]), input="n\n")
    question = f"mark 12.50 EUR to bob (id {tid.hex()[:8]}…) as failed? [y/N]: "
    assert (kept.code, kept.err) == (0, f"{question}n\ntransfer {tid.hex()} stays pending\n")
    done = invoke(*alice.args("abandon", tid.hex()[:6]), input="y\n")
    assert (done.code, done.err) == (0, f"{question}y\n")
    assert done.out == f"out 12.50 EUR to bob (lunch) [failed] id {tid.hex()}\n"
    again = invoke(*alice.args("abandon", tid.hex()[:6]))
    assert (again.code, again.out) == (0, "")
    assert again.err == f"transfer {tid.hex()} is already abandoned\n"


def test_abandon_all_asks_once_listing_them(
    invoke: Invoke, alice: Person, bob: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    none = invoke(*alice.args("abandon", "--all", "--yes"))
    assert (none.code, none.err) == (0, "nothing to abandon: no pending outgoing transfers\n")
    first = _pending_transfer(alice, bob.address, 300, "one")
    second = _pending_transfer(alice, bob.address, 450, "two")
    lines = [
        f"out 3.00 EUR to bob (one) [pending] id {first.hex()}",
        f"out 4.50 EUR to bob (two) [pending] id {second.hex()}",
    ]
    piped = invoke(*alice.args("abandon", "--all"))
    assert piped.code == 0
    assert piped.err.endswith("they stay pending; to abandon them, add --yes\n")
    _ask_on_a_terminal(monkeypatch)
    kept = invoke(*alice.args("abandon", "--all"), input="n\n", env={"COLUMNS": "200"})
    listing = "".join(f"  {line}\n" for line in lines)
    assert kept.err == f"{listing}mark these 2 transfers as failed? [y/N]: n\nthey stay pending\n"
    done = invoke(*alice.args("abandon", "--all", "--yes"), env={"COLUMNS": "200"})
    assert (done.code, done.err) == (0, "")
    assert done.out == "".join(f"{line}\n" for line in lines).replace("[pending]", "[failed]")
    assert invoke(*alice.args("pending", "--json")).json() == {"transfers": []}
    both = invoke(*alice.args("abandon", first.hex(), "--all"))
    assert both.code == 2 and "Error: give either ID or --all (not both)" in both.err


def test_a_busy_relay_port_is_one_line_in_our_style(
    invoke: Invoke, capsys: pytest.CaptureFixture[str]
) -> None:
    from p2ptransfer.cli.commands.relay import main as rendezvous_main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        expected = f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"
        run = invoke("relay", "--port", str(port), "--log-level", "error", passphrase=None)
        assert (run.code, run.out, run.err) == (10, "", expected)
        with pytest.raises(SystemExit) as exit_:  # the same command as rendezvous.py
            rendezvous_main(["--port", str(port), "--log-level", "error"])
        assert exit_.value.code == 10
        assert capsys.readouterr().err == expected
