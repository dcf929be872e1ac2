"""The root ``p2ptransfer`` group and the one place where errors become exit codes.

Every library error is a :class:`~p2ptransfer.errors.P2PTransferError` with its
own ``exit_code``. :class:`DispatchGroup` catches them around the whole
command chain and turns each into one sentence on stderr (``error: ...``) and
that exit code; ``-v`` adds the chain of causes, never a traceback. Ctrl-C
exits 130 quietly. Anything else is a bug: a short message, exit 70, and the
traceback only with ``-v``. Commands therefore never catch errors to print
them.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any

import click

from .. import __version__
from ..errors import P2PTransferError
from ..storage.home import Home, default_home_path
from .app import DEFAULT_RELAY, RELAY_ENV, App
from .commands import contacts, identity, ledger, relay, transfers

__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "CommandFailed", "DispatchGroup", "cli", "main"]

EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug in p2ptransfer
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CommandFailed(click.ClickException):
    """A failed command, already phrased for the user, with its exit code."""

    def __init__(self, message: str, exit_code: int, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a class default
        self.details = details or []

    def show(self, file: IO[Any] | None = None) -> None:
        if self.message:
            click.echo(f"error: {self.message}", file=file, err=True)
        for line in self.details:
            click.echo(line, file=file, err=True)


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _cause_chain(exc: BaseException) -> list[str]:
    """``-v`` detail: the exception's class and each cause, one line each."""
    lines = [f"  ({type(exc).__name__}, exit code {getattr(exc, 'exit_code', '?')})"]
    seen = {id(exc)}
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        lines.append(f"  caused by {type(cause).__name__}: {_sentence(cause)}")
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return lines


def _verbosity(ctx: click.Context) -> int:
    app = ctx.find_object(App)
    return app.verbose if app is not None else 0


LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, attribute). The relay's command is its own (the one rendezvous.py
    # runs, with the same options); loading it only when asked keeps websockets' server
    # side out of every other command's start-up.
    "relay": ("p2ptransfer.net.relay", "relay_command"),
}


class DispatchGroup(click.Group):
    """The root group: runs the command chain and maps every error in one place."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module_name, attribute = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module_name}.{attribute} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except P2PTransferError as exc:
            details = _cause_chain(exc) if _verbosity(ctx) else []
            raise CommandFailed(_sentence(exc), exc.exit_code, details) from exc
        except (KeyboardInterrupt, click.exceptions.Abort):
            raise CommandFailed("", EXIT_INTERRUPTED) from None
        except (click.ClickException, click.exceptions.Exit):
            raise
        except Exception as exc:
            if _verbosity(ctx):
                details = [line.rstrip("\n") for line in traceback.format_exception(exc)]
            else:
                details = ["this is a bug in p2ptransfer; run with -v for details"]
            raise CommandFailed(
                f"unexpected {type(exc).__name__}: {_sentence(exc)}", EXIT_INTERNAL, details
            ) from exc


@click.group(cls=DispatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    "home_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="P2PTRANSFER_HOME",
    help="Home directory with the key file and ledger "
    "[env P2PTRANSFER_HOME; default: the user data directory].",
)
@click.option(
    "--relay",
    "relay_url",
    envvar=RELAY_ENV,
    default=DEFAULT_RELAY,
    show_default=True,
    metavar="URL",
    help=f"Relay to connect to (ws:// or wss://) [env {RELAY_ENV}].",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Read the key passphrase from FILE (used when P2PTRANSFER_PASSPHRASE is not set).",
)
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    help="Print JSON for scripts, as if every command got its own --json.",
)
@click.option("-v", "--verbose", count=True, help="Explain errors in more detail (repeatable).")
@click.version_option(__version__, "--version", prog_name="p2ptransfer")
@click.pass_context
def cli(
    ctx: click.Context,
    home_dir: Path | None,
    relay_url: str,
    passphrase_file: Path | None,
    json_output: bool,
    verbose: int,
) -> None:
    """Send signed, end-to-end encrypted transfer instructions to another person.

    \b
    Start with:   p2ptransfer init --name alice
    Share:        p2ptransfer whoami
    Then:         p2ptransfer contacts add bob ADDRESS
                  p2ptransfer send bob 12.50 EUR --memo lunch

    The passphrase of the key comes from P2PTRANSFER_PASSPHRASE, else
    --passphrase-file, else a hidden prompt on a terminal.
    """
    home = Home(home_dir) if home_dir is not None else Home(default_home_path())
    ctx.obj = App(
        home=home,
        relay_url=relay_url,
        verbose=verbose,
        passphrase_file=passphrase_file,
        json=json_output,
    )


identity.register_commands(cli)
contacts.register_commands(cli)
transfers.register_commands(cli)
ledger.register_commands(cli)
relay.register_commands(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``p2ptransfer``); exits with the command's code."""
    try:
        cli.main(args=argv, prog_name="p2ptransfer")
    except BrokenPipeError:
        # stdout closed early (| head): not an error worth a word. Point stdout
        # at devnull so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
