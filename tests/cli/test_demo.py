"""``p2ptransfer demo``: the tour runs in-process, says what happened, and cleans up."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from p2ptransfer.demo import ALICE_TO_BOB, BOB_TO_ALICE, run_demo
from p2ptransfer.net.peer import SendOutcome
from p2ptransfer.protocol.receipt import RejectReason
from p2ptransfer.storage.ledger import Contact, Ledger, TransferRow

from .conftest import Invoke

pytestmark = pytest.mark.timeout(90)


class Report:
    """Collects what the tour reports."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.outcomes: list[tuple[str, str, SendOutcome]] = []
        self.ledgers: dict[str, tuple[list[TransferRow], dict[tuple[str, str], int]]] = {}

    def step(self, text: str) -> None:
        self.steps.append(text)

    def sent(self, sender: str, recipient: str, outcome: SendOutcome) -> None:
        self.outcomes.append((sender, recipient, outcome))

    def ledger(
        self,
        owner: str,
        rows: Sequence[TransferRow],
        balances: dict[tuple[str, str], int],
        contacts: Sequence[Contact],
    ) -> None:
        self.ledgers[owner] = (list(rows), balances)


async def test_run_demo_reports_every_transfer_and_cleans_up() -> None:
    report = Report()
    result = await run_demo(report)
    assert result.workdir is not None and not result.workdir.exists()
    outcomes = [(s, r, o.accepted) for s, r, o in report.outcomes]
    assert len(outcomes) == len(ALICE_TO_BOB) + len(BOB_TO_ALICE)
    assert [accepted for _, _, accepted in outcomes] == [True, True, False, True]
    rejected = report.outcomes[2][2]
    assert rejected.receipt.receipt.reason is RejectReason.OVER_LIMIT
    alice_rows, alice_balances = report.ledgers["alice"]
    bob_rows, bob_balances = report.ledgers["bob"]
    assert len(alice_rows) == len(bob_rows) == 4
    bob = result.addresses["bob"]
    alice = result.addresses["alice"]
    assert alice_balances == {(bob, "EUR"): -750, (bob, "JPY"): -3000}
    assert bob_balances == {(alice, "EUR"): 750, (alice, "JPY"): 3000}
    assert result.verified["alice"] > 0 and result.verified["bob"] > 0


async def test_run_demo_can_keep_its_homes(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    keep.mkdir()
    result = await run_demo(Report(), keep_dir=keep)
    with Ledger.open(keep / "bob" / "ledger.sqlite3") as ledger:
        assert ledger.verify() == result.verified["bob"]
    assert (keep / "alice" / "identity.key").exists()


def test_demo_command(invoke: Invoke, tmp_path: Path) -> None:
    run = invoke("demo", passphrase=None, env={"COLUMNS": "120"})
    assert run.code == 0, run
    assert "alice → bob" in run.out
    assert "accepted" in run.out
    assert "rejected: The amount is above the limit the recipient accepts." in run.out
    assert "alice's ledger verified" in run.out and "bob's ledger verified" in run.out
    assert "Removed" in run.out


def test_demo_keep_says_how_to_use_the_kept_homes(invoke: Invoke, tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    run = invoke("demo", "--keep", str(keep), passphrase=None, env={"COLUMNS": "120"})
    assert run.code == 0, run
    tail = run.out.splitlines()[-5:]
    assert tail == [
        f"Kept both homes in {keep}. Look inside with, for example:",
        f"  P2PTRANSFER_HOME={keep / 'alice'} p2ptransfer ledger",
        f"  P2PTRANSFER_HOME={keep / 'bob'} p2ptransfer ledger verify",
        f"  p2ptransfer --home {keep / 'alice'} contacts list",
        "Their keys are locked with random passphrases that were not kept: the homes can be "
        "read and verified, not used to send.",
    ]
    for line in tail[1:3]:  # the commands it prints work as printed
        assignment, _, args = line.strip().partition(" p2ptransfer ")
        home = assignment.removeprefix("P2PTRANSFER_HOME=")
        used = invoke(*args.split(), passphrase=None, env={"P2PTRANSFER_HOME": home})
        assert used.code == 0, used
    listed = invoke("--home", str(keep / "alice"), "contacts", "list", "--json", passphrase=None)
    assert [c["name"] for c in listed.json()["contacts"]] == ["bob"]
