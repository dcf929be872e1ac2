"""The relay protocol's sizes, its URL rule and its rule for free text, without cryptography.

Kept apart from :mod:`.relay_wire` so that the relay's settings (and the
``relay`` command's help) and its log formatter load without pulling in the
crypto and codec modules; :mod:`.relay_wire` re-exports everything here.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit

from ..errors import InputError

__all__ = [
    "MAX_ENVELOPE_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MAX_RELAY_URLS",
    "MAX_URL_SIZE",
    "escape_text",
    "first_unsafe_char",
    "normalize_relay_url",
    "split_relay_urls",
]

MAX_PAYLOAD_SIZE = 60 * 1024
"""Largest opaque payload in one Send/Deliver."""
MAX_FRAME_SIZE = 64 * 1024
"""Largest frame either side sends; websocket max_size is set to this by default."""
MAX_URL_SIZE = 512
MAX_ENVELOPE_SIZE = 8 * 1024
"""Largest envelope a Deposit or Mail frame carries; a relay may set a lower limit."""


def normalize_relay_url(url: str) -> str:
    """The one spelling of a relay URL that signatures are made over.

    ``scheme://host:port/path`` with the scheme and host lower-cased, the port
    always explicit (80 for ws, 443 for wss), an IPv6 host in brackets, the
    path defaulting to ``/``; no user info, query or fragment. So
    ``WS://LocalHost:8765`` and ``ws://localhost:8765/`` sign the same bytes.
    """
    if type(url) is not str or len(url) > MAX_URL_SIZE:
        raise InputError("not a relay URL: not text of at most 512 characters")
    if not url.isascii() or not url.isprintable():
        # The URL is echoed in errors and logs: no escape sequences, no bidi tricks.
        raise InputError(f"not a relay URL: '{escape_text(url)}' (only printable ASCII)")
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


MAX_RELAY_URLS = 16
"""Relays one ``--relay`` list may name (the nodes of one cluster)."""


def split_relay_urls(text: str) -> tuple[str, ...]:
    """The relay URLs in ``--relay``'s comma-separated ``text``, each checked, in order.

    Several URLs name the nodes of one cluster: a peer connects to the first
    that answers and moves on to the next when its connection is lost.
    Repeats are dropped (by their normal spelling); an empty item is an error.
    """
    if type(text) is not str:
        raise InputError("not a relay URL: not text")
    items = [item.strip() for item in text.split(",")]
    if len(items) > MAX_RELAY_URLS:
        raise InputError(f"at most {MAX_RELAY_URLS} relay URLs, comma-separated")
    urls: list[str] = []
    seen: set[str] = set()
    for item in items:
        if not item:
            raise InputError(f"an empty relay URL in {escape_text(text)!r} (a stray comma?)")
        normal = normalize_relay_url(item)
        if normal not in seen:
            seen.add(normal)
            urls.append(item)
    return tuple(urls)


# Characters that can rewrite or reorder what a terminal or a log viewer shows:
# C0/C1 controls (ESC, CR, BS…), format characters (bidi overrides and isolates,
# zero-width joiners), line and paragraph separators, surrogates, private-use
# and unassigned code points.
_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def first_unsafe_char(text: str) -> str | None:
    """The first control, bidi/format or separator character of ``text``, if any."""
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            return ch
    return None


def escape_text(text: str) -> str:
    r"""``text`` with every unsafe character shown as a visible escape.

    ``\x1b`` for a control below U+0100, ``\u202e`` up to U+FFFF,
    ``\U000e0001`` beyond. Backslashes are left alone, so escaping twice
    changes nothing more (text is escaped at each layer it crosses). Safe text
    comes back unchanged (the same object).
    """
    if first_unsafe_char(text) is None:
        return text
    out: list[str] = []
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            code = ord(ch)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)
