"""How close p2ptransfer comes to what this stack can physically do.

Run:  .venv/bin/python scripts/bench.py [--quick] [--json] [--json-out FILE] [--profile]

Every goal is a ratio between our figure and a reference measured by this
same run on this same machine, the two interleaved (ABBA order, or the
reference taken before and after) so that a noisy machine moves both ends of
the ratio together. Everything listens on 127.0.0.1 with an OS-chosen port,
every loop is bounded in count and in time, and the whole run has a deadline.
Relays run in their own processes: for the relay figures pinned to the first
CPU with the load pinned to the second; for the handshake and transfer
figures, relay and peers (three processes) share both CPUs as the scheduler
decides. ``benchlib/procs.py`` has the plumbing.

Output: a human table on stdout; with ``--json`` the last line of stdout is
one JSON object on a single line (also written to ``--json-out``), also when
the run fails (then with an ``error`` key and exit status 1).
``--profile`` runs every worker and relay under cProfile and prints the top
functions of each. docs/performance.md explains every figure and what bounds it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from benchlib import cluster, cold_pair, procs

median = statistics.median
PAIRS = 50
SIZE = 256
LARGE = 16 * 1024
IDLE_WARM = 100  # idle connections opened before the first memory reading
IDLE_PER_LOAD = 4000  # at most so many idle client sockets per load process


@dataclass(frozen=True)
class Goal:
    key: str
    target: float
    higher_is_better: bool

    def met(self, value: float | None) -> bool | None:
        """None for a figure this run could not measure (skipped, with its reason)."""
        if value is None:
            return None
        return value >= self.target if self.higher_is_better else value <= self.target


GOALS = (
    Goal("relay_vs_bare", 1.2, True),
    Goal("relay_rtt_p50_vs_bare", 1.25, False),
    Goal("idle_bytes_per_peer", 20_480, False),
    Goal("handshakes_on_open_connection_vs_ceiling", 0.8, True),
    Goal("transfers_vs_signature_bound", 0.5, True),
    Goal("cli_help_vs_import_click", 1.5, False),
    Goal(cluster.GOAL, 0.5, True),
    Goal(cold_pair.GOAL, 1.0, False),
    Goal(cold_pair.GOAL_LIGHT, 0.5, False),
)
"""The goals; ``transfers_vs_sqlite_commit`` and ``handshakes_vs_crypto_ceiling`` (a fresh
connection per session) are still measured and printed, no longer goals."""


@dataclass(frozen=True)
class Plan:
    """Counts for one run: ``--quick`` keeps every figure but measures for less long."""

    blocks: int  # relay: ABBA blocks (each runs both relays twice)
    frames_per_sender: int
    rtt_rounds: int
    idle_peers: int
    ceiling_seconds: float
    sessions_per_pair: int
    transfers: int
    transfers_window_1: int  # one in flight is ~3x slower: fewer, for the same time
    windows: tuple[int, ...]
    cli_runs: int
    cold_pairs: int  # rounds of cold send + receive pairs (each: default key, light, wormhole)
    deadline: float  # the whole run, seconds

    @classmethod
    def for_run(cls, quick: bool, smoke: bool) -> Plan:
        if smoke:  # every code path once, figures meaningless: for tests/test_bench.py
            return cls(
                blocks=1,
                frames_per_sender=50,
                rtt_rounds=50,
                idle_peers=100,
                ceiling_seconds=0.2,
                sessions_per_pair=2,
                transfers=40,
                transfers_window_1=10,
                windows=(1, 32),
                cli_runs=1,
                cold_pairs=1,
                deadline=150,
            )
        if quick:
            return cls(
                blocks=1,
                frames_per_sender=2000,
                rtt_rounds=1000,
                idle_peers=2000,
                ceiling_seconds=1.0,
                sessions_per_pair=20,
                transfers=2000,
                transfers_window_1=400,
                windows=(1, 32, 128),
                cli_runs=10,
                cold_pairs=4,
                deadline=160,
            )
        return cls(
            blocks=2,
            frames_per_sender=4000,
            rtt_rounds=3000,
            idle_peers=10_000,  # --quick measures 2,000: a fifth of the peers, of the time
            ceiling_seconds=2.0,
            sessions_per_pair=60,
            transfers=5000,
            transfers_window_1=1000,
            windows=(1, 32, 128),
            cli_runs=10,
            cold_pairs=8,
            deadline=480,
        )


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def abba(blocks: int) -> Iterator[str]:
    """bare, ours, ours, bare, ...: a drift during the run weighs on both sides alike."""
    for _ in range(blocks):
        yield from ("bare", "ours", "ours", "bare")


# --- the sections ----------------------------------------------------------------


def push_through(server: procs.Server, cpu: int | None, *args: str) -> dict[str, Any]:
    """One run of ``benchlib.relay_load throughput``, with the relay's CPU time for the push."""
    with procs.worker(
        "relay_load", "throughput", f"--kind={server.kind}", f"--url={server.url}", *args, cpu=cpu
    ) as load:
        load.expect("ready", 120)
        before = procs.cpu_seconds(server.pid)
        load.tell("go")
        load.expect("pushed", 120)
        used = procs.cpu_seconds(server.pid) - before
        result: dict[str, Any] = load.expect_json("result", 60)
    result["relay_cpu_us_per_frame"] = used / result["frames"] * 1e6
    result["relay_cpu_share"] = used / result["seconds"]
    return result


def bench_relay(plan: Plan, cpu_server: int | None, cpu_load: int | None) -> dict[str, Any]:
    """Both relays up at once on one core; the load runs against them in ABBA order."""
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
    large: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
    with procs.Server("ours", cpu=cpu_server) as ours, procs.Server("bare", cpu=cpu_server) as bare:
        servers = {"ours": ours, "bare": bare}
        for kind in abba(plan.blocks):
            server = servers[kind]
            small = (f"--size={SIZE}", f"--count={plan.frames_per_sender}")
            runs[kind].append(
                push_through(
                    server, cpu_load, f"--pairs={PAIRS}", *small, f"--rounds={plan.rtt_rounds}"
                )
            )
            big = (f"--size={LARGE}", f"--count={max(10, plan.frames_per_sender // 40)}")
            large[kind].append(
                push_through(server, cpu_load, f"--pairs={PAIRS}", *big, "--rounds=0")
            )
        pinned = ours.pinned and bare.pinned
    out: dict[str, Any] = {
        "pairs": PAIRS,
        "size": SIZE,
        "runs_each": len(runs["ours"]),
        "pinned": pinned,
    }
    for kind in ("ours", "bare"):
        rs = runs[kind]
        out[kind] = {
            "frames_per_s": median([r["frames_per_s"] for r in rs]),
            "rtt_p50_ms": median([r["rtt_p50_ms"] for r in rs]),
            "rtt_p99_ms": median([r["rtt_p99_ms"] for r in rs]),
            "cpu_us_per_frame": median([r["relay_cpu_us_per_frame"] for r in rs]),
            "relay_cpu_share": median([r["relay_cpu_share"] for r in rs]),
            "load_cpu_share": median([r["load_cpu_share"] for r in rs]),
            "mb_per_s_16k": median([r["mb_per_s"] for r in large[kind]]),
            "all_frames_per_s": [round(r["frames_per_s"]) for r in rs],
        }
    # Ratios of neighbouring runs (each bare run with the ours run next to it), then the median.
    pairs_of_runs = list(zip(runs["ours"], runs["bare"], strict=True))
    out["throughput_ratios"] = [o["frames_per_s"] / b["frames_per_s"] for o, b in pairs_of_runs]
    out["rtt_ratios"] = [o["rtt_p50_ms"] / b["rtt_p50_ms"] for o, b in pairs_of_runs]
    return out


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def bench_idle(plan: Plan, cpu_server: int | None, cpu_load: int | None) -> dict[str, Any]:
    """Anonymous memory a relay gains per idle peer, from two crowds after a warm-up one.

    The crowds' connections are spread over enough load processes that none
    holds more than ``IDLE_PER_LOAD`` sockets (each process has its own
    open-file limit); the relay holds them all.
    """
    half = plan.idle_peers // 2
    warm = IDLE_WARM
    loads = -(-(warm + 2 * half) // IDLE_PER_LOAD)
    out: dict[str, Any] = {
        "peers": 2 * half,
        "full_run_peers": Plan.for_run(quick=False, smoke=False).idle_peers,
        "load_processes": loads,
        "open_files_limit": procs.raise_open_files(),
    }
    for kind in ("ours", "bare"):
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(procs.Server(kind, cpu=cpu_server))
            workers = [
                stack.enter_context(
                    procs.worker(
                        "relay_load",
                        "idle",
                        f"--kind={kind}",
                        f"--url={server.url}",
                        f"--warm={w}",
                        f"--peers={p}",
                        "--crowds=2",
                        f"--first={n * (warm + 2 * half)}",
                        cpu=cpu_load,
                    )
                )
                for n, (w, p) in enumerate(
                    zip(shares(warm, loads), shares(half, loads), strict=True)
                )
            ]
            readings = []
            for step in range(3):  # after the warm-up crowd, then after each half
                connected = sum(w.expect_json("ready", 300)["connections"] for w in workers)
                time.sleep(0.5)  # let the last connections' handshake tasks finish
                readings.append(procs.anon_rss_bytes(server.pid))
                for w in workers:
                    w.tell("go" if step < 2 else "stop")
            for w in workers:
                w.expect_json("result", 120)
        out[kind] = {
            "bytes_per_peer": (readings[2] - readings[0]) / (2 * half),
            "second_half_bytes_per_peer": (readings[2] - readings[1]) / half,
            "rss_anon": readings,
            "connections": connected,
        }
    return out


def establish(plan: Plan, reconnect: bool) -> dict[str, Any]:
    """Sessions/s through a relay: 50 listening peers, 50 initiators, CPU read around the run."""
    options = [f"--per-pair={plan.sessions_per_pair}"] + (["--reconnect"] if reconnect else [])
    with (
        procs.Server("ours") as server,
        procs.worker("handshakes", "responders", f"--url={server.url}", f"--pairs={PAIRS}") as resp,
        procs.worker("handshakes", "initiators", f"--url={server.url}", *options) as init,
    ):
        init.tell(resp.expect("ready ", 60))
        init.expect("ready", 120)  # warmed up
        resp.tell("count")
        before = resp.expect_json("count", 30)["established"]
        cpu = {"relay": procs.cpu_seconds(server.pid), "responders": procs.cpu_seconds(resp.pid)}
        init.tell("go")
        run = init.expect_json("result", 300)
        resp.tell("count")
        counted = resp.expect_json("count", 30)
        cpu = {
            k: procs.cpu_seconds(p) - cpu[k]
            for k, p in (("relay", server.pid), ("responders", resp.pid))
        }
        cpu["initiators"] = run["cpu_s"]
        resp.tell("stop")
    sessions = run["sessions"]
    seconds = max(run["end"], counted["last"]) - run["start"]
    per_session = {k: v / sessions * 1e6 for k, v in cpu.items()}
    return {
        "sessions": sessions,
        "responders_established": counted["established"] - before,
        "seconds": seconds,
        "sessions_per_s": sessions / seconds,
        "cpu_us_per_session": per_session,
        "cpu_us_per_session_total": sum(per_session.values()),
    }


def bench_handshakes(plan: Plan, cpu_load: int | None) -> dict[str, Any]:
    def ceiling() -> dict[str, Any]:
        seconds = f"--seconds={plan.ceiling_seconds / 2}"
        return procs.run_worker("handshakes", "ceiling", seconds, cpu=cpu_load)  # type: ignore[no-any-return]

    before = ceiling()
    floor = procs.run_worker(
        "handshakes", "connect_floor", f"--seconds={plan.ceiling_seconds}", cpu=cpu_load
    )
    fresh = establish(plan, reconnect=True)
    reused = establish(plan, reconnect=False)
    after = ceiling()
    per_s = (before["handshakes_per_s"] + after["handshakes_per_s"]) / 2
    ceiling_us = 1e6 / per_s
    for run in (fresh, reused):
        run["crypto_share_of_cpu"] = ceiling_us / run["cpu_us_per_session_total"]
    return {
        "pairs": PAIRS,
        "ceiling_per_s": per_s,
        "ceiling_us": ceiling_us,
        "ceiling_runs": [before["handshakes_per_s"], after["handshakes_per_s"]],
        "websocket_connect_us": floor["cpu_us_per_connection"],
        "connect_auth_handshake": fresh,
        "handshake_on_open_connection": reused,
    }


def bench_transfers(plan: Plan, root: Path, cpu: int | None) -> dict[str, Any]:
    from p2ptransfer.net.peer import DEFAULT_WINDOW
    from p2ptransfer.protocol.identity import Identity

    def reference(command: str) -> dict[str, Any]:
        seconds = f"--seconds={plan.ceiling_seconds / 2}"
        return procs.run_worker("transfers", command, f"--dir={root}", seconds, cpu=cpu)  # type: ignore[no-any-return]

    commits = [reference("sqlite")["commits_per_s"]]
    signing = [reference("signatures")["transfers_per_s_per_core"]]
    sender_seed, receiver_seed = os.urandom(32), os.urandom(32)
    sender, receiver = Identity(sender_seed).address, Identity(receiver_seed).address
    windows = sorted({*plan.windows, DEFAULT_WINDOW})
    out: dict[str, Any] = {"default_window": DEFAULT_WINDOW}
    with (
        procs.Server("ours") as server,
        procs.worker("transfers", "receiver", f"--dir={root}", f"--url={server.url}") as listening,
    ):
        listening.tell(json.dumps({"seed": receiver_seed.hex(), "contact": sender}))
        listening.expect("ready", 60)
        for window in windows:
            count = plan.transfers_window_1 if window == 1 else plan.transfers
            with procs.worker(
                "transfers",
                "sender",
                f"--dir={root}",
                f"--url={server.url}",
                f"--window={window}",
                f"--count={count}",
            ) as sending:
                sending.tell(json.dumps({"seed": sender_seed.hex(), "contact": receiver}))
                run = sending.expect_json("result", 300)
            out[f"window_{window}"] = {
                "transfers": count,
                "transfers_per_s": run["transfers_per_s"],
                "sender_cpu_us_per_transfer": run["cpu_s"] / run["transfers"] * 1e6,
            }
        listening.tell("stop")
        out["receiver"] = listening.expect_json("result", 60)
    commits.append(reference("sqlite")["commits_per_s"])
    signing.append(reference("signatures")["transfers_per_s_per_core"])
    out["sqlite_commits_runs"] = commits
    out["sqlite_commits_per_s"] = sum(commits) / 2
    out["signature_bound_per_s"] = sum(signing) / 2
    out["best_window"] = max(windows, key=lambda w: out[f"window_{w}"]["transfers_per_s"])
    return out


def bench_cli(plan: Plan) -> dict[str, Any]:
    """Wall time of a cold ``p2ptransfer --help`` against ``python -c 'import click'``."""
    script = Path(sys.executable).parent / "p2ptransfer"
    help_argv = [str(script)] if script.exists() else [sys.executable, "-m", "p2ptransfer"]
    commands = {"help": [*help_argv, "--help"], "click": [sys.executable, "-c", "import click"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(plan.cli_runs + 1):  # alternating; the first round warms the page cache
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=30)
            times[name].append(time.perf_counter() - start)
    return {f"{name}_ms": median(samples[1:]) * 1e3 for name, samples in times.items()}


def bench_cluster(plan: Plan, cpu_server: int | None, cpu_load: int | None) -> dict[str, Any]:
    """Peers on two nodes of a cluster against peers on one: half the relay figure's frames."""
    return cluster.bench_cluster(
        blocks=plan.blocks,
        pairs=PAIRS,
        size=SIZE,
        frames=max(50, plan.frames_per_sender // 2),
        rounds=max(50, plan.rtt_rounds // 3),
        cpu_server=cpu_server,
        cpu_load=cpu_load,
    )


def bench_core(quick: bool, cpu_load: int | None) -> dict[str, Any]:
    args = ("--quick",) if quick else ()
    result: dict[str, Any] = procs.run_worker("core", *args, cpu=cpu_load, timeout=180)
    return result


# --- summary ----------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, float]]:
    """The goal ratios (None: skipped), and the absolute figures printed beside them."""
    relay, idle, hs, tr, cli = (
        results[k] for k in ("relay", "idle", "handshakes", "transfers", "cli")
    )
    fresh, reused = hs["connect_auth_handshake"], hs["handshake_on_open_connection"]
    default = tr[f"window_{tr['default_window']}"]["transfers_per_s"]
    ratios: dict[str, float | None] = {
        "relay_vs_bare": median(relay["throughput_ratios"]),
        "relay_rtt_p50_vs_bare": median(relay["rtt_ratios"]),
        "idle_bytes_per_peer": idle["ours"]["bytes_per_peer"],
        "handshakes_on_open_connection_vs_ceiling": reused["sessions_per_s"] / hs["ceiling_per_s"],
        "transfers_vs_signature_bound": default / tr["signature_bound_per_s"],
        "cli_help_vs_import_click": cli["help_ms"] / cli["click_ms"],
    }
    figures = {
        "relay_frames_per_s": relay["ours"]["frames_per_s"],
        "bare_frames_per_s": relay["bare"]["frames_per_s"],
        "relay_cpu_us_per_frame": relay["ours"]["cpu_us_per_frame"],
        "bare_cpu_us_per_frame": relay["bare"]["cpu_us_per_frame"],
        "relay_mb_per_s_16k": relay["ours"]["mb_per_s_16k"],
        "bare_mb_per_s_16k": relay["bare"]["mb_per_s_16k"],
        "relay_rtt_p50_ms": relay["ours"]["rtt_p50_ms"],
        "bare_rtt_p50_ms": relay["bare"]["rtt_p50_ms"],
        "idle_bytes_per_peer_bare": idle["bare"]["bytes_per_peer"],
        "sessions_per_s": fresh["sessions_per_s"],
        "sessions_per_s_open_connection": reused["sessions_per_s"],
        "crypto_ceiling_handshakes_per_s": hs["ceiling_per_s"],
        "transfers_per_s": default,
        "transfers_per_s_best_window": tr[f"window_{tr['best_window']}"]["transfers_per_s"],
        "sqlite_commits_per_s": tr["sqlite_commits_per_s"],
        "transfers_vs_sqlite_commit": default / tr["sqlite_commits_per_s"],
        # Reported, no longer a goal: a fresh connection per session is websockets' cost.
        "handshakes_vs_crypto_ceiling": fresh["sessions_per_s"] / hs["ceiling_per_s"],
        "signature_bound_transfers_per_s": tr["signature_bound_per_s"],
        "cli_help_ms": cli["help_ms"],
        "import_click_ms": cli["click_ms"],
    }
    ratios[cluster.GOAL], cluster_figures = cluster.summarize(results["cluster"])
    figures.update(cluster_figures)
    cold_ratios, cold_figures = cold_pair.summarize(results["cold"])
    ratios.update(cold_ratios)
    figures.update(cold_figures)
    return ratios, figures


def table(ratios: dict[str, float | None], f: dict[str, float], results: dict[str, Any]) -> str:
    relay, hs, tr = results["relay"], results["handshakes"], results["transfers"]
    beside = {
        "relay_vs_bare": f"{f['relay_frames_per_s']:,.0f} vs {f['bare_frames_per_s']:,.0f} frames/s"
        f" (16 KiB: {f['relay_mb_per_s_16k']:.0f} vs {f['bare_mb_per_s_16k']:.0f} MB/s)",
        "relay_rtt_p50_vs_bare": f"{f['relay_rtt_p50_ms']:.3f} vs {f['bare_rtt_p50_ms']:.3f} ms",
        "idle_bytes_per_peer": f"{ratios['idle_bytes_per_peer']:,.0f} B/peer"
        f" (bare forwarder {f['idle_bytes_per_peer_bare']:,.0f})",
        "handshakes_on_open_connection_vs_ceiling": f"{f['sessions_per_s_open_connection']:,.0f}"
        f" vs {f['crypto_ceiling_handshakes_per_s']:,.0f} sessions/s (with connect + auth:"
        f" {f['handshakes_vs_crypto_ceiling']:.2f}, {f['sessions_per_s']:,.0f}/s)",
        "transfers_vs_signature_bound": f"{f['transfers_per_s']:,.0f} vs"
        f" {f['signature_bound_transfers_per_s']:,.0f} transfers/s (vs SQLite commits:"
        f" {f['transfers_vs_sqlite_commit']:.2f} of {f['sqlite_commits_per_s']:,.0f}/s)",
        "cli_help_vs_import_click": f"{f['cli_help_ms']:.0f} vs {f['import_click_ms']:.0f} ms",
        cluster.GOAL: cluster.beside(results["cluster"]),
        cold_pair.GOAL: cold_pair.beside(results["cold"], light=False),
        cold_pair.GOAL_LIGHT: cold_pair.beside(results["cold"], light=True),
    }
    lines = ["", f"{'goal':<42}{'value':>10}{'target':>10}  {'':<5} absolute figures"]
    for goal in GOALS:
        value = ratios[goal.key]
        shown = "-" if value is None else f"{value:,.0f}" if value > 100 else f"{value:.3f}"
        target = f"{'>=' if goal.higher_is_better else '<='}{goal.target:g}"
        mark = {True: "ok", False: "MISS", None: "skip"}[goal.met(value)]
        lines.append(f"{goal.key:<42}{shown:>10}{target:>10}  {mark:<5} {beside[goal.key]}")
    ours, bare = relay["ours"], relay["bare"]
    fresh, reused = hs["connect_auth_handshake"], hs["handshake_on_open_connection"]
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in fresh["cpu_us_per_session"].items())
    by_window = ", ".join(
        f"{k.removeprefix('window_')}: {v['transfers_per_s']:,.0f}/s"
        f" ({v['sender_cpu_us_per_transfer']:.0f} us sender CPU each)"
        for k, v in tr.items()
        if k.startswith("window_")
    )
    lines += [
        "",
        f"relay: CPU per forwarded 256 B frame ours {ours['cpu_us_per_frame']:.1f} us, bare"
        f" {bare['cpu_us_per_frame']:.1f} us; relay core busy {ours['relay_cpu_share']:.0%} /"
        f" {bare['relay_cpu_share']:.0%}, load core {ours['load_cpu_share']:.0%} /"
        f" {bare['load_cpu_share']:.0%} (ours / bare); pinned: {relay['pinned']}",
        f"handshakes: connect + authenticate + handshake {fresh['sessions_per_s']:,.0f}/s, CPU per"
        f" session (us) {cpu}; on open connections {reused['sessions_per_s']:,.0f}/s"
        f" ({ratios['handshakes_on_open_connection_vs_ceiling']:.2f} of the ceiling);"
        f" ceiling {hs['ceiling_us']:.0f} us on one core = {fresh['crypto_share_of_cpu']:.0%} /"
        f" {reused['crypto_share_of_cpu']:.0%} of the CPU a session takes; a bare websockets"
        f" connect + exchange + close costs {hs['websocket_connect_us']:.0f} us of CPU",
        f"transfers by window: {by_window}; receiver {tr['receiver']['commits']} commits,"
        f" largest batch {tr['receiver']['largest_batch']}",
        f"signature bound: {f['signature_bound_transfers_per_s']:,.0f} transfers/s per core"
        " (one Ed25519 sign + verify per side, straight on pyca); the default window reaches"
        f" {f['transfers_per_s'] / f['signature_bound_transfers_per_s']:.2f} of it",
    ]
    for line in (cluster.details(results["cluster"]), cold_pair.details(results["cold"])):
        if line:
            lines.append(line)
    core = results.get("core")
    if core:
        c, lg = core["crypto"], core["ledger"]
        grouped = lg["batch_64"]["entries_per_s"] / lg["batch_1"]["entries_per_s"]
        lines.append(
            f"core, in memory: {c['handshakes_per_s']:,.0f} handshakes/s; record seal+open"
            f" {c['channel_256']['records_per_s']:,.0f}/s at 256 B"
            f" (AES-GCM floor {c['aesgcm_floor_256']['records_per_s']:,.0f}/s);"
            f" ledger batch 64 vs 1: {grouped:.1f}x;"
            f" verify {lg['verify_s_per_1000']:.2f} s/1000 entries"
        )
    return "\n".join(lines) + "\n"


def print_profiles(directory: Path) -> None:
    for path in sorted(directory.glob("*.prof")):
        print(f"\n===== profile: {path.stem} (top functions by own time) =====")
        pstats.Stats(str(path), stream=sys.stdout).sort_stats("tottime").print_stats(15)


class Overtime(Exception):
    pass


def _overtime(signum: int, frame: FrameType | None) -> None:
    raise Overtime("the run exceeded its deadline")


def run_sections(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    cores = procs.cpus()
    cpu_server, cpu_load = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if args.profile:
            profile_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            os.environ["P2PT_BENCH_PROFILE"] = str(profile_dir)
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="p2pt-bench-")))
        sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("cli", lambda: bench_cli(plan)),
            ("relay", lambda: bench_relay(plan, cpu_server, cpu_load)),
            ("idle", lambda: bench_idle(plan, cpu_server, cpu_load)),
            ("handshakes", lambda: bench_handshakes(plan, cpu_load)),
            ("transfers", lambda: bench_transfers(plan, root, cpu_load)),
        ]
        sections.append(("cluster", lambda: bench_cluster(plan, cpu_server, cpu_load)))
        sections.append(("cold", lambda: cold_pair.measure(plan.cold_pairs)))
        if not args.skip_core:
            quick = args.quick or args.smoke
            sections.append(("core", lambda: bench_core(quick, cpu_load)))
        for name, run in sections:
            say(f"{name} ...")
            os.environ["P2PT_BENCH_SECTION"] = name
            started = time.perf_counter()
            results[name] = run()
            say(f"{name}: {time.perf_counter() - started:.1f} s")
        if args.profile:
            print_profiles(profile_dir)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (under 2 minutes)")
    parser.add_argument("--smoke", action="store_true", help="tiny counts: figures mean nothing")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON line")
    parser.add_argument("--json-out", type=Path, help="also write the JSON summary here")
    parser.add_argument("--profile", action="store_true", help="cProfile workers and relays")
    parser.add_argument("--skip-core", action="store_true", help="leave out the core figures")
    args = parser.parse_args()
    plan = Plan.for_run(args.quick, args.smoke)
    started = time.perf_counter()
    summary: dict[str, Any] = {
        "version": 4,
        "quick": args.quick,
        "smoke": args.smoke,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(procs.cpus()),
        "event_loop": procs.event_loop(),
    }
    status = 0
    signal.signal(signal.SIGALRM, _overtime)
    signal.alarm(int(plan.deadline))
    try:
        results = run_sections(args, plan)
        ratios, figures = summarize(results)
        summary.update({k: None if v is None else round(v, 4) for k, v in ratios.items()})
        summary["goals"] = {g.key: {"target": g.target, "met": g.met(ratios[g.key])} for g in GOALS}
        skippable = {cluster.GOAL: "cluster", cold_pair.GOAL: "cold", cold_pair.GOAL_LIGHT: "cold"}
        for key, section in skippable.items():
            for why in ("skipped", "failed"):  # the goal's key stays, null, with the reason
                if why in results[section]:
                    summary["goals"][key][why] = results[section][why]
        summary["absolute"] = {key: round(value, 3) for key, value in figures.items()}
        summary["results"] = results
        print(table(ratios, figures, results))
    except (Exception, Overtime) as exc:  # the run's boundary: say what failed, in the JSON too
        summary["error"] = f"{type(exc).__name__}: {exc}"
        say(f"bench failed: {summary['error']}")
        status = 1
    finally:
        signal.alarm(0)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    line = json.dumps(summary, sort_keys=True, separators=(",", ":"), allow_nan=False)
    if args.json_out is not None:
        args.json_out.write_text(line + "\n", encoding="utf-8")
    if args.json:
        print(line, flush=True)
    return status


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
