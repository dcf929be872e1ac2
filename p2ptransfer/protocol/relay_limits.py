"""The relay protocol's sizes and its URL rule, without cryptography.

Kept apart from :mod:`.relay_wire` so that the relay's settings (and the
``relay`` command's help) load without pulling in the crypto and codec
modules; :mod:`.relay_wire` re-exports everything here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import InputError

__all__ = ["MAX_FRAME_SIZE", "MAX_PAYLOAD_SIZE", "MAX_URL_SIZE", "normalize_relay_url"]

MAX_PAYLOAD_SIZE = 60 * 1024
"""Largest opaque payload in one Send/Deliver."""
MAX_FRAME_SIZE = 64 * 1024
"""Largest frame either side sends; websocket max_size is set to this by default."""
MAX_URL_SIZE = 512


def normalize_relay_url(url: str) -> str:
    """The one spelling of a relay URL that signatures are made over.

    ``scheme://host:port/path`` with the scheme and host lower-cased, the port
    always explicit (80 for ws, 443 for wss), an IPv6 host in brackets, the
    path defaulting to ``/``; no user info, query or fragment. So
    ``WS://LocalHost:8765`` and ``ws://localhost:8765/`` sign the same bytes.
    """
    if type(url) is not str or not url.isascii() or len(url) > MAX_URL_SIZE:
        raise InputError(f"not a relay URL: {url!r}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InputError(f"not a relay URL: {url!r} ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise InputError(f"a relay URL starts with ws:// or wss://, not {url!r}")
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise InputError(f"a relay URL needs a host and no user name: {url!r}")
    if parts.query or parts.fragment:
        raise InputError(f"a relay URL has no query or fragment: {url!r}")
    if port is None:
        port = 80 if scheme == "ws" else 443
    if ":" in host:
        host = f"[{host}]"
    normal = f"{scheme}://{host}:{port}{parts.path or '/'}"
    if len(normal) > MAX_URL_SIZE:
        raise InputError("relay URL too long")
    return normal
