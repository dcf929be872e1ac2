"""Process plumbing for the bench: servers, workers, CPU pinning, memory and CPU readings.

Why processes: in one process the load generator and the server share a core
and an event loop, so a figure mixes both ends' costs. Here the server under
test (our relay, or the bare forwarder it is compared with) runs alone on one
core and the load comes from worker processes on the other.

The worker line protocol (stdout, one line each, UTF-8):

* ``ready <json>``: the worker is set up (connected, listening, ...);
  the JSON says what the driver needs (addresses, counts).
* ``result <json>``: the worker's measurement; it is the last line it prints.

A long-running worker (a listener, a holder of idle connections) waits for a
line on stdin (``go`` or ``stop``) before its next step. Anything on stderr is
passed through for diagnosis.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

SCRIPTS = Path(__file__).resolve().parent.parent
ROOT = SCRIPTS.parent
START_TIMEOUT = 30.0


def cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def pin(pid: int, cpu: int | None) -> bool:
    """Keep ``pid`` on ``cpu``; False where that was not asked for or not possible."""
    if cpu is None:
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:  # a restricted container: run unpinned, and say so
        return False
    return True


def anon_rss_bytes(pid: int) -> int:
    """Anonymous resident memory of ``pid`` (heap and stacks, not mapped files), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no RssAnon for pid {pid}")


def raise_open_files() -> int:
    """Raise this process's soft open-file limit to its hard limit; returns the new limit.

    Children inherit it: the relays and load processes of the idle-memory
    figure hold ten thousand sockets and more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def event_loop() -> str:
    """The loop relays and peers run on: ``uvloop`` (installed, not switched off) or ``asyncio``."""
    from p2ptransfer.net.eventloop import loop_factory

    return "asyncio" if loop_factory() is None else "uvloop"


def stop(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("P2PTRANSFER_") or k == "P2PTRANSFER_UVLOOP"  # the loop is chosen
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS), str(ROOT)])
    return env


class Child:
    """A child process speaking the line protocol; always killed on exit."""

    def __init__(self, argv: list[str], *, cpu: int | None = None, name: str = "") -> None:
        self.name = name or argv[-1]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # inherited: a failing worker's traceback shows up
            text=True,
        )
        self.pinned = pin(self.proc.pid, cpu)
        # A thread reads stdout: select() on a buffered pipe can miss a line already read.
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True, name=self.name).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next stdout line starting with ``prefix``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"{self.name}: no {prefix!r} line within {timeout:.0f} s"
                ) from None
            if line is None:
                code = self.proc.wait(5)
                raise RuntimeError(f"{self.name} exited ({code}) before {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def expect_json(self, prefix: str, timeout: float) -> Any:
        return json.loads(self.expect(prefix + " ", timeout))

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker(module: str, *args: str, cpu: int | None = None) -> Child:
    """Start ``python -m benchlib.<module> args...``."""
    return Child([sys.executable, "-m", f"benchlib.{module}", *args], cpu=cpu, name=module)


def run_worker(module: str, *args: str, cpu: int | None = None, timeout: float = 120) -> Any:
    """Run a one-shot worker to completion and return its ``result`` JSON."""
    with worker(module, *args, cpu=cpu) as child:
        result = child.expect_json("result", timeout)
        child.proc.wait(timeout)
        return result


# Our relay with its rate limits raised out of the way (a benchmark is one client IP doing
# what thousands of users would) and room for the idle-memory crowd. Queues, write limits,
# keepalive and every per-frame check stay as shipped.
RELAY_BENCH_FLAGS = (
    "--log-level=warning",
    "--frame-rate=1e9",  # not 0: the per-frame throttle check stays on the path, as shipped
    "--frame-burst=1e9",
    "--byte-rate=1e12",
    "--byte-burst=1e12",
    "--connection-rate-per-ip=0",
    "--max-connections=100000",
    "--max-connections-per-ip=100000",
)


_SERVER_IDS = itertools.count(1)


class Server(Child):
    """A relay process (ours or the bare forwarder) that prints ``listening on URL`` first."""

    def __init__(self, kind: str, *, cpu: int | None = None) -> None:
        if kind == "ours":
            argv = [sys.executable, str(ROOT / "rendezvous.py"), "--port=0", *RELAY_BENCH_FLAGS]
            profile_dir = os.environ.get("P2PT_BENCH_PROFILE")
            if profile_dir:  # written when the relay exits on SIGTERM (it exits cleanly)
                section = os.environ.get("P2PT_BENCH_SECTION", "")
                out = Path(profile_dir) / f"{section}-relay-ours-{next(_SERVER_IDS)}.prof"
                argv[1:1] = ["-m", "cProfile", "-o", str(out)]
        elif kind == "bare":
            argv = [sys.executable, "-m", "benchlib.bare_forwarder"]
        else:
            raise ValueError(kind)
        super().__init__(argv, cpu=cpu, name=f"relay-{kind}")
        self.kind = kind
        line = self.expect("listening on ", START_TIMEOUT)
        match = re.fullmatch(r"wss?://\S+", line)
        if match is None:
            self.close()
            raise RuntimeError(f"{self.name}: unexpected first line {line!r}")
        self.url = line
