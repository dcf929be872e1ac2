"""Long-term Ed25519 identities, their addresses, fingerprints and safety numbers.

An **address** is the public key itself, bech32m-encoded (BIP-350, see
:mod:`.bech32m`) with the human-readable part ``p2pt`` and a version digit,
e.g. ``p2pt1q…``. Because the key is *in* the address, whoever holds an
address can authenticate its owner with no directory; because bech32m's
checksum detects any error in up to four characters (and almost all
others), a mistyped or truncated address is refused instead of silently
naming somebody else.

A **fingerprint** is a short, readable digest of the key for display.
A **safety number** is computed from *two* keys, identically on both sides
(it sorts them), so two people can read it to each other and detect a
man-in-the-middle who gave each of them a different key.

Private seeds are passed in by the caller (this package's ``protocol``
layer makes no randomness), held only in :class:`Identity`, and never
appear in ``repr`` or exceptions.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from ..errors import AddressError
from . import bech32m, primitives

__all__ = [
    "ADDRESS_HRP",
    "ADDRESS_VERSION",
    "Identity",
    "PublicIdentity",
    "safety_number",
]

ADDRESS_HRP = "p2pt"
ADDRESS_VERSION = 0
ADDRESS_LENGTH = len(ADDRESS_HRP) + 1 + 1 + 52 + 6  # hrp, "1", version, key, checksum

_FINGERPRINT_CONTEXT = b"p2ptransfer-fingerprint-v1\x00"
_SAFETY_CONTEXT = b"p2ptransfer-safety-number-v1\x00"


# --- addresses ---------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # pure; the ledger and transfers re-encode the same few keys
def encode_address(public_key: bytes) -> str:
    """The address text for a 32-byte Ed25519 public key."""
    if len(public_key) != primitives.ED25519_KEY_SIZE:
        raise ValueError("public key must be 32 bytes")
    return bech32m.encode(ADDRESS_HRP, [ADDRESS_VERSION, *bech32m.to_words(public_key)])


@functools.lru_cache(maxsize=4096)  # pure; errors are not cached (they raise)
def decode_address(text: str) -> bytes:
    """The public key inside an address; every part of the address is checked.

    A wrong length is reported first (the commonest slip: a truncated paste);
    then bech32m names the offending character and its position, or the checksum.
    """
    if not isinstance(text, str):
        raise AddressError("address must be text")
    stripped = text.strip()
    if len(stripped) != ADDRESS_LENGTH:
        raise AddressError(
            f"an address has {ADDRESS_LENGTH} characters, this one has {len(stripped)}"
        )
    words = bech32m.decode(stripped, ADDRESS_HRP, noun="address", error=AddressError)
    if words[0] != ADDRESS_VERSION:
        raise AddressError(f"unsupported address version {words[0]}")
    key = bech32m.from_words(words[1:], noun="address", error=AddressError)
    if len(key) != primitives.ED25519_KEY_SIZE:
        raise AddressError("address does not hold a 32-byte key")
    return key


# --- identities --------------------------------------------------------------


def _group(text: str, size: int) -> str:
    return " ".join(text[i : i + size] for i in range(0, len(text), size))


@dataclass(frozen=True)
class PublicIdentity:
    """Somebody's long-term public key; equal keys are the same identity."""

    public_key: bytes

    def __post_init__(self) -> None:
        if type(self.public_key) is not bytes or len(self.public_key) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @classmethod
    def from_address(cls, address: str) -> PublicIdentity:
        """Parse and fully validate an address."""
        if cls is PublicIdentity:
            return _identity_for_address(address)
        return cls(decode_address(address))

    @property
    def address(self) -> str:
        return encode_address(self.public_key)

    @property
    def fingerprint(self) -> str:
        """16 hex digits in groups of four: short enough to eyeball, not to rely on."""
        digest = hashlib.sha256(_FINGERPRINT_CONTEXT + self.public_key).hexdigest()
        return _group(digest[:16], 4)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise SignatureError unless this identity signed ``message``."""
        primitives.ed25519_verify(self.public_key, signature, message)

    def __str__(self) -> str:
        return self.address


class Identity:
    """A long-term identity with its private seed; the seed never leaves via repr."""

    __slots__ = ("_seed", "_signer", "public")

    def __init__(self, seed: bytes) -> None:
        if type(seed) is not bytes or len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._seed = seed
        # Loaded once: parsing the seed costs as much as a signature, and a peer signs
        # every transfer, receipt and handshake with it.
        self._signer = primitives.Ed25519Signer(seed)
        self.public = PublicIdentity(self._signer.public_key)

    @property
    def address(self) -> str:
        return self.public.address

    @property
    def seed(self) -> bytes:
        """The private seed, for sealing into a key file only."""
        return self._seed

    def sign(self, message: bytes) -> bytes:
        return self._signer.sign(message)

    def sign_checked(self, message: bytes) -> bytes:
        """A signature to store and send: fault-checked (see ``Ed25519Signer.sign_checked``)."""
        return self._signer.sign_checked(message)

    def __repr__(self) -> str:
        return f"Identity(address={self.address!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.public == self.public

    def __hash__(self) -> int:
        return hash(self.public)


@functools.lru_cache(maxsize=4096)  # pure, and the result is immutable: safe to share
def _identity_for_address(address: str) -> PublicIdentity:
    """PublicIdentity.from_address, remembered: every transfer names the same few parties."""
    return PublicIdentity(decode_address(address))


def safety_number(a: PublicIdentity, b: PublicIdentity) -> str:
    """Thirty digits in six groups, the same whichever side computes them.

    About 99.7 bits: finding a second key with the same number for a given
    pair costs on the order of 2**99 hashes.
    """
    first, second = sorted((a.public_key, b.public_key))
    digest = hashlib.sha512(_SAFETY_CONTEXT + first + second).digest()
    groups = [int.from_bytes(digest[i : i + 5], "big") % 100_000 for i in range(0, 30, 5)]
    return " ".join(f"{g:05d}" for g in groups)
