"""How close p2ptransfer comes to what this stack can physically do.

Run:  .venv/bin/python scripts/bench.py [--quick] [--json] [--json-out FILE] [--profile]

Every goal is a ratio between our figure and a ceiling measured by this same
run on this same machine: a noisy machine moves both ends of a ratio
together, so it can neither fake a result nor hide one. Everything listens on
127.0.0.1 with an OS-chosen port, every loop is bounded in count and in time,
and the thing measured runs in its own process: the relays on one core, the
load on the other (see ``benchlib/procs.py``).

Output: a human table on stdout; with ``--json`` the last line of stdout is
one JSON object on a single line (also written to ``--json-out``).
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import procs


@dataclass(frozen=True)
class Goal:
    key: str
    what: str
    target: float
    higher_is_better: bool

    def met(self, value: float) -> bool:
        return value >= self.target if self.higher_is_better else value <= self.target


GOALS = (
    Goal("relay_vs_bare", "frames/s through our relay / bare forwarder, 50 pairs", 0.85, True),
    Goal("relay_rtt_p50_vs_bare", "round trip p50, ours / bare", 1.25, False),
    Goal("idle_bytes_per_peer", "relay RSS per authenticated idle peer, bytes", 20_480, False),
    Goal("handshakes_vs_crypto_ceiling", "sessions/s via relay / primitives on 1 core", 0.5, True),
    Goal("transfers_vs_sqlite_commit", "durable transfers/s / single-row commits/s", 1.0, True),
    Goal("cli_help_vs_import_click", "`p2ptransfer --help` / `import click`, wall", 1.5, False),
)


@dataclass(frozen=True)
class Plan:
    """Counts for one run: ``--quick`` keeps every figure but measures for less long."""

    repeats: int
    frames_per_sender: int
    rtt_rounds: int
    idle_peers: int
    ceiling_seconds: float
    sessions_per_pair: int
    transfers: int
    windows: tuple[int, ...]
    cli_runs: int

    @classmethod
    def for_run(cls, quick: bool, smoke: bool = False) -> Plan:
        if smoke:  # every code path once, figures meaningless: for tests/test_bench.py
            return cls(1, 50, 50, 100, 0.2, 2, 40, (1, 32), 1)
        if quick:
            return cls(2, 1500, 1000, 2000, 1.0, 30, 2000, (1, 32, 128), 10)
        return cls(3, 4000, 3000, 2000, 2.0, 100, 5000, (1, 32, 128), 10)


PAIRS = 50
SIZE = 256
LARGE = 16 * 1024


def median(values: list[float]) -> float:
    return statistics.median(values)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the sections ----------------------------------------------------------------


def push_through(server: procs.Server, cpu: int | None, *args: str) -> dict[str, Any]:
    """One throughput run of ``benchlib.relay_load``, with the relay's CPU time for the push."""
    with procs.worker(
        "relay_load", "throughput", f"--kind={server.kind}", f"--url={server.url}", *args, cpu=cpu
    ) as load:
        load.expect("ready", 60)
        before = procs.cpu_seconds(server.pid)
        load.tell("go")
        load.expect("pushed", 120)
        used = procs.cpu_seconds(server.pid) - before
        result: dict[str, Any] = load.expect_json("result", 120)
    result["relay_cpu_us_per_frame"] = used / result["frames"] * 1e6
    return result


def bench_relay(plan: Plan, cpu_server: int | None, cpu_load: int | None) -> dict[str, Any]:
    """Both relays up at once on one core; the load alternates between them, repeated."""
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
    large: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
    with procs.Server("ours", cpu=cpu_server) as ours, procs.Server("bare", cpu=cpu_server) as bare:
        for _ in range(plan.repeats):
            for server in (bare, ours):
                pairs = f"--pairs={PAIRS}"
                runs[server.kind].append(
                    push_through(
                        server,
                        cpu_load,
                        pairs,
                        f"--size={SIZE}",
                        f"--count={plan.frames_per_sender}",
                        f"--rounds={plan.rtt_rounds}",
                    )
                )
                large[server.kind].append(
                    push_through(
                        server,
                        cpu_load,
                        pairs,
                        f"--size={LARGE}",
                        f"--count={max(20, plan.frames_per_sender // 10)}",
                        "--rounds=50",
                    )
                )
    out: dict[str, Any] = {"pairs": PAIRS, "size": SIZE, "repeats": plan.repeats}
    for kind in ("ours", "bare"):
        out[kind] = {
            "frames_per_s": median([r["frames_per_s"] for r in runs[kind]]),
            "rtt_p50_ms": median([r["rtt_p50_ms"] for r in runs[kind]]),
            "rtt_p99_ms": median([r["rtt_p99_ms"] for r in runs[kind]]),
            "cpu_us_per_frame": median([r["relay_cpu_us_per_frame"] for r in runs[kind]]),
            "mb_per_s_16k": median([r["mb_per_s"] for r in large[kind]]),
            "all_frames_per_s": [round(r["frames_per_s"]) for r in runs[kind]],
        }
    return out


def bench_idle(plan: Plan, cpu_server: int | None, cpu_load: int | None) -> dict[str, Any]:
    """RSS growth of each relay from ``idle_peers`` silent connections, after a warm-up crowd."""
    out: dict[str, Any] = {"peers": plan.idle_peers}
    for kind in ("ours", "bare"):
        with (
            procs.Server(kind, cpu=cpu_server) as server,
            procs.worker(
                "relay_load",
                "idle",
                f"--kind={kind}",
                f"--url={server.url}",
                "--warm=100",
                f"--peers={plan.idle_peers}",
                cpu=cpu_load,
            ) as load,
        ):
            load.expect_json("ready", 60)
            time.sleep(0.5)
            before = procs.rss_bytes(server.pid)
            load.tell("go")
            connected = load.expect_json("ready", 120)["connections"]
            time.sleep(1.0)  # let handshakes' garbage be collected and keepalives settle
            after = procs.rss_bytes(server.pid)
            load.tell("stop")
            load.expect_json("result", 60)
        out[kind] = {
            "bytes_per_peer": (after - before) / plan.idle_peers,
            "rss_before": before,
            "rss_after": after,
            "connections": connected,
        }
    return out


def bench_handshakes(plan: Plan, cpu_load: int | None) -> dict[str, Any]:
    ceiling = procs.run_worker(
        "handshakes", "ceiling", f"--seconds={plan.ceiling_seconds}", cpu=cpu_load
    )
    with (
        procs.Server("ours") as server,
        procs.worker(
            "handshakes", "responders", f"--url={server.url}", f"--pairs={PAIRS}"
        ) as responders,
    ):
        ready = responders.expect("ready ", 60)
        cpu_before = {"relay": procs.cpu_seconds(server.pid)}
        cpu_before["responders"] = procs.cpu_seconds(responders.pid)
        with procs.worker(
            "handshakes",
            "initiators",
            f"--url={server.url}",
            f"--per-pair={plan.sessions_per_pair}",
        ) as initiators:
            initiators.tell(ready)
            run = initiators.expect_json("result", 180)
        time.sleep(0.2)
        cpu = {
            "relay": procs.cpu_seconds(server.pid) - cpu_before["relay"],
            "responders": procs.cpu_seconds(responders.pid) - cpu_before["responders"],
            "initiators": run["cpu_s"],
        }
        responders.tell("stop")
        counted = responders.expect_json("result", 60)
    seconds = max(run["end"], counted["last"]) - run["start"]
    sessions = run["sessions"]
    return {
        "pairs": PAIRS,
        "sessions": sessions,
        "seconds": seconds,
        "sessions_per_s": sessions / seconds,
        "responder_established": counted["established"],
        "ceiling_per_s": ceiling["handshakes_per_s"],
        "ceiling_us": ceiling["us_per_handshake"],
        "cpu_us_per_session": {k: v / sessions * 1e6 for k, v in cpu.items()},
    }


def bench_transfers(plan: Plan, root: Path, cpu: int | None) -> dict[str, Any]:
    from p2ptransfer.net.peer import DEFAULT_WINDOW
    from p2ptransfer.protocol.identity import Identity

    commits = procs.run_worker(
        "transfers", "sqlite", f"--dir={root}", f"--seconds={plan.ceiling_seconds}", cpu=cpu
    )
    signing = procs.run_worker(
        "transfers", "signatures", f"--dir={root}", f"--seconds={plan.ceiling_seconds}", cpu=cpu
    )
    sender_seed, receiver_seed = os.urandom(32), os.urandom(32)
    sender, receiver = Identity(sender_seed).address, Identity(receiver_seed).address
    out: dict[str, Any] = {
        "transfers": plan.transfers,
        "default_window": DEFAULT_WINDOW,
        "sqlite_commits_per_s": commits["commits_per_s"],
        "signature_bound_per_s": signing["transfers_per_s_per_core"],
    }
    with (
        procs.Server("ours") as server,
        procs.worker("transfers", "receiver", f"--dir={root}", f"--url={server.url}") as listening,
    ):
        listening.tell(json.dumps({"seed": receiver_seed.hex(), "contact": sender}))
        listening.expect("ready", 60)
        for window in sorted({*plan.windows, DEFAULT_WINDOW}):
            with procs.worker(
                "transfers",
                "sender",
                f"--dir={root}",
                f"--url={server.url}",
                f"--window={window}",
                f"--count={plan.transfers if window > 1 else plan.transfers // 5}",
            ) as sending:
                sending.tell(json.dumps({"seed": sender_seed.hex(), "contact": receiver}))
                run = sending.expect_json("result", 300)
            out[f"window_{window}"] = {
                "transfers_per_s": run["transfers_per_s"],
                "sender_cpu_us_per_transfer": run["cpu_s"] / run["transfers"] * 1e6,
            }
        listening.tell("stop")
        out["receiver"] = listening.expect_json("result", 60)
    best = max(plan.windows, key=lambda w: out[f"window_{w}"]["transfers_per_s"])
    out["best_window"] = best
    return out


def bench_cli(plan: Plan) -> dict[str, Any]:
    """Wall time of a cold ``p2ptransfer --help`` against ``python -c 'import click'``."""
    script = Path(sys.executable).parent / "p2ptransfer"
    commands = {
        "help": [str(script), "--help"]
        if script.exists()
        else [sys.executable, "-m", "p2ptransfer", "--help"],
        "click": [sys.executable, "-c", "import click"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(plan.cli_runs + 1):  # the first round warms the page cache and is dropped
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=30)
            times[name].append(time.perf_counter() - start)
    return {f"{name}_ms": median(samples[1:]) * 1e3 for name, samples in times.items()}


def bench_core(quick: bool, cpu_load: int | None) -> dict[str, Any]:
    args = ("--quick",) if quick else ()
    result: dict[str, Any] = procs.run_worker("core", *args, cpu=cpu_load, timeout=180)
    return result


# --- summary ----------------------------------------------------------------------


def headline(results: dict[str, Any]) -> dict[str, float]:
    relay, idle, hs, tr, cli = (
        results[k] for k in ("relay", "idle", "handshakes", "transfers", "cli")
    )
    default = tr[f"window_{tr['default_window']}"]["transfers_per_s"]
    return {
        "relay_vs_bare": relay["ours"]["frames_per_s"] / relay["bare"]["frames_per_s"],
        "relay_rtt_p50_vs_bare": relay["ours"]["rtt_p50_ms"] / relay["bare"]["rtt_p50_ms"],
        "idle_bytes_per_peer": idle["ours"]["bytes_per_peer"],
        "handshakes_vs_crypto_ceiling": hs["sessions_per_s"] / hs["ceiling_per_s"],
        "transfers_vs_sqlite_commit": default / tr["sqlite_commits_per_s"],
        "cli_help_vs_import_click": cli["help_ms"] / cli["click_ms"],
    }


def absolutes(results: dict[str, Any]) -> dict[str, float]:
    relay, idle, hs, tr, cli = (
        results[k] for k in ("relay", "idle", "handshakes", "transfers", "cli")
    )
    default = tr[f"window_{tr['default_window']}"]["transfers_per_s"]
    best = tr[f"window_{tr['best_window']}"]["transfers_per_s"]
    return {
        "relay_frames_per_s": relay["ours"]["frames_per_s"],
        "bare_frames_per_s": relay["bare"]["frames_per_s"],
        "relay_mb_per_s_16k": relay["ours"]["mb_per_s_16k"],
        "bare_mb_per_s_16k": relay["bare"]["mb_per_s_16k"],
        "relay_rtt_p50_ms": relay["ours"]["rtt_p50_ms"],
        "relay_cpu_us_per_frame": relay["ours"]["cpu_us_per_frame"],
        "bare_cpu_us_per_frame": relay["bare"]["cpu_us_per_frame"],
        "bare_rtt_p50_ms": relay["bare"]["rtt_p50_ms"],
        "idle_bytes_per_peer_bare": idle["bare"]["bytes_per_peer"],
        "sessions_per_s": hs["sessions_per_s"],
        "crypto_ceiling_handshakes_per_s": hs["ceiling_per_s"],
        "transfers_per_s": default,
        "transfers_per_s_best_window": best,
        "sqlite_commits_per_s": tr["sqlite_commits_per_s"],
        "signature_bound_transfers_per_s": tr["signature_bound_per_s"],
        "cli_help_ms": cli["help_ms"],
        "import_click_ms": cli["click_ms"],
    }


def table(ratios: dict[str, float], figures: dict[str, float], results: dict[str, Any]) -> str:
    f = figures
    beside = {
        "relay_vs_bare": f"{f['relay_frames_per_s']:,.0f} vs {f['bare_frames_per_s']:,.0f} frames/s"
        f" (16 KiB: {f['relay_mb_per_s_16k']:.0f} vs {f['bare_mb_per_s_16k']:.0f} MB/s)",
        "relay_rtt_p50_vs_bare": f"{f['relay_rtt_p50_ms']:.3f} vs {f['bare_rtt_p50_ms']:.3f} ms",
        "idle_bytes_per_peer": f"{ratios['idle_bytes_per_peer']:,.0f} B/peer"
        f" (bare forwarder {f['idle_bytes_per_peer_bare']:,.0f})",
        "handshakes_vs_crypto_ceiling": f"{f['sessions_per_s']:,.0f} vs "
        f"{f['crypto_ceiling_handshakes_per_s']:,.0f} sessions/s",
        "transfers_vs_sqlite_commit": f"{f['transfers_per_s']:,.0f} vs "
        f"{f['sqlite_commits_per_s']:,.0f} commits/s"
        f" (best window: {f['transfers_per_s_best_window']:,.0f}/s)",
        "cli_help_vs_import_click": f"{f['cli_help_ms']:.0f} vs {f['import_click_ms']:.0f} ms",
    }
    lines = ["", f"{'goal':<30}{'value':>10}{'target':>10}  {'':<5} absolute figures"]
    for goal in GOALS:
        value = ratios[goal.key]
        shown = f"{value:,.0f}" if value > 100 else f"{value:.3f}"
        sign = ">=" if goal.higher_is_better else "<="
        target = f"{sign}{goal.target:g}"
        lines.append(
            f"{goal.key:<30}{shown:>10}{target:>10}  {'ok' if goal.met(value) else 'MISS':<5}"
            f" {beside[goal.key]}"
        )
    hs, tr = results["handshakes"], results["transfers"]
    share_of_bound = f["transfers_per_s"] / tr["signature_bound_per_s"]
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in hs["cpu_us_per_session"].items())
    lines += [
        "",
        f"relay CPU per forwarded 256 B frame: ours {f['relay_cpu_us_per_frame']:.1f} us,"
        f" bare {f['bare_cpu_us_per_frame']:.1f} us",
        f"handshakes: CPU per session (us): {cpu}; ceiling {hs['ceiling_us']:.0f} us on one core",
        "transfers/s by window: "
        + ", ".join(
            f"{k.removeprefix('window_')}: {v['transfers_per_s']:,.0f}"
            f" ({v['sender_cpu_us_per_transfer']:.0f} us sender CPU each)"
            for k, v in tr.items()
            if k.startswith("window_")
        ),
        f"signature bound: {tr['signature_bound_per_s']:,.0f} transfers/s per core (one"
        " Ed25519 sign + verify each side); transfers at the default window are"
        f" {share_of_bound:.2f} of it",
        f"receiver group commit: {tr['receiver']['commits']} commits,"
        f" largest batch {tr['receiver']['largest_batch']}",
    ]
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
        stats = pstats.Stats(str(path), stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(15)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (under 2 minutes)")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON line")
    parser.add_argument("--json-out", type=Path, help="also write the JSON summary here")
    parser.add_argument("--profile", action="store_true", help="cProfile workers and relays")
    parser.add_argument("--skip-core", action="store_true", help="leave out the core figures")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny counts: checks the bench runs, figures mean nothing",
    )
    args = parser.parse_args()
    plan = Plan.for_run(args.quick, args.smoke)
    cores = procs.cpus()
    cpu_server, cpu_load = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    started = time.perf_counter()
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
        if not args.skip_core:
            quick = args.quick or args.smoke
            sections.append(("core", lambda: bench_core(quick, cpu_load)))
        for name, run in sections:
            say(f"{name} ...")
            os.environ["P2PT_BENCH_SECTION"] = name
            section_started = time.perf_counter()
            results[name] = run()
            say(f"{name}: {time.perf_counter() - section_started:.1f} s")
        if args.profile:
            print_profiles(profile_dir)
    ratios = headline(results)
    figures = absolutes(results)
    summary: dict[str, Any] = {
        **{key: round(value, 4) for key, value in ratios.items()},
        "goals": {g.key: {"target": g.target, "met": g.met(ratios[g.key])} for g in GOALS},
        "absolute": {key: round(value, 3) for key, value in figures.items()},
        "results": results,
        "version": 2,
        "quick": args.quick,
        "smoke": args.smoke,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(cores),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(table(ratios, figures, results))
    line = json.dumps(summary, sort_keys=True, separators=(",", ":"))
    if args.json_out is not None:
        args.json_out.write_text(line + "\n", encoding="utf-8")
    if args.json:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
