"""``ledger`` (history and balances) and ``ledger verify`` (hash chain and signatures)."""

from __future__ import annotations

import click

from ..app import App
from ..options import output_option
from . import complete_contact, resolve_recipient


@click.group(invoke_without_command=True)
@click.option(
    "--contact",
    "contact",
    metavar="NAME",
    shell_complete=complete_contact,
    help="Only transfers with this contact.",
)
@output_option("json", "csv")
@click.pass_context
def ledger(ctx: click.Context, contact: str | None, output: str) -> None:
    """Show the history of transfers and the balance with each counterparty.

    Balances count completed transfers only: positive means they paid you
    more than you paid them. `--json` prints {"transfers": [...], "balances":
    [...]}; `--csv` prints the transfers.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..render import (
        Names,
        balances_json,
        balances_table,
        echo_csv,
        echo_json,
        transfer_json,
        transfers_table,
    )

    app = ctx.ensure_object(App)
    with app.ledger() as book:
        address = resolve_recipient(book, contact)[0] if contact is not None else None
        rows = book.transfers(address)
        balances = book.balances(address)
        names = Names(book.contacts())
    if output == "json":
        echo_json(
            {
                "transfers": [transfer_json(row, names) for row in rows],
                "balances": balances_json(balances, names),
            }
        )
    elif output == "csv":
        echo_csv(rows)
    elif not rows:
        app.note("no transfers yet")
    else:
        app.out.print(transfers_table(rows, names))
        if balances:
            app.out.print(balances_table(balances, names))


@ledger.command("verify")
@click.pass_obj
def verify(app: App) -> None:
    """Re-check the hash chain, every signature and the derived balances.

    Exits 0 when everything checks out; otherwise exit code 9 and a message
    naming the first bad journal entry.
    """
    with app.ledger() as book:
        count = book.verify()
        seq, digest = book.head
    app.say(f"ledger OK: {count} journal entries, hash chain and signatures verified")
    if count:
        app.note(f"head: entry {seq}, hash {digest.hex()}")
