"""Two people, two homes, real processes: the relay from rendezvous.py and the CLI.

Every wait is bounded: processes have timeouts, background output is read by
threads into queues, and every started process is terminated at the end.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from tests.storage.builders import restore, snapshot

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "two peers, one relay"
START_TIMEOUT = 20.0
STEP_TIMEOUT = 60.0


class Background:
    """A process whose stdout and stderr lines are collected by threads."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: dict[str, list[str]] = {"out": [], "err": []}
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=("out", self.proc.stdout), daemon=True),
            threading.Thread(target=self._pump, args=("err", self.proc.stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put((name, line.rstrip("\n")))
        stream.close()

    def _drain(self, block_for: float) -> None:
        try:
            name, line = self._queue.get(timeout=block_for)
        except queue.Empty:
            return
        self.lines[name].append(line)
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                return
            self.lines[name].append(line)

    def wait_for(self, pattern: str, stream: str = "err", timeout: float = START_TIMEOUT) -> str:
        """The first line of ``stream`` matching ``pattern``, waiting at most ``timeout`` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[stream]:
                if regex.search(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self._queue.empty()):
                self._drain(0.2)
                raise AssertionError(f"no line matching {pattern!r} in {self.lines}")
            self._drain(min(left, 0.2))

    def finish(self, timeout: float = STEP_TIMEOUT) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        self._drain(0)
        return code

    @property
    def out(self) -> str:
        return "\n".join(self.lines["out"])

    @property
    def err(self) -> str:
        return "\n".join(self.lines["err"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PTRANSFER_")}
    env.update(
        P2PTRANSFER_KDF_LOG_N="10",
        P2PTRANSFER_PASSPHRASE=PASSPHRASE,
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        COLUMNS="200",
    )
    env.pop("FORCE_COLOR", None)
    return env


@pytest.fixture
def relay_url() -> Iterator[str]:
    relay = Background([sys.executable, "rendezvous.py", "--port", "0"], _base_env())
    try:
        line = relay.wait_for(r"^listening on ws://", stream="out", timeout=START_TIMEOUT)
        match = re.search(r"(ws://[0-9.]+:\d+)", line)
        assert match, line
        yield match.group(1)
    finally:
        relay.stop()


@dataclass
class Cli:
    """One person's command line: ``python -m p2ptransfer --home HOME``."""

    home: Path
    relay: str

    def env(self) -> dict[str, str]:
        env = _base_env()
        env["P2PTRANSFER_RELAY"] = self.relay
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "p2ptransfer", "--home", str(self.home), *args]

    def run(self, *args: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args),
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert "Traceback" not in done.stdout + done.stderr, done
        return done

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, done
        return done.stdout

    def json(self, *args: str) -> dict[str, Any]:
        data = json.loads(self.ok(*args, "--json"))
        assert isinstance(data, dict)
        return data

    def background(self, *args: str) -> Background:
        return Background(self.argv(*args), self.env())


def _person(tmp_path: Path, relay: str, name: str) -> tuple[Cli, str]:
    cli = Cli(tmp_path / name, relay)
    cli.ok("init", "--name", name)
    who = cli.json("whoami")
    assert who["name"] == name
    address = who["address"]
    assert isinstance(address, str) and address.startswith("p2pt1")
    return cli, address


@pytest.fixture
def people(tmp_path: Path, relay_url: str) -> tuple[Cli, str, Cli, str]:
    alice, alice_address = _person(tmp_path, relay_url, "alice")
    bob, bob_address = _person(tmp_path, relay_url, "bob")
    alice.ok("contacts", "add", "bob", bob_address)
    bob.ok("contacts", "add", "alice", alice_address)
    return alice, alice_address, bob, bob_address


def _ledger(cli: Cli) -> dict[str, Any]:
    return cli.json("ledger")


def test_send_and_receive(people: tuple[Cli, str, Cli, str]) -> None:
    alice, alice_address, bob, bob_address = people
    receiver = bob.background("receive", "--timeout", "45", "--json")
    try:
        receiver.wait_for("waiting up to")
        sent = alice.json("send", "bob", "12.50", "EUR", "--memo", "lunch", "--timeout", "45")
        assert sent["status"] == "completed"
        assert sent["direction"] == "out"
        assert receiver.finish() == 0, receiver.err
    finally:
        receiver.stop()
    received = json.loads(receiver.out)
    assert received["id"] == sent["id"]
    assert received["direction"] == "in"
    assert received["counterparty"] == alice_address
    assert received["counterparty_name"] == "alice"
    assert (received["amount"], received["currency"], received["memo"]) == ("12.50", "EUR", "lunch")
    assert received["status"] == "completed"

    alice_book = _ledger(alice)
    assert [(t["direction"], t["amount"], t["status"]) for t in alice_book["transfers"]] == [
        ("out", "12.50", "completed")
    ]
    assert alice_book["balances"] == [
        {
            "counterparty": bob_address,
            "counterparty_name": "bob",
            "currency": "EUR",
            "balance": "-12.50",
            "balance_minor": -1250,
            "pending": "0.00",
            "pending_minor": 0,
        }
    ]
    bob_book = _ledger(bob)
    assert bob_book["balances"][0]["balance"] == "12.50"
    for cli in (alice, bob):
        assert cli.ok("ledger", "verify").startswith("ledger OK: ")


def test_listen_records_accepts_and_rejects_then_stops_on_sigint(
    people: tuple[Cli, str, Cli, str], tmp_path: Path
) -> None:
    alice, _, bob, bob_address = people
    carol, _ = _person(tmp_path, alice.relay, "carol")  # bob does not know carol
    listener = bob.background("listen")
    try:
        listener.wait_for("listening as")
        alice.json("send", "bob", "7", "EUR", "--timeout", "45")
        refused = carol.run("send", bob_address, "2.00", "EUR", "--timeout", "45")
        assert refused.returncode == 7, refused
        warning, error = refused.stderr.splitlines()  # sent to an address, not a contact:
        assert warning.startswith("warning: p2pt1")
        assert warning.endswith(
            " is not one of your contacts; you never compared safety numbers with them"
        )
        assert error.startswith("error: ")
        assert "rejected the transfer" in refused.stderr
        assert "the recipient does not know you" in refused.stderr
        assert "[rejected: unknown_sender]" in refused.stdout  # the row is still data
        # A stranger's transfer is refused and shown, but not recorded in the ledger.
        refusal = listener.wait_for(r"^refused 2\.00 EUR from p2pt1")
        assert refusal.endswith(": not a contact ('p2ptransfer ledger strangers' lists them)")
        listener.proc.send_signal(signal.SIGINT)
        assert listener.finish(timeout=20) == 0, listener.err
    finally:
        listener.stop()
    assert "Traceback" not in listener.out + listener.err
    lines = listener.lines["out"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("in 7.00 EUR from alice [completed]")
    assert "stopped; 1 transfer(s) recorded, 1 from unknown senders refused" in listener.err
    (stranger,) = bob.json("ledger", "strangers")["strangers"]
    assert (stranger["amount"], stranger["currency"]) == ("2.00", "EUR")
    carol_book = _ledger(carol)
    assert [t["status"] for t in carol_book["transfers"]] == ["rejected"]
    assert carol_book["balances"] == []
    for cli in (alice, bob, carol):
        cli.ok("ledger", "verify")


def test_timeout_leaves_pending_and_resend_completes(people: tuple[Cli, str, Cli, str]) -> None:
    alice, _, bob, _ = people
    late = alice.run("send", "bob", "3.00", "EUR", "--timeout", "1")
    assert late.returncode == 10, late
    (pending,) = _ledger(alice)["transfers"]
    assert pending["status"] == "pending"
    assert late.stderr == (
        "warning: you never compared safety numbers with bob ('p2ptransfer contacts verify bob')\n"
        "bob is not connected: trying for 1 s, then leaving the transfer in their mailbox at "
        "the relay\n"
        "error: bob did not come online within 1 s and cannot be mailed: they have no prekey at "
        "the relay (not online there since they got a version with offline delivery); transfer "
        f"{pending['id']} stays pending: run 'p2ptransfer resend' later\n"
    )

    receiver = bob.background("receive", "--timeout", "45")
    try:
        receiver.wait_for("waiting up to")
        resent = alice.json("resend", "--timeout", "45")
        assert [t["status"] for t in resent["transfers"]] == ["completed"]
        assert receiver.finish() == 0, receiver.err
    finally:
        receiver.stop()
    assert receiver.out.startswith("in 3.00 EUR from alice [completed]")
    (done,) = _ledger(alice)["transfers"]
    assert done["status"] == "completed"
    assert done["id"] == pending["id"]
    assert alice.ok("resend") == ""  # nothing left


def test_register_and_lookup(people: tuple[Cli, str, Cli, str], tmp_path: Path) -> None:
    alice, alice_address, _, _ = people
    assert alice.ok("register", "alice-h") == f"registered handle alice-h at {alice.relay}\n"
    dave, _ = _person(tmp_path, alice.relay, "dave")
    added = dave.ok("contacts", "add", "al", "--lookup", "alice-h")
    assert added.startswith(f"added al (handle alice-h at {alice.relay}): {alice_address}")
    taken = dave.run("register", "alice-h")
    assert taken.returncode == 10, taken
    assert taken.stderr.startswith("error: ")


def test_receive_times_out(people: tuple[Cli, str, Cli, str]) -> None:
    _, _, bob, _ = people
    done = bob.run("receive", "--timeout", "0.5")
    assert done.returncode == 10
    assert done.stderr.endswith("error: no transfer arrived within 0.5 s\n")


def test_listen_accept_unknown_and_sigterm(
    people: tuple[Cli, str, Cli, str], tmp_path: Path
) -> None:
    _, _, bob, bob_address = people
    carol, _ = _person(tmp_path, bob.relay, "carol")
    listener = bob.background("listen", "--accept-unknown")
    try:
        listener.wait_for("listening as")
        sent = carol.json("send", bob_address, "1.50", "EUR", "--timeout", "45")
        assert sent["status"] == "completed"
        assert sent["counterparty_name"] is None  # carol has no contact for bob
        listener.wait_for(r"\[completed\]", stream="out")
        listener.proc.send_signal(signal.SIGTERM)
        assert listener.finish(timeout=20) == 0, listener.err
    finally:
        listener.stop()
    assert "Traceback" not in listener.out + listener.err
    assert "stopped; 1 transfer(s) recorded" in listener.err


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_listen_reconnects_after_the_relay_restarts(tmp_path: Path) -> None:
    port = _free_port()
    argv = [sys.executable, "rendezvous.py", "--port", str(port)]
    relay = Background(argv, _base_env())
    listener: Background | None = None
    try:
        url = re.search(r"ws://\S+", relay.wait_for("^listening on", stream="out"))
        assert url
        alice, alice_address = _person(tmp_path, url.group(0), "alice")
        bob, bob_address = _person(tmp_path, url.group(0), "bob")
        alice.ok("contacts", "add", "bob", bob_address)
        bob.ok("contacts", "add", "alice", alice_address)
        listener = bob.background("listen")
        listener.wait_for("listening as")
        relay.stop()
        listener.wait_for("^disconnected")
        relay = Background(argv, _base_env())
        relay.wait_for("^listening on", stream="out")
        sent = alice.json("send", "bob", "4.00", "EUR", "--timeout", "45")
        assert sent["status"] == "completed"
        listener.wait_for(r"\[completed\]", stream="out")
        listener.proc.send_signal(signal.SIGINT)
        assert listener.finish(timeout=20) == 0, listener.err
    finally:
        if listener is not None:
            listener.stop()
        relay.stop()


def test_a_restored_ledger_is_named_then_reconciled(
    people: tuple[Cli, str, Cli, str], tmp_path: Path
) -> None:
    """Bob restores an old copy of his ledger; verify says so; reconcile with alice repairs it."""
    alice, _, bob, _ = people
    ledger_path = bob.home / "ledger.sqlite3"
    backup = tmp_path / "bob-backup.sqlite3"
    snapshot(ledger_path, backup)
    listener = bob.background("listen")
    try:
        listener.wait_for("listening as")
        sent = alice.json("send", "bob", "25.00", "EUR", "--timeout", "45")
        assert sent["status"] == "completed"
        listener.proc.send_signal(signal.SIGINT)
        assert listener.finish(timeout=20) == 0, listener.err
    finally:
        listener.stop()
    restore(ledger_path, backup)

    rolled_back = bob.run("ledger", "verify")
    assert rolled_back.returncode == 9
    assert "error: the ledger was rolled back" in rolled_back.stderr

    listener = alice.background("listen")
    try:
        listener.wait_for("listening as")
        report = bob.json("ledger", "reconcile", "alice", "--timeout", "30")
    finally:
        listener.stop()
    assert report["recovered"] == [sent["id"]]
    assert report["disagreements"] == []
    reset = bob.run("ledger", "verify", "--reset-checkpoint")
    assert reset.returncode == 0, reset
    assert reset.stdout.startswith("ledger OK: ")
    assert _ledger(bob)["balances"][0]["balance"] == "25.00"


def test_online_only_never_uses_the_mailbox(people: tuple[Cli, str, Cli, str]) -> None:
    alice, *_ = people
    late = alice.run("send", "bob", "1.00", "EUR", "--timeout", "1", "--online-only")
    assert late.returncode == 10
    (pending,) = _ledger(alice)["transfers"]
    assert late.stderr == (
        "warning: you never compared safety numbers with bob ('p2ptransfer contacts verify bob')\n"
        f"error: bob did not come online within 1 s; transfer {pending['id']} stays pending: "
        "run 'p2ptransfer resend' later\n"
    )


def _start_relay(data: Path) -> tuple[Background, str]:
    relay = Background(
        [sys.executable, "rendezvous.py", "--port", "0", "--data", str(data)], _base_env()
    )
    line = relay.wait_for(r"^listening on ws://", stream="out", timeout=START_TIMEOUT)
    match = re.search(r"(ws://[0-9.]+:\d+)", line)
    assert match, line
    return relay, match.group(1)


def test_a_transfer_sent_while_away_completes_after_both_were_offline(tmp_path: Path) -> None:
    """The whole offline round trip from the command line, with a relay restart in the middle."""
    data = tmp_path / "relay-data"
    relay, url = _start_relay(data)
    try:
        alice, alice_address = _person(tmp_path, url, "alice")
        bob, bob_address = _person(tmp_path, url, "bob")
        alice.ok("contacts", "add", "bob", bob_address)
        bob.ok("contacts", "add", "alice", alice_address)
        assert bob.json("sync") == {"transfers": [], "receipts": [], "requests": []}  # online once
        sent = alice.run("send", "bob", "12.50", "EUR", "--memo", "rent", "--wait", "1", "--json")
        assert sent.returncode == 0, sent
        queued = json.loads(sent.stdout)
        assert queued["status"] == "queued"
        assert "bob is not connected" in sent.stderr and "queued: sealed" in sent.stderr
        assert [t["status"] for t in alice.json("pending")["transfers"]] == ["queued"]
    finally:
        relay.stop()  # everyone offline; the relay goes away too

    relay, url = _start_relay(data)
    try:
        alice.relay = bob.relay = url
        collected = bob.json("sync")
        assert [(t["id"], t["status"], t["amount"]) for t in collected["transfers"]] == [
            (queued["id"], "completed", "12.50")
        ]
        assert bob.json("sync")["transfers"] == []  # collected once
        done = alice.json("sync")
        assert [(t["id"], t["status"]) for t in done["receipts"]] == [(queued["id"], "completed")]
        assert alice.json("pending") == {"transfers": []}
    finally:
        relay.stop()
    (mine,) = _ledger(alice)["transfers"]
    (theirs,) = _ledger(bob)["transfers"]
    assert (mine["status"], theirs["status"]) == ("completed", "completed")
    assert _ledger(bob)["balances"][0]["balance"] == "12.50"
    for cli in (alice, bob):
        assert cli.ok("ledger", "verify").startswith("ledger OK: ")


# --- payment requests ---------------------------------------------------------------


def _on_a_terminal(cli: Cli, *args: str, answer: str) -> subprocess.CompletedProcess[str]:
    """Run a command with stdin on a real pseudo-terminal and type ``answer`` into it."""
    import os
    import pty

    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli.argv(*args),
            cwd=ROOT,
            env=cli.env(),
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(secondary)
        os.write(primary, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=STEP_TIMEOUT)
    finally:
        os.close(primary)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_bob_asks_alice_pays_once(people: tuple[Cli, str, Cli, str]) -> None:
    alice, _, bob, _ = people
    listener = alice.background("listen")
    try:
        listener.wait_for("listening as")
        asked = bob.json("request", "alice", "12.50", "EUR", "--memo", "dinner", "--expires", "2h")
    finally:
        listener.stop()
    assert (asked["state"], asked["direction"], asked["delivery"]) == ("open", "out", "delivered")
    assert asked["code"].startswith("p2ptreq1")
    (mine,) = alice.json("requests")["requests"]
    assert (mine["id"], mine["direction"], mine["amount"], mine["counterparty_name"]) == (
        asked["id"], "in", "12.50", "bob",
    )  # fmt: skip

    # No terminal and no --yes: refused, nothing signed or written.
    blind = alice.run("pay", asked["id"][:8])
    assert blind.returncode == 2 and "--yes" in blind.stderr
    # On a terminal, "n" pays nothing.
    declined = _on_a_terminal(alice, "pay", asked["id"][:8], answer="n")
    assert declined.returncode == 0, declined
    assert "pay 12.50 EUR to bob" in declined.stderr
    assert "WARNING: you never compared safety numbers" in declined.stderr
    assert "not paid; nothing was signed or recorded" in declined.stderr
    assert _ledger(alice)["transfers"] == []

    listener = bob.background("listen")
    try:
        listener.wait_for("listening as")
        paid = _on_a_terminal(alice, "pay", asked["code"], "--json", answer="y")
        assert paid.returncode == 0, paid
        assert json.loads(paid.stdout)["status"] == "completed"
        again = alice.run("pay", asked["code"], "--yes")
        assert again.returncode == 3
        assert "already paid from this ledger" in again.stderr
    finally:
        listener.stop()
    (theirs,) = bob.json("requests")["requests"]
    assert theirs["state"] == "paid"
    assert theirs["paid_by"] == json.loads(paid.stdout)["id"]
    assert _ledger(bob)["balances"][0]["balance"] == "12.50"
    for cli in (alice, bob):
        assert cli.ok("ledger", "verify").startswith("ledger OK: ")


def test_send_asks_before_signing_on_a_terminal(people: tuple[Cli, str, Cli, str]) -> None:
    alice, *_ = people
    kept = _on_a_terminal(alice, "send", "bob", "5.00", "EUR", "--memo", "tea", answer="n")
    assert kept.returncode == 0, kept
    assert "send 5.00 EUR to bob" in kept.stderr and "memo     tea" in kept.stderr
    assert "WARNING: you never compared safety numbers" in kept.stderr
    assert "not sent; nothing was signed or recorded" in kept.stderr
    assert _ledger(alice)["transfers"] == []


def test_ctrl_c_during_send_names_the_transfer_that_stays_pending(
    people: tuple[Cli, str, Cli, str],
) -> None:
    alice, *_ = people
    sending = alice.background("send", "bob", "4.00", "EUR", "--online-only", "--timeout", "60")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:  # until the transfer is pending in the ledger
            if _ledger(alice)["transfers"]:
                break
            time.sleep(0.1)
        sending.proc.send_signal(signal.SIGINT)
        assert sending.finish(timeout=20) == 130
    finally:
        sending.stop()
    (pending,) = _ledger(alice)["transfers"]
    assert pending["status"] == "pending"
    assert (
        f"interrupted: transfer {pending['id']} stays pending — 'p2ptransfer resend' delivers it, "
        f"'p2ptransfer abandon {pending['id'][:8]}' gives up on it"
    ) in sending.err
