"""Transfers and receipts: validation, exact bytes, signatures, receipts' binding, idempotency."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import (
    AddressError,
    AmountError,
    CurrencyError,
    DecodeError,
    InputError,
    MemoError,
    P2PTransferError,
    ProtocolError,
    SignatureError,
)
from p2ptransfer.protocol.amounts import MAX_AMOUNT_MINOR, MAX_MEMO_BYTES, check_memo
from p2ptransfer.protocol.currencies import CURRENCY_EXPONENTS
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import (
    RECEIPT_SCHEMA,
    Receipt,
    ReceiptStatus,
    RejectReason,
    SignedReceipt,
    accept,
    reject,
    sign_receipt,
)
from p2ptransfer.protocol.text import display_text_problem
from p2ptransfer.protocol.transfer import (
    MAX_TIMESTAMP_MS,
    SIGNED_TRANSFER_SCHEMA,
    TRANSFER_SCHEMA,
    TRANSFER_V2_SCHEMA,
    Comparison,
    SignedTransfer,
    Transfer,
    TransferId,
    compare,
    sign_transfer,
)

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))
MALLORY = Identity(bytes(range(64, 96)))
TID = TransferId(bytes(range(16)))
CREATED = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
DECIDED = CREATED + 1_000


def make(**changes: Any) -> Transfer:
    values: dict[str, Any] = {
        "id": TID,
        "sender": ALICE.address,
        "recipient": BOB.address,
        "amount": 1250,
        "currency": "EUR",
        "memo": "Rent for März 🏠",
        "created_at": CREATED,
    }
    values.update(changes)
    return Transfer(**values)


# --- known-answer bytes -------------------------------------------------------------
# Written out field by field (type id, then tag u8 | length u32be | value) as in
# docs/transfer.md; any change to the wire format or the signing rules shows up here.

ALICE_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
BOB_KEY = "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7"
TRANSFER_HEX = (
    "20"  # type id: transfer
    "01" "00000010" "000102030405060708090a0b0c0d0e0f"  # id
    "02" "00000020" + ALICE_KEY +  # sender public key
    "03" "00000020" + BOB_KEY +  # recipient public key
    "04" "00000008" "00000000000004e2"  # amount: 1250 minor units
    "05" "00000003" "455552"  # currency: "EUR"
    "06" "00000013" "52656e7420666f72204dc3a4727a20f09f8fa0"  # memo: 19 bytes of UTF-8
    "07" "00000008" "0000019b76daa800"  # created_at (unix ms)
)  # fmt: skip
TRANSFER_DIGEST_HEX = "5f38f5da235eb40cb04efcf89e0d89799f6a39e8d7050717b979e1c9e30c60f2"
TRANSFER_SIG_HEX = (
    "3268aa0789ae6531f2396f56e989d44e7e07688fb85cb9ea954372e5d249e909"
    "d43d22eeaa2557e8b78627fb5ad17298195d32e8839e4eec2bf5dc5e914f0008"
)
SIGNED_TRANSFER_HEX = (
    "21" "01" "0000009a" + TRANSFER_HEX +  # type id: signed transfer; the body, 154 bytes
    "02" "00000040" + TRANSFER_SIG_HEX  # Ed25519 signature by the sender
)  # fmt: skip
RECEIPT_HEX = (
    "22"  # type id: receipt
    "01" "00000010" "000102030405060708090a0b0c0d0e0f"  # transfer id
    "02" "00000020" + TRANSFER_DIGEST_HEX +  # transfer digest
    "03" "00000020" + BOB_KEY +  # receiver public key
    "04" "00000001" "01"  # status: ACCEPTED
    "05" "00000001" "00"  # reason: NONE
    "06" "00000008" "0000019b76daabe8"  # decided_at (unix ms)
)  # fmt: skip
RECEIPT_SIG_HEX = (
    "61e6633f4532804769fd2d4548fefe793c573548674cc83bb917e642ec416c3d"
    "acdbdcb1f4202fdb47b9719090b4e0850cb3a06ee97aa0ed4ede6274859e9d05"
)
SIGNED_RECEIPT_HEX = (
    "23" "01" "00000079" + RECEIPT_HEX +  # type id: signed receipt; the body, 121 bytes
    "02" "00000040" + RECEIPT_SIG_HEX  # Ed25519 signature by the receiver
)  # fmt: skip


def test_transfer_known_answer() -> None:
    transfer = make()
    assert transfer.encode().hex() == TRANSFER_HEX
    assert Transfer.decode(bytes.fromhex(TRANSFER_HEX)) == transfer
    # The digest and the signature recomputed here without the package's own helpers,
    # so the domain-separation strings of docs/transfer.md are checked too.
    body = bytes.fromhex(TRANSFER_HEX)
    digest = hashlib.sha256(b"p2ptransfer-transfer-digest-v1\x00" + body).hexdigest()
    assert transfer.digest.hex() == digest == TRANSFER_DIGEST_HEX
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(ALICE_KEY)).verify(
        bytes.fromhex(TRANSFER_SIG_HEX), b"p2ptransfer-transfer-v1\x00" + body
    )


def test_signed_transfer_known_answer() -> None:
    signed = sign_transfer(ALICE, make())
    assert signed.encode().hex() == SIGNED_TRANSFER_HEX
    decoded = SignedTransfer.decode(bytes.fromhex(SIGNED_TRANSFER_HEX))
    assert decoded == signed
    decoded.verify()


def test_signed_receipt_known_answer() -> None:
    signed_receipt = accept(BOB, sign_transfer(ALICE, make()), DECIDED)
    assert signed_receipt.receipt.encode().hex() == RECEIPT_HEX
    assert signed_receipt.encode().hex() == SIGNED_RECEIPT_HEX
    decoded = SignedReceipt.decode(bytes.fromhex(SIGNED_RECEIPT_HEX))
    assert decoded == signed_receipt
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(BOB_KEY)).verify(
        bytes.fromhex(RECEIPT_SIG_HEX),
        b"p2ptransfer-receipt-v1\x00" + bytes.fromhex(RECEIPT_HEX),
    )
    decoded.verify(make())


def test_limits_and_type_ids() -> None:
    assert MAX_AMOUNT_MINOR == 10**15
    assert MAX_MEMO_BYTES == 280
    assert TRANSFER_SCHEMA.type_id == 0x20
    assert RECEIPT_SCHEMA.type_id == 0x22
    biggest = make(amount=MAX_AMOUNT_MINOR, memo="€" * 93 + "a", created_at=MAX_TIMESTAMP_MS)
    assert len(biggest.memo.encode()) == MAX_MEMO_BYTES
    assert len(sign_transfer(ALICE, biggest).encode()) <= 640


# --- memos ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "memo",
    [
        "",
        "a" * MAX_MEMO_BYTES,
        "é" * (MAX_MEMO_BYTES // 2),
        "🏠" * (MAX_MEMO_BYTES // 4),
        "👨👩👧 family",
        "q\u0301\u0302\u0303\u0304 four marks",
        "\u0625\u064a\u062c\u0627\u0631 \u0634\u0647\u0631",
        "Miete f\u00fcr M\u00e4rz \u2013 12,50 \u20ac",
    ],
    ids=["empty", "max-ascii", "max-2-byte", "max-4-byte", "emoji", "four-combining-marks",
         "arabic", "punctuation"],
)  # fmt: skip
def test_memo_accepted(memo: str) -> None:
    assert check_memo(memo) == memo
    assert make(memo=memo).memo == memo


@pytest.mark.parametrize(
    ("memo", "message"),
    [
        ("a" * (MAX_MEMO_BYTES + 1), "memo is 281 characters; at most 280 bytes of UTF-8"),
        ("é" * 140 + "a", "memo is 281 bytes of UTF-8; at most 280 are allowed"),
        ("🏠" * 71, "memo is 284 bytes of UTF-8; at most 280 are allowed"),
        ("a" * 10**6, "memo is 1000000 characters; at most 280 bytes of UTF-8"),
        ("\u202e" * 10**6, "memo is 1000000 characters; at most 280 bytes of UTF-8"),
    ],
    ids=["ascii-one-over", "two-byte-one-over", "four-byte-over", "one-megabyte",
         "one-megabyte-of-overrides"],
)  # fmt: skip
def test_memo_too_long(memo: str, message: str) -> None:
    """Counted in bytes; a huge memo is refused on its length before any scanning."""
    with pytest.raises(MemoError) as info:
        check_memo(memo)
    assert str(info.value).startswith(message)


_FORBIDDEN = [
    ("nul", "\x00", "U+0000 (control character)"),
    ("newline", "\n", "U+000A (control character)"),
    ("carriage-return", "\r", "U+000D (control character)"),
    ("tab", "\t", "U+0009 (control character)"),
    ("escape", "\x1b[2J", "U+001B (control character)"),
    ("delete", "\x7f", "U+007F (control character)"),
    ("next-line", "\x85", "U+0085 (control character)"),
    ("rlo", "\u202e", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("lro", "\u202d", "U+202D (LEFT-TO-RIGHT OVERRIDE)"),
    ("lre", "\u202a", "U+202A (LEFT-TO-RIGHT EMBEDDING)"),
    ("pdf", "\u202c", "U+202C (POP DIRECTIONAL FORMATTING)"),
    ("lri", "\u2066", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ("rli", "\u2067", "U+2067 (RIGHT-TO-LEFT ISOLATE)"),
    ("fsi", "\u2068", "U+2068 (FIRST STRONG ISOLATE)"),
    ("pdi", "\u2069", "U+2069 (POP DIRECTIONAL ISOLATE)"),
    ("rlm", "\u200f", "U+200F (RIGHT-TO-LEFT MARK)"),
    ("alm", "\u061c", "U+061C (ARABIC LETTER MARK)"),
    ("line-separator", "\u2028", "U+2028 (LINE SEPARATOR)"),
    ("paragraph-separator", "\u2029", "U+2029 (PARAGRAPH SEPARATOR)"),
    ("zero-width-space", "\u200b", "U+200B (ZERO WIDTH SPACE)"),
    ("byte-order-mark", "\ufeff", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("tag-letter", "\U000e0041", "U+E0041 (TAG LATIN CAPITAL LETTER A)"),
    ("lone-surrogate", "\ud800", "U+D800 (lone surrogate)"),
    ("zero-width-joiner", "\u200d", "U+200D (ZERO WIDTH JOINER)"),
    ("zero-width-non-joiner", "\u200c", "U+200C (ZERO WIDTH NON-JOINER)"),
    ("soft-hyphen", "\u00ad", "U+00AD (SOFT HYPHEN)"),
    ("private-use", "\ue000", "U+E000 (private-use character)"),
    ("unassigned", "\U000e0080", "U+E0080 (unassigned character)"),
    ("hangul-filler", "\u3164", "U+3164 (HANGUL FILLER)"),
    ("hangul-choseong-filler", "\u115f", "U+115F (HANGUL CHOSEONG FILLER)"),
    ("hangul-jungseong-filler", "\u1160", "U+1160 (HANGUL JUNGSEONG FILLER)"),
    ("halfwidth-hangul-filler", "\uffa0", "U+FFA0 (HALFWIDTH HANGUL FILLER)"),
    ("braille-blank", "\u2800", "U+2800 (BRAILLE PATTERN BLANK)"),
    ("grapheme-joiner", "\u034f", "U+034F (COMBINING GRAPHEME JOINER)"),
    ("khmer-inherent-aq", "\u17b4", "U+17B4 (KHMER VOWEL INHERENT AQ)"),
    ("khmer-inherent-aa", "\u17b5", "U+17B5 (KHMER VOWEL INHERENT AA)"),
    ("mongolian-fvs1", "\u180b", "U+180B (MONGOLIAN FREE VARIATION SELECTOR ONE)"),
    ("mongolian-vowel-separator", "\u180e", "U+180E (MONGOLIAN VOWEL SEPARATOR)"),
    ("variation-selector-16", "\ufe0f", "U+FE0F (VARIATION SELECTOR-16)"),
    ("variation-selector-17", "\U000e0100", "U+E0100 (VARIATION SELECTOR-17)"),
]


@pytest.mark.parametrize(
    ("bad", "shown"), [(b, s) for _, b, s in _FORBIDDEN], ids=[n for n, _, _ in _FORBIDDEN]
)
def test_memo_refuses_control_and_spoofing_characters(bad: str, shown: str) -> None:
    with pytest.raises(MemoError) as info:
        check_memo("pay " + bad + " back")
    assert str(info.value).startswith(f"memo contains a forbidden character {shown} at position 5")
    with pytest.raises(MemoError):
        make(memo="pay " + bad + " back")


def test_memo_refuses_more_than_four_combining_marks_in_a_row() -> None:
    """Zalgo: marks stacked on one letter smear over the amount shown beside the memo."""
    zalgo = "pay a" + "\u0301\u0302\u0303\u0304\u0305" + " back"
    with pytest.raises(MemoError) as info:
        check_memo(zalgo)
    assert str(info.value) == "memo has more than 4 combining marks in a row at position 10"
    with pytest.raises(MemoError):
        make(memo=zalgo)


def test_memo_normalised_to_nfc() -> None:
    decomposed = "Cafe\u0301"
    assert check_memo(decomposed) == "Caf\u00e9"
    assert make(memo=decomposed).memo == "Caf\u00e9"
    assert make(memo=decomposed) == make(memo="Caf\u00e9")


def test_constructor_normalises_harmless_variants() -> None:
    """Case of addresses and currency, memo NFC: the built value is the canonical one."""
    loose = make(
        sender=ALICE.address.upper(),
        recipient=f" {BOB.address}\n",
        currency="eur",
        memo="Rent for Ma\u0308rz \U0001f3e0",
    )
    assert loose == make()
    assert loose.sender == ALICE.address
    assert loose.recipient == BOB.address
    assert loose.currency == "EUR"
    assert loose.encode().hex() == TRANSFER_HEX
    receipt = _receipt(receiver=BOB.address.upper())
    assert receipt.receiver == BOB.address


def test_memo_must_be_text() -> None:
    with pytest.raises(MemoError, match=r"^a memo must be text$"):
        check_memo(b"rent")  # type: ignore[arg-type]


# --- transfer validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"id": b"\x00" * 15}, InputError, "a transfer id must be exactly 16 bytes"),
        ({"id": "00" * 16}, InputError, "a transfer id must be exactly 16 bytes"),
        ({"sender": "p2pt1nonsense"}, AddressError, "an address has 64 characters"),
        ({"sender": ALICE.address[:-1] + "q"}, AddressError, "address checksum does not match"),
        ({"recipient": ALICE.address}, AddressError, "sender and recipient are the same address"),
        ({"recipient": ALICE.address.upper()}, AddressError, "sender and recipient are the same"),
        ({"amount": 0}, AmountError, "amount must be between 1 and 1000000000000000 minor"),
        ({"amount": -5}, AmountError, "amount must be between 1 and 1000000000000000 minor"),
        ({"amount": MAX_AMOUNT_MINOR + 1}, AmountError, "amount must be between 1 and"),
        ({"amount": True}, AmountError, "an amount in minor units must be an integer"),
        ({"amount": 12.5}, AmountError, "an amount in minor units must be an integer"),
        ({"currency": None}, CurrencyError, "a currency code must be text"),
        ({"currency": "XYZ"}, CurrencyError, "unknown currency code 'XYZ'"),
        ({"currency": "XAU"}, CurrencyError, "XAU has no minor unit"),
        ({"memo": "a\nb"}, MemoError, "memo contains a forbidden character U+000A"),
        ({"created_at": -1}, InputError, "created_at must be unix time in milliseconds"),
        ({"created_at": 2**63}, InputError, "created_at must be unix time in milliseconds"),
        ({"created_at": 1.5}, InputError, "created_at must be unix time in milliseconds"),
    ],
    ids=["short-id", "text-id", "bad-address", "mistyped-address", "to-self",
         "to-self-upper-case", "zero", "negative", "over-max", "bool-amount", "float-amount",
         "no-currency", "unknown-currency", "gold", "memo-newline",
         "negative-time", "time-over-int64", "float-time"],
)  # fmt: skip
def test_transfer_validates_every_field(
    changes: dict[str, Any], error: type[InputError], message: str
) -> None:
    with pytest.raises(error) as info:
        make(**changes)
    assert str(info.value).startswith(message)


def _raw_transfer(**changes: Any) -> bytes:
    """Schema-valid bytes that bypass Transfer's validation, as a hostile peer would send."""
    values: dict[str, Any] = {
        "id": bytes(TID),
        "sender": ALICE.public.public_key,
        "recipient": BOB.public.public_key,
        "amount": 1250,
        "currency": "EUR",
        "memo": "rent",
        "created_at": CREATED,
    }
    values.update(changes)
    return TRANSFER_SCHEMA.encode(values)


@pytest.mark.parametrize(
    ("changes", "cause", "message"),
    [
        ({"currency": "XYZ"}, CurrencyError, "transfer: unknown currency code 'XYZ'"),
        ({"currency": "€"}, CurrencyError, "transfer: a currency code is three letters"),
        ({"memo": "\u202eexcellent"}, MemoError, "transfer: memo contains a forbidden character"),
        ({"memo": "a\u200db"}, MemoError, "transfer: memo contains a forbidden character U+200D"),
        ({"memo": "\u3164"}, MemoError, "transfer: memo contains a forbidden character U+3164"),
        ({"memo": "a" + "\u0300" * 5}, MemoError, "transfer: memo has more than 4 combining"),
        ({"amount": 0}, AmountError, "transfer: amount must be between 1 and"),
        ({"amount": 2**64 - 1}, AmountError, "transfer: amount must be between 1 and"),
        ({"recipient": ALICE.public.public_key}, AddressError, "transfer: sender and recipient"),
        ({"created_at": 2**63}, InputError, "transfer: created_at must be unix time"),
    ],
    ids=["unknown-currency", "symbol-currency", "memo-override", "memo-joiner", "memo-filler",
         "memo-zalgo", "zero-amount", "huge-amount", "to-self", "time-over-int64"],
)  # fmt: skip
def test_decode_validates_like_the_constructor(
    changes: dict[str, Any], cause: type[InputError], message: str
) -> None:
    with pytest.raises(DecodeError) as info:
        Transfer.decode(_raw_transfer(**changes))
    assert str(info.value).startswith(message)
    assert isinstance(info.value.__cause__, cause)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"currency": "eur"}, "transfer: currency code must be upper case on the wire"),
        ({"memo": "Cafe\u0301"}, "transfer: memo must be in Unicode NFC on the wire"),
    ],
    ids=["lower-case-currency", "memo-not-nfc"],
)
def test_decode_refuses_what_the_constructor_would_normalise(
    changes: dict[str, Any], message: str
) -> None:
    """A second spelling of the same transfer would have a second digest: refused."""
    with pytest.raises(DecodeError) as info:
        Transfer.decode(_raw_transfer(**changes))
    assert str(info.value) == message


def test_decode_refuses_non_canonical_bytes() -> None:
    good = make().encode()
    with pytest.raises(DecodeError, match="1 trailing bytes"):
        Transfer.decode(good + b"\x00")
    with pytest.raises(DecodeError, match="wrong message type 0x22"):
        Transfer.decode(b"\x22" + good[1:])
    with pytest.raises(DecodeError, match="exceeds the limit of 512"):
        Transfer.decode(good + bytes(10**6))


def test_transfer_is_frozen_plain_data() -> None:
    transfer = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        transfer.amount = 1  # type: ignore[misc]
    assert transfer.sender_identity == ALICE.public
    assert transfer.recipient_identity == BOB.public
    assert dataclasses.replace(transfer, amount=1).amount == 1
    # Plain data all the way down: exports (JSON, CSV) can use asdict().
    assert dataclasses.asdict(transfer) == {
        "id": bytes(TID),
        "sender": ALICE.address,
        "recipient": BOB.address,
        "amount": 1250,
        "currency": "EUR",
        "memo": "Rent for März 🏠",
        "created_at": CREATED,
        "request_id": None,
    }


# --- transfer signatures -------------------------------------------------------------


def test_signature_verifies_and_survives_the_wire() -> None:
    signed = sign_transfer(ALICE, make())
    signed.verify()
    assert signed.id == TID
    assert signed.digest == make().digest
    again = SignedTransfer.decode(signed.encode())
    again.verify()
    assert again.encode() == signed.encode()


def test_only_the_sender_can_sign() -> None:
    with pytest.raises(ValueError, match="only the transfer's sender can sign it"):
        sign_transfer(BOB, make())


def test_signature_by_another_key_refused() -> None:
    transfer = make()
    forged = SignedTransfer(transfer, MALLORY.sign(transfer.signing_message()))
    with pytest.raises(SignatureError) as info:
        SignedTransfer.decode(forged.encode()).verify()
    assert str(info.value) == (f"transfer {TID.hex()} is not signed by its sender {ALICE.address}")


@pytest.mark.parametrize(
    "message",
    [
        lambda t: t.encode(),
        lambda t: b"p2ptransfer-receipt-v1\x00" + t.encode(),
        lambda t: t.digest,
    ],
    ids=["no-context", "receipt-context", "digest"],
)
def test_signature_needs_the_transfer_context(message: Any) -> None:
    """Domain separation: the sender's signature over anything else is not a transfer signature."""
    transfer = make()
    with pytest.raises(SignatureError):
        SignedTransfer(transfer, ALICE.sign(message(transfer))).verify()


@pytest.mark.parametrize(
    "field_name", ["amount", "created_at", "signature"], ids=lambda v: f"flip-{v}"
)
def test_tampered_signed_transfer_refused(field_name: str) -> None:
    raw = bytearray(sign_transfer(ALICE, make()).encode())
    offsets = {  # last byte of each field inside the signed transfer
        "amount": 6 + 1 + 5 + 16 + 5 + 32 + 5 + 32 + 5 + 8 - 1,
        "created_at": 6 + 154 - 1,
        "signature": len(raw) - 1,
    }
    raw[offsets[field_name]] ^= 0x01
    tampered = SignedTransfer.decode(bytes(raw))
    with pytest.raises(SignatureError):
        tampered.verify()


def test_signed_types_check_their_fields() -> None:
    with pytest.raises(InputError, match="a signature must be exactly 64 bytes"):
        SignedTransfer(make(), b"\x00" * 63)
    with pytest.raises(InputError, match="a SignedTransfer needs a Transfer"):
        SignedTransfer(make().encode(), bytes(64))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="a SignedReceipt needs a Receipt"):
        SignedReceipt(_receipt().encode(), bytes(64))  # type: ignore[arg-type]
    with pytest.raises(AddressError, match="sender address must be text"):
        make(sender=ALICE.public.public_key)


# --- receipts ------------------------------------------------------------------------


def test_accept_and_reject_receipts_verify() -> None:
    signed = sign_transfer(ALICE, make())
    accepted = accept(BOB, signed, DECIDED)
    assert accepted.receipt.accepted
    assert accepted.receipt.reason is RejectReason.NONE
    accepted.verify(signed)
    accepted.verify(signed.transfer)
    rejected = reject(BOB, signed, RejectReason.OVER_LIMIT, DECIDED)
    assert rejected.receipt.status is ReceiptStatus.REJECTED
    assert rejected.receipt.reason is RejectReason.OVER_LIMIT
    assert not rejected.receipt.accepted
    SignedReceipt.decode(rejected.encode()).verify(signed)


def test_receipt_for_a_different_transfer_id_refused() -> None:
    other = sign_transfer(ALICE, make(id=TransferId(b"\xff" * 16)))
    receipt = accept(BOB, other, DECIDED)
    with pytest.raises(ProtocolError) as info:
        receipt.verify(make())
    assert str(info.value) == f"receipt answers transfer {'ff' * 16}, not {TID.hex()}"


def test_receipt_for_different_content_under_the_same_id_refused() -> None:
    receipt = accept(BOB, sign_transfer(ALICE, make(amount=1)), DECIDED)
    with pytest.raises(ProtocolError) as info:
        receipt.verify(make(amount=1250))
    assert str(info.value) == (
        f"receipt for transfer {TID.hex()} answers different content (digest mismatch)"
    )
    assert not isinstance(info.value, SignatureError)


def test_receipt_signed_by_someone_other_than_the_recipient_refused() -> None:
    signed = sign_transfer(ALICE, make())
    by_mallory = reject(MALLORY, signed, RejectReason.WRONG_RECIPIENT, DECIDED)
    by_mallory.verify_signature()  # honestly signed by Mallory ...
    with pytest.raises(SignatureError) as info:
        by_mallory.verify(signed)  # ... but Mallory's word decides nothing about Bob's transfer
    assert str(info.value) == (
        f"receipt is signed by {MALLORY.address}, not by the transfer's recipient {BOB.address}"
    )


def test_receipt_naming_the_recipient_but_signed_by_another_key_refused() -> None:
    genuine = accept(BOB, sign_transfer(ALICE, make()), DECIDED)
    forged = SignedReceipt(genuine.receipt, MALLORY.sign(genuine.receipt.signing_message()))
    with pytest.raises(SignatureError) as info:
        forged.verify(make())
    assert str(info.value) == (
        f"receipt for transfer {TID.hex()} is not signed by its receiver {BOB.address}"
    )


def test_tampered_receipt_refused() -> None:
    raw = bytearray(
        reject(BOB, sign_transfer(ALICE, make()), RejectReason.POLICY, DECIDED).encode()
    )
    raw[6 + 121 - 1] ^= 0x01  # last byte of decided_at
    with pytest.raises(SignatureError):
        SignedReceipt.decode(bytes(raw)).verify(make())


def test_receipt_signature_is_not_a_transfer_signature() -> None:
    signed = sign_transfer(ALICE, make())
    receipt = accept(BOB, signed, DECIDED)
    with pytest.raises(SignatureError):
        SignedReceipt(receipt.receipt, BOB.sign(signed.transfer.signing_message())).verify(signed)


def test_accept_refuses_an_unverified_transfer_and_a_stranger() -> None:
    transfer = make()
    forged = SignedTransfer(transfer, MALLORY.sign(transfer.signing_message()))
    with pytest.raises(SignatureError):
        accept(BOB, forged, DECIDED)
    with pytest.raises(ValueError, match="only the transfer's recipient can accept it"):
        accept(MALLORY, sign_transfer(ALICE, transfer), DECIDED)
    # Rejecting does not need a valid signature: INVALID is how a bad one is answered.
    reject(BOB, forged, RejectReason.INVALID, DECIDED).verify(transfer)


def test_reject_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="a rejection needs a reason other than NONE"):
        reject(BOB, sign_transfer(ALICE, make()), RejectReason.NONE, DECIDED)


def test_anyone_may_reject_but_only_the_recipient_decides() -> None:
    """A stranger's rejection is well-formed (the runtime never trips on it) yet decides nothing."""
    signed = sign_transfer(ALICE, make())
    for reason in (RejectReason.INVALID, RejectReason.POLICY):
        stray = reject(MALLORY, signed, reason, DECIDED)
        stray.verify_signature()
        with pytest.raises(SignatureError, match="not by the transfer's recipient"):
            stray.verify(signed)


def test_only_the_receiver_signs_a_receipt() -> None:
    receipt = accept(BOB, sign_transfer(ALICE, make()), DECIDED).receipt
    with pytest.raises(ValueError, match="only the receipt's receiver can sign it"):
        sign_receipt(MALLORY, receipt)


def _receipt(**changes: Any) -> Receipt:
    values: dict[str, Any] = {
        "transfer_id": TID,
        "transfer_digest": make().digest,
        "receiver": BOB.address,
        "status": ReceiptStatus.ACCEPTED,
        "reason": RejectReason.NONE,
        "decided_at": DECIDED,
    }
    values.update(changes)
    return Receipt(**values)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reason": RejectReason.POLICY}, "an accepted receipt has reason NONE and a rejected one"),
        ({"status": ReceiptStatus.REJECTED}, "an accepted receipt has reason NONE"),
        ({"status": 3}, "unknown receipt status or reject reason: 3 is not a valid ReceiptStatus"),
        ({"reason": 99}, "unknown receipt status or reject reason: 99 is not a valid"),
        ({"transfer_digest": b"\x00" * 31}, "a transfer digest must be exactly 32 bytes"),
        ({"transfer_id": b""}, "a receipt's transfer id must be exactly 16 bytes"),
        ({"decided_at": -1}, "decided_at must be unix time in milliseconds"),
    ],
    ids=["accepted-with-reason", "rejected-without-reason", "bad-status", "bad-reason",
         "short-digest", "empty-id", "negative-time"],
)  # fmt: skip
def test_receipt_validates(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as info:
        _receipt(**changes)
    assert str(info.value).startswith(message)


def test_receipt_takes_plain_ints_and_decode_refuses_unknown_values() -> None:
    receipt = _receipt(status=2, reason=5)
    assert receipt.status is ReceiptStatus.REJECTED
    assert receipt.reason is RejectReason.CONFLICT
    raw = RECEIPT_SCHEMA.encode(
        {
            "transfer_id": bytes(TID),
            "transfer_digest": bytes(32),
            "receiver": BOB.public.public_key,
            "status": 9,
            "reason": 0,
            "decided_at": DECIDED,
        }
    )
    with pytest.raises(DecodeError, match=r"^receipt: unknown receipt status or reject reason"):
        Receipt.decode(raw)


@pytest.mark.parametrize(
    ("reason", "sentence"),
    [
        (RejectReason.NONE, "The recipient accepted the transfer."),
        (
            RejectReason.UNKNOWN_SENDER,
            "The recipient does not know you: you are not in their contacts.",
        ),
        (RejectReason.CURRENCY_NOT_ACCEPTED, "The recipient does not accept this currency."),
        (RejectReason.OVER_LIMIT, "The amount is above the limit the recipient accepts."),
        (
            RejectReason.WRONG_RECIPIENT,
            "The transfer reached someone who is not its recipient.",
        ),
        (
            RejectReason.CONFLICT,
            "The recipient already has a different transfer with the same id; "
            "this one was refused and nothing was applied.",
        ),
        (RejectReason.INVALID, "The transfer was invalid or its signature did not verify."),
        (RejectReason.POLICY, "The recipient's local policy refused the transfer."),
    ],
    ids=lambda v: v.name if isinstance(v, RejectReason) else "",
)
def test_reject_reason_describe(reason: RejectReason, sentence: str) -> None:
    assert reason.describe() == sentence


def test_wire_numbers_of_statuses_and_reasons() -> None:
    assert [(s.name, s.value) for s in ReceiptStatus] == [("ACCEPTED", 1), ("REJECTED", 2)]
    assert [(r.name, r.value) for r in RejectReason][8:] == [
        ("REQUEST_MISMATCH", 8),
        ("REQUEST_PAID", 9),
        ("REQUEST_EXPIRED", 10),
        ("REQUEST_CANCELLED", 11),
    ]
    assert [r.value for r in RejectReason] == list(range(12))


# --- idempotency ---------------------------------------------------------------------


def test_compare_same() -> None:
    stored = make()
    retry = SignedTransfer.decode(sign_transfer(ALICE, make()).encode()).transfer
    assert compare(stored, retry) is Comparison.SAME
    assert stored.same_content(retry)


def test_compare_different_id() -> None:
    assert compare(make(), make(id=TransferId(b"\x01" * 16))) is Comparison.DIFFERENT_ID
    other = make(id=TransferId(b"\x01" * 16), amount=7)
    assert compare(make(), other) is Comparison.DIFFERENT_ID


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 1251},
        {"recipient": MALLORY.address},
        {"sender": MALLORY.address},
        {"memo": "Rent for April"},
        {"currency": "USD"},
        {"created_at": CREATED + 1},
    ],
    ids=["amount", "recipient", "sender", "memo", "currency", "created-at"],
)
def test_compare_conflict(changes: dict[str, Any]) -> None:
    stored = make()
    incoming = make(**changes)
    assert compare(stored, incoming) is Comparison.CONFLICT
    assert not stored.same_content(incoming)
    assert stored.digest != incoming.digest


# --- hypothesis: decoders and round trips ---------------------------------------------

_DECODERS: dict[str, tuple[Callable[[bytes], Any], Callable[[], bytes]]] = {
    "transfer": (Transfer.decode, lambda: make().encode()),
    "signed-transfer": (SignedTransfer.decode, lambda: sign_transfer(ALICE, make()).encode()),
    "receipt": (Receipt.decode, lambda: _receipt().encode()),
    "signed-receipt": (
        SignedReceipt.decode,
        lambda: accept(BOB, sign_transfer(ALICE, make()), DECIDED).encode(),
    ),
}


@pytest.mark.parametrize("kind", list(_DECODERS), ids=list(_DECODERS))
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=700))
def test_random_bytes_only_raise_our_errors(kind: str, data: bytes) -> None:
    decode, _ = _DECODERS[kind]
    with contextlib.suppress(P2PTransferError):
        decode(data)


@pytest.mark.parametrize("kind", list(_DECODERS), ids=list(_DECODERS))
@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
    mode=st.sampled_from(["replace", "insert", "delete", "truncate"]),
)
def test_mutated_messages_fail_cleanly_or_stay_canonical(
    kind: str, position: int, value: int, mode: str
) -> None:
    """Mutations of a valid message: a P2PTransferError, or a value whose encoding is the input."""
    decode, sample = _DECODERS[kind]
    raw = bytearray(sample())
    i = position % len(raw)
    if mode == "replace":
        raw[i] = value
    elif mode == "insert":
        raw.insert(i, value)
    elif mode == "delete":
        del raw[i]
    else:
        del raw[i:]
    try:
        decoded = decode(bytes(raw))
    except P2PTransferError:
        return
    assert decoded.encode() == bytes(raw)


_PEOPLE = [ALICE, BOB, MALLORY, Identity(bytes(range(96, 128)))]
_MEMO_CHARS = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"))


_MEMO_RULE: dict[str, Any] = {"what": "memo", "max_chars": MAX_MEMO_BYTES}


@st.composite
def transfers(draw: st.DrawFn) -> Transfer:
    sender, recipient = draw(st.permutations(_PEOPLE))[:2]
    text = st.text(_MEMO_CHARS, max_size=60)
    memo = check_memo(draw(text.filter(lambda t: display_text_problem(t, **_MEMO_RULE) is None)))
    return Transfer(
        id=TransferId(draw(st.binary(min_size=16, max_size=16))),
        sender=sender.address,
        recipient=recipient.address,
        amount=draw(st.integers(1, MAX_AMOUNT_MINOR)),
        currency=draw(st.sampled_from(sorted(CURRENCY_EXPONENTS))),
        memo=memo,
        created_at=draw(st.integers(0, MAX_TIMESTAMP_MS)),
    )


def _identity_of(address: str) -> Identity:
    return next(p for p in _PEOPLE if p.address == address)


@settings(max_examples=200, deadline=None)
@given(transfer=transfers(), decided_at=st.integers(0, MAX_TIMESTAMP_MS), accepted=st.booleans())
def test_round_trip_generated_values(transfer: Transfer, decided_at: int, accepted: bool) -> None:
    body = transfer.encode()
    assert Transfer.decode(body) == transfer
    assert Transfer.decode(body).encode() == body
    signed = sign_transfer(_identity_of(transfer.sender), transfer)
    again = SignedTransfer.decode(signed.encode())
    assert again == signed
    again.verify()
    recipient = _identity_of(transfer.recipient)
    if accepted:
        answer = accept(recipient, again, decided_at)
    else:
        answer = reject(recipient, again, RejectReason.CONFLICT, decided_at)
    decoded = SignedReceipt.decode(answer.encode())
    assert decoded == answer
    decoded.verify(transfer)
    assert compare(transfer, again.transfer) is Comparison.SAME


# --- v2: a transfer that pays a payment request ----------------------------------------

RID = bytes(range(0x40, 0x50))


def test_a_transfer_without_request_id_keeps_the_v1_bytes() -> None:
    assert make().encode() == bytes.fromhex(TRANSFER_HEX)
    assert make(request_id=None).encode() == bytes.fromhex(TRANSFER_HEX)


def test_a_paying_transfer_is_v1_plus_the_request_id_under_type_0x24() -> None:
    paying = make(request_id=RID)
    body = paying.encode()
    v1 = bytes.fromhex(TRANSFER_HEX)
    assert body == b"\x24" + v1[1:] + b"\x08" + (16).to_bytes(4, "big") + RID
    assert len(body) <= TRANSFER_V2_SCHEMA.max_size
    assert paying.digest == hashlib.sha256(b"p2ptransfer-transfer-digest-v1\x00" + body).digest()
    assert paying.digest != make().digest
    decoded = Transfer.decode(body)
    assert decoded == paying and decoded.request_id == RID
    signed = sign_transfer(ALICE, paying)
    wire = signed.encode()
    assert wire[0] == 0x21  # the signed wrapper is the same type; its content says v2
    again = SignedTransfer.decode(wire)
    assert again == signed and again.encode() == wire
    again.verify()


def test_a_v1_signature_does_not_verify_a_v2_transfer() -> None:
    v1 = sign_transfer(ALICE, make())
    with pytest.raises(SignatureError):
        SignedTransfer(make(request_id=RID), v1.signature).verify()


def test_the_largest_signed_v2_transfer_fits_the_signed_transfer_limit() -> None:
    largest = make(
        id=TransferId(b"\xff" * 16),
        amount=MAX_AMOUNT_MINOR,
        currency="KWD",
        memo="x" * MAX_MEMO_BYTES,
        created_at=MAX_TIMESTAMP_MS,
        request_id=RID,
    )
    assert len(sign_transfer(ALICE, largest).encode()) <= SIGNED_TRANSFER_SCHEMA.max_size == 640


@pytest.mark.parametrize("bad", [b"", bytes(15), bytes(17), bytearray(16), "x" * 16])
def test_a_request_id_is_16_bytes(bad: object) -> None:
    with pytest.raises(InputError, match="payment request id must be exactly 16 bytes"):
        make(request_id=bad)


def test_a_v2_type_with_a_malformed_request_id_does_not_decode() -> None:
    body = make(request_id=RID).encode()
    with pytest.raises(DecodeError, match="field 'request_id': expected 16 bytes, got 15"):
        Transfer.decode(body[:-21] + b"\x08" + (15).to_bytes(4, "big") + RID[:15])
    with pytest.raises(DecodeError, match="truncated before field 'request_id'"):
        Transfer.decode(b"\x24" + body[1:-21])  # v1 fields under the v2 type
    with pytest.raises(DecodeError, match="transfer: 21 trailing bytes"):
        Transfer.decode(b"\x20" + body[1:])  # the request id under the v1 type


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [
        (RID, RID, Comparison.SAME),
        (RID, bytes(16), Comparison.CONFLICT),
        (RID, None, Comparison.CONFLICT),
        (None, RID, Comparison.CONFLICT),
    ],
    ids=["same-request", "other-request", "v2-then-v1", "v1-then-v2"],
)
def test_compare_takes_the_request_id_into_account(
    a: bytes | None, b: bytes | None, result: Comparison
) -> None:
    assert compare(make(request_id=a), make(request_id=b)) is result
