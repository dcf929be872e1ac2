"""A relay node's link to the cluster's Redis: ordered publishing, one subscriber, liveness.

Three connections, each with one job (docs/relay.md, "Running a cluster"):

- **commands**: redis-py's pool, for request/response work (stores, presence
  look-ups, counters' totals, the liveness key). Fails fast: no retries, a
  5 s socket timeout, so a lost Redis is noticed in seconds, not minutes.
- **publisher**: one raw connection fed by one writer task. Everything this
  node publishes (and its counter updates) goes through it in arrival order,
  pipelined: the writer sends whatever is queued in one write and a reply
  reader hands each PUBLISH's receiver count back in the same order. Never a
  pool: two connections would let a sender's frames overtake each other.
- **subscriber**: one raw connection in subscribe mode, read by one task.
  Subscribing waits for Redis's confirmation, so a caller knows frames
  published from then on reach it.

The link owns its reconnects. redis-py's PubSub would resubscribe silently
after Redis drops a subscriber (an output buffer overflow does that), and the
frames lost meanwhile would go unnoticed; here any failure of any of the three
marks the link unhealthy with the reason, fails what was in flight (a publish
whose fate is unknown counts as received by nobody: the sender is told
``offline`` and its session retries, which exactly-once makes safe), and a
reconnect loop brings it back: new connections, every wanted channel
subscribed again and confirmed, this node's counters written again, then
healthy. The node decides what unhealthy means for its peers (server.py).

Counters (connections per address and per IP) are one hash field per node
*incarnation*: each reconnect, and each time the liveness key is found
expired, starts a new incarnation that writes its counts afresh and retires
the old one's liveness key, so the others drop its fields. Increments lost
with a connection can then never leave a count standing.

Subscription commands go through one ordered queue and one writer, so
Redis applies SUBSCRIBE and UNSUBSCRIBE of a channel in the order they were
asked for; a confirmation belongs to the connection generation that asked.

RESP2 throughout: a large frame costs redis-py's subscriber several times
more CPU in RESP3.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from .logs import log_event
from .mailbox import StoreUnavailable

__all__ = ["ClusterLink", "ClusterUnavailable", "Published"]

Published = Callable[[int], None]
"""Called with a PUBLISH's receiver count (0 also when its fate is unknown)."""

_COMMAND_TIMEOUT = 5.0
_CONFIRM_TIMEOUT = 5.0
_BATCH_FRAMES = 512
_BATCH_BYTES = 1 << 20
_RESUBSCRIBE_CHUNK = 1000
_YIELD_EVERY = 64

# Sum one counter over the nodes that are alive; forget the fields of dead ones
# (their liveness key expired) and of counts that fell to zero.
_TOTAL = """
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local node, count = fields[i], tonumber(fields[i + 1])
  if count <= 0 or redis.call('EXISTS', ARGV[1] .. node) == 0 then
    redis.call('HDEL', KEYS[1], node)
  else
    total = total + count
  end
end
return total
"""


class ClusterUnavailable(StoreUnavailable):
    """The cluster's Redis cannot be reached now; the reason is the message.

    A :class:`~.mailbox.StoreUnavailable`: whatever asked is refused as
    ``unavailable`` and the connection stays.
    """


class _Lost(Exception):
    """One of the link's connections failed; the link reconnects."""


class ClusterLink:
    """One node's connections to Redis; ``await start()``, then publish and subscribe.

    ``on_message(channel, data)`` is called by the subscriber reader for every
    published frame, in order; ``on_health(reason)`` whenever health changes
    (None: healthy again). ``prefix`` namespaces every key and channel.
    """

    def __init__(
        self,
        url: str,
        *,
        on_message: Callable[[bytes, bytes], None],
        on_health: Callable[[str | None], None],
        prefix: str = "p2pt:",
        queue_frames: int = 4096,
        queue_bytes: int = 16 << 20,
        heartbeat: float = 1.0,
    ) -> None:
        self.name = secrets.token_hex(6)
        """This node in Redis's client list and in logs."""
        self._incarnation = self.name.encode()
        """Whose fields this node's counters are now (see the module docstring)."""
        self.prefix = prefix
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            protocol=2,
            decode_responses=False,
            socket_timeout=_COMMAND_TIMEOUT,
            socket_connect_timeout=_COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            health_check_interval=0,
            client_name=f"p2pt-relay-{self.name}",
        )
        """The command pool (stores, look-ups); shared with the directory and mail stores."""
        self.on_message = on_message
        """Where the subscriber reader hands every published frame (settable: see routes)."""
        self._on_health = on_health
        self._queue_frames = queue_frames
        self._queue_bytes = queue_bytes
        self._heartbeat = heartbeat
        self._node_ttl_ms = int(max(3 * heartbeat, 2.0) * 1000)
        self._node_key_prefix = f"{prefix}node:".encode()
        self._total = self.client.register_script(_TOTAL)
        # publishing
        self._queue: collections.deque[tuple[bytes, bytes | None, Published | None]] = (
            collections.deque()
        )
        """Commands to send, in order: (RESP bytes, a payload to follow them, reply handler)."""
        self._queued_bytes = 0
        self._queued = asyncio.Event()
        self._room = asyncio.Event()
        self._inflight: collections.deque[Published | None] = collections.deque()
        self._replies_due = asyncio.Event()
        # subscribing: the channels wanted, the commands to write, confirmations awaited
        self.channels: set[bytes] = set()
        self._sub_queue: collections.deque[bytes] = collections.deque()
        self._sub_queued = asyncio.Event()
        self._confirming: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._counts: dict[bytes, int] = {}
        """This node's counter values by key, written afresh by each incarnation."""
        self._publisher: AbstractConnection | None = None
        self._subscriber: AbstractConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = 0
        """Bumped at each disconnect: the connection loops of an older one stop."""
        self._keeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._healthy = False
        self.reason: str | None = "not connected yet"
        """Why the link is unhealthy, in words safe to publish (None: healthy)."""
        self._closing = False
        # figures
        self.frames_out = 0
        self.frames_in = 0
        self.reconnects = 0
        self.errors = 0
        self.rtt_us = 0
        self.on_beat: list[Callable[[], Any]] = []
        """Coroutine functions run after each heartbeat (stores refresh their gauges)."""

    # --- lifecycle ----------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self) -> None:
        """Connect (ClusterUnavailable if Redis cannot be reached), then keep connected."""
        try:
            await self._connect()
        except (RedisError, OSError, _Lost) as exc:
            await self._disconnect()
            raise ClusterUnavailable(_detail(exc)) from None
        self._keeper = asyncio.create_task(self._keep(), name="relay-cluster-keeper")

    async def close(self) -> None:
        """Drop every connection; publishes still queued count as received by nobody."""
        self._closing = True
        self._wake.set()
        if self._keeper is not None:
            # Bounded, and the keeper's loop ends on _closing too: redis-py may turn a
            # cancellation that lands in its socket code into a connection error.
            self._keeper.cancel()
            await asyncio.wait([self._keeper], timeout=2.0)
        self._fail_pending()
        await self._disconnect()
        with contextlib.suppress(RedisError, OSError):  # else it expires by itself
            await self.client.delete(self._node_key())
        await self.client.aclose()

    def _node_key(self, incarnation: bytes | None = None) -> bytes:
        return self._node_key_prefix + (incarnation or self._incarnation)

    async def _connect(self) -> None:
        pool = self.client.connection_pool
        # No read timeout on the publisher and the subscriber: the subscriber waits for
        # frames, and a timeout around every read of the publisher's replies costs more
        # than the rest of a cross-node hop. Connecting is bounded; a Redis that hangs
        # is noticed by the heartbeat on the command pool, which then drops both.
        kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        publisher: AbstractConnection = pool.connection_class(**kwargs)
        await publisher.connect()  # type: ignore[no-untyped-call]
        subscriber: AbstractConnection = pool.connection_class(**kwargs)
        await subscriber.connect()  # type: ignore[no-untyped-call]
        self._publisher, self._subscriber = publisher, subscriber
        generation = self._generation
        self._spawn(self._read_subscriber(subscriber), "relay-cluster-subscriber")
        self._spawn(self._write_subscriptions(subscriber), "relay-cluster-subscriptions")
        await self._resubscribe()
        self._spawn(self._write_publishes(publisher), "relay-cluster-publisher")
        self._spawn(self._read_replies(publisher), "relay-cluster-replies")
        await self._reincarnate()
        if generation != self._generation or any(task.done() for task in self._tasks):
            raise _Lost("a connection to Redis failed while connecting")
        self._healthy, self.reason = True, None

    async def _reincarnate(self) -> None:
        """Start a new incarnation: liveness key first, then every count under it."""
        old = self._incarnation
        self._incarnation = secrets.token_hex(6).encode()
        await self._beat()
        with contextlib.suppress(RedisError, OSError):  # it expires by itself anyway
            await self.client.delete(self._node_key(old))
        for key, count in self._counts.items():
            self._enqueue(_pack(b"HSET", key, self._incarnation, b"%d" % count))

    def _spawn(self, work: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._lose(exc)

    def _lose(self, exc: BaseException) -> None:
        """Mark the link unhealthy (once per outage) and wake the keeper to reconnect."""
        if not self._healthy or self._closing:
            return
        self._healthy, self.reason = False, _reason(exc)
        log_event(logging.WARNING, "cluster", f"lost the cluster's Redis: {_detail(exc)}")
        for task in list(self._tasks):
            task.cancel()
        self._fail_pending()
        self._wake.set()
        self._on_health(self.reason)

    async def _disconnect(self) -> None:
        """End the connections' tasks (bounded: redis-py may swallow a cancellation
        while it disconnects, so each loop also stops when its generation ends)."""
        self._generation += 1
        self._queued.set()
        self._replies_due.set()
        self._sub_queued.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for conn in (self._publisher, self._subscriber):
            if conn is not None:
                with contextlib.suppress(RedisError, OSError):
                    await conn.disconnect(nowait=True)
        self._publisher = self._subscriber = None
        self._sub_queue.clear()
        self._fail_confirmations()

    def _fail_pending(self) -> None:
        inflight, self._inflight = self._inflight, collections.deque()
        queued, self._queue = self._queue, collections.deque()
        self._queued_bytes = 0
        self._room.set()
        for published in (*inflight, *(done for _, _, done in queued)):
            if published is not None:
                _answer(published, 0)
        self._fail_confirmations()

    def _fail_confirmations(self) -> None:
        """No confirmation of an older connection can come: fail whoever waits for one."""
        confirming, self._confirming = self._confirming, {}
        for waiting in confirming.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(ClusterUnavailable(self.reason or "link closed"))
                    future.exception()  # seen here; the awaiter still gets it

    async def _keep(self) -> None:
        """Beat while healthy; reconnect (backing off to 2 s) while not."""
        delay = 0.1
        while not self._closing:
            if self._healthy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._heartbeat):
                        await self._wake.wait()
                self._wake.clear()
                if not self._healthy or self._closing:
                    continue
                try:
                    if await self._beat() is None:
                        # Our liveness key had expired (a long stall): the others may
                        # have dropped our counts as a dead node's. Start afresh.
                        log_event(logging.WARNING, "cluster", "liveness key had expired")
                        await self._reincarnate()
                except (RedisError, OSError) as exc:
                    self._lose(exc)
                    continue
                for refresh in self.on_beat:
                    # A failure here is the next beat's to notice.
                    with contextlib.suppress(RedisError, OSError, StoreUnavailable):
                        await refresh()
                delay = 0.1
                continue
            await self._disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                await self._connect()
            except (RedisError, OSError, _Lost, ClusterUnavailable) as exc:
                self.reason = _reason(exc)
                continue
            self.reconnects += 1
            log_event(logging.INFO, "cluster", "the cluster's Redis is back", node=self.name)
            self._on_health(None)

    async def _beat(self) -> bytes | None:
        """Refresh the liveness key; what it held before (None: it had expired)."""
        started = time.perf_counter()
        previous = await self.client.set(self._node_key(), b"1", px=self._node_ttl_ms, get=True)
        self.rtt_us = int((time.perf_counter() - started) * 1e6)
        return cast("bytes | None", previous)

    # --- publishing ---------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def has_room(self) -> bool:
        return len(self._queue) < self._queue_frames and self._queued_bytes < self._queue_bytes

    async def wait_room(self) -> None:
        """Wait until the publish queue has room (a reader pauses here: back-pressure)."""
        while not self.has_room():
            self._room.clear()
            await self._room.wait()

    def publish(self, channel: bytes, data: bytes, published: Published) -> None:
        """Queue ``data`` for ``channel``; ``published(receivers)`` follows, in order.

        Call :meth:`wait_room` first to respect the bound; an unhealthy link
        answers 0 at once (local-only routing continues).
        """
        if not self._healthy:
            _answer(published, 0)
            return
        self.frames_out += 1
        # PUBLISH packed by hand (RESP2 is three length-prefixed strings): the payload
        # is written as it is, never copied into the command or re-encoded per frame.
        head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n" % (
            len(channel),
            channel,
            len(data),
        )
        self._queue.append((head, data, published))
        self._queued_bytes += len(head) + len(data)
        if not self._queued.is_set():
            self._queued.set()

    def _enqueue(self, packed: bytes, done: Published | None = None) -> None:
        """Queue one whole RESP command (in order with the publishes)."""
        self._queue.append((packed, None, done))
        self._queued_bytes += len(packed)
        self._queued.set()

    def add_count(self, key: bytes, delta: int) -> None:
        """Change this node's field of counter ``key`` (in order with the publishes).

        While the link is down only the local figure changes: the next
        incarnation writes every count afresh.
        """
        count = self._counts.get(key, 0) + delta
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)
        if self._healthy:
            self._enqueue(_pack(b"HINCRBY", key, self._incarnation, b"%d" % delta))

    async def total(self, key: bytes) -> int:
        """Counter ``key`` summed over the live nodes (ClusterUnavailable if Redis is lost)."""
        try:
            return int(await self._total(keys=[key], args=[self._node_key_prefix]))
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(_reason(exc)) from None

    async def _write_publishes(self, conn: AbstractConnection) -> None:
        queue = self._queue
        generation = self._generation
        inflight = self._inflight
        while generation == self._generation:
            if not queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            parts: list[bytes] = []
            size = count = 0
            while queue and count < _BATCH_FRAMES and size < _BATCH_BYTES:
                head, payload, done = queue.popleft()
                parts.append(head)
                size += len(head)
                if payload is not None:
                    parts.append(payload)
                    parts.append(b"\r\n")
                    size += len(payload)
                inflight.append(done)
                count += 1
            self._queued_bytes -= size
            self._room.set()
            self._replies_due.set()
            await conn.send_packed_command(parts, check_health=False)

    async def _read_replies(self, conn: AbstractConnection) -> None:
        inflight = self._inflight
        generation = self._generation
        while generation == self._generation:
            if not inflight:
                self._replies_due.clear()
                await self._replies_due.wait()
                continue
            try:
                reply = await conn.read_response()
            except ResponseError as exc:
                # One command refused (out of memory, a key of the wrong type): the reply
                # is read whole, the stream stays in step; only that command failed.
                self.errors += 1
                if self.errors == 1 or self.errors % 1000 == 0:
                    log_event(logging.WARNING, "cluster", f"Redis refused a command: {exc}")
                reply = 0
            done = inflight.popleft()
            if done is not None:
                _answer(done, reply if type(reply) is int else 0)

    # --- subscribing --------------------------------------------------------------

    async def subscribe(self, channel: bytes) -> None:
        """Receive ``channel`` from now on; returns once Redis confirmed it.

        ClusterUnavailable if the link is down or Redis does not confirm; the
        channel is then not wanted (the caller decides whether to ask again).
        """
        if not self._healthy:
            raise ClusterUnavailable(self.reason or "not connected")
        self.channels.add(channel)
        future = self._ask(b"SUBSCRIBE", channel)
        try:
            async with asyncio.timeout(_CONFIRM_TIMEOUT):
                await future
        except TimeoutError:
            self.channels.discard(channel)
            self._lose(_Lost("Redis did not confirm a subscription"))
            raise ClusterUnavailable(self.reason or "no confirmation") from None
        except ClusterUnavailable:
            self.channels.discard(channel)
            raise

    async def confirmed(self, channel: bytes) -> None:
        """Wait for a subscription to ``channel`` already asked for (if any) to be confirmed."""
        waiting = self._confirming.get(channel)
        if waiting:
            try:
                async with asyncio.timeout(_CONFIRM_TIMEOUT):
                    await asyncio.shield(waiting[-1])
            except TimeoutError:
                raise ClusterUnavailable("Redis did not confirm a subscription") from None

    def unsubscribe(self, channel: bytes) -> None:
        """Stop receiving ``channel``; written in order after any earlier subscription."""
        self.channels.discard(channel)
        if self._healthy:
            self._sub_queue.append(_pack(b"UNSUBSCRIBE", channel))
            self._sub_queued.set()

    def _ask(self, kind: bytes, *channels: bytes) -> asyncio.Future[list[None]]:
        """Queue a SUBSCRIBE for ``channels``; a future resolved when Redis confirmed all."""
        loop = asyncio.get_running_loop()
        futures = []
        for channel in channels:
            future: asyncio.Future[None] = loop.create_future()
            self._confirming.setdefault(channel, collections.deque()).append(future)
            futures.append(future)
        self._sub_queue.append(_pack(kind, *channels))
        self._sub_queued.set()
        return asyncio.gather(*futures)

    async def _write_subscriptions(self, conn: AbstractConnection) -> None:
        queue = self._sub_queue
        generation = self._generation
        while generation == self._generation:
            if not queue:
                self._sub_queued.clear()
                await self._sub_queued.wait()
                continue
            parts = list(queue)
            queue.clear()
            await conn.send_packed_command(parts, check_health=False)

    async def _resubscribe(self) -> None:
        """Subscribe to every wanted channel again; settle what changed meanwhile."""
        done: set[bytes] = set()
        for _ in range(10):  # bounded: a handful of rounds settles any churn
            missing = sorted(self.channels - done)
            for start in range(0, len(missing), _RESUBSCRIBE_CHUNK):
                chunk = missing[start : start + _RESUBSCRIBE_CHUNK]
                confirmed = self._ask(b"SUBSCRIBE", *chunk)
                try:
                    async with asyncio.timeout(_CONFIRM_TIMEOUT):
                        await confirmed
                except TimeoutError:
                    raise _Lost("Redis did not confirm the subscriptions") from None
                done.update(chunk)
            gone = done - self.channels
            for channel in gone:
                self._sub_queue.append(_pack(b"UNSUBSCRIBE", channel))
            self._sub_queued.set()
            done -= gone
            if done == self.channels:
                return
        raise _Lost("the subscriptions kept changing while reconnecting")

    async def _read_subscriber(self, conn: AbstractConnection) -> None:
        on_message = self.on_message
        generation = self._generation
        while generation == self._generation:
            reply = await conn.read_response()
            if type(reply) is not list or len(reply) != 3:
                continue
            kind, channel, data = reply
            if kind == b"message":
                self.frames_in += 1
                try:
                    on_message(channel, data)
                except Exception as exc:  # one bad frame must not end the node's reading
                    self.errors += 1
                    log_event(logging.ERROR, "cluster", f"a frame from Redis failed: {exc!r}")
                if self.frames_in % _YIELD_EVERY == 0:
                    # hiredis returns buffered replies without a pause; let this turn's
                    # writes go out (one socket write per connection per turn).
                    await asyncio.sleep(0)
                continue
            if kind != b"subscribe":
                continue  # an unsubscribe: nobody waits for it
            confirming = self._confirming
            waiting = confirming.get(channel)
            if not waiting:
                continue
            future = waiting.popleft()
            if not waiting:
                del confirming[channel]
            if not future.done():
                future.set_result(None)

    # --- presence -----------------------------------------------------------------

    async def receivers(self, channel: bytes) -> int:
        """How many connections (one per node) subscribe to ``channel`` now."""
        try:
            answer = await self.client.pubsub_numsub(channel)
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(_reason(exc)) from None
        return int(answer[0][1]) if answer else 0


def _reason(exc: BaseException) -> str:
    """Why Redis is unusable, in words safe for /healthz (no addresses, no secrets)."""
    if isinstance(exc, _Lost | ClusterUnavailable):
        return str(exc)
    if isinstance(exc, AuthenticationError):
        return "Redis refused the node's credentials"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "Redis did not answer in time"
    if isinstance(exc, RedisConnectionError | OSError):
        return "cannot reach Redis"
    if isinstance(exc, ResponseError):
        return "Redis refused a command"
    return f"Redis failed ({type(exc).__name__})"


def _detail(exc: BaseException) -> str:
    """The error itself, for the operator's log (and for a node that cannot start)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _answer(published: Published, receivers: int) -> None:
    """Hand a receiver count back; a failing callback is logged, never the link's end."""
    try:
        published(receivers)
    except Exception as exc:
        log_event(logging.ERROR, "cluster", f"a publish callback failed: {exc!r}")


def _pack(*args: bytes) -> bytes:
    """One RESP2 command: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)
