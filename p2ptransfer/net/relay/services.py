"""The relay's requests besides forwarding: Watch (presence), Claim, Release and Lookup (handles).

Each request becomes the answer to send back, as frame bytes (or None when
there is nothing to say yet); the server writes it with back-pressure. State
lives behind two seams the server hands in: the :class:`~.routes.Routes`
(who is online, who waits for whom) and the handle
:class:`~.directory.HandleDirectory`; a cluster backend implements them again
and this module stays as it is.
"""

from __future__ import annotations

import logging
import time
from typing import TypeAlias

from ...protocol.relay_wire import (
    Claim,
    ClaimOk,
    ClientFrame,
    HandleUnknown,
    Lookup,
    LookupResult,
    Online,
    Refused,
    Release,
    Released,
    Watch,
)
from .config import RelayConfig
from .connection import Conn
from .directory import HandleDirectory
from .limits import BucketMap, TokenBucket
from .logs import log_event
from .mailbox import StoreUnavailable
from .metrics import Metrics
from .routes import Routes

__all__ = ["Request", "Services"]

Request: TypeAlias = Watch | Claim | Release | Lookup
"""The frames :meth:`Services.answer` takes."""


class Services:
    """Answers an authenticated connection's Watch, Claim, Release and Lookup requests."""

    def __init__(
        self,
        config: RelayConfig,
        metrics: Metrics,
        directory: HandleDirectory,
        routes: Routes[Conn],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.directory = directory
        self.routes = routes
        self._claims_by_address = BucketMap(config.claim_rate, config.claim_burst)
        self._claims_by_ip = BucketMap(config.claim_rate_per_ip, config.claim_burst_per_ip)

    async def answer(self, conn: Conn, address: str, frame: Request) -> bytes | None:
        """The answer to ``frame`` from ``conn`` (authenticated as ``address``), if any yet.

        A directory that cannot be reached (a cluster's Redis lost) refuses
        the request as ``unavailable``; the connection stays.
        """
        try:
            if isinstance(frame, Watch):
                return await self.watch(conn, frame)
            if isinstance(frame, Lookup):
                return await self.lookup(conn, frame)
            return await self.directory_change(conn, address, frame)
        except StoreUnavailable as exc:
            log_event(logging.ERROR, "directory", str(exc), conn=conn.cid)
            return self.refusal(frame, "unavailable", "the relay cannot answer that right now")

    async def watch(self, conn: Conn, frame: Watch) -> bytes | None:
        """Register a watch; the immediate answer to send, if any.

        Presence is public to authenticated peers, but rate-limited: each
        Watch (answered at once or not) spends a token of the connection's bucket.
        """
        if conn.watch_bucket is None:
            cfg = self.config
            conn.watch_bucket = TokenBucket(cfg.watch_rate, cfg.watch_burst)
        if not conn.watch_bucket.take():
            return self.refusal(frame, "rate-limited", "too many watch requests; slow down")
        if await self.routes.online(frame.address):
            return Online(frame.address).encode()
        watches = conn.watches or ()
        if frame.address in watches:
            return None
        if len(watches) >= self.config.max_watches:
            return self.refusal(frame, "too-many-watches", "too many addresses watched at once")
        # The routes tell the connection when the address comes; a cluster's routes
        # listen for that before looking again, so an arrival in between is not missed.
        if await self.routes.watch(frame.address, conn):
            return Online(frame.address).encode()
        return None

    async def lookup(self, conn: Conn, frame: Lookup) -> bytes:
        """Who holds ``frame.handle``; look-ups are rate-limited per connection."""
        if conn.lookups is None:
            cfg = self.config
            conn.lookups = TokenBucket(cfg.lookup_rate, cfg.lookup_burst)
        if not conn.lookups.take():
            return self.refusal(frame, "rate-limited", "too many look-ups; slow down")
        found = await self.directory.lookup(frame.handle)
        answer = (
            HandleUnknown(frame.ref, frame.handle)
            if found is None
            else LookupResult(frame.ref, frame.handle, found)
        )
        return answer.encode()

    async def directory_change(self, conn: Conn, address: str, frame: Claim | Release) -> bytes:
        """Claim or release a handle for ``address``; the answer to send.

        Both are rate-limited per address (reconnecting does not refill it) and
        per client IP (fresh keys from one host share it); a claim past
        ``max_handles_per_address`` is refused until the owner releases one.
        """
        if not (self._claims_by_address.take(address) and self._claims_by_ip.take(conn.ip)):
            return self.refusal(
                frame, "rate-limited", "too many handle requests; wait a minute and try again"
            )
        handle = frame.handle
        if isinstance(frame, Release):
            outcome = await self.directory.release(handle, address)
            if outcome == "released":
                log_event(logging.INFO, "release", "handle released", conn=conn.cid, handle=handle)
                return Released(frame.ref, handle).encode()
            if outcome == "not-yours":
                return self.refusal(
                    frame, "not-yours", f"{handle} belongs to another key; only it can release it"
                )
            return self.refusal(frame, "handle-unknown", f"nobody holds {handle} at this relay")
        limit = self.config.max_handles_per_address
        claimed = await self.directory.claim(handle, address, int(time.time()), limit)
        if claimed == "yours":
            return ClaimOk(frame.ref, handle).encode()  # already yours: nothing changes
        if claimed == "taken":
            return self.refusal(frame, "handle-taken", f"{handle} belongs to another key")
        if claimed == "quota":
            return self.refusal(
                frame,
                "handle-quota",
                f"you already hold {limit} handle{'s' if limit != 1 else ''} at this relay "
                "(the limit); release one with 'p2ptransfer unregister HANDLE'",
            )
        log_event(logging.INFO, "claim", "handle claimed", conn=conn.cid, handle=handle)
        return ClaimOk(frame.ref, handle).encode()

    def refusal(self, frame: ClientFrame, reason: str, detail: str) -> bytes:
        """A Refused answer to ``frame``, counted under ``reason``."""
        self.metrics.frames_refused[reason] += 1
        ref = getattr(frame, "ref", 0)
        return Refused(ref, frame.SCHEMA.type_id, reason, detail).encode()
