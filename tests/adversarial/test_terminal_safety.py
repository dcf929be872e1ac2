"""Text from others never reaches the terminal raw.

A hostile relay (or peer) chooses bytes that end up in what we print: an
HTTP error body, a websocket close reason, a refusal's detail, a memo, a note.
``ESC[2K ESC[1G`` erases the line and a forged "[completed]" takes its place.
Every such string must come out with its control, bidi and separator
characters written visibly (``\\x1b``), and rich must not interpret markup or
``:emoji:`` codes in it. The relays here are tiny real websocket servers on
127.0.0.1 (an OS-chosen port) that misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from p2ptransfer.cli import cli
from p2ptransfer.cli.app import App
from p2ptransfer.cli.render import Names, json_text, transfer_line, transfers_table
from p2ptransfer.protocol.identity import Identity, PublicIdentity
from p2ptransfer.protocol.relay_wire import (
    Auth,
    AuthOk,
    Challenge,
    Lookup,
    Refused,
    decode_client_frame,
)
from p2ptransfer.storage.home import Home
from p2ptransfer.storage.ledger import Ledger, TransferRow, TransferStatus
from tests.storage.builders import T0, make_transfer

PASSPHRASE = "correct horse battery staple"
FORGED = "\x1b[2K\x1b[1Gout 12.50 EUR to bob [completed]"
SHOWN = "\\x1b[2K\\x1b[1Gout 12.50 EUR to bob [completed]"
BIDI = "refund \u202e001\u202c EUR"
BIDI_SHOWN = "refund \\u202e001\\u202c EUR"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("P2PTRANSFER_HOME", "P2PTRANSFER_RELAY", "FORCE_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("P2PTRANSFER_KDF_LOG_N", "10")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("P2PTRANSFER_PASSPHRASE", PASSPHRASE)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout, result.stderr


def assert_inert(text: str) -> None:
    """Nothing a terminal would act on: no C0 but newline, no DEL, C1, bidi or separators."""
    bad = [
        ch
        for ch in text
        if (ord(ch) < 0x20 and ch != "\n")
        or 0x7F <= ord(ch) <= 0x9F
        or ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
        or ch in "\u2028\u2029"
    ]
    assert bad == [], text


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "alice"
    code, out, err = run("--home", str(path), "init", "--name", "alice")
    assert code == 0, (out, err)
    return path


# --- hostile relays ---------------------------------------------------------------------

Handler = Callable[[ServerConnection], None]


@contextlib.contextmanager
def hostile_relay(
    handler: Handler | None = None,
    process_request: Callable[[ServerConnection, Request], Response | None] | None = None,
) -> Iterator[str]:
    def default(ws: ServerConnection) -> None:
        ws.close()

    server = serve(handler or default, "127.0.0.1", 0, process_request=process_request)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.socket.getsockname()[:2]
        yield f"ws://{host}:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _http_error(connection: ServerConnection, request: Request) -> Response:
    body = FORGED.encode()
    headers = Headers([("Content-Length", str(len(body))), ("Content-Type", "text/plain")])
    return Response(503, "Service Unavailable", headers, body)


def _close_with_forged_reason(ws: ServerConnection) -> None:
    ws.close(4000, FORGED)


def _authenticate(ws: ServerConnection) -> None:
    ws.send(Challenge(secrets.token_bytes(32)).encode())
    auth = decode_client_frame(ws.recv(timeout=10))
    assert isinstance(auth, Auth)
    ws.send(AuthOk(PublicIdentity(auth.public_key).address).encode())


def _refuse_with_forged_detail(ws: ServerConnection) -> None:
    _authenticate(ws)
    lookup = decode_client_frame(ws.recv(timeout=10))
    assert isinstance(lookup, Lookup)
    # Raw bytes: our own Refused type refuses to hold such a detail.
    fields = {"ref": lookup.ref, "request": 0x3A, "reason": "rate-limited"}
    ws.send(Refused.SCHEMA.encode({**fields, "detail": FORGED + " " + BIDI}))
    with contextlib.suppress(Exception):
        ws.recv(timeout=10)


def test_http_error_body_during_connect_is_escaped(home: Path) -> None:
    with hostile_relay(process_request=_http_error) as url:
        code, out, err = run("--home", str(home), "--relay", url, "receive", "--timeout", "5")
    assert (code, out) == (10, "")
    assert err == f"error: cannot reach the relay at {url}: HTTP 503 ({SHOWN})\n"
    assert_inert(err)


def test_websocket_close_reason_is_escaped(home: Path) -> None:
    with hostile_relay(_close_with_forged_reason) as url:
        code, out, err = run("--home", str(home), "--relay", url, "receive", "--timeout", "5")
    assert (code, out) == (10, "")
    assert err == (f"error: the relay at {url} refused authentication (code 4000: {SHOWN})\n")
    assert_inert(err)


def test_relay_refusal_detail_is_escaped(home: Path) -> None:
    with hostile_relay(_refuse_with_forged_detail) as url:
        code, out, err = run(
            "--home", str(home), "--relay", url, "contacts", "add", "bob", "--lookup", "bob"
        )
    assert (code, out) == (10, "")
    # The decoder refuses the frame; what the user reads names the character, inert.
    assert err.startswith("error: ") and "U+001B" in err
    assert_inert(err)


def test_verbose_cause_chain_is_escaped_too(home: Path) -> None:
    with hostile_relay(_close_with_forged_reason) as url:
        code, out, err = run("-v", "--home", str(home), "--relay", url, "receive", "--timeout", "5")
    assert (code, out) == (10, "")
    assert SHOWN in err
    assert_inert(err)


# --- other people's text in our output --------------------------------------------------


def _row(memo: str, reason: str | None = None) -> TransferRow:
    other = Identity(secrets.token_bytes(32))
    return TransferRow(
        id=bytes(16),
        direction="in",
        counterparty=other.address,
        amount_minor=1250,
        currency="EUR",
        memo=memo,
        status=TransferStatus.COMPLETED if reason is None else TransferStatus.REJECTED,
        reason=reason,
        created_at=T0,
        updated_at=T0,
        signed_transfer=b"",
        signed_receipt=None,
        recorded_seq=1,
        updated_seq=1,
    )


def test_transfer_line_escapes_a_memo_from_an_older_ledger() -> None:
    """Memos are checked on the way in; a ledger row from before the rule is shown inert."""
    row = _row(FORGED + BIDI, reason="x\x1b]0;title\x07")
    line = transfer_line(row, Names([]))
    assert f"({SHOWN}{BIDI_SHOWN})" in line
    assert "[rejected: x\\x1b]0;title\\x07]" in line
    assert_inert(line)


def test_tables_escape_memos_and_reasons() -> None:
    console = Console(file=io.StringIO(), width=400, color_system=None, emoji=False)
    rows = [_row(FORGED), _row(BIDI, reason="\x9b2J")]
    console.print(transfers_table(rows, Names([])))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert SHOWN in shown and BIDI_SHOWN in shown and "\\x9b2J" in shown
    assert_inert(shown)


def test_json_output_escapes_what_json_leaves_raw() -> None:
    """json escapes C0 only; DEL, C1, bidi and separators become \\uXXXX, same value."""
    value = {"memo": "del\x7f csi\x9b rlo\u202e ls\u2028 esc\x1b tag\U000e0041 é 🏠"}
    text = json_text(value)
    assert_inert(text)
    assert "\\u007f" in text and "\\u009b" in text and "\\u202e" in text and "\\u2028" in text
    assert "\\udb40\\udc41" in text and "é 🏠" in text
    assert json.loads(text) == value


def test_memo_markup_and_emoji_codes_print_literally(home: Path, tmp_path: Path) -> None:
    memo = "[red]x[/red] :smile: [bold]"
    me = Home(home).load_identity(PASSPHRASE)
    signed = make_transfer(me, Identity(secrets.token_bytes(32)), memo=memo)
    with Ledger.open(Home(home).ledger_path) as ledger:
        ledger.record_outgoing(signed, T0)
    code, out, err = run("--home", str(home), "abandon", signed.id.hex(), "--yes")
    assert code == 0, err
    assert f"({memo}) [failed]" in out
    code, out, err = run("--home", str(home), "ledger")
    assert code == 0, err
    assert memo in out


def test_contact_note_markup_and_emoji_codes_print_literally(home: Path) -> None:
    other = Identity(secrets.token_bytes(32))
    note = ":smile: [red]not red[/red] :thumbs_up:"
    code, _, err = run("--home", str(home), "contacts", "add", "bob", other.address, "--note", note)
    assert code == 0, err
    code, out, err = run("--home", str(home), "contacts", "show", "bob")
    assert code == 0, err
    assert f"note          {note}\n" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_a_memo_emoji_code_prints_literally_on_both_output_paths(
    terminal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped, a line is written without rich; on a terminal, through a console with emoji off."""
    out, err = (_Terminal(), _Terminal()) if terminal else (io.StringIO(), io.StringIO())
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    app = App(home=None, relay_url="ws://127.0.0.1:1")
    app.say("memo :smile: [red]x[/red]")
    app.note("note :thumbs_up:")
    assert out.getvalue() == "memo :smile: [red]x[/red]\n"
    assert err.getvalue() == "note :thumbs_up:\n"
    if terminal:  # a console's own print (tables, lines) turns no code into an emoji either
        app.out.print(":smile:")
        assert out.getvalue().endswith(":smile:\n")
