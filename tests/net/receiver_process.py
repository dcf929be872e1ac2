"""A receiving peer in its own process, for tests that kill it with SIGKILL.

Usage: python receiver_process.py RELAY_URL SEED_HEX LEDGER_PATH [PAUSE_MARKER]

With PAUSE_MARKER, the first group commit stops *inside* its SQLite
transaction (after the journal row is written, before COMMIT), creates the
marker file and sleeps, so the test can kill the process at exactly that
point. Prints "ready" once connected.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from p2ptransfer.net.peer import AcceptancePolicy, Peer
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.storage.ledger import Ledger


class PausingLedger(Ledger):
    marker: Path | None = None

    def _append(self, *args: Any, **kwargs: Any) -> Any:
        row = super()._append(*args, **kwargs)
        if self.marker is not None and not self.marker.exists():
            self.marker.write_text("in transaction\n")
            time.sleep(60)  # the test SIGKILLs us here, mid-transaction
        return row


async def main(relay_url: str, seed_hex: str, ledger_path: str, marker: str | None) -> None:
    ledger = PausingLedger.open(ledger_path)
    ledger.marker = Path(marker) if marker else None
    peer = Peer(
        Identity(bytes.fromhex(seed_hex)),
        ledger,
        relay_url,
        policy=AcceptancePolicy(accept_unknown=True),
    )
    await peer.connect()
    print("ready", flush=True)
    await peer.listen()


if __name__ == "__main__":
    asyncio.run(
        main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    )
