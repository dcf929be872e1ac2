"""The peer runtime: one identity on a relay, running sessions, keeping the ledger true.

This is the only place where the protocol core, the relay connection and the
ledger meet, and where the exactly-once rules are enforced. :class:`Peer` is
assembled from three parts:

* this module: the relay connection, the one reader that routes every frame
  to its session, admission of new incoming sessions, and reconnecting;
* :mod:`.outgoing`: the sender (a transfer is pending before its first byte
  leaves and ends only with a receipt that verifies against it);
* :mod:`.incoming`: the receiver (validate, judge, commit together with the
  receipt, then answer; group commit);

on the session moves in :mod:`.sessions`.

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

SQLite runs on the event loop thread, except the COMMIT (the fsync) of the
hot writes — a group commit, a batch of receipts, a chunk of a long send —
which runs in the ledger's committer thread
(:meth:`~p2ptransfer.storage.store.Store.write_off_loop`), so the loop keeps
serving other sessions meanwhile; a ledger read issued during that COMMIT
(say, the contact lookup for a new session) waits for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..clock import now_ms
from ..errors import (
    MailUnavailable,
    NetworkError,
    P2PTransferError,
    PeerOffline,
    ProtocolError,
    SessionTimeout,
)
from ..protocol.acceptance import AcceptancePolicy
from ..protocol.identity import Identity
from ..protocol.relay_limits import split_relay_urls
from ..protocol.session import FrameKind, Session, TransferArrived, parse_frame
from ..protocol.transfer import SignedTransfer
from ..storage.ledger import Ledger, TransferRow
from ..storage.prekeys import PrekeyStore
from .incoming import COMMIT_QUEUE, Incoming
from .mail import MAILBOX_SIZE, Collected
from .outgoing import Outgoing, SendOutcome
from .reconcile import ReconcileReport, Reconciling
from .relay_client import KEEPALIVE, Deliver, Mail, Offline, RelayClient
from .requests import Requesting
from .sessions import (
    DEFAULT_WINDOW,
    MAX_BATCH,
    FaultHooks,
    PeerEvent,
    PeerStats,
    _fail_run,
    _offer,
    _SessionRun,
)

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_BATCH",
    "AcceptancePolicy",
    "FaultHooks",
    "Peer",
    "PeerEvent",
    "PeerStats",
    "ReconcileReport",
    "SendOutcome",
    "now_ms",
]

log = logging.getLogger("p2ptransfer.peer")

_MAX_SESSIONS = 64  # contacts' sessions, both directions
_MAX_SESSIONS_PER_REMOTE = 8
_MAX_STRANGER_SESSIONS = 16  # incoming sessions from non-contacts, all together
_EARLY_HELLOS = 16  # first frames of sessions that came before serving started
_EARLY_HELLOS_PER_ADDRESS = 2
_EARLY_HELLO_AGE = 5.0  # seconds such a frame is kept (its sender's handshake waits 15)


class Peer(Reconciling, Requesting, Outgoing, Incoming):
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
        prekeys_path: Path | None = None,
        keepalive: float = KEEPALIVE,
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
        self._keepalive = keepalive
        self._client: RelayClient | None = None
        self._next_relay = 0
        """Where a reconnect starts in the relay list (the one after the relay last used)."""
        self._reader: asyncio.Task[None] | None = None
        self._runs: dict[tuple[str, bytes], _SessionRun] = {}
        # Incoming sessions from addresses that are not contacts, oldest first (a subset
        # of _runs): they share a small group of slots with eviction.
        self._strangers: collections.OrderedDict[tuple[str, bytes], _SessionRun] = (
            collections.OrderedDict()
        )
        self._serving: set[asyncio.Task[None]] = set()
        self._accepting = False
        self._early_hellos: list[tuple[str, bytes, bytes, float]] = []
        """Sessions' first frames that came before serving started (remote, tag, frame, when)."""
        self._first_recorded: asyncio.Future[TransferRow] | None = None  # receive() waiting
        self._commit_queue: asyncio.Queue[tuple[_SessionRun, TransferArrived]] = asyncio.Queue(
            COMMIT_QUEUE
        )
        self._committer: asyncio.Task[None] | None = None
        self._disconnected = asyncio.Event()
        self.stats = PeerStats()
        # Offline delivery (``prekeys_path``: where our prekeys' private halves live; None:
        # this peer neither publishes prekeys nor opens mail),
        # mail pushed by the relay waiting to be handled, and whether incoming transfers in
        # it are collected now (sync, receive, listen) or left at the relay.
        self._prekeys = None if prekeys_path is None else PrekeyStore(prekeys_path, identity)
        self._mail: asyncio.Queue[Mail] = asyncio.Queue(MAILBOX_SIZE)
        self._collecting = False
        self._held: list[Mail] = []
        self._collected = Collected()
        self._mailer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- connection -------------------------------------------------------------

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
            keepalive=options.get("keepalive", KEEPALIVE),
        )
        try:
            peer = cls(pending.result(), ledger, relay_url, **options)
        except BaseException:  # e.g. a ledger that belongs to another identity
            await client.close()
            raise
        peer._attach(client)
        await peer._after_connect()
        return peer

    async def __aenter__(self) -> Peer:
        if self._client is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and authenticate to the relay (RelayUnreachable on failure).

        With several relays (the nodes of one cluster) a reconnect starts at
        the one after the relay last used: the lost one is the least likely
        to answer.
        """
        client = await RelayClient.connect(
            self.relay_url,
            self.identity,
            open_timeout=self._connect_timeout,
            ssl=self._ssl,
            start=self._next_relay,
            keepalive=self._keepalive,
        )
        self._attach(client)
        await self._after_connect()

    def _attach(self, client: RelayClient) -> None:
        self._client = client
        relays = split_relay_urls(self.relay_url)
        self._next_relay = (relays.index(client.url) + 1) if client.url in relays else 0
        self._disconnected.clear()
        self._reader = asyncio.create_task(self._read_loop(client), name="peer-reader")
        if self._prekeys is not None and (self._mailer is None or self._mailer.done()):
            self._mailer = asyncio.create_task(self._mail_loop(), name="peer-mail")
        self._emit(PeerEvent("connected", client.url))

    async def close(self) -> None:
        """Stop serving, end sessions and disconnect."""
        self._accepting = False
        tasks = [t for t in (self._reader, self._committer, self._mailer) if t is not None]
        tasks += [*self._serving, *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._reader = self._committer = self._mailer = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

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

    async def _read_loop(self, client: RelayClient) -> None:
        """Route every frame from the relay to its session; this is the only reader."""
        try:
            while True:
                message = await client.recv()
                if isinstance(message, Offline):
                    self._fail_sessions_to(message.to, PeerOffline(f"{message.to} went offline"))
                elif isinstance(message, Deliver):
                    self._route(message.sender, message.payload)
                elif isinstance(message, Mail):
                    self._on_mail(message)
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
        elif frame.kind is FrameKind.HELLO and not self._accepting:
            # Connected but not serving yet (receive/listen is still starting: prekeys,
            # mail): keep the first frame of a new session for a moment instead of
            # letting its sender wait out a timeout.
            self._keep_early_hello(remote, tag, payload)
        # Anything else belongs to a session this process does not own
        # (another connection of our address, or a stale one): ignore it.

    def _keep_early_hello(self, remote: str, tag: bytes, payload: bytes) -> None:
        """Keep a session's first frame until serving starts: bounded, contacts first.

        One per session tag, two per address; when all the places are taken a
        contact's frame takes a stranger's place, never the other way round,
        so throwaway keys cannot push a contact back to its handshake timeout.
        """
        now = asyncio.get_running_loop().time()
        early = self._early_hellos
        early[:] = [e for e in early if now - e[3] <= _EARLY_HELLO_AGE]  # stale ones go first
        if any(r == remote and t == tag for r, t, _, _ in early):
            return
        if sum(1 for r, _, _, _ in early if r == remote) >= _EARLY_HELLOS_PER_ADDRESS:
            return
        if len(early) >= _EARLY_HELLOS:
            if not self._is_contact(remote):
                return
            strangers = [i for i, (r, _, _, _) in enumerate(early) if not self._is_contact(r)]
            if not strangers:
                return
            del early[strangers[0]]  # the oldest stranger's
        early.append((remote, tag, payload, now))

    def _start_accepting(self) -> None:
        super()._start_accepting()
        early, self._early_hellos = self._early_hellos, []
        now = asyncio.get_running_loop().time()
        for remote, _, payload, arrived in early:
            if now - arrived <= _EARLY_HELLO_AGE:
                self._route(remote, payload)

    # --- live first, then the mailbox --------------------------------------------

    async def is_online(self, address: str, timeout: float = 0.5) -> bool:
        """Whether ``address`` is connected to the relay (waiting at most ``timeout`` s)."""
        try:
            await self._require_client().wait_online(address, timeout)
        except PeerOffline:
            return False
        return True

    async def deliver_or_queue(
        self, transfers: Sequence[SignedTransfer], *, wait: float, timeout: float
    ) -> list[SendOutcome | TransferRow]:
        """Deliver live for ``wait`` s; leave what is still pending in the recipient's mailbox.

        Returns, per transfer, its outcome (a receipt arrived) or its queued
        row. A recipient that cannot be mailed (no valid prekey) is tried live
        until ``timeout`` instead; then PeerOffline/SessionTimeout name what
        stays pending. A transfer is queued only when no session completed it
        within ``wait`` — presence alone decides nothing.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            return list(await self.deliver(transfers, timeout=min(wait, timeout)))
        except (PeerOffline, SessionTimeout) as offline:
            waiting = set(offline.pending)
            remaining = [t for t in transfers if t.id in waiting]
            try:
                queued = {row.id: row for row in await self.queue(remaining)}
            except MailUnavailable as no_mail:
                left = deadline - loop.time()
                try:
                    if left <= 0:
                        raise offline
                    log.info("%s; trying live for %.0f s more", no_mail, left)
                    delivered = await self.deliver(remaining, timeout=left)
                except (PeerOffline, SessionTimeout) as still:
                    who = self._name_of(transfers[0].transfer.recipient)
                    raise MailUnavailable(
                        f"{who} did not come online within {timeout:g} s and cannot be mailed: "
                        f"{no_mail}",
                        still.pending,
                    ) from still
                outcomes = {o.row.id: o for o in delivered}
                return [self._settled(t, outcomes) for t in transfers]
            return [self._settled(t, queued) for t in transfers]

    async def resend_or_queue(
        self, transfer_ids: Sequence[bytes] | None, *, wait: float, timeout: float
    ) -> list[SendOutcome | TransferRow]:
        """:meth:`resend` with :meth:`deliver_or_queue`: queued ones are deposited again."""
        results: list[SendOutcome | TransferRow] = []
        for batch in self._waiting_by_recipient(transfer_ids):
            results += await self.deliver_or_queue(batch, wait=wait, timeout=timeout)
        return results

    def _settled(
        self, signed: SignedTransfer, known: Mapping[bytes, SendOutcome | TransferRow]
    ) -> SendOutcome | TransferRow:
        """What became of ``signed``: from ``known``, else its row (settled meanwhile)."""
        found = known.get(signed.id)
        if found is not None:
            return found
        row = self.ledger.get_transfer(signed.id, "out")
        receipt = row.receipt
        return SendOutcome(row, receipt) if receipt is not None else row

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
