"""What ``listen`` shows while it runs; apart from the command, so rich loads only then."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..protocol.amounts import format_amount
from ..storage.ledger import TransferRow
from .app import App
from .render import Names, format_time, inert, transfer_line

if TYPE_CHECKING:
    from ..net.peer import PeerEvent

__all__ = ["ListenView"]


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


class ListenView:
    """``listen``'s output: a rich Live view on a terminal, plain lines otherwise."""

    MAX_ROWS = 20
    STRANGERS_SHOWN = 3
    """Refused strangers' transfers shown one by one per :attr:`STRANGERS_WINDOW`; then counted."""
    STRANGERS_WINDOW = 60.0

    def __init__(self, app: App, names: Names) -> None:
        self.app = app
        self.names = names
        self.state = "connecting"
        self.rows: list[TransferRow] = []
        self.count = 0
        self.refused = 0  # strangers' transfers refused, in all
        self._window_start = -self.STRANGERS_WINDOW
        self._shown_in_window = 0
        self._hidden_in_window = 0
        self.live: Live | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if not self.app.out.is_terminal:
            yield
            return
        with Live(self._render(), console=self.app.out, refresh_per_second=4) as live:
            self.live = live
            try:
                yield
            finally:
                self.live = None

    def _render(self) -> Group:
        table = Table(title="Incoming transfers", title_justify="left", expand=False)
        for column in ("time (UTC)", "from", "amount", "status", "memo"):
            table.add_column(column, justify="right" if column == "amount" else "left")
        for row in self.rows[-self.MAX_ROWS :]:
            status = row.status if not row.reason else f"{row.status} ({row.reason})"
            table.add_row(
                format_time(row.created_at),
                inert(self.names.show(row.counterparty)),
                f"{format_amount(row.amount_minor, row.currency)} {row.currency}",
                inert(status, style="green" if row.status == "completed" else "red"),
                inert(row.memo),
            )
        style = "green" if self.state.startswith("connected") else "yellow"
        # The state quotes the relay's URL or its close reason: shown inert.
        header = Text.assemble(
            ("relay: ", "bold"), inert(self.state, style=style), "   (Ctrl-C to stop)"
        )
        return Group(header, table)

    def on_event(self, event: PeerEvent) -> None:
        if event.kind == "connected":
            self.state = f"connected to {event.detail}"
            self._diagnostic(self.state)
        elif event.kind == "disconnected":
            self.state = f"disconnected: {event.detail}"
            self._diagnostic(self.state)
        elif event.kind == "recorded" and event.row is not None:
            self.count += 1
            self.rows.append(event.row)
            if self.live is None:
                self.app.say(transfer_line(event.row, self.names))
        elif event.kind == "quarantined":
            self._on_stranger(event.detail)
        elif event.kind == "completed" and event.row is not None:
            # One of ours, queued in a mailbox, completed by the receipt collected now.
            self._diagnostic(f"receipt by mail: {transfer_line(event.row, self.names)}")
        elif event.kind in _DIAGNOSTICS:
            self._diagnostic(f"{event.kind}: {event.detail}")
        if self.live is not None:
            self.live.update(self._render())

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
        """The closing line of ``listen``."""
        self.flush_strangers()
        text = f"stopped; {self.count} transfer(s) recorded"
        if self.refused:
            text += f", {self.refused} from unknown senders refused"
        return text

    def _diagnostic(self, text: str) -> None:
        if self.live is None:
            self.app.note(text)
