"""Starting a cluster node: which Redis URLs are accepted, and the errors a user reads.

None of these need a running Redis: they are about refusing bad settings
before anything connects, and saying so in one sentence.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from p2ptransfer.cli.commands.relay import relay_command  # type: ignore[attr-defined]
from p2ptransfer.errors import NetworkError
from p2ptransfer.net.relay import RelayConfig, RelayServer


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://localhost/0",
        "redis://[::1]:6379",
        "redis://:s3cret@10.0.0.5:6379/0",
        "rediss://10.0.0.5:6380/1",
        "unix:///run/redis/redis.sock",
    ],
)
def test_a_loopback_a_password_or_tls_is_accepted(url: str) -> None:
    assert RelayConfig(cluster=url).cluster == url


def test_a_remote_redis_without_password_or_tls_needs_the_operator_to_say_so() -> None:
    with pytest.raises(ValueError, match="--cluster-insecure") as refused:
        RelayConfig(cluster="redis://10.0.0.5:6379/0")
    assert "10.0.0.5" in str(refused.value)
    assert RelayConfig(cluster="redis://10.0.0.5:6379/0", cluster_insecure=True).cluster_insecure


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:6379", "redis://, rediss:// or unix://"),
        ("redis://:6379/0", "names no host"),
        ("redis://127.0.0.1:6379/zero", "database is a number"),
        ("redis://127.0.0.1:99999/0", "malformed"),
        ("unix://", "socket's path"),
    ],
)
def test_a_malformed_cluster_url_is_named(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RelayConfig(cluster=url)


def test_the_password_is_never_repeated_in_an_error() -> None:
    with pytest.raises(ValueError) as refused:
        RelayConfig(cluster="redis://:hunter2@127.0.0.1:6379/db")
    assert "hunter2" not in str(refused.value)


def test_the_relay_command_refuses_an_open_remote_redis_as_a_usage_error() -> None:
    result = CliRunner().invoke(relay_command, ["--port", "0", "--cluster", "redis://10.9.8.7/0"])
    assert result.exit_code == 2
    assert "refusing the Redis at 10.9.8.7 without a password or TLS" in result.output
    assert "Traceback" not in result.output


async def test_a_node_whose_redis_cannot_be_reached_does_not_start() -> None:
    server = RelayServer(RelayConfig(port=0, cluster="redis://127.0.0.1:1/0"))
    with pytest.raises(NetworkError, match="cannot reach the cluster's Redis"):
        await server.start()
    await server.close()
