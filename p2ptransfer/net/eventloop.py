"""The event loop commands and the relay run on: uvloop where it is installed, else asyncio's.

uvloop (the ``speed`` extra: ``pip install 'p2ptransfer[speed]'``) runs the
same code with less CPU per socket read, write and callback, which is most of
what a relay does. It is optional: without it, or with ``P2PTRANSFER_UVLOOP=0``
(to compare the two, or to rule it out when looking for a fault), the
standard library's loop runs everything unchanged.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import InputError

__all__ = ["UVLOOP_ENV", "loop_factory", "run", "uvloop_wanted"]

UVLOOP_ENV = "P2PTRANSFER_UVLOOP"
_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"", "1", "true", "yes", "on"})

T = TypeVar("T")


def uvloop_wanted() -> bool:
    """False when ``P2PTRANSFER_UVLOOP`` turns uvloop off; an unknown value is an error."""
    raw = os.environ.get(UVLOOP_ENV, "")
    value = raw.strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise InputError(
        f"{UVLOOP_ENV}={raw!r}: use 0 (standard asyncio loop) or 1 (uvloop if installed)"
    )


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor when it is wanted and installed; None means asyncio's default."""
    if not uvloop_wanted():
        return None
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:  # the speed extra is not installed: the standard loop does the same job
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on the loop :func:`loop_factory` picks."""
    try:
        factory = loop_factory()
    except InputError:
        coro.close()  # never started: no "was never awaited" warning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
