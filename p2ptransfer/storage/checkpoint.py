"""The signed head checkpoint: what makes a rollback or a cut-off tail visible.

The journal's hash chain proves that entries were not edited *in the
middle*, but a whole older copy of the file is a perfectly valid chain, and
so is a journal whose last entries were cut off together with its head
row. The checkpoint is the owner's signature over (seq, hash) of the head,
kept in a file **beside** the ledger and replaced after each commit::

    checkpoint = encode(seq, hash, public key, Sig_owner(context ‖ seq ‖ hash))

``verify`` then requires that the journal still holds entry ``seq`` with
exactly that ``hash``. A ledger restored from a backup, or one whose tail
was cut, fails that check unless the checkpoint was rolled back too — which
takes a second, separate file, and an older one, to be restored with it.

The file is written atomically (temporary file, fsync, rename, fsync of the
directory), so a crash leaves either the old checkpoint or the new one. A
checkpoint one commit behind the head (a crash between the commit and the
rename) is fine: its entry is still in the journal with the same hash.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import DecodeError, LedgerIntegrityError, SignatureError, StorageError
from ..protocol.encoding import Field, FixedBytes, Schema, UInt
from ..protocol.identity import Identity, PublicIdentity

__all__ = ["Checkpoint", "checkpoint_path", "read_checkpoint", "write_checkpoint"]

CHECKPOINT_CONTEXT = b"p2ptransfer-ledger-checkpoint-v1\x00"

CHECKPOINT_SCHEMA = Schema(
    "ledger-checkpoint",
    0x52,
    [
        Field(1, "seq", UInt(64)),
        Field(2, "hash", FixedBytes(32)),
        Field(3, "public_key", FixedBytes(32)),
        Field(4, "signature", FixedBytes(64)),
    ],
    max_size=256,
)


@dataclass(frozen=True)
class Checkpoint:
    """The owner's signed word that the journal reached entry ``seq`` with hash ``hash``."""

    seq: int
    hash: bytes
    public_key: bytes
    signature: bytes

    @staticmethod
    def message(seq: int, digest: bytes) -> bytes:
        return CHECKPOINT_CONTEXT + seq.to_bytes(8, "big") + digest

    @classmethod
    def sign(cls, identity: Identity, seq: int, digest: bytes) -> Checkpoint:
        public_key = PublicIdentity.from_address(identity.address).public_key
        return cls(seq, digest, public_key, identity.sign(cls.message(seq, digest)))

    def encode(self) -> bytes:
        return CHECKPOINT_SCHEMA.encode(
            {
                "seq": self.seq,
                "hash": self.hash,
                "public_key": self.public_key,
                "signature": self.signature,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        fields = CHECKPOINT_SCHEMA.decode(data)
        return cls(fields["seq"], fields["hash"], fields["public_key"], fields["signature"])

    def verify(self, owner: bytes) -> None:
        """SignatureError unless ``owner`` signed this checkpoint."""
        if self.public_key != owner:
            raise SignatureError("the checkpoint is signed by another key than the ledger's owner")
        PublicIdentity(owner).verify(self.signature, self.message(self.seq, self.hash))


def checkpoint_path(ledger_path: Path) -> Path:
    """Where the checkpoint of the ledger at ``ledger_path`` lives: beside it."""
    return ledger_path.with_name(ledger_path.name + ".checkpoint")


def read_checkpoint(ledger_path: Path) -> Checkpoint | None:
    """The stored checkpoint, None if there is none; LedgerIntegrityError if unreadable."""
    path = checkpoint_path(ledger_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the ledger checkpoint {path}: {exc.strerror}") from exc
    try:
        return Checkpoint.decode(data)
    except DecodeError as exc:
        raise LedgerIntegrityError(f"the ledger checkpoint {path} is damaged: {exc}") from exc


def write_checkpoint(ledger_path: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically: a crash leaves the old one or the new one."""
    path = checkpoint_path(ledger_path)
    temporary = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(temporary, flags, 0o600)
        try:
            if os.name == "posix" and stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                os.fchmod(fd, 0o600)
            os.write(fd, checkpoint.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise StorageError(f"cannot write the ledger checkpoint {path}: {exc.strerror}") from exc


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
