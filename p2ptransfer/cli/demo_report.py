"""``demo``'s narration: each step, transfer and ledger of the tour, on stdout with rich."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text

from ..protocol.amounts import format_amount
from ..storage.ledger import Contact, TransferRow
from .app import App
from .render import Names, balances_table, inert, transfers_table

if TYPE_CHECKING:
    from ..net.peer import SendOutcome

__all__ = ["ConsoleReport"]


class ConsoleReport:
    """The tour, narrated on stdout with rich tables."""

    def __init__(self, app: App) -> None:
        self.app = app

    def step(self, text: str) -> None:
        self.app.say(text)

    def sent(self, sender: str, recipient: str, outcome: SendOutcome) -> None:
        row = outcome.row
        amount = f"{format_amount(row.amount_minor, row.currency)} {row.currency}"
        line = Text(f"{sender} → {recipient}  {amount:>14}  ")
        if outcome.accepted:
            line.append("accepted", style="green")
        else:
            reason = outcome.receipt.receipt.reason
            line.append(f"rejected: {reason.describe()}", style="red")
        line.append(inert(f"  ({row.memo})" if row.memo else "", style="dim"))
        self.app.out.print(line)

    def ledger(
        self,
        owner: str,
        rows: Sequence[TransferRow],
        balances: dict[tuple[str, str], int],
        contacts: Sequence[Contact],
    ) -> None:
        names = Names(contacts)
        self.app.out.print()
        self.app.out.print(transfers_table(rows, names, title=f"{owner}'s ledger"))
        self.app.out.print(balances_table(balances, names))
