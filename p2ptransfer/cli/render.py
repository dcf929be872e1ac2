"""How the CLI shows things: rich tables for people, JSON and CSV for scripts.

JSON and CSV are written with plain ``click.echo``, never through rich, so
they carry no markup, colour or wrapping whatever the terminal. Their keys
and columns are a stable interface (docs/cli.md); add, never rename.
Text from other people (memos, contact names, notes, reasons) is never
interpreted: it goes into ``Text`` objects made by :func:`inert` (no markup, no
emoji codes, every control, bidi or separator character escaped by
:func:`~p2ptransfer.protocol.text.escape_for_terminal`), and lines are built
from :func:`~p2ptransfer.protocol.text.escape_for_terminal`-ed parts. JSON
output escapes the same characters as ``\\uXXXX`` (valid JSON, same value), so
``--json`` piped to a terminal is inert too.

This module loads rich and the library, so commands import it inside their
bodies, never at the top; the ``--json``/``--csv`` flags are in :mod:`.options`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..protocol.amounts import format_amount
from ..protocol.identity import PublicIdentity
from ..protocol.text import escape_for_terminal, is_unsafe_for_terminal
from ..storage.ledger import Contact, QuarantinedTransfer, TransferRow

__all__ = [
    "CSV_COLUMNS",
    "TRANSFER_FIELDS",
    "Names",
    "balances_json",
    "balances_table",
    "contact_json",
    "contacts_table",
    "csv_safe",
    "csv_text",
    "echo_csv",
    "echo_json",
    "format_time",
    "inert",
    "iso_time",
    "iso_utc",
    "json_text",
    "short_address",
    "stranger_json",
    "stranger_line",
    "transfer_json",
    "transfer_line",
    "transfers_table",
]

TRANSFER_FIELDS = (
    "id",
    "direction",
    "counterparty",
    "counterparty_name",
    "amount",
    "amount_minor",
    "currency",
    "memo",
    "status",
    "reason",
    "created_at",
    "updated_at",
    "request_id",
)

CSV_COLUMNS = (
    *(
        name
        for name in TRANSFER_FIELDS
        if name not in ("counterparty_name", "amount_minor", "request_id")
    ),
    # Added later: new columns go at the end, because scripts index them by position.
    "counterparty_name",
    "request_id",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# = + - @ and their fullwidth and small forms, which spreadsheet programs fold to ASCII.
_FORMULA_START = frozenset("=+-@\uff1d\ufe66\uff0b\ufe62\uff0d\ufe63\uff20\ufe6b")
_CONTROL_START = ("\t", "\r")

_STATUS_STYLE = {
    "completed": "green",
    "pending": "yellow",
    "queued": "cyan",
    "rejected": "red",
    "failed": "red",
}


def _json_escape(ch: str) -> str:
    data = ch.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{data[i]:02x}{data[i + 1]:02x}" for i in range(0, len(data), 2))


def json_text(value: object) -> str:
    """``value`` as indented JSON, with every character a terminal could act on escaped.

    ``ensure_ascii=False`` keeps ordinary non-ASCII text readable, but it would
    also leave DEL, C1 controls, bidi controls and U+2028/U+2029 raw (json
    escapes only C0). Outside strings JSON is ASCII, so replacing those
    characters by ``\\uXXXX`` escapes them inside strings and changes no value.
    """
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if text.isascii() and "\x7f" not in text:
        return text  # the common case, decided in C: json escaped every other control
    return "".join(
        _json_escape(ch) if ch != "\n" and is_unsafe_for_terminal(ch) else ch for ch in text
    )


def echo_json(value: object) -> None:
    click.echo(json_text(value))


def inert(text: str, style: str = "") -> Text:
    """Text for a table cell or line that came from elsewhere: escaped, no markup, no emoji."""
    return Text(escape_for_terminal(text), style=style)


def echo_csv(rows: Iterable[TransferRow], names: Names) -> None:
    """``ledger --csv``: :data:`CSV_COLUMNS` of :func:`transfer_json`, one line a transfer."""
    click.echo(csv_text(rows, names), nl=False)


def csv_text(rows: Iterable[TransferRow], names: Names) -> str:
    """A header line, then one line per transfer (RFC 4180: CRLF line ends, quoting).

    The same records as ``--json`` (:func:`transfer_json`), in the columns of
    :data:`CSV_COLUMNS`; a memo a spreadsheet could run as a formula is
    written as text (:func:`csv_safe`).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        record = transfer_json(row, names)
        record["memo"] = csv_safe(row.memo)
        writer.writerow(["" if record[c] is None else record[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def csv_safe(text: str) -> str:
    """``text``, or ``'`` + ``text`` if a spreadsheet could take the cell for a formula.

    OWASP's rule, with the fullwidth and small forms spreadsheet programs fold
    to ASCII: the first non-space character is ``= + - @``, or the cell
    starts with a tab or a carriage return.
    """
    first = text.lstrip()[:1]
    if first in _FORMULA_START or text.startswith(_CONTROL_START):
        return "'" + text
    return text


def iso_utc(ms: int) -> str:
    """Unix milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (exact: no float involved).

    A time beyond year 9999 (a peer may sign one) cannot be shown in ISO
    8601's four-digit years; it is written as the raw number of milliseconds.
    """
    try:
        moment = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return str(ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def iso_time(ms: int | None) -> str | None:
    """Unix milliseconds as ISO 8601 UTC with milliseconds, e.g. 2026-11-29T02:30:00.123Z."""
    return None if ms is None else iso_utc(ms)


def format_time(ms: int) -> str:
    """A compact UTC time for tables: 2026-11-29 02:30:00."""
    return iso_utc(ms)[:19].replace("T", " ")


def short_address(address: str) -> str:
    return f"{address[:12]}…{address[-6:]}"


class Names:
    """Contact names by address, for showing people instead of keys."""

    def __init__(self, contacts: Iterable[Contact]) -> None:
        self._by_address = {c.address: c.name for c in contacts}

    def get(self, address: str) -> str | None:
        return self._by_address.get(address)

    def show(self, address: str) -> str:
        return self._by_address.get(address) or short_address(address)


# --- transfers --------------------------------------------------------------------


def stranger_json(item: QuarantinedTransfer) -> dict[str, object]:
    """A refused stranger's transfer (not in the ledger: no status, no balance)."""
    return {
        "id": item.id.hex(),
        "sender": item.sender,
        "amount": item.amount,
        "currency": item.currency,
        "memo": item.memo,
        "created_at": iso_time(item.created_at),
        "received_at": iso_time(item.received_at),
        "times_seen": item.times_seen,
    }


def stranger_line(item: QuarantinedTransfer) -> str:
    memo = f" ({item.memo})" if item.memo else ""
    seen = f", seen {item.times_seen} times" if item.times_seen > 1 else ""
    return (
        f"{format_time(item.received_at)}  {item.amount} {item.currency} from {item.sender}"
        f"{memo} id {item.id.hex()}{seen}"
    )


def _reason_text(row: TransferRow) -> str | None:
    reason = row.reason
    if reason is None or reason == "":
        return None
    return str(reason)


def transfer_json(row: TransferRow, names: Names) -> dict[str, object]:
    return {
        "id": row.id.hex(),
        "direction": row.direction,
        "counterparty": row.counterparty,
        "counterparty_name": names.get(row.counterparty),
        "amount": format_amount(row.amount_minor, row.currency),
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "memo": row.memo,
        "status": str(row.status),
        "reason": _reason_text(row),
        "created_at": iso_time(row.created_at),
        "updated_at": iso_time(row.updated_at),
        "request_id": _request_id(row),
    }


def _request_id(row: TransferRow) -> str | None:
    """The payment request a transfer pays (hex), if it pays one."""
    return None if row.request_id is None else row.request_id.hex()


def transfer_line(row: TransferRow, names: Names) -> str:
    """One plain line for logs and non-terminal output (escaped: safe to print as it is)."""
    arrow = "from" if row.direction == "in" else "to"
    amount = format_amount(row.amount_minor, row.currency)
    memo = f" ({row.memo})" if row.memo else ""
    reason = _reason_text(row)
    status = f"{row.status}: {reason}" if reason and row.status != "completed" else row.status
    paying = _request_id(row)
    pays = f" pays request {paying}" if paying is not None else ""
    line = (
        f"{row.direction} {amount} {row.currency} {arrow} {names.show(row.counterparty)}"
        f"{memo} [{status}] id {row.id.hex()}{pays}"
    )
    return escape_for_terminal(line)


def transfers_table(rows: Sequence[TransferRow], names: Names, title: str = "Transfers") -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("id", no_wrap=True, style="dim")
    table.add_column("dir", no_wrap=True)
    table.add_column("counterparty", no_wrap=True)
    table.add_column("amount", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("memo")
    for row in rows:
        # Only completed transfers move money: others show their amount unsigned and dim.
        amount = inert(f"{format_amount(row.amount_minor, row.currency)} {row.currency}")
        if row.status != "completed":
            amount.stylize("dim")
        elif row.direction == "in":
            amount = Text("+") + amount
        else:
            amount = Text("-") + amount
        status = inert(str(row.status), style=_STATUS_STYLE.get(row.status, ""))
        reason = _reason_text(row)
        if reason and row.status != "completed":
            status.append(escape_for_terminal(f" ({reason})"), style="dim")
        table.add_row(
            format_time(row.created_at),
            row.id.hex()[:8],
            "in" if row.direction == "in" else "out",
            inert(names.show(row.counterparty)),
            amount,
            status,
            inert(row.memo),
        )
    return table


# --- balances ---------------------------------------------------------------------


def balances_json(balances: Mapping[tuple[str, str], int], names: Names) -> list[dict[str, object]]:
    return [
        {
            "counterparty": counterparty,
            "counterparty_name": names.get(counterparty),
            "currency": currency,
            "balance": format_amount(amount, currency),
            "balance_minor": amount,
        }
        for (counterparty, currency), amount in sorted(balances.items())
    ]


def balances_table(balances: Mapping[tuple[str, str], int], names: Names) -> Table:
    table = Table(
        title="Balances (+ they paid you more than you paid them)",
        title_justify="left",
        expand=False,
    )
    table.add_column("counterparty", no_wrap=True)
    table.add_column("balance", justify="right", no_wrap=True)
    for (counterparty, currency), amount in sorted(balances.items()):
        text = format_amount(amount, currency)
        style = "green" if amount > 0 else "red" if amount < 0 else ""
        table.add_row(
            inert(names.show(counterparty)),
            inert(f"{'+' if amount > 0 else ''}{text} {currency}", style=style),
        )
    return table


# --- contacts ---------------------------------------------------------------------


def contact_json(contact: Contact) -> dict[str, object]:
    return {
        "name": contact.name,
        "address": contact.address,
        "fingerprint": PublicIdentity.from_address(contact.address).fingerprint,
        "verified": contact.verified_at is not None,
        "verified_at": iso_time(contact.verified_at),
        "added_at": iso_time(contact.added_at),
        "note": contact.note,
    }


def contacts_table(contacts: Sequence[Contact]) -> Table:
    table = Table(title="Contacts", title_justify="left", expand=False)
    table.add_column("name", no_wrap=True)
    table.add_column("fingerprint", no_wrap=True)
    table.add_column("verified", no_wrap=True)
    table.add_column("address", no_wrap=True)
    for contact in contacts:
        verified = (
            Text("yes", style="green")
            if contact.verified_at is not None
            else Text("no", style="yellow")
        )
        table.add_row(
            inert(contact.name),
            PublicIdentity.from_address(contact.address).fingerprint,
            verified,
            short_address(contact.address),
        )
    return table


def print_table(console: Console, table: Table) -> None:
    console.print(table)
