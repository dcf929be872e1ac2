"""Where the passphrase comes from, and what happens when it is wrong or weak."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import PASSPHRASE, Invoke, Person
from tests.cli.terminal import child_env, converse

ASK = "Passphrase: "


def _reset(alice: Person, *steps: tuple[str, str]) -> tuple[int, str]:
    """``ledger verify --reset-checkpoint`` at a terminal: a local command that unlocks the key."""
    done = converse(
        [*alice.args("ledger", "verify", "--reset-checkpoint")], child_env(), list(steps)
    )
    return done.returncode, done.stderr


def test_a_mistyped_passphrase_is_asked_again_at_a_terminal(alice: Person) -> None:
    code, err = _reset(alice, (ASK, "wrong one"), (ASK, "wrong two"), (ASK, PASSPHRASE))
    assert code == 0, err
    assert err.startswith(
        "Passphrase: \n"
        "wrong passphrase, try again (2 left)\n"
        "Passphrase: \n"
        "wrong passphrase, try again (1 left)\n"
        "Passphrase: \n"
        "signed a new checkpoint at entry "
    ), err


def test_three_wrong_passphrases_end_the_command(alice: Person) -> None:
    code, err = _reset(alice, (ASK, "one"), (ASK, "two"), (ASK, "three"))
    assert code == 4
    assert err == (
        "Passphrase: \n"
        "wrong passphrase, try again (2 left)\n"
        "Passphrase: \n"
        "wrong passphrase, try again (1 left)\n"
        "Passphrase: \n"
        "error: wrong passphrase for this key file\n"
    )


def test_a_passphrase_from_the_environment_or_a_file_is_never_retried(
    alice: Person, invoke: Invoke, tmp_path: Path
) -> None:
    from_env = invoke(*alice.args("ledger", "verify", "--reset-checkpoint"), passphrase="nope")
    assert (from_env.code, from_env.err) == (4, "error: wrong passphrase for this key file\n")
    secret = tmp_path / "secret"
    secret.write_text("nope\n")
    secret.chmod(0o600)
    args = ("--passphrase-file", str(secret), "ledger", "verify", "--reset-checkpoint")
    from_file = invoke(*alice.args(*args), passphrase=None)
    assert (from_file.code, from_file.err) == (4, "error: wrong passphrase for this key file\n")


def test_a_passphrase_file_others_can_read_is_warned_about_once(
    invoke: Invoke, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o644)
    home = tmp_path / "home"
    run = invoke(
        "--home", str(home), "--passphrase-file", str(secret), "init", "--name", "al",
        passphrase=None,
    )  # fmt: skip
    assert run.code == 0, run
    warning = (
        f"warning: passphrase file {secret} is accessible by other users (mode 0644); "
        f"run 'chmod 600 {secret}'\n"
    )
    assert run.err.startswith(warning) and run.err.count("warning:") == 1, run

    secret.chmod(0o600)
    quiet = invoke(
        "--home", str(home), "--passphrase-file", str(secret),
        "ledger", "verify", "--reset-checkpoint", passphrase=None,
    )  # fmt: skip
    assert quiet.code == 0, quiet
    assert "warning" not in quiet.err, quiet


SHORT_WARNING = (
    "warning: this passphrase is short (5 characters); 12 or more are much harder to guess "
    "if your key file is ever copied\n"
)


def test_init_warns_about_a_short_passphrase_from_a_script(invoke: Invoke, tmp_path: Path) -> None:
    run = invoke("--home", str(tmp_path / "h"), "init", "--name", "al", passphrase="short")
    assert run.code == 0, run
    assert run.err.startswith(SHORT_WARNING), run


def test_init_at_a_terminal_asks_before_using_a_short_passphrase(tmp_path: Path) -> None:
    home = tmp_path / "h"
    again = "Repeat for confirmation: "
    done = converse(
        ["--home", str(home), "init", "--name", "al"],
        child_env(),
        [(ASK, "short"), (again, "short"), ("[y/N]:", "n"), (ASK, "short"), (again, "short"),
         ("[y/N]:", "y")],
    )  # fmt: skip
    assert done.returncode == 0, done
    assert done.stderr.startswith(
        f"Passphrase: \nRepeat for confirmation: \n{SHORT_WARNING}use it anyway? [y/N]: "
        f"Passphrase: \nRepeat for confirmation: \n{SHORT_WARNING}use it anyway? [y/N]: "
        f"created a new identity in {home}\n"
    ), done


def _verify_with(person: Person, invoke: Invoke, passphrase: str) -> int:
    return invoke(
        *person.args("ledger", "verify", "--reset-checkpoint"), passphrase=passphrase
    ).code


def test_passwd_from_a_script_keeps_the_identity(
    alice: Person, invoke: Invoke, tmp_path: Path
) -> None:
    new = tmp_path / "new"
    new.write_text("a much longer new passphrase\n")
    new.chmod(0o600)
    run = invoke(*alice.args("passwd", "--new-passphrase-file", str(new)))
    assert run.code == 0, run
    key = alice.home / "identity.key"
    assert run.out == f"changed the passphrase of {key}\n"
    assert run.err == f"your address is unchanged: {alice.address}\n"
    assert invoke(*alice.args("whoami", "--json")).json()["address"] == alice.address
    assert (key.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in alice.home.iterdir() if p.name.startswith(".")) == []
    assert _verify_with(alice, invoke, PASSPHRASE) == 4
    assert _verify_with(alice, invoke, "a much longer new passphrase") == 0


def test_passwd_with_a_wrong_old_passphrase_changes_nothing(
    alice: Person, invoke: Invoke, tmp_path: Path
) -> None:
    new = tmp_path / "new"
    new.write_text("a much longer new passphrase\n")
    new.chmod(0o600)
    key = alice.home / "identity.key"
    before = key.read_bytes()
    run = invoke(*alice.args("passwd", "--new-passphrase-file", str(new)), passphrase="nope")
    assert (run.code, run.out, run.err) == (4, "", "error: wrong passphrase for this key file\n")
    assert key.read_bytes() == before
    no_source = invoke(*alice.args("passwd"))
    assert (no_source.code, no_source.err) == (
        4,
        "error: no new passphrase available: pass --new-passphrase-file FILE, "
        "or run the command on a terminal\n",
    )
    assert key.read_bytes() == before


def test_passwd_at_a_terminal(alice: Person, invoke: Invoke) -> None:
    new = "another long passphrase"
    done = converse(
        [*alice.args("passwd")],
        child_env(),
        [(ASK, PASSPHRASE), ("New passphrase: ", new), ("Repeat for confirmation: ", new)],
    )
    assert done.returncode == 0, done
    assert done.stderr == (
        "Passphrase: \nNew passphrase: \nRepeat for confirmation: \n"
        f"your address is unchanged: {alice.address}\n"
    )
    assert _verify_with(alice, invoke, new) == 0
