"""The private halves of our prekeys, encrypted in the home's ``prekeys`` file.

Mail waiting at the relay can be opened only with the private half of the
prekey it was sealed to, so those halves are kept until every envelope sealed
to them has expired at the relay (:meth:`PrekeyStore.erase_expired`), then
erased: that is the forward secrecy prekeys give.

The file is encrypted with AES-256-GCM under a key derived from the identity
seed (HKDF, ``info = "p2ptransfer-prekey-store-v1"``), so unlocking the key
file unlocks the prekeys and nothing else: no passphrase of its own, nothing
in clear on disk. Layout::

    magic "P2PTPK1\\0" (8) || nonce (12) || AES-256-GCM(entries, aad = magic || owner key)
    entries = count:u16be || (length:u16be || signed prekey || private key (96))*

The owner's key is in the associated data, so a file copied from another home
does not open. It is written like the checkpoint (temporary file, fsync,
rename, fsync of the directory), 0600 and never through a symlink; a file
others may read is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from ..errors import ChannelError, DecodeError, InputError, StorageError
from ..protocol import primitives
from ..protocol.identity import Identity
from ..protocol.prekey import (
    PREKEY_ID_SIZE,
    PREKEY_ROTATE_MS,
    PREKEY_VALIDITY_MS,
    Prekey,
    PrekeyId,
    SignedPrekey,
    sign_prekey,
)
from ..protocol.transfer import check_timestamp

__all__ = ["PREKEY_STORE_INFO", "PrekeyStore"]

PREKEY_STORE_INFO = b"p2ptransfer-prekey-store-v1"
_MAGIC = b"P2PTPK1\x00"
_NONCE_SIZE = primitives.AEAD_NONCE_SIZE
_U16 = struct.Struct(">H")
_MAX_FILE = 1 << 20
_PUBLISHED = 2

_Entry = tuple[SignedPrekey, bytes]


class PrekeyStore:
    """Our signed prekeys and their private halves, kept in one encrypted file.

    ``random`` supplies fresh bytes (``os.urandom``; tests pass their own).
    Every method that changes the set writes the file before it returns.
    """

    def __init__(
        self, path: Path, identity: Identity, random: Callable[[int], bytes] = os.urandom
    ) -> None:
        self._path = Path(path)
        self._identity = identity
        self._random = random
        self._key = primitives.hkdf_sha256(identity.seed, b"", PREKEY_STORE_INFO, 32)
        self._aad = _MAGIC + identity.public.public_key
        self._entries: list[_Entry] = self._load()

    def __repr__(self) -> str:
        return f"PrekeyStore({str(self._path)!r}, {len(self._entries)} prekeys)"

    # --- the API ------------------------------------------------------------------

    def current(self, now_ms: int) -> tuple[SignedPrekey, bytes]:
        """The prekey to publish now and its private half, made or rotated as needed.

        A new one is made when there is none, when the newest is
        :data:`~p2ptransfer.protocol.prekey.PREKEY_ROTATE_MS` old, or when it
        has expired; it is valid from ``now_ms`` for
        :data:`~p2ptransfer.protocol.prekey.PREKEY_VALIDITY_MS`.
        """
        check_timestamp(now_ms, "now")
        newest = self._newest()
        if newest is not None:
            prekey = newest[0].prekey
            if now_ms - prekey.not_before < PREKEY_ROTATE_MS and now_ms < prekey.not_after:
                return newest
        return self._create(now_ms)

    def rotate(self, now_ms: int) -> tuple[SignedPrekey, bytes]:
        """A new prekey now, whatever the age of the newest (the relay serves ones we lack)."""
        check_timestamp(now_ms, "now")
        return self._create(now_ms)

    def private_for(self, prekey_id: bytes) -> bytes | None:
        """The private half of prekey ``prekey_id``; None if unknown or erased."""
        if type(prekey_id) is not bytes or len(prekey_id) != PREKEY_ID_SIZE:
            raise InputError(f"a prekey id is exactly {PREKEY_ID_SIZE} bytes")
        for signed, private in self._entries:
            if primitives.constant_time_equal(signed.prekey_id, prekey_id):
                return private
        return None

    def erase_expired(self, now_ms: int, max_mail_age_ms: int) -> int:
        """Erase the private halves no waiting mail can need; how many were erased.

        A prekey's mail can be sealed until ``not_after`` and waits at the relay
        at most ``max_mail_age_ms`` (the relay announces it), so its private
        half goes once ``not_after + max_mail_age_ms`` has passed.
        """
        check_timestamp(now_ms, "now")
        if type(max_mail_age_ms) is not int or max_mail_age_ms < 0:
            raise InputError("the maximum mail age must be a non-negative integer")
        keep = [e for e in self._entries if e[0].prekey.not_after + max_mail_age_ms > now_ms]
        erased = len(self._entries) - len(keep)
        if erased:
            self._save(keep)
        return erased

    def published(self) -> list[SignedPrekey]:
        """The newest two signed prekeys (newest first): what the relay should serve."""
        ordered = sorted(self._entries, key=lambda e: e[0].prekey.not_before, reverse=True)
        return [signed for signed, _private in ordered[:_PUBLISHED]]

    # --- making prekeys -------------------------------------------------------------

    def _newest(self) -> _Entry | None:
        return max(self._entries, key=lambda e: e[0].prekey.not_before, default=None)

    def _create(self, now_ms: int) -> _Entry:
        private = self._random(primitives.HPKE_PRIVATE_KEY_SIZE)
        prekey = Prekey(
            owner=self._identity.public.public_key,
            prekey_id=PrekeyId(self._random(PREKEY_ID_SIZE)),
            kem_public=primitives.hpke_public_from_private(private),
            not_before=now_ms,
            not_after=now_ms + PREKEY_VALIDITY_MS,
        )
        entry = (sign_prekey(self._identity, prekey), private)
        self._save([*self._entries, entry])
        return entry

    # --- the file ---------------------------------------------------------------------

    def _load(self) -> list[_Entry]:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self._path, flags)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot open the prekey file {self._path}: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StorageError(f"the prekey file {self._path} is not a regular file")
            if os.name == "posix" and stat.S_IMODE(info.st_mode) & 0o077:
                raise StorageError(
                    f"the prekey file {self._path} is readable or writable by other users; "
                    f"run: chmod 600 {self._path}"
                )
            data = os.read(fd, _MAX_FILE + 1)
        finally:
            os.close(fd)
        return self._decrypt(data)

    def _decrypt(self, data: bytes) -> list[_Entry]:
        damaged = f"the prekey file {self._path} is damaged or belongs to another identity"
        header = len(_MAGIC) + _NONCE_SIZE
        if len(data) > _MAX_FILE or len(data) < header or not data.startswith(_MAGIC):
            raise StorageError(damaged)
        try:
            plaintext = primitives.aead_open(
                self._key, data[len(_MAGIC) : header], data[header:], self._aad
            )
        except ChannelError as exc:
            raise StorageError(damaged) from exc
        try:
            return self._parse(plaintext)
        except (DecodeError, InputError, struct.error) as exc:
            raise StorageError(f"{damaged}: {exc}") from exc

    def _parse(self, plaintext: bytes) -> list[_Entry]:
        (count,) = _U16.unpack_from(plaintext, 0)
        pos = _U16.size
        entries: list[_Entry] = []
        for _ in range(count):
            (length,) = _U16.unpack_from(plaintext, pos)
            pos += _U16.size
            signed = SignedPrekey.decode(plaintext[pos : pos + length])
            pos += length
            private = plaintext[pos : pos + primitives.HPKE_PRIVATE_KEY_SIZE]
            pos += primitives.HPKE_PRIVATE_KEY_SIZE
            if len(private) != primitives.HPKE_PRIVATE_KEY_SIZE:
                raise DecodeError("truncated private key")
            if signed.prekey.owner != self._identity.public.public_key:
                raise DecodeError("a prekey of another owner")
            if primitives.hpke_public_from_private(private) != signed.prekey.kem_public:
                raise DecodeError("a private key that does not match its prekey")
            entries.append((signed, private))
        if pos != len(plaintext):
            raise DecodeError("trailing bytes")
        return entries

    def _save(self, entries: list[_Entry]) -> None:
        parts = [_U16.pack(len(entries))]
        for signed, private in entries:
            wire = signed.encode()
            parts += [_U16.pack(len(wire)), wire, private]
        nonce = self._random(_NONCE_SIZE)
        sealed = primitives.aead_seal(self._key, nonce, b"".join(parts), self._aad)
        self._write(_MAGIC + nonce + sealed)
        self._entries = entries

    def _write(self, data: bytes) -> None:
        temporary = self._path.with_name(self._path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(temporary, flags, 0o600)
            try:
                if os.name == "posix" and stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                    os.fchmod(fd, 0o600)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self._path)
            if os.name == "posix":
                dir_fd = os.open(self._path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise StorageError(
                f"cannot write the prekey file {self._path}: {exc.strerror}"
            ) from exc
