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

This module loads the library, so commands import it inside their bodies,
never at the top; the ``--json``/``--csv`` flags are in :mod:`.options`. rich
is imported only by the functions that build rich objects (tables, ``Text``),
so a command whose output is plain lines (``send`` and ``receive`` piped or in
a script) starts without it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from ..protocol.amounts import format_amount
from ..protocol.identity import PublicIdentity
from ..protocol.text import escape_for_terminal, is_unsafe_for_terminal
from ..storage.ledger import Contact, QuarantinedTransfer, TransferRow

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

__all__ = [
    "CSV_COLUMNS",
    "DROP_ORDER",
    "ESSENTIAL_COLUMNS",
    "TRANSFER_FIELDS",
    "Names",
    "balance_fields",
    "balance_text",
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
    "json_line",
    "json_text",
    "local_time",
    "pending_totals",
    "short_address",
    "signed_amount",
    "stranger_json",
    "stranger_line",
    "transfer_fields",
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


def json_line(value: object) -> str:
    """``value`` as JSON on one line (``listen --json``), escaped as :func:`json_text` does."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if text.isascii() and "\x7f" not in text:
        return text
    return "".join(_json_escape(ch) if is_unsafe_for_terminal(ch) else ch for ch in text)


def echo_json(value: object) -> None:
    click.echo(json_text(value))


def inert(text: str, style: str = "") -> Text:
    """Text for a table cell or line that came from elsewhere: escaped, no markup, no emoji."""
    from rich.text import Text

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


ESSENTIAL_COLUMNS = ("time", "counterparty", "amount", "status")
"""Columns the ledger table always shows, however narrow the terminal."""

DROP_ORDER = ("dir", "id", "memo")
"""The other columns, in the order a narrow terminal drops them (docs/cli.md says so too)."""

_COLUMN_ORDER = ("time", "id", "dir", "counterparty", "amount", "status", "memo")
_SIGNED = frozenset({"completed", "pending", "queued"})  # money that moved or will move


def local_time(ms: int, *, utc: bool = False) -> tuple[str, str]:
    """``("2026-11-29 03:30:00", "CET")``: the moment in local time (or UTC) and its zone.

    A time no calendar can show (a peer may sign one beyond year 9999) is
    the raw number of milliseconds, as in :func:`iso_utc`.
    """
    try:
        moment = _EPOCH + timedelta(milliseconds=ms)
        if not utc:
            moment = moment.astimezone()
    except (OverflowError, ValueError, OSError):
        return str(ms), "UTC" if utc else ""
    zone = "UTC" if utc else (moment.tzname() or moment.strftime("%z"))
    return moment.strftime("%Y-%m-%d %H:%M:%S"), zone


def signed_amount(row: TransferRow) -> str:
    """``+12.50 EUR`` in, ``-12.50 EUR`` out; unsigned when no money moved (rejected, failed).

    Pending and queued transfers are signed like completed ones: the status
    says whether it has happened yet.
    """
    text = f"{format_amount(row.amount_minor, row.currency)} {row.currency}"
    if row.status not in _SIGNED:
        return text
    return ("+" if row.direction == "in" else "-") + text


def _status_text(row: TransferRow) -> str:
    reason = _reason_text(row)
    return f"{row.status} ({reason})" if reason and row.status != "completed" else str(row.status)


def transfer_fields(row: TransferRow, names: Names, *, utc: bool = False) -> list[str]:
    """One transfer as the plain, tab-separated line of ``ledger`` into a pipe.

    time and zone, direction, counterparty, signed amount, status, full id,
    memo: nothing shortened, each field escaped (no tab or line break survives).
    """
    when, zone = local_time(row.created_at, utc=utc)
    fields = [
        f"{when} {zone}".strip(),
        "in" if row.direction == "in" else "out",
        names.show(row.counterparty),
        signed_amount(row),
        _status_text(row),
        row.id.hex(),
        row.memo,
    ]
    return [escape_for_terminal(field) for field in fields]  # a tab becomes \x09


def transfers_table(
    rows: Sequence[TransferRow],
    names: Names,
    title: str = "Transfers",
    *,
    width: int | None = None,
    utc: bool = False,
) -> Table:
    """The ledger table for a terminal ``width`` columns wide (None: every column).

    :data:`ESSENTIAL_COLUMNS` always stay; they fold (a time onto two lines, a
    long status) rather than lose characters. The others are dropped in
    :data:`DROP_ORDER` until the table fits.
    """
    from rich.table import Table
    from rich.text import Text

    times = [local_time(row.created_at, utc=utc) for row in rows]
    zones = {zone for _, zone in times}
    one_zone = len(zones) == 1
    header = f"time ({next(iter(zones))})" if one_zone and next(iter(zones)) else "time"
    cells: dict[str, list[Text]] = {
        "time": [Text(when if one_zone else f"{when} {zone}") for when, zone in times],
        "id": [Text(row.id.hex()[:8], style="dim") for row in rows],
        "dir": [Text("in" if row.direction == "in" else "out") for row in rows],
        "counterparty": [inert(names.show(row.counterparty)) for row in rows],
        "amount": [
            inert(signed_amount(row), style="" if row.status == "completed" else "dim")
            for row in rows
        ],
        "status": [_status_cell(row) for row in rows],
        "memo": [inert(row.memo) for row in rows],
    }
    headers = {name: header if name == "time" else name for name in _COLUMN_ORDER}
    least = {name: _least_width(name, headers[name], cells[name]) for name in _COLUMN_ORDER}
    shown = list(_COLUMN_ORDER)
    for dropped in (None, *DROP_ORDER):
        if dropped is not None:
            shown.remove(dropped)
        # A heavy box: one border before each column and one at the end, one space each side.
        if width is None or 1 + sum(least[name] + 3 for name in shown) <= width:
            break
    table = Table(title=title, title_justify="left", expand=False)
    for name in shown:
        table.add_column(
            headers[name],
            justify="right" if name == "amount" else "left",
            # An amount or an id is never broken; the rest folds, and nothing is cut.
            no_wrap=name in _UNBROKEN,
            overflow="fold",
            min_width=least[name],
        )
    for i in range(len(rows)):
        table.add_row(*(cells[name][i] for name in shown))
    return table


_UNBROKEN = frozenset({"amount", "id", "dir"})
_MEMO_LEAST = 10  # a memo narrower than this is better left to `ledger --json`
_NAME_LEAST = 20


def _least_width(name: str, header: str, cells: list[Text]) -> int:
    """How narrow column ``name`` may get: whole amounts and ids, whole words elsewhere."""
    from rich.cells import cell_len

    longest = max((cell.cell_len for cell in cells), default=0)
    if name in _UNBROKEN:
        return max(cell_len(header), longest)
    words = max((cell_len(word) for cell in cells for word in cell.plain.split()), default=0)
    if name == "memo":
        return max(4, min(longest, _MEMO_LEAST))
    if name == "counterparty":
        return max(cell_len(header), min(longest, _NAME_LEAST))
    return max(*(cell_len(word) for word in header.split()), words)


def _status_cell(row: TransferRow) -> Text:
    status = inert(str(row.status), style=_STATUS_STYLE.get(row.status, ""))
    reason = _reason_text(row)
    if reason and row.status != "completed":
        status.append(escape_for_terminal(f" ({reason})"), style="dim")
    return status


# --- balances ---------------------------------------------------------------------


Balances = Mapping[tuple[str, str], int]


def pending_totals(rows: Iterable[TransferRow]) -> dict[tuple[str, str], int]:
    """(counterparty, currency) -> the signed sum of transfers still waiting (pending, queued)."""
    totals: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.status in ("pending", "queued"):
            key = (row.counterparty, row.currency)
            amount = row.amount_minor if row.direction == "in" else -row.amount_minor
            totals[key] = totals.get(key, 0) + amount
    return totals


def _signed(minor: int, currency: str) -> str:
    return f"{'+' if minor > 0 else ''}{format_amount(minor, currency)}"


def balances_json(
    balances: Balances, names: Names, pending: Balances | None = None
) -> list[dict[str, object]]:
    """Completed balances, and beside each what is still pending (``"pending": "-5.00"``)."""
    pending = pending or {}
    return [
        {
            "counterparty": counterparty,
            "counterparty_name": names.get(counterparty),
            "currency": currency,
            "balance": format_amount(balances.get((counterparty, currency), 0), currency),
            "balance_minor": balances.get((counterparty, currency), 0),
            "pending": format_amount(pending.get((counterparty, currency), 0), currency),
            "pending_minor": pending.get((counterparty, currency), 0),
        }
        for counterparty, currency in sorted({*balances, *pending})
    ]


def balance_text(balance: int, pending: int, currency: str) -> str:
    """``+12.00 EUR`` or ``+12.00 EUR (pending -5.00)``."""
    text = f"{_signed(balance, currency)} {currency}"
    return f"{text} (pending {_signed(pending, currency)})" if pending else text


def balance_fields(balances: Balances, names: Names, pending: Balances | None = None) -> list[str]:
    """``ledger`` into a pipe: one tab-separated ``balance`` line per counterparty and currency."""
    pending = pending or {}
    return [
        "\t".join(
            [
                "balance",
                escape_for_terminal(names.show(counterparty)),
                balance_text(
                    balances.get((counterparty, currency), 0),
                    pending.get((counterparty, currency), 0),
                    currency,
                ),
            ]
        )
        for counterparty, currency in sorted({*balances, *pending})
    ]


def balances_table(balances: Balances, names: Names, pending: Balances | None = None) -> Table:
    from rich.table import Table

    pending = pending or {}
    table = Table(
        title="Balances (+ they paid you more than you paid them)",
        title_justify="left",
        expand=False,
    )
    table.add_column("counterparty", overflow="fold")
    table.add_column("balance", justify="right", overflow="fold")
    for counterparty, currency in sorted({*balances, *pending}):
        amount = balances.get((counterparty, currency), 0)
        style = "green" if amount > 0 else "red" if amount < 0 else ""
        cell = inert(f"{_signed(amount, currency)} {currency}", style=style)
        waiting = pending.get((counterparty, currency), 0)
        if waiting:
            cell.append(f" (pending {_signed(waiting, currency)})", style="dim")
        table.add_row(inert(names.show(counterparty)), cell)
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
    from rich.table import Table
    from rich.text import Text

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
