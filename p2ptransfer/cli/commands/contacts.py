"""``contacts add|list|show|verify|remove|limit``: the people you pin, and how you check them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ...errors import InputError
from ..app import App, now_ms, pass_app, stdin_is_tty
from ..options import output_option
from . import complete_contact, complete_currency

if TYPE_CHECKING:
    from ...storage.ledger import Contact


@click.group()
def contacts() -> None:
    """Add, list, check and remove the people you transfer with."""


def _lookup(app: App, handle: str) -> str:
    passphrase = app.read_passphrase()

    from ...net.relay_client import RelayClient

    async def lookup() -> str:
        client = await RelayClient.connect(app.relay_url, app.unlock(passphrase))
        try:
            return await client.lookup_handle(handle)
        finally:
            await client.close()

    with app.waiting(f"looking up {handle} at {app.relay_url}…"):
        return app.run(lookup())


@contacts.command("add")
@click.argument("name")
@click.argument("address", required=False)
@click.option("--lookup", "handle", metavar="HANDLE", help="Ask the relay's directory instead.")
@click.option("--note", default="", help="A private note kept with the contact.")
@pass_app
def add(app: App, name: str, address: str | None, handle: str | None, note: str) -> None:
    """Pin NAME to ADDRESS (or to the address the relay has for --lookup HANDLE).

    A looked-up address is trusted on first use only: compare safety numbers
    with `p2ptransfer contacts verify NAME`.
    """
    if (address is None) == (handle is None):
        raise click.UsageError("give either ADDRESS or --lookup HANDLE (not both)")
    relay = app.relay_url if handle is not None else ""  # checked before any passphrase
    from ...protocol.identity import PublicIdentity
    from ...storage.ledger import check_contact_name

    name = check_contact_name(name)
    if handle is not None:
        check_contact_name(handle, "handle")
    own = app.public_identity()
    if address is not None:
        public = PublicIdentity.from_address(address)
    else:
        assert handle is not None
        public = PublicIdentity.from_address(_lookup(app, handle))
    if public == own:
        raise InputError("that is your own address; a contact is somebody else")
    with app.ledger() as ledger:
        ledger.add_contact(name, public.address, note=note, at=now_ms(), handle=handle)
    source = f" (handle {handle} at {relay})" if handle else ""
    app.say(f"added {name}{source}: {public.address}")
    app.say(f"fingerprint  {public.fingerprint}")
    app.note(f"compare safety numbers with {name}: p2ptransfer contacts verify {name}")


@contacts.command("list")
@output_option("json")
@pass_app
def list_(app: App, output: str) -> None:
    """List your contacts."""
    from ..render import contact_json, contacts_table, echo_json

    with app.ledger() as ledger:
        rows = ledger.contacts()
    if output == "json":
        echo_json({"contacts": [contact_json(c) for c in rows]})
    elif rows:
        app.out.print(contacts_table(rows))
    else:
        app.note("no contacts yet; add one with: p2ptransfer contacts add NAME ADDRESS")


def _safety(app: App, contact: Contact) -> str:
    from ...protocol.identity import PublicIdentity, safety_number

    return safety_number(app.public_identity(), PublicIdentity.from_address(contact.address))


@contacts.command("show")
@click.argument("name", shell_complete=complete_contact)
@output_option("json")
@pass_app
def show(app: App, name: str, output: str) -> None:
    """Show one contact, with the safety number to compare."""
    from ...protocol.amounts import format_amount
    from ..render import contact_json, echo_json, iso_time

    with app.ledger() as ledger:
        contact = ledger.get_contact(name)
        limits = {
            code: format_amount(minor, code)
            for code, minor in _limits_of(ledger.limits(), contact.address).items()
        }
    number = _safety(app, contact)
    if output == "json":
        echo_json({**contact_json(contact), "safety_number": number, "limits": limits})
        return
    data = contact_json(contact)
    for key in ("name", "address", "fingerprint"):
        app.say(f"{key:<14}{data[key]}")
    verified = iso_time(contact.verified_at) if contact.verified_at is not None else "no"
    app.say(f"{'verified':<14}{verified}")
    app.say(f"{'added':<14}{data['added_at']}")
    if contact.note:
        app.say(f"{'note':<14}{contact.note}")
    app.say(f"{'safety number':<14}{number}")
    shown = ", ".join(f"{amount} {code}" for code, amount in limits.items())
    app.say(f"{'limits':<14}{shown + ' per transfer' if shown else 'none'}")


@contacts.command("verify")
@click.argument("name", shell_complete=complete_contact)
@click.option("--yes", "-y", is_flag=True, help="Mark verified without asking (numbers matched).")
@pass_app
def verify(app: App, name: str, yes: bool) -> None:
    """Print the safety number to compare aloud with NAME, and mark NAME verified.

    NAME runs `p2ptransfer contacts verify YOU` and reads the number; if both
    read the same thirty digits, nobody swapped keys between you.
    """
    with app.ledger() as ledger:
        contact = ledger.get_contact(name)
        number = _safety(app, contact)
        app.say(f"safety number with {contact.name}:")
        app.say(f"  {number}")
        if not yes:
            if not stdin_is_tty():
                app.note("not marked verified; after comparing, run again with --yes")
                return
            if not click.confirm(f"Does {contact.name} read the same number?", err=True):
                app.note(f"{contact.name} stays unverified; do not trust a mismatching key")
                return
        ledger.mark_verified(contact.name, at=now_ms())
    app.note(f"{contact.name} is marked verified")


@contacts.command("remove")
@click.argument("name", shell_complete=complete_contact)
@pass_app
def remove(app: App, name: str) -> None:
    """Forget NAME's pin (the ledger keeps every past transfer)."""
    with app.ledger() as ledger:
        ledger.remove_contact(name)
    app.note(f"removed {name}")


@contacts.command("limit")
@click.argument("name", shell_complete=complete_contact)
@click.argument("currency", shell_complete=complete_currency)
@click.argument("amount", required=False)
@click.option("--clear", is_flag=True, help="Remove the limit on CURRENCY from NAME.")
@pass_app
def limit(app: App, name: str, currency: str, amount: str | None, clear: bool) -> None:
    """Show, set (AMOUNT) or remove (--clear) NAME's per-transfer limit in CURRENCY.

    Larger transfers are answered with a signed rejection (over_limit) by
    `receive` and `listen`, and recorded as rejected on both sides. Without
    AMOUNT or --clear nothing changes: typing the short form to look a limit
    up must never remove it.
    """
    if clear and amount is not None:
        raise click.UsageError("give either AMOUNT or --clear (not both)")
    from ...protocol.amounts import check_currency, format_amount, parse_amount

    code = check_currency(currency)
    minor = None if amount is None else parse_amount(amount, code)
    with app.ledger() as ledger:
        if clear or minor is not None:
            ledger.set_limit(name, code, minor)
            shown = minor
        else:
            shown = _limits_of(ledger.limits(), ledger.get_contact(name).address).get(code)
    if shown is None:
        (app.note if clear else app.say)(f"no limit on {code} from {name}")
    else:
        text = f"{name} may send at most {format_amount(shown, code)} {code} per transfer"
        (app.say if amount is None else app.note)(text)


def _limits_of(limits: dict[tuple[str, str], int], address: str) -> dict[str, int]:
    """One contact's limits, currency -> max minor units, in currency order."""
    return {
        currency: max_minor
        for (owner, currency), max_minor in sorted(limits.items())
        if owner == address
    }
