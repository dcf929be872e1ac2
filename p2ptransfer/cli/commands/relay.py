"""``relay`` (run the rendezvous relay) and ``demo`` (the self-contained tour)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from ...protocol.transfer import format_amount
from ...storage.ledger import Contact, TransferRow
from ..app import App, pass_app
from ..render import Names, balances_table, transfers_table

if TYPE_CHECKING:
    from ...net.peer import SendOutcome


class _ConsoleReport:
    """The tour, narrated on stdout with rich tables."""

    def __init__(self, app: App) -> None:
        self.app = app

    def step(self, text: str) -> None:
        self.app.out.print(text, markup=False)

    def sent(self, sender: str, recipient: str, outcome: SendOutcome) -> None:
        row = outcome.row
        amount = f"{format_amount(row.amount_minor, row.currency)} {row.currency}"
        line = Text(f"{sender} → {recipient}  {amount:>14}  ")
        if outcome.accepted:
            line.append("accepted", style="green")
        else:
            reason = outcome.receipt.receipt.reason
            line.append(f"rejected: {reason.describe()}", style="red")
        line.append(f"  ({row.memo})" if row.memo else "", style="dim")
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


@click.command()
@click.option(
    "--keep",
    "keep_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Create the two homes in this new directory and keep them (to inspect afterwards).",
)
@pass_app
def demo(app: App, keep_dir: Path | None) -> None:
    """Run a complete tour: a local relay, two throwaway people, real transfers.

    Nothing outside a temporary directory is touched, and it is removed at the end.
    """
    if keep_dir is not None:
        if keep_dir.exists():
            raise click.BadParameter(f"{keep_dir} already exists", param_hint="--keep")
        keep_dir.mkdir(mode=0o700, parents=True)
    from ...demo import run_demo

    app.run(run_demo(_ConsoleReport(app), keep_dir=keep_dir))


def register_commands(group: click.Group) -> None:
    # `relay` is the relay's own click command (the one rendezvous.py runs); the root
    # group loads it lazily, see main.LAZY_COMMANDS.
    group.add_command(demo)
