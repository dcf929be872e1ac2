"""Start-up stays light: help and usage errors load none of the heavy modules.

``p2ptransfer --help`` should answer about as fast as Python imports click.
What decides that is what gets imported, so that is what is tested, in a fresh
interpreter each time; the time itself is not asserted (timings are flaky).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import click
import pytest

from p2ptransfer.cli.main import COMMANDS, cli

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
