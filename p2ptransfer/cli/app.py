"""What every command of one invocation shares, on one object tests can inspect.

The root command builds an :class:`App` from the global options and stores it
as the click context object; commands receive it with ``@pass_app``. Output
goes through ``app.out`` (stdout: data) and ``app.err`` (stderr: diagnostics,
spinners, prompts); both are rich consoles that look at the stream when they
print, so click's CliRunner captures them, and both honour ``NO_COLOR``.

Lines of text go through :meth:`App.say` (stdout) and :meth:`App.note`
(stderr), which show them *inert*: no rich markup, no ``:emoji:`` codes, and
every control, bidi or separator character escaped
(:func:`~p2ptransfer.protocol.text.escape_for_terminal`), because what they
print mixes our words with text from the relay and from other people.

The root command builds an App even for ``p2ptransfer CMD --help``, so this
module stays import-light: the home, the consoles and the event loop are made
on first use, and the storage layer, rich and asyncio are imported only then.
A line for a stream that is not a terminal is written as it is, without rich
(rich would print the same characters, and importing it costs a noticeable
part of a short command's start-up).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..clock import now_ms
from ..errors import (
    InputError,
    NotFound,
    P2PTransferError,
    PassphraseUnavailable,
    WrongPassphrase,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    from rich.console import Console

    from ..net.peer import Peer
    from ..protocol.identity import Identity, PublicIdentity
    from ..storage.home import Home
    from ..storage.ledger import Ledger

__all__ = [
    "DEFAULT_RELAY",
    "PASSPHRASE_ENV",
    "RELAY_ENV",
    "App",
    "now_ms",
    "pass_app",
    "stdin_is_tty",
]

T = TypeVar("T")

DEFAULT_RELAY = "ws://127.0.0.1:8765"
RELAY_ENV = "P2PTRANSFER_RELAY"
PASSPHRASE_ENV = "P2PTRANSFER_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
_MAX_PASSPHRASE_FILE = 4096
MIN_PASSPHRASE_CHARS = 12  # shorter ones are warned about (an offline guess is cheap)
PASSPHRASE_TRIES = 3  # at a terminal: a typo costs a retry, not the whole command


def stdin_is_tty() -> bool:
    """Whether a hidden passphrase prompt can work (a seam tests may replace)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _console(*, stderr: bool) -> Console:
    from rich.console import Console

    # highlight=False: rich would otherwise colour numbers and addresses at random.
    # soft_wrap=True: never break an address or an id in the middle when piped.
    # emoji=False: a memo ":smile:" is shown as typed, never as a picture.
    console = Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or in CI: rich would assume 80 columns and squeeze tables into ellipses.
        console.width = 132
    return console


class App:
    """The state one ``p2ptransfer`` invocation shares between its commands.

    ``home`` is a :class:`~p2ptransfer.storage.home.Home`, or the ``--home``
    path, or None for the default location; either way ``app.home`` is a Home,
    made on first use. ``out`` and ``err`` default to consoles on stdout and
    stderr, also made on first use; tests pass their own.
    """

    def __init__(
        self,
        *,
        home: Home | Path | None,
        relay_url: str,
        verbose: int = 0,
        passphrase_file: Path | None = None,
        json: bool = False,
        out: Console | None = None,
        err: Console | None = None,
    ) -> None:
        self._relay_url = relay_url
        self._relay_checked = False
        self._relay_given_after = False  # --relay came after the command name
        self.verbose = verbose
        self.passphrase_file = passphrase_file
        self.json = json
        self._home = home
        self._out = out
        self._err = err
        self._warned_files: set[Path] = set()
        # The identity a typed passphrase was checked against, so unlock() runs scrypt once.
        self._unlocked: tuple[str, Identity] | None = None
        # A key file being opened in a thread since start_unlock(), for that passphrase.
        self._unlocking: tuple[str, Future[Identity]] | None = None

    @property
    def relay_url(self) -> str:
        """The relay's URL as given, once checked: a malformed one is a usage error (exit 2).

        Checked when first read, so commands that never talk to the relay do not
        care what it is, and the check happens before a command builds the
        coroutine that would connect (``RelayClient.connect(app.relay_url, ...)``).
        """
        if not self._relay_checked:
            _check_relay_url(self._relay_url, after_command=self._relay_given_after)
            self._relay_checked = True
        return self._relay_url

    def override(self, name: str, value: Any) -> None:
        """A global option given after the command name: it wins over the one before.

        ``name`` is the root option's parameter name (``home_dir``,
        ``relay_url``, ``passphrase_file``, ``verbose``); ``-v`` counts add up.
        """
        if name == "home_dir":
            self._home = value
        elif name == "relay_url":
            self._relay_url, self._relay_checked, self._relay_given_after = value, False, True
        elif name == "passphrase_file":
            self.passphrase_file = value
        elif name == "verbose":
            self.verbose += value
        else:  # pragma: no cover - options.GLOBAL_OPTIONS names only these
            raise ValueError(f"not a global option: {name}")

    @property
    def home(self) -> Home:
        """``--home``, else the default location (which may not exist yet)."""
        from ..storage.home import Home, default_home_path

        if not isinstance(self._home, Home):
            self._home = Home(self._home if self._home is not None else default_home_path())
        return self._home

    @property
    def out(self) -> Console:
        """Data: tables and lines for people (JSON and CSV go through click.echo)."""
        if self._out is None:
            self._out = _console(stderr=False)
        return self._out

    @property
    def err(self) -> Console:
        """Diagnostics, spinners and prompts."""
        if self._err is None:
            self._err = _console(stderr=True)
        return self._err

    # --- home, identity and ledger -------------------------------------------------

    def require_home(self) -> Home:
        """The home, which must hold an identity and be private; nothing is created here."""
        if not self.home.exists():
            raise NotFound(f"no identity in {self.home.path}; run 'p2ptransfer init' first")
        self.home.check_permissions()
        return self.home

    def public_identity(self) -> PublicIdentity:
        return self.require_home().public_identity()

    @contextlib.contextmanager
    def ledger(self) -> Iterator[Ledger]:
        """The home's ledger, open for the duration of the block."""
        from ..storage.ledger import Ledger

        home = self.require_home()
        # Opened under the home's public key: a ledger that belongs to another
        # identity (a swapped key file or ledger) is refused before anything is read.
        ledger = Ledger.open(home.ledger_path, owner=home.public_identity())
        try:
            yield ledger
        finally:
            ledger.close()

    def read_passphrase(self, *, confirm: bool = False) -> str:
        """``$P2PTRANSFER_PASSPHRASE``, else ``--passphrase-file``, else a hidden prompt.

        The order follows issue 5 (environment first); security.md lists the
        file first. A terminal prompt is used only when stdin is a terminal;
        with no source at all the command fails before anything is written.

        A passphrase typed at a terminal is checked against the key file at
        once (before any network work), and a wrong one is asked for again,
        :data:`PASSPHRASE_TRIES` times in all, then WrongPassphrase. One from
        the environment or a file is never retried: a script would only fail
        the same way again.
        """
        env = os.environ.get(PASSPHRASE_ENV)
        if env:
            if self.passphrase_file is not None:  # never ignore an explicit flag silently
                self.note(f"{PASSPHRASE_ENV} is set: it is used and --passphrase-file is ignored")
            return env
        if self.passphrase_file is not None:
            return self.read_passphrase_file(self.passphrase_file)
        if not stdin_is_tty():
            raise PassphraseUnavailable(
                f"no passphrase available: set {PASSPHRASE_ENV}, pass --passphrase-file FILE, "
                "or run the command on a terminal"
            )
        value = prompt_passphrase("Passphrase", confirm=confirm)
        if confirm or not self.home.exists():
            return value  # a new passphrase (init), or no key file to check it against
        return self._checked(value)

    def read_new_passphrase(
        self, *, new_file: Path | None = None, label: str = "Passphrase", scripted: bool = True
    ) -> str:
        """The passphrase for a key file about to be written (``init``, ``passwd``).

        From ``new_file``, else (when ``scripted``: ``init``) the usual
        environment or ``--passphrase-file``, else asked twice at a terminal.
        One shorter than :data:`MIN_PASSPHRASE_CHARS` gets a warning; at a
        terminal the user must also confirm it (or type another), while a
        script's passphrase is used as given.
        """
        for _ in range(PASSPHRASE_TRIES):
            if new_file is not None:
                value, typed = self.read_passphrase_file(new_file), False
            elif scripted and (os.environ.get(PASSPHRASE_ENV) or self.passphrase_file is not None):
                value, typed = self.read_passphrase(), False
            elif stdin_is_tty():
                value, typed = prompt_passphrase(label, confirm=True), True
            elif scripted:
                return self.read_passphrase()  # raises the usual "no passphrase available"
            else:
                raise PassphraseUnavailable(
                    "no new passphrase available: pass --new-passphrase-file FILE, "
                    "or run the command on a terminal"
                )
            if len(value) >= MIN_PASSPHRASE_CHARS:
                return value
            self.note(
                f"warning: this passphrase is short ({len(value)} characters); "
                f"{MIN_PASSPHRASE_CHARS} or more are much harder to guess "
                "if your key file is ever copied"
            )
            if not typed or click.confirm("use it anyway?", default=False, err=True):
                return value
        raise PassphraseUnavailable("no passphrase chosen; nothing was written")

    def _checked(self, value: str) -> str:
        """``value`` once it opens the key file; a wrong one is asked for again."""
        for tries_left in range(PASSPHRASE_TRIES - 1, -1, -1):
            try:
                with self.waiting("checking the passphrase…"):
                    self._unlocked = (value, self.home.load_identity(value))
                return value
            except WrongPassphrase:
                if not tries_left:
                    raise
            self.note(f"wrong passphrase, try again ({tries_left} left)")
            value = prompt_passphrase("Passphrase")
        raise AssertionError("unreachable")  # pragma: no cover

    def read_passphrase_file(self, path: Path) -> str:
        """The passphrase in ``path``, with a warning (once) if others may read the file."""
        text, mode = _read_passphrase_file(path)
        if os.name == "posix" and mode & 0o077 and path not in self._warned_files:
            self._warned_files.add(path)
            self.note(
                f"warning: passphrase file {path} is accessible by other users "
                f"(mode {mode:04o}); run 'chmod 600 {path}'"
            )
        return text

    async def open_peer(self, ledger: Ledger, passphrase: str, **options: Any) -> Peer:
        """This home's peer on the relay: the key unlocked while connecting, mail enabled."""
        from ..net.peer import Peer

        return await Peer.open(
            self.unlock(passphrase),
            ledger,
            self.relay_url,
            prekeys_path=self.home.prekeys_path,
            **options,
        )

    def unlock_early(self) -> None:
        """:meth:`start_unlock` right away when the passphrase needs no question.

        That is when it comes from the environment or ``--passphrase-file``
        (not both: then :meth:`read_passphrase` has a word to say first).
        Anything wrong is left to be reported where the command reads the
        passphrase or opens the home, exactly as without this head start.
        """
        env = os.environ.get(PASSPHRASE_ENV)
        if env and self.passphrase_file is None:
            passphrase = env
        elif self.passphrase_file is not None and not env:
            try:
                passphrase, _ = _read_passphrase_file(self.passphrase_file)
            except PassphraseUnavailable:
                return
        else:
            return
        with contextlib.suppress(P2PTransferError):
            self.start_unlock(passphrase)

    def start_unlock(self, passphrase: str) -> None:
        """Start opening the key file in a thread now; :meth:`unlock` picks the result up.

        scrypt is the slowest part of a short command and leaves the
        interpreter free meanwhile, so a command that goes online starts it
        before loading the network code: the two overlap. Errors (a wrong
        passphrase) are raised where :meth:`unlock` is awaited, as before.
        """
        import threading
        from concurrent.futures import Future

        home = self.require_home()
        if self._unlocking is not None or self._checked_already(passphrase):
            return
        future: Future[Identity] = Future()

        def work() -> None:
            try:
                future.set_result(home.load_identity(passphrase))
            except BaseException as exc:  # handed to whoever awaits the unlock
                future.set_exception(exc)

        self._unlocking = (passphrase, future)
        threading.Thread(target=work, name="p2ptransfer-unlock", daemon=True).start()

    async def unlock(self, passphrase: str) -> Identity:
        """Open the key file in a worker thread, so scrypt runs beside other async setup."""
        import asyncio

        home = self.require_home()
        if self._unlocked is not None and self._checked_already(passphrase):
            return self._unlocked[1]  # already checked at the prompt: no second scrypt
        if self._unlocking is not None and _same(self._unlocking[0], passphrase):
            return await asyncio.wrap_future(self._unlocking[1])
        return await asyncio.to_thread(home.load_identity, passphrase)

    def _checked_already(self, passphrase: str) -> bool:
        return self._unlocked is not None and _same(self._unlocked[0], passphrase)

    # --- running and waiting ----------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one command's async part on a fresh event loop (uvloop's when installed)."""
        from ..net.eventloop import run

        return run(coro)

    @contextlib.contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        """A spinner on stderr while a block runs, only when stderr is a terminal."""
        if self._err is None and not _isatty(sys.stderr):
            yield  # no spinner: no need for rich to find that out
        elif self.err.is_terminal:
            from rich.text import Text

            from ..protocol.text import escape_for_terminal

            with self.err.status(Text(escape_for_terminal(text))):
                yield
        else:
            yield

    def say(self, text: str) -> None:
        """One line of data on stdout, shown inert (see the module docstring)."""
        self._line(text, stderr=False)

    def note(self, text: str) -> None:
        """One diagnostic line on stderr, shown inert (see the module docstring)."""
        self._line(text, stderr=True)

    def _line(self, text: str, *, stderr: bool) -> None:
        from ..protocol.text import escape_for_terminal

        console = self._err if stderr else self._out
        if console is None and not _isatty(sys.stderr if stderr else sys.stdout):
            # What rich would print here, character for character, without loading it.
            click.echo(escape_for_terminal(text), err=stderr)
            return
        if console is None:
            console = self.err if stderr else self.out
        console.print(escape_for_terminal(text), markup=False, emoji=False, highlight=False)


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _check_relay_url(url: str, *, after_command: bool = False) -> None:
    from ..protocol.relay_limits import split_relay_urls

    try:
        split_relay_urls(url)
    except InputError as exc:
        ctx = click.get_current_context(silent=True)
        from_env = (
            not after_command
            and ctx is not None
            and ctx.find_root().get_parameter_source("relay_url")
            is click.core.ParameterSource.ENVIRONMENT
        )
        hint = RELAY_ENV if from_env else "--relay"
        raise click.BadParameter(str(exc), ctx=ctx, param_hint=[hint]) from None


def prompt_passphrase(label: str, *, confirm: bool = False) -> str:
    """A hidden prompt on the terminal (stderr), asked twice when ``confirm``."""
    value: str = click.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True)
    return value


def _read_passphrase_file(path: Path) -> tuple[str, int]:
    """The passphrase in ``path`` and the file's permission bits."""
    try:
        with path.open("rb") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            data = fh.read(_MAX_PASSPHRASE_FILE + 1)
    except OSError as exc:
        raise PassphraseUnavailable(
            f"cannot read passphrase file {path}: {exc.strerror or exc}"
        ) from exc
    if len(data) > _MAX_PASSPHRASE_FILE:
        raise PassphraseUnavailable(
            f"passphrase file {path} is larger than {_MAX_PASSPHRASE_FILE} bytes"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PassphraseUnavailable(f"passphrase file {path} is not UTF-8 text") from None
    # One trailing line break is the file's, not the passphrase's.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise PassphraseUnavailable(f"passphrase file {path} is empty")
    return text, mode


pass_app = click.make_pass_decorator(App)
