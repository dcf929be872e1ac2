"""``ledger`` (history and balances) and ``ledger verify`` (hash chain and signatures)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ..app import App, now_ms
from ..options import Seconds, output_option, uses_relay
from . import complete_contact, resolve_recipient

if TYPE_CHECKING:
    from ...net.reconcile import ReconcileReport
    from ...storage.ledger import TransferRow


STATUSES = ("completed", "pending", "queued", "rejected", "failed")
"""The statuses of a ledger row; ``--status abandoned`` is read as ``failed``."""

_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


@dataclass(frozen=True)
class Since:
    """``--since``: a duration back from now (``3d``) or a local date or time (``2026-12-01``).

    A date names local midnight, or UTC midnight with ``--utc``; so the
    moment is settled only when the command runs (:meth:`start_ms`).
    """

    back_ms: int | None = None
    moment: datetime | None = None

    def start_ms(self, now: int, *, utc: bool) -> int:
        if self.back_ms is not None:
            return now - self.back_ms
        assert self.moment is not None
        moment = self.moment
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC) if utc else moment.astimezone()
        return int(moment.timestamp() * 1000)


class SinceType(click.ParamType[Since, Any]):
    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Since):
            return value
        text = str(value).strip()
        match = _DURATION.fullmatch(text)
        if match is not None:
            return Since(back_ms=int(match.group(1)) * _UNIT_MS[match.group(2)])
        try:
            return Since(moment=datetime.fromisoformat(text))
        except ValueError:
            self.fail(
                f"{value!r} is neither a date (2026-12-01, 2026-12-01T18:00) nor a duration "
                "(90m, 12h, 3d, 2w)",
                param,
                ctx,
            )


class StatusType(click.Choice[str]):
    """A ledger status, ``abandoned`` meaning ``failed`` (what ``abandon`` makes)."""

    def __init__(self) -> None:
        super().__init__([*STATUSES, "abandoned"], case_sensitive=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        chosen = super().convert(value, param, ctx)
        return "failed" if chosen == "abandoned" else chosen


@click.group(invoke_without_command=True)
@click.option(
    "--contact",
    "contact",
    metavar="NAME",
    shell_complete=complete_contact,
    help="Only transfers with this contact.",
)
@click.option(
    "--since",
    type=SinceType(),
    metavar="WHEN",
    help="Only transfers made since a date or time (2026-12-01, local time) or for a "
    "duration back from now (12h, 3d, 2w).",
)
@click.option(
    "--status",
    "statuses",
    type=StatusType(),
    multiple=True,
    help="Only transfers with this status (repeatable; abandoned = failed).",
)
@click.option(
    "--search", metavar="TEXT", help="Only transfers whose memo contains TEXT (any case)."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Only the newest N transfers that match (still shown oldest first).",
)
@click.option("--utc", is_flag=True, help="Show and read times in UTC instead of local time.")
@output_option("json", "csv")
@click.pass_context
def ledger(
    ctx: click.Context,
    contact: str | None,
    since: Since | None,
    statuses: tuple[str, ...],
    search: str | None,
    limit: int | None,
    utc: bool,
    output: str,
) -> None:
    """Show the history of transfers and the balance with each counterparty.

    Transfers are listed oldest first; the filters combine (all must match).
    Balances count completed transfers: positive means they paid you more
    than you paid them; what is still pending is shown beside them. Into a
    pipe, the text is one tab-separated line per transfer. `--json` prints
    {"transfers": [...], "balances": [...]}; `--csv` prints the transfers.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..render import (
        Names,
        balance_fields,
        balances_json,
        balances_table,
        echo_csv,
        echo_json,
        pending_totals,
        transfer_fields,
        transfer_json,
        transfers_table,
    )

    app = ctx.ensure_object(App)
    with app.ledger() as book:
        address = resolve_recipient(book, contact)[0] if contact is not None else None
        everything = book.transfers(address)
        balances = book.balances(address)
        names = Names(book.contacts())
    pending = pending_totals(everything)
    rows = _filtered(everything, since, statuses, search, limit, utc=utc)
    if output == "json":
        echo_json(
            {
                "transfers": [transfer_json(row, names) for row in rows],
                "balances": balances_json(balances, names, pending),
            }
        )
    elif output == "csv":
        echo_csv(rows, names)
    elif not app.out.is_terminal:
        # Into a pipe: balances first, so `| tail` shows the newest transfers.
        for line in balance_fields(balances, names, pending):
            click.echo(line)
        for row in rows:
            click.echo("\t".join(transfer_fields(row, names, utc=utc)))
        if not rows:
            app.note(_nothing_shown(everything))
    else:
        if rows:
            width = app.out.width
            app.out.print(transfers_table(rows, names, width=width, utc=utc))
        else:
            app.note(_nothing_shown(everything))
        if balances or pending:
            app.out.print(balances_table(balances, names, pending))


def _filtered(
    rows: list[TransferRow],
    since: Since | None,
    statuses: tuple[str, ...],
    search: str | None,
    limit: int | None,
    *,
    utc: bool,
) -> list[TransferRow]:
    """The rows every given filter lets through, in ledger order; ``limit``: the newest N."""
    if since is not None:
        start = since.start_ms(now_ms(), utc=utc)
        rows = [row for row in rows if row.created_at >= start]
    if statuses:
        rows = [row for row in rows if row.status in statuses]
    if search:
        needle = search.casefold()
        rows = [row for row in rows if needle in row.memo.casefold()]
    if limit is not None:
        rows = rows[-limit:]
    return rows


def _nothing_shown(everything: list[TransferRow]) -> str:
    return "no transfers match" if everything else "no transfers yet"


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


@ledger.command("reconcile")
@click.argument("contact", shell_complete=complete_contact)
@click.option(
    "--timeout", type=Seconds(min=0.1, max=3600), default=30.0, show_default=True,
    help="Seconds to wait for the contact to answer.",
)  # fmt: skip
@output_option("json")
@click.pass_obj
@uses_relay
def reconcile(app: App, contact: str, timeout: float, output: str) -> None:
    """Compare your history with CONTACT and recover what your ledger lost.

    Both of you must be online: CONTACT runs 'p2ptransfer listen'. Every
    settled transfer one of you holds and the other lacks is handed over with
    both signatures and recorded by the other after checking them, so a
    ledger restored from an old copy gets back everything its counterparty
    still holds. Exits 0 when the two histories agree afterwards; exit 8 when
    the two of you hold contradicting signed receipts for a transfer (those
    are named: settle them together).
    """
    from ...errors import TransferConflict
    from ..render import Names, echo_json, transfer_json, transfer_line

    with app.ledger() as book:
        address, label = resolve_recipient(book, contact)
        if book.contact_for_address(address) is None:
            raise click.UsageError(f"{label} is not one of your contacts: reconcile with contacts")
        passphrase = app.read_passphrase()

        async def go() -> ReconcileReport:
            peer = await app.open_peer(book, passphrase)
            async with peer:
                return await peer.reconcile(address, timeout=timeout)

        with app.waiting(f"reconciling with {label}…"):
            report = app.run(go())
        names = Names(book.contacts())
    contradicting = [d for d in report.disagreements if d.contradicting]
    if output == "json":
        echo_json(
            {
                "recovered": [row.id.hex() for row in report.recovered],
                "disagreements": [
                    {
                        "id": d.transfer_id.hex(),
                        "contradicting": d.contradicting,
                        "mine": "accepted" if d.mine.accepted else "rejected",
                        "theirs": "accepted" if d.theirs.accepted else "rejected",
                    }
                    for d in report.disagreements
                ],
                "proofs_sent": report.proofs_sent,
                "recovered_rows": [transfer_json(row, names) for row in report.recovered],
            }
        )
    else:
        for row in report.recovered:
            app.say(f"recovered: {transfer_line(row, names)}")
        app.note(
            f"reconciled with {label}: recovered {len(report.recovered)} transfer(s), "
            f"sent {report.proofs_sent} they lacked"
        )
        if report.recovered:
            app.note(
                "if 'p2ptransfer ledger verify' reports a rollback, reconcile with each of your "
                "contacts, then run 'p2ptransfer ledger verify --reset-checkpoint'"
            )
        for row in report.pending:
            app.note(f"still pending (resend it): {transfer_line(row, names)}")
    if contradicting:
        listed = ", ".join(d.transfer_id.hex() for d in contradicting)
        raise TransferConflict(
            f"you and {label} hold contradicting signed receipts for {len(contradicting)} "
            f"transfer(s): {listed}; nothing was changed for them — compare them together"
        )
