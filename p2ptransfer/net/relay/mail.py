"""The relay's mail service: prekeys, deposits, pushes and acknowledgements.

What a request becomes::

    PublishPrekey  signer must be the connection's address, valid now -> Prekeys{me, newest two}
                   | Refused{bad-prekey | rate-limited}
    GetPrekeys     (the connection's look-up bucket)               -> Prekeys{address, 0-2}
                   | Refused{rate-limited}
    Deposit        size, rates (sender, IP), a valid prekey of ``to``, then the store's
                   rooms and caps; durable -> Deposited, and Mail pushed to every
                   connection of ``to``
                   | Refused{envelope-too-large | rate-limited | no-prekey
                   |         | sender-room-full | mailbox-full}
    Ack            deletes only if the stored envelope still has that hash -> Acked
    on connect     MailInfo right after AuthOk, then every waiting Mail, oldest first

The store is awaited (:class:`~.mailbox.AsyncMailStore`: SQLite in one worker
thread, or the cluster's Redis), so a disk flush or a round trip never
stalls the event loop and every other connection's forwarding. The
requesting connection waits for its answer: its frames stay in order and a
deposit flood slows only its sender.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeAlias

from ...errors import P2PTransferError
from ...protocol.envelope import envelope_hash
from ...protocol.prekey import SignedPrekey
from ...protocol.relay_wire import (
    Ack,
    Acked,
    ClientFrame,
    Deposit,
    Deposited,
    GetPrekeys,
    Mail,
    MailInfo,
    Prekeys,
    PublishPrekey,
    Refused,
)
from .config import RelayConfig
from .connection import Conn, Outbox
from .limits import BucketMap, TokenBucket
from .logs import log_event
from .mailbox import (
    AsyncMailStore,
    MailLimits,
    MemoryMailStore,
    SqliteMailStore,
    StoredMail,
    StoredPrekey,
    StoreUnavailable,
    ThreadedMailStore,
)
from .metrics import Metrics
from .routes import Routes

__all__ = ["MAIL_REQUESTS", "MailRequest", "MailService", "mail_limits", "open_store"]

MailRequest: TypeAlias = PublishPrekey | GetPrekeys | Deposit | Ack
MAIL_REQUESTS = (PublishPrekey, GetPrekeys, Deposit, Ack)
"""The frames :meth:`MailService.answer` takes."""

PREKEY_SKEW_MS = 5 * 60_000
"""Clock skew tolerated on a published prekey's validity window."""


def mail_limits(config: RelayConfig) -> MailLimits:
    """The mailbox limits ``config`` sets (every store applies the same)."""
    return MailLimits(
        max_items=config.max_mail_items,
        max_per_sender=config.max_mail_per_sender,
        max_bytes=config.max_mailbox_bytes,
        max_age_ms=config.max_mail_age_ms,
    )


def open_store(config: RelayConfig) -> AsyncMailStore:
    """The one-node store ``config`` asks for: SQLite in ``data_dir``, else in memory."""
    limits = mail_limits(config)
    if config.data_dir is None:
        return ThreadedMailStore(MemoryMailStore(limits))
    return ThreadedMailStore(SqliteMailStore(config.data_dir, limits))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class MailService:
    """Answers an authenticated connection's mail requests and pushes its mail."""

    def __init__(
        self,
        config: RelayConfig,
        metrics: Metrics,
        store: AsyncMailStore,
        routes: Routes[Conn],
        outbox: Outbox,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.store = store
        self.routes = routes
        self.outbox = outbox
        self.clock = clock
        """Milliseconds since the epoch (tests move it to expire mail)."""
        hour = 3600.0
        self._deposits_by_address = BucketMap(config.deposit_rate / hour, config.deposit_burst)
        self._deposits_by_ip = BucketMap(
            config.deposit_rate_per_ip / hour, config.deposit_burst_per_ip
        )
        self._publishes = BucketMap(config.claim_rate, config.claim_burst)
        self.info = MailInfo(config.max_mail_age_ms, config.max_envelope).encode()
        """The MailInfo frame every connection gets right after AuthOk."""
        # Through self.store, read at each scrape: a test may swap the store.
        metrics.gauge(
            "p2pt_relay_mail_items", "Pieces of mail waiting.", lambda: self.store.mail_count()
        )
        metrics.gauge(
            "p2pt_relay_mail_bytes", "Envelope bytes waiting.", lambda: self.store.mail_bytes()
        )
        metrics.gauge(
            "p2pt_relay_prekeys", "Signed prekeys kept.", lambda: self.store.prekey_count()
        )
        metrics.counter(
            "p2pt_relay_mail_expired_total",
            "Pieces of mail deleted unacknowledged for age.",
            lambda: self.store.expired_count(),
        )

    # --- requests ---------------------------------------------------------------

    async def answer(self, conn: Conn, address: str, frame: MailRequest) -> bytes:
        """The answer to ``frame`` from ``conn`` (authenticated as ``address``).

        A store that fails (disk full, I/O error, Redis lost) refuses the
        request as ``unavailable`` and keeps the connection: nothing was confirmed.
        """
        try:
            return await self._answer(conn, address, frame)
        except StoreUnavailable as exc:
            log_event(logging.ERROR, "mail", str(exc), conn=conn.cid)
            return self.refusal(frame, "unavailable", "the relay cannot store mail right now")

    async def _answer(self, conn: Conn, address: str, frame: MailRequest) -> bytes:
        if isinstance(frame, Deposit):
            return await self.deposit(conn, address, frame)
        if isinstance(frame, Ack):
            return await self.ack(address, frame)
        if isinstance(frame, GetPrekeys):
            return await self.get_prekeys(conn, frame)
        return await self.publish_prekey(conn, address, frame)

    async def publish_prekey(self, conn: Conn, address: str, frame: PublishPrekey) -> bytes:
        """Keep a prekey signed by ``address`` itself, valid now; answer with what is kept."""
        if not self._publishes.take(address):
            return self.refusal(frame, "rate-limited", "too many prekey publications; slow down")
        now = self.clock()
        try:
            signed = SignedPrekey.decode(frame.signed_prekey)
            signed.check_for(address, now, PREKEY_SKEW_MS)
        except (P2PTransferError, ValueError) as exc:
            return self.refusal(frame, "bad-prekey", _sentence(exc))
        prekey = signed.prekey
        stored = StoredPrekey(
            address, prekey.prekey_id, prekey.not_before, prekey.not_after, frame.signed_prekey
        )
        kept = await self.store.publish_prekey(stored, now)
        self.metrics.prekey_publishes += 1
        log_event(logging.DEBUG, "prekey", "prekey published", conn=conn.cid)
        return Prekeys(frame.ref, address, tuple(p.signed for p in kept)).encode()

    async def get_prekeys(self, conn: Conn, frame: GetPrekeys) -> bytes:
        """``frame.address``'s valid prekeys; spends the connection's look-up bucket."""
        if conn.lookups is None:
            cfg = self.config
            conn.lookups = TokenBucket(cfg.lookup_rate, cfg.lookup_burst)
        if not conn.lookups.take():
            return self.refusal(frame, "rate-limited", "too many look-ups; slow down")
        now = self.clock()
        kept = await self.store.prekeys_for(frame.address, now)
        self.metrics.prekey_fetches += 1
        return Prekeys(frame.ref, frame.address, tuple(p.signed for p in kept)).encode()

    async def deposit(self, conn: Conn, address: str, frame: Deposit) -> bytes:
        """Store ``frame`` for ``frame.to`` durably, then push it to ``to``'s connections."""
        limit = self.config.max_envelope
        if len(frame.envelope) > limit:
            return self.refusal(
                frame,
                "envelope-too-large",
                f"an envelope of {len(frame.envelope)} bytes is over this relay's {limit}",
            )
        if not (self._deposits_by_address.take(address) and self._deposits_by_ip.take(conn.ip)):
            return self.refusal(frame, "rate-limited", "too many deposits; try again later")
        now = self.clock()
        mail = StoredMail(
            frame.to, address, frame.slot, frame.envelope, envelope_hash(frame.envelope), now
        )
        outcome = await self._deposit(mail, now)
        if outcome == "no-prekey":
            return self.refusal(
                frame, "no-prekey", "the recipient has no valid prekey at this relay"
            )
        if outcome == "sender-room-full":
            return self.refusal(
                frame,
                "sender-room-full",
                f"you already have {self.config.max_mail_per_sender} pieces of mail waiting "
                "for this recipient",
            )
        if outcome == "mailbox-full":
            return self.refusal(frame, "mailbox-full", "the recipient's mailbox is full")
        self.metrics.mail_deposits += 1
        # Announced on the owner's channel wherever it is connected (0 receivers: offline).
        self.metrics.mail_pushed += await self.routes.route(frame.to, _mail_frame(mail))
        return Deposited(frame.ref, frame.slot).encode()

    async def _deposit(self, mail: StoredMail, now: int) -> str:
        if not await self.store.prekeys_for(mail.recipient, now):
            return "no-prekey"
        return await self.store.deposit(mail)

    async def ack(self, address: str, frame: Ack) -> bytes:
        """Delete the acknowledged mail if it is still the envelope the owner saw."""
        outcome = await self.store.ack(address, frame.sender, frame.slot, frame.envelope_hash)
        if outcome == "deleted":
            self.metrics.mail_acks += 1
        return Acked(frame.ref, frame.slot).encode()

    # --- pushes -------------------------------------------------------------------

    async def deliver_waiting(self, conn: Conn, address: str) -> None:
        """Push every piece of mail waiting for ``address`` to ``conn``, oldest first.

        Called once the connection is authenticated (after AuthOk and
        MailInfo); mail arriving meanwhile is pushed on arrival too, so a
        piece may come twice (the owner's acknowledgement is idempotent).
        """
        now = self.clock()
        try:
            waiting = await self.store.pending_for(address, now)
        except StoreUnavailable as exc:  # it waits for the next connection; live frames flow
            log_event(logging.WARNING, "mail", f"mail not pushed on connect: {exc}", conn=conn.cid)
            return
        for mail in waiting:
            if not await self.outbox.offer_waiting(conn, _mail_frame(mail)):
                return
            self.metrics.mail_pushed += 1

    async def sweep_forever(self) -> None:
        """Delete expired mail and prekeys every ``mail_sweep_interval`` seconds."""
        while True:
            await asyncio.sleep(self.config.mail_sweep_interval)
            now = self.clock()
            try:
                expired = await self.store.sweep(now)
            except StoreUnavailable as exc:
                log_event(logging.WARNING, "sweep", f"mail sweep skipped: {exc}")
                continue
            if expired:
                log_event(logging.INFO, "sweep", "expired mail deleted", count=expired)

    async def close(self) -> None:
        """Finish the store call under way, then close the store."""
        await self.store.close()

    def refusal(self, frame: ClientFrame, reason: str, detail: str) -> bytes:
        """A Refused answer to ``frame``, counted under ``reason``."""
        self.metrics.frames_refused[reason] += 1
        ref = getattr(frame, "ref", 0)
        return Refused(ref, frame.SCHEMA.type_id, reason, detail).encode()


def _mail_frame(mail: StoredMail) -> bytes:
    return Mail(mail.sender, mail.slot, mail.envelope, mail.deposited_at).encode()


def _sentence(exc: BaseException) -> str:
    """``exc``'s message as a Refused detail: bounded, first line only."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raw = text.encode("utf-8")[:200]
    return "".join(ch for ch in raw.decode("utf-8", "ignore") if ch.isprintable())
