"""A peer's home directory: where its key file, profile and ledger live.

The home is created 0700 and every file in it 0600, so other local users
cannot read the key file or the ledger. Every time a home is used
(:meth:`Home.check_permissions`, and every read of the key file) a home
directory, key file, profile or ledger that group or others may read or
write is refused (as ssh does with ~/.ssh), naming the path and the chmod
to run, instead of quietly using a key or a history that may have been
copied or changed by somebody else.

The display name is checked here too (:func:`check_display_name`), so a
home made through the library follows the same rule as one made by ``init``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
import unicodedata
from pathlib import Path

from ..errors import (
    AlreadyExists,
    CorruptKeyFile,
    InputError,
    InsecureKeyFile,
    NotFound,
    StorageError,
)
from ..protocol.identity import Identity, PublicIdentity
from ..protocol.keyfile import (
    DEFAULT_LOG_N,
    SALT_SIZE,
    KdfParams,
    open_key_file,
    read_public_key,
    seal_key_file,
)
from ..protocol.text import check_display_text

__all__ = ["KDF_LOG_N_ENV", "MAX_NAME_CHARS", "Home", "check_display_name", "default_home_path"]

HOME_ENV = "P2PTRANSFER_HOME"
KDF_LOG_N_ENV = "P2PTRANSFER_KDF_LOG_N"
_MAX_KEY_FILE = 4096
_MAX_PROFILE = 64 * 1024
MAX_NAME_CHARS = 64
_LEDGER_SIDE_FILES = ("-wal", "-shm", "-journal")


def check_display_name(name: str, what: str = "the name") -> str:
    """A display name: surrounding space removed, 1-64 characters, Unicode NFC.

    Names are shown in terminals next to amounts, so they follow the one rule
    for display text (:func:`~p2ptransfer.protocol.text.check_display_text`):
    no control, invisible, text-direction, blank-looking, private-use or
    unassigned characters, no pile of combining marks. InputError otherwise.
    """
    if not isinstance(name, str):
        raise InputError(f"{what} must be text")
    stripped = name.strip()
    if not stripped:
        raise InputError(f"{what} cannot be empty")
    check_display_text(stripped, what=what, max_chars=MAX_NAME_CHARS)
    return unicodedata.normalize("NFC", stripped)


def default_home_path() -> Path:
    """``$P2PTRANSFER_HOME``, else the platform's per-user data directory."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "p2ptransfer"


def kdf_params_from_env() -> KdfParams:
    """scrypt cost for *new* keys; ``P2PTRANSFER_KDF_LOG_N`` lowers it (weaker keys, for tests)."""
    raw = os.environ.get(KDF_LOG_N_ENV)
    if not raw:
        return KdfParams(DEFAULT_LOG_N)
    try:
        return KdfParams(int(raw))
    except ValueError as exc:
        raise StorageError(
            f"{KDF_LOG_N_ENV}={raw!r} is not a valid scrypt log2(n): {exc}"
        ) from None


class Home:
    """Paths and file-level operations of one peer's home directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()

    @property
    def key_path(self) -> Path:
        return self.path / "identity.key"

    @property
    def profile_path(self) -> Path:
        return self.path / "profile.json"

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger.sqlite3"

    @property
    def prekeys_path(self) -> Path:
        """The private halves of our mail prekeys (encrypted under the identity)."""
        return self.path / "prekeys"

    def exists(self) -> bool:
        return self.key_path.exists()

    def check_permissions(self) -> None:
        """Refuse a home that other users can read or write, as ssh refuses a loose ~/.ssh.

        The directory must be 0700 or stricter, the key file, profile and
        ledger (with SQLite's side files) 0600 or stricter; the error names the
        path and the chmod that fixes it. Files that do not exist yet are fine.
        Called on every use of a home, not only at ``init``: modes change.
        """
        if os.name != "posix":
            return
        _refuse_loose_mode(self.path, 0o700, StorageError)
        _refuse_loose_mode(self.key_path, 0o600, InsecureKeyFile)
        _refuse_loose_mode(self.profile_path, 0o600, StorageError)
        _refuse_loose_mode(self.ledger_path, 0o600, StorageError)
        _refuse_loose_mode(self.prekeys_path, 0o600, StorageError)
        for suffix in _LEDGER_SIDE_FILES:
            side = self.ledger_path.with_name(self.ledger_path.name + suffix)
            _refuse_loose_mode(side, 0o600, StorageError)

    def ensure_directory(self) -> None:
        """Create the home 0700 (parents as needed).

        An existing *empty* directory open to others is tightened to 0700; a
        non-empty one is refused rather than changed: ``--home ~`` must not
        quietly chmod somebody's home directory.
        """
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            mode = stat.S_IMODE(self.path.stat().st_mode)
            if mode & 0o077:
                if any(self.path.iterdir()):
                    raise StorageError(
                        f"{self.path} is not empty and is accessible by other users "
                        f"(mode {mode:04o}); choose a new directory for the home, "
                        f"or run 'chmod 700 {self.path}' if it really is yours alone"
                    )
                self.path.chmod(0o700)
        except OSError as exc:
            raise StorageError(f"cannot create home directory {self.path}: {exc.strerror}") from exc

    def create_identity(
        self, passphrase: str, name: str, params: KdfParams | None = None
    ) -> Identity:
        """Generate a new identity and seal it; never overwrites an existing key file.

        ``name`` must pass :func:`check_display_name` (it is stored in that form).
        """
        name = check_display_name(name)
        if self.key_path.exists():
            raise AlreadyExists(f"an identity already exists in {self.path}; refusing to overwrite")
        params = params or kdf_params_from_env()
        self.ensure_directory()
        identity = Identity(secrets.token_bytes(32))
        data = seal_key_file(
            identity,
            passphrase,
            salt=secrets.token_bytes(SALT_SIZE),
            nonce=secrets.token_bytes(12),
            params=params,
        )
        # The profile first, replacing any leftover of an earlier failed init: the key
        # file is the identity, and it is written last and only if absent (O_EXCL).
        profile_tmp = self.path / f".profile.{secrets.token_hex(8)}.tmp"
        self._write_new(profile_tmp, json.dumps({"name": name}).encode())
        os.replace(profile_tmp, self.profile_path)
        self._write_new(self.key_path, data)
        return identity

    def change_passphrase(self, old: str, new: str, params: KdfParams | None = None) -> Identity:
        """Seal the same identity under ``new`` (fresh salt and nonce); WrongPassphrase for ``old``.

        The new key file is written beside the old one (O_EXCL, 0600, fsync),
        renamed over it, and the directory synced: a crash leaves the old key
        file or the new one, never a mix, and the address never changes.
        """
        identity = self.load_identity(old)  # a wrong old passphrase writes nothing
        data = seal_key_file(
            identity,
            new,
            salt=secrets.token_bytes(SALT_SIZE),
            nonce=secrets.token_bytes(12),
            params=params or kdf_params_from_env(),
        )
        tmp = self.path / f".identity.{secrets.token_hex(8)}.tmp"
        self._write_new(tmp, data)
        try:
            os.replace(tmp, self.key_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot replace {self.key_path}: {exc.strerror}") from exc
        _fsync_directory(self.path)
        return identity

    def _write_new(self, path: Path, data: bytes) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise AlreadyExists(f"{path} already exists; refusing to overwrite") from exc
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise StorageError(f"cannot write {path}: {exc.strerror}") from exc

    def _key_file_bytes(self) -> bytes:
        if os.name == "posix" and self.path.is_dir():
            _refuse_loose_mode(self.path, 0o700, StorageError)
        # One descriptor for the check and the read (no window between them), and no
        # symlinks: the key file is a regular file of its own.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.key_path, flags)
        except FileNotFoundError:
            raise NotFound(f"no identity in {self.path}; run 'p2ptransfer init' first") from None
        except OSError as exc:  # a symlink (ELOOP), unreadable: not a traceback
            raise StorageError(f"cannot read {self.key_path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise StorageError(f"cannot read {self.key_path}: Is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise StorageError(f"cannot read {self.key_path}: not a regular file")
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as fh:
            if os.name == "posix" and stat.S_IMODE(st.st_mode) & 0o077:
                raise InsecureKeyFile(
                    f"{self.key_path} is accessible by other users "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {self.key_path}'"
                )
            try:
                data = fh.read(_MAX_KEY_FILE + 1)
            except OSError as exc:
                raise StorageError(f"cannot read {self.key_path}: {exc.strerror}") from exc
        if len(data) > _MAX_KEY_FILE:
            raise CorruptKeyFile(
                f"{self.key_path} is larger than any key file ({_MAX_KEY_FILE} bytes)"
            )
        return data

    def load_identity(self, passphrase: str) -> Identity:
        """Unlock the identity (slow by design: scrypt)."""
        return open_key_file(self._key_file_bytes(), passphrase)

    def public_identity(self) -> PublicIdentity:
        """The identity's public half, readable without the passphrase."""
        return PublicIdentity(read_public_key(self._key_file_bytes()))

    @property
    def name(self) -> str:
        """The display name chosen at ``init``."""
        try:
            raw = self.profile_path.read_bytes()[:_MAX_PROFILE]
            name = json.loads(raw)["name"]
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise StorageError(f"cannot read {self.profile_path}: {exc.strerror}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{self.profile_path} is damaged: {exc}") from exc
        if not isinstance(name, str):
            raise StorageError(f"{self.profile_path} is damaged: name is not text")
        return name


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX); best effort where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_loose_mode(
    path: Path, strictest: int, error: type[StorageError] | type[InsecureKeyFile]
) -> None:
    """Raise ``error`` if group or others have any access to ``path`` (absent: fine)."""
    try:
        st = path.stat()  # through a symlink: what matters is who can reach the data
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot check {path}: {exc.strerror}") from exc
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise error(
            f"{path} is accessible by other users (mode {mode:04o}); "
            f"run 'chmod {strictest:o} {path}'"
        )
