"""The peer runtime: one identity on a relay, running sessions, keeping the ledger true.

This is the only place where the protocol core, the relay connection and the
ledger meet, and where the exactly-once rules are enforced:

* **Sender.** A transfer is signed and committed to the ledger as *pending*
  before its first byte leaves the machine. It becomes *completed* or
  *rejected* only with a receipt that verifies against it. Any failure in
  between (relay gone, session aborted, timeout) leaves it pending; retries
  (within one ``send`` or later with ``resend``) reuse the same signed bytes,
  hence the same id. A timeout alone never turns pending into failed.
* **Receiver.** A transfer is validated, judged by the acceptance policy,
  answered with a signed receipt and committed *together with that receipt*
  in one SQLite transaction, and only then is the receipt sent. A repeated id
  with the same content gets the stored receipt again; with different content
  a signed CONFLICT rejection that is not stored.
* **Group commit.** Transfers that arrive while a commit is running are
  committed together in the next transaction, so a sender with many
  transfers in flight costs one fsync per batch, not per transfer.

Several connections of one address may exist (the relay fans frames out to
all of them), so frames of sessions this process does not own are ignored
silently, never answered. They should share one home: two homes with one
identity would split its transfers between two ledgers.

Bounds, because the other side may be hostile: frames waiting per session,
transfers unanswered per session, sessions per remote and in all, a session's
idle time and lifetime, and the commit queue are all capped; exceeding one
ends that session only. Strangers (addresses that are not contacts) share one
small group of session slots, oldest half-open first out, so throwaway keys
can never crowd out a contact; their transfers are answered and quarantined,
never journaled (see :mod:`..protocol.acceptance`).

SQLite runs on the event loop thread: a group commit (one fsync) stalls the
loop for its duration. Batching keeps that to one stall per batch; moving the
ledger to a worker thread is the next step if fsyncs get slow.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..clock import now_ms
from ..errors import (
    IdentityError,
    NetworkError,
    P2PTransferError,
    PeerOffline,
    ProtocolError,
    SessionTimeout,
)
from ..protocol.acceptance import AcceptancePolicy, Action, decide
from ..protocol.amounts import format_amount
from ..protocol.identity import Identity, PublicIdentity
from ..protocol.session import (
    Aborted,
    Established,
    Event,
    Frame,
    FrameKind,
    PeerClosed,
    ReceiptArrived,
    Session,
    TransferArrived,
    abort_frame,
    parse_frame,
)
from ..protocol.transfer import (
    RejectReason,
    SignedReceipt,
    SignedTransfer,
    Transfer,
    accept,
    reject,
    sign_transfer,
)
from ..storage.ledger import Ledger, TransferRow
from .relay_client import Deliver, Offline, RelayClient

__all__ = [
    "AcceptancePolicy",
    "FaultHooks",
    "Peer",
    "PeerEvent",
    "PeerStats",
    "SendOutcome",
    "now_ms",
]

log = logging.getLogger("p2ptransfer.peer")

DEFAULT_WINDOW = 32
MAX_BATCH = 256
_BATCH_YIELDS = 16
_SESSION_ATTEMPTS = 5
_HANDSHAKE_TIMEOUT = 15.0
_IDLE_SESSION_TIMEOUT = 60.0
_RECEIPT_SILENCE = 10.0  # sender: no frame for this long with transfers in flight -> retry
_MAX_SESSION_LIFETIME = 600.0  # a session kept alive by a trickle of frames still ends
_INBOX_FRAMES = 4 * DEFAULT_WINDOW  # frames waiting for one session's task
_MAX_UNANSWERED = 4 * DEFAULT_WINDOW  # transfers of one session not yet answered
_COMMIT_QUEUE = 4 * MAX_BATCH  # transfers waiting for the committer, all sessions
_MAX_SESSIONS = 64  # contacts' sessions, both directions
_MAX_SESSIONS_PER_REMOTE = 8
_MAX_STRANGER_SESSIONS = 16  # incoming sessions from non-contacts, all together


@dataclass(frozen=True)
class SendOutcome:
    """The end of one outgoing transfer: its ledger row (completed or rejected) and receipt."""

    row: TransferRow
    receipt: SignedReceipt

    @property
    def accepted(self) -> bool:
        return self.receipt.receipt.accepted


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

    async def before_transfer_sent(self, peer: Peer, signed: SignedTransfer) -> None:
        """Sender: the transfer is pending in the ledger, nothing sent yet."""

    async def after_receipt_received(self, peer: Peer, receipt: SignedReceipt) -> None:
        """Sender: the receipt arrived, not yet stored."""

    async def after_commit(self, peer: Peer, receipts: Sequence[SignedReceipt]) -> None:
        """Receiver: transfers and receipts committed, receipts not yet sent."""


class _SessionRun:
    """A session plus the queue its frames arrive on."""

    def __init__(self, session: Session, remote: str) -> None:
        self.session = session
        self.remote = remote
        self.inbox: asyncio.Queue[Frame | BaseException] = asyncio.Queue(_INBOX_FRAMES)
        self.unanswered = 0  # responder: transfers received minus receipts sent


class Peer:
    """One identity connected to one relay; see the module docstring for the rules."""

    def __init__(
        self,
        identity: Identity,
        ledger: Ledger,
        relay_url: str,
        *,
        policy: AcceptancePolicy | None = None,
        ssl: Any = None,
        max_records: int | None = None,
        window: int = DEFAULT_WINDOW,
        hooks: FaultHooks | None = None,
        on_event: Callable[[PeerEvent], None] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        ledger.unlock(identity)  # refuses another's ledger; signs checkpoints from now on
        self.identity = identity
        self.ledger = ledger
        self.relay_url = relay_url
        self.policy = policy or AcceptancePolicy()
        self._ssl = ssl
        self._max_records = max_records
        self._window = max(1, window)
        self._hooks = hooks or FaultHooks()
        self._on_event = on_event
        self._connect_timeout = connect_timeout
        self._client: RelayClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._runs: dict[tuple[str, bytes], _SessionRun] = {}
        # Incoming sessions from addresses that are not contacts, oldest first (a subset
        # of _runs): they share a small group of slots with eviction.
        self._strangers: collections.OrderedDict[tuple[str, bytes], _SessionRun] = (
            collections.OrderedDict()
        )
        self._serving: set[asyncio.Task[None]] = set()
        self._accepting = False
        self._first_recorded: asyncio.Future[TransferRow] | None = None  # receive() waiting
        self._commit_queue: asyncio.Queue[tuple[_SessionRun, TransferArrived]] = asyncio.Queue(
            _COMMIT_QUEUE
        )
        self._committer: asyncio.Task[None] | None = None
        self._disconnected = asyncio.Event()
        self.stats = PeerStats()

    # --- connection -------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.identity.address

    @classmethod
    async def open(
        cls,
        identity: Awaitable[Identity],
        ledger: Ledger,
        relay_url: str,
        **options: Any,
    ) -> Peer:
        """Connect to the relay while ``identity`` is still being unlocked, then build the peer.

        Unlocking a key file is slow on purpose (scrypt); the relay's
        connection and challenge are fetched meanwhile, so a command pays for
        the slower of the two rather than their sum. A wrong passphrase is
        reported as such, even when the relay is unreachable too.
        """
        pending = asyncio.ensure_future(identity)
        client = await RelayClient.connect(
            relay_url,
            pending,
            open_timeout=options.get("connect_timeout", 10.0),
            ssl=options.get("ssl"),
        )
        peer = cls(pending.result(), ledger, relay_url, **options)
        peer._attach(client)
        return peer

    async def __aenter__(self) -> Peer:
        if self._client is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and authenticate to the relay (RelayUnreachable on failure)."""
        client = await RelayClient.connect(
            self.relay_url, self.identity, open_timeout=self._connect_timeout, ssl=self._ssl
        )
        self._attach(client)

    def _attach(self, client: RelayClient) -> None:
        self._client = client
        self._disconnected.clear()
        self._reader = asyncio.create_task(self._read_loop(client), name="peer-reader")
        self._emit(PeerEvent("connected", self.relay_url))

    async def close(self) -> None:
        """Stop serving, end sessions and disconnect."""
        self._accepting = False
        tasks = [t for t in (self._reader, self._committer) if t is not None]
        tasks += list(self._serving)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._reader = self._committer = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    def _require_client(self) -> RelayClient:
        if self._client is None:
            raise NetworkError("not connected to the relay")
        return self._client

    async def _read_loop(self, client: RelayClient) -> None:
        """Route every frame from the relay to its session; this is the only reader."""
        try:
            while True:
                message = await client.recv()
                if isinstance(message, Offline):
                    self._fail_sessions_to(message.to, PeerOffline(f"{message.to} went offline"))
                elif isinstance(message, Deliver):
                    self._route(message.sender, message.payload)
                else:
                    # The relay dropped one of our frames (rate limit): whichever session it
                    # belonged to now has a gap, so end them all now rather than at timeout.
                    self._fail_all(ProtocolError(f"the relay dropped a frame: {message.detail}"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop boundary: whatever ends it, listen must know
            if not isinstance(exc, P2PTransferError):
                log.exception("relay reader failed")
                exc = NetworkError(f"the relay connection failed: {exc!r}")
            log.info("relay connection lost: %s", exc)
            self._emit(PeerEvent("disconnected", str(exc)))
            self._fail_all(exc)
            self._disconnected.set()

    def _route(self, remote: str, payload: bytes) -> None:
        try:
            frame = parse_frame(payload)  # once: the session reads this same decode
        except P2PTransferError:
            log.debug("dropping malformed frame from %s", remote)
            return
        tag = frame.tag
        run = self._runs.get((remote, tag))
        if run is not None:
            if not _offer(run, frame):
                # The peer sends faster than its session is served: end that session
                # (its frames are already out of sequence), nobody else's.
                _fail_run(run, ProtocolError("the peer flooded the session"))
            return
        if frame.kind is FrameKind.HELLO and self._accepting and self._make_room_for(remote):
            session = Session.respond(
                self.identity,
                tag=tag,
                ephemeral_private=secrets.token_bytes(32),
                max_records=self._max_records,
            )
            run = _SessionRun(session, remote)
            self._runs[(remote, tag)] = run
            if not self._is_contact(remote):
                self._strangers[(remote, tag)] = run
            run.inbox.put_nowait(frame)
            task = asyncio.create_task(self._serve(run), name="peer-serve")
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        # Anything else belongs to a session this process does not own
        # (another connection of our address, or a stale one): ignore it.

    def _is_contact(self, remote: str) -> bool:
        """Is ``remote`` (the relay-authenticated address) one of our pinned contacts?

        The handshake proves the same key later; a relay that lied about the
        address only gets its session a slot it then loses at the handshake.
        """
        try:
            return self.ledger.contact_for_address(remote) is not None
        except P2PTransferError:
            return False

    def _make_room_for(self, remote: str) -> bool:
        """Whether a new incoming session from ``remote`` may start; evict to make room.

        Anyone can mint relay addresses, so strangers (addresses that are not
        contacts) share one small group of :data:`_MAX_STRANGER_SESSIONS`.
        When it is full, the oldest stranger's session that has not finished
        its handshake is dropped for the newcomer, so a flood of openings
        that never complete churns only itself. Contacts have the rest of the
        slots, which strangers can never take; each remote, contact or not,
        holds at most :data:`_MAX_SESSIONS_PER_REMOTE`.
        """
        mine = sum(1 for addr, _tag in self._runs if addr == remote)
        if mine >= _MAX_SESSIONS_PER_REMOTE:
            return False
        if self._is_contact(remote):
            return len(self._runs) - len(self._strangers) < _MAX_SESSIONS
        if len(self._strangers) < _MAX_STRANGER_SESSIONS:
            return True
        for key, run in self._strangers.items():  # oldest first
            if not run.session.is_open and not run.session.finished:
                del self._strangers[key]
                self._runs.pop(key, None)
                _fail_run(run, ProtocolError("session evicted: too many unknown senders"))
                return True
        return False

    def _fail_sessions_to(self, remote: str, exc: BaseException) -> None:
        for (addr, _tag), run in list(self._runs.items()):
            if addr == remote:
                _fail_run(run, exc)

    def _fail_all(self, exc: BaseException) -> None:
        for run in list(self._runs.values()):
            _fail_run(run, exc)

    async def _flush(self, run: _SessionRun) -> None:
        client = self._require_client()
        for payload in run.session.data_to_send():
            await client.send(run.remote, payload)

    async def _next_events(self, run: _SessionRun, timeout: float) -> list[Event]:
        """Wait for the next frame of ``run`` and feed it to its session."""
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
        """Feed every frame already waiting for ``run`` to its session, without waiting."""
        events: list[Event] = []
        while not run.inbox.empty():
            item = run.inbox.get_nowait()
            if isinstance(item, BaseException):
                _fail_run(run, item)  # handled by the next wait, after these events
                break
            events += run.session.receive_frame(item)
        await self._flush(run)
        return events

    def _emit(self, event: PeerEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a display callback must never break the runtime
                log.exception("event callback failed")

    # --- sending ----------------------------------------------------------------

    def prepare(self, recipient: str, amount: int, currency: str, memo: str = "") -> SignedTransfer:
        """Sign a new transfer and commit it as pending: from here it can only end once."""
        (signed,) = self.prepare_many(recipient, [(amount, currency, memo)])
        return signed

    def prepare_many(
        self, recipient: str, items: Iterable[tuple[int, str, str]]
    ) -> list[SignedTransfer]:
        """Sign new transfers and commit them all as pending in one transaction."""
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
                ),
            )
            for amount, currency, memo in items
        ]
        self.ledger.record_outgoing_batch(signed, now_ms())
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
        """Send many (amount, currency, memo) transfers with several in flight per session."""
        return await self.deliver(self.prepare_many(recipient, items), timeout=timeout)

    async def resend(
        self, transfer_ids: Iterable[bytes] | None = None, *, timeout: float = 60.0
    ) -> list[SendOutcome]:
        """Retry pending outgoing transfers (all, or the given ids) with their original bytes."""
        pending = self.ledger.pending_outgoing()
        if transfer_ids is not None:
            wanted = set(transfer_ids)
            pending = [p for p in pending if p.id in wanted]
        by_recipient: dict[str, list[SignedTransfer]] = {}
        for signed in pending:
            by_recipient.setdefault(signed.transfer.recipient, []).append(signed)
        outcomes: list[SendOutcome] = []
        for batch in by_recipient.values():
            outcomes += await self.deliver(batch, timeout=timeout)
        return outcomes

    async def deliver(
        self, transfers: Sequence[SignedTransfer], *, timeout: float = 60.0
    ) -> list[SendOutcome]:
        """Deliver pending transfers to their (single) recipient until each has a receipt.

        Retries across sessions until ``timeout``; raises PeerOffline or
        SessionTimeout if some are still pending then (they stay pending).
        """
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
        last_error: P2PTransferError | None = None
        failures = 0  # sessions that failed; a session ended for rekeying is not one
        while remaining:
            left = deadline - loop.time()
            if left <= 0 or failures >= _SESSION_ATTEMPTS:
                break
            try:
                await self._require_client().wait_online(remote.address, left)
                await self._run_outgoing(remote, remaining, outcomes, deadline)
            except IdentityError:
                raise  # never retry against a key we did not expect
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
            remaining = [t for t in remaining if t.id not in outcomes]
        if remaining:
            if isinstance(last_error, PeerOffline) or last_error is None:
                raise PeerOffline(
                    f"{remote.address} did not come online within {timeout:g} s; "
                    f"{len(remaining)} transfer(s) stay pending (use 'resend')"
                ) from last_error
            raise SessionTimeout(
                f"could not complete delivery to {remote.address} ({last_error}); "
                f"{len(remaining)} transfer(s) stay pending (use 'resend')"
            ) from last_error
        return [outcomes[t.id] for t in transfers]

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

    async def _drop_connection(self) -> None:
        """Forget the relay connection (before reconnecting); sessions and serving stay."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    async def _run_outgoing(
        self,
        remote: PublicIdentity,
        remaining: list[SignedTransfer],
        outcomes: dict[bytes, SendOutcome],
        deadline: float,
    ) -> None:
        """One session: handshake, pipeline transfers, collect receipts."""
        loop = asyncio.get_running_loop()
        tag = secrets.token_bytes(16)
        session = Session.initiate(
            self.identity,
            remote,
            tag=tag,
            ephemeral_private=secrets.token_bytes(32),
            nonce=secrets.token_bytes(32),
            max_records=self._max_records,
        )
        run = _SessionRun(session, remote.address)
        self._runs[(remote.address, tag)] = run
        try:
            await self._flush(run)
            while not session.is_open:
                for event in await self._next_events(
                    run, min(_HANDSHAKE_TIMEOUT, _left(loop, deadline))
                ):
                    if isinstance(event, Aborted):
                        raise ProtocolError("the peer aborted the handshake")
            queue = collections.deque(t for t in remaining if t.id not in outcomes)
            in_flight: dict[bytes, SignedTransfer] = {}
            while queue or in_flight:
                await self._send_more(session, queue, in_flight, self._window)
                await self._flush(run)
                if not in_flight:
                    break  # rekey needed: finish this session, the caller starts another
                # A receiver that vanished (its connection cut, its process killed) sends
                # nothing: give up on this session after a quiet spell and retry, rather
                # than wait out the whole deadline.
                quiet = min(_left(loop, deadline), _RECEIPT_SILENCE)
                events = await self._next_events(run, quiet)
                events += await self._events_already_here(run)  # stored in one commit
                problem: P2PTransferError | None = None
                receipts: list[SignedReceipt] = []
                for event in events:
                    if isinstance(event, ReceiptArrived):
                        receipts.append(event.signed)
                    elif isinstance(event, PeerClosed | Aborted):
                        problem = ProtocolError("the peer ended the session before answering")
                    elif isinstance(event, TransferArrived):
                        problem = ProtocolError("the peer sent a transfer in our session")
                try:
                    if problem is None and queue and session.is_open:
                        # Each receipt frees its place in the window as it arrives (the
                        # peer stopped counting that transfer when it sent the receipt),
                        # so the next transfers leave now and the peer handles them while
                        # we verify and store these receipts. Validity is checked before
                        # anything is stored; an invalid receipt ends the session as
                        # before, leaving its transfer pending.
                        freed = len({r.receipt.transfer_id for r in receipts} & in_flight.keys())
                        if freed:
                            await self._send_more(session, queue, in_flight, self._window + freed)
                            await self._flush(run)
                finally:
                    # The receipts in hand are stored whatever became of the refill (a
                    # crash while sealing the next transfer, the relay lost mid-flush).
                    await self._on_receipts(receipts, in_flight, outcomes)
                if problem is not None:
                    raise problem
            if session.is_open:
                session.close()
                await self._flush(run)
        except BaseException:
            if not session.finished:
                session.abort()
                with contextlib.suppress(Exception):
                    await self._flush(run)
            raise
        finally:
            self._runs.pop((remote.address, tag), None)

    async def _send_more(
        self,
        session: Session,
        queue: collections.deque[SignedTransfer],
        in_flight: dict[bytes, SignedTransfer],
        limit: int,
    ) -> None:
        """Seal transfers from ``queue`` until ``limit`` are in flight (or a rekey is due)."""
        while queue and len(in_flight) < limit and not session.needs_rekey:
            signed = queue.popleft()
            await self._hooks.before_transfer_sent(self, signed)
            session.send_transfer(signed)
            in_flight[signed.id] = signed

    async def _on_receipts(
        self,
        receipts: Sequence[SignedReceipt],
        in_flight: dict[bytes, SignedTransfer],
        outcomes: dict[bytes, SendOutcome],
    ) -> None:
        """Verify receipts against the transfers in flight; store the valid ones in one commit.

        A forged or mismatched receipt ends the session (after the valid ones
        are stored); its transfer stays pending.
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
            rows = self.ledger.complete_outgoing_batch([r for _, r in valid], now_ms())
            for (signed, receipt), row in zip(valid, rows, strict=True):
                del in_flight[signed.id]
                outcomes[signed.id] = SendOutcome(row, receipt)
        if problem is not None:
            raise problem

    # --- receiving --------------------------------------------------------------

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

    def _start_accepting(self) -> None:
        self._accepting = True
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
                timeout = _HANDSHAKE_TIMEOUT if not session.is_open else _IDLE_SESSION_TIMEOUT
                timeout = min(timeout, ends_at - loop.time())
                if timeout <= 0:
                    raise SessionTimeout("session reached its maximum lifetime")
                for event in await self._next_events(run, timeout):
                    if isinstance(event, Established):
                        self._emit(PeerEvent("session", event.peer.address))
                    elif isinstance(event, TransferArrived):
                        run.unanswered += 1
                        if run.unanswered > _MAX_UNANSWERED:
                            raise ProtocolError("the peer has too many transfers in flight")
                        await self._commit_queue.put((run, event))  # bounded: back-pressure
                    elif isinstance(event, ReceiptArrived):
                        raise ProtocolError("the peer sent a receipt in its own session")
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
                if self._commit_queue.qsize() >= MAX_BATCH:
                    break
                await asyncio.sleep(0)
            batch = [first]
            while len(batch) < MAX_BATCH and not self._commit_queue.empty():
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
            )
            if verdict.action is Action.REPEAT:
                assert verdict.stored is not None
                answers.append((run, verdict.stored))
                self._emit(PeerEvent("duplicate", signed.id.hex()))
                continue
            if verdict.reason is None:
                receipt = accept(self.identity, signed, decided_at)
            else:
                receipt = reject(self.identity, signed, verdict.reason, decided_at)
            if verdict.action is Action.CONFLICT:
                self._emit(PeerEvent("conflict", signed.id.hex()))
            elif verdict.action is Action.QUARANTINE:
                quarantine_index.append(len(answers))
                to_quarantine.append((signed, receipt))
            elif verdict.action is Action.RECORD:
                store_index.append(len(answers))
                to_store.append((signed, receipt))
            answers.append((run, receipt))
        if to_store:
            stored = self.ledger.record_incoming_many(
                to_store,
                decided_at,
                lambda s: reject(self.identity, s, RejectReason.CONFLICT, decided_at),
            )
            for index, (receipt, row) in zip(store_index, stored, strict=True):
                answers[index] = (answers[index][0], receipt)
                if row is not None:  # written now (not a repeat or a loser within the batch)
                    self._on_recorded(row)
        if to_quarantine:
            kept = self.ledger.quarantine_many(to_quarantine, decided_at)
            for index, receipt in zip(quarantine_index, kept, strict=True):
                answers[index] = (answers[index][0], receipt)
            for signed, _ in to_quarantine:
                t = signed.transfer
                shown = f"{format_amount(t.amount, t.currency)} {t.currency}"
                self._emit(PeerEvent("quarantined", f"{shown} from {t.sender} id {t.id.hex()}"))
        await self._hooks.after_commit(self, [r for _, r in answers])
        for run, receipt in answers:
            await self._answer(run, receipt)

    def _on_recorded(self, row: TransferRow) -> None:
        self._emit(PeerEvent("recorded", row=row))
        if self._first_recorded is not None and not self._first_recorded.done():
            self._first_recorded.set_result(row)

    async def _answer(self, run: _SessionRun, receipt: SignedReceipt) -> None:
        """Send one receipt; a failure ends that session only, never the batch's others."""
        run.unanswered -= 1
        if not run.session.is_open:
            return
        try:
            run.session.send_receipt(receipt)
            await self._flush(run)
        except P2PTransferError as exc:
            _fail_run(run, exc)


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
