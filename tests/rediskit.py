"""A private ``redis-server`` for tests: started, stopped, killed and restarted at will.

The cluster tests run against a real Redis (no fakes: the Lua scripts are the
code under test). Each :class:`RedisServer` is its own process on a free
loopback port, in a temporary directory, with persistence off (``--save ""``,
``--appendonly no``), so nothing outlives the test session and nothing
touches a Redis the machine may run.

Redis cannot be told "port 0", so a free port is found by binding a socket
to ``127.0.0.1:0`` and closing it; another process may take it in between,
so a start that fails on the port is retried with a new one.

Without ``redis-server`` the tests that need it skip with the reason, unless
``P2PTRANSFER_REQUIRE_REDIS=1`` (CI on a machine that has it): then they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisServer", "redis_server_binary", "require_redis_server"]

REQUIRE_ENV = "P2PTRANSFER_REQUIRE_REDIS"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5


def redis_server_binary() -> str | None:
    """The ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def require_redis_server() -> str:
    """The ``redis-server`` binary; skips the test without it (fails if it is required)."""
    binary = redis_server_binary()
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, for one test or one session.

    ``with RedisServer() as server:`` or :meth:`start` / :meth:`stop`.
    ``extra_args`` are passed as they are, e.g.
    ``["--client-output-buffer-limit", "pubsub 64kb 32kb 1"]``.
    """

    def __init__(
        self,
        directory: Path | None = None,
        extra_args: list[str] | None = None,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or redis_server_binary() or "redis-server"
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="p2pt-redis-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args or [])
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def start(self) -> None:
        """Start on a free port (a new one for each failed attempt); ready when PING answers."""
        failure = ""
        for _ in range(PORT_ATTEMPTS):
            self.port = _free_port()
            failure = self._launch()
            if not failure:
                return
        raise RuntimeError(f"redis-server did not start: {failure}")

    def restart(self) -> None:
        """Start again on the same port (after :meth:`stop` or :meth:`kill`): clients reconnect."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        failure = self._launch()
        if failure:
            raise RuntimeError(f"redis-server did not restart on port {self.port}: {failure}")

    def _launch(self) -> str:
        """Launch on ``self.port`` and wait for PING; "" when up, else why not."""
        self.log_file.unlink(missing_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.log_file),
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self._why_not()
            if self.ping():
                return ""
            time.sleep(0.02)
        self.kill()
        return f"no answer to PING within {START_TIMEOUT} s; {self._why_not()}"

    def _why_not(self) -> str:
        stderr = b""
        if self.proc is not None and self.proc.stderr is not None:
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return (stderr.decode(errors="replace") + log).strip()[-2000:]

    def ping(self) -> bool:
        """Whether the server answers PING now."""
        try:
            with self.client(timeout=0.5) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A synchronous client for setting up and inspecting (close it after use)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def config_set(self, name: str, value: str) -> None:
        """``CONFIG SET name value`` on the running server."""
        with self.client() as client:
            client.config_set(name, value)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within a few seconds."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: Redis lost mid-use, as a crash loses it."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
