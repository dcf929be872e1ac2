"""The command families, one module each; ``main.COMMANDS`` says where each command is.

A module is imported for ``CMD --help`` too, so at the top it imports only
click, :mod:`p2ptransfer.errors` and the light CLI modules (:mod:`..app`,
:mod:`..options`); the library (protocol, storage, net) and :mod:`..render`
(rich) are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import unicodedata
from typing import TYPE_CHECKING

import click

from ...errors import InputError, NotFound

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

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
    from click.shell_completion import CompletionItem

    from ...storage.home import Home, default_home_path
    from ...storage.ledger import Ledger

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


def resolve_recipient(ledger: Ledger, text: str) -> tuple[str, str]:
    """(address, label) for a contact name or an address; a name wins if both could match."""
    from ...protocol.identity import PublicIdentity
    from ..render import short_address

    with contextlib.suppress(NotFound):
        contact = ledger.get_contact(text)
        return contact.address, contact.name
    if text.strip().lower().startswith("p2pt1"):
        public = PublicIdentity.from_address(text)
        known = ledger.contact_for_address(public.address)
        return public.address, known.name if known is not None else short_address(public.address)
    raise NotFound(f"no contact named {text!r}; give a contact name or an address (p2pt1…)")
