"""Optional cProfile of a worker: set ``P2PT_BENCH_PROFILE`` to a directory.

The bench's ``--profile`` sets it; each worker then writes
``<dir>/<section>-<worker>-<command>.prof`` and the driver prints the top functions
by own time, so every figure comes with the profile that explains it. A worker that
runs several times in a section keeps the profile of its last run.
"""

from __future__ import annotations

import cProfile
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def run(name: str, work: Callable[[], T]) -> T:
    directory = os.environ.get("P2PT_BENCH_PROFILE")
    if not directory:
        return work()
    profile = cProfile.Profile()
    try:
        return profile.runcall(work)
    finally:
        section = os.environ.get("P2PT_BENCH_SECTION", "")
        profile.dump_stats(Path(directory) / f"{section}-{name}.prof")
