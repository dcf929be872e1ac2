"""CliRunner tests of the commands that need no relay: identity, contacts, ledger, errors."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from p2ptransfer.cli import app as app_module
from p2ptransfer.cli import cli
from p2ptransfer.protocol.identity import Identity, PublicIdentity, safety_number
from p2ptransfer.protocol.transfer import Transfer, TransferId, sign_transfer
from p2ptransfer.storage.home import Home
from p2ptransfer.storage.ledger import Ledger

from .conftest import PASSPHRASE, Invoke, Person, snapshot

OTHER = "p2pt1qj36m2lca6chp0dkdyeym9797xjjzdmzdy8dt2f5xunve30ped5wsd4f3g2"


# --- global behaviour ---------------------------------------------------------------


def test_version(invoke: Invoke) -> None:
    run = invoke("--version")
    assert run.code == 0
    assert run.out == "p2ptransfer, version 0.1.0\n"


def test_help_lists_every_command(invoke: Invoke) -> None:
    run = invoke("--help")
    assert run.code == 0
    for command in (
        "init", "whoami", "contacts", "register", "send", "receive",
        "listen", "resend", "ledger", "demo",
    ):  # fmt: skip
        assert f"  {command} " in run.out


def test_unknown_command_is_a_usage_error(invoke: Invoke) -> None:
    run = invoke("sned")
    assert run.code == 2
    assert "No such command 'sned'" in run.err


def test_home_from_environment(invoke: Invoke, tmp_path: Path) -> None:
    home = tmp_path / "env-home"
    run = invoke("init", "--name", "erin", env={"P2PTRANSFER_HOME": str(home)})
    assert run.code == 0, run
    assert (home / "identity.key").exists()


def test_default_home_is_the_user_data_dir(invoke: Invoke, tmp_path: Path) -> None:
    run = invoke("init", "--name", "dora")
    assert run.code == 0, run
    assert (tmp_path / "xdg" / "p2ptransfer" / "identity.key").exists()


# --- init and whoami ------------------------------------------------------------------


def test_init_creates_private_home(invoke: Invoke, tmp_path: Path) -> None:
    home = tmp_path / "alice"
    run = invoke("--home", str(home), "init", "--name", "alice")
    assert run.code == 0, run
    lines = run.out.splitlines()
    assert lines[0] == "name         alice"
    assert lines[1].startswith("address      p2pt1")
    assert lines[2].startswith("fingerprint  ")
    assert f"created a new identity in {home}" in run.err
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("identity.key", "profile.json", "ledger.sqlite3"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    assert Home(home).load_identity(PASSPHRASE).address == lines[1].split()[1]


def test_init_refuses_to_overwrite(invoke: Invoke, alice: Person) -> None:
    before = snapshot(alice.home)
    run = invoke(*alice.args("init", "--name", "mallory"))
    assert run.code == 9
    assert (
        run.err == f"error: an identity already exists in {alice.home}; refusing to overwrite it\n"
    )
    assert snapshot(alice.home) == before


def test_init_without_passphrase_source_writes_nothing(invoke: Invoke, tmp_path: Path) -> None:
    home = tmp_path / "nobody"
    run = invoke("--home", str(home), "init", passphrase=None)
    assert run.code == 4
    assert run.err == (
        "error: no passphrase available: set P2PTRANSFER_PASSPHRASE, pass --passphrase-file "
        "FILE, or run the command on a terminal\n"
    )
    assert not home.exists()


def test_init_with_passphrase_file(invoke: Invoke, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("from a file\n")
    home = tmp_path / "filey"
    run = invoke("--home", str(home), "--passphrase-file", str(secret), "init", passphrase=None)
    assert run.code == 0, run
    assert Home(home).load_identity("from a file").address  # trailing newline not included


def test_environment_passphrase_wins_over_file(invoke: Invoke, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("from a file")
    home = tmp_path / "envy"
    run = invoke("--home", str(home), "--passphrase-file", str(secret), "init")
    assert run.code == 0, run
    assert "P2PTRANSFER_PASSPHRASE is set: it is used and --passphrase-file is ignored" in run.err
    Home(home).load_identity(PASSPHRASE)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "error: cannot read passphrase file {path}: No such file or directory\n"),
        (b"", "error: passphrase file {path} is empty\n"),
        (b"\xff\xfe", "error: passphrase file {path} is not UTF-8 text\n"),
    ],
    ids=["missing", "empty", "not-utf8"],
)
def test_bad_passphrase_file(
    invoke: Invoke, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_bytes(content)
    home = tmp_path / "h"
    run = invoke("--home", str(home), "--passphrase-file", str(path), "init", passphrase=None)
    assert run.code == 4
    assert run.err == message.format(path=path)
    assert not home.exists()


def test_init_prompts_twice_on_a_terminal(
    invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "stdin_is_tty", lambda: True)
    home = tmp_path / "tty"
    typed = "typed at the terminal"
    run = invoke("--home", str(home), "init", passphrase=None, input=f"{typed}\n{typed}\n")
    assert run.code == 0, run
    assert "Passphrase:" in run.err
    assert "Repeat for confirmation:" in run.err
    assert "typed" not in run.out + run.err
    Home(home).load_identity(typed)


def test_init_rejects_bad_kdf_setting_before_prompting(invoke: Invoke, tmp_path: Path) -> None:
    home = tmp_path / "kdf"
    run = invoke("--home", str(home), "init", env={"P2PTRANSFER_KDF_LOG_N": "fast"})
    assert run.code == 9
    assert run.err.startswith("error: P2PTRANSFER_KDF_LOG_N='fast' is not a valid scrypt")
    assert not home.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "error: the name cannot be empty\n"),
        (
            "a\x1bb",
            "error: the name contains a forbidden character U+001B (control character) at "
            "position 2: control, invisible and text-direction characters are not allowed\n",
        ),
        (
            "a\u200db",
            "error: the name contains a forbidden character U+200D (ZERO WIDTH JOINER) at "
            "position 2: control, invisible and text-direction characters are not allowed\n",
        ),
        (
            "\u3164",
            "error: the name contains a forbidden character U+3164 (HANGUL FILLER) at "
            "position 1: characters that show as blank space are not allowed\n",
        ),
        (
            "z" + "\u0300" * 5,
            "error: the name has more than 4 combining marks in a row at position 6\n",
        ),
        ("x" * 65, "error: the name is 65 characters; at most 64 are allowed\n"),
    ],
    ids=["empty", "escape", "zero-width-joiner", "filler", "zalgo", "too-long"],
)
def test_init_rejects_bad_names(invoke: Invoke, tmp_path: Path, name: str, message: str) -> None:
    home = tmp_path / "n"
    run = invoke("--home", str(home), "init", "--name", name)
    assert run.code == 3
    assert run.err == message
    assert not home.exists()


def test_whoami(invoke: Invoke, alice: Person) -> None:
    run = invoke(*alice.args("whoami"), passphrase=None)
    assert run.code == 0
    assert run.out == (
        f"name         alice\naddress      {alice.address}\nfingerprint  {alice.fingerprint}\n"
    )
    data = invoke(*alice.args("whoami", "--json"), passphrase=None).json()
    assert data == {"name": "alice", "address": alice.address, "fingerprint": alice.fingerprint}
    assert PublicIdentity.from_address(alice.address).fingerprint == alice.fingerprint


def test_whoami_without_identity(invoke: Invoke, tmp_path: Path) -> None:
    home = tmp_path / "none"
    run = invoke("--home", str(home), "whoami")
    assert run.code == 9
    assert run.err == f"error: no identity in {home}; run 'p2ptransfer init' first\n"
    assert not home.exists()


# --- contacts --------------------------------------------------------------------------


def test_contacts_lifecycle(invoke: Invoke, alice: Person, bob: Person) -> None:
    run = invoke(*alice.args("contacts", "add", "bob", bob.address, "--note", "flatmate"))
    assert run.code == 0, run
    assert run.out == f"added bob: {bob.address}\nfingerprint  {bob.fingerprint}\n"
    assert "p2ptransfer contacts verify bob" in run.err

    listed = invoke(*alice.args("contacts", "list", "--json")).json()
    assert isinstance(listed, dict)
    (entry,) = listed["contacts"]
    assert entry["name"] == "bob"
    assert entry["address"] == bob.address
    assert entry["fingerprint"] == bob.fingerprint
    assert entry["verified"] is False
    assert entry["verified_at"] is None
    assert entry["note"] == "flatmate"

    table = invoke(*alice.args("contacts", "list"))
    assert "bob" in table.out and bob.fingerprint in table.out

    number = safety_number(
        PublicIdentity.from_address(alice.address), PublicIdentity.from_address(bob.address)
    )
    shown = invoke(*alice.args("contacts", "show", "bob"))
    assert f"safety number {number}" in shown.out
    assert "verified      no" in shown.out

    unverified = invoke(*alice.args("contacts", "verify", "bob"))
    assert unverified.code == 0
    assert unverified.out == f"safety number with bob:\n  {number}\n"
    assert "not marked verified" in unverified.err

    verified = invoke(*alice.args("contacts", "verify", "bob", "--yes"))
    assert verified.code == 0
    assert verified.err == "bob is marked verified\n"
    assert invoke(*alice.args("contacts", "show", "bob", "--json")).json()["verified"] is True

    removed = invoke(*alice.args("contacts", "remove", "bob"))
    assert removed.code == 0
    assert invoke(*alice.args("contacts", "list", "--json")).json() == {"contacts": []}


def test_bob_computes_the_same_safety_number(invoke: Invoke, alice: Person, bob: Person) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    invoke(*bob.args("contacts", "add", "alice", alice.address))
    a = invoke(*alice.args("contacts", "show", "bob", "--json")).json()
    b = invoke(*bob.args("contacts", "show", "alice", "--json")).json()
    assert a["safety_number"] == b["safety_number"]


@pytest.mark.parametrize(("answer", "verified"), [("y\n", True), ("n\n", False)], ids=["yes", "no"])
def test_contacts_verify_asks_on_a_terminal(
    invoke: Invoke,
    alice: Person,
    bob: Person,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    verified: bool,
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    monkeypatch.setattr(app_module, "stdin_is_tty", lambda: True)
    monkeypatch.setattr("p2ptransfer.cli.commands.contacts.stdin_is_tty", lambda: True)
    run = invoke(*alice.args("contacts", "verify", "bob"), input=answer)
    assert run.code == 0
    assert "Does bob read the same number?" in run.err
    data = invoke(*alice.args("contacts", "show", "bob", "--json")).json()
    assert data["verified"] is verified


def test_contacts_list_empty(invoke: Invoke, alice: Person) -> None:
    run = invoke(*alice.args("contacts", "list"))
    assert run.code == 0
    assert run.out == ""
    assert "no contacts yet" in run.err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("add", "bob", "p2pt1qxyz"), 3, "error: an address has 64 characters, this one has 9\n"),
        (("add", "bob", OTHER[:-1] + "q"), 3,
         "error: address checksum does not match: character 'q' at position 64 is probably "
         "mistyped\n"),
        (("add", "bad name", OTHER), 3, "error: invalid contact name 'bad name': use 1 to 64 "
         "ASCII letters, digits, '.', '_' or '-'\n"),
        (("add", "bob"), 2, "Error: give either ADDRESS or --lookup HANDLE (not both)"),
        (("add", "bob", OTHER, "--lookup", "bob"), 2,
         "Error: give either ADDRESS or --lookup HANDLE (not both)"),
        (("show", "zed"), 9, "error: no contact named 'zed'; 'p2ptransfer contacts list' shows "
         "your contacts\n"),
        (("verify", "zed"), 9, "error: no contact named 'zed'"),
        (("remove", "zed"), 9, "error: no contact named 'zed'"),
    ],
    ids=["short-address", "bad-checksum", "bad-name", "neither", "both", "show-unknown",
         "verify-unknown", "remove-unknown"],
)  # fmt: skip
def test_contacts_errors_write_nothing(
    invoke: Invoke, alice: Person, args: tuple[str, ...], code: int, message: str
) -> None:
    before = snapshot(alice.home)
    run = invoke(*alice.args("contacts", *args))
    assert run.code == code, run
    assert message in run.err
    assert snapshot(alice.home) == before


def test_contact_cannot_be_yourself(invoke: Invoke, alice: Person) -> None:
    before = snapshot(alice.home)
    run = invoke(*alice.args("contacts", "add", "me", alice.address))
    assert run.code == 3
    assert run.err == "error: that is your own address; a contact is somebody else\n"
    assert snapshot(alice.home) == before


def test_contact_name_and_address_are_unique(invoke: Invoke, alice: Person, bob: Person) -> None:
    assert invoke(*alice.args("contacts", "add", "bob", bob.address)).code == 0
    before = snapshot(alice.home)
    again = invoke(*alice.args("contacts", "add", "bob", OTHER))
    assert again.code == 9
    assert again.err.startswith("error: contact 'bob' already exists and is pinned to")
    alias = invoke(*alice.args("contacts", "add", "robert", bob.address))
    assert alias.code == 9
    assert alias.err == "error: this address is already saved as contact 'bob'\n"
    assert snapshot(alice.home) == before


# --- ledger ----------------------------------------------------------------------------


def test_empty_ledger(invoke: Invoke, alice: Person) -> None:
    assert invoke(*alice.args("ledger", "--json")).json() == {"transfers": [], "balances": []}
    csv_run = invoke(*alice.args("ledger", "--csv"))
    assert csv_run.out.splitlines() == [
        "id,direction,counterparty,amount,currency,memo,status,reason,created_at,updated_at,"
        "counterparty_name,request_id"
    ]
    text = invoke(*alice.args("ledger"))
    assert text.code == 0
    assert text.out == ""
    assert text.err == "no transfers yet\n"
    verify = invoke(*alice.args("ledger", "verify"))
    assert verify.code == 0
    assert verify.out == (
        "ledger OK: 1 journal entry, hash chain, signatures, owner and checkpoint verified\n"
    )


def _pending_transfer(person: Person, recipient: str, amount: int, memo: str) -> bytes:
    """Write one pending outgoing transfer through the library, as `send` would."""
    identity = Home(person.home).load_identity(PASSPHRASE)
    transfer = Transfer(
        id=TransferId(bytes([amount % 256]) * 16),
        sender=identity.address,
        recipient=recipient,
        amount=amount,
        currency="EUR",
        memo=memo,
        created_at=1_790_000_000_000 + amount,
    )
    with Ledger.open(person.home / "ledger.sqlite3", owner=identity) as ledger:
        ledger.record_outgoing(sign_transfer(identity, transfer), at=1_790_000_000_500)
    return transfer.id


def test_ledger_shows_pending_transfers(invoke: Invoke, alice: Person, bob: Person) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    tid = _pending_transfer(alice, bob.address, 1250, "lunch [bold]x[/bold]")
    data = invoke(*alice.args("ledger", "--json")).json()
    assert data == {
        "transfers": [
            {
                "id": tid.hex(),
                "direction": "out",
                "counterparty": bob.address,
                "counterparty_name": "bob",
                "amount": "12.50",
                "amount_minor": 1250,
                "currency": "EUR",
                "memo": "lunch [bold]x[/bold]",
                "status": "pending",
                "reason": None,
                "created_at": "2026-09-21T14:13:21.250Z",
                "updated_at": "2026-09-21T14:13:20.500Z",
                "request_id": None,
            }
        ],
        "balances": [  # nothing completed yet, but something pending
            {
                "counterparty": bob.address,
                "counterparty_name": "bob",
                "currency": "EUR",
                "balance": "0.00",
                "balance_minor": 0,
                "pending": "-12.50",
                "pending_minor": -1250,
            }
        ],
    }
    text = invoke(*alice.args("ledger"), env={"COLUMNS": "160"})
    assert "lunch [bold]x[/bold]" in text.out  # memo shown literally, never as markup
    # Into a pipe: one tab-separated line, the pending amount signed like a completed one.
    assert text.out.splitlines()[-1].split("\t")[1:] == [
        "out", "bob", "-12.50 EUR", "pending", tid.hex(), "lunch [bold]x[/bold]"
    ]  # fmt: skip
    filtered = invoke(*alice.args("ledger", "--contact", "bob", "--json")).json()
    assert len(filtered["transfers"]) == 1
    csv_lines = invoke(*alice.args("ledger", "--csv")).out.splitlines()
    assert csv_lines[1].startswith(f"{tid.hex()},out,{bob.address},12.50,EUR,")


def test_ledger_unknown_contact(invoke: Invoke, alice: Person) -> None:
    run = invoke(*alice.args("ledger", "--contact", "zed"))
    assert run.code == 9
    assert run.err.startswith("error: no contact named 'zed'")


def test_ledger_verify_names_the_first_bad_entry(invoke: Invoke, alice: Person) -> None:
    _pending_transfer(alice, OTHER, 100, "one")
    _pending_transfer(alice, OTHER, 200, "two")
    # Entry 1 is the ledger's owner, written by init.
    assert invoke(*alice.args("ledger", "verify")).out.startswith("ledger OK: 3 journal entries")
    with sqlite3.connect(alice.home / "ledger.sqlite3") as conn:
        conn.execute("DROP TRIGGER journal_no_update")
        conn.execute("UPDATE journal SET at = at + 1 WHERE seq = 3")
    conn.close()
    run = invoke(*alice.args("ledger", "verify"))
    assert run.code == 9
    assert run.err == ("error: journal entry 3 was altered: its hash does not match its content\n")
    verbose = invoke(*alice.args("-v", "ledger", "verify"))
    assert verbose.err.splitlines()[1] == "  (LedgerIntegrityError, exit code 9)"


# --- send/resend refusals that never reach the network ------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("bob", "1.234", "EUR"), 3, "error: invalid amount '1.234': EUR has 2 decimal places, "
         "this amount has 3\n"),
        (("bob", "-5", "EUR"), 3, "error: invalid amount '-5': negative amounts are not "
         "accepted (amounts are always positive)\n"),
        (("bob", "0", "EUR"), 3,
         "error: invalid amount '0': the amount must be greater than zero\n"),
        (("bob", "1", "XXX"), 3, "error: XXX has no minor unit (precious metal, fund or test "
         "code) and cannot be transferred\n"),
        (("bob", "1", "EURO"), 3,
         "error: a currency code is three letters (ISO 4217), not 'EURO'\n"),
        (("bob", "1", "EUR", "--memo", "a\nb"), 3, "error: memo contains a forbidden character "
         "U+000A"),
        (("carol", "1", "EUR"), 9, "error: no contact named 'carol'; give a contact name or an "
         "address (p2pt1…)\n"),
        (("p2pt1qqq", "1", "EUR"), 3, "error: an address has 64 characters, this one has 8\n"),
        (("bob", "1", "EUR", "--timeout", "0"), 2, "Invalid value for '--timeout'"),
    ],
    ids=["too-many-decimals", "negative", "zero", "no-minor-unit", "bad-currency", "memo-newline",
         "unknown-contact", "bad-address", "zero-timeout"],
)  # fmt: skip
def test_send_refusals_write_nothing(
    invoke: Invoke, alice: Person, bob: Person, args: tuple[str, ...], code: int, message: str
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    before = snapshot(alice.home)
    run = invoke(*alice.args("send", *args), passphrase=None)
    assert run.code == code, run
    assert message in run.err
    assert snapshot(alice.home) == before


def test_send_to_yourself(invoke: Invoke, alice: Person) -> None:
    before = snapshot(alice.home)
    run = invoke(*alice.args("send", alice.address, "1", "EUR"))
    assert run.code == 3
    assert run.err == "error: you cannot send a transfer to yourself\n"
    assert snapshot(alice.home) == before


def test_send_without_passphrase(invoke: Invoke, alice: Person, bob: Person) -> None:
    before = snapshot(alice.home)
    run = invoke(*alice.args("send", bob.address, "1", "EUR"), passphrase=None)
    assert run.code == 4
    assert run.err.startswith("error: no passphrase available")
    assert snapshot(alice.home) == before


def test_send_without_identity(invoke: Invoke, tmp_path: Path) -> None:
    run = invoke("--home", str(tmp_path / "x"), "send", OTHER, "1", "EUR")
    assert run.code == 9
    assert "run 'p2ptransfer init' first" in run.err
    assert not (tmp_path / "x").exists()


def test_resend_with_nothing_pending(invoke: Invoke, alice: Person) -> None:
    run = invoke(*alice.args("resend"), passphrase=None)
    assert run.code == 0
    assert run.err == "nothing to resend: no pending outgoing transfers\n"


@pytest.mark.parametrize(
    ("tid", "code", "message"),
    [
        ("xyz", 3, "error: 'xyz' is not a transfer id (hexadecimal, at least 4 digits)\n"),
        ("abcdef", 9, "error: no pending outgoing transfer with id abcdef\n"),
    ],
    ids=["not-hex", "unknown"],
)
def test_resend_bad_ids(invoke: Invoke, alice: Person, tid: str, code: int, message: str) -> None:
    run = invoke(*alice.args("resend", tid), passphrase=None)
    assert run.code == code
    assert run.err == message


# --- the dispatch point ---------------------------------------------------------------


def test_unexpected_error_is_short_without_verbose(
    invoke: Invoke, alice: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Home) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Home, "public_identity", boom)
    run = invoke(*alice.args("whoami"))
    assert run.code == 70
    assert run.err == (
        "error: unexpected RuntimeError: boom\n"
        "this is a bug in p2ptransfer; run with -v for details\n"
    )
    # With -v the traceback is the point, so this run bypasses invoke()'s no-traceback check.
    result = CliRunner().invoke(cli, [*alice.args("-v", "whoami")])
    assert result.exit_code == 70
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: boom" in result.stderr


def test_keyboard_interrupt_exits_130_quietly(
    invoke: Invoke, alice: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: Home) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Home, "public_identity", interrupted)
    run = invoke(*alice.args("whoami"))
    assert run.code == 130
    assert run.err == ""


def test_verbose_shows_the_cause_chain(invoke: Invoke, tmp_path: Path) -> None:
    home = tmp_path / "h"
    missing = tmp_path / "missing"
    run = invoke(
        "-v", "--home", str(home), "--passphrase-file", str(missing), "init", passphrase=None
    )
    assert run.code == 4
    assert run.err.splitlines() == [
        f"error: cannot read passphrase file {missing}: No such file or directory",
        "  (PassphraseUnavailable, exit code 4)",
        f"  caused by FileNotFoundError: [Errno 2] No such file or directory: '{missing}'",
    ]


def test_shell_completion_offers_contact_names(
    alice: Person, bob: Person, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    monkeypatch.setenv("COMP_WORDS", f"p2ptransfer --home {alice.home} send b")
    monkeypatch.setenv("COMP_CWORD", "4")
    result = CliRunner().invoke(
        cli, [], prog_name="p2ptransfer", env={"_P2PTRANSFER_COMPLETE": "bash_complete"}
    )
    assert result.exit_code == 0
    assert result.stdout == "plain,bob\n"


def test_global_json_flag(invoke: Invoke, alice: Person) -> None:
    assert invoke("--json", *alice.args("whoami")).json()["name"] == "alice"
    assert invoke("--json", *alice.args("ledger")).json() == {"transfers": [], "balances": []}
    assert invoke("--json", *alice.args("contacts", "list")).json() == {"contacts": []}
    csv_run = invoke("--json", *alice.args("ledger", "--csv"))  # an explicit format wins
    assert csv_run.out.startswith("id,direction,")


def test_abandon_marks_a_pending_transfer_failed_and_resend_skips_it(
    invoke: Invoke, alice: Person, bob: Person
) -> None:
    from p2ptransfer.net.peer import Peer
    from p2ptransfer.storage.ledger import Ledger

    home = Home(alice.home)
    with Ledger.open(home.ledger_path) as ledger:
        signed = Peer(home.load_identity(PASSPHRASE), ledger, "ws://unused").prepare(
            bob.address, 300, "EUR", "never delivered"
        )
    prefix = signed.id.hex()[:8]
    kept = invoke(*alice.args("abandon", prefix))  # no terminal, no --yes: nothing changes
    assert kept.code == 0 and "stays pending; to abandon it, add --yes" in kept.err
    with Ledger.open(home.ledger_path) as ledger:
        assert [s.id for s in ledger.pending_outgoing()] == [signed.id]
    done = invoke(*alice.args("abandon", prefix, "--yes", "--json"))
    assert done.code == 0, done
    assert (done.json()["id"], done.json()["status"]) == (signed.id.hex(), "failed")
    again = invoke(*alice.args("abandon", prefix, "--yes"))
    assert again.code == 0
    assert again.err == f"transfer {signed.id.hex()} is already abandoned\n"
    assert invoke(*alice.args("resend")).err == "nothing to resend: no pending outgoing transfers\n"
    assert "Traceback" not in done.out + done.err + again.err


def test_contact_limit_is_stored_validated_and_removable(
    invoke: Invoke, alice: Person, bob: Person
) -> None:
    from p2ptransfer.storage.ledger import Ledger

    invoke(*alice.args("contacts", "add", "bob", bob.address))
    done = invoke(*alice.args("contacts", "limit", "bob", "eur", "100.00"))
    assert done.code == 0 and done.err == "bob may send at most 100.00 EUR per transfer\n"
    bad = invoke(*alice.args("contacts", "limit", "bob", "EUR", "1.001"))
    assert bad.code == 3 and bad.err.startswith("error: invalid amount '1.001'")
    unknown = invoke(*alice.args("contacts", "limit", "carol", "EUR", "5"))
    assert unknown.code == 9 and "no contact named 'carol'" in unknown.err
    with Ledger.open(Home(alice.home).ledger_path) as ledger:
        assert ledger.limits() == {(bob.address, "EUR"): 10_000}
    assert invoke(*alice.args("contacts", "limit", "bob", "EUR", "--clear")).code == 0
    with Ledger.open(Home(alice.home).ledger_path) as ledger:
        assert ledger.limits() == {}


def test_pending_lists_what_waits_for_a_receipt(invoke: Invoke, alice: Person, bob: Person) -> None:
    nothing = invoke(*alice.args("pending"))
    assert (nothing.code, nothing.out) == (0, "")
    assert nothing.err == "nothing pending: every outgoing transfer has its receipt\n"
    first = _pending_transfer(alice, bob.address, 300, "one")
    second = _pending_transfer(alice, bob.address, 450, "two")
    text = invoke(*alice.args("pending"), env={"COLUMNS": "200"})
    assert text.code == 0
    lines = text.out.splitlines()
    assert [line.split(" id ")[1].split()[0] for line in lines] == [first.hex(), second.hex()]
    assert all(line.startswith("out ") and " old)" in line for line in lines)
    listed = invoke(*alice.args("pending", "--json")).json()["transfers"]
    assert [(t["id"], t["status"], t["amount"]) for t in listed] == [
        (first.hex(), "pending", "3.00"),
        (second.hex(), "pending", "4.50"),
    ]
    assert all(isinstance(t["age_s"], float) and t["age_s"] >= 0 for t in listed)


def test_the_stored_policy_is_shown_set_and_overridden(invoke: Invoke, alice: Person) -> None:
    shown = invoke(*alice.args("policy"))
    assert shown.code == 0
    assert shown.out == "from strangers: refused (kept aside, not recorded)\ncurrencies: any\n"
    changed = invoke(*alice.args("policy", "--accept-unknown", "--currency", "eur", "--json"))
    assert changed.json() == {"accept_unknown": True, "currencies": ["EUR"]}
    assert invoke(*alice.args("policy", "--json")).json() == changed.json()
    back = invoke(*alice.args("policy", "--refuse-unknown", "--any-currency", "--json"))
    assert back.json() == {"accept_unknown": False, "currencies": None}
    bad = invoke(*alice.args("policy", "--currency", "XYZ"))
    assert bad.code == 3 and "XYZ" in bad.err
    clash = invoke(*alice.args("policy", "--currency", "EUR", "--any-currency"))
    assert clash.code == 2 and "contradict" in clash.err
    assert invoke(*alice.args("policy", "--json")).json() == back.json()  # nothing changed


def test_receiving_commands_use_the_stored_policy_unless_told_otherwise(
    alice: Person,
) -> None:
    from p2ptransfer.cli.commands.transfers import acceptance_policy

    identity = Home(alice.home).load_identity(PASSPHRASE)
    with Ledger.open(alice.home / "ledger.sqlite3", owner=identity) as ledger:
        ledger.set_acceptance(True, ["USD"])
        stored = acceptance_policy(ledger, None, ())
        assert (stored.accept_unknown, stored.currencies) == (True, frozenset({"USD"}))
        flagged = acceptance_policy(ledger, False, ("EUR",))
        assert (flagged.accept_unknown, flagged.currencies) == (False, frozenset({"EUR"}))


def _code_from(payee: Identity, payer: str, amount: int = 1250) -> str:
    from p2ptransfer.clock import now_ms
    from p2ptransfer.protocol.request import PaymentRequest, request_code, sign_request

    created = now_ms()
    return request_code(
        sign_request(
            payee,
            PaymentRequest(
                id=bytes(16),
                payee=payee.address,
                payer=payer,
                amount=amount,
                currency="EUR",
                memo="",
                created_at=created,
                expires_at=created + 86_400_000,
            ),
        )
    )


def test_pay_refuses_before_signing_anything(invoke: Invoke, alice: Person, bob: Person) -> None:
    """Unpinned payee, someone else's request, a tampered code: refused, nothing written."""
    from p2ptransfer.protocol import bech32m

    bob_key = Home(bob.home).load_identity(PASSPHRASE)
    before = snapshot(alice.home)
    unknown = invoke(*alice.args("pay", _code_from(bob_key, alice.address), "--yes"))
    assert unknown.code == 3
    assert "is not one of your contacts" in unknown.err and "--accept-unknown" in unknown.err
    assert snapshot(alice.home) == before
    invoke(*alice.args("contacts", "add", "bob", bob.address))
    before = snapshot(alice.home)
    carol = Identity(bytes(range(32)))
    not_mine = invoke(*alice.args("pay", _code_from(bob_key, carol.address), "--yes"))
    assert not_mine.code == 3 and "not yours to pay" in not_mine.err
    # A code whose amount was changed after signing: the signature no longer holds.
    code = _code_from(bob_key, alice.address)
    words = bech32m.decode(code, "p2ptreq", max_length=None)
    tampered = bech32m.encode("p2ptreq", [*words[:40], words[40] ^ 1, *words[41:]], max_length=None)
    forged = invoke(*alice.args("pay", tampered, "--yes"))
    assert forged.code == 3, forged.err
    assert snapshot(alice.home) == before
