"""The prekey store: rotation, lookup, erasure, publication, and the file at rest."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from p2ptransfer.errors import InputError, StorageError
from p2ptransfer.protocol import envelope as mail
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.prekey import PREKEY_ROTATE_MS, PREKEY_VALIDITY_MS
from p2ptransfer.storage.prekeys import PrekeyStore

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))
NOW = 1_767_225_600_000
DAY = 86_400_000
MAIL_AGE = 14 * DAY


@pytest.fixture
def path(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return home / "prekeys"


def test_first_current_creates_signs_and_persists(path: Path) -> None:
    store = PrekeyStore(path, BOB)
    signed, private = store.current(NOW)
    signed.check_for(BOB.address, NOW)
    assert (signed.prekey.not_before, signed.prekey.not_after) == (NOW, NOW + PREKEY_VALIDITY_MS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name("prekeys.tmp").exists()
    # Nothing in clear on disk: neither the private half nor the signed prekey.
    data = path.read_bytes()
    assert private not in data
    assert signed.prekey.kem_public[:64] not in data
    # A second store over the same file (a new process) sees the same prekey.
    again = PrekeyStore(path, BOB)
    assert again.current(NOW + 1) == (signed, private)
    assert again.private_for(signed.prekey_id) == private


def test_the_private_half_opens_mail_sealed_to_the_prekey(path: Path) -> None:
    signed, _ = PrekeyStore(path, BOB).current(NOW)
    env = mail.seal(mail.MailKind.TRANSFER, b"signed", ALICE.public.public_key, signed.prekey)
    private = PrekeyStore(path, BOB).private_for(env.prekey_id)
    assert private is not None
    assert mail.open(env, private, ALICE.public.public_key, BOB.public.public_key) == (
        mail.MailKind.TRANSFER,
        b"signed",
    )


def test_rotation_after_seven_days_and_the_newest_two_published(path: Path) -> None:
    store = PrekeyStore(path, BOB)
    first, _ = store.current(NOW)
    assert store.current(NOW + PREKEY_ROTATE_MS - 1)[0] == first
    second, _ = store.current(NOW + PREKEY_ROTATE_MS)
    assert second != first
    assert second.prekey.not_before == NOW + PREKEY_ROTATE_MS
    third, _ = store.current(NOW + 2 * PREKEY_ROTATE_MS)
    assert store.published() == [third, second]
    assert PrekeyStore(path, BOB).published() == [third, second]
    # Older private halves are still there for mail sealed to them.
    assert store.private_for(first.prekey_id) is not None


def test_a_clock_set_back_does_not_rotate(path: Path) -> None:
    store = PrekeyStore(path, BOB)
    first, _ = store.current(NOW)
    assert store.current(NOW - DAY)[0] == first


def test_erase_expired_keeps_halves_until_the_mail_age_has_passed(path: Path) -> None:
    store = PrekeyStore(path, BOB)
    first, _ = store.current(NOW)
    second, _ = store.current(NOW + PREKEY_ROTATE_MS)
    deadline = first.prekey.not_after + MAIL_AGE
    assert store.erase_expired(deadline - 1, MAIL_AGE) == 0
    assert store.erase_expired(deadline, MAIL_AGE) == 1
    assert store.private_for(first.prekey_id) is None
    assert PrekeyStore(path, BOB).private_for(first.prekey_id) is None
    assert PrekeyStore(path, BOB).private_for(second.prekey_id) is not None
    with pytest.raises(InputError):
        store.erase_expired(NOW, -1)


def test_private_for_unknown_id_and_bad_id(path: Path) -> None:
    store = PrekeyStore(path, BOB)
    assert store.private_for(bytes(8)) is None
    with pytest.raises(InputError):
        store.private_for(bytes(7))


def test_an_expired_newest_is_replaced(path: Path) -> None:
    store = PrekeyStore(path, BOB)
    first, _ = store.current(NOW)
    later, _ = store.current(NOW + 30 * DAY)
    assert later != first
    later.check_for(BOB.address, NOW + 30 * DAY)


def test_another_identity_cannot_open_the_file(path: Path) -> None:
    PrekeyStore(path, BOB).current(NOW)
    with pytest.raises(StorageError, match="damaged or belongs to another identity"):
        PrekeyStore(path, ALICE)


@pytest.mark.parametrize("where", [0, 10, -1], ids=["magic", "nonce", "tag"])
def test_a_damaged_file_is_refused_and_left_alone(path: Path, where: int) -> None:
    PrekeyStore(path, BOB).current(NOW)
    data = bytearray(path.read_bytes())
    data[where] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="damaged"):
        PrekeyStore(path, BOB)
    assert path.read_bytes() == bytes(data)


def test_a_file_others_can_read_is_refused(path: Path) -> None:
    PrekeyStore(path, BOB).current(NOW)
    path.chmod(0o640)
    with pytest.raises(StorageError, match="chmod 600"):
        PrekeyStore(path, BOB)


def test_a_symlink_is_not_followed(path: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    PrekeyStore(target, BOB).current(NOW)
    os.symlink(target, path)
    with pytest.raises(StorageError, match="cannot open the prekey file"):
        PrekeyStore(path, BOB)


def test_a_failed_write_changes_nothing(path: Path) -> None:
    store = PrekeyStore(path, BOB)
    first, _ = store.current(NOW)
    before = path.read_bytes()
    path.with_name("prekeys.tmp").mkdir()  # the temporary file cannot be created
    with pytest.raises(StorageError, match="cannot write the prekey file"):
        store.current(NOW + PREKEY_ROTATE_MS)
    assert path.read_bytes() == before
    assert store.published() == [first]


def test_injected_randomness_makes_the_prekey_reproducible(path: Path, tmp_path: Path) -> None:
    def fixed(n: int) -> bytes:
        return bytes(range(n))

    a, private = PrekeyStore(path, BOB, random=fixed).current(NOW)
    b, _ = PrekeyStore(tmp_path / "other", BOB, random=fixed).current(NOW)
    assert a == b
    assert private == bytes(range(96))
    assert a.prekey_id == bytes(range(8))
