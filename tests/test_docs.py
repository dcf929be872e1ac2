"""The documents' proof columns point at tests that exist.

docs/guarantees.md and docs/threat-model.md map every promise to the test
that holds it; a renamed or deleted test must not leave a promise pointing at
nothing.
"""

from __future__ import annotations

import re
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
