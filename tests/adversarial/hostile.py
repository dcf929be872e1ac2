"""A hostile relay: a man-in-the-middle websocket hop in front of a real relay.

Peers dial the hop; for each peer connection the hop dials the real relay
and forwards every websocket message both ways. The upstream relay is
configured to accept Auth signatures made for the hop's URL, which is
exactly a compromised relay operator: the attacker sees and controls every
frame, and the relay still authenticates addresses.

Each message passes through ``rules`` (callables ``rule(frame) -> Action |
None``, first non-None wins) before it is forwarded. A rule may rewrite the
message (flip a byte of the opaque session payload, swap an ephemeral key),
drop it, duplicate it, hold it back to reorder, delay it, or cut the
connection; ``inject`` sends a frame the peer never sent, and ``log`` keeps
every message seen so a later test can replay a recorded session. One
``random.Random(seed)`` drives any random choice, and the seed is printed so
a failing run can be replayed (the TigerBeetle VOPR idea, small).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from p2ptransfer.errors import P2PTransferError
from p2ptransfer.protocol.identity import PublicIdentity
from p2ptransfer.protocol.relay_wire import Auth, Deliver, Send, decode_frame
from p2ptransfer.protocol.session import FRAME, FrameKind

UP = "up"  # peer -> relay
DOWN = "down"  # relay -> peer


@dataclass
class Frame:
    """One websocket message crossing the hop, decoded as far as possible."""

    direction: str
    index: int  # global order of arrival at the hop
    conn: int
    address: str | None  # the authenticated peer of this connection, once seen
    raw: bytes
    wire: Any = None  # the decoded relay_wire frame, or None
    session: dict[str, Any] | None = None  # decoded session FRAME of a Send/Deliver payload

    @property
    def payload(self) -> bytes | None:
        return self.wire.payload if isinstance(self.wire, Send | Deliver) else None

    @property
    def kind(self) -> FrameKind | None:
        if self.session is None:
            return None
        try:
            return FrameKind(self.session["kind"])
        except ValueError:
            return None

    @property
    def tag(self) -> bytes | None:
        return None if self.session is None else self.session["tag"]

    def with_payload(self, payload: bytes) -> bytes:
        """This message re-encoded with another opaque payload."""
        if isinstance(self.wire, Send):
            return Send(self.wire.ref, self.wire.to, payload).encode()
        if isinstance(self.wire, Deliver):
            return Deliver(self.wire.sender, payload).encode()
        raise TypeError("only Send and Deliver carry a payload")

    def with_session(self, **changes: Any) -> bytes:
        """This message with fields of its session frame changed (tag, kind, body)."""
        assert self.session is not None
        values = dict(self.session)
        values.update(changes)
        return self.with_payload(FRAME.encode(values))


@dataclass
class Action:
    """What to do with a message instead of forwarding it as is."""

    emit: list[bytes] = field(default_factory=list)  # messages to forward in its place
    reply: list[bytes] = field(default_factory=list)  # messages sent back the way it came
    delay: float = 0.0  # wait this long first (later messages of that pipe wait too)
    cut: bool = False  # close both sides of this connection afterwards


def drop() -> Action:
    return Action(emit=[])


def forward(*messages: bytes, delay: float = 0.0) -> Action:
    return Action(emit=list(messages), delay=delay)


Rule = Callable[[Frame], Action | None]


def decode(direction: str, index: int, conn: int, address: str | None, raw: bytes) -> Frame:
    frame = Frame(direction, index, conn, address, raw)
    try:
        frame.wire = decode_frame(raw)
    except P2PTransferError:
        return frame
    payload = frame.payload
    if payload is not None:
        with contextlib.suppress(P2PTransferError):
            frame.session = FRAME.decode(payload)
    return frame


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    """``data`` with one byte xored (the position wraps around)."""
    out = bytearray(data)
    out[position % len(out)] ^= mask or 0x01
    return bytes(out)


class _Pipe:
    """One peer connection: the downstream (peer) and upstream (relay) websockets."""

    def __init__(self, cid: int, down: ServerConnection, up: ClientConnection) -> None:
        self.cid = cid
        self.down = down
        self.up = up
        self.address: str | None = None

    async def send(self, direction: str, message: bytes) -> None:
        target = self.up if direction == UP else self.down
        await target.send(message)

    async def cut(self) -> None:
        for ws in (self.up, self.down):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)


class HostileHop:
    """The hop; ``await start()``, then point the relay's public_urls at ``url``."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = random.SystemRandom().randrange(2**32) if seed is None else seed
        self.rng = random.Random(self.seed)
        self.rules: list[Rule] = []
        self.log: list[Frame] = []
        self.upstream: str | None = None
        self._server: Server | None = None
        self._pipes: dict[int, _Pipe] = {}
        self._ids = itertools.count(1)
        self._index = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            compression=None,
            max_size=None,  # forward anything: limits are the real relay's job
            max_queue=16,
            server_header=None,
            ping_interval=None,
        )

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def close(self) -> None:
        for pipe in list(self._pipes.values()):
            await pipe.cut()
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def honest(self) -> None:
        """From now on, forward every message untouched (an honest relay)."""
        self.rules.clear()

    async def cut_all(self) -> None:
        """Close every connection at once (the relay "crashed")."""
        for pipe in list(self._pipes.values()):
            await pipe.cut()

    # --- attacks that are not a reaction to one message -----------------------

    def pipe_of(self, address: str) -> _Pipe:
        """The newest connection of ``address`` (an older one may still be closing)."""
        for pipe in reversed(self._pipes.values()):
            if pipe.address == address:
                return pipe
        raise LookupError(f"no connection for {address}")

    async def inject_send(self, sender: str, to: str, payload: bytes) -> None:
        """Make the relay believe ``sender`` sent ``payload`` to ``to``."""
        await self.pipe_of(sender).send(UP, Send(0, to, payload).encode())

    async def inject_deliver(self, to: str, sender: str, payload: bytes) -> None:
        """Deliver ``payload`` to ``to`` as if ``sender`` had sent it."""
        await self.pipe_of(to).send(DOWN, Deliver(sender, payload).encode())

    def frames(
        self, direction: str | None = None, kind: FrameKind | None = None, peer: str | None = None
    ) -> list[Frame]:
        """Logged frames, filtered (``peer``: sent by it if UP, delivered to it if DOWN)."""
        return [
            f
            for f in self.log
            if (direction is None or f.direction == direction)
            and (kind is None or f.kind is kind)
            and (peer is None or f.address == peer)
        ]

    # --- forwarding -------------------------------------------------------------

    async def _handler(self, down: ServerConnection) -> None:
        assert self.upstream is not None, "set hop.upstream to the real relay's URL"
        try:
            up = await connect(
                self.upstream, compression=None, max_size=None, open_timeout=5, ping_interval=None
            )
        except Exception:
            await down.close(1011, "upstream unreachable")
            return
        pipe = _Pipe(next(self._ids), down, up)
        self._pipes[pipe.cid] = pipe
        pumps = [
            asyncio.create_task(self._pump(pipe, UP, down)),
            asyncio.create_task(self._pump(pipe, DOWN, up)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await pipe.cut()
            for task in pumps:
                task.cancel()
            self._pipes.pop(pipe.cid, None)

    async def _pump(self, pipe: _Pipe, direction: str, source: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in source:
                if not isinstance(message, bytes):
                    continue
                frame = decode(direction, next(self._index), pipe.cid, pipe.address, message)
                if isinstance(frame.wire, Auth):
                    pipe.address = PublicIdentity(frame.wire.public_key).address
                    frame.address = pipe.address
                self.log.append(frame)
                action = self._decide(frame)
                if action.delay:
                    await asyncio.sleep(action.delay)
                for out in action.emit:
                    await pipe.send(direction, out)
                for out in action.reply:
                    await pipe.send(DOWN if direction == UP else UP, out)
                if action.cut:
                    await pipe.cut()
                    return

    def _decide(self, frame: Frame) -> Action:
        for rule in list(self.rules):
            action = rule(frame)
            if action is not None:
                return action
        return forward(frame.raw)


# --- rule builders ------------------------------------------------------------


def on(
    kind: FrameKind,
    nth: int = 1,
    *,
    direction: str = UP,
    peer: str | None = None,
    then: Callable[[Frame], Action],
) -> Rule:
    """Apply ``then`` to the ``nth`` session frame of ``kind`` going ``direction``, once.

    ``peer`` narrows it to one peer's connection: UP frames that peer sent,
    DOWN frames delivered to it.
    """
    seen = 0

    def rule(frame: Frame) -> Action | None:
        nonlocal seen
        if frame.direction != direction or frame.kind is not kind:
            return None
        if peer is not None and frame.address != peer:
            return None
        seen += 1
        return then(frame) if seen == nth else None

    return rule


def reorder_next(kind: FrameKind, direction: str = UP, peer: str | None = None) -> Rule:
    """Hold the first ``kind`` frame and release it after the next frame of that pipe."""
    held: list[Frame] = []
    done = False

    def rule(frame: Frame) -> Action | None:
        nonlocal done
        if done or frame.direction != direction:
            return None
        if peer is not None and frame.address != peer:
            return None
        if not held:
            if frame.kind is kind:
                held.append(frame)
                return drop()
            return None
        if frame.conn != held[0].conn:
            return None
        done = True
        return forward(frame.raw, held[0].raw)

    return rule


def chaos(rng: random.Random, probability: float, direction: str | None = None) -> Rule:
    """Random faults on session frames: flip, drop, duplicate, delay (all seeded)."""

    def rule(frame: Frame) -> Action | None:
        if frame.session is None or (direction is not None and frame.direction != direction):
            return None
        if rng.random() >= probability:
            return None
        fault = rng.choice(["flip", "drop", "duplicate", "delay"])
        if fault == "flip":
            payload = frame.payload
            assert payload is not None
            return forward(
                frame.with_payload(
                    flip(payload, rng.randrange(len(payload)), rng.randrange(1, 256))
                )
            )
        if fault == "drop":
            return drop()
        if fault == "duplicate":
            return forward(frame.raw, frame.raw)
        return forward(frame.raw, delay=rng.uniform(0.0, 0.05))

    return rule


# --- rules on relay frames (mail) ---------------------------------------------


def on_wire(
    frame_type: type,
    nth: int = 1,
    *,
    direction: str = DOWN,
    peer: str | None = None,
    then: Callable[[Frame], Action],
    times: int = 1,
) -> Rule:
    """Apply ``then`` to relay frames of ``frame_type`` (Mail, Deposit, Prekeys, ...).

    From the ``nth`` one going ``direction`` (on ``peer``'s connections when
    given), ``times`` times in all; the others pass untouched.
    """
    seen = 0

    def rule(frame: Frame) -> Action | None:
        nonlocal seen
        if frame.direction != direction or not isinstance(frame.wire, frame_type):
            return None
        if peer is not None and frame.address != peer:
            return None
        seen += 1
        return then(frame) if nth <= seen < nth + times else None

    return rule


def reorder_wire(frame_type: type, direction: str = DOWN, peer: str | None = None) -> Rule:
    """Hold the first relay frame of ``frame_type``; release it after the next frame of its pipe."""
    held: list[Frame] = []
    done = False

    def rule(frame: Frame) -> Action | None:
        nonlocal done
        if done or frame.direction != direction:
            return None
        if peer is not None and frame.address != peer:
            return None
        if not held:
            if isinstance(frame.wire, frame_type):
                held.append(frame)
                return drop()
            return None
        if frame.conn != held[0].conn:
            return None
        done = True
        return forward(frame.raw, held[0].raw)

    return rule
