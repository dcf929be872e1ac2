"""Start-up stays light: help and usage errors load none of the heavy modules.

``p2ptransfer --help`` should answer about as fast as Python imports click.
What decides that is what gets imported, so that is what is tested, in a fresh
interpreter each time; the time itself is not asserted (timings are flaky).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from p2ptransfer import __version__
from p2ptransfer.cli.main import COMMANDS, cli, main
from p2ptransfer.errors import NotFound

HEAVY = (
    "rich",
    "cryptography",
    "websockets",
    "asyncio",
    "sqlite3",
    "p2ptransfer.net",
    "p2ptransfer.storage",
    "p2ptransfer.protocol",
)

# Runs each argv through the real entry point in one interpreter, and reports
# the heavy modules each run added (imports only accumulate, so the first run
# to load a module is the one that shows it).
_PROBE = """
import json, sys
heavy = tuple(json.loads(sys.argv[1]))
report = []
from p2ptransfer.cli import main
for argv in json.loads(sys.argv[2]):
    before = set(sys.modules)
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    added = sorted(
        m for m in set(sys.modules) - before
        if any(m == h or m.startswith(h + ".") for h in heavy)
    )
    report.append({"argv": argv, "code": code, "heavy": added})
print(json.dumps(report))
"""

HELP = [
    ["--help"],
    ["-h"],
    ["--version"],
    *([name, "--help"] for name in sorted(COMMANDS) if name != "relay"),
    ["contacts", "add", "--help"],
    ["contacts", "limit", "--help"],
    ["ledger", "verify", "--help"],
]
USAGE_ERRORS = [
    [],
    ["bogus"],
    ["sned", "bob", "1", "EUR"],
    ["contact", "list"],
    ["--relay"],
    ["send"],
    ["send", "bob", "1"],
    ["send", "--timeout", "0", "bob", "1", "EUR"],
    ["send", "--timeout", "nan", "bob", "1", "EUR"],
    ["contacts", "bogus"],
    ["ledger", "bogus"],
]


def _python(code: str, *args: str) -> Any:
    """Run ``code`` in a fresh interpreter; its last line of stdout, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def _probe(runs: list[list[str]]) -> list[dict[str, Any]]:
    report: list[dict[str, Any]] = _python(_PROBE, json.dumps(HEAVY), json.dumps(runs))
    return report


def test_help_imports_nothing_heavy() -> None:
    report = _probe(HELP)
    assert [(r["argv"], r["code"], r["heavy"]) for r in report] == [(argv, 0, []) for argv in HELP]


def test_usage_errors_import_nothing_heavy() -> None:
    report = _probe(USAGE_ERRORS)
    assert [(r["argv"], r["code"], r["heavy"]) for r in report] == [
        (argv, 2, []) for argv in USAGE_ERRORS
    ]


def test_relay_help_loads_its_settings_but_no_server() -> None:
    """``relay --help`` loads the relay's settings (for its option defaults), not its server."""
    (relay_help,) = _probe([["relay", "--help"]])
    assert relay_help["code"] == 0
    no_server = [m for m in relay_help["heavy"] if m.split(".")[0] != "p2ptransfer"]
    assert no_server == []  # no rich, cryptography, websockets, asyncio or sqlite3
    assert "p2ptransfer.net.relay.server" not in relay_help["heavy"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_help_is_the_commands_own(name: str) -> None:
    """The command list shows COMMANDS' copy of each help: it must match the command's."""
    entry = COMMANDS[name]
    command = entry.load()
    stand_in = click.Command(name, help=entry.help)
    for limit in (20, 45, 60, 74, 80, 120, 200):
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)
    assert not command.hidden


def test_every_command_is_listed() -> None:
    assert cli.list_commands(click.Context(cli)) == sorted(COMMANDS)


# --- leaving: the console script exits with os._exit, with the same codes and output ---


def _program(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``p2ptransfer ARGS`` as a program of its own (``python -m``: the console script's path)."""
    return subprocess.run(
        [sys.executable, "-m", "p2ptransfer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_the_program_exits_with_each_commands_code_and_all_its_output(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P2PTRANSFER_", "PYTHONWARN"))}
    env.update(P2PTRANSFER_KDF_LOG_N="10", P2PTRANSFER_PASSPHRASE="correct horse battery staple")
    home = str(tmp_path / "home")
    version = _program("--version", env=env)
    assert (version.returncode, version.stdout) == (0, f"p2ptransfer, version {__version__}\n")
    assert _program("bogus", env=env).returncode == 2
    missing = _program("--home", home, "whoami", env=env)
    assert missing.returncode == NotFound.exit_code
    assert missing.stderr.startswith("error: no identity in ")
    assert _program("--home", home, "init", "--name", "alice", env=env).returncode == 0
    shown = _program("--home", home, "whoami", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["name"] == "alice"  # complete: flushed before leaving


def test_called_from_python_main_raises_system_exit_as_usual() -> None:
    """Only the program itself leaves with os._exit; main(argv) from Python raises."""
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0


def test_plain_lines_to_a_pipe_load_no_rich() -> None:
    """``send`` and ``receive`` piped or in a script: their lines and notes need no rich."""
    report = _python(
        """
import json, sys
from p2ptransfer.cli.app import App
app = App(home=None, relay_url="ws://127.0.0.1:1")
with app.waiting("waiting..."):
    app.say("a line :smile: [red]x[/red]")
    app.note("a note \\x1b[2J")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "rich")))
"""
    )
    assert report == []
