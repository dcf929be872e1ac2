"""The relay wire protocol: frames between a peer and the rendezvous relay (sans-I/O).

Every frame is one binary websocket message holding one canonically encoded
message (:mod:`.encoding`, type ids 0x30-0x3F). The conversation::

    relay -> peer   Challenge{challenge}                       right after the upgrade
    peer  -> relay  Auth{public_key, signature, relay_url}     within the auth timeout
    relay -> peer   AuthOk{address}                            the address is now registered
    then, in any order:
    peer  -> relay  Send{ref, to, payload}      -> Deliver{sender, payload} to every connection
                                                   of ``to``; Offline{ref, to} back if none
    peer  -> relay  Watch{ref, address}         -> Online{address} now or when it connects
    peer  -> relay  Claim{ref, handle}          -> ClaimOk{ref, handle} | Refused{ref, ...}
    peer  -> relay  Lookup{ref, handle}         -> LookupResult{ref, handle, address}
                                                   | HandleUnknown{ref, handle}
    peer  -> relay  Release{ref, handle}        -> Released{ref, handle} | Refused{ref, ...}
    relay -> peer   Refused{ref, request, reason, detail}   a request was not carried out

Mail (store and forward, type ids 0x40-0x4F, :mod:`.relay_mail_wire`)::

    relay -> peer   MailInfo{max_mail_age_ms, max_envelope}    once, right after AuthOk
    peer  -> relay  PublishPrekey{ref, signed_prekey}          -> Prekeys{ref, me, newest two}
    peer  -> relay  GetPrekeys{ref, address}                   -> Prekeys{ref, address, 0-2}
    peer  -> relay  Deposit{ref, to, slot, envelope}           -> Deposited{ref, slot} once durable
    relay -> peer   Mail{sender, slot, envelope, deposited_at} on connect (oldest first), on arrival
    peer  -> relay  Ack{ref, sender, slot, envelope_hash}      -> Acked{ref, slot}

The authentication signature covers a context string, the relay URL the peer
dialled, the relay's fresh challenge and the public key (:func:`auth_message`):
the challenge stops a recorded answer being replayed on a later connection,
the URL stops an answer made for one relay being replayed at another (NIP-42
style). It only proves the peer holds the key of the address it registers;
end-to-end authentication is the session handshake's job.

Free text (``Refused.detail``, ``Auth.relay_url``) is bounded and may hold no
control, bidi or separator character: the decoder refuses such a frame, so a
hostile relay or peer cannot hand escape sequences to a terminal or a log
through it.

The frames live by job in :mod:`.relay_frame` (the base every frame shares,
the field kinds, the auth message), :mod:`.relay_forward_wire` (0x30-0x3F)
and :mod:`.relay_mail_wire` (0x40-0x4F). This module gathers their public
names, so callers import from here, and owns the decoding, the forwarding
fast path and the authentication answer.

This module makes no randomness and does no I/O: the relay passes its
challenge in, the client passes its identity in.
"""

from __future__ import annotations

import struct
from typing import Any, TypeAlias

from ..errors import DecodeError, P2PTransferError, ProtocolError
from .encoding import Schema
from .identity import ADDRESS_LENGTH, Identity, PublicIdentity, encode_address
from .relay_forward_wire import (
    Auth,
    AuthOk,
    Challenge,
    Claim,
    ClaimOk,
    Deliver,
    HandleUnknown,
    Lookup,
    LookupResult,
    Offline,
    Online,
    Refused,
    Release,
    Released,
    Send,
    Watch,
)
from .relay_frame import (
    AUTH_CONTEXT,
    CHALLENGE_SIZE,
    HANDLE_PATTERN,
    RelayFrame,
    auth_message,
    check_address,
    check_handle,
)
from .relay_limits import (
    MAX_ENVELOPE_SIZE,
    MAX_FRAME_SIZE,
    MAX_PAYLOAD_SIZE,
    MAX_URL_SIZE,
    escape_text,
    first_unsafe_char,
    normalize_relay_url,
)
from .relay_mail_wire import (
    ENVELOPE_HASH_SIZE,
    MAX_PREKEYS,
    MAX_SIGNED_PREKEY_SIZE,
    SLOT_SIZE,
    Ack,
    Acked,
    Deposit,
    Deposited,
    GetPrekeys,
    Mail,
    MailInfo,
    Prekeys,
    PublishPrekey,
)

__all__ = [
    "AUTH_CONTEXT",
    "CHALLENGE_SIZE",
    "CLIENT_FRAMES",
    "ENVELOPE_HASH_SIZE",
    "HANDLE_PATTERN",
    "MAX_ENVELOPE_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MAX_PREKEYS",
    "MAX_SIGNED_PREKEY_SIZE",
    "MAX_URL_SIZE",
    "SEND_OVERHEAD",
    "SERVER_FRAMES",
    "SLOT_SIZE",
    "Ack",
    "Acked",
    "Auth",
    "AuthOk",
    "Challenge",
    "Claim",
    "ClaimOk",
    "ClientFrame",
    "Deliver",
    "Deposit",
    "Deposited",
    "Frame",
    "GetPrekeys",
    "HandleUnknown",
    "Lookup",
    "LookupResult",
    "Mail",
    "MailInfo",
    "Offline",
    "Online",
    "Prekeys",
    "PublishPrekey",
    "Refused",
    "Release",
    "Released",
    "Send",
    "ServerFrame",
    "Watch",
    "auth_message",
    "check_handle",
    "decode_client_frame",
    "decode_frame",
    "decode_server_frame",
    "deliver_from_send",
    "deliver_header",
    "escape_text",
    "first_unsafe_char",
    "make_auth",
    "normalize_relay_url",
    "send_recipient",
    "verify_auth",
]

ClientFrame: TypeAlias = (
    Auth | Send | Watch | Claim | Lookup | Release | PublishPrekey | GetPrekeys | Deposit | Ack
)
ServerFrame: TypeAlias = (
    Challenge
    | AuthOk
    | Deliver
    | Offline
    | Online
    | ClaimOk
    | LookupResult
    | HandleUnknown
    | Released
    | Refused
    | Prekeys
    | Deposited
    | Mail
    | Acked
    | MailInfo
)
Frame: TypeAlias = ClientFrame | ServerFrame

CLIENT_FRAMES: dict[int, type[RelayFrame]] = {
    cls.SCHEMA.type_id: cls
    for cls in (Auth, Send, Watch, Claim, Lookup, Release, PublishPrekey, GetPrekeys, Deposit, Ack)
}
SERVER_FRAMES: dict[int, type[RelayFrame]] = {
    cls.SCHEMA.type_id: cls
    for cls in (
        Challenge,
        AuthOk,
        Deliver,
        Offline,
        Online,
        ClaimOk,
        LookupResult,
        HandleUnknown,
        Released,
        Refused,
        Prekeys,
        Deposited,
        Mail,
        Acked,
        MailInfo,
    )
}


def _decode(data: bytes, table: dict[int, type[RelayFrame]], side: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"a {side} frame is binary")
    data = bytes(data)
    if len(data) > MAX_FRAME_SIZE:
        raise DecodeError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_SIZE}")
    cls = table.get(Schema.peek_type(data))
    if cls is None:
        raise DecodeError(f"type {data[0]:#04x} is not a {side} frame")
    values = cls.SCHEMA.decode(data)
    try:
        return cls.from_values(values)
    except DecodeError:
        raise
    except (ValueError, P2PTransferError) as exc:
        raise DecodeError(f"{cls.SCHEMA.name}: {exc}") from exc


def decode_client_frame(data: bytes) -> ClientFrame:
    """Decode a frame a peer sent to the relay; anything else is a DecodeError."""
    frame: ClientFrame = _decode(data, CLIENT_FRAMES, "peer-to-relay")
    return frame


def decode_server_frame(data: bytes) -> ServerFrame:
    """Decode a frame the relay sent to a peer; anything else is a DecodeError."""
    frame: ServerFrame = _decode(data, SERVER_FRAMES, "relay-to-peer")
    return frame


def decode_frame(data: bytes) -> Frame:
    """Decode any relay frame (both directions), for tools and tests."""
    frame: Frame = _decode(data, {**CLIENT_FRAMES, **SERVER_FRAMES}, "relay")
    return frame


# --- forwarding fast path -----------------------------------------------------
#
# Almost every frame a relay handles is a Send to forward as a Deliver. Both
# frames have fixed layouts up to the payload, and their payload length fields
# are the same four bytes, so the relay need not decode and re-encode them:
#
#   Send     33 | 01 00000004 ref | 02 00000040 to[64]     | 03 len:u32be payload
#   Deliver  34 | 01 00000040 sender[64]                   | 02 len:u32be payload
#
# :func:`send_recipient` checks the Send layout and hands back ``to`` as raw
# bytes; :func:`deliver_header` + the Send's bytes from the length field on is
# then exactly ``Deliver(sender, payload).encode()``. Tests check both against
# the full codec.

_SEND_LAYOUT = struct.Struct(">6s4x5s64sBI")
_SEND_HEAD = bytes([Send.SCHEMA.type_id, 1, 0, 0, 0, 4])
_SEND_TO = bytes([2, 0, 0, 0, ADDRESS_LENGTH])
_SEND_PAYLOAD_TAG = 3
SEND_OVERHEAD = _SEND_LAYOUT.size
"""Bytes of a Send before its payload (84): a Send's payload is ``len(frame) - SEND_OVERHEAD``."""
_SEND_LENGTH_AT = SEND_OVERHEAD - 4
_DELIVER_HEAD = bytes([Deliver.SCHEMA.type_id, 1, 0, 0, 0, ADDRESS_LENGTH])


def send_recipient(data: bytes) -> bytes | None:
    """The ``to`` field of ``data``, undecoded, if ``data`` is laid out as a Send; else None.

    The layout check is complete but for the address itself: ``data`` is a
    valid Send exactly when this returns bytes that are a canonical address.
    The relay checks that by finding them among its authenticated addresses
    (all canonical); for anything else it must fall back to
    :func:`decode_client_frame`, which also finds the right error to report.
    """
    size = len(data)
    if size < SEND_OVERHEAD or size > SEND_OVERHEAD + MAX_PAYLOAD_SIZE:
        return None
    head, to_tag, to, payload_tag, length = _SEND_LAYOUT.unpack_from(data)
    if (
        head != _SEND_HEAD
        or to_tag != _SEND_TO
        or payload_tag != _SEND_PAYLOAD_TAG
        or length != size - SEND_OVERHEAD
    ):
        return None
    to_raw: bytes = to
    return to_raw


def deliver_header(sender: str) -> bytes:
    """The first bytes of every Deliver from ``sender``, up to the payload's length field.

    Computed once per authenticated connection; see :func:`deliver_from_send`.
    """
    check_address(sender)
    return _DELIVER_HEAD + sender.encode("ascii") + b"\x02"


def deliver_from_send(header: bytes, send: bytes) -> bytes:
    """``Deliver(sender, payload).encode()`` for a ``send`` that :func:`send_recipient` accepted.

    ``header`` is :func:`deliver_header` of the sender. One copy, no decoding.
    """
    return header + send[_SEND_LENGTH_AT:]


# --- authentication ----------------------------------------------------------


def make_auth(identity: Identity, relay_url: str, challenge: bytes) -> Auth:
    """The peer's answer to ``challenge`` from the relay it dialled at ``relay_url``."""
    url = normalize_relay_url(relay_url)
    public_key = identity.public.public_key
    signature = identity.sign(auth_message(url, challenge, public_key))
    return Auth(public_key=public_key, signature=signature, relay_url=url)


def verify_auth(auth: Auth, challenge: bytes, accepted_urls: frozenset[str]) -> str:
    """The address ``auth`` proves, or ProtocolError/SignatureError saying why not.

    ``accepted_urls`` are the normalised URLs this relay answers to; a
    signature made for any other URL is refused before it is checked.
    """
    if auth.relay_url not in accepted_urls:
        raise ProtocolError(f"signed for another relay URL ({auth.relay_url})")
    PublicIdentity(auth.public_key).verify(
        auth.signature, auth_message(auth.relay_url, challenge, auth.public_key)
    )
    return encode_address(auth.public_key)
