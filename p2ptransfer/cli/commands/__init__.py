"""The command families; each module has ``register_commands(group)``."""

from __future__ import annotations

import unicodedata

from ...errors import InputError

MAX_NAME_CHARS = 64


def check_name(name: str, what: str = "a name") -> str:
    """A display name: 1-64 characters, none of them control or invisible.

    Names are shown in terminals next to amounts, so the characters that can
    rewrite a line or reorder text are refused, as in memos.
    """
    stripped = name.strip()
    if not stripped:
        raise InputError(f"{what} cannot be empty")
    if len(stripped) > MAX_NAME_CHARS:
        raise InputError(f"{what} has {len(stripped)} characters; at most {MAX_NAME_CHARS}")
    for ch in stripped:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise InputError(
                f"{what} contains the character U+{ord(ch):04X}: "
                "control and invisible characters are not allowed"
            )
    return unicodedata.normalize("NFC", stripped)
