"""The documents' proof columns point at tests that exist.

docs/guarantees.md and docs/threat-model.md map every promise to the test
that holds it; a renamed or deleted test must not leave a promise pointing at
nothing.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "SECURITY.md"])
# `tests/net/test_peer.py::test_x`, `adv/test_fuzz.py::test_y` (adv/ = tests/adversarial/),
# `net/test_relay.py` ... and the short `::test_z` that continues the previous file.
_REFERENCE = re.compile(r"`((?:tests|adv|net|cli|protocol|storage)/[\w/]+\.py)(?:::(\w+))?`")
_CONTINUED = re.compile(r"`::(\w+)`")


def _test_file(path: str) -> Path:
    if path.startswith("adv/"):
        return ROOT / "tests" / "adversarial" / path[4:]
    if path.startswith("tests/"):
        return ROOT / path
    return ROOT / "tests" / path


def _references(doc: Path) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    last: str | None = None
    for line in doc.read_text().splitlines():
        for match in re.finditer(f"{_REFERENCE.pattern}|{_CONTINUED.pattern}", line):
            if match.group(1) is not None:
                last = match.group(1)
                found.append((last, match.group(2)))
            elif last is not None:
                found.append((last, match.group(3)))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_test_a_document_names_exists(doc: Path) -> None:
    missing = []
    for path, name in _references(doc):
        target = _test_file(path)
        if not target.name.startswith("test_"):
            continue  # a source file, not a test
        if not target.exists():
            missing.append(path)
        elif name is not None and not re.search(rf"def {name}\b", target.read_text()):
            missing.append(f"{path}::{name}")
    assert missing == [], f"{doc.name} names tests that do not exist"


# --- every example command in the user docs parses ---------------------------------------

EXAMPLE_DOCS = [ROOT / "README.md", ROOT / "docs" / "cli.md"]
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_OPERATORS = frozenset({"&", "&&", "|", ";", ">", ">>", "<", "2>"})
_INLINE = re.compile(r"`(p2ptransfer [^`]+)`")


def _command_words(shell: str) -> list[str] | None:
    """The arguments after ``p2ptransfer`` in one shell line, or None if it runs something else."""
    if shell.startswith("$ "):
        shell = shell[2:]
    if "_P2PTRANSFER_COMPLETE" in shell:
        return None  # the completion script, not a command
    try:
        words = shlex.split(shell, comments=True)
    except ValueError:
        return None
    while words and _ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    if not words or words[0] != "p2ptransfer":
        return None
    args: list[str] = []
    for word in words[1:]:
        if word in _SHELL_OPERATORS:
            break
        args.append(word)
    return args


def _examples(doc: Path) -> list[tuple[str, list[str]]]:
    """Every ``p2ptransfer ...`` line of a fenced block, and every inline `p2ptransfer ...`."""
    found: list[tuple[str, list[str]]] = []
    fenced = False
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        shells = [line.strip()] if fenced else _INLINE.findall(line)
        for shell in shells:
            words = _command_words(shell)
            if words is not None:
                found.append((f"{doc.name}:{number}", words))
    return found


EXAMPLES = [example for doc in EXAMPLE_DOCS for example in _examples(doc)]


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) > 30


@pytest.mark.parametrize(("where", "argv"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_every_example_command_parses(
    where: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example resolves to a command and parses through click; nothing runs.

    A wrong command or option name, a missing argument or a bad value for a
    typed option fails here, so the docs cannot drift from the code.
    """
    import click

    from p2ptransfer.cli import cli

    monkeypatch.setattr(click.Command, "invoke", lambda self, ctx: None)  # parse only
    try:
        cli.main(args=argv, prog_name="p2ptransfer", standalone_mode=False)
    except click.ClickException as exc:
        pytest.fail(f"{where}: p2ptransfer {shlex.join(argv)}: {exc.format_message()}")
