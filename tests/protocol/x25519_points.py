"""The X25519 points of small order, written once for every test that feeds them to us.

u-coordinates of the points of small order on curve25519 (and their
non-canonical encodings u + p), from the list at https://cr.yp.to/ecdh.html
("How do I validate Curve25519 public keys?") and libsodium. Each makes the
X25519 output all zero whatever the (clamped) scalar: a peer sending one
would force a known shared secret.
"""

from __future__ import annotations

__all__ = ["LOW_ORDER_ENCODINGS"]

_P25519 = 2**255 - 19

_LOW_ORDER_U = {
    "zero": 0,
    "one": 1,
    "order-8-a": 325606250916557431795983626356110631294008115727848805560023387167927233504,
    "order-8-b": 39382357235489614581723060781553021112529911719440698176882885853963445705823,
    "p-minus-1": _P25519 - 1,
    "p": _P25519,
    "p-plus-1": _P25519 + 1,
}
LOW_ORDER_ENCODINGS = {name: u.to_bytes(32, "little") for name, u in _LOW_ORDER_U.items()} | {
    # RFC 7748 §5: the top bit of a u-coordinate is ignored, so setting it
    # must not smuggle a low-order point past the check.
    f"{name}-high-bit": (u | 1 << 255).to_bytes(32, "little")
    for name, u in _LOW_ORDER_U.items()
}
"""Name -> 32-byte little-endian encoding: 7 points, each also with the top bit set."""
