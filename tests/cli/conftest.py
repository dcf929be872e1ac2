"""Fixtures for the CLI tests: an isolated environment, a runner, and homes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from p2ptransfer.cli import cli

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Cheap keys, no ambient configuration, no colour."""
    for name in (
        "P2PTRANSFER_PASSPHRASE",
        "P2PTRANSFER_HOME",
        "P2PTRANSFER_RELAY",
        "FORCE_COLOR",
        "COLUMNS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("P2PTRANSFER_KDF_LOG_N", "10")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield


@dataclass
class Run:
    """A finished CliRunner invocation with the helpers the tests keep needing."""

    result: Result

    @property
    def code(self) -> int:
        return self.result.exit_code

    @property
    def out(self) -> str:
        return self.result.stdout

    @property
    def err(self) -> str:
        return self.result.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"Run(code={self.code}, out={self.out!r}, err={self.err!r})"


Invoke = Callable[..., Run]


@pytest.fixture
def invoke() -> Invoke:
    """Run ``p2ptransfer ARGS`` in-process; ``passphrase=None`` leaves it unset."""

    def run(
        *args: str,
        passphrase: str | None = PASSPHRASE,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Run:
        full_env = dict(env or {})
        if passphrase is not None:
            full_env["P2PTRANSFER_PASSPHRASE"] = passphrase
        result = CliRunner().invoke(cli, list(args), input=input, env=full_env)
        run = Run(result)
        assert "Traceback" not in result.output, run
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"uncaught {result.exception!r}: {run}")
        return run

    return run


@dataclass
class Person:
    """An initialised home, addressed through ``--home``."""

    name: str
    home: Path
    address: str
    fingerprint: str

    def args(self, *args: str) -> tuple[str, ...]:
        return ("--home", str(self.home), *args)


@pytest.fixture
def make_person(tmp_path: Path, invoke: Invoke) -> Callable[[str], Person]:
    def make(name: str) -> Person:
        home = tmp_path / name
        run = invoke("--home", str(home), "init", "--name", name, "--json")
        assert run.code == 0, run
        data = run.json()
        assert isinstance(data, dict)
        return Person(name, home, data["address"], data["fingerprint"])

    return make


@pytest.fixture
def alice(make_person: Callable[[str], Person]) -> Person:
    return make_person("alice")


@pytest.fixture
def bob(make_person: Callable[[str], Person]) -> Person:
    return make_person("bob")


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: its mode and content hash (to prove nothing was written)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): (
            path.stat().st_mode,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
