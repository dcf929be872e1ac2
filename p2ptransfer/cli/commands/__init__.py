"""The command families, one module each; ``main.COMMANDS`` says where each command is.

A module is imported for ``CMD --help`` too, so at the top it imports only
click, :mod:`p2ptransfer.errors` and the light CLI modules (:mod:`..app`,
:mod:`..options`); the library (protocol, storage, net) and :mod:`..render`
(rich) are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import click

from ...errors import NotFound

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from ...storage.ledger import Ledger


def check_name(name: str, what: str = "a name") -> str:
    """A display name: the home's rule (:func:`p2ptransfer.storage.home.check_display_name`).

    Names are shown in terminals next to amounts, so the characters that can
    rewrite a line, reorder text or hide in it are refused, as in memos.
    """
    from ...storage.home import check_display_name

    return check_display_name(name, what)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean 'bob'?`` for a near miss of ``word`` among ``choices``, else None.

    A difference of case alone wins (``Bob`` for ``bob``); then up to three
    close spellings, most alike first (``sned`` for ``send``).
    """
    import difflib

    names = sorted(set(choices))
    found = [name for name in names if name.casefold() == word.casefold() and name != word]
    if not found:
        found = difflib.get_close_matches(word, names, n=3)
    if not found:
        return None
    quoted = [repr(name) for name in found]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"did you mean {listed}?"


@contextlib.contextmanager
def _readable_ledger(ctx: click.Context) -> Iterator[Ledger | None]:
    """The ledger of the home ``--home`` names, for shell completion: None if there is none.

    Completion never asks for a passphrase and never goes online: the
    ledger's rows and contacts are readable without the key.
    """
    from ...storage.home import Home, default_home_path
    from ...storage.ledger import Ledger
    from ..options import global_option_given

    home_dir = global_option_given(ctx, "home_dir")
    home = Home(home_dir) if home_dir else Home(default_home_path())
    if not home.ledger_path.exists():
        yield None
        return
    try:
        ledger = Ledger.open(home.ledger_path)
    except Exception:  # completion must never print a traceback into the shell
        yield None
        return
    try:
        yield ledger
    finally:
        ledger.close()


def complete_contact(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of contact names from the ledger (silently nothing on any problem)."""
    from click.shell_completion import CompletionItem

    try:
        with _readable_ledger(ctx) as ledger:
            names = [] if ledger is None else [c.name for c in ledger.contacts()]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def complete_currency(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of ISO 4217 codes, the table transfers are checked against."""
    from click.shell_completion import CompletionItem

    from ...protocol.currencies import CURRENCY_EXPONENTS, CURRENCY_NAMES

    start = incomplete.upper()
    return [
        CompletionItem(code, help=CURRENCY_NAMES.get(code))
        for code in sorted(CURRENCY_EXPONENTS)
        if code.startswith(start)
    ]


def complete_waiting_id(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of the ids of outgoing transfers still waiting (pending or queued)."""
    from click.shell_completion import CompletionItem

    from ...protocol.amounts import format_amount

    try:
        with _readable_ledger(ctx) as ledger:
            rows = [] if ledger is None else ledger.waiting_outgoing()
            names = {} if ledger is None else {c.address: c.name for c in ledger.contacts()}
    except Exception:  # completion must never print a traceback into the shell
        return []
    start = incomplete.lower()
    return [
        CompletionItem(
            row.id.hex(),
            help=f"{format_amount(row.amount_minor, row.currency)} {row.currency} to "
            f"{names.get(row.counterparty, row.counterparty[:12])} [{row.status}]",
        )
        for row in rows
        if row.id.hex().startswith(start)
    ]


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
    hint = did_you_mean(text, (contact.name for contact in ledger.contacts()))
    if hint is not None:
        raise NotFound(f"no contact named {text!r}; {hint}")
    raise NotFound(f"no contact named {text!r}; give a contact name or an address (p2pt1…)")
