"""The first hour of a new user: options where they put them, a ledger that fits, listen.

Each test drives the command line as a user would and asserts what they read.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from p2ptransfer.cli import cli
from p2ptransfer.cli.app import App
from p2ptransfer.cli.listen_view import ListenView
from p2ptransfer.cli.render import TRANSFER_FIELDS, Names
from p2ptransfer.net import peer
from p2ptransfer.storage.home import Home
from p2ptransfer.storage.ledger import Ledger

from .conftest import PASSPHRASE, Invoke, Person
from .terminal import child_env, interrupt, on_terminal, screen
from .test_offline import _pending_transfer

_SGR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def paris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is Paris (UTC+1 in winter, +2 in summer)."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- options where a user puts them ---------------------------------------------------


def test_global_options_work_after_the_command_and_win_there(
    invoke: Invoke, alice: Person, bob: Person, tmp_path: Path
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    after = invoke("contacts", "list", "--json", "--home", str(alice.home))
    assert [c["name"] for c in after.json()["contacts"]] == ["bob"]
    both = invoke("--home", str(bob.home), "contacts", "list", "--json", "--home", str(alice.home))
    assert [c["name"] for c in both.json()["contacts"]] == ["bob"]  # alice's: after wins

    bad = invoke("send", "bob", "1", "EUR", "--home", str(alice.home), "--relay", "localhost:1")
    assert bad.code == 2
    assert "Error: Invalid value for '--relay': a relay URL starts with ws:// or wss://" in bad.err

    secret = tmp_path / "passphrase.txt"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    tid = _pending_transfer(alice, bob.address, 700, "cinema")
    done = invoke(
        "abandon", tid.hex()[:8], "--yes", "--home", str(alice.home), "--passphrase-file",
        str(secret), passphrase=None,
    )  # fmt: skip
    assert (done.code, done.out) == (0, f"out 7.00 EUR to bob (cinema) [failed] id {tid.hex()}\n")
    verbose = invoke("ledger", "--contact", "zed", "--home", str(alice.home), "-v")
    assert verbose.code == 9 and "(NotFound, exit code 9)" in verbose.err


def test_the_unverified_warning_comes_only_with_a_send_that_goes_out(
    invoke: Invoke, alice: Person, bob: Person
) -> None:
    """A send that fails before signing stays one sentence (test_two_peers shows the warning)."""
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    run = invoke(*alice.args("send", "bob", "1", "EUR", "--yes", "--relay", "ws://127.0.0.1:1"))
    assert run.code == 10
    assert run.err.startswith("error: cannot reach the relay") and run.err.count("\n") == 1


# --- the ledger in a narrow terminal or a pipe ------------------------------------------


def _two_transfers(invoke: Invoke, alice: Person, bob: Person) -> tuple[bytes, bytes]:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    first = _pending_transfer(alice, bob.address, 1250, "lunch with the whole team downtown")
    second = _pending_transfer(alice, bob.address, 300, "Coffee")
    return first, second


def test_ledger_into_a_pipe_is_one_tab_separated_line_per_row(
    invoke: Invoke, alice: Person, bob: Person, paris: None
) -> None:
    first, second = _two_transfers(invoke, alice, bob)
    run = invoke(*alice.args("ledger"))
    assert run.code == 0
    assert run.out.splitlines() == [
        "balance\tbob\t0.00 EUR (pending -15.50)",
        f"2026-09-21 16:13:21 CEST\tout\tbob\t-12.50 EUR\tpending\t{first.hex()}\t"
        "lunch with the whole team downtown",
        f"2026-09-21 16:13:20 CEST\tout\tbob\t-3.00 EUR\tpending\t{second.hex()}\tCoffee",
    ]
    utc = invoke(*alice.args("ledger", "--utc"))
    assert utc.out.splitlines()[1].startswith("2026-09-21 14:13:21 UTC\tout\tbob\t-12.50 EUR")


def test_ledger_at_60_columns_keeps_time_counterparty_amount_status(
    invoke: Invoke, alice: Person, bob: Person, paris: None
) -> None:
    _two_transfers(invoke, alice, bob)
    run = invoke(*alice.args("ledger"), env={"FORCE_COLOR": "1", "COLUMNS": "60"})
    shown = _SGR.sub("", run.out)
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 60, shown
    header = next(line for line in lines if "counterparty" in line)
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == [
        "time (CEST)", "counterparty", "amount", "status",
    ]  # fmt: skip
    # The time folds at its space rather than lose a character; the amount is signed.
    assert re.search(r"│ 2026-09-21 +│ bob +│ -12\.50 EUR │ pending │\n│ 16:13:21 ", shown), shown
    assert "│ bob          │ 0.00 EUR (pending -15.50) │" in shown
    wide = _SGR.sub(
        "", invoke(*alice.args("ledger"), env={"FORCE_COLOR": "1", "COLUMNS": "132"}).out
    )
    assert "┃ time (CEST)         ┃ id       ┃ dir ┃ counterparty ┃" in wide
    assert "lunch with the whole team downtown" in wide


def test_ledger_filters_combine_in_text_json_and_csv(
    invoke: Invoke, alice: Person, bob: Person
) -> None:
    first, second = _two_transfers(invoke, alice, bob)
    invoke(*alice.args("abandon", second.hex()[:8], "--yes"))

    def ids(*args: str) -> list[str]:
        return [t["id"] for t in invoke(*alice.args("ledger", "--json", *args)).json()["transfers"]]

    assert ids("--status", "pending") == [first.hex()]
    assert ids("--status", "abandoned") == ids("--status", "failed") == [second.hex()]
    assert ids("--status", "pending", "--status", "failed") == [first.hex(), second.hex()]
    assert ids("--search", "COFFEE") == [second.hex()]
    assert ids("--search", "team", "--status", "failed") == []
    assert ids("--limit", "1") == [second.hex()]  # the newest one
    assert ids("--since", "2026-09-21", "--utc") == [first.hex(), second.hex()]
    assert ids("--since", "2026-09-22") == []
    assert ids("--since", "3650d") == [first.hex(), second.hex()]
    csv_lines = invoke(*alice.args("ledger", "--csv", "--search", "lunch")).out.splitlines()
    assert len(csv_lines) == 2 and csv_lines[1].startswith(first.hex())
    none = invoke(*alice.args("ledger", "--search", "rent"))
    assert (none.code, none.err) == (0, "no transfers match\n")
    bad = invoke(*alice.args("ledger", "--since", "yesterday"))
    assert bad.code == 2 and "'yesterday' is neither a date (2026-12-01" in bad.err
    assert invoke(*alice.args("ledger", "--status", "lost")).code == 2


# --- shell completion -------------------------------------------------------------------


def _complete(words: str) -> list[str]:
    """What bash completion offers for ``words`` (the last one is being typed)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {"_P2PTRANSFER_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = CliRunner().invoke(cli, [], env=env, prog_name="p2ptransfer")
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_completion_of_currencies_and_waiting_ids_needs_no_passphrase(
    invoke: Invoke, alice: Person, bob: Person
) -> None:
    first, second = _two_transfers(invoke, alice, bob)
    invoke(*alice.args("abandon", second.hex()[:8], "--yes"))
    home = str(alice.home)
    assert _complete(f"p2ptransfer --home {home} send bob 5 eu") == ["EUR"]
    assert _complete("p2ptransfer listen --currency US") == ["USD", "USN"]
    assert _complete(f"p2ptransfer abandon --home {home} ") == [first.hex()]
    assert _complete(f"p2ptransfer --home {home} resend {first.hex()[:3]}") == [first.hex()]


# --- listen ------------------------------------------------------------------------------


def _view(home: Home, *, terminal: bool, json_lines: bool = False, bell: bool = False) -> tuple[
    ListenView, io.StringIO, io.StringIO
]:  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    app = App(
        home=home,
        relay_url="ws://127.0.0.1:1",
        out=Console(file=out, force_terminal=terminal, width=60, color_system=None),
        err=Console(file=err, force_terminal=terminal, width=60, color_system=None),
    )
    return ListenView(app, Names([]), json_lines=json_lines, bell=bell), out, err


def test_listen_json_is_one_object_per_event_and_nothing_else(
    alice: Person, bob: Person, capsys: pytest.CaptureFixture[str]
) -> None:
    tid = _pending_transfer(alice, bob.address, 4200, "rent")
    with Ledger.open(alice.home / "ledger.sqlite3") as ledger:
        row = ledger.get_transfer(tid, "out")
    view, out, err = _view(Home(alice.home), terminal=False, json_lines=True)
    with view.running():
        view.started(alice.address)
        view.on_event(peer.PeerEvent("connected", "ws://relay"))
        view.on_event(peer.PeerEvent("recorded", row=row))
        view.on_event(peer.PeerEvent("quarantined", "2.00 EUR from p2pt1q..."))
        view.on_event(peer.PeerEvent("disconnected", "relay closed; retrying in 1.0 s"))
    view.summary()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == [
        "listening", "connected", "transfer", "stranger-refused", "disconnected", "stopped",
    ]  # fmt: skip
    assert tuple(events[2]["transfer"]) == TRANSFER_FIELDS
    assert events[2]["transfer"]["id"] == tid.hex()
    assert events[4]["detail"] == "relay closed; retrying in 1.0 s"
    assert (events[5]["recorded"], events[5]["refused"]) == (1, 1)
    assert out.getvalue() == ""
    assert err.getvalue().startswith("listening as ")  # stderr: for people


def test_listen_bell_rings_for_arrivals_only(alice: Person, bob: Person) -> None:
    tid = _pending_transfer(alice, bob.address, 100, "")
    with Ledger.open(alice.home / "ledger.sqlite3") as ledger:
        row = ledger.get_transfer(tid, "out")
    view, _, err = _view(Home(alice.home), terminal=True, bell=True)
    view.on_event(peer.PeerEvent("connected", "ws://relay"))
    assert "\a" not in err.getvalue()
    view.on_event(peer.PeerEvent("recorded", row=row))
    view.on_event(peer.PeerEvent("request", "bob 4f0c"))
    assert err.getvalue().count("\a") == 2


def test_listen_on_a_60_column_terminal_leaves_no_stale_frame(
    alice: Person, tmp_path: Path
) -> None:
    relay = subprocess.Popen(
        [sys.executable, "rendezvous.py", "--port", "0", "--log-level", "error"],
        cwd=Path(__file__).resolve().parents[2],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stdout is not None
        url = re.search(r"ws://[0-9.]+:\d+", relay.stdout.readline())
        assert url, "the relay did not start"
        env = child_env(P2PTRANSFER_PASSPHRASE=PASSPHRASE, P2PTRANSFER_RELAY=url.group(0))
        code, written = on_terminal(
            ["--home", str(alice.home), "listen"],
            env,
            columns=60,
            steps=[
                ("listening as", lambda _: (relay.terminate(), relay.wait(timeout=10))),
                ("retrying in", interrupt),
            ],
        )
    finally:
        relay.kill()
        relay.wait(timeout=10)
        assert relay.stdout is not None
        relay.stdout.close()
    shown = [line for line in screen(written, 60) if line]
    assert code == 0, written
    assert not any("connecting" in line for line in shown), shown
    assert shown[0].startswith("relay: disconnected: ")
    status = " ".join(shown[: shown.index(next(s for s in shown if s.startswith("listening")))])
    assert "retrying in" in status and "Ctrl-C" not in status  # the hint went first
    assert all(len(line) <= 60 for line in shown)
    assert shown[-1] == "stopped; 0 transfer(s) recorded"
