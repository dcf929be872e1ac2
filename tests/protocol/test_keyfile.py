"""The key file: exact format, the two failure modes kept apart, hostile files.

The user-facing promise is: a wrong passphrase says "wrong passphrase", a
damaged file says "damaged", never the other way round, and neither error
ever carries the passphrase or the seed. The security promise is: every
header byte is bound to the seal, and KDF parameters from a file are bounded
before scrypt runs with them. scrypt runs at log2(n) = 10 here (the floor)
so the whole file stays fast.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import CorruptKeyFile, KeyFileError, P2PTransferError, WrongPassphrase
from p2ptransfer.protocol import primitives
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.keyfile import (
    DEFAULT_LOG_N,
    HEADER,
    KEY_FILE,
    MAX_LOG_N,
    MIN_LOG_N,
    KdfParams,
    open_key_file,
    read_public_key,
    seal_key_file,
)

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
OTHER_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
PASSPHRASE = "correct horse battery staple ✓"
SALT = bytes(range(16))
NONCE = bytes(range(0xA0, 0xAC))
FAST = KdfParams(log_n=10)

# The whole file for the inputs above: a change to the format breaks this on purpose.
KNOWN_FILE_HEX = (
    "71"
    "01" "0000006a"
    "70"
    "01000000" "0101"  # version 1
    "02000000" "0101"  # kdf 1 = scrypt
    "03000000" "010a"  # log2(n) = 10
    "04000000" "0108"  # r = 8
    "05000000" "0101"  # p = 1
    "06000000" "10" "000102030405060708090a0b0c0d0e0f"  # salt
    "07000000" "0c" "a0a1a2a3a4a5a6a7a8a9aaab"  # nonce
    "08000000" "20" "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    "02" "00000030"
    "d28bc3ee1d7cb5a6d1f6d7d6cd68739c370f33c4ffce6cd57b9e9f5d2fe75816"
    "739c055e5ad0f76f8210951311a4aef9"
    "03" "00000020"
    "5752a4a44edeadf585c7f50fb599ea410e744312bfaaacda1c3d16ee6c520d81"
)  # fmt: skip
KNOWN_FILE = bytes.fromhex(KNOWN_FILE_HEX)
HEADER_OFFSET, HEADER_SIZE = 6, 0x6A
SEALED_OFFSET = HEADER_OFFSET + HEADER_SIZE + 5
CHECKSUM_OFFSET = SEALED_OFFSET + 48 + 5


def sealed_file(**overrides: Any) -> bytes:
    args: dict[str, Any] = {"salt": SALT, "nonce": NONCE, "params": FAST} | overrides
    return seal_key_file(Identity(SEED), PASSPHRASE, **args)


def rebuild(header: dict[str, Any] | None = None, sealed: bytes | None = None) -> bytes:
    """A file with header fields and/or the sealed seed replaced, re-checksummed.

    Anyone can recompute the checksum, so these files are what an attacker
    (not a disk error) would produce.
    """
    outer = KEY_FILE.decode(KNOWN_FILE)
    fields = HEADER.decode(outer["header"]) | (header or {})
    raw_header = HEADER.encode(fields)
    sealed = outer["sealed"] if sealed is None else sealed
    checksum = hashlib.sha256(raw_header + sealed).digest()
    return KEY_FILE.encode({"header": raw_header, "sealed": sealed, "checksum": checksum})


@pytest.fixture
def no_scrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A tripwire (not a fake): the test fails if scrypt is called at all."""

    def tripwire(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("scrypt ran for a file that should have been refused first")

    monkeypatch.setattr(primitives, "scrypt", tripwire)
    yield


# --- format -------------------------------------------------------------------


def test_known_answer_file() -> None:
    assert sealed_file() == KNOWN_FILE
    assert len(KNOWN_FILE) == 202


def test_known_answer_file_from_first_principles() -> None:
    """Rebuild the file with pyca and hashlib directly, not through keyfile.py."""
    header = KNOWN_FILE[HEADER_OFFSET : HEADER_OFFSET + HEADER_SIZE]
    key = Scrypt(salt=SALT, length=32, n=1 << 10, r=8, p=1).derive(PASSPHRASE.encode())
    sealed = AESGCM(key).encrypt(NONCE, SEED, header)
    assert KNOWN_FILE[SEALED_OFFSET : SEALED_OFFSET + 48] == sealed
    assert KNOWN_FILE[CHECKSUM_OFFSET:] == hashlib.sha256(header + sealed).digest()


def test_round_trip() -> None:
    identity = open_key_file(KNOWN_FILE, PASSPHRASE)
    assert identity.seed == SEED
    assert identity.public.public_key == PUBLIC
    assert read_public_key(KNOWN_FILE) == PUBLIC


@pytest.mark.parametrize(
    "passphrase", ["", "x", "pässwörd", "🔑" * 100, "a" * 10_000], ids=lambda p: f"len-{len(p)}"
)
def test_round_trip_any_passphrase(passphrase: str) -> None:
    data = seal_key_file(Identity(OTHER_SEED), passphrase, salt=SALT, nonce=NONCE, params=FAST)
    assert open_key_file(data, passphrase).seed == OTHER_SEED


def test_kdf_parameters_are_read_from_the_file() -> None:
    params = KdfParams(log_n=11, r=4, p=2)
    data = sealed_file(params=params)
    header = HEADER.decode(KEY_FILE.decode(data)["header"])
    assert (header["log_n"], header["r"], header["p"]) == (11, 4, 2)
    assert open_key_file(data, PASSPHRASE).seed == SEED


def test_fresh_salt_or_nonce_changes_every_byte_of_the_seal() -> None:
    a = KEY_FILE.decode(sealed_file())["sealed"]
    b = KEY_FILE.decode(sealed_file(salt=bytes(16)))["sealed"]
    c = KEY_FILE.decode(sealed_file(nonce=bytes(12)))["sealed"]
    assert len({a, b, c}) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"salt": bytes(15)}, "field 'salt': expected exactly 16 bytes"),
        ({"nonce": bytes(16)}, "field 'nonce': expected exactly 12 bytes"),
    ],
    ids=["salt-15", "nonce-16"],
)
def test_seal_refuses_wrong_salt_or_nonce(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        sealed_file(**overrides)


# --- KdfParams -------------------------------------------------------------------


def test_kdf_defaults() -> None:
    assert KdfParams() == KdfParams(log_n=17, r=8, p=1)
    assert (DEFAULT_LOG_N, MIN_LOG_N, MAX_LOG_N) == (17, 10, 20)


@pytest.mark.parametrize(
    ("log_n", "r", "p", "message"),
    [
        (9, 8, 1, "scrypt log2(n) must be between 10 and 20"),
        (21, 8, 1, "scrypt log2(n) must be between 10 and 20"),
        (0, 8, 1, "scrypt log2(n) must be between 10 and 20"),
        (10, 0, 1, "scrypt r must be 1..16 and p 1..4"),
        (10, 17, 1, "scrypt r must be 1..16 and p 1..4"),
        (10, 8, 0, "scrypt r must be 1..16 and p 1..4"),
        (10, 8, 5, "scrypt r must be 1..16 and p 1..4"),
        (20, 16, 1, "scrypt n and r together would need more than 1 GiB of memory"),
        (20, 9, 1, "scrypt n and r together would need more than 1 GiB of memory"),
    ],
    ids=["log-n-9", "log-n-21", "log-n-0", "r-0", "r-17", "p-0", "p-5", "2GiB", "r9-logn20"],
)
def test_kdf_params_bounds(log_n: int, r: int, p: int, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        KdfParams(log_n=log_n, r=r, p=p)


def test_kdf_params_largest_allowed() -> None:
    assert KdfParams(log_n=20, r=8, p=4).log_n == 20  # exactly 1 GiB
    assert KdfParams(log_n=19, r=16, p=4).r == 16


# --- wrong passphrase vs damaged file ----------------------------------------------


@pytest.mark.parametrize(
    "wrong",
    ["", "correct horse battery staple", PASSPHRASE + " ", PASSPHRASE.upper(), "x" * 1000],
    ids=["empty", "missing-last-char", "trailing-space", "upper-case", "long"],
)
def test_wrong_passphrase(wrong: str) -> None:
    with pytest.raises(WrongPassphrase) as info:
        open_key_file(KNOWN_FILE, wrong)
    assert str(info.value) == "wrong passphrase for this key file"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def _all_single_byte_corruptions() -> Iterator[tuple[str, bytes]]:
    for i in range(len(KNOWN_FILE)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(KNOWN_FILE)
            damaged[i] ^= mask
            yield f"byte-{i}-xor-{mask:02x}", bytes(damaged)


def _region(i: int) -> str:
    if i < HEADER_OFFSET:
        return "outer-framing"
    if i < HEADER_OFFSET + HEADER_SIZE:
        return "header"
    if i < SEALED_OFFSET:
        return "sealed-framing"
    if i < SEALED_OFFSET + 48:
        return "sealed"
    if i < CHECKSUM_OFFSET:
        return "checksum-framing"
    return "checksum"


def test_every_single_byte_corruption_is_corrupt_never_wrong_passphrase(no_scrypt: None) -> None:
    """All 202 x 3 flips: each is CorruptKeyFile, caught before scrypt ever runs."""
    regions: dict[str, int] = {}
    for name, damaged in _all_single_byte_corruptions():
        with pytest.raises(CorruptKeyFile):
            open_key_file(damaged, PASSPHRASE)
        with pytest.raises(CorruptKeyFile):
            read_public_key(damaged)
        region = _region(int(name.split("-")[1]))
        regions[region] = regions.get(region, 0) + 1
    assert set(regions) == {
        "outer-framing",
        "header",
        "sealed-framing",
        "sealed",
        "checksum-framing",
        "checksum",
    }


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "not a p2ptransfer key file (keyfile: wrong message type 0x70)"),
        (HEADER_OFFSET, "not a p2ptransfer key file (keyfile-header: wrong message type 0x71)"),
        (HEADER_OFFSET + 6, "key file is damaged (checksum mismatch)"),
        (HEADER_OFFSET + HEADER_SIZE - 1, "key file is damaged (checksum mismatch)"),
        (SEALED_OFFSET, "key file is damaged (checksum mismatch)"),
        (SEALED_OFFSET + 47, "key file is damaged (checksum mismatch)"),
        (CHECKSUM_OFFSET, "key file is damaged (checksum mismatch)"),
        (len(KNOWN_FILE) - 1, "key file is damaged (checksum mismatch)"),
    ],
    ids=[
        "outer-type",
        "header-type",
        "header-version",
        "header-public-key",
        "sealed-first",
        "sealed-tag",
        "checksum-first",
        "checksum-last",
    ],
)
def test_corruption_messages(offset: int, message: str) -> None:
    damaged = bytearray(KNOWN_FILE)
    damaged[offset] ^= 0x01
    with pytest.raises(CorruptKeyFile) as info:
        open_key_file(bytes(damaged), PASSPHRASE)
    assert str(info.value) == message


SHAPES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda b: b"", "not a p2ptransfer key file (keyfile: empty message)"),
    (
        "one-byte",
        lambda b: b[:1],
        "not a p2ptransfer key file (keyfile: truncated before field 'header')",
    ),
    (
        "truncated-by-one",
        lambda b: b[:-1],
        "not a p2ptransfer key file (keyfile: field 'checksum' runs past the end)",
    ),
    (
        "cut-in-sealed",
        lambda b: b[: SEALED_OFFSET + 20],
        "not a p2ptransfer key file (keyfile: field 'sealed' runs past the end)",
    ),
    (
        "extended-by-one",
        lambda b: b + b"\x00",
        "not a p2ptransfer key file (keyfile: 1 trailing bytes)",
    ),
    (
        "doubled",
        lambda b: b + b,
        "not a p2ptransfer key file (keyfile: 202 trailing bytes)",
    ),
    (
        "over-limit",
        lambda b: b + bytes(400),
        "not a p2ptransfer key file (keyfile: 602 bytes exceeds the limit of 512)",
    ),
    (
        "pem-text",
        lambda b: b"-----BEGIN PRIVATE KEY-----\n",
        "not a p2ptransfer key file (keyfile: wrong message type 0x2d)",
    ),
    (
        "all-zero",
        lambda b: bytes(len(b)),
        "not a p2ptransfer key file (keyfile: wrong message type 0x00)",
    ),
]


@pytest.mark.parametrize(
    ("shape", "message"), [(s, m) for _, s, m in SHAPES], ids=[n for n, _, _ in SHAPES]
)
def test_damaged_shapes(shape: Callable[[bytes], bytes], message: str, no_scrypt: None) -> None:
    with pytest.raises(CorruptKeyFile) as info:
        open_key_file(shape(KNOWN_FILE), PASSPHRASE)
    assert str(info.value) == message


def test_every_truncation_and_random_garbage_is_corrupt(no_scrypt: None) -> None:
    for end in range(len(KNOWN_FILE)):
        with pytest.raises(CorruptKeyFile):
            open_key_file(KNOWN_FILE[:end], PASSPHRASE)
    rng = random.Random(20260101)  # fixed seed: the same garbage every run
    for _ in range(200):
        garbage = rng.randbytes(rng.choice([len(KNOWN_FILE), rng.randrange(0, 600)]))
        with pytest.raises(CorruptKeyFile):
            open_key_file(garbage, PASSPHRASE)
        # Garbage that happens to frame correctly still fails its checksum.
        with pytest.raises(CorruptKeyFile):
            open_key_file(KNOWN_FILE[:CHECKSUM_OFFSET] + rng.randbytes(32), PASSPHRASE)


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_random_bytes_are_corrupt_key_files(data: bytes) -> None:
    with pytest.raises(CorruptKeyFile):
        read_public_key(data)


# --- hostile but well-formed files (re-checksummed) ------------------------------

HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("version-0", {"version": 0}, "unsupported key file version 0"),
    ("version-2", {"version": 2}, "unsupported key file version 2"),
    ("kdf-0", {"kdf": 0}, "unsupported key derivation function 0"),
    ("kdf-2", {"kdf": 2}, "unsupported key derivation function 2"),
    (
        "log-n-9",
        {"log_n": 9},
        "key file has out-of-range KDF parameters (scrypt log2(n) must be between 10 and 20)",
    ),
    (
        "log-n-21",
        {"log_n": 21},
        "key file has out-of-range KDF parameters (scrypt log2(n) must be between 10 and 20)",
    ),
    (
        "log-n-255",
        {"log_n": 255},
        "key file has out-of-range KDF parameters (scrypt log2(n) must be between 10 and 20)",
    ),
    (
        "r-0",
        {"r": 0},
        "key file has out-of-range KDF parameters (scrypt r must be 1..16 and p 1..4)",
    ),
    (
        "r-255",
        {"r": 255},
        "key file has out-of-range KDF parameters (scrypt r must be 1..16 and p 1..4)",
    ),
    (
        "p-0",
        {"p": 0},
        "key file has out-of-range KDF parameters (scrypt r must be 1..16 and p 1..4)",
    ),
    (
        "p-255",
        {"p": 255},
        "key file has out-of-range KDF parameters (scrypt r must be 1..16 and p 1..4)",
    ),
    (
        "2GiB",
        {"log_n": 20, "r": 16},
        "key file has out-of-range KDF parameters "
        "(scrypt n and r together would need more than 1 GiB of memory)",
    ),
]


@pytest.mark.parametrize(
    ("header", "message"), [(h, m) for _, h, m in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
def test_hostile_header_is_refused_before_scrypt(
    header: dict[str, Any], message: str, no_scrypt: None
) -> None:
    data = rebuild(header=header)
    for call in (lambda: open_key_file(data, PASSPHRASE), lambda: read_public_key(data)):
        with pytest.raises(CorruptKeyFile) as info:
            call()
        assert str(info.value) == message


@pytest.mark.parametrize(
    "header",
    [
        {"salt": bytes(16)},
        {"nonce": bytes(12)},
        {
            "public_key": bytes.fromhex(
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
            )
        },
        {"log_n": 11},
        {"r": 7},
        {"p": 2},
    ],
    ids=["salt", "nonce", "public-key", "log-n", "r", "p"],
)
def test_every_header_field_is_bound_to_the_seal(header: dict[str, Any]) -> None:
    """Edited and re-checksummed: the seal fails; no seed, no wrong identity comes out."""
    with pytest.raises(WrongPassphrase):
        open_key_file(rebuild(header=header), PASSPHRASE)


def test_resealed_sealed_part_never_yields_a_key() -> None:
    outer = KEY_FILE.decode(KNOWN_FILE)
    for i in (0, 31, 32, 47):
        sealed = bytearray(outer["sealed"])
        sealed[i] ^= 0x01
        with pytest.raises(WrongPassphrase):
            open_key_file(rebuild(sealed=bytes(sealed)), PASSPHRASE)


def test_public_key_that_does_not_match_the_seed_is_corrupt() -> None:
    """A header naming another key, sealed correctly over that header: refused."""
    outer = KEY_FILE.decode(KNOWN_FILE)
    fields = HEADER.decode(outer["header"]) | {"public_key": Identity(OTHER_SEED).public.public_key}
    raw_header = HEADER.encode(fields)
    key = Scrypt(salt=SALT, length=32, n=1 << 10, r=8, p=1).derive(PASSPHRASE.encode())
    sealed = AESGCM(key).encrypt(NONCE, SEED, raw_header)
    data = KEY_FILE.encode(
        {
            "header": raw_header,
            "sealed": sealed,
            "checksum": hashlib.sha256(raw_header + sealed).digest(),
        }
    )
    with pytest.raises(
        CorruptKeyFile, match=r"^key file's public key does not match its private key$"
    ):
        open_key_file(data, PASSPHRASE)
    assert read_public_key(data) == Identity(OTHER_SEED).public.public_key


# --- secrets never leak into errors ------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


SECRETS = [
    PASSPHRASE,
    PASSPHRASE.encode().hex(),
    repr(PASSPHRASE.encode())[2:-1],
    SEED.hex(),
    repr(SEED)[2:-1],
    SEED.hex()[:16],
]


def assert_no_secret(exc: BaseException) -> None:
    for e in _chain(exc):
        texts = [str(e), repr(e), *(repr(a) for a in e.args)]
        for text in texts:
            for secret in SECRETS:
                assert secret not in text, f"{type(e).__name__} leaks a secret: {text!r}"


def test_errors_never_contain_the_passphrase_or_seed() -> None:
    raised: list[BaseException] = []
    attempts: list[Callable[[], object]] = [
        lambda: open_key_file(KNOWN_FILE, PASSPHRASE + "x"),
        lambda: open_key_file(KNOWN_FILE[:-1], PASSPHRASE),
        lambda: open_key_file(rebuild(header={"log_n": 30}), PASSPHRASE),
        lambda: open_key_file(rebuild(header={"version": 9}), PASSPHRASE),
        lambda: open_key_file(rebuild(header={"salt": bytes(16)}), PASSPHRASE),
        lambda: open_key_file(b"", PASSPHRASE),
    ]
    for attempt in attempts:
        with pytest.raises(P2PTransferError) as info:
            attempt()
        raised.append(info.value)
    assert [type(e) for e in raised] == [
        WrongPassphrase,
        CorruptKeyFile,
        CorruptKeyFile,
        CorruptKeyFile,
        WrongPassphrase,
        CorruptKeyFile,
    ]
    for exc in raised:
        assert_no_secret(exc)


@pytest.mark.parametrize(
    "passphrase",
    [PASSPHRASE + "\udcff", "\ud800" + PASSPHRASE],
    ids=["surrogate-escaped-byte", "lone-high-surrogate"],
)
def test_unencodable_passphrase_is_a_clean_error_without_the_passphrase(passphrase: str) -> None:
    """Non-UTF-8 bytes in $P2PTRANSFER_PASSPHRASE arrive as lone surrogates.

    str.encode() would raise UnicodeEncodeError, whose repr holds the whole
    passphrase; the key file layer must raise its own error instead, with no
    chained exception.
    """
    for call in (
        lambda: open_key_file(KNOWN_FILE, passphrase),
        lambda: seal_key_file(Identity(SEED), passphrase, salt=SALT, nonce=NONCE, params=FAST),
    ):
        with pytest.raises(KeyFileError) as info:
            call()
        assert type(info.value) is KeyFileError
        assert str(info.value) == (
            "the passphrase is not valid Unicode text (it has a lone surrogate)"
        )
        assert info.value.__cause__ is None
        assert info.value.__context__ is None
        assert_no_secret(info.value)
