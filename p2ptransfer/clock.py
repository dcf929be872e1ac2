"""The one wall clock every timestamp we sign or store is read from.

The protocol core reads no clock (its callers pass time in, so tests pin
it); storage, the peer runtime and the CLI read it here.
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds: the unit of every timestamp we sign or store."""
    return time.time_ns() // 1_000_000
