"""Signed prekeys: the public keys mail is sealed to while their owner is offline.

A peer publishes, through the relay, a :class:`SignedPrekey`: a hybrid
ML-KEM-768 + X25519 public key (see :mod:`.primitives`, HPKE section) with an
8-byte id and a validity window, signed by the peer's long-term Ed25519
identity. A sender fetches it and seals mail to it (:mod:`.envelope`).

Why each rule is here:

* **The address is the key.** The owner's public key is inside the address
  being paid, so :meth:`SignedPrekey.check_for` proves that *this address*
  signed the prekey: a relay that serves its own prekey is caught exactly as a
  changed pin is. No directory is trusted.
* **Short, bounded windows.** A new prekey every :data:`PREKEY_ROTATE_MS`
  (7 days), each valid :data:`PREKEY_VALIDITY_MS` (14 days), so two overlap
  and a sender always finds a current one. Senders refuse windows longer than
  :data:`MAX_PREKEY_VALIDITY_MS` (14 days and an hour of slack): a stolen
  private half must not stay useful for long.
* **No one-time prekeys.** Replay is already refused by transfer-id
  idempotency; one-time keys would invite pool-draining attacks.
* **One value, one byte string**, as every wire type (:mod:`.encoding`):
  the signature is over ``"p2ptransfer-prekey-v1\\x00" || encoded prekey``.

This module reads no clock and makes no randomness: ids, keys and times come
from the caller (:mod:`p2ptransfer.storage.prekeys` makes them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import NewType

from ..errors import AddressError, DecodeError, InputError, PrekeyError, SignatureError
from . import primitives
from .encoding import Bytes, Field, FixedBytes, Schema, UInt
from .identity import Identity, PublicIdentity
from .transfer import check_timestamp

__all__ = [
    "DEFAULT_CLOCK_SKEW_MS",
    "KEM_PUBLIC_SIZE",
    "MAX_PREKEY_VALIDITY_MS",
    "PREKEY_ID_SIZE",
    "PREKEY_ROTATE_MS",
    "PREKEY_SCHEMA",
    "PREKEY_SIGNATURE_CONTEXT",
    "PREKEY_VALIDITY_MS",
    "SIGNED_PREKEY_SCHEMA",
    "Prekey",
    "PrekeyId",
    "SignedPrekey",
    "select_prekey",
    "sign_prekey",
]

PrekeyId = NewType("PrekeyId", bytes)
"""8 random bytes chosen by the owner; names the private half that opens the mail."""

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

PREKEY_ID_SIZE = 8
KEM_PUBLIC_SIZE = primitives.HPKE_PUBLIC_KEY_SIZE
"""1216 bytes: the ML-KEM-768 encapsulation key (1184) then the X25519 key (32)."""
PREKEY_ROTATE_MS = 7 * _DAY_MS
"""A new prekey once the newest is this old."""
PREKEY_VALIDITY_MS = 14 * _DAY_MS
"""The window a new prekey is signed for."""
MAX_PREKEY_VALIDITY_MS = PREKEY_VALIDITY_MS + _HOUR_MS
"""The longest window a sender accepts."""
DEFAULT_CLOCK_SKEW_MS = 5 * 60_000
"""How far two clocks may disagree before a window check fails."""

PREKEY_SIGNATURE_CONTEXT = b"p2ptransfer-prekey-v1\x00"

_KEY = primitives.ED25519_KEY_SIZE
_SIG = primitives.ED25519_SIG_SIZE
_FIELD_HEADER = 5

PREKEY_SCHEMA = Schema(
    "prekey",
    0x90,
    [
        Field(1, "owner", FixedBytes(_KEY)),
        Field(2, "prekey_id", FixedBytes(PREKEY_ID_SIZE)),
        Field(3, "kem_public", FixedBytes(KEM_PUBLIC_SIZE)),
        Field(4, "not_before", UInt(64)),
        Field(5, "not_after", UInt(64)),
    ],
    max_size=1 + 5 * _FIELD_HEADER + _KEY + PREKEY_ID_SIZE + KEM_PUBLIC_SIZE + 8 + 8,
)
SIGNED_PREKEY_SCHEMA = Schema(
    "signed-prekey",
    0x91,
    [
        Field(1, "prekey", Bytes(PREKEY_SCHEMA.max_size)),
        Field(2, "signature", FixedBytes(_SIG)),
    ],
    max_size=1 + 2 * _FIELD_HEADER + PREKEY_SCHEMA.max_size + _SIG,
)


@dataclass(frozen=True)
class Prekey:
    """One prekey: whose it is, its id, the KEM public key and its validity window.

    Validated on construction (InputError): a 32-byte owner key, an 8-byte id,
    a KEM public key that passes ML-KEM's key check, timestamps that fit and
    ``not_after > not_before``. How long the window may be is a policy a
    sender applies (:meth:`SignedPrekey.check_for`), not a property of the bytes.
    """

    owner: bytes
    prekey_id: PrekeyId
    kem_public: bytes
    not_before: int
    not_after: int

    def __post_init__(self) -> None:
        if type(self.owner) is not bytes or len(self.owner) != _KEY:
            raise InputError(f"a prekey's owner is a {_KEY}-byte Ed25519 public key")
        if type(self.prekey_id) is not bytes or len(self.prekey_id) != PREKEY_ID_SIZE:
            raise InputError(f"a prekey id is exactly {PREKEY_ID_SIZE} bytes")
        try:
            primitives.hpke_check_public(self.kem_public)
        except ValueError as exc:
            raise InputError(f"a prekey's KEM public key is not usable: {exc}") from exc
        check_timestamp(self.not_before, "a prekey's not_before")
        check_timestamp(self.not_after, "a prekey's not_after")
        if self.not_after <= self.not_before:
            raise InputError("a prekey's not_after must be later than its not_before")

    @property
    def owner_identity(self) -> PublicIdentity:
        return PublicIdentity(self.owner)

    @property
    def owner_address(self) -> str:
        return self.owner_identity.address

    @property
    def validity_ms(self) -> int:
        """The length of the validity window."""
        return self.not_after - self.not_before

    @cached_property
    def _encoded(self) -> bytes:
        return PREKEY_SCHEMA.encode(
            {
                "owner": self.owner,
                "prekey_id": self.prekey_id,
                "kem_public": self.kem_public,
                "not_before": self.not_before,
                "not_after": self.not_after,
            }
        )

    def encode(self) -> bytes:
        """The canonical bytes: what is signed."""
        return self._encoded

    @classmethod
    def decode(cls, data: bytes) -> Prekey:
        """Decode and validate; any problem is a :class:`DecodeError`."""
        values = PREKEY_SCHEMA.decode(data)
        try:
            return cls(
                owner=values["owner"],
                prekey_id=PrekeyId(values["prekey_id"]),
                kem_public=values["kem_public"],
                not_before=values["not_before"],
                not_after=values["not_after"],
            )
        except InputError as exc:
            raise DecodeError(f"prekey: {exc}") from exc

    def signing_message(self) -> bytes:
        """The bytes the owner signs: the prekey signature context, then the body."""
        return PREKEY_SIGNATURE_CONTEXT + self.encode()


@dataclass(frozen=True)
class SignedPrekey:
    """A prekey with its owner's Ed25519 signature; decoding does not verify."""

    prekey: Prekey
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.prekey, Prekey):
            raise InputError("a SignedPrekey needs a Prekey")
        if type(self.signature) is not bytes or len(self.signature) != _SIG:
            raise InputError(f"a signature must be exactly {_SIG} bytes")

    @property
    def prekey_id(self) -> PrekeyId:
        return self.prekey.prekey_id

    @cached_property
    def _encoded(self) -> bytes:
        return SIGNED_PREKEY_SCHEMA.encode(
            {"prekey": self.prekey.encode(), "signature": self.signature}
        )

    def encode(self) -> bytes:
        """The bytes published at the relay and served to senders."""
        return self._encoded

    @classmethod
    def decode(cls, data: bytes) -> SignedPrekey:
        """Decode and validate the prekey; call :meth:`check_for` before sealing to it."""
        values = SIGNED_PREKEY_SCHEMA.decode(data)
        try:
            return cls(Prekey.decode(values["prekey"]), values["signature"])
        except InputError as exc:  # pragma: no cover - the schema fixed the sizes
            raise DecodeError(f"signed prekey: {exc}") from exc

    def verify(self) -> None:
        """Raise :class:`SignatureError` unless the key in ``prekey.owner`` signed it."""
        try:
            self.prekey.owner_identity.verify(self.signature, self.prekey.signing_message())
        except SignatureError as exc:
            raise SignatureError(
                f"prekey {self.prekey_id.hex()} is not signed by its owner "
                f"{self.prekey.owner_address}"
            ) from exc

    def check_for(self, address: str, now_ms: int, skew_ms: int = DEFAULT_CLOCK_SKEW_MS) -> None:
        """Raise :class:`PrekeyError` unless mail for ``address`` may be sealed to it now.

        In order: the owner is the address's key and the signature verifies
        (else ``wrong-owner`` / ``bad-signature``: someone else's prekey, as a
        changed pin is someone else's key); the window is at most
        :data:`MAX_PREKEY_VALIDITY_MS` (``window-too-long``); ``now_ms`` is
        inside the window, widened by ``skew_ms`` on each side
        (``not-yet-valid`` / ``expired``). AddressError if ``address`` is not
        an address.
        """
        expected = PublicIdentity.from_address(address)
        check_timestamp(now_ms, "now")
        if type(skew_ms) is not int or skew_ms < 0:
            raise ValueError("skew_ms must be a non-negative integer")
        prekey = self.prekey
        name = prekey.prekey_id.hex()
        if not primitives.constant_time_equal(prekey.owner, expected.public_key):
            raise PrekeyError(
                "wrong-owner",
                f"prekey {name} belongs to {prekey.owner_address}, not to {address}: "
                "the relay served someone else's key",
            )
        try:
            self.verify()
        except SignatureError as exc:
            raise PrekeyError(
                "bad-signature", f"prekey {name} for {address} is not signed by {address}"
            ) from exc
        if prekey.validity_ms > MAX_PREKEY_VALIDITY_MS:
            raise PrekeyError(
                "window-too-long",
                f"prekey {name} for {address} claims a validity of {prekey.validity_ms} ms, "
                f"more than the {MAX_PREKEY_VALIDITY_MS} ms allowed",
            )
        if now_ms + skew_ms < prekey.not_before:
            raise PrekeyError(
                "not-yet-valid",
                f"prekey {name} for {address} is not valid before {prekey.not_before} "
                f"(now {now_ms})",
            )
        if now_ms - skew_ms >= prekey.not_after:
            raise PrekeyError(
                "expired",
                f"prekey {name} for {address} expired at {prekey.not_after} (now {now_ms})",
            )


def sign_prekey(identity: Identity, prekey: Prekey) -> SignedPrekey:
    """Sign ``prekey`` as its owner.

    ValueError if ``identity`` is not the owner or the window is longer than
    :data:`MAX_PREKEY_VALIDITY_MS`: we never publish what senders refuse.
    """
    if identity.public.public_key != prekey.owner:
        raise ValueError("only the prekey's owner can sign it")
    if prekey.validity_ms > MAX_PREKEY_VALIDITY_MS:
        raise ValueError("a prekey's validity window is at most MAX_PREKEY_VALIDITY_MS")
    return SignedPrekey(prekey, identity.sign(prekey.signing_message()))


def select_prekey(
    candidates: Iterable[SignedPrekey],
    address: str,
    now_ms: int,
    skew_ms: int = DEFAULT_CLOCK_SKEW_MS,
) -> SignedPrekey:
    """The prekey a sender seals to: the newest (latest ``not_before``) that passes
    :meth:`SignedPrekey.check_for`.

    Raises the :class:`PrekeyError` of the newest refused candidate when none
    passes (``"none"`` when there were no candidates), so the message says
    why; a wrong-owner or bad-signature candidate is reported before any
    merely expired one, because it means the relay is lying.
    """
    if not isinstance(address, str):
        raise AddressError("address must be text")
    ordered = sorted(candidates, key=lambda s: s.prekey.not_before, reverse=True)
    errors: list[PrekeyError] = []
    for signed in ordered:
        try:
            signed.check_for(address, now_ms, skew_ms)
        except PrekeyError as exc:
            errors.append(exc)
            continue
        return signed
    if not errors:
        raise PrekeyError("none", f"{address} has published no prekey: mail cannot be sealed")
    forged = [e for e in errors if e.reason in ("wrong-owner", "bad-signature")]
    raise (forged or errors)[0]
