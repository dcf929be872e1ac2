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
        echo_csv(rows, names)
    elif not rows:
        app.note("no transfers yet")
    else:
        app.out.print(transfers_table(rows, names))
        if balances:
            app.out.print(balances_table(balances, names))


@ledger.command("verify")
@click.option(
    "--reset-checkpoint",
    is_flag=True,
    help="Accept the history as it is now and sign a new checkpoint (after a restore you "
    "made and reconciled; asks for your passphrase).",
)
@click.pass_obj
def verify(app: App, reset_checkpoint: bool) -> None:
    """Re-check the hash chain, every signature, the owner and the signed checkpoint.

    Exits 0 when everything checks out; otherwise exit code 9 and a message
    naming the first bad journal entry. A ledger rolled back to an older copy,
    or whose newest entries were cut off, is named too: its signed checkpoint
    no longer matches.
    """
    owner = app.public_identity()
    if reset_checkpoint:
        passphrase = app.read_passphrase()
        identity = app.run(app.unlock(passphrase))
        with app.ledger() as book:
            book.unlock(identity)
            seq, digest = book.reset_checkpoint()
        app.note(f"signed a new checkpoint at entry {seq} (hash {digest.hex()})")
    with app.ledger() as book:
        count = book.verify(owner)
        seq, digest = book.head
    app.say(
        f"ledger OK: {count} journal {'entry' if count == 1 else 'entries'}, hash chain, "
        "signatures, owner and checkpoint verified"
    )
    if count:
        app.note(f"head: entry {seq}, hash {digest.hex()}")


@ledger.command("strangers")
@click.option("--clear", is_flag=True, help="Forget the refused transfers listed here.")
@output_option("json")
@click.pass_obj
def strangers(app: App, clear: bool, output: str) -> None:
    """List transfers refused because their sender is not one of your contacts.

    They were answered with a signed refusal and are not in your ledger; the
    newest 100 are kept here to show. To take money from someone new, add
    them as a contact and ask them to send again.
    """
    from ..render import echo_json, stranger_json, stranger_line

    with app.ledger() as book:
        kept = book.quarantined()
        if clear:
            book.clear_quarantine()
    if output == "json":
        echo_json({"strangers": [stranger_json(item) for item in kept]})
    elif not kept:
        app.note("no transfers from unknown senders")
    else:
        for item in kept:
            app.say(stranger_line(item))
    if clear and kept:
        app.note(f"forgot {len(kept)} refused transfer(s)")
