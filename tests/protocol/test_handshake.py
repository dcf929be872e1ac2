"""The handshake state machines: success, and every attack failing closed with a precise error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2ptransfer.errors import HandshakeError, IdentityMismatch, P2PTransferError
from p2ptransfer.protocol import handshake, primitives
from p2ptransfer.protocol.handshake import (
    HANDSHAKE_AUTH,
    HANDSHAKE_FINISH,
    HANDSHAKE_INIT,
    HANDSHAKE_RESPONSE,
    INITIATOR_LABEL,
    RESPONDER_LABEL,
    TRANSITIONS,
    Initiator,
    Responder,
    Role,
    State,
    absorb,
    handshake_keys,
    initial_transcript,
)
from p2ptransfer.protocol.identity import Identity
from tests.protocol.x25519_points import LOW_ORDER_ENCODINGS

ALICE = Identity(primitives.sha256(b"alice seed"))
BOB = Identity(primitives.sha256(b"bob seed"))
MALLORY = Identity(primitives.sha256(b"mallory seed"))
PROLOGUE = b"relay=ws://127.0.0.1:1 from=alice to=bob"
HS_NONCE = bytes(12)
# Ed25519 group order L (RFC 8032).
L = 2**252 + 27742317777372353535851937790883648493


def eph(label: str) -> bytes:
    return primitives.sha256(b"ephemeral " + label.encode())


def nonce(label: str = "n") -> bytes:
    return primitives.sha256(b"nonce " + label.encode())


def initiator(
    me: Identity = ALICE,
    peer: Identity = BOB,
    *,
    label: str = "alice",
    prologue: bytes = PROLOGUE,
    max_records: int = 1 << 24,
) -> Initiator:
    return Initiator(
        me,
        peer.public,
        ephemeral_private=eph(label),
        nonce=nonce(label),
        prologue=prologue,
        max_records=max_records,
    )


def responder(
    me: Identity = BOB,
    *,
    label: str = "bob",
    prologue: bytes = PROLOGUE,
    max_records: int = 1 << 24,
) -> Responder:
    return Responder(me, ephemeral_private=eph(label), prologue=prologue, max_records=max_records)


def run(i: Initiator, r: Responder) -> tuple[bytes, bytes, bytes]:
    msg1 = i.start()
    msg2 = r.receive(msg1)
    assert msg2 is not None
    msg3 = i.receive(msg2)
    assert r.receive(msg3) is None
    return msg1, msg2, msg3


def assert_failed_closed(machine: Initiator | Responder) -> None:
    """ERROR for good: no result, no secrets held, every further call raises."""
    assert machine.state is State.ERROR
    assert not machine.complete
    with pytest.raises(HandshakeError, match="no session exists"):
        _ = machine.result
    assert machine._ephemeral is None
    assert machine._identity is None
    if isinstance(machine, Responder):
        assert machine._keys is None
    for data in (b"\x01", b"\x02", b"\x03", b""):
        with pytest.raises(HandshakeError, match="already failed"):
            machine.receive(data)
    if isinstance(machine, Initiator):
        with pytest.raises(HandshakeError, match="already failed"):
            machine.start()


# --- forging peers: they know their own secrets and build messages by hand ----------------

Signer = Callable[[bytes], bytes]


def forge_msg2(
    msg1: bytes,
    *,
    ephemeral: bytes,
    identity: bytes,
    sign: Signer,
    edit_inner: Callable[[bytes], bytes] = bytes,
) -> bytes:
    """A responder that follows the key schedule but chooses what it claims and signs."""
    e_i = HANDSHAKE_INIT.decode(msg1)["ephemeral"]
    e_r = primitives.x25519_public_from_private(ephemeral)
    th2 = absorb(absorb(initial_transcript(PROLOGUE), msg1), e_r)
    keys = handshake_keys(th2, primitives.x25519_shared_secret(ephemeral, e_i))
    signature = sign(absorb(th2, identity))
    inner = edit_inner(HANDSHAKE_AUTH.encode({"identity": identity, "signature": signature}))
    sealed = primitives.aead_seal(keys.r2i, HS_NONCE, inner, th2)
    return HANDSHAKE_RESPONSE.encode({"ephemeral": e_r, "sealed": sealed})


def forge_msg3(
    msg1: bytes, msg2: bytes, *, ephemeral: bytes, identity: bytes, sign: Signer
) -> bytes:
    """An initiator that follows the key schedule but chooses what it claims and signs."""
    fields = HANDSHAKE_RESPONSE.decode(msg2)
    th2 = absorb(absorb(initial_transcript(PROLOGUE), msg1), fields["ephemeral"])
    keys = handshake_keys(th2, primitives.x25519_shared_secret(ephemeral, fields["ephemeral"]))
    inner = HANDSHAKE_AUTH.decode(primitives.aead_open(keys.r2i, HS_NONCE, fields["sealed"], th2))
    th3 = absorb(absorb(th2, inner["identity"]), msg2)
    signature = sign(absorb(th3, identity))
    sealed = primitives.aead_seal(
        keys.i2r,
        HS_NONCE,
        HANDSHAKE_AUTH.encode({"identity": identity, "signature": signature}),
        th3,
    )
    return HANDSHAKE_FINISH.encode({"sealed": sealed})


def malleate(signature: bytes) -> bytes:
    """(R, S) -> (R, S + L): the same point equation, a non-canonical S (RFC 8032 §5.1.7)."""
    s = int.from_bytes(signature[32:], "little") + L
    return signature[:32] + s.to_bytes(32, "little")


# --- success -----------------------------------------------------------------------


def test_handshake_completes_with_matching_sessions_and_mirrored_keys() -> None:
    i, r = initiator(), responder()
    msg1, msg2, msg3 = run(i, r)
    assert (len(msg1), len(msg2), len(msg3)) == (87, 166, 129)
    ri, rr = i.result, r.result
    assert (ri.role, rr.role) == (Role.INITIATOR, Role.RESPONDER)
    assert ri.peer == BOB.public and rr.peer == ALICE.public
    assert ri.session_id == rr.session_id and len(ri.session_id) == 32
    assert ri.channel._send == rr.channel._recv
    assert ri.channel._recv == rr.channel._send
    assert ri.channel._send != ri.channel._recv
    assert i.state is State.DONE and r.state is State.DONE and i.complete and r.complete


def test_records_flow_both_ways_after_the_handshake() -> None:
    i, r = initiator(), responder()
    run(i, r)
    a, b = i.result.channel, r.result.channel
    for n in range(3):
        assert b.open(a.seal(0x10, b"to bob %d" % n)) == (0x10, b"to bob %d" % n)
        assert a.open(b.seal(0x11, b"to alice %d" % n)) == (0x11, b"to alice %d" % n)


def test_max_records_reaches_the_channels() -> None:
    i, r = initiator(max_records=10), responder(max_records=10)
    run(i, r)
    assert i.result.channel.max_records == r.result.channel.max_records == 10


def test_secrets_are_dropped_once_done() -> None:
    i, r = initiator(), responder()
    msg1 = i.start()
    msg2 = r.receive(msg1)
    assert r._ephemeral is None  # dropped right after the DH
    assert r._keys is not None  # still needed to open msg3
    assert msg2 is not None
    msg3 = i.receive(msg2)
    assert i._ephemeral is None and i._identity is None
    r.receive(msg3)
    assert r._keys is None and r._ephemeral is None and r._identity is None


def test_fresh_ephemerals_give_unrelated_sessions() -> None:
    first_i, first_r = initiator(label="a1"), responder(label="b1")
    second_i, second_r = initiator(label="a2"), responder(label="b2")
    run(first_i, first_r)
    run(second_i, second_r)
    assert first_i.result.session_id != second_i.result.session_id
    assert first_i.result.channel._send != second_i.result.channel._send


def test_identities_are_not_visible_on_the_wire() -> None:
    i, r = initiator(), responder()
    wire = b"".join(run(i, r))
    for who in (ALICE, BOB):
        assert who.public.public_key not in wire


def test_transition_table_is_the_documented_machine() -> None:
    as_names = {
        role.value: {s.value: {e.value: t.value for e, t in m.items()} for s, m in table.items()}
        for role, table in TRANSITIONS.items()
    }
    assert as_names == {
        "initiator": {
            "start": {"send handshake-init": "await-response"},
            "await-response": {"receive handshake-response": "done"},
        },
        "responder": {
            "start": {"receive handshake-init": "await-finish"},
            "await-finish": {"receive handshake-finish": "done"},
        },
    }


def test_result_before_completion_is_refused() -> None:
    i = initiator()
    with pytest.raises(HandshakeError, match="not complete"):
        _ = i.result
    i.start()
    with pytest.raises(HandshakeError, match="not complete"):
        _ = i.result


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ephemeral_private": b"\x01" * 31}, "ephemeral_private must be exactly 32 bytes"),
        ({"nonce": b"\x01" * 16}, "nonce must be exactly 32 bytes"),
        ({"prologue": b"x" * 4097}, "prologue must be bytes of at most 4096"),
        ({"prologue": "text"}, "prologue must be bytes"),
        ({"max_records": 0}, "max_records must be between 1 and 16777216"),
        ({"max_records": (1 << 24) + 1}, "max_records must be between 1 and 16777216"),
    ],
    ids=["short-ephemeral", "short-nonce", "long-prologue", "text-prologue", "zero-cap", "big-cap"],
)
def test_local_misuse_is_a_value_error(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "ephemeral_private": eph("x"),
        "nonce": nonce(),
        "prologue": b"",
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        Initiator(ALICE, BOB.public, **args)  # type: ignore[arg-type]


def test_api_type_misuse_is_a_type_error_and_changes_nothing() -> None:
    with pytest.raises(TypeError, match="identity must be an Identity"):
        Initiator(BOB.public, BOB.public, ephemeral_private=eph("x"), nonce=nonce())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected_peer must be a PublicIdentity"):
        Initiator(ALICE, BOB.address, ephemeral_private=eph("x"), nonce=nonce())  # type: ignore[arg-type]
    r = responder()
    with pytest.raises(TypeError, match="handshake messages are bytes"):
        r.receive("hello")  # type: ignore[arg-type]
    assert r.state is State.START
    assert repr(r) == "Responder(state=start)"
    i = initiator()
    assert i.expected_peer == BOB.public
    assert repr(i) == "Initiator(state=start)"


def test_memoryview_and_bytearray_input_are_accepted() -> None:
    i, r = initiator(), responder()
    msg2 = r.receive(memoryview(i.start()))
    assert msg2 is not None
    r.receive(bytearray(i.receive(bytearray(msg2))))
    assert r.result.session_id == i.result.session_id


# --- attacks: each fails with a precise error and leaves nothing behind ----------------


def test_mitm_substituting_the_responder_ephemeral_is_caught() -> None:
    i, r = initiator(), responder()
    msg2 = r.receive(i.start())
    assert msg2 is not None
    fields = HANDSHAKE_RESPONSE.decode(msg2)
    fields["ephemeral"] = primitives.x25519_public_from_private(eph("mallory"))
    with pytest.raises(HandshakeError, match="handshake-response does not authenticate"):
        i.receive(HANDSHAKE_RESPONSE.encode(fields))
    assert_failed_closed(i)


def test_mitm_substituting_the_initiator_ephemeral_is_caught() -> None:
    i, r = initiator(), responder()
    fields = HANDSHAKE_INIT.decode(i.start())
    fields["ephemeral"] = primitives.x25519_public_from_private(eph("mallory"))
    msg2 = r.receive(HANDSHAKE_INIT.encode(fields))
    assert msg2 is not None
    with pytest.raises(HandshakeError, match="handshake-response does not authenticate"):
        i.receive(msg2)
    assert_failed_closed(i)


def test_active_mitm_with_her_own_identity_is_an_identity_mismatch_before_msg3() -> None:
    i = initiator()
    mallory = responder(MALLORY, label="mallory")
    msg2 = mallory.receive(i.start())
    assert msg2 is not None
    with pytest.raises(IdentityMismatch, match=f"proved identity {MALLORY.address}") as info:
        i.receive(msg2)
    assert BOB.address in str(info.value)
    assert info.value.exit_code == 6
    assert_failed_closed(i)


def test_dialling_the_wrong_address_is_an_identity_mismatch() -> None:
    i = initiator(peer=MALLORY)
    msg2 = responder().receive(i.start())
    assert msg2 is not None
    with pytest.raises(IdentityMismatch, match=f"but {MALLORY.address} was dialled"):
        i.receive(msg2)
    assert_failed_closed(i)


def _sign_as(who: Identity, label: bytes) -> Signer:
    return lambda th: who.sign(label + th)


MSG2_FORGERIES: dict[str, tuple[bytes, Signer, str]] = {
    "claims-bob-signs-as-mallory": (
        BOB.public.public_key,
        _sign_as(MALLORY, RESPONDER_LABEL),
        "handshake-response signature does not verify",
    ),
    "bob-signature-with-initiator-label": (
        BOB.public.public_key,
        _sign_as(BOB, INITIATOR_LABEL),
        "handshake-response signature does not verify",
    ),
    "bob-signature-malleated-s-plus-l": (
        BOB.public.public_key,
        lambda th: malleate(BOB.sign(RESPONDER_LABEL + th)),
        "handshake-response signature does not verify",
    ),
    "bob-signature-over-wrong-transcript": (
        BOB.public.public_key,
        lambda th: BOB.sign(RESPONDER_LABEL + bytes(32)),
        "handshake-response signature does not verify",
    ),
    "all-zero-signature": (
        BOB.public.public_key,
        lambda th: bytes(64),
        "handshake-response signature does not verify",
    ),
}


def test_forger_itself_is_faithful() -> None:
    """Control: the forging helper with honest inputs is accepted, so failures below are real."""
    i = initiator()
    msg1 = i.start()
    msg2 = forge_msg2(
        msg1,
        ephemeral=eph("bob"),
        identity=BOB.public.public_key,
        sign=_sign_as(BOB, RESPONDER_LABEL),
    )
    r = responder()
    assert r.receive(msg1) == msg2
    msg3 = i.receive(msg2)
    forged3 = forge_msg3(
        msg1,
        msg2,
        ephemeral=eph("alice"),
        identity=ALICE.public.public_key,
        sign=_sign_as(ALICE, INITIATOR_LABEL),
    )
    assert forged3 == msg3
    r.receive(forged3)
    assert r.result.session_id == i.result.session_id


@pytest.mark.parametrize("case", MSG2_FORGERIES, ids=list(MSG2_FORGERIES))
def test_bad_responder_signature_is_rejected(case: str) -> None:
    identity, sign, match = MSG2_FORGERIES[case]
    i = initiator()
    msg2 = forge_msg2(i.start(), ephemeral=eph("bob"), identity=identity, sign=sign)
    with pytest.raises(HandshakeError, match=match):
        i.receive(msg2)
    assert_failed_closed(i)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda b: b"\x05" + b[1:], "wrong message type 0x05"),
        (lambda b: b[:1] + b"\x02" + b[2:], "field tag 2 out of order or repeated"),
        (lambda b: b[:-1] + b"\x00", None),
    ],
    ids=["wrong-inner-type", "wrong-inner-tag", "last-signature-byte"],
)
def test_authenticated_but_malformed_identity_proof(
    edit: Callable[[bytes], bytes], match: str | None
) -> None:
    """A peer holding the right handshake key still cannot smuggle a malformed proof."""
    i = initiator()
    msg2 = forge_msg2(
        i.start(),
        ephemeral=eph("bob"),
        identity=BOB.public.public_key,
        sign=_sign_as(BOB, RESPONDER_LABEL),
        edit_inner=edit,
    )
    expected = (
        f"handshake-response carries a malformed identity proof: handshake-auth: {match}"
        if match
        else "handshake-response signature does not verify"
    )
    with pytest.raises(HandshakeError, match=expected):
        i.receive(msg2)
    assert_failed_closed(i)


def test_malleated_signature_really_is_malleated() -> None:
    sig = BOB.sign(b"message")
    bad = malleate(sig)
    assert bad != sig and bad[:32] == sig[:32]
    with pytest.raises(P2PTransferError, match="does not verify"):
        BOB.public.verify(bad, b"message")


MSG3_FORGERIES: dict[str, tuple[bytes, Signer]] = {
    "claims-alice-signs-as-mallory": (ALICE.public.public_key, _sign_as(MALLORY, INITIATOR_LABEL)),
    "alice-signature-with-responder-label": (
        ALICE.public.public_key,
        _sign_as(ALICE, RESPONDER_LABEL),
    ),
    "alice-signature-malleated-s-plus-l": (
        ALICE.public.public_key,
        lambda th: malleate(ALICE.sign(INITIATOR_LABEL + th)),
    ),
}


@pytest.mark.parametrize("case", MSG3_FORGERIES, ids=list(MSG3_FORGERIES))
def test_bad_initiator_signature_is_rejected(case: str) -> None:
    identity, sign = MSG3_FORGERIES[case]
    i, r = initiator(), responder()
    msg1 = i.start()
    msg2 = r.receive(msg1)
    assert msg2 is not None
    msg3 = forge_msg3(msg1, msg2, ephemeral=eph("alice"), identity=identity, sign=sign)
    with pytest.raises(HandshakeError, match="handshake-finish signature does not verify"):
        r.receive(msg3)
    assert_failed_closed(r)


def test_spliced_msg3_from_another_session_is_rejected() -> None:
    i1, r1 = initiator(label="a1"), responder(label="b1")
    _m1, _m2, old_msg3 = run(i1, r1)
    i2, r2 = initiator(label="a2"), responder(label="b2")
    msg2 = r2.receive(i2.start())
    assert msg2 is not None
    with pytest.raises(HandshakeError, match="handshake-finish does not authenticate"):
        r2.receive(old_msg3)
    assert_failed_closed(r2)


def test_replayed_msg2_from_an_old_session_is_rejected() -> None:
    i1, r1 = initiator(label="a1"), responder(label="b1")
    _m1, old_msg2, _m3 = run(i1, r1)
    i2 = initiator(label="a2")
    i2.start()
    with pytest.raises(HandshakeError, match="handshake-response does not authenticate"):
        i2.receive(old_msg2)
    assert_failed_closed(i2)


def test_prologue_mismatch_is_a_transcript_mismatch() -> None:
    i, r = initiator(), responder(prologue=b"relay=ws://elsewhere")
    msg2 = r.receive(i.start())
    assert msg2 is not None
    with pytest.raises(HandshakeError, match="handshake-response does not authenticate"):
        i.receive(msg2)
    assert_failed_closed(i)


# --- reflection and order ------------------------------------------------------------


def test_msg1_reflected_back_to_the_initiator() -> None:
    i = initiator()
    msg1 = i.start()
    with pytest.raises(HandshakeError, match="receive handshake-init while await-response"):
        i.receive(msg1)
    assert_failed_closed(i)


def test_msg2_fed_to_a_responder() -> None:
    msg2 = responder().receive(initiator().start())
    assert msg2 is not None
    victim = responder(label="bob2")
    with pytest.raises(HandshakeError, match="receive handshake-response while start"):
        victim.receive(msg2)
    assert_failed_closed(victim)


def test_responder_echoing_the_initiator_ephemeral_is_refused() -> None:
    i = initiator()
    msg1 = i.start()
    e_i = HANDSHAKE_INIT.decode(msg1)["ephemeral"]
    fake = HANDSHAKE_RESPONSE.encode({"ephemeral": e_i, "sealed": bytes(123)})
    with pytest.raises(HandshakeError, match="reflected handshake"):
        i.receive(fake)
    assert_failed_closed(i)


def test_initiator_echoing_the_responder_ephemeral_is_refused() -> None:
    r = responder()
    e_r = primitives.x25519_public_from_private(eph("bob"))
    msg1 = HANDSHAKE_INIT.encode({"version": 1, "suite": 1, "ephemeral": e_r, "nonce": nonce()})
    with pytest.raises(HandshakeError, match="reflected handshake"):
        r.receive(msg1)
    assert_failed_closed(r)


def _msg3_first() -> tuple[Initiator | Responder, Callable[[], object], str]:
    i, r = initiator(), responder()
    _m1, _m2, msg3 = run(i, r)
    fresh = responder(label="other")
    return fresh, lambda: fresh.receive(msg3), "receive handshake-finish while start"


def _msg1_twice() -> tuple[Initiator | Responder, Callable[[], object], str]:
    i, r = initiator(), responder()
    msg1 = i.start()
    r.receive(msg1)
    return r, lambda: r.receive(msg1), "receive handshake-init while await-finish"


def _receive_before_start() -> tuple[Initiator | Responder, Callable[[], object], str]:
    i = initiator()
    msg2 = responder().receive(initiator().start())
    assert msg2 is not None
    return i, lambda: i.receive(msg2), "receive handshake-response while start"


def _start_twice() -> tuple[Initiator | Responder, Callable[[], object], str]:
    i = initiator()
    i.start()
    return i, i.start, "send handshake-init while await-response"


def _msg2_to_done_initiator() -> tuple[Initiator | Responder, Callable[[], object], str]:
    i, r = initiator(), responder()
    _m1, msg2, _m3 = run(i, r)
    return i, lambda: i.receive(msg2), "receive handshake-response while done"


def _unknown_type() -> tuple[Initiator | Responder, Callable[[], object], str]:
    r = responder()
    return r, lambda: r.receive(b"\x04" + bytes(20)), "unknown handshake message type 0x04"


def _empty() -> tuple[Initiator | Responder, Callable[[], object], str]:
    r = responder()
    return r, lambda: r.receive(b""), "empty message"


OUT_OF_ORDER = {
    "msg3-before-msg1": _msg3_first,
    "msg1-replayed-to-responder": _msg1_twice,
    "receive-before-start": _receive_before_start,
    "start-twice": _start_twice,
    "msg2-after-done": _msg2_to_done_initiator,
    "auth-type-on-the-wire": _unknown_type,
    "empty-message": _empty,
}


@pytest.mark.parametrize("case", OUT_OF_ORDER, ids=list(OUT_OF_ORDER))
def test_out_of_order_or_unknown_messages_fail_closed(case: str) -> None:
    machine, action, match = OUT_OF_ORDER[case]()
    with pytest.raises(HandshakeError, match=match):
        action()
    assert_failed_closed(machine)


# --- framing: truncated and extended -------------------------------------------------


def _messages() -> tuple[bytes, bytes, bytes]:
    return run(initiator(), responder())


@pytest.mark.parametrize("which", [0, 1, 2], ids=["msg1", "msg2", "msg3"])
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m[:-1], "field '(ephemeral|nonce|sealed)' runs past the end"),
        (lambda m: m[:1], "truncated before field"),
        (lambda m: m + b"\x00", "1 trailing bytes"),
        (lambda m: m + m, r"trailing bytes|exceeds the limit"),
    ],
    ids=["minus-one-byte", "type-byte-only", "plus-one-byte", "doubled"],
)
def test_truncated_or_extended_messages_are_malformed(
    which: int, edit: Callable[[bytes], bytes], match: str
) -> None:
    messages = _messages()
    i, r = initiator(), responder()
    msg1 = i.start()
    victim: Initiator | Responder
    if which == 0:
        victim, feed = r, r.receive
    elif which == 1:
        victim, feed = i, i.receive
        assert r.receive(msg1) == messages[1]
    else:
        victim, feed = r, r.receive
        r.receive(msg1)
        i.receive(messages[1])
    name = ["handshake-init", "handshake-response", "handshake-finish"][which]
    with pytest.raises(HandshakeError, match=f"malformed {name}: .*({match})"):
        feed(edit(messages[which]))
    assert_failed_closed(victim)


# --- version, suite, downgrade -------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("version", 2, "unsupported protocol version 2"),
        ("version", 0, "unsupported protocol version 0"),
        ("suite", 2, "unsupported cipher suite 2"),
    ],
    ids=["version-2", "version-0", "suite-2"],
)
def test_edited_version_or_suite_is_refused(field: str, value: int, match: str) -> None:
    fields = HANDSHAKE_INIT.decode(initiator().start())
    fields[field] = value
    r = responder()
    with pytest.raises(HandshakeError, match=match):
        r.receive(HANDSHAKE_INIT.encode(fields))
    assert_failed_closed(r)


@pytest.mark.parametrize("field", ["version", "suite", "nonce"])
def test_edited_msg1_is_a_transcript_mismatch_even_if_the_responder_accepts_it(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Downgrade: a responder that would also speak 'version 2' must not be talked into it.

    The responder is made permissive; the initiator still notices, because msg1's
    exact bytes are in TH and TH is the salt of the key that seals msg2.
    """
    monkeypatch.setattr(handshake, "SUPPORTED_VERSIONS", frozenset({1, 2}))
    monkeypatch.setattr(handshake, "SUPPORTED_SUITES", frozenset({1, 2}))
    i, r = initiator(), responder()
    fields = HANDSHAKE_INIT.decode(i.start())
    fields[field] = 2 if field != "nonce" else bytes(32)
    msg2 = r.receive(HANDSHAKE_INIT.encode(fields))
    assert msg2 is not None
    with pytest.raises(HandshakeError, match="handshake-response does not authenticate"):
        i.receive(msg2)
    assert_failed_closed(i)


# --- low-order X25519 points ---------------------------------------------------------


@pytest.mark.parametrize("point", LOW_ORDER_ENCODINGS.values(), ids=list(LOW_ORDER_ENCODINGS))
def test_low_order_initiator_ephemeral_is_refused(point: bytes) -> None:
    msg1 = HANDSHAKE_INIT.encode({"version": 1, "suite": 1, "ephemeral": point, "nonce": nonce()})
    r = responder()
    with pytest.raises(HandshakeError, match="low-order point"):
        r.receive(msg1)
    assert_failed_closed(r)


@pytest.mark.parametrize("point", LOW_ORDER_ENCODINGS.values(), ids=list(LOW_ORDER_ENCODINGS))
def test_low_order_responder_ephemeral_is_refused(point: bytes) -> None:
    i = initiator()
    i.start()
    msg2 = HANDSHAKE_RESPONSE.encode({"ephemeral": point, "sealed": bytes(123)})
    with pytest.raises(HandshakeError, match="low-order point"):
        i.receive(msg2)
    assert_failed_closed(i)


# --- every single-byte edit fails, somewhere ----------------------------------------


def test_every_byte_of_every_message_is_bound() -> None:
    """Flip each byte of each message in turn: the handshake never completes."""
    honest = _messages()
    for which in range(3):
        for position in range(len(honest[which])):
            i, r = initiator(), responder()
            msgs = list(honest)
            edited = bytearray(msgs[which])
            edited[position] ^= 0x01
            msgs[which] = bytes(edited)
            with pytest.raises(HandshakeError):
                i.start()
                msg2 = r.receive(msgs[0])
                if which > 0:
                    msg2 = msgs[1]
                assert msg2 is not None
                msg3 = i.receive(msg2)
                r.receive(msgs[2] if which == 2 else msg3)
            assert State.ERROR in (i.state, r.state), (which, position)
            assert not (i.complete and r.complete)


# --- fuzzing -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_into_a_fresh_responder(data: bytes) -> None:
    r = responder()
    with pytest.raises(P2PTransferError):
        r.receive(data)
    assert r.state is State.ERROR


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_into_a_responder_awaiting_msg3(data: bytes) -> None:
    i, r = initiator(), responder()
    r.receive(i.start())
    with pytest.raises(P2PTransferError):
        r.receive(data)
    assert r.state is State.ERROR


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_into_an_initiator(data: bytes) -> None:
    i = initiator()
    i.start()
    with pytest.raises(P2PTransferError):
        i.receive(data)
    assert i.state is State.ERROR


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0x01, 0x02, 0x03]), st.binary(min_size=1, max_size=200))
def test_random_bodies_behind_valid_type_bytes(type_id: int, body: bytes) -> None:
    i, r = initiator(), responder()
    i.start()
    with pytest.raises(P2PTransferError):
        i.receive(bytes([type_id]) + body)
    with pytest.raises(P2PTransferError):
        r.receive(bytes([type_id]) + body)
