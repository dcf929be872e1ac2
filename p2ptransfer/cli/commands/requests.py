"""``request`` (ask a contact for money), ``requests`` (list, decline, cancel), ``pay``."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import click

from ...errors import InputError, NetworkError, NotFound
from ..app import App, now_ms, pass_app, stdin_is_tty
from ..options import Seconds, output_option, uses_relay
from ..outcomes import refusals, refused, show_outcomes
from . import complete_contact, complete_currency, resolve_recipient

if TYPE_CHECKING:
    from ...net.outgoing import SendOutcome
    from ...protocol.request import PaymentRequest, SignedRequest
    from ...storage.ledger import Ledger, TransferRow
    from ...storage.requests import RequestRow
    from ..render import Names

_WAIT = Seconds(min=0.0, max=3600)


def request_json(row: RequestRow, names: Names, now: int) -> dict[str, Any]:
    """One request in the shape ``requests --json`` promises."""
    from ..render import iso_time

    return {
        "id": row.id.hex(),
        "direction": row.direction,
        "counterparty": row.counterparty,
        "counterparty_name": names.get(row.counterparty),
        "amount": row.amount,
        "currency": row.currency,
        "memo": row.memo,
        "state": row.state_at(now).value,
        "created_at": iso_time(row.created_at),
        "expires_at": iso_time(row.expires_at),
        "paid_by": row.paid_by.hex() if row.paid_by is not None else None,
    }


def request_line(row: RequestRow, names: Names, now: int) -> str:
    from ..render import format_time

    who = names.show(row.counterparty)
    verb = f"you asked {who} for" if row.direction == "out" else f"{who} asks you for"
    memo = f" ({row.memo})" if row.memo else ""
    return (
        f"{verb} {row.amount} {row.currency}{memo} [{row.state_at(now).value}] "
        f"expires {format_time(row.expires_at)} id {row.id.hex()}"
    )


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.argument("amount")
@click.argument("currency", shell_complete=complete_currency)
@click.option("--memo", default="", help="What it is for (at most 280 bytes).")
@click.option(
    "--expires", default="24h", show_default=True, metavar="DURATION",
    help="How long it can be paid: N followed by s, m, h or d (90s, 15m, 24h, 7d).",
)  # fmt: skip
@click.option("--wait", type=_WAIT, default=5.0, show_default=True,
              help="Seconds to try handing it over directly before using the mailbox.")  # fmt: skip
@output_option("json")
@pass_app
@uses_relay
def request(
    app: App, contact: str, amount: str, currency: str, memo: str, expires: str, wait: float,
    output: str,
) -> None:  # fmt: skip
    """Ask CONTACT to pay you AMOUNT of CURRENCY: a signed, single-use, expiring request.

    It is handed to them directly or left in their mailbox at the relay, and
    printed as a text code (p2ptreq1...) you can send any other way. They
    pay it with `p2ptransfer pay`; your ledger marks it paid when the
    payment is recorded, once.
    """
    from ...protocol.amounts import check_currency, check_memo, parse_amount
    from ...protocol.request import PaymentRequest, parse_expiry, request_code, sign_request
    from ..render import Names, echo_json

    code = check_currency(currency)
    minor = parse_amount(amount, code)
    memo = check_memo(memo)
    lifetime = parse_expiry(expires)
    own = app.public_identity()
    with app.ledger() as ledger:
        payer, label = resolve_recipient(ledger, contact)
        if ledger.contact_for_address(payer) is None:
            raise InputError(f"{label} is not one of your contacts: add them first")
        if payer == own.address:
            raise InputError("you cannot ask yourself for money")
        passphrase = app.read_passphrase()

        async def go() -> tuple[SignedRequest, str]:

            peer = await app.open_peer(ledger, passphrase)
            async with peer:
                created = now_ms()
                signed = sign_request(
                    peer.identity,
                    PaymentRequest(
                        id=secrets.token_bytes(16),
                        payee=own.address,
                        payer=payer,
                        amount=minor,
                        currency=code,
                        memo=memo,
                        created_at=created,
                        expires_at=created + lifetime,
                    ),
                )
                ledger.record_request(signed, created)
                try:
                    delivery = await peer.send_request(signed, wait=wait)
                except NetworkError as exc:  # kept here; the code still works on any channel
                    app.note(f"{label} could not be reached or mailed ({exc}); send the code")
                    delivery = "code-only"
                return signed, delivery

        with app.waiting(f"asking {label}…"):
            signed, delivery = app.run(go())
        row = ledger.get_request(signed.request.id, "out")
        names = Names(ledger.contacts())
    text = request_code(signed)
    if output == "json":
        echo_json({**request_json(row, names, now_ms()), "code": text, "delivery": delivery})
        return
    app.say(request_line(row, names, now_ms()))
    app.say(text)
    where = {"delivered": "handed over", "queued": "left in their mailbox", "code-only": "not sent"}
    app.note(f"request {where[delivery]}; they pay it with: p2ptransfer pay {row.id.hex()[:12]}")


@click.group(invoke_without_command=True)
@output_option("json")
@click.pass_context
def requests(ctx: click.Context, output: str) -> None:
    """List payment requests, yours and to you, with their state."""
    if ctx.invoked_subcommand is not None:
        return
    from ..render import Names, echo_json

    app = ctx.ensure_object(App)
    with app.ledger() as ledger:
        rows = ledger.requests(now_ms())
        names = Names(ledger.contacts())
    now = now_ms()
    if output == "json":
        echo_json({"requests": [request_json(row, names, now) for row in rows]})
    elif not rows:
        app.note("no payment requests")
    else:
        for row in rows:
            app.say(request_line(row, names, now))


def _find(ledger: Ledger, prefix: str, direction: str | None = None) -> RequestRow:
    text = prefix.strip().lower()
    if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
        raise InputError(f"{prefix!r} is not a request id (at least 4 hex digits)")
    matches = [r for r in ledger.requests(now_ms()) if r.id.hex().startswith(text)]
    if direction is not None:
        matches = [r for r in matches if r.direction == direction]
    if not matches:
        raise NotFound(f"no payment request {text}; 'p2ptransfer requests' lists them")
    if len(matches) > 1:
        raise InputError(f"id {text} matches {len(matches)} requests; give more digits")
    return matches[0]


def _answer(app: App, prefix: str, direction: str, wait: float, output: str) -> None:
    from ...protocol.request import RequestAnswerKind, sign_answer
    from ..render import Names, echo_json

    kind = RequestAnswerKind.DECLINED if direction == "in" else RequestAnswerKind.CANCELLED
    with app.ledger() as ledger:
        row = _find(ledger, prefix, direction)
        passphrase = app.read_passphrase()

        async def go() -> str:

            peer = await app.open_peer(ledger, passphrase)
            async with peer:
                answer = sign_answer(peer.identity, row.signed, kind, now_ms())
                ledger.answer_request(answer, now_ms())
                try:
                    return await peer.send_request_answer(answer, row.counterparty, wait=wait)
                except NetworkError as exc:
                    app.note(f"recorded here, but not delivered: {exc}")
                    return "not-sent"

        delivery = app.run(go())
        row = ledger.get_request(row.id, direction)
        names = Names(ledger.contacts())
    if output == "json":
        echo_json({**request_json(row, names, now_ms()), "delivery": delivery})
    else:
        app.say(request_line(row, names, now_ms()))


@requests.command("decline")
@click.argument("request_id", metavar="ID")
@click.option("--wait", type=_WAIT, default=5.0, show_default=True)
@output_option("json")
@click.pass_obj
@uses_relay
def decline(app: App, request_id: str, wait: float, output: str) -> None:
    """Refuse a request someone sent you; they are told (signed)."""
    _answer(app, request_id, "in", wait, output)


@requests.command("cancel")
@click.argument("request_id", metavar="ID")
@click.option("--wait", type=_WAIT, default=5.0, show_default=True)
@output_option("json")
@click.pass_obj
@uses_relay
def cancel(app: App, request_id: str, wait: float, output: str) -> None:
    """Withdraw a request you sent; the payer is told (signed)."""
    _answer(app, request_id, "out", wait, output)


@click.command()
@click.argument("request_text", metavar="REQUEST")
@click.option("--yes", is_flag=True, help="Pay without asking (needed when not on a terminal).")
@click.option("--accept-unknown", is_flag=True, help="Pay a payee who is not a contact.")
@click.option(
    "--wait",
    type=_WAIT,
    default=5.0,
    show_default=True,
    help="Seconds to try reaching the payee directly before using their mailbox.",
)
@click.option(
    "--timeout",
    type=Seconds(min=0.1, max=24 * 3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait when the payee cannot be mailed.",
)
@output_option("json")
@pass_app
@uses_relay
def pay(
    app: App, request_text: str, yes: bool, accept_unknown: bool, wait: float, timeout: float,
    output: str,
) -> None:  # fmt: skip
    """Pay REQUEST (an id from `p2ptransfer requests`, or a pasted p2ptreq1... code).

    Shows who is paid, how much and for what, and asks before signing; the
    payment is an ordinary transfer that names the request, so it can be
    paid once only.
    """
    from ...protocol.request import RequestState, parse_request_code
    from ..render import Names, format_time

    own = app.public_identity()
    if not yes and not stdin_is_tty():
        raise click.UsageError("not on a terminal: add --yes to pay without being asked")
    with app.ledger() as ledger:
        text = request_text.strip()
        if text.lower().startswith("p2ptreq"):
            signed = parse_request_code(text)
        else:
            signed = _find(ledger, text, "in").signed
        req = signed.request
        if req.payer != own.address:
            raise InputError("this request asks someone else to pay; it is not yours to pay")
        contact = ledger.contact_for_address(req.payee)
        if contact is None and not accept_unknown:
            raise InputError(
                f"the payee {req.payee} is not one of your contacts; add them (and compare "
                "safety numbers) first, or pass --accept-unknown"
            )
        if req.id in ledger.paid_request_ids():
            raise InputError(f"request {req.id.hex()} is already paid from this ledger")
        now = now_ms()
        known = _known(ledger, req.id)
        state = known.state_at(now) if known is not None else RequestState.OPEN
        if now >= req.expires_at:
            state = RequestState.EXPIRED
        if state is not RequestState.OPEN:
            raise InputError(f"request {req.id.hex()} is {state.value}: it cannot be paid")
        who = contact.name if contact is not None else req.payee
        verified = contact is not None and contact.verified
        summary = [
            f"pay {_amount(req)} {req.currency} to {who}",
            f"  address  {req.payee}",
            f"  memo     {req.memo or '(none)'}",
            f"  expires  {format_time(req.expires_at)} UTC",
        ]
        if not verified:
            summary.append(
                "  WARNING: you never compared safety numbers with this payee "
                "('p2ptransfer contacts verify NAME')"
            )
        for line in summary:
            app.note(line)
        if not yes and not click.confirm("pay it?", default=False, err=True):
            app.note("not paid; nothing was signed or recorded")
            return
        passphrase = app.read_passphrase()

        async def go() -> SendOutcome | TransferRow:

            peer = await app.open_peer(ledger, passphrase)
            async with peer:
                if known is None:
                    ledger.record_request(signed, now_ms())
                transfer = peer.prepare(
                    req.payee, req.amount, req.currency, req.memo, request_id=req.id
                )
                (result,) = await peer.deliver_or_queue([transfer], wait=wait, timeout=timeout)
                return result

        with app.waiting(f"paying {who}…"):
            result = app.run(go())
        names = Names(ledger.contacts())
    show_outcomes(app, [result], names, output, single=True)
    for refusal in refusals([result]):
        raise refused(names.show(req.payee), refusal)


def _known(ledger: Ledger, request_id: bytes) -> RequestRow | None:
    try:
        return ledger.get_request(request_id, "in")
    except NotFound:
        return None


def _amount(req: PaymentRequest) -> str:
    from ...protocol.amounts import format_amount

    return format_amount(req.amount, req.currency)
