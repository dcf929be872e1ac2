"""The root ``p2ptransfer`` group and the one place where errors become exit codes.

Every library error is a :class:`~p2ptransfer.errors.P2PTransferError` with its
own ``exit_code``. :class:`DispatchGroup` catches them around the whole
command chain and turns each into one sentence on stderr (``error: ...``) and
that exit code; ``-v`` adds the chain of causes, never a traceback. Ctrl-C
exits 130 quietly. Anything else is a bug: a short message, exit 70, and the
traceback only with ``-v``. Commands therefore never catch errors to print
them.

Start-up is part of the interface: ``p2ptransfer --help``, the ``--help`` of
each of our own commands and every usage error answer without loading rich,
cryptography, websockets, asyncio or sqlite3 (tests/cli/test_startup.py). So
the root group imports a command only when it is run or asked for its help
(:data:`COMMANDS`), and the command modules import only click and light CLI
modules at the top, the library and rich inside the command bodies.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import click

from .. import __version__
from ..errors import P2PTransferError
from .app import DEFAULT_RELAY, RELAY_ENV, App

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

__all__ = [
    "COMMANDS",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "CommandFailed",
    "DispatchGroup",
    "LazyCommand",
    "cli",
    "main",
]

EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug in p2ptransfer
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CommandFailed(click.ClickException):
    """A failed command, already phrased for the user, with its exit code.

    Its message often quotes what somebody else wrote (a relay's close reason
    or refusal detail, an HTTP error body, a peer's text), so :meth:`show`
    writes every line through
    :func:`~p2ptransfer.protocol.text.escape_for_terminal`: an escape
    sequence in it is shown as ``\\x1b[2K``, never obeyed.
    """

    def __init__(self, message: str, exit_code: int, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a class default
        self.details = details or []

    def show(self, file: IO[Any] | None = None) -> None:
        if not self.message and not self.details:
            return  # Ctrl-C: nothing to say (and nothing to import)
        from ..protocol.text import escape_for_terminal

        if self.message:
            click.echo(f"error: {escape_for_terminal(self.message)}", file=file, err=True)
        for line in self.details:
            click.echo(escape_for_terminal(line), file=file, err=True)


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


class LazyCommand(NamedTuple):
    """Where a subcommand lives, imported only when it is run or asked for its help.

    ``help`` repeats the first paragraph of the command's own help, so that the
    command list of ``p2ptransfer --help`` (and shell completion) can show it
    without the import; tests/cli/test_startup.py checks that the two agree.
    """

    module: str
    attribute: str
    help: str
    global_options: bool = True
    """Whether the global options also work after the command (not for ``relay``, ``demo``)."""

    def load(self) -> click.Command:
        command = getattr(importlib.import_module(self.module), self.attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.module}.{self.attribute} is not a click command")
        if self.global_options:
            from .options import accept_global_options

            accept_global_options(command)
        return command


_FAMILY = "p2ptransfer.cli.commands"

COMMANDS: dict[str, LazyCommand] = {
    "init": LazyCommand(
        f"{_FAMILY}.identity",
        "init",
        "Create your identity (key file, passphrase-protected) and an empty ledger.",
    ),
    "passwd": LazyCommand(
        f"{_FAMILY}.identity",
        "passwd",
        "Change the passphrase of your key file; your identity and address stay the same.",
    ),
    "whoami": LazyCommand(
        f"{_FAMILY}.identity",
        "whoami",
        "Show your name, address and fingerprint (no passphrase needed).",
    ),
    "register": LazyCommand(
        f"{_FAMILY}.identity",
        "register",
        "Claim HANDLE at the relay's directory, so others can look your address up.",
    ),
    "unregister": LazyCommand(
        f"{_FAMILY}.identity",
        "unregister",
        "Release HANDLE at the relay's directory, so it no longer points to you.",
    ),
    "contacts": LazyCommand(
        f"{_FAMILY}.contacts",
        "contacts",
        "Add, list, check and remove the people you transfer with.",
    ),
    "send": LazyCommand(
        f"{_FAMILY}.transfers",
        "send",
        "Send AMOUNT of CURRENCY to RECIPIENT (a contact name or an address).",
    ),
    "receive": LazyCommand(
        f"{_FAMILY}.transfers",
        "receive",
        "Wait for the first incoming transfer, record it, show it, exit.",
    ),
    "listen": LazyCommand(
        f"{_FAMILY}.transfers",
        "listen",
        "Stay online and record incoming transfers until Ctrl-C (or SIGTERM).",
    ),
    "resend": LazyCommand(
        f"{_FAMILY}.transfers",
        "resend",
        "Retry outgoing transfers still waiting (all, or the one with ID or an ID prefix).",
    ),
    "pending": LazyCommand(
        f"{_FAMILY}.mail",
        "pending",
        "List outgoing transfers still waiting for a receipt (pending or queued), oldest first.",
    ),
    "sync": LazyCommand(
        f"{_FAMILY}.mail",
        "sync",
        "Collect your mail at the relay once: transfers sent while you were away, receipts.",
    ),
    "policy": LazyCommand(
        f"{_FAMILY}.mail",
        "policy",
        "Show or set what you accept: from strangers or not, which currencies.",
    ),
    "request": LazyCommand(
        f"{_FAMILY}.requests",
        "request",
        "Ask CONTACT to pay you AMOUNT of CURRENCY: a signed, single-use, expiring request.",
    ),
    "requests": LazyCommand(
        f"{_FAMILY}.requests",
        "requests",
        "List payment requests, yours and to you, with their state.",
    ),
    "pay": LazyCommand(
        f"{_FAMILY}.requests",
        "pay",
        "Pay REQUEST (an id from `p2ptransfer requests`, or a pasted p2ptreq1... code).",
    ),
    "abandon": LazyCommand(
        f"{_FAMILY}.transfers",
        "abandon",
        "Give up on pending outgoing transfer ID (or an ID prefix): it becomes failed.",
    ),
    "ledger": LazyCommand(
        f"{_FAMILY}.ledger",
        "ledger",
        "Show the history of transfers and the balance with each counterparty.",
    ),
    "demo": LazyCommand(
        f"{_FAMILY}.relay",
        "demo",
        "Run a complete tour: a local relay, two throwaway people, real transfers.",
        global_options=False,  # its homes and relay are its own
    ),
    # The same command rendezvous.py runs, with the same options.
    "relay": LazyCommand(
        f"{_FAMILY}.relay",
        "relay_command",
        "Run the rendezvous relay: it routes opaque frames between authenticated addresses.",
        global_options=False,  # it has no home, and its own options
    ),
}
"""Every subcommand of ``p2ptransfer``, by name."""

_LISTING = "p2ptransfer.listing"  # ctx.meta key: listing commands, not running one


@contextlib.contextmanager
def _listing(ctx: click.Context) -> Iterator[None]:
    ctx.meta[_LISTING] = True
    try:
        yield
    finally:
        del ctx.meta[_LISTING]


class DispatchGroup(click.Group):
    """The root group: runs the command chain and maps every error in one place."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = COMMANDS.get(cmd_name)
        if lazy is not None and cmd_name not in self.commands:
            if ctx.meta.get(_LISTING):
                # Only its name and short help are wanted: a stand-in, not an import.
                return click.Command(cmd_name, help=lazy.help)
            self.add_command(lazy.load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            name = click.utils.make_str(args[0]) if args else ""
            if ctx.resilient_parsing or name.startswith("-") or name in COMMANDS:
                raise
            # A typo (sned, recieve, contact): name the commands meant. Only
            # the names are compared, so nothing heavy is imported.
            from .commands import did_you_mean

            hint = did_you_mean(name, self.list_commands(ctx))
            if hint is None:
                raise
            raise click.UsageError(f"No such command {name!r}; {hint}", ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _listing(ctx):
            super().format_commands(ctx, formatter)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        with _listing(ctx):
            return super().shell_complete(ctx, incomplete)

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
                import traceback

                details = [
                    line for chunk in traceback.format_exception(exc) for line in chunk.splitlines()
                ]
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
    metavar="URL[,URL...]",
    help="Relay to connect to (ws:// or wss://); a comma-separated list names the nodes of "
    f"one cluster, tried in turn [env {RELAY_ENV}].",
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
    ctx.obj = App(
        home=home_dir,  # None: the default location, resolved when a command needs it
        relay_url=relay_url,
        verbose=verbose,
        passphrase_file=passphrase_file,
        json=json_output,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``p2ptransfer``); exits with the command's code.

    Run as the program itself (``argv`` None), it leaves with ``os._exit``
    once the command has returned, its output is flushed and the exit
    handlers have run: tearing down the few hundred modules a command loads
    takes longer than many commands, and nothing is left for it to do. Called
    with an ``argv`` (from Python, or tests), it raises SystemExit as usual.
    """
    try:
        try:
            cli.main(args=argv, prog_name="p2ptransfer")
        except BrokenPipeError:
            # stdout closed early (| head): not an error worth a word. Point stdout
            # at devnull so the interpreter's final flush does not complain.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
    except SystemExit as exc:
        if argv is not None:
            raise
        _leave(exc)
        raise


def _leave(exc: SystemExit) -> None:
    """Exit now with ``exc``'s status, skipping the interpreter's teardown, when that is safe.

    Safe means: no other thread still running (it would be cut off), no
    profiler or tracer (cProfile, coverage) waiting to write its data at
    exit, stdout and stderr flushed without error, and the exit handlers
    (``atexit``: logging, temporary directories) run. Otherwise it returns,
    and the caller exits the ordinary way.
    """
    import atexit
    import threading

    code = exc.code
    if code is not None and not isinstance(code, int):
        return  # a message to print: the ordinary exit prints it
    if sys.getprofile() is not None or sys.gettrace() is not None or "coverage" in sys.modules:
        return
    if any(t is not threading.main_thread() and t.is_alive() for t in threading.enumerate()):
        return
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # let the ordinary exit report or absorb it
    run_exit_handlers()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code or 0)
