"""``--relay`` with several URLs (the nodes of one cluster): first that answers, then the next.

Two independent relays stand in for two nodes here: what is tested is the
client's choice of node, which does not depend on the nodes sharing state.
"""

from __future__ import annotations

import socket

import pytest

from p2ptransfer.errors import InputError, RelayUnreachable
from p2ptransfer.net.peer import Peer
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay_client import RelayClient
from p2ptransfer.protocol.relay_limits import MAX_RELAY_URLS, split_relay_urls
from tests.peers import Side

from .conftest import StartRelay, make_identity


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def test_a_list_is_split_checked_and_deduplicated() -> None:
    assert split_relay_urls(" ws://a:1 , wss://b ,WS://A:1/") == ("ws://a:1", "wss://b")
    with pytest.raises(InputError, match="stray comma"):
        split_relay_urls("ws://a:1,,ws://b:2")
    with pytest.raises(InputError, match="ws:// or wss://"):
        split_relay_urls("ws://a:1,localhost:8765")
    with pytest.raises(InputError, match=f"at most {MAX_RELAY_URLS}"):
        split_relay_urls(",".join(f"ws://h{i}:1" for i in range(MAX_RELAY_URLS + 1)))


async def test_the_first_relay_that_answers_is_used(relay: RelayServer) -> None:
    dead = closed_port_url()
    async with await RelayClient.connect(f"{dead},{relay.url}", make_identity(7)) as client:
        assert client.url == relay.url


async def test_when_none_answers_the_error_says_how_many_were_tried() -> None:
    urls = ",".join(closed_port_url() for _ in range(3))
    with pytest.raises(RelayUnreachable, match="none of the 3 relays let us in"):
        await RelayClient.connect(urls, make_identity(8), open_timeout=2)


async def test_a_peer_that_loses_its_relay_moves_on_to_the_next(
    start_relay: StartRelay, alice: Side
) -> None:
    config = RelayConfig(host="127.0.0.1", port=0)
    async with start_relay(config) as first, start_relay(config) as second:
        peer = Peer(alice.identity, alice.ledger, f"{first.url},{second.url}")
        await peer.connect()
        try:
            assert peer._require_client().url == first.url
            await first.close()  # the node goes away
            await peer._drop_connection()
            await peer.connect()
            assert peer._require_client().url == second.url
        finally:
            await peer.close()
