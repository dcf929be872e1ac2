"""Options several commands share, declared once so they mean the same everywhere.

Kept apart from :mod:`.render` (rich, the library) because commands apply
these decorators when their module is imported, which ``--help`` does too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from .app import App

__all__ = ["Seconds", "output_option", "uses_relay"]

F = TypeVar("F", bound=Callable[..., Any])


def output_option(*formats: str) -> Callable[[F], F]:
    """Add ``--json`` (and ``--csv`` ...) as one ``output`` parameter: "text" by default.

    One decorator for every command, so the flags mean the same thing everywhere.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def with_global_json(*args: Any, **kwargs: Any) -> Any:
            # The global `p2ptransfer --json CMD` means the same as `CMD --json`.
            app = click.get_current_context().find_object(App)
            if kwargs.get("output") == "text" and app is not None and app.json:
                kwargs["output"] = "json"
            return func(*args, **kwargs)

        command = cast(F, with_global_json)
        for fmt in reversed(formats):
            command = click.option(
                f"--{fmt}",
                "output",
                flag_value=fmt,
                help=f"Print {fmt.upper()} for scripts (no colour, stable keys).",
            )(command)
        return click.option("--text", "output", flag_value="text", default=True, hidden=True)(
            command
        )

    return decorate


class Seconds(click.FloatRange):
    """A number of seconds in [min, max]: finite, so ``nan`` and ``inf`` are usage errors.

    click's FloatRange lets ``nan`` through (every comparison with it is
    false), and ``--timeout nan`` would then wait forever.
    """

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return super().convert(number, param, ctx)


def uses_relay(func: F) -> F:
    """Mark a command that talks to the relay: its URL is checked before the command runs.

    So ``--relay localhost:8765`` fails at once, as a usage error, before any
    passphrase is asked for or anything asynchronous is started.
    """

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        app = click.get_current_context().find_object(App)
        if app is not None:
            app.relay_url  # noqa: B018 - reading it checks it (a usage error if malformed)
        return func(*args, **kwargs)

    return cast(F, checked)
