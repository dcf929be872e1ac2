"""The receiver's side of the peer runtime: serve sessions, commit, answer.

A transfer is validated, judged by the acceptance policy, answered with a
signed receipt and committed *together with that receipt* in one SQLite
transaction, and only then is the receipt sent. A repeated id with the same
content gets the stored receipt again; with different content a signed
CONFLICT rejection that is not stored. Strangers' transfers are answered and
quarantined, never journaled (see :mod:`..protocol.acceptance`).

**Group commit.** Transfers that arrive while a commit is running are
committed together in the next transaction, so a sender with many transfers
in flight costs one fsync per batch, not per transfer; a batch's receipts for
one session leave together, in as few records as that session's peer reads.
A batch holds at most :data:`COMMIT_BATCH` transfers, so the first receipts
go back while later transfers still arrive when several sessions (or a
window larger than the cap) feed the committer. Smaller caps were measured:
32 cost the sender ~25 % more CPU per transfer at window 128 (four times as
many receipt batches, records and commits) and brought no throughput, so
the cap is the largest window the bench uses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from ..clock import now_ms
from ..errors import NetworkError, P2PTransferError, ProtocolError, SessionTimeout
from ..protocol.acceptance import AcceptancePolicy, Action, decide
from ..protocol.receipt import SignedReceipt
from ..protocol.session import (
    Established,
    ReconcileArrived,
    RequestAnswerArrived,
    RequestArrived,
    TransferArrived,
    abort_frame,
)
from ..protocol.transfer import SignedTransfer
from ..storage.ledger import TransferRow
from .sessions import (
    DEFAULT_WINDOW,
    HANDSHAKE_TIMEOUT,
    MAX_BATCH,
    PeerEvent,
    SessionHost,
    _fail_run,
    _SessionRun,
    _wait_first,
    _wait_or_stop,
)

__all__ = ["Incoming"]

log = logging.getLogger("p2ptransfer.peer")

_BATCH_YIELDS = 16
_IDLE_SESSION_TIMEOUT = 60.0
_MAX_SESSION_LIFETIME = 600.0  # a session kept alive by a trickle of frames still ends
_MAX_UNANSWERED = 4 * DEFAULT_WINDOW  # transfers of one session not yet answered
COMMIT_QUEUE = 4 * MAX_BATCH  # transfers waiting for the committer, all sessions
COMMIT_BATCH = 128
"""Transfers in one group commit at most (see the module docstring)."""


class Incoming(SessionHost):
    """Receiving: serve incoming sessions, group-commit their transfers, send receipts."""

    policy: AcceptancePolicy
    _accepting: bool
    _serving: set[asyncio.Task[None]]
    _strangers: collections.OrderedDict[tuple[str, bytes], _SessionRun]
    _first_recorded: asyncio.Future[TransferRow] | None  # receive() waiting
    _commit_queue: asyncio.Queue[tuple[_SessionRun, TransferArrived]]
    _committer: asyncio.Task[None] | None

    async def receive(self, timeout: float = 60.0) -> TransferRow:
        """Serve until the first incoming transfer is recorded; return its row."""
        self._first_recorded = asyncio.get_running_loop().create_future()
        self._start_accepting()
        try:
            row = await asyncio.wait_for(asyncio.shield(self._first_recorded), timeout)
        except TimeoutError:
            raise SessionTimeout(f"no transfer arrived within {timeout:g} s") from None
        finally:
            self._accepting = False
            self._first_recorded = None
        await self._drain_sessions(2.0)
        await self._drain_mail(5.0)
        return row

    async def listen(self, stop: asyncio.Event | None = None) -> None:
        """Serve incoming sessions until ``stop`` is set; reconnect to the relay with backoff."""
        stop = stop or asyncio.Event()
        self._start_accepting()
        delay = 0.2
        try:
            while not stop.is_set():
                if self._client is None or self._disconnected.is_set():
                    try:
                        await self._drop_connection()
                        await self.connect()
                        delay = 0.2
                    except NetworkError as exc:
                        self._emit(PeerEvent("disconnected", f"{exc}; retrying in {delay:.1f} s"))
                        await _wait_or_stop(stop, delay)
                        delay = min(delay * 2, 10.0)
                        continue
                await _wait_first(stop.wait(), self._disconnected.wait())
        finally:
            self._accepting = False
            await self._drain_sessions(2.0)
            await self._drain_mail(5.0)

    def _start_accepting(self) -> None:
        self._accepting = True
        self._start_collecting()  # incoming transfers by mail too
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop(), name="peer-committer")

    async def _drain_sessions(self, timeout: float) -> None:
        """Give running sessions a moment to send their last receipts."""
        if self._serving:
            await asyncio.wait(list(self._serving), timeout=timeout)

    async def _serve(self, run: _SessionRun) -> None:
        """Responder side of one session."""
        session = run.session
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + _MAX_SESSION_LIFETIME
        try:
            while not session.finished:
                timeout = HANDSHAKE_TIMEOUT if not session.is_open else _IDLE_SESSION_TIMEOUT
                timeout = min(timeout, ends_at - loop.time())
                if timeout <= 0:
                    raise SessionTimeout("session reached its maximum lifetime")
                for event in await self._events(run, timeout):
                    if isinstance(event, Established):
                        self._emit(PeerEvent("session", event.peer.address))
                    elif isinstance(event, ReconcileArrived):
                        await self._answer_reconcile(run, event.message)
                    elif isinstance(event, RequestArrived):
                        self._on_request(run.remote, event.signed)
                    elif isinstance(event, RequestAnswerArrived):
                        self._on_request_answer(event.signed)
                    elif isinstance(event, TransferArrived):
                        run.unanswered += 1
                        if run.unanswered > _MAX_UNANSWERED:
                            raise ProtocolError("the peer has too many transfers in flight")
                        await self._commit_queue.put((run, event))  # bounded: back-pressure
        except asyncio.CancelledError:
            raise
        except P2PTransferError as exc:
            log.info("incoming session from %s ended: %s", run.remote, exc)
            self._emit(PeerEvent("session-failed", f"{run.remote}: {exc}"))
            if session.peer is not None:
                # Established, so it was ours: tell the sender to retry now rather than
                # wait out its timeout. (Before that, stay quiet: another connection of
                # our own address may have won the handshake.)
                with contextlib.suppress(P2PTransferError):
                    await self._require_client().send(run.remote, abort_frame(session.tag))
        finally:
            self._runs.pop((run.remote, session.tag), None)
            self._strangers.pop((run.remote, session.tag), None)

    async def _commit_loop(self) -> None:
        while True:
            first = await self._commit_queue.get()
            # Let transfers already on their way (socket buffers, relay client,
            # session inboxes: several task hops) join this batch. A few event
            # loop turns, no timer: a lone transfer still commits at once.
            for _ in range(_BATCH_YIELDS):
                if self._commit_queue.qsize() >= COMMIT_BATCH:
                    break
                await asyncio.sleep(0)
            batch = [first]
            while len(batch) < COMMIT_BATCH and not self._commit_queue.empty():
                batch.append(self._commit_queue.get_nowait())
            try:
                await self._commit_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving: the senders will retry the batch
                log.exception("commit of %d transfer(s) failed", len(batch))
                failure = exc if isinstance(exc, P2PTransferError) else None
                for run, _ in batch:
                    run.unanswered -= 1
                    _fail_run(run, failure or ProtocolError("the receiver could not commit"))

    async def _commit_batch(self, batch: list[tuple[_SessionRun, TransferArrived]]) -> None:
        self.stats.commits += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        decided_at = now_ms()
        answers: list[tuple[_SessionRun, SignedReceipt]] = []
        to_store: list[tuple[SignedTransfer, SignedReceipt]] = []
        store_index: list[int] = []
        to_quarantine: list[tuple[SignedTransfer, SignedReceipt]] = []
        quarantine_index: list[int] = []
        # One lookup for the whole batch; the commit below checks again, inside its
        # transaction, so this only decides what to sign, never what is applied.
        known_ids = self.ledger.incoming_many(
            arrived.signed.id for _, arrived in batch if arrived.problem is None
        )
        known_senders: dict[str, bool] = {}  # a batch is mostly one sender's transfers
        for run, arrived in batch:
            signed = arrived.signed
            sender = signed.transfer.sender
            known = known_senders.get(sender)
            if known is None:
                known = known_senders[sender] = self.ledger.contact_for_address(sender) is not None
            verdict = decide(
                signed,
                problem=arrived.problem,
                stored=known_ids.get(signed.id),
                known_sender=known,
                policy=self.policy,
                request=self._request_for(signed, decided_at),
                now_ms=decided_at,
            )
            receipt = self._receipt_for(signed, verdict, decided_at)
            if verdict.action is Action.REPEAT:
                self._emit(PeerEvent("duplicate", signed.id.hex()))
            elif verdict.action is Action.CONFLICT:
                self._emit(PeerEvent("conflict", signed.id.hex()))
            elif verdict.action is Action.QUARANTINE:
                quarantine_index.append(len(answers))
                to_quarantine.append((signed, receipt))
            elif verdict.action is Action.RECORD:
                store_index.append(len(answers))
                to_store.append((signed, receipt))
            answers.append((run, receipt))
        if to_store:
            stored = await self.ledger.write_off_loop(
                lambda: self._commit_incoming(to_store, decided_at)
            )  # the COMMIT in a thread: the sessions keep reading and verifying meanwhile
            for index, (receipt, row) in zip(store_index, stored, strict=True):
                answers[index] = (answers[index][0], receipt)
                if row is not None:  # written now (not a repeat or a loser within the batch)
                    self._on_recorded(row)
        if to_quarantine:
            kept = self._quarantine(to_quarantine, decided_at)
            for index, receipt in zip(quarantine_index, kept, strict=True):
                answers[index] = (answers[index][0], receipt)
        await self._hooks.after_commit(self, [r for _, r in answers])
        by_run: dict[_SessionRun, list[SignedReceipt]] = {}
        for run, receipt in answers:
            by_run.setdefault(run, []).append(receipt)
        for run, receipts in by_run.items():
            await self._answer(run, receipts)

    def _on_recorded(self, row: TransferRow) -> None:
        self._emit(PeerEvent("recorded", row=row))
        if self._first_recorded is not None and not self._first_recorded.done():
            self._first_recorded.set_result(row)

    async def _answer(self, run: _SessionRun, receipts: list[SignedReceipt]) -> None:
        """Send one session's receipts of a batch (in as few records as its peer reads).

        A failure ends that session only, never the batch's others.
        """
        run.unanswered -= len(receipts)
        if not run.session.is_open:
            return
        try:
            run.session.send_receipts(receipts)
            await self._flush(run)
        except P2PTransferError as exc:
            _fail_run(run, exc)
