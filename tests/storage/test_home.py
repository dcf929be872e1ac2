"""The home directory: permissions, no overwrites, and the key file on disk.

Modes are checked under umask 000, so they come from the code (0700 / 0600
passed explicitly), not from a friendly umask. scrypt runs at log2(n) = 10.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2ptransfer.errors import (
    AlreadyExists,
    CorruptKeyFile,
    InputError,
    InsecureKeyFile,
    KeyFileError,
    NotFound,
    P2PTransferError,
    StorageError,
    WrongPassphrase,
)
from p2ptransfer.protocol.keyfile import HEADER, KEY_FILE, KdfParams
from p2ptransfer.storage.home import (
    KDF_LOG_N_ENV,
    Home,
    default_home_path,
    kdf_params_from_env,
)

PASSPHRASE = "tr0ub4dor&3 — home test"
FAST = KdfParams(log_n=10)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission semantics")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "nested" / "home")


@pytest.fixture
def created(home: Home) -> tuple[Home, str]:
    identity = home.create_identity(PASSPHRASE, "alice", FAST)
    return home, identity.address


def test_paths(tmp_path: Path) -> None:
    h = Home(tmp_path)
    assert h.key_path == tmp_path / "identity.key"
    assert h.profile_path == tmp_path / "profile.json"
    assert h.ledger_path == tmp_path / "ledger.sqlite3"
    assert Home(str(tmp_path)).path == tmp_path


def test_create_sets_modes_even_under_umask_000(home: Home, umask_000: None) -> None:
    home.create_identity(PASSPHRASE, "alice", FAST)
    assert mode(home.path) == 0o700
    assert mode(home.key_path) == 0o600
    assert mode(home.profile_path) == 0o600


def test_existing_open_home_is_tightened(home: Home, umask_000: None) -> None:
    home.path.mkdir(parents=True, mode=0o755)
    assert mode(home.path) == 0o755
    home.ensure_directory()
    assert mode(home.path) == 0o700


def test_created_identity_loads_back(created: tuple[Home, str]) -> None:
    home, address = created
    assert home.exists()
    assert home.load_identity(PASSPHRASE).address == address
    assert home.public_identity().address == address
    assert home.name == "alice"


def test_key_file_carries_the_requested_kdf_params(created: tuple[Home, str]) -> None:
    home, _ = created
    header = HEADER.decode(KEY_FILE.decode(home.key_path.read_bytes())["header"])
    assert (header["log_n"], header["r"], header["p"]) == (10, 8, 1)


def test_public_identity_needs_no_passphrase_and_no_scrypt(
    created: tuple[Home, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2ptransfer.protocol import primitives

    def tripwire(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("public_identity must not run scrypt")

    home, address = created
    monkeypatch.setattr(primitives, "scrypt", tripwire)
    assert home.public_identity().address == address


def test_wrong_passphrase(created: tuple[Home, str]) -> None:
    home, _ = created
    with pytest.raises(WrongPassphrase, match=r"^wrong passphrase for this key file$"):
        home.load_identity(PASSPHRASE + "!")


def test_change_passphrase_keeps_the_identity_and_replaces_the_file(
    created: tuple[Home, str], umask_000: None
) -> None:
    home, address = created
    before = home.key_path.read_bytes()
    assert home.change_passphrase(PASSPHRASE, "new words", FAST).address == address
    assert home.key_path.read_bytes() != before
    assert mode(home.key_path) == 0o600
    assert home.load_identity("new words").address == address
    with pytest.raises(WrongPassphrase):
        home.load_identity(PASSPHRASE)
    assert sorted(p.name for p in home.path.iterdir()) == ["identity.key", "profile.json"]


def test_change_passphrase_with_the_wrong_one_writes_nothing(created: tuple[Home, str]) -> None:
    home, _ = created
    before = home.key_path.read_bytes()
    with pytest.raises(WrongPassphrase):
        home.change_passphrase("not it", "new words", FAST)
    assert home.key_path.read_bytes() == before
    assert sorted(p.name for p in home.path.iterdir()) == ["identity.key", "profile.json"]


def test_refuses_to_overwrite_an_identity(created: tuple[Home, str]) -> None:
    home, address = created
    before = home.key_path.read_bytes()
    with pytest.raises(AlreadyExists) as info:
        home.create_identity("another passphrase", "mallory", FAST)
    assert str(info.value) == (f"an identity already exists in {home.path}; refusing to overwrite")
    assert home.key_path.read_bytes() == before
    assert home.load_identity(PASSPHRASE).address == address
    assert home.name == "alice"


def test_o_excl_refuses_a_planted_dangling_symlink(home: Home, tmp_path: Path) -> None:
    """``exists()`` is False for a dangling symlink; O_EXCL still refuses to follow it."""
    home.ensure_directory()
    target = tmp_path / "attacker-chosen-target"
    home.key_path.symlink_to(target)
    assert not home.exists()
    with pytest.raises(AlreadyExists) as info:
        home.create_identity(PASSPHRASE, "alice", FAST)
    assert str(info.value) == f"{home.key_path} already exists; refusing to overwrite"
    assert not target.exists()


def test_o_excl_refuses_a_file_that_appears_late(home: Home) -> None:
    """The same guard the race (another ``init`` between check and create) hits."""
    home.ensure_directory()
    home.profile_path.write_text('{"name": "earlier"}')
    with pytest.raises(
        AlreadyExists, match=r"profile\.json already exists; refusing to overwrite$"
    ):
        home._write_new(home.profile_path, b"{}")
    assert json.loads(home.profile_path.read_text()) == {"name": "earlier"}


@pytest.mark.parametrize(
    "bad_mode",
    [0o644, 0o640, 0o604, 0o660, 0o606, 0o666, 0o610, 0o601, 0o620, 0o602],
    ids=lambda m: f"mode-{m:04o}",
)
def test_insecure_key_file_is_refused_with_advice(created: tuple[Home, str], bad_mode: int) -> None:
    home, _ = created
    home.key_path.chmod(bad_mode)
    for call in (lambda: home.load_identity(PASSPHRASE), home.public_identity):
        with pytest.raises(InsecureKeyFile) as info:
            call()
        assert str(info.value) == (
            f"{home.key_path} is accessible by other users (mode {bad_mode:04o}); "
            f"run 'chmod 600 {home.key_path}'"
        )
        assert isinstance(info.value, KeyFileError)


@pytest.mark.parametrize(
    "good_mode", [0o600, 0o400, 0o700], ids=["mode-0600", "mode-0400", "mode-0700"]
)
def test_owner_only_modes_load(created: tuple[Home, str], good_mode: int) -> None:
    home, address = created
    home.key_path.chmod(good_mode)
    assert home.load_identity(PASSPHRASE).address == address


def test_missing_identity(home: Home) -> None:
    assert not home.exists()
    for call in (lambda: home.load_identity(PASSPHRASE), home.public_identity):
        with pytest.raises(NotFound) as info:
            call()
        assert str(info.value) == f"no identity in {home.path}; run 'p2ptransfer init' first"


def test_damaged_key_file_on_disk(created: tuple[Home, str]) -> None:
    home, _ = created
    data = bytearray(home.key_path.read_bytes())
    data[-1] ^= 0x01
    home.key_path.write_bytes(bytes(data))
    with pytest.raises(CorruptKeyFile, match=r"^key file is damaged \(checksum mismatch\)$"):
        home.load_identity(PASSPHRASE)


def test_oversized_key_file_is_not_read_whole(created: tuple[Home, str]) -> None:
    home, _ = created
    home.key_path.write_bytes(b"\x71" + bytes(10_000))
    with pytest.raises(CorruptKeyFile) as info:
        home.public_identity()
    assert str(info.value) == f"{home.key_path} is larger than any key file (4096 bytes)"


def test_unreadable_key_path_is_a_storage_error_not_a_traceback(home: Home) -> None:
    """A directory where the key file should be: open() fails with an OSError."""
    home.ensure_directory()
    home.key_path.mkdir(mode=0o700)
    for call in (lambda: home.load_identity(PASSPHRASE), home.public_identity):
        with pytest.raises(StorageError) as info:
            call()
        assert str(info.value) == f"cannot read {home.key_path}: Is a directory"


# --- profile -------------------------------------------------------------------


def test_name_without_profile_is_empty(created: tuple[Home, str]) -> None:
    home, _ = created
    home.profile_path.unlink()
    assert home.name == ""


@pytest.mark.parametrize(
    "content",
    [b"not json", b"{}", b"[]", b'{"name": 42}', b"\xff\xfe"],
    ids=["not-json", "no-name", "list", "name-not-text", "binary"],
)
def test_damaged_profile(created: tuple[Home, str], content: bytes) -> None:
    home, _ = created
    home.profile_path.write_bytes(content)
    with pytest.raises(StorageError, match=r"profile\.json is damaged"):
        _ = home.name


def test_unreadable_profile_is_a_storage_error(created: tuple[Home, str]) -> None:
    home, _ = created
    home.profile_path.unlink()
    home.profile_path.mkdir()
    with pytest.raises(StorageError) as info:
        _ = home.name
    assert str(info.value) == f"cannot read {home.profile_path}: Is a directory"


def test_name_keeps_unicode(home: Home) -> None:
    home.create_identity(PASSPHRASE, "Zoë 🦊", FAST)
    assert home.name == "Zoë 🦊"


# --- environment ------------------------------------------------------------------


def test_kdf_log_n_env_lowers_cost_for_new_keys(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KDF_LOG_N_ENV, "11")
    assert kdf_params_from_env() == KdfParams(log_n=11)
    home.create_identity(PASSPHRASE, "alice")
    header = HEADER.decode(KEY_FILE.decode(home.key_path.read_bytes())["header"])
    assert header["log_n"] == 11


def test_kdf_log_n_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KDF_LOG_N_ENV, raising=False)
    assert kdf_params_from_env() == KdfParams(log_n=17)
    monkeypatch.setenv(KDF_LOG_N_ENV, "")
    assert kdf_params_from_env() == KdfParams(log_n=17)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("9", "scrypt log2(n) must be between 10 and 20"),
        ("21", "scrypt log2(n) must be between 10 and 20"),
        ("ten", "invalid literal for int() with base 10: 'ten'"),
        ("1e1", "invalid literal for int() with base 10: '1e1'"),
    ],
    ids=["below-floor", "above-max", "word", "float"],
)
def test_kdf_log_n_env_invalid(monkeypatch: pytest.MonkeyPatch, raw: str, detail: str) -> None:
    monkeypatch.setenv(KDF_LOG_N_ENV, raw)
    with pytest.raises(StorageError) as info:
        kdf_params_from_env()
    assert (
        str(info.value) == f"P2PTRANSFER_KDF_LOG_N={raw!r} is not a valid scrypt log2(n): {detail}"
    )


def test_default_home_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("P2PTRANSFER_HOME", str(tmp_path / "h"))
    assert default_home_path() == tmp_path / "h"
    monkeypatch.delenv("P2PTRANSFER_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home_path() == tmp_path / "xdg" / "p2ptransfer"


# --- no secrets in errors -----------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        todo += [e.__cause__, e.__context__]
    return out


def test_errors_never_contain_passphrase_or_seed(home: Home) -> None:
    identity = home.create_identity(PASSPHRASE, "alice", FAST)
    seed_texts = [identity.seed.hex(), repr(identity.seed)[2:-1]]
    raised: list[BaseException] = []
    attempts: list[Callable[[], object]] = [
        lambda: home.load_identity("not " + PASSPHRASE),
        lambda: home.create_identity(PASSPHRASE, "again", FAST),
    ]
    for attempt in attempts:
        with pytest.raises(P2PTransferError) as info:
            attempt()
        raised.append(info.value)
    home.key_path.chmod(0o644)
    with pytest.raises(InsecureKeyFile) as insecure:
        home.load_identity(PASSPHRASE)
    raised.append(insecure.value)
    home.key_path.chmod(0o600)
    home.key_path.write_bytes(home.key_path.read_bytes()[:-3])
    with pytest.raises(CorruptKeyFile) as corrupt:
        home.load_identity(PASSPHRASE)
    raised.append(corrupt.value)
    for exc in raised:
        for e in _chain(exc):
            for text in (str(e), repr(e)):
                assert PASSPHRASE not in text
                for seed_text in seed_texts:
                    assert seed_text not in text


def test_existing_non_empty_open_directory_is_refused_not_chmodded(
    home: Home, umask_000: None
) -> None:
    """``--home ~`` must not quietly chmod somebody's home directory."""
    home.path.mkdir(parents=True, mode=0o755)
    (home.path / "notes.txt").write_text("mine")
    with pytest.raises(StorageError, match="not empty and is accessible by other users"):
        home.ensure_directory()
    assert mode(home.path) == 0o755
    assert not home.key_path.exists()


def test_symlinked_key_file_is_refused(home: Home, created_elsewhere: Path) -> None:
    home.ensure_directory()
    home.key_path.symlink_to(created_elsewhere)
    with pytest.raises(StorageError, match=r"cannot read .*identity\.key"):
        home.public_identity()


@pytest.fixture
def created_elsewhere(tmp_path: Path) -> Path:
    other = Home(tmp_path / "other")
    other.create_identity(PASSPHRASE, "other", KdfParams(log_n=10))
    return other.key_path


# --- the home is checked at every use, not only at init --------------------------------


@pytest.mark.parametrize("bad_mode", [0o750, 0o705, 0o755, 0o770, 0o777], ids=oct)
def test_loose_home_directory_is_refused_at_every_open(
    created: tuple[Home, str], bad_mode: int
) -> None:
    home, _ = created
    home.path.chmod(bad_mode)
    try:
        for call in (
            lambda: home.load_identity(PASSPHRASE),
            home.public_identity,
            home.check_permissions,
        ):
            with pytest.raises(StorageError) as info:
                call()
            assert str(info.value) == (
                f"{home.path} is accessible by other users (mode {bad_mode:04o}); "
                f"run 'chmod 700 {home.path}'"
            )
    finally:
        home.path.chmod(0o700)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("identity.key", InsecureKeyFile),
        ("profile.json", StorageError),
        ("ledger.sqlite3", StorageError),
        ("ledger.sqlite3-wal", StorageError),
        ("ledger.sqlite3-shm", StorageError),
    ],
)
def test_loose_files_in_the_home_are_refused(
    created: tuple[Home, str], name: str, error: type[P2PTransferError]
) -> None:
    home, _ = created
    path = home.path / name
    if not path.exists():
        path.write_bytes(b"")
    path.chmod(0o600)
    home.check_permissions()
    path.chmod(0o640)
    with pytest.raises(error) as info:
        home.check_permissions()
    assert str(info.value) == (
        f"{path} is accessible by other users (mode 0640); run 'chmod 600 {path}'"
    )


def test_absent_files_are_fine(home: Home) -> None:
    home.ensure_directory()
    home.check_permissions()


# --- the display name follows the display-text rule ----------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "the name cannot be empty"),
        ("   ", "the name cannot be empty"),
        ("a\x1bb", "the name contains a forbidden character U+001B (control character)"),
        ("\u202eecila", "the name contains a forbidden character U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("a\u200db", "the name contains a forbidden character U+200D (ZERO WIDTH JOINER)"),
        ("\u3164", "the name contains a forbidden character U+3164 (HANGUL FILLER)"),
        ("\ue000", "the name contains a forbidden character U+E000 (private-use character)"),
        ("x" * 65, "the name is 65 characters; at most 64 are allowed"),
    ],
    ids=["empty", "blank", "escape", "override", "joiner", "filler", "private-use", "too-long"],
)
def test_create_refuses_bad_display_names_and_writes_nothing(
    home: Home, name: str, message: str
) -> None:
    with pytest.raises(InputError) as info:
        home.create_identity(PASSPHRASE, name, FAST)
    assert str(info.value).startswith(message)
    assert not home.path.exists()


def test_create_stores_the_name_stripped_and_nfc(home: Home) -> None:
    home.create_identity(PASSPHRASE, "  Zoe\u0308  ", FAST)
    assert home.name == "Zo\u00eb"
