"""A peer with offline delivery in its own process, for tests that SIGKILL it mid-mail.

Usage::

    python mail_process.py ACTION RELAY_URL SEED_HEX LEDGER PREKEYS [--crash-at HOOK]
                           [--to ADDRESS --amount MINOR]

ACTION is one of

* ``online``: connect once (which publishes our prekeys) and leave;
* ``send``: sign one EUR transfer to ``--to`` and deliver it live or queue it by mail;
* ``resend``: ``resend`` every pending or queued transfer (live, else by mail);
* ``sync``: collect every piece of mail waiting at the relay once.

It prints one JSON line with what it did and exits 0. With ``--crash-at``
the process kills itself with SIGKILL the first time that
:class:`~p2ptransfer.net.peer.FaultHooks` point is reached: no cleanup, no
close, no flush — what survives is what was durable at that instant, as
after a power cut.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from p2ptransfer.net.peer import FaultHooks, Peer, PeerEvent, SendOutcome
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.storage.ledger import Ledger, TransferRow

CRASH_POINTS = ("after_deposit", "after_mail_committed", "after_receipt_deposited")


class CrashAt(FaultHooks):
    """SIGKILL this process at one hook point."""

    def __init__(self, point: str | None) -> None:
        self.point = point

    def _maybe_die(self, point: str) -> None:
        if point == self.point:
            os.kill(os.getpid(), signal.SIGKILL)

    async def after_deposit(self, peer: Any, transfer_ids: Any) -> None:
        self._maybe_die("after_deposit")

    async def after_mail_committed(self, peer: Any, receipt: Any) -> None:
        self._maybe_die("after_mail_committed")

    async def after_receipt_deposited(self, peer: Any, receipt: Any) -> None:
        self._maybe_die("after_receipt_deposited")


def _result(item: SendOutcome | TransferRow) -> dict[str, str]:
    row = item.row if isinstance(item, SendOutcome) else item
    return {"id": row.id.hex(), "status": str(row.status)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    events: list[str] = []

    def on_event(event: PeerEvent) -> None:
        events.append(event.kind)

    identity = Identity(bytes.fromhex(args.seed))
    ledger = Ledger.open(args.ledger)
    peer = Peer(
        identity,
        ledger,
        args.relay,
        hooks=CrashAt(args.crash_at),
        on_event=on_event,
        prekeys_path=Path(args.prekeys),
    )
    out: dict[str, Any] = {}
    async with peer:
        if args.action == "send":
            signed = peer.prepare(args.to, args.amount, "EUR", "by mail")
            done = await peer.deliver_or_queue([signed], wait=0.3, timeout=5)
            out["results"] = [_result(item) for item in done]
        elif args.action == "resend":
            done = await peer.resend_or_queue(None, wait=0.3, timeout=5)
            out["results"] = [_result(item) for item in done]
        elif args.action == "sync":
            collected = await peer.sync(timeout=10)
            out["transfers"] = [row.id.hex() for row in collected.transfers]
            out["receipts"] = [row.id.hex() for row in collected.receipts]
    out["events"] = [kind for kind in events if kind not in ("connected", "disconnected")]
    ledger.close()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=("online", "send", "resend", "sync"))
    parser.add_argument("relay")
    parser.add_argument("seed")
    parser.add_argument("ledger")
    parser.add_argument("prekeys")
    parser.add_argument("--crash-at", choices=CRASH_POINTS)
    parser.add_argument("--to")
    parser.add_argument("--amount", type=int, default=0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
