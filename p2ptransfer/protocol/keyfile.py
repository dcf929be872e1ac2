"""The identity key file format: an Ed25519 seed sealed under a passphrase.

Why our own small format rather than PKCS#8 ``BestAvailableEncryption``: in
the cryptography releases we support that is PBKDF2 with a few thousand
iterations, far too cheap against offline guessing. Here the passphrase goes
through scrypt (default n = 2**17, r = 8, p = 1: about half a second and
128 MiB) and the seed is sealed with AES-256-GCM; every header byte (format
version, KDF parameters, salt, nonce, public key) is associated data, so none
can be changed without the seal failing.

A file is three canonical-encoding fields: the header, the sealed seed, and
a SHA-256 checksum of both. The checksum is not a security measure (anyone
can recompute it); it lets us tell a **damaged** file (checksum fails) from a
**wrong passphrase** (checksum fine, seal fails), two different problems for
the user. KDF parameters read from a file are bounded before use, so a
hostile file cannot make unlocking allocate more than 1 GiB (``MAX_MEMORY``).

Pure functions over bytes: salt and nonce come from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ChannelError, CorruptKeyFile, DecodeError, KeyFileError, WrongPassphrase
from . import primitives
from .encoding import Bytes, Field, FixedBytes, Schema, UInt
from .identity import Identity

__all__ = [
    "DEFAULT_LOG_N",
    "MAX_LOG_N",
    "MAX_MEMORY",
    "MIN_LOG_N",
    "KdfParams",
    "open_key_file",
    "read_public_key",
    "seal_key_file",
]

FORMAT_VERSION = 1
KDF_SCRYPT = 1
DEFAULT_LOG_N = 17
MIN_LOG_N = 10
MAX_LOG_N = 20
MAX_MEMORY = 1 << 30  # bytes scrypt may use (128 * r * n): the bound a hostile file meets
SALT_SIZE = 16
_SEALED_SIZE = 32 + primitives.AEAD_TAG_SIZE

HEADER = Schema(
    "keyfile-header",
    0x70,
    [
        Field(1, "version", UInt(8)),
        Field(2, "kdf", UInt(8)),
        Field(3, "log_n", UInt(8)),
        Field(4, "r", UInt(8)),
        Field(5, "p", UInt(8)),
        Field(6, "salt", FixedBytes(SALT_SIZE)),
        Field(7, "nonce", FixedBytes(primitives.AEAD_NONCE_SIZE)),
        Field(8, "public_key", FixedBytes(32)),
    ],
    max_size=256,
)

KEY_FILE = Schema(
    "keyfile",
    0x71,
    [
        Field(1, "header", Bytes(HEADER.max_size)),
        Field(2, "sealed", FixedBytes(_SEALED_SIZE)),
        Field(3, "checksum", FixedBytes(32)),
    ],
    max_size=512,
)


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost parameters, stored in the header so unlocking reads them from the file."""

    log_n: int = DEFAULT_LOG_N
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not MIN_LOG_N <= self.log_n <= MAX_LOG_N:
            raise ValueError(f"scrypt log2(n) must be between {MIN_LOG_N} and {MAX_LOG_N}")
        if not 1 <= self.r <= 16 or not 1 <= self.p <= 4:
            raise ValueError("scrypt r must be 1..16 and p 1..4")
        if (128 * self.r) << self.log_n > MAX_MEMORY:
            raise ValueError("scrypt n and r together would need more than 1 GiB of memory")


def _passphrase_bytes(passphrase: str) -> bytes:
    try:
        return passphrase.encode("utf-8")
    except UnicodeEncodeError:
        pass  # raised below, outside the handler: the UnicodeEncodeError holds the passphrase
    raise KeyFileError("the passphrase is not valid Unicode text (it has a lone surrogate)")


def _key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return primitives.scrypt(
        _passphrase_bytes(passphrase), salt, params.log_n, params.r, params.p, 32
    )


def seal_key_file(
    identity: Identity, passphrase: str, *, salt: bytes, nonce: bytes, params: KdfParams
) -> bytes:
    """The key file bytes for ``identity``; ``salt`` (16) and ``nonce`` (12): fresh random."""
    header = HEADER.encode(
        {
            "version": FORMAT_VERSION,
            "kdf": KDF_SCRYPT,
            "log_n": params.log_n,
            "r": params.r,
            "p": params.p,
            "salt": salt,
            "nonce": nonce,
            "public_key": identity.public.public_key,
        }
    )
    sealed = primitives.aead_seal(_key(passphrase, salt, params), nonce, identity.seed, header)
    checksum = primitives.sha256(header, sealed)
    return KEY_FILE.encode({"header": header, "sealed": sealed, "checksum": checksum})


def _parse(data: bytes) -> tuple[bytes, dict[str, Any], bytes, KdfParams]:
    try:
        outer = KEY_FILE.decode(data)
        header = HEADER.decode(outer["header"])
    except DecodeError as exc:
        raise CorruptKeyFile(f"not a p2ptransfer key file ({exc})") from exc
    if not primitives.constant_time_equal(
        primitives.sha256(outer["header"], outer["sealed"]), outer["checksum"]
    ):
        raise CorruptKeyFile("key file is damaged (checksum mismatch)")
    if header["version"] != FORMAT_VERSION:
        raise CorruptKeyFile(f"unsupported key file version {header['version']}")
    if header["kdf"] != KDF_SCRYPT:
        raise CorruptKeyFile(f"unsupported key derivation function {header['kdf']}")
    try:
        params = KdfParams(header["log_n"], header["r"], header["p"])
    except ValueError as exc:
        raise CorruptKeyFile(f"key file has out-of-range KDF parameters ({exc})") from exc
    return outer["header"], header, outer["sealed"], params


def read_public_key(data: bytes) -> bytes:
    """The public key stored in a key file, readable without the passphrase (for ``whoami``)."""
    _raw, header, _sealed, _params = _parse(data)
    return bytes(header["public_key"])


def open_key_file(data: bytes, passphrase: str) -> Identity:
    """Unlock a key file; CorruptKeyFile and WrongPassphrase are told apart."""
    raw_header, header, sealed, params = _parse(data)
    key = _key(passphrase, header["salt"], params)
    try:
        seed = primitives.aead_open(key, header["nonce"], sealed, raw_header)
    except ChannelError:
        # Deliberately no chained cause: nothing about the failed unlock is useful to show.
        raise WrongPassphrase("wrong passphrase for this key file") from None
    identity = Identity(seed)
    if identity.public.public_key != header["public_key"]:
        raise CorruptKeyFile("key file's public key does not match its private key")
    return identity
