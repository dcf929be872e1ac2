"""Payment requests, the peer's side: ask, be asked, decline, cancel.

A request is the payee's signed word "please pay me this" (see
:mod:`..protocol.request`). It travels like a transfer: live when the payer
answers within ``wait`` seconds, and always also sealed into the payer's
mailbox when they have a prekey (delivery of a live request is not
acknowledged, and the same request twice is harmless: the payer's ledger
keeps the first). Paying it is an ordinary transfer that carries the
request id; the payee's ledger holds the payment to the request in the same
transaction that records it.

The payer keeps requests from contacts only: a stranger's request is
dropped and counted, never stored (anyone can mint keys).
"""

from __future__ import annotations

import asyncio
import logging

from ..clock import now_ms
from ..errors import MailUnavailable, NetworkError, NotFound, P2PTransferError, ProtocolError
from ..protocol.envelope import MailKind
from ..protocol.identity import PublicIdentity
from ..protocol.request import PaymentRequest, RequestState, SignedRequest, SignedRequestAnswer
from ..protocol.transfer import SignedTransfer
from .mail import Mailing
from .sessions import PeerEvent

__all__ = ["Requesting"]

log = logging.getLogger("p2ptransfer.peer")


class Requesting(Mailing):
    """The peer's request moves (a part of :class:`~.peer.Peer`)."""

    # --- receiving requests and answers -------------------------------------------

    def _request_for(
        self, signed: SignedTransfer, now_ms: int
    ) -> tuple[PaymentRequest, RequestState] | None:
        request_id = signed.transfer.request_id
        if request_id is None:
            return None
        try:
            row = self.ledger.get_request(request_id, "out")
        except NotFound:
            return None
        return row.signed.request, row.state_at(now_ms)

    def _on_request(self, sender: str, signed: SignedRequest) -> None:
        """A request from ``sender`` (live or by mail): keep it if it is a contact's."""
        request = signed.request
        if request.payee != sender or request.payer != self.address:
            raise ProtocolError("a payment request not from its payee, or not for us")
        if not self._is_contact(sender):
            self._emit(PeerEvent("request-refused", f"{sender}: not a contact"))
            return
        try:
            self.ledger.record_request(signed, now_ms())
        except P2PTransferError as exc:
            self._emit(PeerEvent("request-refused", f"{sender}: {exc}"))
            return
        self._emit(PeerEvent("request", f"{sender} {request.id.hex()}"))

    def _on_request_answer(self, signed: SignedRequestAnswer) -> None:
        """A decline (from a payer) or cancellation (from a payee) of one of our requests."""
        try:
            self.ledger.answer_request(signed, now_ms())
        except P2PTransferError as exc:
            self._emit(PeerEvent("request-refused", f"answer: {exc}"))
            return
        kind = signed.answer.kind.name.lower()
        self._emit(PeerEvent("request-answer", f"{kind} {signed.answer.request_id.hex()}"))

    # --- sending them -------------------------------------------------------------

    async def send_request(self, signed: SignedRequest, *, wait: float = 5.0) -> str:
        """Deliver our request to its payer: ``"delivered"`` live, else ``"queued"`` (mail).

        Live when the payer is online within ``wait`` seconds; sealed into
        their mailbox as well whenever they can be mailed. MailUnavailable if
        neither worked (the request stays open here; its text code works on
        any channel).
        """
        return await self._hand_over(signed.request.payer, signed.request.id, signed, wait)

    async def send_request_answer(
        self, signed: SignedRequestAnswer, to: str, *, wait: float = 5.0
    ) -> str:
        """Tell ``to`` that we decline (or cancel) a request, live and/or by mail."""
        return await self._hand_over(to, signed.answer.request_id, signed, wait)

    async def _hand_over(
        self,
        to: str,
        request_id: bytes,
        signed: SignedRequest | SignedRequestAnswer,
        wait: float,
    ) -> str:
        """Live within ``wait`` s if ``to`` answers, and by mail whenever ``to`` can be mailed."""
        kind = MailKind.REQUEST if isinstance(signed, SignedRequest) else MailKind.REQUEST_ANSWER
        live = False
        loop = asyncio.get_running_loop()
        try:
            await self._require_client().wait_online(to, wait)
            run = await self._open_session(PublicIdentity.from_address(to), loop.time() + wait)
            try:
                if isinstance(signed, SignedRequest):
                    run.session.send_request(signed)
                else:
                    run.session.send_request_answer(signed)
                await self._flush(run)
                live = True
            finally:
                await self._end_session(run)
        except (NetworkError, ProtocolError) as exc:
            log.info("%s not delivered live to %s: %s", kind.name.lower(), to, exc)
        try:
            prekey = await self._prekey_of(to)
            await self._deposit(to, prekey, kind, request_id, signed.encode())
        except MailUnavailable:
            if not live:
                raise
            return "delivered"
        return "delivered" if live else "queued"
