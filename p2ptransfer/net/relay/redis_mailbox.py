"""The cluster's mailboxes and prekeys in one shared Redis: :class:`RedisMailStore`.

The same rules as :class:`~.mailbox.SqliteMailStore` (see :mod:`.mailbox`),
kept where every relay node of a cluster sees them. Several nodes deposit
into one mailbox at once, so a quota read in one command and written in the
next could be passed twice; every check-then-write here is therefore one Lua
script (``EVALSHA``), which Redis runs with nothing interleaved: the check and
the write are one step, as they are one transaction in SQLite.

Key layout (``P`` is the prefix, ``p2pt:`` by default; ``R`` a recipient's
address, ``O`` a prekey owner's; one Redis primary, not Redis Cluster: the
sweep scripts name keys they find in an index)::

    P mail:R     hash   field F -> record        the pieces of mail waiting for R
    P order:R    zset   Q F, score deposited_at  R's mail oldest first
    P sums:R     hash   bytes, seq, s:SENDER     R's envelope bytes, the deposit
                                                 sequence, each sender's pieces
    P mailboxes  zset   R, score = oldest deposited_at in R's mailbox
    P prekeys:O  hash   prekey id -> prekey record
    P prekeys    zset   O, score = the earliest not_after among O's prekeys
    P stats      hash   items, bytes, prekeys, expired (handles: the directory's)

    F (field)          = b"<len(sender)>:" + sender + slot     (bytes in, bytes out)
    Q (sequence)       = the deposit's sequence number, 16 zero-padded digits
    mail record        = b"<deposited_at>:<Q>:<len(hash)>:" + hash + envelope
    prekey record      = b"<not_before>:<not_after>:" + signed prekey

Why so shaped: the mailbox hash answers "is (sender, slot) there, and with
what hash" in one look-up; the sorted set gives the order (score
deposited_at, ties by the zero-padded sequence, which sorts as bytes) and the
expired mail (a range of scores) without reading envelopes; the sums hash
makes the room and byte checks one read each instead of a scan; the
``mailboxes`` index lets :meth:`RedisMailStore.sweep` find expired mail
without ``SCAN`` (only mailboxes whose oldest piece is old are visited);
``stats`` is kept by the same scripts, so the gauges of every node read one
small hash. An empty mailbox leaves no keys behind.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .logs import log_event
from .mailbox import (
    AckOutcome,
    DepositOutcome,
    MailLimits,
    StoredMail,
    StoredPrekey,
    StoreUnavailable,
)

__all__ = ["DEFAULT_PREFIX", "RedisMailStore"]

DEFAULT_PREFIX = "p2pt:"

SWEEP_BATCH = 64
"""Mailboxes (or prekey owners) one sweep script visits: a sweep is many short
scripts, so other nodes' requests are not held behind one long one."""

_SEQ_DIGITS = 16

# Shared by the mail scripts: parsing records and fields, deleting one piece
# with its sums, expiring a mailbox, re-indexing it in ``mailboxes``.
_LUA_MAIL = r"""
local function num(x) return tonumber(x) or 0 end

local function parse_record(rec)
  local at, seq, hlen, head = string.match(rec, "^(%-?%d+):(%d+):(%d+):()")
  hlen = tonumber(hlen)
  local hash = string.sub(rec, head, head + hlen - 1)
  return tonumber(at), seq, hash, #rec - (head - 1) - hlen
end

local function sender_of(field)
  local n, head = string.match(field, "^(%d+):()")
  return string.sub(field, head, head + tonumber(n) - 1)
end

local function drop(mail, order, sums, field, rec)
  local _, seq, _, size = parse_record(rec)
  redis.call("HDEL", mail, field)
  redis.call("ZREM", order, seq .. field)
  redis.call("HINCRBY", sums, "bytes", -size)
  local s = "s:" .. sender_of(field)
  if redis.call("HINCRBY", sums, s, -1) <= 0 then redis.call("HDEL", sums, s) end
  return size
end

local function expire(mail, order, sums, stats, cutoff)
  local old = redis.call("ZRANGEBYSCORE", order, "-inf", cutoff)
  local n, bytes = 0, 0
  for _, member in ipairs(old) do
    local field = string.sub(member, SEQ_DIGITS + 1)
    local rec = redis.call("HGET", mail, field)
    if rec then
      bytes = bytes + drop(mail, order, sums, field, rec)
      n = n + 1
    else
      redis.call("ZREM", order, member)
    end
  end
  if n > 0 then
    redis.call("HINCRBY", stats, "items", -n)
    redis.call("HINCRBY", stats, "bytes", -bytes)
    redis.call("HINCRBY", stats, "expired", n)
  end
  return n
end

local function reindex(mail, order, sums, mailboxes, recipient)
  local first = redis.call("ZRANGE", order, 0, 0, "WITHSCORES")
  if first[1] then
    redis.call("ZADD", mailboxes, first[2], recipient)
  else
    redis.call("ZREM", mailboxes, recipient)
    redis.call("DEL", mail, order, sums)
  end
end
""".replace("SEQ_DIGITS", str(_SEQ_DIGITS))

_MAILBOX_KEYS = (
    "local mail, order, sums, mailboxes, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"
)

_DEPOSIT = (
    _LUA_MAIL
    + _MAILBOX_KEYS
    + r"""
local recipient, field, sender, hash, envelope = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local at, cutoff = ARGV[6], ARGV[7]
local max_per_sender, max_items = tonumber(ARGV[8]), tonumber(ARGV[9])
local max_bytes = tonumber(ARGV[10])
expire(mail, order, sums, stats, cutoff)
local old = redis.call("HGET", mail, field)
local old_size = 0
if old then
  local _, _, _, size = parse_record(old)
  old_size = size
else
  if num(redis.call("HGET", sums, "s:" .. sender)) >= max_per_sender then
    reindex(mail, order, sums, mailboxes, recipient)
    return "sender-room-full"
  end
  if redis.call("HLEN", mail) >= max_items then
    reindex(mail, order, sums, mailboxes, recipient)
    return "mailbox-full"
  end
end
if num(redis.call("HGET", sums, "bytes")) - old_size + #envelope > max_bytes then
  reindex(mail, order, sums, mailboxes, recipient)
  return "mailbox-full"
end
if old then drop(mail, order, sums, field, old) end
local seq = string.format("%0SEQ_DIGITSd", redis.call("HINCRBY", sums, "seq", 1))
redis.call("HSET", mail, field, at .. ":" .. seq .. ":" .. #hash .. ":" .. hash .. envelope)
redis.call("ZADD", order, at, seq .. field)
redis.call("HINCRBY", sums, "bytes", #envelope)
redis.call("HINCRBY", sums, "s:" .. sender, 1)
if not old then redis.call("HINCRBY", stats, "items", 1) end
redis.call("HINCRBY", stats, "bytes", #envelope - old_size)
reindex(mail, order, sums, mailboxes, recipient)
return "stored"
""".replace("SEQ_DIGITS", str(_SEQ_DIGITS))
)

_PENDING = (
    _LUA_MAIL
    + _MAILBOX_KEYS
    + r"""
expire(mail, order, sums, stats, ARGV[2])
reindex(mail, order, sums, mailboxes, ARGV[1])
local out = {}
for _, member in ipairs(redis.call("ZRANGE", order, 0, -1)) do
  local field = string.sub(member, SEQ_DIGITS + 1)
  local rec = redis.call("HGET", mail, field)
  if rec then
    out[#out + 1] = field
    out[#out + 1] = rec
  end
end
return out
""".replace("SEQ_DIGITS", str(_SEQ_DIGITS))
)

_ACK = (
    _LUA_MAIL
    + _MAILBOX_KEYS
    + r"""
local rec = redis.call("HGET", mail, ARGV[2])
if not rec then return "unknown" end
local _, _, hash = parse_record(rec)
if hash ~= ARGV[3] then return "replaced" end
local size = drop(mail, order, sums, ARGV[2], rec)
redis.call("HINCRBY", stats, "items", -1)
redis.call("HINCRBY", stats, "bytes", -size)
reindex(mail, order, sums, mailboxes, ARGV[1])
return "deleted"
"""
)

_SWEEP_MAIL = (
    _LUA_MAIL
    + r"""
local mailboxes, stats = KEYS[1], KEYS[2]
local prefix, cutoff, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])
local owners = redis.call("ZRANGEBYSCORE", mailboxes, "-inf", cutoff, "LIMIT", 0, batch)
local total = 0
for _, r in ipairs(owners) do
  local mail, order, sums = prefix .. "mail:" .. r, prefix .. "order:" .. r, prefix .. "sums:" .. r
  total = total + expire(mail, order, sums, stats, cutoff)
  reindex(mail, order, sums, mailboxes, r)
end
return {total, #owners}
"""
)

# Prekeys: keep the owner's newest (not_before DESC, prekey_id DESC as bytes),
# none expired. Lua's ``<`` on strings follows the server's collation locale,
# so ids are compared byte by byte, as SQLite compares BLOBs.
_LUA_PREKEYS = r"""
local function bytes_less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function newer(p, q)
  if p.nb ~= q.nb then return p.nb > q.nb end
  return bytes_less(q.id, p.id)
end

-- Drop expired prekeys and all but the newest ``keep``; re-index the owner.
-- Returns the kept ones, newest first, as a flat {id, record, ...} list.
local function trim(key, index, stats, owner, now, keep)
  local before = redis.call("HLEN", key)
  local all = redis.call("HGETALL", key)
  local live = {}
  for i = 1, #all, 2 do
    local nb, na = string.match(all[i + 1], "^(%-?%d+):(%-?%d+):")
    nb, na = tonumber(nb), tonumber(na)
    if na <= now then
      redis.call("HDEL", key, all[i])
    else
      live[#live + 1] = {id = all[i], nb = nb, na = na, rec = all[i + 1]}
    end
  end
  table.sort(live, newer)
  local out, earliest = {}, nil
  for i, p in ipairs(live) do
    if i > keep then
      redis.call("HDEL", key, p.id)
    else
      out[#out + 1] = p.id
      out[#out + 1] = p.rec
      if earliest == nil or p.na < earliest then earliest = p.na end
    end
  end
  redis.call("HINCRBY", stats, "prekeys", #out / 2 - before)
  if earliest then
    redis.call("ZADD", index, earliest, owner)
  else
    redis.call("ZREM", index, owner)
  end
  return out
end
"""

_PUBLISH = (
    _LUA_PREKEYS
    + r"""
local key, index, stats = KEYS[1], KEYS[2], KEYS[3]
local owner, id, rec, now, keep = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call("HSET", key, id, rec) == 1 then redis.call("HINCRBY", stats, "prekeys", 1) end
return trim(key, index, stats, owner, now, keep)
"""
)

_SWEEP_PREKEYS = (
    _LUA_PREKEYS
    + r"""
local index, stats = KEYS[1], KEYS[2]
local prefix, now, batch, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local owners = redis.call("ZRANGEBYSCORE", index, "-inf", now, "LIMIT", 0, batch)
for _, o in ipairs(owners) do
  trim(prefix .. "prekeys:" .. o, index, stats, o, now, keep)
end
return #owners
"""
)

_STAT_FIELDS = ("items", "bytes", "prekeys", "expired")


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """Turn Redis's (and the socket's) failures into :class:`StoreUnavailable`.

    The mail service answers ``unavailable`` to that and keeps the
    connection; a raw redis error would end it.
    """
    try:
        yield
    except (RedisError, OSError) as exc:  # OSError covers ConnectionError and TimeoutError
        raise StoreUnavailable(f"mail store (Redis) could not {what}: {exc}") from exc


def _field(sender: str, slot: bytes) -> bytes:
    raw = sender.encode()
    return b"%d:" % len(raw) + raw + slot


def _split_field(field: bytes) -> tuple[str, bytes]:
    length, _, rest = field.partition(b":")
    n = int(length)
    return rest[:n].decode(), rest[n:]


def _parse_mail(recipient: str, field: bytes, record: bytes) -> StoredMail:
    at, _seq, hash_len, rest = record.split(b":", 3)
    n = int(hash_len)
    sender, slot = _split_field(field)
    return StoredMail(recipient, sender, slot, rest[n:], rest[:n], int(at))


def _parse_prekey(owner: str, prekey_id: bytes, record: bytes) -> StoredPrekey:
    not_before, not_after, signed = record.split(b":", 2)
    return StoredPrekey(owner, prekey_id, int(not_before), int(not_after), signed)


def _pairs(reply: Any) -> list[tuple[bytes, bytes]]:
    """A script's flat ``{a, b, a, b, ...}`` reply as pairs."""
    flat = cast("Sequence[bytes]", reply)
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


class RedisMailStore:
    """:class:`~.mailbox.AsyncMailStore` over a Redis every relay node of a cluster shares.

    ``client`` must be made with ``decode_responses=False`` (envelopes, slots
    and ids are bytes). The store does not own it: :meth:`close` leaves it
    open (the node shares it with its routes and directory) unless
    ``close_client=True``. Give it bounded ``socket_timeout`` and retries, so
    a lost Redis becomes :class:`StoreUnavailable` in seconds.

    Durability: after a deposit that stored, ``WAITAOF 1 0 timeout`` (Redis
    7.2 and later) waits until the primary's append-only file has it, so
    ``Deposited`` means what it means with SQLite. Redis 7.0 and 7.1 have no
    ``WAITAOF``; the store notices the first "unknown command" and stops
    asking. Without it (or with ``durable_wait=False``) a deposit is
    confirmed once it is in the primary's memory: with ``appendfsync
    everysec`` a crash of the Redis host loses up to the last second of
    deposits, which their senders, still pending, deposit again. A wait
    that times out raises :class:`StoreUnavailable` (the sender is refused
    ``unavailable``) although the mail may be kept: the sender's retry takes
    the same slot and replaces it, so nothing is delivered twice.

    The figures are the last ones :meth:`refresh_figures` read from the
    shared ``stats`` hash (the whole cluster's, not this node's): gauges are
    read on the event loop and must not wait for Redis.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        limits: MailLimits,
        *,
        prefix: str = DEFAULT_PREFIX,
        durable_wait: bool = True,
        durable_timeout_ms: int = 1000,
        close_client: bool = False,
    ) -> None:
        self.limits = limits
        self.prefix = prefix
        self._client = client
        self._close_client = close_client
        self._wait_aof = durable_wait
        self._durable_timeout_ms = durable_timeout_ms
        self._deposit = client.register_script(_DEPOSIT)
        self._pending = client.register_script(_PENDING)
        self._ack = client.register_script(_ACK)
        self._sweep_mail = client.register_script(_SWEEP_MAIL)
        self._publish = client.register_script(_PUBLISH)
        self._sweep_prekeys = client.register_script(_SWEEP_PREKEYS)
        self._mailboxes = f"{prefix}mailboxes"
        self._prekey_index = f"{prefix}prekeys"
        self._stats = f"{prefix}stats"
        self._figures = dict.fromkeys(_STAT_FIELDS, 0)

    def _mailbox_keys(self, recipient: str) -> list[str]:
        p = self.prefix
        return [
            f"{p}mail:{recipient}",
            f"{p}order:{recipient}",
            f"{p}sums:{recipient}",
            self._mailboxes,
            self._stats,
        ]

    def _cutoff(self, now_ms: int) -> int:
        """Mail deposited at or before this is expired (as SqliteMailStore decides)."""
        return now_ms - self.limits.max_age_ms

    async def deposit(self, mail: StoredMail) -> DepositOutcome:
        lim = self.limits
        args: list[bytes | str | int] = [
            mail.recipient,
            _field(mail.sender, mail.slot),
            mail.sender,
            mail.envelope_hash,
            mail.envelope,
            mail.deposited_at,
            self._cutoff(mail.deposited_at),
            lim.max_per_sender,
            lim.max_items,
            lim.max_bytes,
        ]
        keys = self._mailbox_keys(mail.recipient)
        with _unavailable("store the mail"):
            if not self._wait_aof:
                reply = await self._deposit(keys, args)
            else:
                # WAITAOF waits for the writes of its own connection: the
                # script and the wait go over one connection taken from the pool.
                async with self._client.client() as conn:
                    reply = await self._deposit(keys, args, client=conn)
                    if reply == b"stored":
                        await self._wait_durable(conn)
        outcome = reply.decode()
        if outcome not in ("stored", "mailbox-full", "sender-room-full"):
            raise StoreUnavailable(f"mail store (Redis) answered a deposit with {outcome!r}")
        return cast("DepositOutcome", outcome)

    async def _wait_durable(self, conn: aioredis.Redis) -> None:
        try:
            reply = await conn.execute_command(  # type: ignore[no-untyped-call]
                "WAITAOF", 1, 0, self._durable_timeout_ms
            )
        except ResponseError as exc:
            # 7.0/7.1: unknown command; 7.2+ with appendonly off: cannot wait.
            self._wait_aof = False
            log_event(
                logging.WARNING,
                "mail",
                "Redis cannot confirm deposits on disk (WAITAOF); "
                "a deposit is confirmed once in Redis's memory",
                reason=str(exc),
            )
            return
        local = int(cast("Sequence[int]", reply)[0])
        if local < 1:
            raise StoreUnavailable(
                f"mail store (Redis) did not write the deposit to its append-only file "
                f"within {self._durable_timeout_ms} ms"
            )

    async def pending_for(self, owner: str, now_ms: int) -> list[StoredMail]:
        with _unavailable("read a mailbox"):
            reply = await self._pending(self._mailbox_keys(owner), [owner, self._cutoff(now_ms)])
        return [_parse_mail(owner, field, record) for field, record in _pairs(reply)]

    async def ack(self, owner: str, sender: str, slot: bytes, envelope_hash: bytes) -> AckOutcome:
        with _unavailable("delete acknowledged mail"):
            reply = await self._ack(
                self._mailbox_keys(owner), [owner, _field(sender, slot), envelope_hash]
            )
        return cast("AckOutcome", reply.decode())

    async def publish_prekey(self, prekey: StoredPrekey, now_ms: int) -> list[StoredPrekey]:
        record = b"%d:%d:" % (prekey.not_before, prekey.not_after) + prekey.signed
        with _unavailable("keep a prekey"):
            reply = await self._publish(
                [self._prekey_key(prekey.owner), self._prekey_index, self._stats],
                [prekey.owner, prekey.prekey_id, record, now_ms, self.limits.max_prekeys],
            )
        return [_parse_prekey(prekey.owner, i, r) for i, r in _pairs(reply)]

    async def prekeys_for(self, owner: str, now_ms: int) -> list[StoredPrekey]:
        # A plain read: nothing is checked before a write, so no script.
        with _unavailable("read prekeys"):
            stored = await self._client.hgetall(self._prekey_key(owner))
        found = [
            _parse_prekey(owner, bytes(i), bytes(r))
            for i, r in cast("dict[bytes, bytes]", stored).items()
        ]
        valid = [p for p in found if p.not_after > now_ms]
        valid.sort(key=lambda p: (p.not_before, p.prekey_id), reverse=True)
        return valid[: self.limits.max_prekeys]

    def _prekey_key(self, owner: str) -> str:
        return f"{self.prefix}prekeys:{owner}"

    async def sweep(self, now_ms: int) -> int:
        """Expired mail and prekeys everywhere, a batch of mailboxes per script.

        Each batch leaves every mailbox it visits with nothing at or before
        the cutoff, so the index shrinks and the loop ends.
        """
        expired = 0
        with _unavailable("sweep expired mail"):
            while True:
                reply = await self._sweep_mail(
                    [self._mailboxes, self._stats],
                    [self.prefix, self._cutoff(now_ms), SWEEP_BATCH],
                )
                count, visited = (int(x) for x in cast("Sequence[int]", reply))
                expired += count
                if visited < SWEEP_BATCH:
                    break
            while True:
                visited = int(
                    await self._sweep_prekeys(
                        [self._prekey_index, self._stats],
                        [self.prefix, now_ms, SWEEP_BATCH, self.limits.max_prekeys],
                    )
                )
                if visited < SWEEP_BATCH:
                    break
        return expired

    async def refresh_figures(self) -> None:
        """Read the cluster's figures into the cache the gauges serve (call it on a timer)."""
        with _unavailable("read its figures"):
            values = await self._client.hmget(self._stats, list(_STAT_FIELDS))
        for name, value in zip(_STAT_FIELDS, cast("list[bytes | None]", values), strict=True):
            self._figures[name] = int(value or 0)

    def mail_count(self) -> int:
        return self._figures["items"]

    def mail_bytes(self) -> int:
        return self._figures["bytes"]

    def prekey_count(self) -> int:
        return self._figures["prekeys"]

    def expired_count(self) -> int:
        return self._figures["expired"]

    async def close(self) -> None:
        """Nothing to finish (every call is awaited by its caller); the client stays open
        unless this store was given it to close."""
        if self._close_client:
            with _unavailable("close"):
                await self._client.aclose()
