"""``pending`` (what still waits for a receipt) and ``sync`` (collect mail once)."""

from __future__ import annotations

import click

from ..app import App, now_ms, pass_app
from ..options import output_option


def _age(ms: int) -> str:
    """A short human age: 45 s, 12 min, 5 h, 3 d."""
    seconds = max(0, ms) // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@click.command()
@output_option("json")
@pass_app
def pending(app: App, output: str) -> None:
    """List outgoing transfers still waiting for a receipt (pending or queued), oldest first.

    `queued` ones are sealed in the recipient's relay mailbox and complete when
    their receipt is collected (`sync`, `listen`, `receive`); `pending` ones are
    retried by `resend`.
    """
    from ..render import Names, echo_json, transfer_json, transfer_line

    with app.ledger() as ledger:
        rows = ledger.waiting_outgoing()
        names = Names(ledger.contacts())
    now = now_ms()
    if output == "json":
        echo_json(
            {
                "transfers": [
                    {**transfer_json(row, names), "age_s": round((now - row.created_at) / 1000, 1)}
                    for row in rows
                ]
            }
        )
    elif not rows:
        app.note("nothing pending: every outgoing transfer has its receipt")
    else:
        for row in rows:
            app.say(f"{transfer_line(row, names)} ({_age(now - row.created_at)} old)")
