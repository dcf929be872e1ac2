"""The peer's connection to the rendezvous relay: authenticate, then send and receive frames.

One background task reads every frame from the relay and sorts it: Deliver,
Offline and Refused-for-Send go to one bounded inbox that :meth:`RelayClient.recv`
drains (so a caller that stops reading eventually stops the TCP reads and
the relay drops it, rather than this process buffering without bound);
answers to requests (Claim, Release, Lookup, Watch, and the mail requests:
PublishPrekey, GetPrekeys, Deposit, Ack) resolve the future of their ``ref``.
Mail pushed by the relay joins Deliver in the inbox; the relay's MailInfo
(sent once after authentication) is kept in :attr:`RelayClient.mail_info`.
When the connection ends, every waiter and the next ``recv`` get a
:class:`~p2ptransfer.errors.RelayUnreachable` that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl as ssl_module
from collections.abc import Awaitable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..errors import (
    DecodeError,
    LimitError,
    NotFound,
    PeerOffline,
    ProtocolError,
    RelayRefused,
    RelayUnreachable,
)
from ..protocol.identity import Identity, decode_address
from ..protocol.prekey import SignedPrekey
from ..protocol.relay_limits import split_relay_urls
from ..protocol.relay_wire import (
    MAX_ENVELOPE_SIZE,
    MAX_FRAME_SIZE,
    MAX_PAYLOAD_SIZE,
    SLOT_SIZE,
    Ack,
    Acked,
    AuthOk,
    Challenge,
    Claim,
    ClaimOk,
    Deliver,
    Deposit,
    Deposited,
    GetPrekeys,
    HandleUnknown,
    Lookup,
    LookupResult,
    Mail,
    MailInfo,
    Offline,
    Online,
    Prekeys,
    PublishPrekey,
    Refused,
    Release,
    Released,
    Send,
    Watch,
    check_handle,
    decode_server_frame,
    escape_text,
    make_auth,
    normalize_relay_url,
)

__all__ = ["Deliver", "Mail", "MailInfo", "Offline", "Refused", "RelayClient"]

_INBOX_SIZE = 256
KEEPALIVE = 10.0
"""Seconds between pings to the relay, and to wait for each pong: a relay that hangs
(a stopped cluster node) is noticed within twice this, and the peer moves on."""
_REQUEST_TIMEOUT = 10.0


class _Closed:
    """Inbox marker: the connection is over, with this error."""

    def __init__(self, error: RelayUnreachable) -> None:
        self.error = error


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, InvalidStatus):
        body = (exc.response.body or b"").decode("utf-8", "replace").strip()
        return f"HTTP {exc.response.status_code}" + (f" ({escape_text(body[:80])})" if body else "")
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl_module.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def _authenticate(
    ws: ClientConnection,
    normal_url: str,
    identity: Identity | Awaitable[Identity],
    timeout: float,
) -> str:
    """Answer the relay's challenge; the identity is awaited only once the challenge is in."""
    async with asyncio.timeout(timeout):
        challenge = decode_server_frame(await _recv_bytes(ws))
    if not isinstance(challenge, Challenge):
        raise ProtocolError("the relay did not start with a challenge")
    if not isinstance(identity, Identity):
        identity = await identity  # its own errors (wrong passphrase) pass through unchanged
    async with asyncio.timeout(timeout):
        await ws.send(make_auth(identity, normal_url, challenge.challenge).encode())
        answer = decode_server_frame(await _recv_bytes(ws))
    if not isinstance(answer, AuthOk) or answer.address != identity.address:
        raise ProtocolError("the relay answered authentication with something else")
    return answer.address


def _auth_failure(url: str, exc: BaseException) -> BaseException:
    """The error to raise for a failure during the authentication exchange."""
    if isinstance(exc, ConnectionClosed):
        why = _closed_reason(exc)
        return RelayUnreachable(f"the relay at {url} refused authentication ({why})")
    if isinstance(exc, TimeoutError):
        return RelayUnreachable(f"the relay at {url} did not authenticate us in time")
    if isinstance(exc, ProtocolError):
        return RelayUnreachable(f"the relay at {url} broke the protocol: {exc}")
    return exc  # the identity's own errors, cancellation: unchanged


def _closed_reason(exc: ConnectionClosed) -> str:
    """The relay's close code and reason, made safe to print: the reason is the relay's text."""
    if exc.rcvd is not None:
        text = f"code {exc.rcvd.code}"
        return f"{text}: {escape_text(exc.rcvd.reason)}" if exc.rcvd.reason else text
    return "connection lost"


class RelayClient:
    """An authenticated connection to one relay; build it with :meth:`connect`."""

    def __init__(self, ws: ClientConnection, url: str, address: str) -> None:
        self._ws = ws
        self.url = url
        self.address = address
        self._inbox: asyncio.Queue[Deliver | Mail | Offline | Refused | _Closed] = asyncio.Queue(
            _INBOX_SIZE
        )
        self.mail_info: MailInfo | None = None
        """The relay's mail limits (MailInfo), once it has sent them (right after AuthOk)."""
        self._mail_info = asyncio.Event()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._online: dict[str, list[asyncio.Future[Any]]] = {}
        self._refs = itertools.count(1)
        self._closed: RelayUnreachable | None = None
        self._reader = asyncio.create_task(self._read_loop(), name="relay-client-reader")

    @property
    def close_code(self) -> int | None:
        """The close code of the connection once it is closed (1001: relay shutting down)."""
        return self._ws.close_code

    @classmethod
    async def connect(
        cls,
        url: str,
        identity: Identity | Awaitable[Identity],
        *,
        open_timeout: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
        start: int = 0,
        keepalive: float = KEEPALIVE,
    ) -> RelayClient:
        """Connect to ``url`` and prove ``identity`` to the relay.

        ``identity`` may still be on its way (an awaitable, e.g. a key file
        being unlocked by scrypt in a thread): the connection and the relay's
        challenge are fetched meanwhile, so a command pays for the slower of
        the two, not their sum. An error from that awaitable (a wrong
        passphrase) is raised unchanged, and before any network error: it is
        the user's to fix, and definitive.

        Any failure (refused, unreachable, TLS, HTTP 429/503, authentication
        refused, timeout) is a RelayUnreachable with one clear sentence.

        ``url`` may be a comma-separated list (the nodes of one cluster): they
        are tried in turn, from the one at index ``start``, each for up to
        ``open_timeout``, and the first that lets us in is used; if none
        does, the RelayUnreachable names the last failure and how many were
        tried.
        """
        urls = split_relay_urls(url)
        if not isinstance(identity, Identity):
            identity = asyncio.ensure_future(identity)
        first = start % len(urls)
        order = urls[first:] + urls[:first]
        try:
            failure: RelayUnreachable | None = None
            for one in order:
                try:
                    return await cls._connect(
                        one, normalize_relay_url(one), identity, open_timeout, ssl, keepalive
                    )
                except RelayUnreachable as exc:
                    failure = exc
            assert failure is not None
            if len(order) == 1:
                raise failure
            raise RelayUnreachable(
                f"none of the {len(order)} relays let us in; the last said: {failure}"
            ) from failure
        except asyncio.CancelledError:
            if isinstance(identity, asyncio.Future):
                identity.cancel()
            raise
        except Exception:
            if isinstance(identity, asyncio.Future):
                await identity  # its own error (a wrong passphrase) is reported first
            raise

    @classmethod
    async def _connect(
        cls,
        url: str,
        normal: str,
        identity: Identity | Awaitable[Identity],
        open_timeout: float,
        ssl: ssl_module.SSLContext | None,
        keepalive: float,
    ) -> RelayClient:
        try:
            async with asyncio.timeout(open_timeout):
                ws = await ws_connect(
                    url,
                    open_timeout=None,
                    compression=None,
                    max_size=MAX_FRAME_SIZE,
                    max_queue=16,
                    ping_interval=keepalive,
                    ping_timeout=keepalive,
                    close_timeout=2,
                    proxy=None,
                    user_agent_header=None,
                    **_ssl_kwargs(ssl),
                )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise RelayUnreachable(f"cannot reach the relay at {url}: {_describe(exc)}") from exc
        try:
            address = await _authenticate(ws, normal, identity, open_timeout)
        except BaseException as exc:
            await ws.close()
            failure = _auth_failure(url, exc)
            if failure is exc:
                raise
            raise failure from exc
        return cls(ws, url, address)

    # --- frames ---------------------------------------------------------------

    async def send(self, to: str, payload: bytes) -> None:
        """Ask the relay to deliver ``payload`` to every connection of address ``to``.

        Returns once the frame is handed to the connection; if ``to`` is
        offline an :class:`Offline` with the same ``ref`` arrives via :meth:`recv`.
        """
        if len(payload) > MAX_PAYLOAD_SIZE:
            raise LimitError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_SIZE}")
        decode_address(to)
        await self._send(Send(next(self._refs), to.strip().lower(), payload).encode())

    async def recv(self) -> Deliver | Mail | Offline | Refused:
        """The next Deliver, Mail, Offline, or Refused (a Send the relay would not carry).

        Mail stays at the relay until :meth:`ack` deletes it: it is pushed
        again on the next connection.
        """
        item = await self._inbox.get()
        if isinstance(item, _Closed):
            self._inbox.put_nowait(item)  # later calls fail the same way
            raise item.error
        return item

    @property
    def waiting(self) -> int:
        """How many pushed frames (Deliver, Mail, ...) wait for :meth:`recv`."""
        return self._inbox.qsize()

    async def wait_online(self, address: str, timeout: float) -> None:
        """Return once ``address`` is connected to the relay; PeerOffline after ``timeout`` s."""
        address = address.strip().lower()
        decode_address(address)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._online.setdefault(address, []).append(future)
        try:
            await self._request(Watch(next(self._refs), address), future)
            async with asyncio.timeout(timeout):
                result = await future
        except TimeoutError:
            raise PeerOffline(f"{address} did not come online within {timeout:g} s") from None
        finally:
            waiters = self._online.get(address, [])
            with contextlib.suppress(ValueError):
                waiters.remove(future)
            if not waiters:
                self._online.pop(address, None)
        if isinstance(result, Refused):
            raise RelayRefused(f"the relay refused to watch {address}: {result.detail}")

    async def claim_handle(self, handle: str) -> None:
        """Bind ``handle`` to our key in the relay's directory (RelayRefused if taken)."""
        check_handle(handle)
        result = await self._ask(Claim(next(self._refs), handle))
        if isinstance(result, Refused):
            raise RelayRefused(f"the relay refused to register {handle}: {result.detail}")

    async def release_handle(self, handle: str) -> None:
        """Unbind ``handle`` from our key (RelayRefused if it is not ours, unknown, or too soon)."""
        check_handle(handle)
        result = await self._ask(Release(next(self._refs), handle))
        if isinstance(result, Refused):
            raise RelayRefused(f"the relay refused to release {handle}: {result.detail}")

    async def lookup_handle(self, handle: str) -> str:
        """The address the relay's directory has for ``handle`` (a hint, never trust)."""
        check_handle(handle)
        result = await self._ask(Lookup(next(self._refs), handle))
        if isinstance(result, LookupResult):
            return result.address
        if isinstance(result, HandleUnknown):
            raise NotFound(f"nobody has claimed the handle {handle!r} at {self.url}")
        raise RelayRefused(f"the relay refused to look up {handle}: {result.detail}")

    # --- mail -------------------------------------------------------------------

    async def wait_mail_info(self, timeout: float = _REQUEST_TIMEOUT) -> MailInfo:
        """The relay's MailInfo (max mail age, max envelope), waiting for it if needed."""
        try:
            async with asyncio.timeout(timeout):
                await self._mail_info.wait()
        except TimeoutError:
            raise RelayUnreachable(f"the relay at {self.url} sent no mail limits") from None
        if self.mail_info is None:  # woken by the connection ending
            raise self._closed or RelayUnreachable(f"the relay at {self.url} closed")
        return self.mail_info

    async def publish_prekey(self, signed: SignedPrekey) -> list[SignedPrekey]:
        """Publish our signed prekey; the prekeys the relay now serves for us, newest first."""
        result = await self._ask(PublishPrekey(next(self._refs), signed.encode()))
        if isinstance(result, Refused):
            raise _refused("publish the prekey", result)
        return _decode_prekeys(result)

    async def get_prekeys(self, address: str) -> list[SignedPrekey]:
        """``address``'s signed prekeys as the relay serves them (unchecked: call check_for)."""
        address = address.strip().lower()
        decode_address(address)
        result = await self._ask(GetPrekeys(next(self._refs), address))
        if isinstance(result, Refused):
            raise _refused(f"give the prekeys of {address}", result)
        if result.address != address:
            raise ProtocolError("the relay answered with another address's prekeys")
        return _decode_prekeys(result)

    async def deposit(self, to: str, slot: bytes, envelope: bytes) -> None:
        """Leave ``envelope`` for ``to`` in our ``slot`` (replacing what was there).

        Returns once the relay has it durably; RelayRefused (with its
        ``reason``) if it would not take it.
        """
        to = to.strip().lower()
        decode_address(to)
        if len(envelope) > MAX_ENVELOPE_SIZE:
            raise LimitError(f"an envelope of {len(envelope)} bytes exceeds {MAX_ENVELOPE_SIZE}")
        if len(slot) != SLOT_SIZE:
            raise ValueError(f"a slot is {SLOT_SIZE} bytes")
        result = await self._ask(Deposit(next(self._refs), to, slot, envelope))
        if isinstance(result, Refused):
            raise _refused(f"keep mail for {to}", result)

    async def ack(self, sender: str, slot: bytes, envelope_hash: bytes) -> None:
        """Let the relay delete mail (``sender``, ``slot``) if it is still the envelope we saw."""
        result = await self._ask(Ack(next(self._refs), sender, slot, envelope_hash))
        if isinstance(result, Refused):
            raise _refused("delete the mail", result)

    async def close(self) -> None:
        """Close the connection (code 1000) and stop the reader."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        if self._closed is None:
            self._closed = RelayUnreachable(f"the connection to the relay at {self.url} is closed")
            self._finish(self._closed)
        await self._ws.close()

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- internals ------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        if self._closed is not None:
            raise self._closed
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise self._lost(exc) from exc

    async def _request(
        self,
        frame: Watch | Claim | Release | Lookup | PublishPrekey | GetPrekeys | Deposit | Ack,
        future: asyncio.Future[Any],
    ) -> None:
        self._pending[frame.ref] = future
        future.add_done_callback(lambda _f: self._pending.pop(frame.ref, None))
        await self._send(frame.encode())

    async def _ask(
        self, frame: Claim | Release | Lookup | PublishPrekey | GetPrekeys | Deposit | Ack
    ) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._request(frame, future)
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                return await future
        except TimeoutError:
            raise RelayUnreachable(f"the relay at {self.url} did not answer in time") from None

    def _lost(self, exc: ConnectionClosed | None) -> RelayUnreachable:
        if self._closed is None:
            why = _closed_reason(exc) if exc is not None else "connection lost"
            self._closed = RelayUnreachable(
                f"lost the connection to the relay at {self.url} ({why})"
            )
        return self._closed

    async def _read_loop(self) -> None:
        error: RelayUnreachable
        try:
            while True:
                frame = decode_server_frame(await _recv_bytes(self._ws))
                await self._dispatch(frame)
        except ConnectionClosed as exc:
            error = self._lost(exc)
        except (DecodeError, ProtocolError) as exc:
            self._closed = RelayUnreachable(f"the relay at {self.url} broke the protocol: {exc}")
            error = self._closed
            await self._ws.close(1002, "protocol error")
        self._finish(error)

    def _finish(self, error: RelayUnreachable) -> None:
        """Wake every waiter with ``error``; later recv() calls raise it too."""
        for future in [*self._pending.values(), *itertools.chain(*self._online.values())]:
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self._online.clear()
        self._mail_info.set()
        try:
            self._inbox.put_nowait(_Closed(error))
        except asyncio.QueueFull:  # make room so recv() learns the connection is gone
            self._inbox.get_nowait()
            self._inbox.put_nowait(_Closed(error))

    async def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, Deliver | Mail | Offline):
            await self._inbox.put(frame)
        elif isinstance(frame, MailInfo):
            self.mail_info = frame
            self._mail_info.set()
        elif isinstance(frame, Online):
            for future in self._online.pop(frame.address, []):
                if not future.done():
                    future.set_result(frame)
        elif isinstance(
            frame,
            ClaimOk
            | Released
            | LookupResult
            | HandleUnknown
            | Prekeys
            | Deposited
            | Acked
            | Refused,
        ):
            waiter = self._pending.get(frame.ref)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
            elif isinstance(frame, Refused):
                await self._inbox.put(frame)  # a refused Send (rate-limited)
        else:
            raise ProtocolError(f"unexpected {type(frame).__name__} after authentication")


def _refused(what: str, refused: Refused) -> RelayRefused:
    return RelayRefused(
        f"the relay refused to {what}: {refused.detail} ({refused.reason})", refused.reason
    )


def _decode_prekeys(frame: Prekeys) -> list[SignedPrekey]:
    try:
        return [SignedPrekey.decode(item) for item in frame.signed_prekeys]
    except DecodeError as exc:
        raise ProtocolError(f"the relay served a malformed prekey: {exc}") from exc


async def _recv_bytes(ws: ClientConnection) -> bytes:
    message = await ws.recv()
    if isinstance(message, str):
        raise DecodeError("the relay sent a text frame")
    return message


def _ssl_kwargs(ssl: ssl_module.SSLContext | None) -> dict[str, Any]:
    # websockets makes its own default context for wss:// only when ``ssl`` is absent.
    return {} if ssl is None else {"ssl": ssl}
