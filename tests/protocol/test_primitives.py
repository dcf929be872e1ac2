"""Known answers and hostile inputs for p2ptransfer.protocol.primitives.

Every vector runs through the wrapper functions the protocol calls, not
through pyca directly, so a wrapper that passes the wrong argument (salt and
info swapped, a length ignored, the tag cut off) fails here. The hostile
inputs are the ones the handshake and the channel must survive: X25519
low-order points, malleated or small-order Ed25519 signatures, wrong
lengths and tampered ciphertexts.
"""

from __future__ import annotations

import hashlib

import pytest

from p2ptransfer.errors import ChannelError, HandshakeError, SignatureError
from p2ptransfer.protocol import primitives
from tests.protocol.x25519_points import LOW_ORDER_ENCODINGS
from tests.vectors.loader import load_kv_vectors, unhex

X25519 = load_kv_vectors("rfc7748_x25519.txt")
ED25519 = load_kv_vectors("rfc8032_ed25519.txt")
HKDF = load_kv_vectors("rfc5869_hkdf.txt")
SCRYPT = load_kv_vectors("rfc7914_scrypt.txt")
GCM = load_kv_vectors("gcm_aes256.txt")

X25519_SINGLE = [v for v in X25519 if "SCALAR" in v]
X25519_ITERATED = [v for v in X25519 if "ITERATIONS" in v]
X25519_DH = [v for v in X25519 if "SHARED" in v]


def _ids(vectors: list[dict[str, str]]) -> list[str]:
    return [v["ID"] for v in vectors]


def test_vector_files_hold_every_expected_vector() -> None:
    """A vector silently lost from a file would make its test vanish, not fail."""
    assert _ids(X25519_SINGLE) == ["rfc7748-5.2-vector-1", "rfc7748-5.2-vector-2"]
    assert [int(v["ITERATIONS"]) for v in X25519_ITERATED] == [1, 1000, 1_000_000]
    assert _ids(X25519_DH) == ["rfc7748-6.1-alice-bob"]
    assert _ids(ED25519) == [
        "rfc8032-7.1-test-1",
        "rfc8032-7.1-test-2",
        "rfc8032-7.1-test-3",
        "rfc8032-7.1-test-1024",
        "rfc8032-7.1-test-sha-abc",
    ]
    assert len(unhex(ED25519[3]["MESSAGE"])) == 1023
    assert unhex(ED25519[4]["MESSAGE"]) == hashlib.sha512(b"abc").digest()
    assert _ids(HKDF) == [
        "rfc5869-A.1-basic",
        "rfc5869-A.2-longer-inputs",
        "rfc5869-A.3-zero-length-salt-info",
    ]
    assert len(SCRYPT) == 3
    assert len(GCM) == 4


# --- SHA-256 and constant-time compare --------------------------------------


def test_sha256_known_answer_and_concatenation() -> None:
    # FIPS 180-2 appendix B.1: SHA-256("abc").
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert primitives.sha256(b"abc").hex() == abc
    assert primitives.sha256(b"a", b"", b"bc").hex() == abc
    assert primitives.sha256().hex() == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (b"", b"", True),
        (b"\x00" * 32, b"\x00" * 32, True),
        (b"\x00" * 32, b"\x00" * 31 + b"\x01", False),
        (b"\x00" * 32, b"\x00" * 31, False),
        (b"abc", b"abd", False),
    ],
    ids=["empty", "equal", "last-byte-differs", "different-length", "short-differs"],
)
def test_constant_time_equal(a: bytes, b: bytes, equal: bool) -> None:
    assert primitives.constant_time_equal(a, b) is equal


# --- X25519 (RFC 7748) ------------------------------------------------------


@pytest.mark.parametrize("vector", X25519_SINGLE, ids=_ids(X25519_SINGLE))
def test_x25519_rfc7748_single(vector: dict[str, str]) -> None:
    shared = primitives.x25519_shared_secret(unhex(vector["SCALAR"]), unhex(vector["U"]))
    assert shared == unhex(vector["OUTPUT"])


def _iterate_x25519(iterations: int) -> bytes:
    k = u = (9).to_bytes(32, "little")
    for _ in range(iterations):
        k, u = primitives.x25519_shared_secret(k, u), k
    return k


@pytest.mark.parametrize(
    "vector",
    [
        pytest.param(v, marks=pytest.mark.slow) if int(v["ITERATIONS"]) > 1000 else v
        for v in X25519_ITERATED
    ],
    ids=_ids(X25519_ITERATED),
)
def test_x25519_rfc7748_iterated(vector: dict[str, str]) -> None:
    assert _iterate_x25519(int(vector["ITERATIONS"])) == unhex(vector["OUTPUT"])


@pytest.mark.parametrize("vector", X25519_DH, ids=_ids(X25519_DH))
def test_x25519_rfc7748_diffie_hellman(vector: dict[str, str]) -> None:
    alice, bob = unhex(vector["ALICE_PRIVATE"]), unhex(vector["BOB_PRIVATE"])
    alice_public = primitives.x25519_public_from_private(alice)
    bob_public = primitives.x25519_public_from_private(bob)
    assert alice_public == unhex(vector["ALICE_PUBLIC"])
    assert bob_public == unhex(vector["BOB_PUBLIC"])
    assert primitives.x25519_shared_secret(alice, bob_public) == unhex(vector["SHARED"])
    assert primitives.x25519_shared_secret(bob, alice_public) == unhex(vector["SHARED"])


def test_low_order_list_is_the_published_one() -> None:
    assert LOW_ORDER_ENCODINGS["order-8-a"].hex() == (
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
    )
    assert LOW_ORDER_ENCODINGS["order-8-b"].hex() == (
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"
    )
    assert len(LOW_ORDER_ENCODINGS) == 14


@pytest.mark.parametrize(
    "peer_public", list(LOW_ORDER_ENCODINGS.values()), ids=list(LOW_ORDER_ENCODINGS)
)
@pytest.mark.parametrize(
    "private",
    [bytes(range(32)), unhex(X25519_DH[0]["ALICE_PRIVATE"])],
    ids=["scalar-0..31", "scalar-alice"],
)
def test_x25519_low_order_point_is_a_failed_handshake(peer_public: bytes, private: bytes) -> None:
    with pytest.raises(HandshakeError, match=r"^peer ephemeral key is a low-order point$"):
        primitives.x25519_shared_secret(private, peer_public)


@pytest.mark.parametrize(
    ("private_len", "public_len"),
    [(31, 32), (33, 32), (0, 32), (32, 31), (32, 33), (32, 0), (64, 64)],
    ids=["priv-31", "priv-33", "priv-0", "pub-31", "pub-33", "pub-0", "both-64"],
)
def test_x25519_wrong_lengths(private_len: int, public_len: int) -> None:
    with pytest.raises(HandshakeError, match=r"^X25519 keys must be 32 bytes$"):
        primitives.x25519_shared_secret(b"\x07" * private_len, b"\x09" * public_len)


@pytest.mark.parametrize("length", [0, 31, 33], ids=["len-0", "len-31", "len-33"])
def test_x25519_public_from_private_wrong_length(length: int) -> None:
    with pytest.raises(HandshakeError, match=r"^X25519 private key must be 32 bytes$"):
        primitives.x25519_public_from_private(b"\x07" * length)


# --- Ed25519 (RFC 8032) -----------------------------------------------------

# The order of the prime subgroup, RFC 8032 §5.1.
_L = 2**252 + 27742317777372353535851937790883648493


@pytest.mark.parametrize("vector", ED25519, ids=_ids(ED25519))
def test_ed25519_rfc8032_public_key(vector: dict[str, str]) -> None:
    public = primitives.ed25519_public_from_seed(unhex(vector["SECRET_KEY"]))
    assert public == unhex(vector["PUBLIC_KEY"])


@pytest.mark.parametrize("vector", ED25519, ids=_ids(ED25519))
def test_ed25519_rfc8032_sign(vector: dict[str, str]) -> None:
    signature = primitives.ed25519_sign(unhex(vector["SECRET_KEY"]), unhex(vector["MESSAGE"]))
    assert signature == unhex(vector["SIGNATURE"])


@pytest.mark.parametrize("vector", ED25519, ids=_ids(ED25519))
def test_ed25519_rfc8032_verify(vector: dict[str, str]) -> None:
    public, message = unhex(vector["PUBLIC_KEY"]), unhex(vector["MESSAGE"])
    signature = unhex(vector["SIGNATURE"])
    primitives.ed25519_verify(public, signature, message)  # no exception: valid
    with pytest.raises(SignatureError, match=r"^signature does not verify$"):
        primitives.ed25519_verify(public, signature, message + b"\x00")


@pytest.mark.parametrize("vector", ED25519, ids=_ids(ED25519))
def test_ed25519_malleated_signature_s_plus_l_rejected(vector: dict[str, str]) -> None:
    """RFC 8032 §5.1.7: S must be < L; S + L is the classic malleation."""
    signature = unhex(vector["SIGNATURE"])
    s = int.from_bytes(signature[32:], "little")
    assert s < _L
    for k in (1, 2, 15):  # S + kL still fits in 32 bytes for k <= 15
        malleated = signature[:32] + (s + k * _L).to_bytes(32, "little")
        with pytest.raises(SignatureError, match=r"^signature does not verify$"):
            primitives.ed25519_verify(unhex(vector["PUBLIC_KEY"]), malleated, b"")
        with pytest.raises(SignatureError, match=r"^signature does not verify$"):
            primitives.ed25519_verify(
                unhex(vector["PUBLIC_KEY"]), malleated, unhex(vector["MESSAGE"])
            )


def test_ed25519_every_single_bit_flip_of_a_signature_is_rejected() -> None:
    vector = ED25519[2]
    public, message = unhex(vector["PUBLIC_KEY"]), unhex(vector["MESSAGE"])
    signature = unhex(vector["SIGNATURE"])
    for bit in range(len(signature) * 8):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignatureError):
            primitives.ed25519_verify(public, bytes(flipped), message)


def test_ed25519_signature_under_another_key_is_rejected() -> None:
    one, two = ED25519[0], ED25519[1]
    with pytest.raises(SignatureError, match=r"^signature does not verify$"):
        primitives.ed25519_verify(
            unhex(two["PUBLIC_KEY"]), unhex(one["SIGNATURE"]), unhex(one["MESSAGE"])
        )


# Independent edwards25519 arithmetic (RFC 8032 §5.1 and the §6 illustration),
# only to derive the small-order points below instead of trusting a copied list.
_Q = 2**255 - 19
_D = -121665 * pow(121666, _Q - 2, _Q) % _Q
_SQRT_M1 = pow(2, (_Q - 1) // 4, _Q)
_Point = tuple[int, int, int, int]
_IDENTITY: _Point = (0, 1, 1, 0)


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _Q
    b = (p[1] + p[0]) * (q[1] + q[0]) % _Q
    c = 2 * p[3] * q[3] * _D % _Q
    d = 2 * p[2] * q[2] % _Q
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _Q, g * h % _Q, f * g % _Q, e * h % _Q)


def _mul(s: int, p: _Point) -> _Point:
    q = _IDENTITY
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _encode(p: _Point) -> bytes:
    zinv = pow(p[2], _Q - 2, _Q)
    x, y = p[0] * zinv % _Q, p[1] * zinv % _Q
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _decode_y(y: int) -> _Point | None:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _Q - 2, _Q) % _Q
    x = pow(x2, (_Q + 3) // 8, _Q)
    if (x * x - x2) % _Q:
        x = x * _SQRT_M1 % _Q
    if (x * x - x2) % _Q:
        return None
    return (x, y, 1, x * y % _Q)


def _torsion_encodings() -> list[bytes]:
    """The canonical encodings of the 8 points of order dividing 8: [L]P spans them."""
    for y in range(2, 100):
        point = _decode_y(y)
        if point is None:
            continue
        t = _mul(_L, point)
        multiples = [_encode(_mul(k, t)) for k in range(8)]
        if len(set(multiples)) == 8:
            return sorted(multiples)
    raise AssertionError("no point with an order-8 component among small y")


_TORSION = _torsion_encodings()


def _small_order_encodings() -> dict[str, bytes]:
    cases: dict[str, bytes] = {}
    for i, enc in enumerate(_TORSION):
        cases[f"torsion-{i}"] = enc
        # The same y with the other x-sign bit: for x = 0 it is a non-canonical
        # "negative zero", otherwise it is the negated point (also small order).
        cases[f"torsion-{i}-sign-flipped"] = enc[:31] + bytes([enc[31] ^ 0x80])
    for name, y in (("y-equals-p", _Q), ("y-equals-p-plus-1", _Q + 1)):
        cases[name] = y.to_bytes(32, "little")
        cases[f"{name}-sign-set"] = (y | 1 << 255).to_bytes(32, "little")
    return cases


_SMALL_ORDER = _small_order_encodings()


def test_small_order_points_are_the_eight_torsion_points() -> None:
    assert len(_TORSION) == 8
    assert _encode(_IDENTITY) in _TORSION
    for enc in _TORSION:
        point = _decode_y(int.from_bytes(enc, "little") & ((1 << 255) - 1))
        assert point is not None
        assert _encode(_mul(8, point)) == _encode(_IDENTITY)


@pytest.mark.parametrize("public", list(_SMALL_ORDER.values()), ids=list(_SMALL_ORDER))
def test_ed25519_small_order_public_key_rejected(public: bytes) -> None:
    """Under the identity point, R = identity and S = 0 "verify" for every message.

    OpenSSL accepts that forgery; an address holding such a key would let
    anyone (the relay included) pass the handshake as its owner.
    """
    trivial = _encode(_IDENTITY) + bytes(32)
    for message in (b"", b"any message at all"):
        with pytest.raises(SignatureError, match=r"^Ed25519 public key has small order$"):
            primitives.ed25519_verify(public, trivial, message)


@pytest.mark.parametrize("r", list(_SMALL_ORDER.values()), ids=list(_SMALL_ORDER))
def test_ed25519_small_order_r_rejected(r: bytes) -> None:
    vector = ED25519[0]
    forged = r + unhex(vector["SIGNATURE"])[32:]
    with pytest.raises(SignatureError, match=r"^signature does not verify$"):
        primitives.ed25519_verify(unhex(vector["PUBLIC_KEY"]), forged, b"")


@pytest.mark.parametrize(
    ("public_len", "signature_len"),
    [(31, 64), (33, 64), (0, 64), (32, 63), (32, 65), (32, 0)],
    ids=["pub-31", "pub-33", "pub-0", "sig-63", "sig-65", "sig-0"],
)
def test_ed25519_verify_wrong_lengths(public_len: int, signature_len: int) -> None:
    with pytest.raises(SignatureError, match=r"^malformed Ed25519 key or signature$"):
        primitives.ed25519_verify(b"\x01" * public_len, b"\x02" * signature_len, b"msg")


@pytest.mark.parametrize("length", [0, 31, 33, 64], ids=["len-0", "len-31", "len-33", "len-64"])
def test_ed25519_seed_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match=r"^Ed25519 seed must be 32 bytes$"):
        primitives.ed25519_public_from_seed(b"\x01" * length)
    with pytest.raises(ValueError, match=r"^Ed25519 seed must be 32 bytes$"):
        primitives.ed25519_sign(b"\x01" * length, b"msg")


# --- HKDF-SHA256 (RFC 5869) -------------------------------------------------


@pytest.mark.parametrize("vector", HKDF, ids=_ids(HKDF))
def test_hkdf_extract_rfc5869(vector: dict[str, str]) -> None:
    assert primitives.hkdf_extract(unhex(vector["SALT"]), unhex(vector["IKM"])) == unhex(
        vector["PRK"]
    )


@pytest.mark.parametrize("vector", HKDF, ids=_ids(HKDF))
def test_hkdf_expand_rfc5869(vector: dict[str, str]) -> None:
    okm = primitives.hkdf_expand(unhex(vector["PRK"]), unhex(vector["INFO"]), int(vector["L"]))
    assert okm == unhex(vector["OKM"])


@pytest.mark.parametrize("vector", HKDF, ids=_ids(HKDF))
def test_hkdf_sha256_rfc5869(vector: dict[str, str]) -> None:
    okm = primitives.hkdf_sha256(
        unhex(vector["IKM"]), unhex(vector["SALT"]), unhex(vector["INFO"]), int(vector["L"])
    )
    assert okm == unhex(vector["OKM"])


def test_hkdf_expand_refuses_more_than_255_blocks() -> None:
    prk = unhex(HKDF[0]["PRK"])
    assert len(primitives.hkdf_expand(prk, b"", 255 * 32)) == 255 * 32
    with pytest.raises(ValueError):
        primitives.hkdf_expand(prk, b"", 255 * 32 + 1)


# --- AES-256-GCM -------------------------------------------------------------


@pytest.mark.parametrize("vector", GCM, ids=_ids(GCM))
def test_aead_known_answer(vector: dict[str, str]) -> None:
    key, nonce = unhex(vector["KEY"]), unhex(vector["IV"])
    sealed = primitives.aead_seal(key, nonce, unhex(vector["PT"]), unhex(vector["AAD"]))
    assert sealed == unhex(vector["CT"]) + unhex(vector["TAG"])
    assert primitives.aead_open(key, nonce, sealed, unhex(vector["AAD"])) == unhex(vector["PT"])


_GCM16 = GCM[3]
_KEY, _NONCE = unhex(_GCM16["KEY"]), unhex(_GCM16["IV"])
_PT, _AAD = unhex(_GCM16["PT"]), unhex(_GCM16["AAD"])
_SEALED = unhex(_GCM16["CT"]) + unhex(_GCM16["TAG"])


def _open_fails(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> None:
    with pytest.raises(ChannelError, match=r"^record authentication failed$"):
        primitives.aead_open(key, nonce, sealed, aad)


def test_aead_tamper_any_ciphertext_or_tag_byte() -> None:
    for i in range(len(_SEALED)):
        for mask in (0x01, 0x80):
            tampered = bytearray(_SEALED)
            tampered[i] ^= mask
            _open_fails(_KEY, _NONCE, bytes(tampered), _AAD)


def test_aead_tamper_any_associated_data_byte() -> None:
    for i in range(len(_AAD)):
        tampered = bytearray(_AAD)
        tampered[i] ^= 0x01
        _open_fails(_KEY, _NONCE, _SEALED, bytes(tampered))
    _open_fails(_KEY, _NONCE, _SEALED, _AAD + b"\x00")
    _open_fails(_KEY, _NONCE, _SEALED, _AAD[:-1])
    _open_fails(_KEY, _NONCE, _SEALED, b"")


@pytest.mark.parametrize(
    ("key", "nonce", "sealed"),
    [
        (bytes(32), _NONCE, _SEALED),
        (_KEY, bytes(12), _SEALED),
        (_KEY, _NONCE[:-1] + bytes([_NONCE[-1] ^ 1]), _SEALED),
        (_KEY, _NONCE, _SEALED[:-1]),
        (_KEY, _NONCE, _SEALED + b"\x00"),
        (_KEY, _NONCE, _SEALED[1:]),
        (_KEY, _NONCE, _SEALED[-16:]),
    ],
    ids=[
        "wrong-key",
        "wrong-nonce",
        "nonce-last-bit",
        "truncated-by-one",
        "extended-by-one",
        "first-byte-dropped",
        "tag-only",
    ],
)
def test_aead_open_rejects(key: bytes, nonce: bytes, sealed: bytes) -> None:
    _open_fails(key, nonce, sealed, _AAD)


@pytest.mark.parametrize("length", [0, 1, 15], ids=["len-0", "len-1", "len-15"])
def test_aead_open_shorter_than_tag(length: int) -> None:
    with pytest.raises(ChannelError, match=r"^ciphertext shorter than its authentication tag$"):
        primitives.aead_open(_KEY, _NONCE, _SEALED[:length], _AAD)


@pytest.mark.parametrize("length", [0, 8, 11, 13, 16], ids=lambda n: f"nonce-{n}")
def test_aead_wrong_nonce_length(length: int) -> None:
    with pytest.raises(ValueError, match=r"^AES-GCM nonce must be 12 bytes$"):
        primitives.aead_seal(_KEY, bytes(length), _PT, _AAD)
    with pytest.raises(ValueError, match=r"^AES-GCM nonce must be 12 bytes$"):
        primitives.aead_open(_KEY, bytes(length), _SEALED, _AAD)


@pytest.mark.parametrize("length", [16, 24, 31, 33], ids=lambda n: f"key-{n}")
def test_aead_key_must_be_256_bits(length: int) -> None:
    """AESGCM would quietly accept a 128- or 192-bit key: a truncated key must not pass."""
    with pytest.raises(ValueError, match=r"^AES-256-GCM key must be 32 bytes$"):
        primitives.aead_seal(bytes(length), _NONCE, _PT, _AAD)
    with pytest.raises(ValueError, match=r"^AES-256-GCM key must be 32 bytes$"):
        primitives.aead_open(bytes(length), _NONCE, _SEALED, _AAD)


# --- scrypt (RFC 7914) ------------------------------------------------------


@pytest.mark.parametrize("vector", SCRYPT, ids=_ids(SCRYPT))
def test_scrypt_rfc7914(vector: dict[str, str]) -> None:
    n = int(vector["N"])
    log_n = n.bit_length() - 1
    assert 1 << log_n == n
    derived = primitives.scrypt(
        vector["PASSWORD_TEXT"].encode("ascii"),
        vector["SALT_TEXT"].encode("ascii"),
        log_n,
        int(vector["R"]),
        int(vector["P_PARALLEL"]),
        int(vector["DKLEN"]),
    )
    assert derived == unhex(vector["DK"])


def test_an_audit_trusts_no_cached_verdict() -> None:
    """A signature remembered as ours (or as verified) is checked again inside an audit."""
    from p2ptransfer.errors import SignatureError
    from p2ptransfer.protocol import primitives

    signer = primitives.Ed25519Signer(bytes(range(32)))
    message = b"an entry"
    signature = signer.sign_checked(message)
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    # Pretend a fault made ``forged`` and the double-signing check let it through.
    primitives._OWN_SIGNATURES[(signer.public_key, forged, message)] = None
    primitives.ed25519_verify(signer.public_key, forged, message)  # trusted outside an audit
    with primitives.fresh_verification(), pytest.raises(SignatureError):
        primitives.ed25519_verify(signer.public_key, forged, message)
    del primitives._OWN_SIGNATURES[(signer.public_key, forged, message)]
