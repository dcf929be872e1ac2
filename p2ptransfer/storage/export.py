"""History export as JSON and CSV: decimal amounts, ISO 8601 UTC times, nothing lossy.

Amounts are written as decimal text with exactly the currency's decimals
(``format_amount``), never as floats, so a spreadsheet or script reading them
gets the same number the ledger holds. Times are ISO 8601 in UTC with
milliseconds and a ``Z``. In CSV, a memo that a spreadsheet program could
run as a formula (CSV injection) is prefixed with ``'`` so it is shown as text:
one whose first non-space character is ``=``, ``+``, ``-`` or ``@`` or one of
their fullwidth or small forms (U+FF1D, U+FE66, U+FF0B, U+FE62, U+FF0D,
U+FE63, U+FF20, U+FE6B: spreadsheets fold them to ASCII), or one that starts
with a tab or carriage return (OWASP's rule). The JSON keeps memos verbatim.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..protocol.amounts import format_amount

if TYPE_CHECKING:
    from .records import TransferRow

__all__ = ["CSV_COLUMNS", "iso_utc", "to_csv", "to_json"]

CSV_COLUMNS = (
    "id",
    "direction",
    "counterparty",
    "amount",
    "currency",
    "memo",
    "status",
    "reason",
    "created_at",
    "updated_at",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# = + - @ and their fullwidth and small forms, which spreadsheet programs fold to ASCII.
_FORMULA_START = frozenset("=+-@\uff1d\ufe66\uff0b\ufe62\uff0d\ufe63\uff20\ufe6b")
_CONTROL_START = ("\t", "\r")


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


def _transfer_record(row: TransferRow) -> dict[str, Any]:
    return {
        "id": row.id.hex(),
        "direction": row.direction,
        "counterparty": row.counterparty,
        "amount": format_amount(row.amount_minor, row.currency),
        "currency": row.currency,
        "memo": row.memo,
        "status": str(row.status),
        "reason": row.reason,
        "created_at": iso_utc(row.created_at),
        "updated_at": iso_utc(row.updated_at),
    }


def to_json(rows: Iterable[TransferRow], balances: Mapping[tuple[str, str], int]) -> str:
    """``{"transfers": [...], "balances": [...]}``, two-space indented, newline-terminated."""
    document = {
        "transfers": [_transfer_record(row) for row in rows],
        "balances": [
            {
                "counterparty": counterparty,
                "currency": currency,
                "balance": format_amount(total, currency),
            }
            for (counterparty, currency), total in sorted(balances.items())
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _csv_safe(text: str) -> str:
    """``text``, or ``'`` + ``text`` if a spreadsheet could take the cell for a formula."""
    first = text.lstrip()[:1]
    if first in _FORMULA_START or text.startswith(_CONTROL_START):
        return "'" + text
    return text


def to_csv(rows: Iterable[TransferRow]) -> str:
    """A header line, then one line per transfer (RFC 4180: CRLF line ends, quoting)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        record = _transfer_record(row)
        record["memo"] = _csv_safe(record["memo"])
        record["reason"] = record["reason"] or ""
        writer.writerow([record[column] for column in CSV_COLUMNS])
    return buffer.getvalue()
