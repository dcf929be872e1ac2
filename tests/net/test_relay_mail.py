"""The relay's mailboxes over real sockets: deposit, push, replace, acknowledge, limits, expiry."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from p2ptransfer.errors import RelayRefused
from p2ptransfer.net.relay import RelayConfig, RelayServer
from p2ptransfer.net.relay.mailbox import (
    MAILBOX_FILE,
    DepositOutcome,
    MemoryMailStore,
    StoredMail,
    ThreadedMailStore,
)
from p2ptransfer.net.relay_client import Deliver, Mail, MailInfo, RelayClient
from p2ptransfer.protocol import envelope, primitives
from p2ptransfer.protocol.envelope import envelope_hash
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.prekey import (
    PREKEY_VALIDITY_MS,
    Prekey,
    PrekeyId,
    SignedPrekey,
    sign_prekey,
)

from .conftest import StartRelay, make_identity

ALICE, BOB, CAROL, MALLORY = (make_identity(n) for n in (31, 32, 33, 34))
KEM_PUBLIC = primitives.hpke_public_from_private(bytes(range(96)))
SLOT = bytes(range(16))
DAY_MS = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def prekey(owner: Identity, n: int = 1, not_before: int | None = None) -> SignedPrekey:
    start = now_ms() - 1000 if not_before is None else not_before
    return sign_prekey(
        owner,
        Prekey(
            owner.public.public_key,
            PrekeyId(n.to_bytes(8, "big")),
            KEM_PUBLIC,
            start,
            start + PREKEY_VALIDITY_MS,
        ),
    )


def metric(relay: RelayServer, line_start: str) -> int:
    """The value of the one /metrics line starting with ``line_start``."""
    lines = [ln for ln in relay.metrics.render().splitlines() if ln.startswith(line_start + " ")]
    assert len(lines) == 1, line_start
    return int(lines[0].rsplit(" ", 1)[1])


async def next_mail(client: RelayClient, timeout: float = 5.0) -> Mail:
    message = await asyncio.wait_for(client.recv(), timeout)
    assert isinstance(message, Mail), message
    return message


async def no_message(client: RelayClient, wait: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.recv(), wait)


async def ready_mailbox(url: str, owner: Identity = BOB) -> None:
    """``owner`` publishes a prekey, then goes offline."""
    async with await RelayClient.connect(url, owner) as client:
        await client.publish_prekey(prekey(owner))


async def test_deposit_is_pushed_on_connect_after_auth_and_mail_info(relay: RelayServer) -> None:
    await ready_mailbox(relay.url)
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        before = now_ms()
        await alice.deposit(BOB.address, SLOT, b"sealed envelope")
    async with await RelayClient.connect(relay.url, BOB) as bob:
        assert await bob.wait_mail_info() == MailInfo(14 * DAY_MS, 4096)
        mail = await next_mail(bob)
        assert (mail.sender, mail.slot, mail.envelope) == (ALICE.address, SLOT, b"sealed envelope")
        assert before <= mail.deposited_at <= now_ms()
        await no_message(bob)
    assert metric(relay, "p2pt_relay_mail_deposits_total") == 1
    assert metric(relay, "p2pt_relay_mail_items") == 1  # until acknowledged


async def test_mail_is_pushed_on_arrival_to_every_connection_of_the_owner(
    relay: RelayServer,
) -> None:
    async with (
        await RelayClient.connect(relay.url, BOB) as bob1,
        await RelayClient.connect(relay.url, BOB) as bob2,
        await RelayClient.connect(relay.url, CAROL) as carol,
        await RelayClient.connect(relay.url, ALICE) as alice,
    ):
        await bob1.publish_prekey(prekey(BOB))
        await alice.deposit(BOB.address, SLOT, b"one")
        for bob in (bob1, bob2):
            assert (await next_mail(bob)).envelope == b"one"
        await no_message(carol)


async def test_ten_resends_take_one_slot_and_the_last_one_wins(relay: RelayServer) -> None:
    await ready_mailbox(relay.url)
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        for n in range(10):
            await alice.deposit(BOB.address, SLOT, f"envelope {n}".encode())
    assert metric(relay, "p2pt_relay_mail_items") == 1
    async with await RelayClient.connect(relay.url, BOB) as bob:
        assert (await next_mail(bob)).envelope == b"envelope 9"
        await no_message(bob)


async def test_only_the_owner_gets_and_deletes_its_mail(relay: RelayServer) -> None:
    await ready_mailbox(relay.url)
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        await alice.deposit(BOB.address, SLOT, b"for bob")
    async with await RelayClient.connect(relay.url, CAROL) as carol:
        await no_message(carol)
        await carol.ack(ALICE.address, SLOT, envelope_hash(b"for bob"))  # names nothing of hers
    assert metric(relay, "p2pt_relay_mail_items") == 1
    async with await RelayClient.connect(relay.url, BOB) as bob:
        mail = await next_mail(bob)
        await bob.ack(mail.sender, mail.slot, envelope_hash(mail.envelope))
    assert metric(relay, "p2pt_relay_mail_items") == 0
    assert metric(relay, "p2pt_relay_mail_acks_total") == 1
    async with await RelayClient.connect(relay.url, BOB) as bob:
        await no_message(bob)


async def test_an_ack_with_a_stale_hash_keeps_the_replacement(relay: RelayServer) -> None:
    async with (
        await RelayClient.connect(relay.url, BOB) as bob,
        await RelayClient.connect(relay.url, ALICE) as alice,
    ):
        await bob.publish_prekey(prekey(BOB))
        await alice.deposit(BOB.address, SLOT, b"first")
        first = await next_mail(bob)
        await alice.deposit(BOB.address, SLOT, b"second")
        await bob.ack(first.sender, first.slot, envelope_hash(first.envelope))
        assert (await next_mail(bob)).envelope == b"second"
    assert metric(relay, "p2pt_relay_mail_items") == 1
    async with await RelayClient.connect(relay.url, BOB) as bob:
        second = await next_mail(bob)
        assert second.envelope == b"second"
        await bob.ack(second.sender, second.slot, envelope_hash(second.envelope))
    assert metric(relay, "p2pt_relay_mail_items") == 0


async def test_no_deposit_without_a_valid_prekey(relay: RelayServer) -> None:
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        with pytest.raises(RelayRefused) as refused:
            await alice.deposit(CAROL.address, SLOT, b"x")
    assert refused.value.reason == "no-prekey"
    assert str(refused.value) == (
        f"the relay refused to keep mail for {CAROL.address}: "
        "the recipient has no valid prekey at this relay (no-prekey)"
    )
    assert metric(relay, 'p2pt_relay_frames_refused_total{reason="no-prekey"}') == 1


@pytest.mark.parametrize(
    ("changes", "deposits", "reason"),
    [
        ({"max_envelope": 100}, [(ALICE, 0, 101)], "envelope-too-large"),
        (
            {"max_mail_per_sender": 2},
            [(ALICE, 0, 10), (ALICE, 1, 10), (ALICE, 2, 10)],
            "sender-room-full",
        ),
        (
            {"max_mail_items": 3, "max_mail_per_sender": 2},
            [(ALICE, 0, 10), (ALICE, 1, 10), (CAROL, 0, 10), (CAROL, 1, 10)],
            "mailbox-full",
        ),
        (
            {"max_mailbox_bytes": 4096, "max_envelope": 4096},
            [(ALICE, 0, 3000), (CAROL, 0, 3000)],
            "mailbox-full",
        ),
        ({"deposit_burst": 2}, [(ALICE, n, 10) for n in range(3)], "rate-limited"),
        (
            {"deposit_burst_per_ip": 2},
            [(ALICE, 0, 10), (CAROL, 0, 10), (MALLORY, 0, 10)],
            "rate-limited",
        ),
    ],
    ids=["envelope", "sender-room", "items", "bytes", "rate-sender", "rate-ip"],
)
async def test_every_mail_limit_refuses_with_its_reason_and_counts(
    start_relay: StartRelay,
    changes: dict[str, object],
    deposits: list[tuple[Identity, int, int]],
    reason: str,
) -> None:
    config = RelayConfig(host="127.0.0.1", port=0).replace(**changes)
    async with start_relay(config) as relay:
        await ready_mailbox(relay.url)
        *fine, (last, last_slot, last_size) = deposits
        for sender, slot, size in fine:
            async with await RelayClient.connect(relay.url, sender) as client:
                await client.deposit(BOB.address, bytes([slot]) * 16, bytes(size))
        async with await RelayClient.connect(relay.url, last) as client:
            with pytest.raises(RelayRefused) as refused:
                await client.deposit(BOB.address, bytes([last_slot]) * 16, bytes(last_size))
        assert refused.value.reason == reason
        assert metric(relay, f'p2pt_relay_frames_refused_total{{reason="{reason}"}}') == 1
        assert metric(relay, "p2pt_relay_mail_items") == len(fine)


async def test_a_replacement_never_counts_against_the_room(start_relay: StartRelay) -> None:
    config = RelayConfig(host="127.0.0.1", port=0, max_mail_per_sender=1, max_mail_items=1)
    async with start_relay(config) as relay:
        await ready_mailbox(relay.url)
        async with await RelayClient.connect(relay.url, ALICE) as alice:
            for n in range(3):
                await alice.deposit(BOB.address, SLOT, bytes([n]))


async def test_mail_expires_on_read_and_by_the_sweep(start_relay: StartRelay) -> None:
    config = RelayConfig(host="127.0.0.1", port=0, max_mail_age_days=1, mail_sweep_interval=0.05)
    async with start_relay(config) as relay:
        await ready_mailbox(relay.url)
        async with await RelayClient.connect(relay.url, ALICE) as alice:
            await alice.deposit(BOB.address, SLOT, b"old")
            await alice.deposit(BOB.address, bytes(16), b"also old")
        relay.mail.clock = lambda: now_ms() + DAY_MS
        async with await RelayClient.connect(relay.url, BOB) as bob:
            await no_message(bob)
        assert metric(relay, "p2pt_relay_mail_expired_total") == 2
        relay.mail.clock = now_ms
        await ready_mailbox(relay.url)
        async with await RelayClient.connect(relay.url, ALICE) as alice:
            await alice.deposit(BOB.address, SLOT, b"old again")
        relay.mail.clock = lambda: now_ms() + DAY_MS
        for _ in range(200):
            if metric(relay, "p2pt_relay_mail_items") == 0:
                break
            await asyncio.sleep(0.02)
        assert metric(relay, "p2pt_relay_mail_expired_total") == 3
        assert metric(relay, "p2pt_relay_prekeys") == 1  # valid for 14 days, not one


async def test_a_restarted_relay_with_data_keeps_mail_and_prekeys(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    config = RelayConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "relay")
    async with start_relay(config) as relay:
        await ready_mailbox(relay.url)
        async with await RelayClient.connect(relay.url, ALICE) as alice:
            await alice.deposit(BOB.address, SLOT, b"kept")
    path = tmp_path / "relay" / MAILBOX_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    async with start_relay(config) as relay:
        async with await RelayClient.connect(relay.url, BOB) as bob:
            assert (await next_mail(bob)).envelope == b"kept"
        async with await RelayClient.connect(relay.url, ALICE) as alice:
            kept = await alice.get_prekeys(BOB.address)
        assert [k.prekey.owner for k in kept] == [BOB.public.public_key]


async def test_a_deposit_flood_stays_within_the_room(start_relay: StartRelay) -> None:
    config = RelayConfig(host="127.0.0.1", port=0, max_mail_per_sender=20, deposit_burst=1000)
    async with start_relay(config) as relay:
        await ready_mailbox(relay.url)
        async with await RelayClient.connect(relay.url, ALICE) as alice:
            refused = 0
            for n in range(60):
                try:
                    await alice.deposit(BOB.address, n.to_bytes(16, "big"), bytes(4096))
                except RelayRefused as exc:
                    assert exc.reason == "sender-room-full"
                    refused += 1
        assert refused == 40
        assert metric(relay, "p2pt_relay_mail_items") == 20
        assert metric(relay, "p2pt_relay_mail_bytes") == 20 * 4096
        async with await RelayClient.connect(relay.url, CAROL) as carol:  # her room is untouched
            await carol.deposit(BOB.address, SLOT, b"receipt")


async def test_prekeys_the_owner_did_not_sign_are_refused(relay: RelayServer) -> None:
    async with await RelayClient.connect(relay.url, MALLORY) as mallory:
        for bad in (
            prekey(BOB),
            prekey(MALLORY, not_before=now_ms() - PREKEY_VALIDITY_MS - DAY_MS),
        ):
            with pytest.raises(RelayRefused) as refused:
                await mallory.publish_prekey(bad)
            assert refused.value.reason == "bad-prekey"
        assert await mallory.get_prekeys(BOB.address) == []
    assert metric(relay, 'p2pt_relay_frames_refused_total{reason="bad-prekey"}') == 2
    assert metric(relay, "p2pt_relay_prekeys") == 0


async def test_the_newest_two_prekeys_are_kept(relay: RelayServer) -> None:
    start = now_ms() - 3 * DAY_MS
    keys = [prekey(BOB, n, start + n * DAY_MS) for n in range(3)]
    async with await RelayClient.connect(relay.url, BOB) as bob:
        for key in (keys[1], keys[2], keys[0]):
            kept = await bob.publish_prekey(key)
        assert kept == [keys[2], keys[1]]
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        assert await alice.get_prekeys(BOB.address) == [keys[2], keys[1]]
    assert metric(relay, "p2pt_relay_prekeys") == 2
    assert metric(relay, "p2pt_relay_prekey_publishes_total") == 3
    assert metric(relay, "p2pt_relay_prekey_fetches_total") == 1


async def test_live_frames_still_flow_beside_mail(relay: RelayServer) -> None:
    async with (
        await RelayClient.connect(relay.url, BOB) as bob,
        await RelayClient.connect(relay.url, ALICE) as alice,
    ):
        await bob.publish_prekey(prekey(BOB))
        await alice.deposit(BOB.address, SLOT, b"mail")
        await alice.send(BOB.address, b"live")
        assert (await next_mail(bob)).envelope == b"mail"
        assert await asyncio.wait_for(bob.recv(), 5) == Deliver(ALICE.address, b"live")


async def test_a_real_sealed_envelope_goes_through_and_opens(relay: RelayServer) -> None:
    kem_private = bytes(range(96))
    signed = b"stand-in for a signed transfer"
    slot = envelope.mail_slot(envelope.slot_key(bytes(32)), envelope.MailKind.TRANSFER, bytes(16))
    async with await RelayClient.connect(relay.url, BOB) as bob:
        await bob.publish_prekey(prekey(BOB))
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        [bob_prekey] = await alice.get_prekeys(BOB.address)
        bob_prekey.check_for(BOB.address, now_ms())
        sealed = envelope.seal(
            envelope.MailKind.TRANSFER, signed, ALICE.public.public_key, bob_prekey.prekey
        ).encode()
        assert len(sealed) <= (await alice.wait_mail_info()).max_envelope
        await alice.deposit(BOB.address, slot, sealed)
    async with await RelayClient.connect(relay.url, BOB) as bob:
        mail = await next_mail(bob)
        opened = envelope.open(
            envelope.Envelope.decode(mail.envelope),
            kem_private,
            ALICE.public.public_key,
            BOB.public.public_key,
        )
        assert opened == (envelope.MailKind.TRANSFER, signed)
        await bob.ack(mail.sender, mail.slot, envelope.envelope_hash(mail.envelope))
    assert metric(relay, "p2pt_relay_mail_items") == 0


class DiskFullStore(MemoryMailStore):
    """A store whose writes fail as SQLite's do on a full disk."""

    def deposit(self, mail: StoredMail) -> DepositOutcome:
        raise sqlite3.OperationalError("database or disk is full")


async def test_a_failing_store_refuses_and_keeps_the_connection(relay: RelayServer) -> None:
    await relay.mail.store.close()
    relay.mail.store = ThreadedMailStore(DiskFullStore())
    await ready_mailbox(relay.url)
    async with await RelayClient.connect(relay.url, ALICE) as alice:
        with pytest.raises(RelayRefused) as refused:
            await alice.deposit(BOB.address, SLOT, b"x")
        assert refused.value.reason == "unavailable"
        await alice.send(ALICE.address, b"still connected")
        assert await asyncio.wait_for(alice.recv(), 5) == Deliver(ALICE.address, b"still connected")
