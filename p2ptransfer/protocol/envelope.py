"""Mail envelopes: a signed message (transfer, receipt, request, answer) sealed to a prekey.

When the recipient is offline, the sender deposits an :class:`Envelope` at the
relay. It is HPKE (RFC 9180) base mode with MLKEM768-X25519, HKDF-SHA256 and
AES-256-GCM, done by pyca/cryptography (:func:`.primitives.hpke_seal`):

* **Plaintext** = ``kind:u8 || length:u16be || signed bytes || zero padding``
  to exactly :data:`MAIL_PLAINTEXT_SIZE`, the same for every kind, so the
  relay cannot tell a transfer from a receipt or a payment request by its
  size. The signed bytes are the unchanged signed message: the envelope adds
  secrecy, the signature inside stays the proof.
* **info** = ``"p2ptransfer-mail-v1\\x00" || sender key || recipient key ||
  prekey id`` binds version, both parties and the prekey into the key
  schedule: an envelope re-addressed, re-labelled or replayed to another
  recipient does not open. (HPKE base mode does not authenticate the sender;
  the signature inside does, and the receiver checks it names the same sender.)
* **Slots**: the relay keeps one envelope per (recipient, sender, slot), and
  a resend replaces it. The slot is an HMAC under a key only the sender has
  (:func:`slot_key`), so the relay cannot link a slot to a transfer id it
  learns elsewhere. An acknowledgement names the slot and
  :func:`envelope_hash`, so it never deletes a replacement not yet seen.

Sealing draws its ephemeral key inside pyca (it takes no caller randomness):
every :func:`seal` gives a different envelope, and the known-answer vectors
test :func:`open` on a stored one.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from functools import cached_property

from ..errors import DecodeError, InputError, ProtocolError
from . import primitives
from .encoding import Field, FixedBytes, Schema
from .prekey import PREKEY_ID_SIZE, Prekey, PrekeyId
from .receipt import SIGNED_RECEIPT_SCHEMA
from .request import SIGNED_REQUEST_ANSWER_SCHEMA, SIGNED_REQUEST_SCHEMA
from .transfer import SIGNED_TRANSFER_SCHEMA

__all__ = [
    "ENVELOPE_HASH_CONTEXT",
    "ENVELOPE_SCHEMA",
    "MAIL_INFO_CONTEXT",
    "MAIL_PLAINTEXT_SIZE",
    "MAIL_SLOT_KEY_INFO",
    "MAX_ENVELOPE",
    "MAX_MAIL_BODY",
    "SLOT_SIZE",
    "Envelope",
    "MailKind",
    "envelope_hash",
    "mail_info",
    "mail_slot",
    "open",
    "seal",
    "slot_key",
]

MAIL_INFO_CONTEXT = b"p2ptransfer-mail-v1\x00"
MAIL_SLOT_KEY_INFO = b"p2ptransfer-mail-slot-v1"
ENVELOPE_HASH_CONTEXT = b"p2ptransfer-envelope-hash-v1\x00"

SLOT_SIZE = 16
_SLOT_KEY_SIZE = 32
_KEY = primitives.ED25519_KEY_SIZE

_HEADER = struct.Struct(">BH")


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


MAIL_PLAINTEXT_SIZE = _round_up(_HEADER.size + SIGNED_TRANSFER_SCHEMA.max_size, 256)
"""768: the header and the largest signed transfer (640), rounded up to 256."""
MAX_MAIL_BODY = MAIL_PLAINTEXT_SIZE - _HEADER.size
"""The largest signed message an envelope carries."""
_CIPHERTEXT_SIZE = MAIL_PLAINTEXT_SIZE + primitives.AEAD_TAG_SIZE


class MailKind(enum.IntEnum):
    """What an envelope carries. The numbers are on the wire: never renumber."""

    TRANSFER = 1
    RECEIPT = 2
    REQUEST = 3  # a signed payment request, payee -> payer
    REQUEST_ANSWER = 4  # a signed decline (payer -> payee) or cancellation (payee -> payer)


_MAX_BODY_BY_KIND = {
    MailKind.TRANSFER: SIGNED_TRANSFER_SCHEMA.max_size,
    MailKind.RECEIPT: SIGNED_RECEIPT_SCHEMA.max_size,
    MailKind.REQUEST: SIGNED_REQUEST_SCHEMA.max_size,
    MailKind.REQUEST_ANSWER: SIGNED_REQUEST_ANSWER_SCHEMA.max_size,
}
assert max(_MAX_BODY_BY_KIND.values()) <= MAX_MAIL_BODY

ENVELOPE_SCHEMA = Schema(
    "envelope",
    0x92,
    [
        Field(1, "prekey_id", FixedBytes(PREKEY_ID_SIZE)),
        Field(2, "enc", FixedBytes(primitives.HPKE_ENC_SIZE)),
        Field(3, "ciphertext", FixedBytes(_CIPHERTEXT_SIZE)),
    ],
    max_size=1 + 3 * 5 + PREKEY_ID_SIZE + primitives.HPKE_ENC_SIZE + _CIPHERTEXT_SIZE,
)
MAX_ENVELOPE = ENVELOPE_SCHEMA.max_size
"""1928: every envelope has exactly this size (the relay's envelope limit)."""


@dataclass(frozen=True)
class Envelope:
    """A sealed mail item: which prekey opens it, the KEM encapsulation, the ciphertext."""

    prekey_id: PrekeyId
    enc: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        if type(self.prekey_id) is not bytes or len(self.prekey_id) != PREKEY_ID_SIZE:
            raise InputError(f"an envelope's prekey id is exactly {PREKEY_ID_SIZE} bytes")
        if type(self.enc) is not bytes or len(self.enc) != primitives.HPKE_ENC_SIZE:
            raise InputError(f"an envelope's enc is exactly {primitives.HPKE_ENC_SIZE} bytes")
        if type(self.ciphertext) is not bytes or len(self.ciphertext) != _CIPHERTEXT_SIZE:
            raise InputError(f"an envelope's ciphertext is exactly {_CIPHERTEXT_SIZE} bytes")

    @cached_property
    def _encoded(self) -> bytes:
        return ENVELOPE_SCHEMA.encode(
            {"prekey_id": self.prekey_id, "enc": self.enc, "ciphertext": self.ciphertext}
        )

    def encode(self) -> bytes:
        """The bytes deposited at the relay (and hashed by :func:`envelope_hash`)."""
        return self._encoded

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Decode strictly; any problem is a :class:`DecodeError`."""
        values = ENVELOPE_SCHEMA.decode(data)
        return cls(PrekeyId(values["prekey_id"]), values["enc"], values["ciphertext"])

    @property
    def hash(self) -> bytes:
        """:func:`envelope_hash` of this envelope's bytes."""
        return envelope_hash(self.encode())


def _check_key(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != _KEY:
        raise ValueError(f"{what} is a {_KEY}-byte Ed25519 public key")
    return value


def mail_info(sender_pub: bytes, recipient_pub: bytes, prekey_id: bytes) -> bytes:
    """HPKE ``info``: the version context, both parties' keys and the prekey id."""
    _check_key(sender_pub, "the sender")
    _check_key(recipient_pub, "the recipient")
    if type(prekey_id) is not bytes or len(prekey_id) != PREKEY_ID_SIZE:
        raise ValueError(f"a prekey id is exactly {PREKEY_ID_SIZE} bytes")
    return MAIL_INFO_CONTEXT + sender_pub + recipient_pub + prekey_id


def _pad(kind: MailKind, body: bytes) -> bytes:
    return _HEADER.pack(kind, len(body)) + body + bytes(MAX_MAIL_BODY - len(body))


def _unpad(plaintext: bytes) -> tuple[MailKind, bytes]:
    if len(plaintext) != MAIL_PLAINTEXT_SIZE:
        raise DecodeError(f"mail plaintext is {len(plaintext)} bytes, not {MAIL_PLAINTEXT_SIZE}")
    raw_kind, length = _HEADER.unpack_from(plaintext)
    try:
        kind = MailKind(raw_kind)
    except ValueError as exc:
        raise DecodeError(f"mail of unknown kind {raw_kind}") from exc
    if not 0 < length <= _MAX_BODY_BY_KIND[kind]:
        raise DecodeError(f"mail length {length} is not valid for a {kind.name.lower()}")
    end = _HEADER.size + length
    if any(plaintext[end:]):
        raise DecodeError("mail padding is not all zero")
    return kind, plaintext[_HEADER.size : end]


def seal(
    kind: MailKind, signed_bytes: bytes, sender_pub: bytes, recipient_prekey: Prekey
) -> Envelope:
    """Seal ``signed_bytes`` (a signed transfer or receipt) to ``recipient_prekey``.

    The caller has checked the prekey (:meth:`.prekey.SignedPrekey.check_for`).
    A fresh envelope every call. ValueError for our own misuse: an unknown
    kind, empty bytes or bytes too long for the kind.
    """
    kind = MailKind(kind)
    if type(signed_bytes) is not bytes or not 0 < len(signed_bytes) <= _MAX_BODY_BY_KIND[kind]:
        raise ValueError(f"a {kind.name.lower()} in mail is 1 to {_MAX_BODY_BY_KIND[kind]} bytes")
    if not isinstance(recipient_prekey, Prekey):
        raise ValueError("mail is sealed to a Prekey")
    info = mail_info(sender_pub, recipient_prekey.owner, recipient_prekey.prekey_id)
    sealed = primitives.hpke_seal(recipient_prekey.kem_public, _pad(kind, signed_bytes), info)
    enc, ciphertext = sealed[: primitives.HPKE_ENC_SIZE], sealed[primitives.HPKE_ENC_SIZE :]
    return Envelope(recipient_prekey.prekey_id, enc, ciphertext)


def open(
    envelope: Envelope, private_key: bytes, sender_pub: bytes, recipient_pub: bytes
) -> tuple[MailKind, bytes]:
    """Open ``envelope`` with the private half of its prekey: ``(kind, signed bytes)``.

    ``sender_pub`` is the depositor the relay names, ``recipient_pub`` our own
    key. ProtocolError when it does not open (wrong key, wrong parties, any
    byte changed); DecodeError when it opens to a malformed plaintext (unknown
    kind, bad length, non-zero padding). The signed bytes are returned
    unverified: the caller decodes them as ``kind`` says and checks that the
    signer is ``sender_pub``.
    """
    if not isinstance(envelope, Envelope):
        raise ValueError("open takes an Envelope")
    info = mail_info(sender_pub, recipient_pub, envelope.prekey_id)
    try:
        plaintext = primitives.hpke_open(private_key, envelope.enc + envelope.ciphertext, info)
    except ProtocolError as exc:
        raise ProtocolError(
            f"mail sealed to prekey {envelope.prekey_id.hex()} does not open: "
            "not for us, from another sender, or altered"
        ) from exc
    return _unpad(plaintext)


def slot_key(identity_seed: bytes) -> bytes:
    """The sender's secret slot key, derived from its identity seed (HKDF-SHA256)."""
    if type(identity_seed) is not bytes or len(identity_seed) != 32:
        raise ValueError("an identity seed is 32 bytes")
    return primitives.hkdf_sha256(identity_seed, b"", MAIL_SLOT_KEY_INFO, _SLOT_KEY_SIZE)


def mail_slot(key: bytes, kind: MailKind, item_id: bytes) -> bytes:
    """The 16-byte slot of one mail item: HMAC-SHA256(key, kind || id)[:16].

    ``key`` is :func:`slot_key` of the depositor; ``item_id`` the transfer id
    (a receipt uses the id of the transfer it answers; its kind keeps the two
    slots apart), or the request id for a request and for an answer to one.
    """
    if type(key) is not bytes or len(key) != _SLOT_KEY_SIZE:
        raise ValueError(f"a slot key is {_SLOT_KEY_SIZE} bytes")
    kind = MailKind(kind)
    if type(item_id) is not bytes or not item_id:
        raise ValueError("a mail item id is non-empty bytes")
    return primitives.hmac_sha256(key, bytes((kind,)) + item_id)[:SLOT_SIZE]


def envelope_hash(envelope_bytes: bytes) -> bytes:
    """SHA-256 over a context and the envelope's bytes: what an acknowledgement names."""
    if not isinstance(envelope_bytes, bytes):
        raise ValueError("envelope_hash takes the envelope's bytes")
    return primitives.sha256(ENVELOPE_HASH_CONTEXT, envelope_bytes)
