"""Payment requests, both ways: what we asked for, what we were asked, and how each ended.

A request is policy-like state kept *outside* the journal: the money is the
journaled transfer that pays it, which carries the request id inside its
signed bytes. This table says what was asked (the signed request, kept
verbatim), and whether it is open, paid (by which transfer), declined or
cancelled (with the signed answer that closed it). "Expired" is never
stored: it is read from ``expires_at`` and the caller's clock
(:meth:`RequestRow.state_at`), so no process has to sweep anything.

* ``direction`` follows who we are in the request: ``out`` = we asked (we
  are the payee), ``in`` = we were asked (we are the payer). A request in
  which the ledger's owner is neither party is refused.
* A request is recorded once per id: the same signed bytes again change
  nothing, other bytes under a known id are a TransferConflict and the first
  is kept — as for transfers.
* **Paid at most once.** The payee marks its request paid inside the write
  transaction that records the paying transfer
  (:meth:`.transfers.TransferBook.record_incoming_batch` calls
  :meth:`RequestBook._settle_request` under the write lock), so two
  transfers paying one request — in one batch, or from two processes — can
  never both be accepted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..errors import InputError, LedgerIntegrityError, NotFound, TransferConflict
from ..protocol.amounts import format_amount
from ..protocol.identity import PublicIdentity
from ..protocol.receipt import RejectReason
from ..protocol.request import (
    RequestAnswerKind,
    RequestState,
    SignedRequest,
    SignedRequestAnswer,
    check_payment,
)
from ..protocol.transfer import SignedTransfer, check_timestamp, check_transfer_id
from .transfers import TransferBook

__all__ = ["REQUEST_COLUMNS", "RequestBook", "RequestRow", "check_requests"]

REQUEST_COLUMNS = (
    "id, direction, counterparty, amount_minor, currency, memo, created_at, expires_at, state, "
    "paid_by, signed_request, signed_answer, updated_at"
)
"""The ``requests`` table's columns, in :class:`RequestRow`'s field order."""

_STORED_STATES = (
    RequestState.OPEN,
    RequestState.PAID,
    RequestState.DECLINED,
    RequestState.CANCELLED,
)
_CLOSED_BY = {RequestAnswerKind.DECLINED: RequestState.DECLINED,
              RequestAnswerKind.CANCELLED: RequestState.CANCELLED}  # fmt: skip

# The inner transfer's type byte sits at a fixed offset of a signed transfer (its type byte,
# field 1's tag and u32 length, then the transfer): 0x24 is a v2 transfer, the only kind that
# can carry a request id. A cheap filter before decoding; the decode decides.
_V2_TRANSFER = "substr(signed_transfer, 7, 1) = x'24'"


@dataclass(frozen=True)
class RequestRow:
    """One payment request as this ledger keeps it.

    ``counterparty`` is the other party: the payer of an ``out`` request,
    the payee of an ``in`` one. ``created_at``/``expires_at`` are the
    payee's times from the signed request; ``updated_at`` is the ``at`` of
    the last change here. ``state`` is what is stored (never EXPIRED); ask
    :meth:`state_at` for what it is now.
    """

    id: bytes
    direction: str
    counterparty: str
    amount_minor: int
    currency: str
    memo: str
    created_at: int
    expires_at: int
    state: RequestState
    paid_by: bytes | None
    signed_request: bytes = field(repr=False)
    signed_answer: bytes | None = field(repr=False)
    updated_at: int

    def state_at(self, now_ms: int) -> RequestState:
        """The state at ``now_ms``: an open request at or past ``expires_at`` is EXPIRED.

        Strict, like the payee's check of a payment (``now_ms >= expires_at``).
        """
        if self.state is RequestState.OPEN and now_ms >= self.expires_at:
            return RequestState.EXPIRED
        return self.state

    @property
    def amount(self) -> str:
        """The amount as decimal text ("12.50")."""
        return format_amount(self.amount_minor, self.currency)

    @cached_property
    def signed(self) -> SignedRequest:
        """The decoded signed request."""
        return SignedRequest.decode(self.signed_request)

    @cached_property
    def answer(self) -> SignedRequestAnswer | None:
        """The decoded decline or cancellation (None unless declined or cancelled)."""
        if self.signed_answer is None:
            return None
        return SignedRequestAnswer.decode(self.signed_answer)


def _row_from_sql(values: Sequence[Any]) -> RequestRow:
    """A row as SQLite returned it; LedgerIntegrityError naming it if its state was edited."""
    (rid, direction, counterparty, amount, currency, memo, created, expires, state, paid_by,
     signed_request, signed_answer, updated) = values  # fmt: skip
    try:
        parsed = RequestState(state)
    except ValueError:
        parsed = None
    if parsed not in _STORED_STATES:
        label = bytes(rid).hex() if isinstance(rid, bytes) else repr(rid)
        raise LedgerIntegrityError(
            f"payment request {label} has an invalid state {state!r}: the ledger file was edited"
        )
    assert parsed is not None
    return RequestRow(
        rid, direction, counterparty, amount, currency, memo, created, expires, parsed,
        paid_by, signed_request, signed_answer, updated,
    )  # fmt: skip


def _check_direction(direction: str | None) -> None:
    if direction is not None and direction not in ("in", "out"):
        raise InputError("direction is 'in' or 'out'")


def _select(
    conn: sqlite3.Connection, request_id: bytes, direction: str | None
) -> RequestRow | None:
    found = conn.execute(
        f"SELECT {REQUEST_COLUMNS} FROM requests "  # noqa: S608
        "WHERE id = ? AND (? IS NULL OR direction = ?) ORDER BY direction LIMIT 1",
        (request_id, direction, direction),
    ).fetchone()
    return None if found is None else _row_from_sql(found)


def check_requests(conn: sqlite3.Connection) -> None:
    """Every paid request we asked for names an accepted incoming transfer that pays it.

    For :meth:`~.ledger.Ledger.verify`, after the transfers table was
    checked against the journal: a 'paid' request whose ``paid_by`` is no
    completed incoming transfer carrying its id was marked paid outside the
    ledger (or its transfer vanished). LedgerIntegrityError names the first.
    """
    rows = conn.execute(
        "SELECT r.id, r.paid_by, t.status, t.signed_transfer FROM requests AS r "
        "LEFT JOIN transfers AS t ON t.id = r.paid_by AND t.direction = 'in' "
        "WHERE r.direction = 'out' AND r.state = 'paid' ORDER BY r.created_at, r.id"
    ).fetchall()
    for request_id, paid_by, status, blob in rows:
        label = bytes(request_id).hex()
        by = bytes(paid_by).hex() if isinstance(paid_by, bytes) else repr(paid_by)
        if status is None:
            raise LedgerIntegrityError(
                f"payment request {label} is marked paid by transfer {by}, which is not an "
                "incoming transfer in the ledger"
            )
        if status != "completed":
            raise LedgerIntegrityError(
                f"payment request {label} is marked paid by transfer {by}, which is {status}, "
                "not completed"
            )
        carried = SignedTransfer.decode(blob).transfer.request_id
        if carried != request_id:
            raise LedgerIntegrityError(
                f"payment request {label} is marked paid by transfer {by}, which does not pay it"
            )


class RequestBook(TransferBook):
    """Payment requests both ways (a part of :class:`~.ledger.Ledger`)."""

    # --- recording ---

    def record_request(self, signed: SignedRequest, at: int) -> RequestRow:
        """Keep a signed request we made (``out``) or received (``in``), state open.

        The direction comes from the ledger's owner: InputError if the owner
        is neither payee nor payer ("not yours"), SignatureError if the payee
        did not sign it. The same bytes again return the stored row; other
        bytes under a known id are a TransferConflict and nothing changes.
        """
        if not isinstance(signed, SignedRequest):
            raise InputError("record_request needs a SignedRequest")
        check_timestamp(at)
        direction = self._direction_of(signed)
        signed.verify()
        request = signed.request
        blob = signed.encode()
        with self._transaction() as conn:
            stored = _select(conn, signed.id, direction)
            if stored is not None:
                if stored.signed_request == blob:
                    return stored
                raise TransferConflict(
                    f"payment request {signed.id.hex()} is already recorded with other "
                    "content; the first is kept"
                )
            counterparty = request.payer if direction == "out" else request.payee
            conn.execute(
                f"INSERT INTO requests ({REQUEST_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', NULL, ?, NULL, ?)",
                (signed.id, direction, counterparty, request.amount, request.currency,
                 request.memo, request.created_at, request.expires_at, blob, at),
            )  # fmt: skip
            row = _select(conn, signed.id, direction)
        assert row is not None
        return row

    def _direction_of(self, signed: SignedRequest) -> str:
        owner = self._owner_key
        request = signed.request
        if owner is None:
            raise InputError(
                "this ledger does not name its owner yet: open it with your key to record "
                "payment requests"
            )
        if request.payee_identity.public_key == owner:
            return "out"
        if request.payer_identity.public_key == owner:
            return "in"
        raise InputError(
            f"payment request {signed.id.hex()} is not yours: it asks "
            f"{request.payer} to pay {request.payee}, and this ledger belongs to "
            f"{PublicIdentity(owner).address}"
        )

    def answer_request(self, signed_answer: SignedRequestAnswer, at: int) -> RequestRow:
        """Close an open request with a decline (by the payer) or a cancellation (by the payee).

        The answer must verify against the stored signed request
        (SignatureError / ProtocolError otherwise, nothing changes). The same
        answer again, or any answer to a request already declined or
        cancelled, returns the stored row unchanged (the first answer is
        kept; its ``state`` says how it was closed). A paid request cannot be
        closed (InputError "already paid"); an unknown one is NotFound.
        """
        if not isinstance(signed_answer, SignedRequestAnswer):
            raise InputError("answer_request needs a SignedRequestAnswer")
        check_timestamp(at)
        request_id = signed_answer.request_id
        blob = signed_answer.encode()
        with self._transaction() as conn:
            stored = _select(conn, request_id, None)
            if stored is None:
                raise NotFound(f"no payment request {request_id.hex()} in the ledger")
            signed_answer.verify(stored.signed)
            if stored.signed_answer == blob or stored.state in (
                RequestState.DECLINED,
                RequestState.CANCELLED,
            ):
                return stored
            if stored.state is RequestState.PAID:
                by = stored.paid_by.hex() if stored.paid_by is not None else "?"
                raise InputError(
                    f"payment request {request_id.hex()} is already paid (by transfer {by}); "
                    f"it cannot be {_CLOSED_BY[signed_answer.kind].value}"
                )
            conn.execute(
                "UPDATE requests SET state = ?, signed_answer = ?, updated_at = ? "
                "WHERE id = ? AND direction = ?",
                (_CLOSED_BY[signed_answer.kind].value, blob, at, request_id, stored.direction),
            )
            row = _select(conn, request_id, stored.direction)
        assert row is not None
        return row

    # --- paying (payee side), inside record_incoming_batch's transaction ---

    def _settle_request(
        self, conn: sqlite3.Connection, signed: SignedTransfer, at: int
    ) -> RejectReason | None:
        """Judge ``signed`` as the payment of our request; mark it paid if it passes.

        Runs inside the write transaction that records the transfer, so the
        state read here cannot change before the COMMIT.
        """
        transfer = signed.transfer
        assert transfer.request_id is not None
        stored = _select(conn, transfer.request_id, "out")
        if stored is None:
            return RejectReason.REQUEST_MISMATCH
        reason = check_payment(stored.signed.request, stored.state, transfer, at)
        if reason is not None:
            return reason
        conn.execute(
            "UPDATE requests SET state = 'paid', paid_by = ?, updated_at = ? "
            "WHERE id = ? AND direction = 'out' AND state = 'open'",
            (signed.id, at, transfer.request_id),
        )
        return None

    def _recovered_payment(self, conn: sqlite3.Connection, signed: SignedTransfer, at: int) -> None:
        """Our signed acceptance of ``signed`` was recovered: an open request it pays is paid.

        A request closed here otherwise (paid by another transfer, declined,
        cancelled) is left as it is: reconciliation reports what disagrees.
        """
        conn.execute(
            "UPDATE requests SET state = 'paid', paid_by = ?, updated_at = ? "
            "WHERE id = ? AND direction = 'out' AND state = 'open'",
            (signed.id, at, signed.transfer.request_id),
        )

    # --- reading ---

    def get_request(self, request_id: bytes, direction: str | None = None) -> RequestRow:
        """The request with this id (in either direction unless one is given); NotFound."""
        check_transfer_id(request_id, "a payment request id")
        _check_direction(direction)
        row = _select(self._conn, request_id, direction)
        if row is None:
            raise NotFound(f"no payment request {request_id.hex()} in the ledger")
        return row

    def requests(
        self,
        now_ms: int,
        *,
        direction: str | None = None,
        state: RequestState | None = None,
    ) -> list[RequestRow]:
        """Every request, newest first (by ``created_at``), optionally only one direction or state.

        ``now_ms`` is the clock the ``state`` filter judges expiry by
        (:meth:`RequestRow.state_at`): ``state=RequestState.OPEN`` lists only
        requests still payable now, ``EXPIRED`` the open ones past their time.
        """
        check_timestamp(now_ms, "now")
        _check_direction(direction)
        try:
            wanted = None if state is None else RequestState(state)
        except ValueError as exc:
            raise InputError(f"unknown request state {state!r}") from exc
        rows = self._conn.execute(
            f"SELECT {REQUEST_COLUMNS} FROM requests "  # noqa: S608
            "WHERE (? IS NULL OR direction = ?) ORDER BY created_at DESC, rowid DESC",
            (direction, direction),
        ).fetchall()
        found = [_row_from_sql(values) for values in rows]
        if wanted is None:
            return found
        return [row for row in found if row.state_at(now_ms) is wanted]

    def paid_request_ids(self) -> set[bytes]:
        """Request ids our outgoing transfers pay that are pending, queued or completed.

        What ``pay`` checks to refuse, locally, a request this ledger already
        paid (or is paying). Failed and rejected transfers do not count: the
        request may be paid again.
        """
        paid: set[bytes] = set()
        for (blob,) in self._conn.execute(
            "SELECT signed_transfer FROM transfers WHERE direction = 'out' "  # noqa: S608
            f"AND status IN ('pending', 'queued', 'completed') AND {_V2_TRANSFER}"
        ):
            known = self._decoded.get(blob)
            signed = known if known is not None else SignedTransfer.decode(blob)
            request_id = signed.transfer.request_id
            if request_id is not None:
                paid.add(request_id)
        return paid
