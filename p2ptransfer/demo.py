"""A self-contained tour of p2ptransfer: what ``p2ptransfer demo`` runs.

Everything real except the people: an in-process relay on a free local port,
two throwaway identities (alice and bob) in a temporary directory with cheap
keys (scrypt log2(n) = 10: fine for a demo, far too weak for real money), a
few transfers through the relay — one of them rejected by bob's acceptance
policy — both ledgers, ``verify`` on both, and everything removed at the end.

The tour reports through a :class:`DemoReport` the caller supplies, so this
module shows nothing itself (the CLI renders it with rich; tests collect it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .clock import now_ms
from .errors import P2PTransferError
from .net.peer import AcceptancePolicy, Peer, SendOutcome
from .net.relay import RelayConfig, RelayServer
from .protocol.amounts import format_amount, parse_amount
from .protocol.identity import Identity, safety_number
from .protocol.keyfile import MIN_LOG_N, KdfParams
from .storage.home import Home
from .storage.ledger import Contact, Ledger, TransferRow

__all__ = ["DemoReport", "DemoResult", "run_demo"]

_TIMEOUT = 20.0
BOB_LIMIT = ("100.00", "EUR")
"""Bob accepts at most this much per transfer from alice: the tour's rejected transfer."""

ALICE_TO_BOB: tuple[tuple[str, str, str], ...] = (
    ("12.50", "EUR", "lunch on Tuesday"),
    ("3000", "JPY", "train ticket"),
    ("250.00", "EUR", "rent share (above bob's limit)"),
)
BOB_TO_ALICE: tuple[tuple[str, str, str], ...] = (("5.00", "EUR", "coffee, thanks!"),)


class DemoReport(Protocol):
    """Where the tour tells what it does."""

    def step(self, text: str) -> None:
        """One narrated step."""

    def sent(self, sender: str, recipient: str, outcome: SendOutcome) -> None:
        """A transfer reached its end (accepted or rejected)."""

    def ledger(
        self,
        owner: str,
        rows: Sequence[TransferRow],
        balances: dict[tuple[str, str], int],
        contacts: Sequence[Contact],
    ) -> None:
        """One person's ledger at the end of the tour."""


@dataclass
class DemoResult:
    """What happened, for callers that check (tests) rather than watch."""

    relay_url: str = ""
    addresses: dict[str, str] = field(default_factory=dict)
    outcomes: list[SendOutcome] = field(default_factory=list)
    verified: dict[str, int] = field(default_factory=dict)
    workdir: Path | None = None


@contextlib.asynccontextmanager
async def _local_relay() -> AsyncIterator[str]:
    """An in-process relay on 127.0.0.1 and an OS-chosen port; yields its ws:// URL."""
    server = RelayServer(RelayConfig(host="127.0.0.1", port=0))
    await server.start()
    try:
        yield server.url
    finally:
        await server.close()


async def _send_all(
    report: DemoReport,
    peer: Peer,
    sender: str,
    recipient: str,
    address: str,
    items: Sequence[tuple[str, str, str]],
    result: DemoResult,
) -> None:
    for amount, currency, memo in items:
        outcome = await peer.send(
            address, parse_amount(amount, currency), currency, memo, timeout=_TIMEOUT
        )
        result.outcomes.append(outcome)
        report.sent(sender, recipient, outcome)


async def run_demo(report: DemoReport, *, keep_dir: Path | None = None) -> DemoResult:
    """Run the whole tour; with ``keep_dir`` the homes are made there and kept."""
    result = DemoResult()
    with contextlib.ExitStack() as stack:
        if keep_dir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="p2pt-demo-")))
        else:
            workdir = keep_dir
        result.workdir = workdir
        await _tour(report, workdir, result)
    if keep_dir is None:
        report.step(f"Removed {workdir} with both throwaway identities.")
    return result


async def _tour(report: DemoReport, workdir: Path, result: DemoResult) -> None:
    params = KdfParams(MIN_LOG_N)
    report.step(
        f"Creating two throwaway identities in {workdir} "
        f"(cheap scrypt log2(n)={MIN_LOG_N}: demo only)."
    )
    identities: dict[str, Identity] = {}
    for name in ("alice", "bob"):
        home = Home(workdir / name)
        # A random passphrase nobody needs to know: the homes are deleted at the end.
        identities[name] = await asyncio.to_thread(
            home.create_identity, secrets.token_urlsafe(16), name, params
        )
        result.addresses[name] = identities[name].address
        report.step(f"  {name:<5} {identities[name].address}")
    alice, bob = identities["alice"], identities["bob"]

    async with _local_relay() as url:
        result.relay_url = url
        report.step(f"Started a relay on {url}; it only ever sees ciphertext.")
        with (
            Ledger.open(workdir / "alice" / "ledger.sqlite3") as alice_book,
            Ledger.open(workdir / "bob" / "ledger.sqlite3") as bob_book,
        ):
            now = now_ms()
            alice_book.add_contact("bob", bob.address, at=now)
            bob_book.add_contact("alice", alice.address, at=now)
            number = safety_number(alice.public, bob.public)
            report.step("alice and bob add each other as contacts and compare safety numbers:")
            report.step(f"  {number}  (the same on both sides: nobody swapped keys)")
            alice_book.mark_verified("bob", at=now)
            bob_book.mark_verified("alice", at=now)

            limit = parse_amount(*BOB_LIMIT)
            bob_book.set_limit("alice", BOB_LIMIT[1], limit)
            bob_policy = AcceptancePolicy(limits=bob_book.limits())
            report.step(
                f"bob accepts at most {format_amount(limit, BOB_LIMIT[1])} {BOB_LIMIT[1]} "
                "per transfer from alice."
            )
            async with (
                Peer(alice, alice_book, url) as alice_peer,
                Peer(bob, bob_book, url, policy=bob_policy) as bob_peer,
            ):
                stop = asyncio.Event()
                listeners = [
                    asyncio.create_task(bob_peer.listen(stop), name="demo-bob"),
                    asyncio.create_task(alice_peer.listen(stop), name="demo-alice"),
                ]
                try:
                    await _send_all(
                        report, alice_peer, "alice", "bob", bob.address, ALICE_TO_BOB, result
                    )
                    await _send_all(
                        report, bob_peer, "bob", "alice", alice.address, BOB_TO_ALICE, result
                    )
                finally:
                    stop.set()
                    await asyncio.wait(listeners, timeout=5.0)
                    for task in listeners:
                        task.cancel()
                    for task in listeners:
                        with contextlib.suppress(asyncio.CancelledError, P2PTransferError):
                            await task

            for owner, book in (("alice", alice_book), ("bob", bob_book)):
                report.ledger(owner, book.transfers(), book.balances(), book.contacts())
            for owner, book in (("alice", alice_book), ("bob", bob_book)):
                result.verified[owner] = book.verify()
                report.step(
                    f"{owner}'s ledger verified: {result.verified[owner]} journal entries, "
                    "hash chain and every signature check out."
                )
