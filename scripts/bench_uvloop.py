"""uvloop against asyncio's own loop: the relay, handshake and transfer figures of bench.py, A/B.

Run:  .venv/bin/python scripts/bench_uvloop.py [--rounds 2] [--json-out FILE]

Needs uvloop installed (the ``speed`` extra). Each round runs the three
sections of ``bench.py --quick`` once with ``P2PTRANSFER_UVLOOP=0`` and once
with uvloop, in ABBA order over the rounds (asyncio, uvloop, uvloop, asyncio,
...), so a drift of the shared machine weighs on both. Every process of a
section (our relay, the bare forwarder, the peers) runs on the chosen loop;
the load generator of the relay figures stays on asyncio's, so only the
measured side changes. The last line of stdout is one JSON object: per loop,
each figure's runs, and the min/median of the uvloop / asyncio ratios of
neighbouring runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench
from benchlib import procs

FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "relay_frames_per_s": lambda r: r["relay"]["ours"]["frames_per_s"],
    "bare_frames_per_s": lambda r: r["relay"]["bare"]["frames_per_s"],
    "relay_vs_bare": lambda r: bench.median(r["relay"]["throughput_ratios"]),
    "relay_cpu_us_per_frame": lambda r: r["relay"]["ours"]["cpu_us_per_frame"],
    "bare_cpu_us_per_frame": lambda r: r["relay"]["bare"]["cpu_us_per_frame"],
    "relay_rtt_p50_ms": lambda r: r["relay"]["ours"]["rtt_p50_ms"],
    "sessions_per_s": lambda r: r["handshakes"]["connect_auth_handshake"]["sessions_per_s"],
    "sessions_per_s_open_connection": lambda r: r["handshakes"]["handshake_on_open_connection"][
        "sessions_per_s"
    ],
    "handshakes_on_open_connection_vs_ceiling": lambda r: (
        r["handshakes"]["handshake_on_open_connection"]["sessions_per_s"]
        / r["handshakes"]["ceiling_per_s"]
    ),
    "transfers_per_s": lambda r: r["transfers"][f"window_{r['transfers']['default_window']}"][
        "transfers_per_s"
    ],
}


def one_run(loop: str, plan: bench.Plan, root: Path) -> dict[str, Any]:
    os.environ["P2PTRANSFER_UVLOOP"] = "1" if loop == "uvloop" else "0"
    assert procs.event_loop() == loop, f"{loop} asked for, {procs.event_loop()} in use"
    cores = procs.cpus()
    cpu_server, cpu_load = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    results = {
        "relay": bench.bench_relay(plan, cpu_server, cpu_load),
        "handshakes": bench.bench_handshakes(plan, cpu_load),
        "transfers": bench.bench_transfers(plan, root, cpu_load),
    }
    return {name: figure(results) for name, figure in FIGURES.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="ABBA halves: 2 = 4 runs")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    plan = bench.Plan.for_run(quick=True, smoke=False)
    runs: dict[str, list[dict[str, float]]] = {"asyncio": [], "uvloop": []}
    order = [
        ("asyncio", "uvloop") if i % 2 == 0 else ("uvloop", "asyncio") for i in range(args.rounds)
    ]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="p2pt-bench-") as tmp:
        for n, pair in enumerate(order):
            for loop in pair:
                bench.say(f"{loop} ...")
                root = Path(tmp) / f"{n}-{loop}"  # fresh ledgers for every run
                root.mkdir()
                runs[loop].append(one_run(loop, plan, root))
    out: dict[str, Any] = {"runs": runs, "ratios_uvloop_vs_asyncio": {}}
    for name in FIGURES:
        ratios = [u[name] / a[name] for u, a in zip(runs["uvloop"], runs["asyncio"], strict=True)]
        out["ratios_uvloop_vs_asyncio"][name] = {
            "min": min(ratios),
            "median": statistics.median(ratios),
            "max": max(ratios),
        }
    out["seconds"] = round(time.perf_counter() - started, 1)
    line = json.dumps(out, sort_keys=True, separators=(",", ":"))
    for name, r in out["ratios_uvloop_vs_asyncio"].items():
        a = statistics.median([x[name] for x in runs["asyncio"]])
        u = statistics.median([x[name] for x in runs["uvloop"]])
        print(
            f"{name:<42} asyncio {a:>12,.3f}  uvloop {u:>12,.3f}  ratio median {r['median']:.2f}"
            f" (min {r['min']:.2f}, max {r['max']:.2f})"
        )
    if args.json_out is not None:
        args.json_out.write_text(line + "\n", encoding="utf-8")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
