"""The cluster figure: frames between peers on two nodes against peers on one node.

A private ``redis-server`` (a free loopback port, a temporary directory,
persistence off; never a Redis the machine may run) and two relay nodes of
one cluster sharing it. The same load as the relay figure
(:func:`benchlib.relay_load.push`) runs in two placements, in ABBA order:

* ``local``: every sender and every receiver on node A, so a frame goes
  straight from one connection to the other, as on a single relay;
* ``cross``: senders on node A, receivers on node B, so every frame is
  published to Redis by A and delivered by B.

The nodes and Redis are pinned to the first CPU, the load to the second, as
for the relay figure: the ratio says how much more of that core a frame
costs when it crosses nodes. Nodes on machines of their own would each have
a core; the figure is the conservative case.

As a worker (``python -m benchlib.cluster throughput --url-a A --url-b B``)
it is :mod:`benchlib.relay_load`'s ``throughput`` with the receivers on B.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import procs, profiling

GOAL = "cluster_cross_vs_local"
PLACEMENTS = ("local", "cross", "cross", "local")  # one ABBA block
REDIS_START_TIMEOUT = 10.0
PORT_ATTEMPTS = 5


def skip_reason() -> str | None:
    """Why the cluster figure cannot be measured here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if importlib.util.find_spec("redis") is None:
        return "the redis package is missing (pip install 'p2ptransfer[cluster]')"
    return None


# --- the driver's processes -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(cpu: int | None) -> Iterator[tuple[str, int]]:
    """A private ``redis-server``: (its URL, its pid); stopped and its directory removed after.

    Redis cannot listen on port 0: a free port is picked by binding and
    closing a socket, and a start that loses the port to another process is
    retried on a new one.
    """
    with tempfile.TemporaryDirectory(prefix="p2pt-bench-redis-") as directory:
        log = Path(directory) / "redis.log"
        failure = ""
        for _ in range(PORT_ATTEMPTS):
            port = _free_port()
            argv = [
                "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--protected-mode", "yes",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", directory,
                "--logfile", str(log),
            ]  # fmt: skip
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + REDIS_START_TIMEOUT
            while proc.poll() is None and not _pong(port) and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None and _pong(port):
                break
            proc.kill()
            proc.wait(5)
            failure = log.read_text(errors="replace")[-1000:] if log.exists() else "no log"
        else:
            raise RuntimeError(f"redis-server did not start: {failure}")
        procs.pin(proc.pid, cpu)
        try:
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            procs.stop(proc, 5)


class Node(procs.Child):
    """A relay node of the cluster: ``rendezvous.py --cluster``, with the bench's relay flags."""

    def __init__(self, redis_url: str, prefix: str, name: str, *, cpu: int | None) -> None:
        argv = [sys.executable, str(procs.ROOT / "rendezvous.py"), "--port=0"]
        argv += [*procs.RELAY_BENCH_FLAGS, f"--cluster={redis_url}", f"--cluster-prefix={prefix}"]
        profile_dir = os.environ.get("P2PT_BENCH_PROFILE")
        if profile_dir:  # written when the node exits on SIGTERM
            out = Path(profile_dir) / f"{os.environ.get('P2PT_BENCH_SECTION', '')}-{name}.prof"
            argv[1:1] = ["-m", "cProfile", "-o", str(out)]
        super().__init__(argv, cpu=cpu, name=name)
        line = self.expect("listening on ", procs.START_TIMEOUT)
        if re.fullmatch(r"wss?://\S+", line) is None:
            self.close()
            raise RuntimeError(f"{name}: unexpected first line {line!r}")
        self.url = line


def push_between(
    a: Node, b: Node, cluster: dict[str, int], cpu: int | None, *args: str
) -> dict[str, Any]:
    """One load run, senders on ``a`` and receivers on ``b``; each cluster process's CPU."""
    with procs.worker(
        "cluster", "throughput", f"--url-a={a.url}", f"--url-b={b.url}", *args, cpu=cpu
    ) as load:
        load.expect("ready", 120)
        before = {name: procs.cpu_seconds(pid) for name, pid in cluster.items()}
        load.tell("go")
        load.expect("pushed", 120)
        used = {name: procs.cpu_seconds(pid) - before[name] for name, pid in cluster.items()}
        result: dict[str, Any] = load.expect_json("result", 60)
    frames = result["frames"]
    result["cpu_us_per_frame"] = {name: s / frames * 1e6 for name, s in used.items()}
    result["cluster_cpu_us_per_frame"] = sum(used.values()) / frames * 1e6
    result["cluster_cpu_share"] = sum(used.values()) / result["seconds"]
    return result


def bench_cluster(
    *, blocks: int, pairs: int, size: int, frames: int, rounds: int,
    cpu_server: int | None, cpu_load: int | None,
) -> dict[str, Any]:  # fmt: skip
    """Frames/s across two nodes and on one, ABBA; ``{"skipped": reason}`` without Redis.

    A run that fails (a node or the load gives up) is reported as
    ``{"failed": reason}``: the other figures of the bench still count.
    """
    reason = skip_reason()
    if reason is not None:
        return {"skipped": reason}
    try:
        return _measure(blocks, pairs, size, frames, rounds, cpu_server, cpu_load)
    except (RuntimeError, TimeoutError, OSError) as exc:
        return {"failed": f"{type(exc).__name__}: {exc}"}


def _measure(
    blocks: int, pairs: int, size: int, frames: int, rounds: int,
    cpu_server: int | None, cpu_load: int | None,
) -> dict[str, Any]:  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "cross": []}
    prefix = f"bench{secrets.token_hex(4)}:"
    with (
        redis_server(cpu_server) as (url, redis_pid),
        Node(url, prefix, "node-a", cpu=cpu_server) as node_a,
        Node(url, prefix, "node-b", cpu=cpu_server) as node_b,
    ):
        pids = {"node_a": node_a.pid, "node_b": node_b.pid, "redis": redis_pid}
        load = (f"--pairs={pairs}", f"--size={size}", f"--count={frames}", f"--rounds={rounds}")
        for _ in range(blocks):
            for placement in PLACEMENTS:
                receivers = node_b if placement == "cross" else node_a
                runs[placement].append(push_between(node_a, receivers, pids, cpu_load, *load))
        pinned = node_a.pinned and node_b.pinned
    out: dict[str, Any] = {"pairs": pairs, "size": size, "runs_each": blocks * 2, "pinned": pinned}
    for placement, rs in runs.items():
        out[placement] = {
            "frames_per_s": statistics.median([r["frames_per_s"] for r in rs]),
            "rtt_p50_ms": statistics.median([r["rtt_p50_ms"] for r in rs]),
            "rtt_p99_ms": statistics.median([r["rtt_p99_ms"] for r in rs]),
            "cluster_cpu_us_per_frame": statistics.median(
                [r["cluster_cpu_us_per_frame"] for r in rs]
            ),
            "cluster_cpu_share": statistics.median([r["cluster_cpu_share"] for r in rs]),
            "load_cpu_share": statistics.median([r["load_cpu_share"] for r in rs]),
            "cpu_us_per_frame": {
                name: statistics.median([r["cpu_us_per_frame"][name] for r in rs]) for name in pids
            },
            "all_frames_per_s": [round(r["frames_per_s"]) for r in rs],
        }
    neighbours = list(zip(runs["cross"], runs["local"], strict=True))
    out["throughput_ratios"] = [c["frames_per_s"] / lo["frames_per_s"] for c, lo in neighbours]
    out["rtt_ratios"] = [c["rtt_p50_ms"] / lo["rtt_p50_ms"] for c, lo in neighbours]
    return out


def unmeasured(result: dict[str, Any]) -> str:
    """ "skipped: why" or "failed: why" for a figure not measured; "" for a measured one."""
    for key in ("skipped", "failed"):
        if key in result:
            return f"{key}: {result[key]}"
    return ""


def summarize(result: dict[str, Any]) -> tuple[float | None, dict[str, float]]:
    """The goal ratio (None when skipped or failed) and the plain figures printed beside it."""
    if unmeasured(result):
        return None, {}
    local, cross = result["local"], result["cross"]
    return statistics.median(result["throughput_ratios"]), {
        "cluster_cross_frames_per_s": cross["frames_per_s"],
        "cluster_local_frames_per_s": local["frames_per_s"],
        "cluster_cross_rtt_p50_ms": cross["rtt_p50_ms"],
        "cluster_local_rtt_p50_ms": local["rtt_p50_ms"],
        "cluster_cross_rtt_p50_vs_local": statistics.median(result["rtt_ratios"]),
        "cluster_cross_cpu_us_per_frame": cross["cluster_cpu_us_per_frame"],
        "cluster_local_cpu_us_per_frame": local["cluster_cpu_us_per_frame"],
    }


def beside(result: dict[str, Any]) -> str:
    """The goal row's absolute figures, or why it was not measured."""
    if unmeasured(result):
        return unmeasured(result)
    local, cross = result["local"], result["cross"]
    return (
        f"{cross['frames_per_s']:,.0f} vs {local['frames_per_s']:,.0f} frames/s"
        f" (RTT p50 {cross['rtt_p50_ms']:.3f} vs {local['rtt_p50_ms']:.3f} ms)"
    )


def details(result: dict[str, Any]) -> str | None:
    """A line under the table: CPU per frame on the cluster's core, both placements."""
    if unmeasured(result):
        return None
    local, cross = result["local"], result["cross"]
    parts = ", ".join(f"{k} {v:.1f}" for k, v in cross["cpu_us_per_frame"].items())
    return (
        f"cluster: CPU per 256 B frame (us, nodes + Redis) across nodes"
        f" {cross['cluster_cpu_us_per_frame']:.1f} ({parts}), on one node"
        f" {local['cluster_cpu_us_per_frame']:.1f}; cluster core busy"
        f" {cross['cluster_cpu_share']:.0%} / {local['cluster_cpu_share']:.0%}, load core"
        f" {cross['load_cpu_share']:.0%} / {local['load_cpu_share']:.0%} (across / one node);"
        f" pinned: {result['pinned']}"
    )


# --- the worker -------------------------------------------------------------------------


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """relay_load's throughput, with each pair's receiver on ``--url-b``."""
    from benchlib.relay_load import End, authenticated, measure
    from p2ptransfer.protocol.identity import Identity
    from p2ptransfer.protocol.relay_wire import Send

    async def pair() -> tuple[End, End]:
        ids = [Identity(secrets.token_bytes(32)) for _ in range(2)]
        a = await authenticated(args.url_a, ids[0])
        b = await authenticated(args.url_b, ids[1])
        to_a, to_b = ids[0].address, ids[1].address
        return (a, lambda p: Send(1, to_b, p).encode()), (b, lambda p: Send(1, to_a, p).encode())

    pairs = [await pair() for _ in range(args.pairs)]
    return await measure(pairs, args)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchlib.cluster")
    parser.add_argument("command", choices=["throughput"])
    parser.add_argument("--url-a", required=True)
    parser.add_argument("--url-b", required=True)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    placement = "local" if args.url_a == args.url_b else "cross"
    result = profiling.run(f"cluster-{placement}", lambda: asyncio.run(throughput(args)))
    print(f"result {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
