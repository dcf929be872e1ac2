"""``pending`` (what still waits for a receipt) and ``sync`` (collect mail once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..app import App, now_ms, pass_app
from ..options import Seconds, output_option, uses_relay
from . import complete_currency
from .transfers import policy_options

if TYPE_CHECKING:
    from ...net.mail import Collected


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


@click.command()
@click.option(
    "--timeout", type=Seconds(min=0.1, max=3600), default=30.0, show_default=True,
    help="Seconds to wait for the relay.",
)  # fmt: skip
@policy_options
@output_option("json")
@pass_app
@uses_relay
def sync(
    app: App, timeout: float, accept_unknown: bool | None, currencies: tuple[str, ...], output: str
) -> None:
    """Collect your mail at the relay once: transfers sent while you were away, receipts.

    Transfers are judged and recorded exactly as `listen` would (same
    acceptance flags) and answered with a receipt left in the sender's
    mailbox; receipts complete your queued transfers. Exits when done.
    """
    from ..render import Names, echo_json, transfer_json, transfer_line
    from .transfers import acceptance_policy

    with app.ledger() as ledger:
        policy = acceptance_policy(ledger, accept_unknown, currencies)
        passphrase = app.read_passphrase()

        async def go() -> Collected:
            peer = await app.open_peer(ledger, passphrase, policy=policy)
            async with peer:
                return await peer.sync(timeout)

        with app.waiting("collecting mail…"):
            collected = app.run(go())
        names = Names(ledger.contacts())
    if output == "json":
        echo_json(
            {
                "transfers": [transfer_json(row, names) for row in collected.transfers],
                "receipts": [transfer_json(row, names) for row in collected.receipts],
                "requests": [],
            }
        )
        return
    for row in [*collected.transfers, *collected.receipts]:
        app.say(transfer_line(row, names))
    app.note(
        f"collected {len(collected.transfers)} transfer(s) and {len(collected.receipts)} receipt(s)"
    )


@click.command()
@click.option(
    "--accept-unknown/--refuse-unknown",
    default=None,
    help="Accept (or refuse) transfers from people who are not your contacts.",
)
@click.option(
    "--currency", "currencies", multiple=True, metavar="CODE", shell_complete=complete_currency,
    help="Accept only these currencies (repeatable).",
)  # fmt: skip
@click.option("--any-currency", is_flag=True, help="Accept every currency again.")
@output_option("json")
@pass_app
def policy(
    app: App,
    accept_unknown: bool | None,
    currencies: tuple[str, ...],
    any_currency: bool,
    output: str,
) -> None:
    """Show or set what you accept: from strangers or not, which currencies.

    `sync`, `receive` and `listen` judge every incoming transfer by it (their
    own flags override it for one run); per-contact amount limits are set with
    `contacts limit`. With no option it only shows the policy.
    """
    from ...protocol.amounts import check_currency
    from ..render import echo_json

    if currencies and any_currency:
        raise click.UsageError("--currency and --any-currency contradict each other")
    codes = [check_currency(c) for c in currencies]
    with app.ledger() as ledger:
        stored_unknown, stored_currencies = ledger.acceptance()
        if accept_unknown is not None or codes or any_currency:
            stored_unknown = stored_unknown if accept_unknown is None else accept_unknown
            stored_currencies = (
                None if any_currency else frozenset(codes) if codes else stored_currencies
            )
            ledger.set_acceptance(stored_unknown, stored_currencies)
    shown = sorted(stored_currencies) if stored_currencies is not None else None
    if output == "json":
        echo_json({"accept_unknown": stored_unknown, "currencies": shown})
        return
    app.say(
        f"from strangers: {'accepted' if stored_unknown else 'refused (kept aside, not recorded)'}"
    )
    app.say(f"currencies: {', '.join(shown) if shown is not None else 'any'}")
