"""Offline delivery, the peer's side: prekeys, sealed deposits, collecting mail.

When a contact is not online, a transfer is sealed to one of their signed
prekeys (HPKE, post-quantum hybrid: :mod:`..protocol.envelope`) and
deposited in their mailbox at the relay. They collect it later, apply it
with exactly the rules of the live path, and answer with their signed
receipt — always deposited in our mailbox, and collected by us the same
way. The rules that make it end exactly once:

* **Sender.** A transfer is pending in the ledger before it is sealed; it
  becomes ``queued`` only after the relay confirmed the deposit as durable,
  and completed only with a receipt that verifies against it. A re-deposit
  (``resend``, or ``listen`` on its own) seals the same signed bytes again
  under the same slot: the relay replaces, never adds.
* **Recipient.** A transfer from mail is checked (sealed for us with our
  prekey, signed by the depositor the relay names, addressed to us), judged
  by :func:`..protocol.acceptance.decide` and committed in one transaction,
  like a live one; its receipt is deposited for the sender; only then is
  the mail acknowledged. Mail seen again (a crash before the ack, a replay)
  is answered from the stored receipt, never applied twice. Mail that does
  not open (altered, or filed under another depositor) is acknowledged and
  dropped: the transfer stays queued at its sender until deposited again.
* **Receipts by mail** complete the transfer they answer after verifying
  against it; an identical one again is a no-op.

The relay learns who mails whom and when; it cannot read, alter or forge
mail, and a lost mail only leaves the transfer queued until it is deposited
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..clock import now_ms
from ..errors import (
    DecodeError,
    MailUnavailable,
    P2PTransferError,
    PrekeyError,
    ProtocolError,
)
from ..protocol import envelope
from ..protocol.acceptance import Action, decide
from ..protocol.envelope import Envelope, MailKind
from ..protocol.identity import PublicIdentity
from ..protocol.prekey import DEFAULT_CLOCK_SKEW_MS, Prekey, SignedPrekey, select_prekey
from ..protocol.receipt import RejectReason, SignedReceipt
from ..protocol.request import SignedRequest, SignedRequestAnswer
from ..protocol.transfer import SignedTransfer
from ..storage.ledger import TransferRow
from ..storage.prekeys import PrekeyStore
from .relay_client import Mail
from .sessions import PeerEvent, SessionHost

__all__ = ["Mailing"]

log = logging.getLogger("p2ptransfer.peer")

PREKEY_SKEW_MS = DEFAULT_CLOCK_SKEW_MS
"""How far apart two clocks may be when a prekey's validity window is checked."""
MAILBOX_SIZE = 1024
"""Mail frames waiting to be handled by one peer; more stay at the relay for next time."""


@dataclass
class Collected:
    """What one ``sync`` handled: transfers recorded, our transfers completed by mail."""

    transfers: list[TransferRow] = field(default_factory=list)
    receipts: list[TransferRow] = field(default_factory=list)


_NO_MAIL = {
    "none": "they have no prekey at the relay (not online there since they got a version "
    "with offline delivery)",
    "expired": "their prekeys at the relay have expired (not online there for two weeks)",
    "not-yet-valid": "their only prekey at the relay is not valid yet (check the clocks)",
}
"""Why a recipient cannot be mailed, for the prekey problems that are not an attack."""


class Mailing(SessionHost):
    """The peer's mail moves (a part of :class:`~.peer.Peer`)."""

    _prekeys: PrekeyStore | None
    _mail: asyncio.Queue[Mail]
    _held: list[Mail]  # incoming transfers pushed before this peer started collecting
    _background: set[asyncio.Task[None]]
    _collected: Collected

    # --- the mail's life at this peer -------------------------------------------------

    def _start_collecting(self) -> None:
        """Handle incoming transfers in mail from now on (sync, receive, listen)."""
        if self._collecting:
            return
        self._collecting = True
        held, self._held = self._held, []
        for mail in held:
            self._on_mail(mail)
        if self._client is not None and self._prekeys is not None:
            # A collector also keeps what it queued deposited (now, and on each connect).
            task = asyncio.create_task(self._after_connect(), name="peer-redeposit")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _after_connect(self) -> None:
        """On every connection: publish our prekeys; a listener re-deposits what is queued."""
        if self._prekeys is None:
            return
        try:
            await self._publish_prekeys()
            if self._collecting:
                await self.redeposit()
        except asyncio.CancelledError:
            raise
        except P2PTransferError as exc:
            log.info("mail set-up after connecting failed: %s", exc)
            self._emit(PeerEvent("mail-failed", str(exc)))

    async def _drain_mail(self, timeout: float) -> None:
        """Let mail being handled finish: its receipt deposited and the mail acknowledged."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._mail.join()

    async def sync(self, timeout: float = 30.0) -> Collected:
        """Collect every piece of mail waiting at the relay once; report what it settled.

        The relay pushes waiting mail right after authenticating, before it
        answers any request: the answer to one request is the barrier after
        which everything waiting has arrived.
        """
        self._collected = Collected()
        self._start_collecting()
        client = self._require_client()
        async with asyncio.timeout(timeout):
            await client.get_prekeys(self.address)  # the barrier
            for _ in range(10_000):  # bounded: each turn hands over or handles something
                await asyncio.sleep(0)
                if client.waiting == 0 and self._mail.empty():
                    await self._mail.join()
                    await asyncio.sleep(0)
                    if client.waiting == 0 and self._mail.empty():
                        break
        return self._collected

    async def redeposit(self) -> list[TransferRow]:
        """Seal every queued transfer into its recipient's mailbox again (same slot)."""
        by_recipient: dict[str, list[SignedTransfer]] = {}
        for row in self.ledger.waiting_outgoing():
            if row.status == "queued":
                by_recipient.setdefault(row.counterparty, []).append(row.signed)
        rows: list[TransferRow] = []
        for transfers in by_recipient.values():
            with contextlib.suppress(MailUnavailable):
                rows += await self.queue(transfers)
        return rows

    # --- prekeys ------------------------------------------------------------------

    async def _publish_prekeys(self) -> None:
        """Make sure the relay holds our current prekeys (on every connect).

        Rotates first (a new prekey every week), and erases the private halves
        no mail can be sealed to any more (validity + the relay's mail age).
        """
        if self._prekeys is None:
            return
        client = self._require_client()
        now = now_ms()
        self._prekeys.current(now)
        if client.mail_info is not None:
            self._prekeys.erase_expired(now, client.mail_info.max_mail_age_ms)
        served: list[SignedPrekey] = []
        for signed in self._prekeys.published():
            served = await client.publish_prekey(signed)
        if any(self._prekeys.private_for(s.prekey_id) is None for s in served):
            # The relay serves a prekey whose private half we do not hold (a home restored
            # from an old copy): mail sealed to it could never be opened. A fresh prekey
            # now makes ours the newest, which is what senders choose.
            newest = max(s.prekey.not_before for s in served)
            fresh, _private = self._prekeys.rotate(max(now, newest + 1))
            await client.publish_prekey(fresh)

    async def _prekey_of(self, address: str) -> Prekey:
        """The newest valid prekey ``address`` published, checked against that address.

        MailUnavailable when it has none (or only expired ones); a prekey
        signed by any other key is a PrekeyError, refused like a changed pin.
        """
        candidates = await self._require_client().get_prekeys(address)
        now = now_ms()
        try:
            chosen = select_prekey(candidates, address, now, PREKEY_SKEW_MS)
        except PrekeyError as exc:
            if exc.reason in ("wrong-owner", "bad-signature"):
                raise
            why = _NO_MAIL.get(exc.reason, str(exc))
            raise MailUnavailable(why) from exc
        for candidate in candidates:
            if candidate is chosen:
                continue  # checked by select_prekey
            # A prekey beside the genuine one that the address never signed: nothing is
            # sealed to it, but the relay (or whoever answers for it) lied: say so.
            try:
                candidate.check_for(address, now, PREKEY_SKEW_MS)
            except PrekeyError as exc:
                if exc.reason in ("wrong-owner", "bad-signature"):
                    log.warning("the relay served a forged prekey for %s: %s", address, exc)
                    self._emit(PeerEvent("relay-lied", f"forged prekey for {address}"))
        return chosen.prekey

    # --- sending by mail ----------------------------------------------------------

    async def queue(self, transfers: Sequence[SignedTransfer]) -> list[TransferRow]:
        """Seal pending transfers to one recipient into their mailbox; mark them queued.

        Raises MailUnavailable when the recipient has no valid prekey (they
        stay pending) and RelayRefused when the relay refuses a deposit.
        """
        if not transfers:
            return []
        recipients = {t.transfer.recipient for t in transfers}
        if len(recipients) != 1:
            raise ValueError("queue() takes transfers to one recipient")
        (recipient,) = recipients
        prekey = await self._prekey_of(recipient)
        for signed in transfers:
            await self._deposit(recipient, prekey, MailKind.TRANSFER, signed.id, signed.encode())
        await self._hooks.after_deposit(self, [t.id for t in transfers])
        return self.ledger.mark_queued([t.id for t in transfers], now_ms())

    async def _deposit(
        self, to: str, prekey: Prekey, kind: MailKind, transfer_id: bytes, signed: bytes
    ) -> None:
        sealed = envelope.seal(kind, signed, self._public_key, prekey)
        slot = envelope.mail_slot(self._slot_key, kind, transfer_id)
        await self._require_client().deposit(to, slot, sealed.encode())

    @property
    def _public_key(self) -> bytes:
        return PublicIdentity.from_address(self.address).public_key

    @property
    def _slot_key(self) -> bytes:
        return envelope.slot_key(self.identity.seed)

    # --- collecting mail ----------------------------------------------------------

    def _on_mail(self, mail: Mail) -> None:
        """The reader hands over one Mail frame; it is handled in order by the mail task."""
        try:
            self._mail.put_nowait(mail)
        except asyncio.QueueFull:
            log.info("mail from %s left at the relay: too much waiting here", mail.sender)

    async def _mail_loop(self) -> None:
        while True:
            mail = await self._mail.get()
            try:
                await self._handle_mail(mail)
            except asyncio.CancelledError:
                raise
            except P2PTransferError as exc:  # that mail stays at the relay; next one
                log.info("mail from %s not handled: %s", mail.sender, exc)
                self._emit(PeerEvent("mail-failed", f"{mail.sender}: {exc}"))
            except Exception:  # the loop boundary: one bad piece must not stop the rest
                log.exception("mail from %s not handled", mail.sender)
                self._emit(PeerEvent("mail-failed", f"{mail.sender}: internal error"))
            finally:
                self._mail.task_done()

    async def _handle_mail(self, mail: Mail) -> None:
        try:
            parsed = Envelope.decode(mail.envelope)
        except DecodeError:
            await self._drop_unopenable(mail)
            return
        private = None if self._prekeys is None else self._prekeys.private_for(parsed.prekey_id)
        if private is None:
            # Sealed to a prekey whose private half is gone (erased, or a restored home):
            # nobody can ever open it. Drop it; the sender's next deposit uses a fresh one.
            await self._ack(mail)
            self._emit(PeerEvent("mail-unreadable", mail.sender))
            if self._prekeys is not None:
                await self._publish_prekeys()
            return
        sender = PublicIdentity.from_address(mail.sender)
        try:
            kind, blob = envelope.open(parsed, private, sender.public_key, self._public_key)
        except ProtocolError:  # also a DecodeError: it opened to a malformed plaintext
            await self._drop_unopenable(mail)
            return
        if kind is MailKind.RECEIPT:
            await self._on_mailed_receipt(mail, SignedReceipt.decode(blob))
        elif kind is MailKind.REQUEST:
            if self._collecting:
                self._on_request(mail.sender, SignedRequest.decode(blob))
                await self._ack(mail)
            elif len(self._held) < MAILBOX_SIZE:
                self._held.append(mail)
        elif kind is MailKind.REQUEST_ANSWER:
            self._on_request_answer(SignedRequestAnswer.decode(blob))
            await self._ack(mail)
        elif kind is MailKind.TRANSFER:
            if self._collecting:
                await self._on_mailed_transfer(mail, SignedTransfer.decode(blob))
            elif len(self._held) < MAILBOX_SIZE:
                self._held.append(mail)  # handled once this peer collects; else left there
        else:
            raise ProtocolError(f"mail of kind {kind} is not handled by this version")

    async def _drop_unopenable(self, mail: Mail) -> None:
        """Acknowledge and drop mail that can never open here; the sender re-deposits.

        Altered bytes, or a depositor other than the one it was sealed by (HPKE
        ``info`` binds both parties): opening it again would fail the same way
        on every connection, for as long as the relay keeps it. The
        acknowledgement names the hash of exactly these bytes, so it cannot
        delete an intact copy the relay still holds (one altered only on its
        way here, or filed under the real depositor).
        """
        await self._ack(mail)
        self._emit(
            PeerEvent(
                "mail-refused",
                f"{mail.sender}: the mail does not open (altered, or not from this depositor)",
            )
        )

    async def _on_mailed_receipt(self, mail: Mail, receipt: SignedReceipt) -> None:
        if receipt.receipt.receiver != mail.sender:
            raise ProtocolError("a mailed receipt signed by someone else than its depositor")
        transfer_id = receipt.receipt.transfer_id
        try:
            row = self.ledger.get_transfer(transfer_id, "out")
        except P2PTransferError:
            # Not in our ledger (a rolled-back one?): the counterparty keeps it; reconcile.
            log.info("receipt for unknown transfer %s; reconcile with %s", transfer_id.hex(),
                     mail.sender)  # fmt: skip
            self._emit(PeerEvent("receipt-unknown", f"{mail.sender} {transfer_id.hex()}"))
            await self._ack(mail)
            return
        receipt.verify(row.signed)
        # Decided already: the recipient answers every copy of the transfer it sees again
        # (a crash before its ack, our re-deposit), so the same receipt may come twice.
        # Storing it is idempotent (a contradicting one raises); reporting it must be too.
        decided_before = row.signed_receipt is not None
        completed = self.ledger.complete_outgoing(receipt, now_ms())
        await self._ack(mail)
        if decided_before:
            return
        self._collected.receipts.append(completed)
        self._emit(PeerEvent("completed", row=completed))

    async def _on_mailed_transfer(self, mail: Mail, signed: SignedTransfer) -> None:
        transfer = signed.transfer
        problem: RejectReason | None = None
        if transfer.sender != mail.sender:
            problem = RejectReason.INVALID
        elif transfer.recipient != self.address:
            problem = RejectReason.WRONG_RECIPIENT
        else:
            try:
                signed.verify()
            except P2PTransferError:
                problem = RejectReason.INVALID
        if problem is not None:
            # Not a transfer this depositor may give us: nothing to answer, drop it.
            await self._ack(mail)
            self._emit(PeerEvent("mail-refused", f"{mail.sender}: {problem.name.lower()}"))
            return
        decided_at = now_ms()
        known = self.ledger.incoming(signed.id)
        verdict = decide(
            signed,
            problem=None,
            stored=known,
            known_sender=self._is_contact(transfer.sender),
            policy=self.policy,
            request=self._request_for(signed, decided_at),
            now_ms=decided_at,
        )
        receipt = self._receipt_for(signed, verdict, decided_at)
        if verdict.action is Action.RECORD:
            ((receipt, row),) = self._commit_incoming([(signed, receipt)], decided_at)
            if row is not None:
                self._collected.transfers.append(row)
                self._on_recorded(row)
        elif verdict.action is Action.QUARANTINE:
            (receipt,) = self._quarantine([(signed, receipt)], decided_at)
        await self._hooks.after_mail_committed(self, receipt)
        # The receipt for mailed transfers is always mailed back; the mail is acknowledged
        # once the outcome is committed and the receipt's deposit confirmed (or impossible).
        with contextlib.suppress(MailUnavailable):
            prekey = await self._prekey_of(transfer.sender)
            await self._deposit(
                transfer.sender, prekey, MailKind.RECEIPT, signed.id, receipt.encode()
            )
        await self._hooks.after_receipt_deposited(self, receipt)
        await self._ack(mail)

    async def _ack(self, mail: Mail) -> None:
        digest = envelope.envelope_hash(mail.envelope)
        await self._require_client().ack(mail.sender, mail.slot, digest)
