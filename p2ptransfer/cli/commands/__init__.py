"""The command families; each module has ``register_commands(group)``."""

from __future__ import annotations

import unicodedata

import click
from click.shell_completion import CompletionItem

from ...errors import InputError
from ...storage.home import Home, default_home_path
from ...storage.ledger import Ledger

MAX_NAME_CHARS = 64


def check_name(name: str, what: str = "a name") -> str:
    """A display name: 1-64 characters, none of them control or invisible.

    Names are shown in terminals next to amounts, so the characters that can
    rewrite a line or reorder text are refused, as in memos.
    """
    stripped = name.strip()
    if not stripped:
        raise InputError(f"{what} cannot be empty")
    if len(stripped) > MAX_NAME_CHARS:
        raise InputError(f"{what} has {len(stripped)} characters; at most {MAX_NAME_CHARS}")
    for ch in stripped:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise InputError(
                f"{what} contains the character U+{ord(ch):04X}: "
                "control and invisible characters are not allowed"
            )
    return unicodedata.normalize("NFC", stripped)


def complete_contact(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of contact names from the ledger (silently nothing on any problem)."""
    root = ctx.find_root()
    home_dir = root.params.get("home_dir")
    home = Home(home_dir) if home_dir else Home(default_home_path())
    if not home.ledger_path.exists():
        return []
    try:
        with Ledger.open(home.ledger_path) as ledger:
            names = [c.name for c in ledger.contacts()]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]
