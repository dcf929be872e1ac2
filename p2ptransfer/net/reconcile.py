"""Reconciling with a contact over a live session: both sides of :mod:`..protocol.reconcile`.

The initiator (``ledger reconcile CONTACT``) opens an ordinary session to a
contact that is online (its ``listen`` answers), the two peers run the
reconcile exchange, and each records — in one transaction, through the
journal's own checks — every settled transfer it had lost and the other
proved. The responder answers only pinned contacts. What cannot be settled
(two contradicting receipts for one transfer) is reported, never guessed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from ..clock import now_ms
from ..errors import NotFound, ProtocolError
from ..protocol.handshake import Role
from ..protocol.identity import PublicIdentity
from ..protocol.reconcile import Disagreement, Message, Proof, Reconciliation
from ..protocol.session import Aborted, PeerClosed, ReconcileArrived
from ..storage.ledger import TransferRow
from .sessions import PeerEvent, SessionHost, _left, _SessionRun

__all__ = ["ReconcileReport", "Reconciling"]

log = logging.getLogger("p2ptransfer.peer")

_QUIET = 10.0  # no frame for this long in a running exchange: the peer is gone


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconciliation settled, from this side."""

    counterparty: str
    recovered: list[TransferRow]
    disagreements: list[Disagreement]
    proofs_sent: int = 0
    pending: list[TransferRow] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        """True unless the two ledgers hold contradicting signed receipts."""
        return not any(d.contradicting for d in self.disagreements)


class Reconciling(SessionHost):
    """The peer's reconcile moves (a part of :class:`~.peer.Peer`)."""

    async def reconcile(self, counterparty: str, *, timeout: float = 30.0) -> ReconcileReport:
        """Compare the history shared with ``counterparty`` and recover what we lost.

        ``counterparty`` must be a contact and online (PeerOffline otherwise,
        after ``timeout``). Raises ProtocolError if the peer breaks the
        exchange; nothing is recorded then.
        """
        remote = PublicIdentity.from_address(counterparty)
        if self.ledger.contact_for_address(remote.address) is None:
            raise NotFound(f"{remote.address} is not one of your contacts; reconcile with contacts")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._require_client().wait_online(remote.address, timeout)
        run = await self._open_session(remote, deadline)
        try:
            exchange = Reconciliation(
                Role.INITIATOR,
                self.address,
                remote.address,
                self.ledger.settled_with(remote.address),
            )
            sent = await self._step_exchange(run, exchange)
            while not exchange.finished:
                events = await self._events(run, min(_QUIET, _left(loop, deadline)))
                for event in events:
                    if isinstance(event, ReconcileArrived):
                        exchange.receive(event.message)
                    elif isinstance(event, PeerClosed | Aborted):
                        raise ProtocolError("the peer ended the session before reconciling")
                    else:
                        raise ProtocolError("the peer sent something else than a reconciliation")
                sent += await self._step_exchange(run, exchange)
        except BaseException:
            await self._abandon_session(run)
            raise
        finally:
            await self._end_session(run)
        recovered = self._record_proven(exchange)
        pending = [
            row
            for row in self.ledger.transfers(remote.address)
            if row.direction == "out" and row.signed_receipt is None
        ]
        return ReconcileReport(remote.address, recovered, exchange.disagreements, sent, pending)

    async def _step_exchange(self, run: _SessionRun, exchange: Reconciliation) -> int:
        """Send what the exchange has queued (proofs looked up first); return proofs sent."""
        proofs = 0
        if exchange.proofs_due:
            exchange.send_proofs(self.ledger.proofs(run.remote, exchange.owed))
        for message in exchange.messages_to_send():
            run.session.send_reconcile(message)
            proofs += isinstance(message, Proof)
        await self._flush(run)
        return proofs

    def _record_proven(self, exchange: Reconciliation) -> list[TransferRow]:
        if not exchange.proven:
            return []
        rows = self.ledger.recover([(p.signed, p.receipt) for p in exchange.proven], now_ms())
        log.info("reconcile with %s recovered %d transfer(s)", exchange.peer, len(rows))
        return rows

    async def _answer_reconcile(self, run: _SessionRun, message: Message) -> None:
        """Responder: one reconcile message in an incoming session (contacts only)."""
        exchange = run.reconciliation
        if exchange is None:
            peer = run.session.peer
            if peer is None or peer.address != run.remote or not self._is_contact(run.remote):
                raise ProtocolError("reconciliation is answered for contacts only")
            exchange = run.reconciliation = Reconciliation(
                Role.RESPONDER, self.address, run.remote, self.ledger.settled_with(run.remote)
            )
        exchange.receive(message)
        await self._step_exchange(run, exchange)
        if exchange.finished and not run.reconciled:
            run.reconciled = True
            rows = self._record_proven(exchange)
            for row in rows:
                self._emit(PeerEvent("recovered", row=row))
