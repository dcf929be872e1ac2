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
