"""Known-answer vectors for payment requests (tests/vectors/request_v1.json).

Each vector gives the inputs as a user or peer gives them and the exact bytes
that must come out: the request, its digest, the payee's signature, the signed
request and its text code; one answer (a decline signed by the payer or a
cancellation signed by the payee); one paying transfer in the v2 encoding
(type 0x24) with its digest and the payer's signature; and check_payment's
verdict on it. Digests and signatures are also recomputed here with hashlib
and pyca/cryptography directly, so the context strings of docs/protocol.md are
checked by code that is not ours.

A change to the format makes these fail on purpose: it needs a new protocol
version and a deliberate run of tests/vectors/make_request_vectors.py.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2ptransfer.protocol import bech32m
from p2ptransfer.protocol.receipt import RejectReason
from p2ptransfer.protocol.request import (
    PaymentRequest,
    RequestAnswer,
    RequestAnswerKind,
    RequestState,
    SignedRequest,
    SignedRequestAnswer,
    check_payment,
    parse_request_code,
)
from p2ptransfer.protocol.transfer import SignedTransfer
from tests.vectors.loader import load_json_vectors, unhex
from tests.vectors.make_request_vectors import INPUTS, compute

VECTORS = load_json_vectors("request_v1.json")
IDS = [v["name"] for v in VECTORS]


def _pyca_verify(public_hex: str, signature_hex: str, message: bytes) -> None:
    Ed25519PublicKey.from_public_bytes(unhex(public_hex)).verify(unhex(signature_hex), message)


def test_the_file_holds_the_generators_inputs() -> None:
    assert [{k: v[k] for k in inputs} for v, inputs in zip(VECTORS, INPUTS, strict=True)] == INPUTS


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_the_code_computes_every_value(v: dict[str, Any]) -> None:
    assert compute({k: v[k] for k in INPUTS[0]}) == v


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_request_digest_and_signature_by_independent_code(v: dict[str, Any]) -> None:
    body = unhex(v["request"])
    digest = hashlib.sha256(b"p2ptransfer-request-digest-v1\x00" + body).hexdigest()
    assert digest == v["request_digest"]
    _pyca_verify(v["payee_public"], v["request_signature"], b"p2ptransfer-request-v1\x00" + body)
    answer = unhex(v["answer"])
    signer = v["payer_public"] if v["answer_kind"] == "DECLINED" else v["payee_public"]
    _pyca_verify(signer, v["answer_signature"], b"p2ptransfer-request-answer-v1\x00" + answer)
    transfer = unhex(v["transfer_v2"])
    assert transfer[0] == 0x24
    assert (
        hashlib.sha256(b"p2ptransfer-transfer-digest-v1\x00" + transfer).hexdigest()
        == v["transfer_v2_digest"]
    )
    _pyca_verify(
        v["payer_public"], v["transfer_v2_signature"], b"p2ptransfer-transfer-v1\x00" + transfer
    )


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_the_bytes_decode_verify_and_re_encode(v: dict[str, Any]) -> None:
    signed = SignedRequest.decode(unhex(v["signed_request"]))
    signed.verify()
    assert signed.encode().hex() == v["signed_request"]
    assert signed.request == PaymentRequest.decode(unhex(v["request"]))
    assert signed.request.currency == v["currency"].upper()
    assert signed.request.payee == v["payee_address"]
    assert parse_request_code(v["code"]) == signed
    assert bech32m.from_words(bech32m.decode(v["code"], "p2ptreq", max_length=None)) == (
        unhex(v["signed_request"])
    )

    answer = SignedRequestAnswer.decode(unhex(v["signed_answer"]))
    assert answer.answer == RequestAnswer.decode(unhex(v["answer"]))
    assert answer.kind is RequestAnswerKind[v["answer_kind"]]
    answer.verify(signed)
    assert answer.encode().hex() == v["signed_answer"]

    paying = SignedTransfer.decode(unhex(v["signed_transfer_v2"]))
    paying.verify()
    assert paying.transfer.request_id == signed.id
    assert paying.encode().hex() == v["signed_transfer_v2"]
    verdict = check_payment(signed.request, RequestState[v["state"]], paying.transfer, v["now"])
    assert verdict is (None if v["check"] is None else RejectReason[v["check"]])
