"""Options several commands share, declared once so they mean the same everywhere.

Kept apart from :mod:`.render` (rich, the library) because commands apply
these decorators when their module is imported, which ``--help`` does too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from .app import App

__all__ = [
    "Seconds",
    "accept_global_options",
    "global_option_given",
    "output_option",
    "uses_relay",
]

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


# --- global options after the command ---------------------------------------------

_GIVEN = "p2ptransfer.global."  # ctx.meta key prefix: a global option given after the command


def _after_command(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Hand a global option given after the command to the App (it wins over one before).

    Also kept in ``ctx.meta`` (shared by the whole context chain), where shell
    completion, which runs no command callbacks, finds ``--home``.
    """
    assert param.name is not None
    if ctx.get_parameter_source(param.name) is not click.core.ParameterSource.COMMANDLINE:
        return value
    ctx.meta[_GIVEN + param.name] = value
    app = ctx.find_object(App)
    if app is not None:
        app.override(param.name, value)
    return value


def _global_options() -> list[click.Option]:
    """Fresh copies of the root group's options, for one command (never exposed to it)."""
    common: dict[str, Any] = {"expose_value": False, "callback": _after_command}
    return [
        click.Option(
            ["--home", "home_dir"],
            type=click.Path(file_okay=False, path_type=Path),
            metavar="DIR",
            help="Home directory with the key file and ledger (global option: before or "
            "after the command).",
            **common,
        ),
        click.Option(
            ["--relay", "relay_url"],
            metavar="URL",
            help="Relay to connect to, ws:// or wss://; a comma-separated list names the nodes "
            "of one cluster (global option).",
            **common,
        ),
        click.Option(
            ["--passphrase-file", "passphrase_file"],
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE",
            help="Read the key passphrase from FILE (global option).",
            **common,
        ),
        click.Option(
            ["-v", "--verbose", "verbose"],
            count=True,
            help="Explain errors in more detail (global option; repeatable).",
            **common,
        ),
    ]


def accept_global_options(command: click.Command) -> click.Command:
    """Let ``command`` (and, for a group, each of its commands) take the global options.

    So ``p2ptransfer send bob 5 EUR --passphrase-file f`` means the same as
    ``p2ptransfer --passphrase-file f send bob 5 EUR``; given in both places,
    the one after the command wins. Done once per command object.
    """
    if getattr(command, "_p2pt_global_options", False):
        return command
    taken = {opt for param in command.params for opt in getattr(param, "opts", ())}
    command.params.extend(
        option for option in _global_options() if not taken.intersection(option.opts)
    )
    command._p2pt_global_options = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_global_options(sub)
    return command


def global_option_given(ctx: click.Context, name: str) -> Any:
    """The value of global option ``name`` wherever it was given, None if it was not.

    After the command wins over before it, as for the App. For shell
    completion, where the root command's callback (which builds the App) never runs.
    """
    if _GIVEN + name in ctx.meta:
        return ctx.meta[_GIVEN + name]
    return ctx.find_root().params.get(name)
