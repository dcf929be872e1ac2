"""Everyday rough edges a new user met: reading is harmless, near misses get suggestions."""

from __future__ import annotations

import pytest

from .conftest import Invoke, Person


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
