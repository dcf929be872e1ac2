"""write_off_loop: the transaction on the caller's thread, its COMMIT in the committer thread."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2ptransfer.errors import TransferConflict
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.storage.ledger import Ledger
from p2ptransfer.storage.records import TransferStatus
from tests.storage.builders import T0, make_transfer


async def test_the_commit_is_durable_when_write_off_loop_returns(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    path = tmp_path / "ledger.sqlite3"
    signed = [make_transfer(me, bob, amount=n) for n in range(1, 6)]
    with Ledger.open(path) as ledger:
        rows = await ledger.write_off_loop(lambda: ledger.record_outgoing_batch(signed, T0))
        assert [r.status for r in rows] == [TransferStatus.PENDING] * 5
        with Ledger.open(path) as other:  # another connection: committed, not just written
            assert {r.id for r in other.transfers()} == {s.id for s in signed}
        ledger.verify()


async def test_the_loop_runs_during_the_commit_and_its_reads_wait_for_it(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    signed = make_transfer(me, bob)
    order: list[str] = []
    seen: list[TransferStatus] = []

    async def meanwhile(ledger: Ledger) -> None:
        await asyncio.sleep(0)  # runs next while the COMMIT is under way in its thread
        order.append("loop ran")
        seen.append(ledger.get_transfer(signed.id, "out").status)  # waits for the COMMIT

    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        other = asyncio.ensure_future(meanwhile(ledger))
        await ledger.write_off_loop(lambda: ledger.record_outgoing_batch([signed], T0))
        order.append("committed")
        await other
        ledger.verify()
    assert order == ["loop ran", "committed"]  # a COMMIT on the loop would finish first
    assert seen == [TransferStatus.PENDING]  # the read saw the committed row, not a half


async def test_a_write_that_fails_rolls_back_and_the_next_one_commits(
    tmp_path: Path, me: Identity, bob: Identity
) -> None:
    signed = make_transfer(me, bob)
    changed = make_transfer(me, bob, amount=99, transfer_id=signed.id)  # same id, other content
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        with pytest.raises(TransferConflict):  # the second item fails: the whole batch rolls back
            await ledger.write_off_loop(lambda: ledger.record_outgoing_batch([signed, changed], T0))
        assert ledger.transfers() == []
        await ledger.write_off_loop(lambda: ledger.record_outgoing_batch([signed], T0))
        assert len(ledger.transfers()) == 1
        ledger.verify()
