"""The only doorway to cryptographic primitives.

Every key agreement, signature, hash, KDF and AEAD call in p2ptransfer goes
through these few functions, which wrap pyca/cryptography and translate its
exceptions into ours. Keeping them in one place means the known-answer tests
(RFC 7748, RFC 8032, RFC 5869) exercise exactly the code paths the protocol
uses, and nothing else in the package touches ``cryptography`` directly for
these operations.

No function here makes randomness: secrets are passed in by the caller. The
one exception is :func:`hpke_seal`: pyca's HPKE draws its ephemeral KEM key
itself and takes no caller randomness, so a sealed envelope is never
reproducible (its known-answer tests open a stored envelope instead).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import hmac
from collections.abc import Iterator

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import ChannelError, HandshakeError, ProtocolError, SignatureError

__all__ = [
    "AEAD_KEY_SIZE",
    "AEAD_NONCE_SIZE",
    "AEAD_TAG_SIZE",
    "ED25519_KEY_SIZE",
    "ED25519_SIG_SIZE",
    "HPKE_ENC_SIZE",
    "HPKE_PRIVATE_KEY_SIZE",
    "HPKE_PUBLIC_KEY_SIZE",
    "HPKE_SEAL_OVERHEAD",
    "X25519_KEY_SIZE",
    "AeadCipher",
    "Ed25519Signer",
    "X25519Ephemeral",
    "aead_open",
    "aead_seal",
    "constant_time_equal",
    "ed25519_public_from_seed",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_expand",
    "hkdf_extract",
    "hkdf_sha256",
    "hmac_sha256",
    "hpke_check_public",
    "hpke_open",
    "hpke_public_from_private",
    "hpke_seal",
    "scrypt",
    "sha256",
    "x25519_public_from_private",
    "x25519_shared_secret",
]

X25519_KEY_SIZE = 32
ED25519_KEY_SIZE = 32
ED25519_SIG_SIZE = 64
AEAD_KEY_SIZE = 32
AEAD_NONCE_SIZE = 12
AEAD_TAG_SIZE = 16
_SHA256_SIZE = 32


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of the concatenation of ``parts``."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of ``message`` under ``key``."""
    return hmac.new(key, message, hashlib.sha256).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare secrets (MACs, hashes, keys) without leaking where they differ."""
    return hmac.compare_digest(a, b)


# --- X25519 (RFC 7748) -------------------------------------------------------


def x25519_public_from_private(private: bytes) -> bytes:
    """The X25519 public key for a 32-byte private scalar."""
    if len(private) != X25519_KEY_SIZE:
        raise HandshakeError("X25519 private key must be 32 bytes")
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes_raw()


class X25519Ephemeral:
    """One handshake's X25519 private key, loaded once for its public key and its exchange.

    Parsing the scalar costs as much as the exchange itself; a handshake needs
    the public key at once and the exchange a round trip later, so it keeps
    this object instead of the raw bytes. The private key never shows in repr.
    """

    __slots__ = ("_key", "public")

    def __init__(self, private: bytes) -> None:
        if len(private) != X25519_KEY_SIZE:
            raise HandshakeError("X25519 private key must be 32 bytes")
        self._key = X25519PrivateKey.from_private_bytes(private)
        self.public: bytes = self._key.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return "X25519Ephemeral(<private>)"

    def exchange(self, peer_public: bytes) -> bytes:
        """X25519 with ``peer_public``; the same rules as :func:`x25519_shared_secret`."""
        if len(peer_public) != X25519_KEY_SIZE:
            raise HandshakeError("X25519 keys must be 32 bytes")
        return _x25519_exchange(self._key, peer_public)


def x25519_shared_secret(private: bytes, peer_public: bytes) -> bytes:
    """X25519(private, peer_public); a low-order peer key is a failed handshake.

    pyca/cryptography raises when the result is all zero (a low-order or
    identity point); we check again ourselves so the rule does not depend on
    the backend version.
    """
    if len(private) != X25519_KEY_SIZE or len(peer_public) != X25519_KEY_SIZE:
        raise HandshakeError("X25519 keys must be 32 bytes")
    return _x25519_exchange(X25519PrivateKey.from_private_bytes(private), peer_public)


def _x25519_exchange(key: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise HandshakeError("peer ephemeral key is a low-order point") from exc
    if constant_time_equal(shared, bytes(X25519_KEY_SIZE)):
        raise HandshakeError("peer ephemeral key is a low-order point")
    return shared


# --- Ed25519 (RFC 8032) ------------------------------------------------------


def ed25519_public_from_seed(seed: bytes) -> bytes:
    """The Ed25519 public key for a 32-byte private seed."""
    if len(seed) != ED25519_KEY_SIZE:
        raise ValueError("Ed25519 seed must be 32 bytes")
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes_raw()


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Ed25519 signature (pure, deterministic) of ``message`` under ``seed``."""
    if len(seed) != ED25519_KEY_SIZE:
        raise ValueError("Ed25519 seed must be 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


class Ed25519Signer:
    """A long-term Ed25519 key loaded once, for an identity that signs many messages.

    Loading the seed (deriving the scalar and public point) costs about as
    much as a signature; :func:`ed25519_sign` pays it on every call, this
    object once. Signatures are identical to :func:`ed25519_sign`'s (Ed25519
    is deterministic). The key never shows in repr.
    """

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != ED25519_KEY_SIZE:
            raise ValueError("Ed25519 seed must be 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: bytes = self._key.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return "Ed25519Signer(<private>)"

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (pure, deterministic) of ``message``."""
        return self._key.sign(message)

    def sign_checked(self, message: bytes) -> bytes:
        """:meth:`sign`, with a fault check, for signatures that are stored and sent.

        A fault during deterministic signing that yields a wrong signature
        for a message also signed correctly leaks the key, so a signature
        that leaves the machine or is stored must be checked first. Ed25519
        is deterministic: computing it twice and comparing catches a
        transient fault for the price of a second signature (a third of a
        verification), and the result is remembered as valid, so the
        ledger's check of every entry it writes does not verify again the
        bytes we have just produced. Every such signature is verified by
        its recipient before anything relies on it, and by ``ledger
        verify`` from disk. SignatureError if the two differ.
        """
        signature = self._key.sign(message)
        if self._key.sign(message) != signature:
            raise SignatureError("signing fault: two signatures of one message differ")
        own = _OWN_SIGNATURES
        own[(self.public_key, signature, bytes(message))] = None
        if len(own) > _OWN_SIGNATURES_KEPT:
            del own[next(iter(own))]  # the oldest (dicts keep insertion order)
        return signature


_OWN_SIGNATURES_KEPT = 4096
_OWN_SIGNATURES: dict[tuple[bytes, bytes, bytes], None] = {}
"""(public key, signature, message) that :meth:`Ed25519Signer.sign_checked` made, newest last."""


# The eight points of small order on edwards25519 (and y = p, y = p + 1, the
# non-canonical encodings of two of them), each with the x-sign bit cleared: the
# list libsodium's ge25519_has_small_order() uses. A signature "verifies" under a
# small-order public key for many messages with no secret at all (under the
# identity point, R = identity and S = 0 verify for *every* message), and
# OpenSSL accepts that, so such keys are refused here.
_ED25519_SMALL_ORDER = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)


def _ed25519_has_small_order(encoding: bytes) -> bool:
    return encoding[:31] + bytes([encoding[31] & 0x7F]) in _ED25519_SMALL_ORDER


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is valid for ``message``.

    OpenSSL's Ed25519 rejects non-canonical S (S >= L), so a malleated
    signature (S + L) fails here as RFC 8032 §5.1.7 requires. Small-order
    public keys and small-order R are refused before OpenSSL is asked (as
    libsodium does): OpenSSL would accept a forgery under such a key.
    """
    if len(public) != ED25519_KEY_SIZE or len(signature) != ED25519_SIG_SIZE:
        raise SignatureError("malformed Ed25519 key or signature")
    if _ed25519_has_small_order(public):
        raise SignatureError("Ed25519 public key has small order")
    if _ed25519_has_small_order(signature[:32]):
        raise SignatureError("signature does not verify")
    key = (bytes(public), bytes(signature), bytes(message))
    if _FROM_SCRATCH.get():
        _ed25519_verified.__wrapped__(*key)  # neither cache: see fresh_verification
        return
    if key in _OWN_SIGNATURES:
        return  # made (and checked) by sign_checked with this very key
    _ed25519_verified(*key)


_FROM_SCRATCH: contextvars.ContextVar[bool] = contextvars.ContextVar("from_scratch", default=False)


@contextlib.contextmanager
def fresh_verification() -> Iterator[None]:
    """Within the block every Ed25519 signature is verified by OpenSSL, no cache trusted.

    The caches hold verdicts this process reached (or, for its own
    signatures, a double-signing check, which catches a transient fault but
    not one that repeats identically). An audit (``ledger verify``) must not
    lean on either.
    """
    token = _FROM_SCRATCH.set(True)
    try:
        yield
    finally:
        _FROM_SCRATCH.reset(token)


@functools.lru_cache(maxsize=4096)
def _ed25519_verified(public: bytes, signature: bytes, message: bytes) -> bool:
    """OpenSSL's verdict, remembered when positive.

    One transfer's signatures are checked where it is received, judged,
    stored and answered, each layer on its own (defence in depth); the
    verdict over the same public bytes cannot change, so repeats are free.
    A failure raises, and lru_cache never stores a raise.
    """
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("signature does not verify") from exc
    return True


# --- HKDF-SHA256 (RFC 5869) --------------------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 extract-then-expand."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256: PRK = HMAC-SHA256(salt, ikm)."""
    return hmac.new(salt or bytes(_SHA256_SIZE), ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256.

    pyca's own construction, not one written out over HMAC here: writing it
    out measured about 2 us faster per call (12 us per handshake, under 2 %),
    not worth a hand-made KDF next to the rule that pyca does the math.
    """
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


# --- AES-256-GCM -------------------------------------------------------------


class AeadCipher:
    """AES-256-GCM under one key, with the key schedule done once.

    A channel seals thousands of records under one direction key; building
    the cipher per record (as :func:`aead_seal` does) is most of the cost of
    a short record. Same checks, errors and output as the functions below.
    The key never shows in repr.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != AEAD_KEY_SIZE:
            raise ValueError("AES-256-GCM key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "AeadCipher(<key>)"

    def seal(self, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt; returns ciphertext followed by the 16-byte tag."""
        if len(nonce) != AEAD_NONCE_SIZE:
            raise ValueError("AES-GCM nonce must be 12 bytes")
        return self._aead.encrypt(nonce, plaintext, associated_data)

    def open(self, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        """Decrypt; any failure (tag, length) is a :class:`ChannelError`."""
        if len(nonce) != AEAD_NONCE_SIZE:
            raise ValueError("AES-GCM nonce must be 12 bytes")
        if len(ciphertext) < AEAD_TAG_SIZE:
            raise ChannelError("ciphertext shorter than its authentication tag")
        try:
            return self._aead.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag as exc:
            raise ChannelError("record authentication failed") from exc


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-GCM encrypt; returns ciphertext followed by the 16-byte tag."""
    if len(key) != AEAD_KEY_SIZE:
        raise ValueError("AES-256-GCM key must be 32 bytes")
    if len(nonce) != AEAD_NONCE_SIZE:
        raise ValueError("AES-GCM nonce must be 12 bytes")
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """AES-GCM decrypt; any failure (tag, length) is a :class:`ChannelError`."""
    if len(key) != AEAD_KEY_SIZE:
        raise ValueError("AES-256-GCM key must be 32 bytes")
    if len(nonce) != AEAD_NONCE_SIZE:
        raise ValueError("AES-GCM nonce must be 12 bytes")
    if len(ciphertext) < AEAD_TAG_SIZE:
        raise ChannelError("ciphertext shorter than its authentication tag")
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag as exc:
        raise ChannelError("record authentication failed") from exc


# --- scrypt (RFC 7914) -------------------------------------------------------


def scrypt(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int, length: int) -> bytes:
    """scrypt KDF; memory use is about 128 * r * 2**log_n bytes."""
    return Scrypt(salt=salt, length=length, n=1 << log_n, r=r, p=p).derive(passphrase)


# --- HPKE (RFC 9180): MLKEM768-X25519, HKDF-SHA256, AES-256-GCM, base mode ------
#
# pyca's hybrid key objects have no byte form of their own, so the byte forms
# here are their two components as pyca serialises each, ML-KEM first (the
# order of X-Wing and draft-ietf-hpke-pq):
#   public  = ML-KEM-768 encapsulation key (1184) || X25519 public key (32)
#   private = ML-KEM-768 seed d || z (64)          || X25519 private key (32)
# The first release of ``cryptography`` whose wheels can run this suite is
# 48.0.0 (47.0.0 has the hpke module, but ML-KEM only on AWS-LC/BoringSSL).

_MLKEM768_PUBLIC_SIZE = 1184
_MLKEM_SEED_SIZE = 64
HPKE_PUBLIC_KEY_SIZE = _MLKEM768_PUBLIC_SIZE + X25519_KEY_SIZE
HPKE_PRIVATE_KEY_SIZE = _MLKEM_SEED_SIZE + X25519_KEY_SIZE
HPKE_ENC_SIZE = 1088 + X25519_KEY_SIZE
"""The KEM encapsulation: ML-KEM-768 ciphertext (1088) || ephemeral X25519 key (32)."""
HPKE_SEAL_OVERHEAD = HPKE_ENC_SIZE + AEAD_TAG_SIZE
"""What :func:`hpke_seal` adds to a plaintext: the encapsulation and the AEAD tag."""

_HPKE_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _hpke_private_key(private: bytes) -> hpke.MLKEM768X25519PrivateKey:
    if type(private) is not bytes or len(private) != HPKE_PRIVATE_KEY_SIZE:
        raise ValueError(f"an HPKE private key is {HPKE_PRIVATE_KEY_SIZE} bytes")
    return hpke.MLKEM768X25519PrivateKey(
        MLKEM768PrivateKey.from_seed_bytes(private[:_MLKEM_SEED_SIZE]),
        X25519PrivateKey.from_private_bytes(private[_MLKEM_SEED_SIZE:]),
    )


def _hpke_public_key(public: bytes) -> hpke.MLKEM768X25519PublicKey:
    """pyca's key for ``public``; ValueError when either half is not a valid key."""
    if type(public) is not bytes or len(public) != HPKE_PUBLIC_KEY_SIZE:
        raise ValueError(f"an HPKE public key is {HPKE_PUBLIC_KEY_SIZE} bytes")
    return hpke.MLKEM768X25519PublicKey(
        MLKEM768PublicKey.from_public_bytes(public[:_MLKEM768_PUBLIC_SIZE]),
        X25519PublicKey.from_public_bytes(public[_MLKEM768_PUBLIC_SIZE:]),
    )


def hpke_public_from_private(private: bytes) -> bytes:
    """The public key bytes for ``private`` (96 random bytes make a fresh key pair).

    The caller supplies the private bytes (from the OS random generator for a
    new key); every 96-byte string is a valid private key.
    """
    if type(private) is not bytes or len(private) != HPKE_PRIVATE_KEY_SIZE:
        raise ValueError(f"an HPKE private key is {HPKE_PRIVATE_KEY_SIZE} bytes")
    mlkem = MLKEM768PrivateKey.from_seed_bytes(private[:_MLKEM_SEED_SIZE])
    x25519 = X25519PrivateKey.from_private_bytes(private[_MLKEM_SEED_SIZE:])
    return mlkem.public_key().public_bytes_raw() + x25519.public_key().public_bytes_raw()


def hpke_check_public(public: bytes) -> None:
    """ValueError unless ``public`` is a public key :func:`hpke_seal` can seal to.

    ML-KEM's encapsulation key check (FIPS 203 §7.2) runs here, so a prekey
    that could never be sealed to is refused where it is received.
    """
    _hpke_public_key(public)


def hpke_seal(public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """HPKE base-mode single-shot seal: ``enc || ciphertext || tag``; fresh every call.

    ValueError when ``public`` is not a usable key (an X25519 half of low
    order makes the encapsulation fail).
    """
    key = _hpke_public_key(public)
    try:
        return _HPKE_SUITE.encrypt(plaintext, key, info=info)
    except ValueError as exc:
        raise ValueError("cannot seal to this HPKE public key") from exc


def hpke_open(private: bytes, sealed: bytes, info: bytes) -> bytes:
    """Open what :func:`hpke_seal` made; any failure is a :class:`ProtocolError`.

    A wrong key, wrong ``info``, a changed byte anywhere or a short input all
    look the same: the envelope does not open. ML-KEM decapsulation of a
    tampered encapsulation yields an unrelated secret, so it too ends in the
    AEAD tag check.
    """
    key = _hpke_private_key(private)
    if len(sealed) < HPKE_SEAL_OVERHEAD:
        raise ProtocolError("sealed envelope shorter than its encapsulation and tag")
    try:
        return _HPKE_SUITE.decrypt(sealed, key, info=info)
    except (InvalidTag, ValueError) as exc:
        raise ProtocolError("envelope does not open: wrong key, or altered in transit") from exc
