"""Payment requests: validation, bytes, signatures, answers, the text code, expiry, payment."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from p2ptransfer.errors import (
    AddressError,
    AmountError,
    CurrencyError,
    DecodeError,
    InputError,
    MemoError,
    ProtocolError,
    SignatureError,
)
from p2ptransfer.protocol import bech32m
from p2ptransfer.protocol.identity import Identity
from p2ptransfer.protocol.receipt import RejectReason
from p2ptransfer.protocol.request import (
    MAX_EXPIRY_MS,
    MAX_REQUEST_CODE_LENGTH,
    REQUEST_ANSWER_SCHEMA,
    REQUEST_SCHEMA,
    SIGNED_REQUEST_SCHEMA,
    PaymentRequest,
    RequestAnswer,
    RequestAnswerKind,
    RequestState,
    SignedRequest,
    SignedRequestAnswer,
    check_payment,
    parse_expiry,
    parse_request_code,
    request_code,
    sign_answer,
    sign_request,
)
from p2ptransfer.protocol.transfer import Transfer, TransferId, sign_transfer

ALICE = Identity(bytes(range(32)))  # the payee
BOB = Identity(bytes(range(32, 64)))  # the payer
MALLORY = Identity(bytes(range(64, 96)))
RID = bytes(range(0x40, 0x50))
CREATED = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
DAY = 24 * 3600 * 1000
EXPIRES = CREATED + DAY


def make(**changes: Any) -> PaymentRequest:
    values: dict[str, Any] = {
        "id": RID,
        "payee": ALICE.address,
        "payer": BOB.address,
        "amount": 1250,
        "currency": "EUR",
        "memo": "Dinner 🍝",
        "created_at": CREATED,
        "expires_at": EXPIRES,
    }
    values.update(changes)
    return PaymentRequest(**values)


def signed(**changes: Any) -> SignedRequest:
    return sign_request(ALICE, make(**changes))


def reencode(request: PaymentRequest, **values: Any) -> bytes:
    """The request's bytes with some raw wire values replaced (no validation)."""
    raw = REQUEST_SCHEMA.decode(request.encode())
    raw.update(values)
    return REQUEST_SCHEMA.encode(raw)


def forged(body: bytes, signature: bytes) -> bytes:
    return SIGNED_REQUEST_SCHEMA.encode({"request": body, "signature": signature})


# --- construction -------------------------------------------------------------------


def test_a_request_normalises_what_has_harmless_variants() -> None:
    request = make(payee=f"  {ALICE.address.upper()} ", currency="eur", memo="Cafe\u0301")
    assert request.payee == ALICE.address
    assert request.currency == "EUR"
    assert request.memo == "Caf\u00e9"
    assert request == PaymentRequest.decode(request.encode())


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"id": bytes(15)}, InputError, "payment request id must be exactly 16 bytes"),
        ({"payer": ALICE.address}, AddressError, "payee and payer are the same address"),
        ({"payer": ALICE.address[:-1] + "x"}, AddressError, "checksum"),
        ({"amount": 0}, AmountError, "between 1 and"),
        ({"amount": 1.5}, AmountError, "must be an integer"),
        ({"currency": "XAU"}, CurrencyError, "no minor unit"),
        ({"memo": "a\nb"}, MemoError, "U\\+000A"),
        ({"created_at": -1}, InputError, "created_at must be unix time"),
        ({"expires_at": CREATED}, InputError, "must expire after it is created"),
        ({"expires_at": CREATED - 1}, InputError, "must expire after it is created"),
        ({"expires_at": CREATED + MAX_EXPIRY_MS + 1}, InputError, "at most 90 days"),
    ],
    ids=[
        "short-id",
        "payer-is-payee",
        "bad-address",
        "zero-amount",
        "float-amount",
        "no-minor-unit",
        "memo-newline",
        "negative-time",
        "expires-at-creation",
        "expires-before-creation",
        "over-90-days",
    ],
)
def test_invalid_requests_are_refused(
    changes: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make(**changes)


def test_the_longest_window_is_exactly_90_days() -> None:
    assert MAX_EXPIRY_MS == 90 * DAY
    assert make(expires_at=CREATED + MAX_EXPIRY_MS).expires_at == CREATED + 90 * DAY


# --- bytes, digest, signature ---------------------------------------------------------


def test_encoding_and_digest() -> None:
    request = make()
    body = request.encode()
    assert body[0] == 0xA0
    assert request.digest == hashlib.sha256(b"p2ptransfer-request-digest-v1\x00" + body).digest()
    assert request.signing_message() == b"p2ptransfer-request-v1\x00" + body
    s = sign_request(ALICE, request)
    assert s.digest == request.digest and s.id == RID
    wire = s.encode()
    assert wire[0] == 0xA1
    assert SignedRequest.decode(wire) == s
    assert SignedRequest.decode(wire).encode() == wire


def test_the_largest_request_fits_its_limits() -> None:
    request = make(amount=10**15, memo="x" * 280, created_at=2**63 - 2, expires_at=2**63 - 1)
    assert len(request.encode()) <= REQUEST_SCHEMA.max_size
    s = sign_request(ALICE, request)
    assert len(s.encode()) <= SIGNED_REQUEST_SCHEMA.max_size
    assert len(request_code(s)) <= MAX_REQUEST_CODE_LENGTH


def test_only_the_payee_signs() -> None:
    with pytest.raises(ValueError, match="payee"):
        sign_request(BOB, make())


def test_a_signed_request_verifies() -> None:
    signed().verify()
    SignedRequest.decode(signed().encode()).verify()


def test_tampering_is_detected() -> None:
    original = signed()
    flipped = forged(reencode(original.request, amount=1251), original.signature)
    with pytest.raises(SignatureError, match="not signed by its payee"):
        SignedRequest.decode(flipped).verify()

    swapped = forged(
        reencode(
            original.request,
            payee=BOB.public.public_key,
            payer=ALICE.public.public_key,
        ),
        original.signature,
    )
    with pytest.raises(SignatureError, match="not signed by its payee"):
        SignedRequest.decode(swapped).verify()

    wrong_signer = SignedRequest(make(), MALLORY.sign(make().signing_message()))
    with pytest.raises(SignatureError, match=f"not signed by its payee {ALICE.address}"):
        wrong_signer.verify()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"currency": "eur"}, "currency code must be upper case on the wire"),
        ({"memo": "Cafe\u0301"}, "memo must be in Unicode NFC on the wire"),
        ({"amount": 0}, "payment request: "),
        ({"expires_at": CREATED}, "must expire after it is created"),
        ({"payer": ALICE.public.public_key}, "same address"),
    ],
    ids=["lower-case-currency", "non-nfc-memo", "zero-amount", "no-window", "self-request"],
)
def test_non_canonical_or_invalid_bytes_do_not_decode(values: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        PaymentRequest.decode(reencode(make(), **values))


def test_a_transfer_is_not_a_request() -> None:
    transfer = Transfer(TransferId(RID), BOB.address, ALICE.address, 1, "EUR", "", CREATED)
    with pytest.raises(DecodeError, match="wrong message type 0x21"):
        SignedRequest.decode(sign_transfer(BOB, transfer).encode())


# --- answers ------------------------------------------------------------------------------


def test_the_payer_declines_and_the_payee_cancels() -> None:
    request = signed()
    decline = sign_answer(BOB, request, RequestAnswerKind.DECLINED, CREATED + 5)
    assert decline.answer == RequestAnswer(
        RID, request.digest, RequestAnswerKind.DECLINED, BOB.address, CREATED + 5
    )
    decline.verify(request)
    decline.verify(request.request)
    cancel = sign_answer(ALICE, request, RequestAnswerKind.CANCELLED, CREATED + 6)
    cancel.verify(request)
    for answer in (decline, cancel):
        wire = answer.encode()
        assert wire[0] == 0xA3
        assert SignedRequestAnswer.decode(wire) == answer
        assert answer.answer.encode()[0] == 0xA2
        assert answer.answer.signing_message() == (
            b"p2ptransfer-request-answer-v1\x00" + answer.answer.encode()
        )


@pytest.mark.parametrize(
    ("who", "kind", "message"),
    [
        (ALICE, RequestAnswerKind.DECLINED, "only the payer can decline .*cancel it instead"),
        (BOB, RequestAnswerKind.CANCELLED, "only the payee can cancel .*decline it instead"),
        (MALLORY, RequestAnswerKind.DECLINED, "neither the payee nor the payer"),
    ],
    ids=["payee-declines", "payer-cancels", "stranger"],
)
def test_an_answer_only_its_party_may_give_is_refused(
    who: Identity, kind: RequestAnswerKind, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        sign_answer(who, signed(), kind, CREATED)


def test_a_forged_or_misplaced_answer_does_not_verify() -> None:
    request = signed()
    # The payee "declining" on the payer's behalf: signed, but by the wrong party.
    body = RequestAnswer(RID, request.digest, RequestAnswerKind.DECLINED, ALICE.address, CREATED)
    by_payee = SignedRequestAnswer(body, ALICE.sign(body.signing_message()))
    with pytest.raises(SignatureError, match="must be signed by the request's payer"):
        by_payee.verify(request)
    # Signature by another key than the named signer.
    body = RequestAnswer(RID, request.digest, RequestAnswerKind.DECLINED, BOB.address, CREATED)
    with pytest.raises(SignatureError, match="is not signed by its signer"):
        SignedRequestAnswer(body, MALLORY.sign(body.signing_message())).verify(request)
    # A genuine decline of another request, or of other content under the same id.
    decline = sign_answer(BOB, request, RequestAnswerKind.DECLINED, CREATED)
    with pytest.raises(ProtocolError, match="not " + bytes(16).hex()):
        decline.verify(signed(id=bytes(16)))
    with pytest.raises(ProtocolError, match="digest mismatch"):
        decline.verify(signed(amount=1251))


def test_an_answer_of_unknown_kind_does_not_decode() -> None:
    answer = sign_answer(BOB, signed(), RequestAnswerKind.DECLINED, CREATED).answer
    raw = REQUEST_ANSWER_SCHEMA.decode(answer.encode())
    raw["kind"] = 3
    with pytest.raises(DecodeError, match="unknown request answer kind"):
        RequestAnswer.decode(REQUEST_ANSWER_SCHEMA.encode(raw))


# --- the text code ------------------------------------------------------------------------


def test_code_round_trip() -> None:
    s = signed()
    code = request_code(s)
    assert code.startswith("p2ptreq1") and code == code.lower()
    assert len(code) > bech32m.MAX_LENGTH  # no 90-character cap
    assert parse_request_code(code) == s
    assert parse_request_code(f"  {code.upper()}\n") == s


def _code_of(data: bytes, hrp: str = "p2ptreq") -> str:
    return bech32m.encode(hrp, bech32m.to_words(data), max_length=None)


def _mistype(code: str, position: int) -> str:
    char = code[position]
    other = "q" if char != "q" else "p"
    return code[:position] + other + code[position + 1 :]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ALICE.address, r"^this is an address, not a payment request code"),
        ("p2ptrex1qqqqqq", r"^payment request code must start with p2ptreq1$"),
        (_mistype(request_code(signed()), 200), r"checksum does not match"),
        ("p2ptreq1" + "q" * (MAX_REQUEST_CODE_LENGTH), r"too long: 1046 characters, at most 1038"),
        ("p2ptreq1qbqqqqqq", r"character 'b' at position 10 is not used in payment request codes"),
        (
            _code_of(
                sign_transfer(
                    BOB, Transfer(TransferId(RID), BOB.address, ALICE.address, 1, "EUR", "", 0)
                ).encode()
            ),
            r"does not hold a valid payment request \(signed-request: wrong message type 0x21\)",
        ),
        (
            _code_of(forged(reencode(make(), amount=1), signed().signature)),
            r"not signed by its payee: it was altered or forged$",
        ),
    ],
    ids=[
        "an-address",
        "wrong-prefix",
        "mistyped",
        "too-long",
        "bad-character",
        "not-a-request",
        "forged",
    ],
)
def test_bad_codes_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_request_code(text)


def test_a_code_must_be_text() -> None:
    with pytest.raises(InputError, match="must be text"):
        parse_request_code(b"p2ptreq1")  # type: ignore[arg-type]


# --- --expires --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90s", 90_000),
        ("15m", 900_000),
        ("24h", DAY),
        ("7d", 7 * DAY),
        ("1s", 1_000),
        ("90d", 90 * DAY),
        ("2160h", 90 * DAY),
        ("007d", 7 * DAY),
    ],
)
def test_parse_expiry_accepts(text: str, ms: int) -> None:
    assert parse_expiry(text) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0s", "'0s': must be greater than zero"),
        ("0d", "must be greater than zero"),
        ("-1h", "expected a whole number followed by s, m, h or d"),
        ("+1h", "expected a whole number"),
        ("1.5h", "expected a whole number"),
        ("10", "expected a whole number"),
        ("h", "expected a whole number"),
        ("", "expected a whole number"),
        ("1w", "expected a whole number"),
        ("15M", "expected a whole number"),
        ("1 d", "expected a whole number"),
        (" 1d", "expected a whole number"),
        ("1d\n", "expected a whole number"),
        ("\uff11d", "expected a whole number"),  # FULLWIDTH DIGIT ONE
        ("1e3s", "expected a whole number"),
        ("91d", "'91d': a request may stay open for at most 90 days"),
        ("7776001s", "at most 90 days"),
        ("99999999999999d", "at most 90 days"),
        ("9" * 40 + "d", "too long"),
    ],
)
def test_parse_expiry_refuses(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_expiry(text)


# --- check_payment -------------------------------------------------------------------------


def paying(**changes: Any) -> Transfer:
    values: dict[str, Any] = {
        "id": TransferId(bytes(16)),
        "sender": BOB.address,
        "recipient": ALICE.address,
        "amount": 1250,
        "currency": "EUR",
        "memo": "any memo the payer likes",
        "created_at": CREATED + 10,
        "request_id": RID,
    }
    values.update(changes)
    return Transfer(**values)


OPEN = RequestState.OPEN
BEFORE = EXPIRES - 1


@pytest.mark.parametrize(
    ("transfer", "state", "now", "result"),
    [
        (paying(), OPEN, BEFORE, None),
        (paying(), OPEN, CREATED - DAY, None),  # the payee's clock went back: still open
        (paying(), OPEN, EXPIRES, RejectReason.REQUEST_EXPIRED),  # strict: no skew tolerance
        (paying(), RequestState.EXPIRED, BEFORE, RejectReason.REQUEST_EXPIRED),
        (paying(), RequestState.PAID, BEFORE, RejectReason.REQUEST_PAID),
        (paying(), RequestState.CANCELLED, BEFORE, RejectReason.REQUEST_CANCELLED),
        (paying(), RequestState.DECLINED, BEFORE, RejectReason.REQUEST_CANCELLED),
        (paying(amount=1251), OPEN, BEFORE, RejectReason.REQUEST_MISMATCH),
        (paying(currency="USD"), OPEN, BEFORE, RejectReason.REQUEST_MISMATCH),
        (paying(sender=MALLORY.address), OPEN, BEFORE, RejectReason.REQUEST_MISMATCH),
        (paying(recipient=MALLORY.address), OPEN, BEFORE, RejectReason.REQUEST_MISMATCH),
        # Order: mismatch, then paid, then cancelled/declined, then expired.
        (paying(amount=1), RequestState.PAID, EXPIRES, RejectReason.REQUEST_MISMATCH),
        (paying(), RequestState.PAID, EXPIRES, RejectReason.REQUEST_PAID),
        (paying(), RequestState.CANCELLED, EXPIRES, RejectReason.REQUEST_CANCELLED),
    ],
    ids=[
        "open",
        "clock-before-creation",
        "at-expiry",
        "state-expired",
        "paid",
        "cancelled",
        "declined",
        "amount",
        "currency",
        "payer",
        "payee",
        "mismatch-before-paid",
        "paid-before-expired",
        "cancelled-before-expired",
    ],
)
def test_check_payment(
    transfer: Transfer, state: RequestState, now: int, result: RejectReason | None
) -> None:
    assert check_payment(make(), state, transfer, now) is result


def test_check_payment_needs_the_request_the_transfer_names() -> None:
    with pytest.raises(ValueError, match="names"):
        check_payment(make(), OPEN, paying(request_id=bytes(16)), BEFORE)
    with pytest.raises(ValueError, match="names"):
        check_payment(make(), OPEN, paying(request_id=None), BEFORE)


def test_reasons_describe_themselves() -> None:
    assert RejectReason.REQUEST_PAID.describe() == (
        "The payment request this transfer names was already paid."
    )
    assert RejectReason.REQUEST_EXPIRED.describe() == (
        "The payment request this transfer names has expired."
    )
    assert "does not match" in RejectReason.REQUEST_MISMATCH.describe()
    assert "cancelled" in RejectReason.REQUEST_CANCELLED.describe()


def test_states_have_their_json_names() -> None:
    assert [s.value for s in RequestState] == ["open", "paid", "expired", "declined", "cancelled"]


def test_request_objects_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().amount = 1  # type: ignore[misc]
