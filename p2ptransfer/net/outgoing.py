"""The sender's side of the peer runtime: transfers out, receipts back.

A transfer is signed and committed to the ledger as *pending* before its
first byte leaves the machine, and becomes *completed* or *rejected* only
with a receipt that verifies against it. Any failure in between (relay gone,
session aborted, timeout) leaves it pending; retries (within one ``deliver``
or later with ``resend``) reuse the same signed bytes, hence the same id. A
timeout alone never turns pending into failed.

Several transfers are in flight per session (a window); each receipt frees
its place as it arrives, and the receipts that arrive together are stored in
one commit.

A long :meth:`Outgoing.send_many` signs and commits its transfers in chunks
(the first :data:`PREPARE_CHUNK`, then growing), the next one while the
peer works on those in flight, so the first ones are on their way while the
rest are still being signed; each chunk is committed as pending before any
transfer of it is sealed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..clock import now_ms
from ..errors import (
    IdentityError,
    NetworkError,
    P2PTransferError,
    PeerOffline,
    ProtocolError,
    SessionTimeout,
    StorageError,
)
from ..protocol.channel import MAX_PLAINTEXT
from ..protocol.identity import PublicIdentity
from ..protocol.receipt import SignedReceipt
from ..protocol.session import Aborted, PeerClosed, ReceiptArrived
from ..protocol.transfer import SignedTransfer, Transfer, sign_transfer
from ..storage.ledger import TransferRow
from .sessions import SessionHost, _left, _SessionRun

__all__ = ["PREPARE_CHUNK", "Outgoing", "SendOutcome"]

log = logging.getLogger("p2ptransfer.peer")

_SESSION_ATTEMPTS = 5
_RECEIPT_SILENCE = 10.0  # no frame for this long with transfers in flight -> retry
PREPARE_CHUNK = 32
"""Transfers a long send_many signs and commits as pending first; later chunks grow."""
_MAX_CHUNK = 256
_MIN_BATCH = 8
"""Fewer transfers leaving at once go one record each: with a small window the saving is
small, and a session's records then still count its transfers (the record cap's tests)."""


@dataclass(frozen=True)
class SendOutcome:
    """The end of one outgoing transfer: its ledger row (completed or rejected) and receipt."""

    row: TransferRow
    receipt: SignedReceipt

    @property
    def accepted(self) -> bool:
        return self.receipt.receipt.accepted


class Outgoing(SessionHost):
    """Sending: sign and store transfers as pending, deliver them, store their receipts."""

    def prepare(
        self,
        recipient: str,
        amount: int,
        currency: str,
        memo: str = "",
        *,
        request_id: bytes | None = None,
    ) -> SignedTransfer:
        """Sign a new transfer and commit it as pending: from here it can only end once.

        With ``request_id`` the transfer pays that payment request (it must
        match it exactly: payee, amount, currency).
        """
        (signed,) = self.prepare_many(recipient, [(amount, currency, memo)], request_id=request_id)
        return signed

    def prepare_many(
        self,
        recipient: str,
        items: Iterable[tuple[int, str, str]],
        *,
        request_id: bytes | None = None,
    ) -> list[SignedTransfer]:
        """Sign new transfers and commit them all as pending in one transaction."""
        signed = self._sign_many(recipient, items, request_id)
        self.ledger.record_outgoing_batch(signed, now_ms())
        return signed

    def _sign_many(
        self, recipient: str, items: Iterable[tuple[int, str, str]], request_id: bytes | None
    ) -> list[SignedTransfer]:
        created_at = now_ms()
        signed = [
            sign_transfer(
                self.identity,
                Transfer(
                    id=secrets.token_bytes(16),  # type: ignore[arg-type]
                    sender=self.address,
                    recipient=recipient,
                    amount=amount,
                    currency=currency,
                    memo=memo,
                    created_at=created_at,
                    request_id=request_id,
                ),
            )
            for amount, currency, memo in items
        ]
        return signed

    async def send(
        self, recipient: str, amount: int, currency: str, memo: str = "", *, timeout: float = 60.0
    ) -> SendOutcome:
        """Send one transfer and wait for its receipt (rejections are outcomes too)."""
        signed = self.prepare(recipient, amount, currency, memo)
        (outcome,) = await self.deliver([signed], timeout=timeout)
        return outcome

    async def send_many(
        self,
        recipient: str,
        items: Iterable[tuple[int, str, str]],
        *,
        timeout: float = 60.0,
    ) -> list[SendOutcome]:
        """Send many (amount, currency, memo) transfers with several in flight per session.

        They are signed and committed as pending in chunks, the first before
        anything is sent and the next ones as the window needs them; a chunk
        is all pending before the first of its transfers leaves. If delivery
        gives up (PeerOffline, SessionTimeout), the transfers not yet prepared
        are committed as pending too before the error is raised, so every one
        asked for is then pending (named in the error) or settled, as when all
        were prepared first.
        """
        wanted = list(items)
        first = self.prepare_many(recipient, wanted[:PREPARE_CHUNK])
        later = _Later(self, recipient, wanted[PREPARE_CHUNK:])
        return await self.deliver(first, timeout=timeout, later=later)

    async def resend(
        self, transfer_ids: Iterable[bytes] | None = None, *, timeout: float = 60.0
    ) -> list[SendOutcome]:
        """Retry pending outgoing transfers (all, or the given ids) with their original bytes."""
        outcomes: list[SendOutcome] = []
        for batch in self._waiting_by_recipient(transfer_ids):
            outcomes += await self.deliver(batch, timeout=timeout)
        return outcomes

    def _waiting_by_recipient(
        self, transfer_ids: Iterable[bytes] | None
    ) -> list[list[SignedTransfer]]:
        """The outgoing transfers still waiting (all, or these ids), one list per recipient."""
        waiting = self.ledger.pending_outgoing()
        if transfer_ids is not None:
            wanted = set(transfer_ids)
            waiting = [s for s in waiting if s.id in wanted]
        by_recipient: dict[str, list[SignedTransfer]] = {}
        for signed in waiting:
            by_recipient.setdefault(signed.transfer.recipient, []).append(signed)
        return list(by_recipient.values())

    async def deliver(
        self,
        transfers: Sequence[SignedTransfer],
        *,
        timeout: float = 60.0,
        later: _Later | None = None,
    ) -> list[SendOutcome]:
        """Deliver pending transfers to their (single) recipient until each has a receipt.

        Retries across sessions until ``timeout``; raises PeerOffline or
        SessionTimeout, naming the transfers still pending then in their
        ``pending`` field and message (they stay pending). ``later``: more
        transfers to the same recipient, prepared (signed, committed as
        pending) in chunks as the window needs them; the outcomes list them
        after ``transfers``.
        """
        transfers = list(transfers)
        if not transfers:
            return []
        recipients = {t.transfer.recipient for t in transfers}
        if len(recipients) != 1:
            raise ValueError("deliver() takes transfers to one recipient")
        remote = PublicIdentity.from_address(recipients.pop())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        outcomes: dict[bytes, SendOutcome] = {}
        remaining = [t for t in transfers]
        if later is not None:
            later.into(transfers, remaining)  # what it prepares joins both lists
        last_error: P2PTransferError | None = None
        failures = 0  # sessions that failed; a session ended for rekeying is not one
        while remaining or later:
            left = deadline - loop.time()
            if left <= 0 or failures >= _SESSION_ATTEMPTS:
                break
            try:
                await self._require_client().wait_online(remote.address, left)
                await self._run_outgoing(remote, remaining, outcomes, deadline, later)
            except IdentityError:
                raise  # never retry against a key we did not expect
            except StorageError as exc:
                if later is None:
                    raise
                # A chunk could not be committed: say what is pending and what was never
                # signed, so nobody sends the whole batch again and pays some twice.
                waiting = [t for t in remaining if t.id not in outcomes]
                raise StorageError(
                    f"{exc}; {len(outcomes)} transfer(s) settled, {len(waiting)} stay pending"
                    f" ('p2ptransfer pending'), {later.left} were never signed or sent"
                ) from exc
            except (ProtocolError, NetworkError) as exc:
                failures += 1
                last_error = exc
                log.info("session to %s failed (%s); retrying", remote.address, exc)
                if self._client is not None and not self._disconnected.is_set():
                    await asyncio.sleep(min(0.05 * 2**failures, 1.0))
                    continue
                try:
                    await self._reconnect(deadline)
                except NetworkError as reconnect_error:
                    last_error = reconnect_error
                    break
            remaining[:] = [t for t in remaining if t.id not in outcomes]  # later's list too
        if later:
            later.take(later.left)  # pending, as if all were prepared first, and named below
        if remaining:
            who = self._name_of(remote.address)
            pending = tuple(t.id for t in remaining)
            if isinstance(last_error, PeerOffline) or last_error is None:
                raise PeerOffline(
                    f"{who} did not come online within {timeout:g} s", pending
                ) from last_error
            raise SessionTimeout(
                f"could not complete delivery to {who} within {timeout:g} s ({last_error})",
                pending,
            ) from last_error
        return [outcomes[t.id] for t in transfers]

    def _name_of(self, address: str) -> str:
        """The contact's name for ``address`` if it is one (what the user typed), else it."""
        with contextlib.suppress(P2PTransferError):
            contact = self.ledger.contact_for_address(address)
            if contact is not None:
                return contact.name
        return address

    async def _reconnect(self, deadline: float) -> None:
        await self._drop_connection()
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            try:
                await self.connect()
                return
            except NetworkError:
                if loop.time() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _run_outgoing(
        self,
        remote: PublicIdentity,
        remaining: list[SignedTransfer],
        outcomes: dict[bytes, SendOutcome],
        deadline: float,
        later: _Later | None = None,
    ) -> None:
        """One session: handshake, pipeline transfers, collect receipts."""
        loop = asyncio.get_running_loop()
        queue = collections.deque(t for t in remaining if t.id not in outcomes)
        if later is not None:
            later.queue = queue  # what it prepares from now on is sent in this session
        # Only a refill of _MIN_BATCH or more after the opening window travels batched:
        # a shorter exchange has nothing to offer, and stays on the wire as it always was.
        more = 0 if later is None else later.left
        may_batch = len(queue) + more >= self._window + _MIN_BATCH
        run = await self._open_session(remote, deadline, offer_batches=may_batch)
        session = run.session
        stores: list[asyncio.Future[None]] = []  # the receipt commit under way, if any
        try:
            in_flight: dict[bytes, SignedTransfer] = {}
            # The opening window goes out one record per transfer, so a short exchange (a
            # send, a handful of transfers) is on the wire exactly as it always was; the
            # refills, where a long send_many spends its time, travel batched.
            batched = False
            while queue or in_flight or later:
                await self._send_more(run, queue, in_flight, self._window, batched, later)
                batched = True
                await self._flush(run)
                if later and len(queue) < self._window:
                    # Sign the next ones while the peer works on those in flight, so a
                    # refill finds them ready (committed as pending: see _send_more).
                    await later.take_off_loop()
                if not in_flight and session.is_open:
                    break  # rekey needed: finish this session, the caller starts another
                # (Not open: the session refused a frame; the next wait raises its error.)
                # A receiver that vanished (its connection cut, its process killed) sends
                # nothing: give up on this session after a quiet spell and retry, rather
                # than wait out the whole deadline.
                quiet = min(_left(loop, deadline), _RECEIPT_SILENCE)
                events = await self._events(run, quiet)
                events += await self._events_already_here(run)  # stored in one commit
                problem: P2PTransferError | None = None
                receipts: list[SignedReceipt] = []
                for event in events:
                    if isinstance(event, ReceiptArrived):
                        receipts.append(event.signed)
                    elif isinstance(event, PeerClosed | Aborted):
                        problem = ProtocolError("the peer ended the session before answering")
                try:
                    if problem is None and (queue or later) and session.is_open:
                        # Each receipt frees its place in the window as it arrives (the
                        # peer stopped counting that transfer when it sent the receipt),
                        # so the next transfers leave now and the peer handles them while
                        # we verify and store these receipts. Validity is checked before
                        # anything is stored; an invalid receipt ends the session as
                        # before, leaving its transfer pending.
                        freed = len({r.receipt.transfer_id for r in receipts} & in_flight.keys())
                        if freed:
                            await self._send_more(
                                run, queue, in_flight, self._window + freed, True, later
                            )
                            await self._flush(run)
                finally:
                    # The receipts in hand are stored whatever became of the refill (a
                    # crash while sealing the next transfer, the relay lost mid-flush).
                    await self._on_receipts(receipts, in_flight, outcomes, stores)
                if problem is not None:
                    raise problem
            for store in stores:
                await store
        except BaseException:
            await self._abandon_session(run)
            for store in stores:  # what verified is stored (else it stays pending)
                with contextlib.suppress(Exception):
                    await store
            raise
        finally:
            await self._end_session(run)

    async def _send_more(
        self,
        run: _SessionRun,
        queue: collections.deque[SignedTransfer],
        in_flight: dict[bytes, SignedTransfer],
        limit: int,
        batched: bool,
        later: _Later | None = None,
    ) -> None:
        """Seal transfers from ``queue`` until ``limit`` are in flight (or a rekey is due).

        ``batched``: the transfers that leave together travel several to a
        record (one relay frame each), else one record apiece. Either way one
        record is sealed at a time and the record cap is checked before each.
        """
        session = run.session
        while (
            (queue or later)
            and len(in_flight) < limit
            and session.is_open
            and not session.needs_rekey
        ):
            if later and len(queue) < limit - len(in_flight):
                await self._flush(run)  # what is sealed leaves while the next ones are signed
                await later.take_off_loop()  # committed as pending before any of it is sealed
            batch: list[SignedTransfer] = []
            size = 0
            room = limit - len(in_flight)
            # A peer that has not answered in a RECEIPTS record may be of the first
            # version, which ends the session on a TRANSFERS record.
            together = (
                batched and session.peer_reads_batches and min(room, len(queue)) >= _MIN_BATCH
            )
            while queue and len(batch) < room:
                need = 2 + len(queue[0].encode())  # its length prefix in a batch record
                if batch and (not together or size + need > MAX_PLAINTEXT):
                    break
                signed = queue.popleft()
                await self._hooks.before_transfer_sent(self, signed)
                batch.append(signed)
                size += need
            session.send_transfers(batch)  # one record (a lone transfer: the single form)
            for signed in batch:
                in_flight[signed.id] = signed

    async def _on_receipts(
        self,
        receipts: Sequence[SignedReceipt],
        in_flight: dict[bytes, SignedTransfer],
        outcomes: dict[bytes, SendOutcome],
        stores: list[asyncio.Future[None]],
    ) -> None:
        """Verify receipts against the transfers in flight; store the valid ones in one commit.

        The commit runs in the background (appended to ``stores``), so the
        session goes on reading receipts and refilling its window during
        the fsync; one receipt commit at a time (the previous one is
        awaited first), and an outcome exists only once its commit is done.
        A receipt that verified frees its transfer's place in the window at
        once. A forged or mismatched receipt ends the session (after the
        valid ones are handed to the commit); its transfer stays pending.
        """
        valid: list[tuple[SignedTransfer, SignedReceipt]] = []
        answered: set[bytes] = set()
        problem: P2PTransferError | None = None
        for receipt in receipts:
            transfer_id = receipt.receipt.transfer_id
            signed = in_flight.get(transfer_id)
            try:
                if signed is None:
                    raise ProtocolError("receipt for a transfer that is not in flight")
                if transfer_id in answered:
                    raise ProtocolError("two receipts for one transfer")
                receipt.verify(signed)
                answered.add(transfer_id)
            except P2PTransferError as exc:
                problem = problem or exc
                continue
            await self._hooks.after_receipt_received(self, receipt)
            valid.append((signed, receipt))
        if valid:
            for signed, _ in valid:
                del in_flight[signed.id]
            if stores:
                await stores.pop()  # its error (a failed commit) ends the session here
            stores.append(asyncio.ensure_future(self._store_receipts(valid, outcomes)))
        if problem is not None:
            raise problem

    async def _store_receipts(
        self,
        valid: list[tuple[SignedTransfer, SignedReceipt]],
        outcomes: dict[bytes, SendOutcome],
    ) -> None:
        rows = await self.ledger.write_off_loop(
            lambda: self.ledger.complete_outgoing_batch([r for _, r in valid], now_ms())
        )
        for (signed, receipt), row in zip(valid, rows, strict=True):
            outcomes[signed.id] = SendOutcome(row, receipt)


class _Later:
    """The transfers of a send_many not yet signed: prepared in chunks as they are needed.

    What :meth:`take` prepares is committed as pending first, then joins the
    delivery's lists (the outcomes' order, the transfers still to settle) and
    the running session's queue.
    """

    def __init__(self, host: Outgoing, recipient: str, items: list[tuple[int, str, str]]) -> None:
        self._host = host
        self._recipient = recipient
        self._items = items
        self._lists: tuple[list[SignedTransfer], ...] = ()
        self.queue: collections.deque[SignedTransfer] | None = None
        self._chunk = PREPARE_CHUNK

    @property
    def left(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def into(self, *lists: list[SignedTransfer]) -> None:
        self._lists = lists

    def take(self, count: int) -> list[SignedTransfer]:
        """Sign and commit as pending the next ``count`` (at most) transfers."""
        items, self._items = self._items[:count], self._items[count:]
        if not items:
            return []
        try:
            prepared = self._host.prepare_many(self._recipient, items)
        except P2PTransferError:
            self._items[:0] = items  # rolled back: none of them is pending, none was sent
            raise
        return self._prepared(prepared)

    async def take_off_loop(self) -> list[SignedTransfer]:
        """The next chunk, as :meth:`take` but with the COMMIT in the ledger's thread.

        Chunks double from :data:`PREPARE_CHUNK` up to :data:`_MAX_CHUNK`: the
        first ones small so transfers leave early, later ones larger so a
        long send costs few commits. They join the lists after the COMMIT.
        """
        count, self._chunk = self._chunk, min(2 * self._chunk, _MAX_CHUNK)
        items, self._items = self._items[:count], self._items[count:]
        if not items:
            return []
        host, recipient = self._host, self._recipient
        ledger = host.ledger
        try:
            prepared = await ledger.write_off_loop(lambda: host.prepare_many(recipient, items))
        except P2PTransferError:
            # The COMMIT failed and rolled back: none of them is pending. (A cancellation
            # is not caught: its COMMIT may still land, and then they are pending.)
            self._items[:0] = items
            raise
        return self._prepared(prepared)

    def _prepared(self, prepared: list[SignedTransfer]) -> list[SignedTransfer]:
        for into in self._lists:
            into.extend(prepared)
        if self.queue is not None:
            self.queue.extend(prepared)
        return prepared
