"""How the commands that send report what became of each transfer: one place for all of them.

``send``, ``resend`` and ``pay`` end the same way: each transfer completed,
rejected (with the recipient's signed reason) or queued in a mailbox, shown
as data on stdout, and a rejection turned into its exit code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import TransferRefused
from .app import App

if TYPE_CHECKING:
    from ..net.outgoing import SendOutcome
    from ..storage.ledger import TransferRow
    from .render import Names

__all__ = ["refusals", "refused", "sentence_case", "show_outcomes"]


def sentence_case(text: str) -> str:
    return text[:1].lower() + text[1:]


def refused(label: str, outcome: SendOutcome) -> TransferRefused:
    reason = outcome.receipt.receipt.reason
    return TransferRefused(
        reason.name.lower(),
        f"{label} rejected the transfer {outcome.row.id.hex()}: {sentence_case(reason.describe())}",
    )


def show_outcomes(
    app: App,
    outcomes: Sequence[SendOutcome | TransferRow],
    names: Names,
    output: str,
    *,
    single: bool = False,
) -> None:
    from ..net.peer import SendOutcome
    from .render import echo_json, transfer_json, transfer_line

    rows = [o.row if isinstance(o, SendOutcome) else o for o in outcomes]
    if output == "json":
        records = [transfer_json(row, names) for row in rows]
        echo_json(records[0] if single else {"transfers": records})
    else:
        for row in rows:
            app.say(transfer_line(row, names))
    if any(row.status == "queued" for row in rows):
        app.note(
            "queued: sealed in the recipient's mailbox at the relay. It completes when they "
            "collect it and you collect their receipt ('p2ptransfer sync', or any 'listen')."
        )


def refusals(outcomes: Sequence[SendOutcome | TransferRow]) -> list[SendOutcome]:
    from ..net.peer import SendOutcome

    return [o for o in outcomes if isinstance(o, SendOutcome) and not o.accepted]
