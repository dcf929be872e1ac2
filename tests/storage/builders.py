"""Signed transfers and identities for the ledger tests (one definition for every module)."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
from pathlib import Path

from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.request import PaymentRequest, SignedRequest, sign_request
from p2ptransfer.protocol.transfer import SignedTransfer, Transfer, TransferId, sign_transfer

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z


def new_identity() -> Identity:
    return Identity(secrets.token_bytes(32))


def make_transfer(
    sender: Identity,
    recipient: Identity,
    amount: int = 1250,
    currency: str = "EUR",
    memo: str = "",
    created_at: int = T0,
    transfer_id: bytes | None = None,
    request_id: bytes | None = None,
) -> SignedTransfer:
    transfer = Transfer(
        id=TransferId(transfer_id or secrets.token_bytes(16)),
        sender=sender.address,
        recipient=recipient.address,
        amount=amount,
        currency=currency,
        memo=memo,
        created_at=created_at,
        request_id=request_id,
    )
    return sign_transfer(sender, transfer)


def make_request(
    payee: Identity,
    payer: Identity,
    amount: int = 1250,
    currency: str = "EUR",
    memo: str = "",
    created_at: int = T0,
    expires_in: int = 3_600_000,
    request_id: bytes | None = None,
) -> SignedRequest:
    """``payee`` asks ``payer`` for ``amount``, open for ``expires_in`` ms from ``created_at``."""
    request = PaymentRequest(
        id=request_id or secrets.token_bytes(16),
        payee=payee.address,
        payer=payer.address,
        amount=amount,
        currency=currency,
        memo=memo,
        created_at=created_at,
        expires_at=created_at + expires_in,
    )
    return sign_request(payee, request)


def snapshot(ledger_path: Path, to: Path) -> None:
    """A consistent copy of a (possibly open) ledger, as a backup tool would take it."""
    with sqlite3.connect(ledger_path) as conn:
        conn.execute(f"VACUUM INTO '{to}'")
    conn.close()


def restore(ledger_path: Path, copy: Path) -> None:
    """Put a closed ledger back to ``copy``; its checkpoint file stays as it was."""
    for leftover in ledger_path.parent.glob(ledger_path.name + "-*"):
        leftover.unlink()
    shutil.copy(copy, ledger_path)
    ledger_path.chmod(0o600)
