"""The ceiling for the relay figures: the least a websockets relay can do.

The first message of a connection names ``me|partner``; every later binary
message is sent to the partner's connection, looked up in a dict: written
at once with websockets' ``broadcast()`` while the partner's write buffer is
under the write limit, else with ``await send()`` (which waits for it to
drain: the least back-pressure a relay can have and stay bounded). That is
the cheapest write path websockets offers, the one our relay uses too. No
authentication, no parsing, no limits, no queues of its own, no metrics:
only what websockets itself does, with the same options our relay serves
with (compression off, same frame size, incoming queue, write limit,
keepalive). ``python -m benchlib.bare_forwarder`` prints ``listening on URL``.
"""

from __future__ import annotations

import asyncio
import os
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from benchlib import profiling
from p2ptransfer.net import eventloop
from p2ptransfer.net.relay.config import RelayConfig

_DEFAULTS = RelayConfig()


class BareForwarder:
    def __init__(self) -> None:
        self.conns: dict[bytes, ServerConnection] = {}

    async def handler(self, ws: ServerConnection) -> None:
        hello = await ws.recv()
        if not isinstance(hello, bytes):
            return
        me, _, partner = hello.partition(b"|")
        self.conns[me] = ws
        await ws.send(b"ok")
        try:
            async for message in ws:
                target = self.conns.get(partner)
                if target is None:
                    continue
                if target.transport.get_write_buffer_size() < _DEFAULTS.write_limit:
                    broadcast((target,), message)  # written now, no wait for a drain
                else:
                    await target.send(message)  # waits for the buffer: back-pressure
        except ConnectionClosed:
            pass  # the bench's load aborts its connections when it is done
        finally:
            if self.conns.get(me) is ws:
                del self.conns[me]


async def main() -> None:
    forwarder = BareForwarder()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        forwarder.handler,
        "127.0.0.1",
        0,
        compression=None,
        server_header=None,
        max_size=_DEFAULTS.max_frame_size,
        max_queue=_DEFAULTS.max_queue,
        write_limit=_DEFAULTS.write_limit,
        ping_interval=_DEFAULTS.ping_interval or None,
        ping_timeout=_DEFAULTS.ping_timeout or None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}", flush=True)
        await stop


if __name__ == "__main__":
    profiling.run(f"relay-bare-{os.getpid()}", lambda: eventloop.run(main()))
