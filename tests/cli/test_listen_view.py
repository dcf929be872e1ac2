"""``listen``'s two faces: a rich Live view on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from p2ptransfer.cli.app import App
from p2ptransfer.cli.listen_view import ListenView
from p2ptransfer.cli.render import Names
from p2ptransfer.net import peer
from p2ptransfer.storage.home import Home
from p2ptransfer.storage.ledger import Ledger

from .conftest import Person
from .test_offline import _pending_transfer


def _row(alice: Person, bob: Person) -> object:
    tid = _pending_transfer(alice, bob.address, 4200, "rent [red]x[/red]")
    with Ledger.open(alice.home / "ledger.sqlite3") as ledger:
        return ledger.get_transfer(tid, "out")


def _app(home: Home, *, terminal: bool) -> tuple[App, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    app = App(
        home=home,
        relay_url="ws://127.0.0.1:1",
        out=Console(file=out, force_terminal=terminal, width=120, color_system=None),
        err=Console(file=err, force_terminal=terminal, width=120, color_system=None),
    )
    return app, out, err


def test_live_view_on_a_terminal(alice: Person, bob: Person) -> None:
    row = _row(alice, bob)
    app, out, err = _app(Home(alice.home), terminal=True)
    view = ListenView(app, Names([]))
    with view.running():
        view.on_event(peer.PeerEvent("connected", "ws://relay"))
        view.on_event(peer.PeerEvent("recorded", row=row))
    screen = out.getvalue()
    assert "relay: connected to ws://relay" in screen
    assert "Incoming transfers" in screen
    assert "42.00 EUR" in screen
    assert "rent [red]x[/red]" in screen  # shown literally, not as markup
    assert err.getvalue() == ""
    assert view.count == 1


def test_plain_lines_when_not_a_terminal(alice: Person, bob: Person) -> None:
    row = _row(alice, bob)
    app, out, err = _app(Home(alice.home), terminal=False)
    view = ListenView(app, Names([]))
    with view.running():
        view.on_event(peer.PeerEvent("connected", "ws://relay"))
        view.on_event(peer.PeerEvent("disconnected", "relay closed"))
        view.on_event(peer.PeerEvent("recorded", row=row))
    assert err.getvalue() == "connected to ws://relay\ndisconnected: relay closed\n"
    line = out.getvalue()
    assert line.startswith("out 42.00 EUR to p2pt1")
    assert "(rent [red]x[/red]) [pending]" in line
