"""``ledger --csv``: a memo a spreadsheet could run as a formula is written as text."""

from __future__ import annotations

import csv
import io

import pytest

from p2ptransfer.cli.render import Names, csv_text
from p2ptransfer.storage.ledger import TransferRow, TransferStatus

from .conftest import Invoke, Person
from .test_offline import _pending_transfer


def _memo_cell(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    column = rows[0].index("memo")
    return rows[1][column]


@pytest.mark.parametrize(
    ("memo", "cell"),
    [
        ("=1+2", "'=1+2"),
        (" =HYPERLINK(\"http://x\")", "' =HYPERLINK(\"http://x\")"),
        ("\u3000=1+2", "'\u3000=1+2"),
        ("\uff1d1+2", "'\uff1d1+2"),
        ("\ufe661+2", "'\ufe661+2"),
        ("\uff0b1", "'\uff0b1"),
        ("\uff0d1", "'\uff0d1"),
        ("\uff20SUM(A1)", "'\uff20SUM(A1)"),
        ("  +1", "'  +1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("lunch = 12", "lunch = 12"),
        ("", ""),
    ],
    ids=["equals", "space-equals", "ideographic-space-equals", "fullwidth-equals",
         "small-equals", "fullwidth-plus", "fullwidth-minus", "fullwidth-at", "spaces-plus",
         "at", "inner-equals", "empty"],
)  # fmt: skip
def test_ledger_csv_guards_formulas(
    invoke: Invoke, alice: Person, bob: Person, memo: str, cell: str
) -> None:
    _pending_transfer(alice, bob.address, 300, memo)
    run = invoke(*alice.args("ledger", "--csv"))
    assert run.code == 0, run
    assert _memo_cell(run.out) == cell


def _row(memo: str) -> TransferRow:
    return TransferRow(
        id=bytes(16),
        direction="in",
        counterparty="p2pt1x",
        amount_minor=1,
        currency="EUR",
        memo=memo,
        status=TransferStatus.COMPLETED,
        reason=None,
        created_at=0,
        updated_at=0,
        signed_transfer=b"",
        signed_receipt=None,
        recorded_seq=1,
        updated_seq=1,
    )


@pytest.mark.parametrize("start", ["\t", "\r"], ids=["tab", "carriage-return"])
def test_cells_starting_with_tab_or_carriage_return_are_guarded(start: str) -> None:
    """Memos cannot hold them today; a row from an older ledger still exports safely."""
    assert _memo_cell(csv_text([_row(start + "x")], Names([]))) == "'" + start + "x"
