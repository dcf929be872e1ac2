"""``send``, ``receive``, ``listen`` and ``resend``: the commands that go online.

(The library, rich and asyncio are imported inside the commands, so
``--help`` and the offline commands start without loading websockets.)

Each validates everything it can *before* asking for the passphrase or
opening a connection, so a refused command writes nothing. The peer runtime
does the rest: an outgoing transfer is pending in the ledger before its first
byte leaves, and only a verified receipt completes or rejects it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ...errors import (
    InputError,
    NotFound,
    TransferRefused,
)
from ..app import App, now_ms, pass_app, stdin_is_tty
from ..options import Seconds, output_option, uses_relay
from ..outcomes import refusals, refused, show_outcomes
from . import complete_contact, complete_currency, complete_waiting_id, resolve_recipient

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from ...net.peer import AcceptancePolicy, SendOutcome
    from ...storage.ledger import Ledger, TransferRow
    from ..render import Names

_TIMEOUT = Seconds(min=0.1, max=24 * 3600)
WAITING = ("pending", "queued")  # statuses of an outgoing transfer still without a receipt


def mail_options(command: F) -> F:
    """How ``send`` and ``resend`` may fall back to the recipient's relay mailbox."""
    command = click.option(
        "--online-only",
        is_flag=True,
        help="Never leave it in the mailbox: wait up to --timeout for the recipient.",
    )(command)
    return click.option(
        "--wait",
        type=Seconds(min=0.0, max=3600),
        default=5.0,
        show_default=True,
        help="Seconds to try reaching the recipient directly before leaving the transfer "
        "in their mailbox at the relay (capped by --timeout).",
    )(command)


@click.command(context_settings={"ignore_unknown_options": True})  # "-5" is an amount
@click.argument("recipient", shell_complete=complete_contact)
@click.argument("amount")
@click.argument("currency", shell_complete=complete_currency)
@click.option("--memo", default="", help="A note for the recipient (at most 280 bytes).")
@click.option(
    "--timeout",
    type=_TIMEOUT,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the recipient to come online and answer.",
)
@mail_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@output_option("json")
@pass_app
@uses_relay
def send(
    app: App,
    recipient: str,
    amount: str,
    currency: str,
    memo: str,
    timeout: float,
    wait: float,
    online_only: bool,
    yes: bool,
    output: str,
) -> None:
    """Send AMOUNT of CURRENCY to RECIPIENT (a contact name or an address).

    Tries to reach RECIPIENT directly for --wait seconds; if no session
    completes, the transfer is sealed into their mailbox at the relay and the
    command exits 0 with status `queued` (it completes when they collect it).
    Exits 0 with status `completed` when their signed receipt accepted it.
    With --online-only, or when they cannot be mailed, it waits up to
    --timeout and otherwise leaves the transfer pending: `p2ptransfer resend`
    retries it with the same id, so it can never be applied twice.
    """
    from ...protocol.amounts import check_currency, check_memo, format_amount, parse_amount
    from ..render import Names

    code = check_currency(currency)
    minor = parse_amount(amount, code)
    memo = check_memo(memo)
    own = app.public_identity()
    with app.ledger() as ledger:
        address, label = resolve_recipient(ledger, recipient)
        if address == own.address:
            raise InputError("you cannot send a transfer to yourself")
        contact = ledger.contact_for_address(address)
        unverified = contact is None or not contact.verified
        if not yes and stdin_is_tty():
            app.note(f"send {format_amount(minor, code)} {code} to {label}")
            app.note(f"  address  {address}")
            if memo:
                app.note(f"  memo     {memo}")
            if unverified:
                app.note(
                    "  WARNING: you never compared safety numbers with this recipient "
                    "('p2ptransfer contacts verify NAME')"
                )
            if not click.confirm("send it?", default=False, err=True):
                app.note("not sent; nothing was signed or recorded")
                return
        passphrase = app.read_passphrase()
        # scrypt runs while the network code loads. receive starts its own sooner, so a
        # receiver started at the same moment is more often online and serving first.
        app.start_unlock(passphrase)
        # No question carried the warning: it gets a line of its own, once the key is
        # unlocked and the relay reached, just before the transfer is signed.
        warning = None
        if unverified and (yes or not stdin_is_tty()):
            warning = _unverified_warning(contact.name if contact is not None else None, label)
        prepared: list[bytes] = []  # the transfer's id, once it is pending in the ledger

        async def go() -> SendOutcome | TransferRow:
            peer = await app.open_peer(ledger, passphrase)
            async with peer:
                if warning is not None:
                    app.note(warning)
                signed = peer.prepare(address, minor, code, memo)
                prepared.append(signed.id)
                if online_only:
                    # PeerOffline / SessionTimeout name the transfer that stays pending.
                    (outcome,) = await peer.deliver([signed], timeout=timeout)
                    return outcome
                if not await peer.is_online(address):
                    app.note(
                        f"{label} is not connected: trying for {min(wait, timeout):g} s, then "
                        "leaving the transfer in their mailbox at the relay"
                    )
                (result,) = await peer.deliver_or_queue([signed], wait=wait, timeout=timeout)
                return result

        shown = f"{format_amount(minor, code)} {code}"
        try:
            with app.waiting(f"sending {shown} to {label}, waiting for a receipt…"):
                result = app.run(go())
        except KeyboardInterrupt:
            if prepared and ledger.get_transfer(prepared[0], "out").status in WAITING:
                tid = prepared[0].hex()
                app.note(
                    f"interrupted: transfer {tid} stays pending — 'p2ptransfer resend' "
                    f"delivers it, 'p2ptransfer abandon {tid[:8]}' gives up on it"
                )
            raise
        names = Names(ledger.contacts())
    show_outcomes(app, [result], names, output, single=True)  # rejected ones too: it is data
    for refusal in refusals([result]):
        raise refused(label, refusal)


def _unverified_warning(name: str | None, label: str) -> str:
    """The line every send to an unverified recipient prints when nothing asks first."""
    if name is None:
        return (
            f"warning: {label} is not one of your contacts; you never compared safety "
            "numbers with them"
        )
    return (
        f"warning: you never compared safety numbers with {name} "
        f"('p2ptransfer contacts verify {name}')"
    )


def policy_options(command: F) -> F:
    """What a receiving command accepts: the same flags on ``receive``, ``listen`` and ``sync``.

    Each flag overrides the stored policy (``p2ptransfer policy``) for this run only.
    """
    command = click.option(
        "--currency",
        "currencies",
        multiple=True,
        shell_complete=complete_currency,
        metavar="CODE",
        help="Accept only these currencies (repeatable) [default: the stored policy: any].",
    )(command)
    return click.option(
        "--accept-unknown/--refuse-unknown",
        default=None,
        help="Also accept (or refuse) transfers from people not in contacts "
        "[default: the stored policy: refuse].",
    )(command)


@click.command()
@click.option("--timeout", type=_TIMEOUT, default=60.0, show_default=True, help="Seconds to wait.")
@policy_options
@output_option("json")
@pass_app
@uses_relay
def receive(
    app: App, timeout: float, accept_unknown: bool | None, currencies: tuple[str, ...], output: str
) -> None:
    """Wait for the first incoming transfer, record it, show it, exit."""
    from ..render import Names, echo_json, transfer_json, transfer_line

    app.unlock_early()  # scrypt runs while the ledger and the network code load
    with app.ledger() as ledger:
        policy = acceptance_policy(ledger, accept_unknown, currencies)
        passphrase = app.read_passphrase()
        app.start_unlock(passphrase)  # scrypt runs while the network code loads

        async def go() -> TransferRow:
            peer = await app.open_peer(ledger, passphrase, policy=policy)
            async with peer:
                app.note(f"waiting up to {timeout:g} s for a transfer to {peer.address}")
                return await peer.receive(timeout)

        with app.waiting("waiting for a transfer…"):
            row = app.run(go())
        names = Names(ledger.contacts())
    if output == "json":
        echo_json(transfer_json(row, names))
    else:
        app.say(transfer_line(row, names))


@click.command()
@policy_options
@click.option(
    "--bell", is_flag=True, help="Ring the terminal bell when a transfer or a request arrives."
)
@output_option("json")
@pass_app
@uses_relay
def listen(
    app: App, accept_unknown: bool | None, currencies: tuple[str, ...], bell: bool, output: str
) -> None:
    """Stay online and record incoming transfers until Ctrl-C (or SIGTERM).

    Reconnects by itself when the relay goes away. `--json` prints one JSON
    object per line for each event (connected, disconnected, transfer,
    receipt, request, stranger-refused, ...), as it happens.
    """
    import asyncio
    import signal

    from ...net.peer import Peer
    from ..listen_view import ListenView
    from ..render import Names

    with app.ledger() as ledger:
        policy = acceptance_policy(ledger, accept_unknown, currencies)
        view = ListenView(app, Names(ledger.contacts()), json_lines=output == "json", bell=bell)
        passphrase = app.read_passphrase()

        async def go() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            installed: list[signal.Signals] = []
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, stop.set)
                    installed.append(signum)
            try:
                identity = await app.unlock(passphrase)
                if stop.is_set():
                    return
                async with Peer(
                    identity,
                    ledger,
                    app.relay_url,
                    policy=policy,
                    on_event=view.on_event,
                    prekeys_path=app.home.prekeys_path,
                ) as peer:
                    view.started(identity.address)
                    await peer.listen(stop)
            finally:
                for signum in installed:
                    loop.remove_signal_handler(signum)

        with view.running():
            app.run(go())
    app.note(view.summary())


def acceptance_policy(
    ledger: Ledger, accept_unknown: bool | None, currencies: tuple[str, ...]
) -> AcceptancePolicy:
    """What this receiver accepts: the stored policy, the flags over it, the contact limits."""
    from ...net.peer import AcceptancePolicy
    from ...protocol.amounts import check_currency

    stored_unknown, stored_currencies = ledger.acceptance()
    return AcceptancePolicy(
        accept_unknown=stored_unknown if accept_unknown is None else accept_unknown,
        currencies=(
            frozenset(check_currency(c) for c in currencies) if currencies else stored_currencies
        ),
        limits=ledger.limits(),
    )


def _match_pending(ledger: Ledger, prefix: str | None) -> list[bytes] | None:
    if prefix is None:
        return None
    text = prefix.strip().lower()
    if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
        raise InputError(f"{prefix!r} is not a transfer id (hexadecimal, at least 4 digits)")
    matches: list[bytes] = [s.id for s in ledger.pending_outgoing() if s.id.hex().startswith(text)]
    if not matches:
        raise NotFound(f"no pending outgoing transfer with id {text}")
    if len(matches) > 1:
        raise InputError(f"id {text} matches {len(matches)} pending transfers; give more digits")
    return matches


def _nothing_to_resend(ledger: Ledger, ids: list[bytes] | None) -> str:
    """Why a resend found nothing to do: no pending transfers, or ID is settled already."""
    if not ids:
        return "nothing to resend: no pending outgoing transfers"
    states = []
    for transfer_id in ids:
        row = ledger.get_transfer(transfer_id, "out")
        states.append(f"transfer {transfer_id.hex()} is already {row.status}")
    return "nothing to resend: " + "; ".join(states)


@click.command()
@click.argument("transfer_id", metavar="[ID]", required=False, shell_complete=complete_waiting_id)
@click.option("--timeout", type=_TIMEOUT, default=60.0, show_default=True, help="Seconds to wait.")
@mail_options
@output_option("json")
@pass_app
@uses_relay
def resend(
    app: App,
    transfer_id: str | None,
    timeout: float,
    wait: float,
    online_only: bool,
    output: str,
) -> None:
    """Retry outgoing transfers still waiting (all, or the one with ID or an ID prefix).

    They go out with their original ids and signatures, so a recipient that
    already has one answers with its stored receipt and applies nothing twice.
    One that cannot be delivered within --wait seconds is sealed (again) into
    the recipient's mailbox, replacing what was there: status `queued`.
    """
    from ..render import Names, echo_json

    with app.ledger() as ledger:
        ids = _match_pending(ledger, transfer_id)
        if not ledger.pending_outgoing():
            app.note(_nothing_to_resend(ledger, ids))
            if output == "json":
                echo_json({"transfers": []})
            return
        passphrase = app.read_passphrase()

        async def go() -> list[SendOutcome | TransferRow]:

            peer = await app.open_peer(ledger, passphrase)
            async with peer:
                if online_only:
                    return list(await peer.resend(ids, timeout=timeout))
                return await peer.resend_or_queue(ids, wait=wait, timeout=timeout)

        with app.waiting("resending pending transfers…"):
            outcomes = app.run(go())
        names = Names(ledger.contacts())
        if not outcomes:
            # Settled meanwhile (another resend, a receipt, an abandon): say so, exit 0.
            app.note(_nothing_to_resend(ledger, ids))
    show_outcomes(app, outcomes, names, output)
    rejected = refusals(outcomes)
    if len(rejected) == 1:
        raise refused(names.show(rejected[0].row.counterparty), rejected[0])
    if rejected:
        raise TransferRefused(
            "several", f"{len(rejected)} of {len(outcomes)} resent transfers were rejected"
        )


@click.command()
@click.argument("transfer_id", metavar="[ID]", required=False, shell_complete=complete_waiting_id)
@click.option("--all", "all_", is_flag=True, help="Abandon every pending or queued transfer.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@output_option("json")
@pass_app
def abandon(app: App, transfer_id: str | None, all_: bool, yes: bool, output: str) -> None:
    """Give up on pending outgoing transfer ID (or an ID prefix): it becomes failed.

    Only you can do this; a timeout never does. It is a statement about your
    side only: if the recipient did record the transfer, its signed receipt
    still completes it here whenever it arrives (a resend fetches it). Asks
    for your passphrase: every change to your ledger is signed.
    """
    if (transfer_id is None) == (not all_):
        raise click.UsageError("give either ID or --all (not both)")
    from ..render import Names, echo_json, transfer_json, transfer_line

    with app.ledger() as ledger:
        names = Names(ledger.contacts())
        if all_:
            rows = ledger.waiting_outgoing()
            if not rows:
                app.note("nothing to abandon: no pending outgoing transfers")
                if output == "json":
                    echo_json({"transfers": []})
                return
            question = f"mark these {_count(rows)} as failed?"
            for row in [] if yes else rows:  # what the question is about
                app.note(f"  {transfer_line(row, names)}")
        else:
            assert transfer_id is not None
            settled = _already_abandoned(ledger, transfer_id)
            if settled is not None:
                app.note(f"transfer {settled.id.hex()} is already abandoned")
                if output == "json":
                    echo_json(transfer_json(settled, names))
                return
            (found,) = _match_pending(ledger, transfer_id) or []
            rows = [ledger.get_transfer(found, "out")]
            question = f"mark {_describe(rows[0], names)} as failed?"
        if not yes:
            what = f"transfer {rows[0].id.hex()} stays" if len(rows) == 1 else "they stay"
            if not stdin_is_tty():
                app.note(
                    f"{what} pending; to abandon {'it' if len(rows) == 1 else 'them'}, add --yes"
                )
                return
            if not click.confirm(question, err=True):
                app.note(f"{what} pending")
                return
        # Every change to the journal is signed into the checkpoint: that needs the key.
        ledger.unlock(app.run(app.unlock(app.read_passphrase())))
        done = []
        queued = 0
        for row in rows:
            status = ledger.get_transfer(row.id, "out").status
            if all_ and status not in ("pending", "queued"):
                continue  # settled meanwhile (a receipt, another abandon): leave it as it is
            queued += status == "queued"
            done.append(ledger.mark_failed(row.id, now_ms()))
        if queued:
            where = "the recipient's mailbox" if queued == 1 else "the recipients' mailboxes"
            it = "it" if queued == 1 else f"{queued} of them"
            app.note(
                f"warning: {it} {'is' if queued == 1 else 'are'} still sealed in {where} at the "
                "relay; if they collect it before it expires, it is credited to them and their "
                "receipt completes it here"
            )
    if output == "json":
        if all_:
            echo_json({"transfers": [transfer_json(row, names) for row in done]})
        else:
            echo_json(transfer_json(done[0], names))
    else:
        for row in done:
            app.say(transfer_line(row, names))


def _count(rows: list[TransferRow]) -> str:
    return "1 transfer" if len(rows) == 1 else f"{len(rows)} transfers"


def _describe(row: TransferRow, names: Names) -> str:
    """``12.50 EUR to bob (id 93731a2b…)``: what a confirmation question names."""
    from ...protocol.amounts import format_amount
    from ...protocol.text import escape_for_terminal

    amount = format_amount(row.amount_minor, row.currency)
    who = escape_for_terminal(names.show(row.counterparty))
    return f"{amount} {row.currency} to {who} (id {row.id.hex()[:8]}…)"


def _already_abandoned(ledger: Ledger, prefix: str) -> TransferRow | None:
    """The one outgoing transfer ``prefix`` names if it is failed already (abandoned), else None.

    A second ``abandon`` of the same id is not a mistake worth an error: the
    transfer is where the user wants it.
    """
    text = prefix.strip().lower()
    if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
        return None  # _match_pending says what is wrong with it
    rows = [r for r in ledger.transfers() if r.direction == "out" and r.id.hex().startswith(text)]
    if len(rows) == 1 and rows[0].status == "failed":
        return rows[0]
    return None
