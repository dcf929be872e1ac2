"""What ``listen`` shows while it runs; apart from the command, so rich loads only then."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click
from rich.console import Group
from rich.live import Live
from rich.text import Text

from ..storage.ledger import TransferRow
from .app import App, now_ms
from .render import (
    Names,
    inert,
    iso_utc,
    json_line,
    short_address,
    transfer_json,
    transfer_line,
    transfers_table,
)

if TYPE_CHECKING:
    from ..net.peer import PeerEvent

__all__ = ["EVENT_NAMES", "ListenView"]


_DIAGNOSTICS = frozenset(
    {
        "duplicate",
        "conflict",
        "session-failed",
        "mail-failed",  # a piece of mail could not be handled now; it stays at the relay
        "mail-unreadable",  # sealed to a prekey whose private half is gone: dropped
        "mail-refused",  # not a transfer its depositor may give us: dropped
        "receipt-unknown",  # a receipt for a transfer this ledger does not hold: reconcile
        "relay-lied",  # the relay served a prekey its address never signed (not used)
    }
)


EVENT_NAMES = {
    "recorded": "transfer",  # a transfer to you, recorded (completed or rejected)
    "completed": "receipt",  # a receipt by mail completed one of yours
    "quarantined": "stranger-refused",
}
"""``listen --json``'s name for a peer event, where it differs from the event's own kind."""

_ARRIVALS = frozenset({"recorded", "request"})  # what --bell rings for


class ListenView:
    """``listen``'s output: a rich Live view on a terminal, plain lines otherwise,
    or with ``json_lines`` one JSON object per event on stdout and nothing else there.

    While the Live view runs it owns the terminal: nothing else is written
    to it (what would have been a line on stderr is in the view), so no
    stale frame is left above it.
    """

    MAX_ROWS = 20
    STRANGERS_SHOWN = 3
    """Refused strangers' transfers shown one by one per :attr:`STRANGERS_WINDOW`; then counted."""
    STRANGERS_WINDOW = 60.0
    HINT = "   (Ctrl-C to stop)"

    def __init__(
        self, app: App, names: Names, *, json_lines: bool = False, bell: bool = False
    ) -> None:
        self.app = app
        self.names = names
        self.json_lines = json_lines
        self.bell = bell
        self.state = "connecting…"
        self.address: str | None = None
        self.rows: list[TransferRow] = []
        self.count = 0
        self.refused = 0  # strangers' transfers refused, in all
        self._window_start = -self.STRANGERS_WINDOW
        self._shown_in_window = 0
        self._hidden_in_window = 0
        self.live: Live | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self.json_lines or not self.app.out.is_terminal:
            yield
            return
        with Live(self._render(), console=self.app.out, refresh_per_second=4) as live:
            self.live = live
            try:
                yield
            finally:
                self.live = None

    def started(self, address: str) -> None:
        """Online as ``address``: a JSON event, a line on stderr, or the view's header."""
        self.address = address
        if self.json_lines:
            self._emit({"event": "listening", "address": address})
        if self.live is None:
            self.app.note(f"listening as {address} (Ctrl-C to stop)")
        else:
            self.live.update(self._render())

    def _render(self) -> Group:
        width = self.app.out.width
        style = "green" if self.state.startswith("connected") else "yellow"
        # The state quotes the relay's URL or its close reason: shown inert.
        status = Text.assemble(("relay: ", "bold"), inert(self.state, style=style))
        if status.cell_len + len(self.HINT) <= width:
            status.append(self.HINT)  # the hint goes first when the line is too long
        lines: list[Text] = list(status.wrap(self.app.out, width, overflow="fold"))
        if self.address is not None:
            lines.append(Text(f"listening as {short_address(self.address)}", style="dim"))
        table = transfers_table(
            self.rows[-self.MAX_ROWS :], self.names, title="Incoming transfers", width=width
        )
        return Group(*lines, table)

    def on_event(self, event: PeerEvent) -> None:
        if self.json_lines:
            self._emit_event(event)
        if event.kind == "connected":
            self.state = f"connected to {event.detail}"
            self._diagnostic(self.state)
        elif event.kind == "disconnected":
            self.state = f"disconnected: {event.detail}"
            self._diagnostic(self.state)
        elif event.kind == "recorded" and event.row is not None:
            self.count += 1
            self.rows.append(event.row)
            if self.live is None and not self.json_lines:
                self.app.say(transfer_line(event.row, self.names))
        elif event.kind == "quarantined":
            self._on_stranger(event.detail)
        elif event.kind == "completed" and event.row is not None:
            # One of ours, queued in a mailbox, completed by the receipt collected now.
            self._diagnostic(f"receipt by mail: {transfer_line(event.row, self.names)}")
        elif event.kind == "request":
            self._diagnostic(f"payment request from {event.detail} ('p2ptransfer requests')")
        elif event.kind in _DIAGNOSTICS:
            self._diagnostic(f"{event.kind}: {event.detail}")
        if self.bell and event.kind in _ARRIVALS:
            self._ring()
        if self.live is not None:
            self.live.update(self._render())

    def _emit_event(self, event: PeerEvent) -> None:
        record: dict[str, object] = {"event": EVENT_NAMES.get(event.kind, event.kind)}
        if event.detail:
            record["detail"] = event.detail
        if event.row is not None:
            record["transfer"] = transfer_json(event.row, self.names)
        self._emit(record)

    def _emit(self, record: dict[str, object]) -> None:
        """One JSON object on one line, flushed at once (click.echo flushes)."""
        click.echo(json_line({**record, "at": iso_utc(now_ms())}))

    def _ring(self) -> None:
        """The terminal bell: on stderr if it is a terminal, else on a terminal stdout."""
        if self.app.err.is_terminal:
            self.app.err.bell()
        elif self.app.out.is_terminal and not self.json_lines:
            self.app.out.bell()

    def _on_stranger(self, detail: str) -> None:
        """One line for the first few a minute, then a count: a flood never floods the screen."""
        self.refused += 1
        now = time.monotonic()
        if now - self._window_start >= self.STRANGERS_WINDOW:
            self.flush_strangers()
            self._window_start, self._shown_in_window = now, 0
        if self._shown_in_window < self.STRANGERS_SHOWN:
            self._shown_in_window += 1
            self._diagnostic(
                f"refused {detail}: not a contact ('p2ptransfer ledger strangers' lists them)"
            )
        else:
            self._hidden_in_window += 1

    def flush_strangers(self) -> None:
        """Say how many strangers' transfers were refused without a line of their own."""
        if self._hidden_in_window:
            self._diagnostic(
                f"{self._hidden_in_window} more transfers from unknown senders refused"
            )
            self._hidden_in_window = 0

    def summary(self) -> str:
        """The closing line of ``listen`` (with ``json_lines``, also a ``stopped`` event)."""
        self.flush_strangers()
        if self.json_lines:
            self._emit({"event": "stopped", "recorded": self.count, "refused": self.refused})
        text = f"stopped; {self.count} transfer(s) recorded"
        if self.refused:
            text += f", {self.refused} from unknown senders refused"
        return text

    def _diagnostic(self, text: str) -> None:
        if self.live is None and not self.json_lines:
            self.app.note(text)
