"""One timed loop for every in-process figure: operations per second of a step."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_second(step: Callable[[], object], seconds: float, max_count: int = 10_000_000) -> float:
    """Run ``step`` for about ``seconds`` (at most ``max_count`` times); calls per second.

    The clock is read every 16 calls, so a step of a microsecond is not
    dominated by reading it.
    """
    done = 0
    start = time.perf_counter()
    while done < max_count:
        step()
        done += 1
        if done % 16 == 0 and time.perf_counter() - start > seconds:
            break
    return done / (time.perf_counter() - start)
