"""Running sessions: what both sides of the peer runtime share.

A :class:`~p2ptransfer.protocol.session.Session` is pure; here it meets the
relay. Each running session (a :class:`_SessionRun`) owns a bounded inbox
that the peer's one reader fills; the task that runs the session waits on
that inbox, feeds each frame to the session and sends what the session
wants sent. :class:`SessionHost` holds those moves as small methods —
open a session, wait for its handshake, wait for its events, flush — so the
sender side, the receiver side and any later kind of exchange build on the
same pieces instead of each writing its own loop. The protocol rules live in
the session; a task here only reacts to its events.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import NetworkError, P2PTransferError, ProtocolError, SessionTimeout
from ..protocol import reconcile
from ..protocol.acceptance import AcceptancePolicy, Action, Verdict
from ..protocol.amounts import format_amount
from ..protocol.identity import Identity, PublicIdentity
from ..protocol.receipt import RejectReason, SignedReceipt, accept, reject
from ..protocol.reconcile import Reconciliation
from ..protocol.request import PaymentRequest, RequestState, SignedRequest, SignedRequestAnswer
from ..protocol.session import Aborted, Event, Frame, Session
from ..protocol.transfer import SignedTransfer
from ..storage.ledger import Ledger, TransferRow
from ..storage.transfers import Recorded
from .relay_client import RelayClient

__all__ = ["FaultHooks", "PeerEvent", "PeerStats", "SessionHost"]

log = logging.getLogger("p2ptransfer.peer")

DEFAULT_WINDOW = 32
MAX_BATCH = 256
HANDSHAKE_TIMEOUT = 15.0
_INBOX_FRAMES = 4 * DEFAULT_WINDOW  # frames waiting for one session's task


@dataclass(frozen=True)
class PeerEvent:
    """Something a user interface may want to show (``listen``'s live view)."""

    # connected, disconnected, session, recorded, duplicate, conflict, quarantined,
    # session-failed
    kind: str
    detail: str = ""
    row: TransferRow | None = None


@dataclass
class PeerStats:
    """Counters for benchmarks and tests: how well group commit is batching."""

    commits: int = 0
    largest_batch: int = 0


class FaultHooks:
    """Test seams at the points where a crash or a cut matters for exactly-once.

    Each hook is awaited at its point; a hook may raise (simulating a crash of
    this step) or cut the connection. Production code passes none.
    """

    async def before_transfer_sent(self, peer: SessionHost, signed: SignedTransfer) -> None:
        """Sender: the transfer is pending in the ledger, nothing sent yet."""

    async def after_receipt_received(self, peer: SessionHost, receipt: SignedReceipt) -> None:
        """Sender: the receipt arrived, not yet stored."""

    async def after_commit(self, peer: SessionHost, receipts: Sequence[SignedReceipt]) -> None:
        """Receiver: transfers and receipts committed, receipts not yet sent."""

    async def after_deposit(self, peer: SessionHost, transfer_ids: Sequence[bytes]) -> None:
        """Sender: transfers deposited in the recipient's mailbox, not yet marked queued."""

    async def after_mail_committed(self, peer: SessionHost, receipt: SignedReceipt) -> None:
        """Recipient: a mailed transfer's outcome committed; its receipt not yet deposited."""

    async def after_receipt_deposited(self, peer: SessionHost, receipt: SignedReceipt) -> None:
        """Recipient: the receipt for a mailed transfer deposited; the mail not yet acked."""


class _SessionRun:
    """A session plus the queue its frames arrive on."""

    def __init__(self, session: Session, remote: str) -> None:
        self.session = session
        self.remote = remote
        self.inbox: asyncio.Queue[Frame | BaseException] = asyncio.Queue(_INBOX_FRAMES)
        self.unanswered = 0  # responder: transfers received minus receipts sent
        self.reconciliation: Reconciliation | None = None  # responder: a reconcile under way
        self.reconciled = False  # responder: what the reconcile proved is recorded


class SessionHost(abc.ABC):
    """The state both sides use and the small moves of one session over the relay.

    :class:`~p2ptransfer.net.peer.Peer` sets these attributes and supplies
    the connection (:meth:`connect`, :meth:`_drop_connection`).
    """

    identity: Identity
    ledger: Ledger
    policy: AcceptancePolicy
    _collecting: bool  # handle incoming transfers in mail (sync, receive, listen)
    stats: PeerStats
    _client: RelayClient | None
    _runs: dict[tuple[str, bytes], _SessionRun]
    _hooks: FaultHooks
    _on_event: Callable[[PeerEvent], None] | None
    _max_records: int | None
    _window: int
    _disconnected: asyncio.Event

    @property
    def address(self) -> str:
        return self.identity.address

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect and authenticate to the relay (RelayUnreachable on failure)."""

    async def _drain_mail(self, timeout: float) -> None:  # noqa: B027 - a no-op unless mail runs
        """Let mail being handled finish (its receipt deposited, acknowledged)."""

    def _start_collecting(self) -> None:
        """Handle incoming transfers in mail from now on (the mail part does it)."""
        self._collecting = True

    @abc.abstractmethod
    def _on_recorded(self, row: TransferRow) -> None:
        """A new incoming transfer was committed (the receiving side reports it)."""

    @abc.abstractmethod
    def _is_contact(self, remote: str) -> bool:
        """Is ``remote`` (a relay-authenticated address) one of our pinned contacts?"""

    # --- the receiver's moves, the same for live and mailed transfers --------------

    def _receipt_for(self, signed: SignedTransfer, verdict: Verdict, at: int) -> SignedReceipt:
        """The receipt a verdict calls for: the stored one for a repeat, else ours, signed now."""
        if verdict.action is Action.REPEAT:
            assert verdict.stored is not None
            return verdict.stored
        if verdict.reason is None:
            return accept(self.identity, signed, at)
        return reject(self.identity, signed, verdict.reason, at)

    def _commit_incoming(
        self, items: Sequence[tuple[SignedTransfer, SignedReceipt]], at: int
    ) -> list[Recorded]:
        """Record incoming transfers in one transaction; a conflict or an unmet request is
        answered, inside it, with our signed rejection instead."""
        return self.ledger.record_incoming_batch(
            items,
            at,
            on_conflict=lambda s: reject(self.identity, s, RejectReason.CONFLICT, at),
            on_request=lambda s, why: reject(self.identity, s, why, at),
        )

    def _quarantine(
        self, items: Sequence[tuple[SignedTransfer, SignedReceipt]], at: int
    ) -> list[SignedReceipt]:
        """Keep strangers' transfers aside (not journaled); return the answers to send."""
        answers = self.ledger.quarantine_many(items, at)
        for signed, _ in items:
            t = signed.transfer
            shown = f"{format_amount(t.amount, t.currency)} {t.currency}"
            self._emit(PeerEvent("quarantined", f"{shown} from {t.sender} id {t.id.hex()}"))
        return answers

    def _request_for(
        self, signed: SignedTransfer, now_ms: int
    ) -> tuple[PaymentRequest, RequestState] | None:
        """The request ``signed`` pays, as our ledger holds it (None: none, or no request)."""
        return None

    def _on_request(self, sender: str, signed: SignedRequest) -> None:
        """A payment request arrived (the Requesting part keeps it)."""
        raise ProtocolError("this peer does not take payment requests")

    def _on_request_answer(self, signed: SignedRequestAnswer) -> None:
        """A decline or cancellation arrived (the Requesting part records it)."""
        raise ProtocolError("this peer does not take payment requests")

    async def _answer_reconcile(self, run: _SessionRun, message: reconcile.Message) -> None:
        """Responder: a reconcile message arrived (the Reconciling part answers it)."""
        raise ProtocolError("this peer does not answer reconciliation")

    @abc.abstractmethod
    async def _drop_connection(self) -> None:
        """Forget the relay connection (before reconnecting); sessions and serving stay."""

    def _require_client(self) -> RelayClient:
        if self._client is None:
            raise NetworkError("not connected to the relay")
        return self._client

    def _emit(self, event: PeerEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a display callback must never break the runtime
                log.exception("event callback failed")

    async def _open_session(
        self, remote: PublicIdentity, deadline: float, *, offer_batches: bool = False
    ) -> _SessionRun:
        """Start a session to ``remote`` and wait until its handshake is done.

        ``offer_batches``: tell the responder we read RECEIPTS records (a
        FEATURES frame after the HELLO), for a session that may batch.

        The run is registered (so the reader routes its frames) before the
        first frame leaves; the caller must end it with :meth:`_end_session`.
        Raises on a failed handshake, an abort, or no answer by ``deadline``
        (the loop's clock) or within the handshake timeout.
        """
        tag = secrets.token_bytes(16)
        session = Session.initiate(
            self.identity,
            remote,
            tag=tag,
            ephemeral_private=secrets.token_bytes(32),
            nonce=secrets.token_bytes(32),
            max_records=self._max_records,
        )
        if offer_batches:
            session.offer_batches()
        run = _SessionRun(session, remote.address)
        self._runs[(remote.address, tag)] = run
        try:
            await self._flush(run)
            await self._handshake(run, deadline)
        except BaseException:
            await self._abandon_session(run)
            await self._end_session(run)
            raise
        return run

    async def _handshake(self, run: _SessionRun, deadline: float) -> None:
        """Wait until ``run``'s session is open (the initiator's side of the handshake)."""
        loop = asyncio.get_running_loop()
        while not run.session.is_open:
            timeout = min(HANDSHAKE_TIMEOUT, _left(loop, deadline))
            for event in await self._events(run, timeout):
                if isinstance(event, Aborted):
                    raise ProtocolError("the peer aborted the handshake")

    async def _end_session(self, run: _SessionRun) -> None:
        """Close ``run``'s session (cleanly if open) and stop routing its frames."""
        session = run.session
        try:
            if session.is_open:
                session.close()
                await self._flush(run)
        finally:
            self._runs.pop((run.remote, session.tag), None)

    async def _abandon_session(self, run: _SessionRun) -> None:
        """Tell the peer we gave up on a session that is not finished (best effort)."""
        if not run.session.finished:
            run.session.abort()
            with contextlib.suppress(Exception):
                await self._flush(run)

    async def _flush(self, run: _SessionRun) -> None:
        client = self._require_client()
        for payload in run.session.data_to_send():
            await client.send(run.remote, payload)

    async def _events(self, run: _SessionRun, timeout: float) -> list[Event]:
        """Wait for the next frame of ``run`` and feed it to its session.

        A frame the session refuses raises (the session is then in ERROR); so
        does an error queued for the run, or ``timeout`` seconds of silence.
        """
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands
            # as the inbox delivers, and close() then waits out the whole idle timeout.
            async with asyncio.timeout(timeout):
                item = await run.inbox.get()
        except TimeoutError:
            raise SessionTimeout(f"no answer from {run.remote} within {timeout:.0f} s") from None
        if isinstance(item, BaseException):
            raise item
        events = run.session.receive_frame(item)
        await self._flush(run)
        return events

    async def _events_already_here(self, run: _SessionRun) -> list[Event]:
        """Feed every frame already waiting for ``run`` to its session, without waiting.

        An error waiting in the inbox, or the one the session raises on a frame
        it refuses (it is then in ERROR), is queued again for the next
        :meth:`_events`: the events of the frames before it are returned
        first, so they are still handled (receipts stored).
        """
        events: list[Event] = []
        while not run.inbox.empty():
            item = run.inbox.get_nowait()
            if isinstance(item, BaseException):
                _fail_run(run, item)  # handled by the next wait, after these events
                break
            try:
                events += run.session.receive_frame(item)
            except P2PTransferError as exc:
                _fail_run(run, exc)
                break
        await self._flush(run)
        return events


def _offer(run: _SessionRun, item: Frame | BaseException) -> bool:
    try:
        run.inbox.put_nowait(item)
    except asyncio.QueueFull:
        return False
    return True


def _fail_run(run: _SessionRun, exc: BaseException) -> None:
    """Make ``run``'s task raise ``exc`` next, even if its inbox is full.

    The frames still queued are dropped first (a failing session's frames no
    longer matter): were they left in front, the task would fail on the gap
    they leave ("record out of sequence") instead of on the real reason. An
    error already queued wins over a later one.
    """
    first: BaseException | None = None
    while not run.inbox.empty():
        item = run.inbox.get_nowait()
        if isinstance(item, BaseException) and first is None:
            first = item
    run.inbox.put_nowait(first or exc)


def _left(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    return max(0.0, deadline - loop.time())


async def _wait_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


async def _wait_first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
