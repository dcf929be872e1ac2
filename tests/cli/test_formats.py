"""``ledger --json`` and ``--csv``: one record shape for a transfer, exact to the byte."""

from __future__ import annotations

import json
from pathlib import Path

from p2ptransfer.cli.render import Names, balances_json, csv_text, pending_totals, transfer_json
from p2ptransfer.protocol.receipt import RejectReason, accept, reject
from p2ptransfer.storage.ledger import Contact, Ledger
from tests.storage.builders import T0, make_transfer, new_identity


def test_json_and_csv_of_a_ledger_exact(tmp_path: Path) -> None:
    me, bob = new_identity(), new_identity()
    ledger = Ledger.open(tmp_path / "ledger.sqlite3", owner=me)
    paid = make_transfer(bob, me, amount=1250, memo='Caf\u00e9, "the" bill', created_at=T0)
    ledger.record_incoming(paid, accept(me, paid, T0 + 1), T0 + 1_234)
    sent = make_transfer(me, bob, amount=5, currency="JPY", memo="=1+2", created_at=T0 + 60_000)
    ledger.record_outgoing(sent, T0 + 60_001)
    refused = make_transfer(me, bob, amount=1, currency="BHD", created_at=T0 + 120_000)
    ledger.record_outgoing(refused, T0 + 120_000)
    ledger.complete_outgoing(reject(bob, refused, RejectReason.OVER_LIMIT, T0), T0 + 120_500)
    names = Names([Contact("bob", bob.address, bob.public.public_key, T0, None, "")])

    records = [transfer_json(row, names) for row in ledger.transfers()]
    assert records[0] == {
        "id": paid.id.hex(),
        "direction": "in",
        "counterparty": bob.address,
        "counterparty_name": "bob",
        "amount": "12.50",
        "amount_minor": 1250,
        "currency": "EUR",
        "memo": 'Caf\u00e9, "the" bill',
        "status": "completed",
        "reason": None,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:01.234Z",
        "request_id": None,
    }
    assert [(r["amount"], r["status"], r["reason"]) for r in records[1:]] == [
        ("5", "pending", None),
        ("0.001", "rejected", "over_limit"),
    ]
    assert balances_json(ledger.balances(), names, pending_totals(ledger.transfers())) == [
        {"counterparty": bob.address, "counterparty_name": "bob", "currency": "EUR",
         "balance": "12.50", "balance_minor": 1250, "pending": "0.00", "pending_minor": 0},
        {"counterparty": bob.address, "counterparty_name": "bob", "currency": "JPY",
         "balance": "0", "balance_minor": 0, "pending": "-5", "pending_minor": -5},
    ]  # fmt: skip
    json.dumps(records)  # plain JSON values only

    assert csv_text(ledger.transfers(), names) == (
        "id,direction,counterparty,amount,currency,memo,status,reason,created_at,updated_at,"
        "counterparty_name,request_id\r\n"
        f'{paid.id.hex()},in,{bob.address},12.50,EUR,"Caf\u00e9, ""the"" bill",completed,,'
        "2026-01-01T00:00:00.000Z,2026-01-01T00:00:01.234Z,bob,\r\n"
        f"{sent.id.hex()},out,{bob.address},5,JPY,'=1+2,pending,,"
        "2026-01-01T00:01:00.000Z,2026-01-01T00:01:00.001Z,bob,\r\n"
        f"{refused.id.hex()},out,{bob.address},0.001,BHD,,rejected,over_limit,"
        "2026-01-01T00:02:00.000Z,2026-01-01T00:02:00.500Z,bob,\r\n"
    )
    ledger.close()


def test_csv_of_no_transfers() -> None:
    assert csv_text([], Names([])) == (
        "id,direction,counterparty,amount,currency,memo,status,reason,created_at,updated_at,"
        "counterparty_name,request_id\r\n"
    )


def test_a_payment_names_its_request(tmp_path: Path) -> None:
    me, bob = new_identity(), new_identity()
    with Ledger.open(tmp_path / "ledger.sqlite3", owner=me) as ledger:
        paying = make_transfer(me, bob, amount=500, request_id=bytes(range(16)))
        ledger.record_outgoing(paying, T0)
        (row,) = ledger.transfers()
    names = Names([])
    assert row.request_id == bytes(range(16))
    assert transfer_json(row, names)["request_id"] == bytes(range(16)).hex()
    assert csv_text([row], names).splitlines()[1].endswith("," + bytes(range(16)).hex())
