"""Text that people see: one rule for what may be stored, one for how it is shown.

Everything here is about *display spoofing*. Amounts, names and memos are
shown side by side in a terminal, and a terminal obeys what it is given:

* control characters (C0, DEL, C1) move the cursor, erase lines and change
  colours: ``ESC[2K ESC[1G`` wipes an error message and a forged
  "[completed]" line takes its place;
* bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F,
  U+061C) reorder what is *displayed* without changing the bytes, so
  "refund 100" can be made to read as something else ("Trojan Source");
* line and paragraph separators (U+2028, U+2029) start new lines where no
  newline is visible;
* invisible characters (other format characters such as U+200B, "filler"
  letters that render blank, variation selectors) and piles of combining marks
  ("Zalgo") make two different strings look alike, or hide or smear text.

Two functions, for the two sides of that problem:

* :func:`check_display_text` decides whether text we are about to *accept*
  (a memo in a signed transfer, a display name, a note) is allowed at all; it
  refuses, with a sentence saying which character at which position, and
  changes nothing.
* :func:`escape_for_terminal` is for text we *show* that came from somewhere
  else (a relay's error detail or close reason, a peer's memo, a ledger
  written by an older version): it never refuses, it makes every dangerous
  character visible as ``\\x1b`` / ``\\u202e``, so what reaches the terminal
  is inert. The CLI calls it in one place for everything it prints.

Pure functions over ``str``: no I/O, usable from every layer.
"""

from __future__ import annotations

import unicodedata

from ..errors import InputError

__all__ = [
    "MAX_COMBINING_RUN",
    "check_display_text",
    "display_text_problem",
    "escape_for_terminal",
    "is_unsafe_for_terminal",
]

MAX_COMBINING_RUN = 4
"""Most combining marks allowed in a row; real scripts stay within it, Zalgo does not."""

# Explicit list, so the rules do not depend only on the Unicode database of the
# running Python: the bidirectional formatting characters and the line and
# paragraph separators (all of them Cf, Zl or Zp today).
_BIDI_AND_SEPARATORS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)

# Characters of other categories (letters, marks, symbols) that render as nothing
# or as blank space: Hangul fillers, the braille blank, the combining grapheme
# joiner, Khmer inherent vowels, Mongolian free variation selectors and vowel
# separator, and the variation selectors.
_FILLERS = frozenset(
    (
        *(0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x034F, 0x17B4, 0x17B5),
        *range(0x180B, 0x1810),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    )
)

# Categories refused in display text: control, format, surrogate, unassigned,
# private use, line separator, paragraph separator.
_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"))
# Categories escaped when shown: those a terminal may act on or cannot print.
_ESCAPED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_COMBINING_CATEGORIES = frozenset(("Mn", "Me"))
_UNNAMED = {
    "Cc": "control character",
    "Cs": "lone surrogate",
    "Cn": "unassigned character",
    "Co": "private-use character",
}


def _char_name(ch: str) -> str:
    return unicodedata.name(ch, "") or _UNNAMED.get(unicodedata.category(ch), "unnamed character")


def display_text_problem(
    text: str, *, what: str, max_chars: int, allow_newline: bool = False
) -> str | None:
    """Why ``text`` may not be shown to people as it is, in one sentence; None if it may.

    Refused: more than ``max_chars`` characters; control (Cc, so also tab and
    escape; a newline only with ``allow_newline``), format (Cf: zero-width
    characters, joiners, bidi controls, tags), surrogate (Cs), unassigned (Cn),
    private-use (Co), line and paragraph separators (Zl, Zp), the characters
    that render blank (see module docstring), and more than
    :data:`MAX_COMBINING_RUN` combining marks in a row.

    The length is checked first, on the character count, so a huge input is
    refused before any per-character work.
    """
    if not isinstance(text, str):
        return f"{what} must be text"
    if len(text) > max_chars:
        return f"{what} is {len(text)} characters; at most {max_chars} are allowed"
    if text.isascii() and text.isprintable():
        return None  # the common case, decided in C: printable ASCII is all allowed
    run = 0
    for position, ch in enumerate(text, start=1):
        if ch == "\n" and allow_newline:
            run = 0
            continue
        category = unicodedata.category(ch)
        if ch in _BIDI_AND_SEPARATORS or category in _REFUSED_CATEGORIES:
            return (
                f"{what} contains a forbidden character U+{ord(ch):04X} ({_char_name(ch)}) "
                f"at position {position}: control, invisible and text-direction characters "
                "are not allowed"
            )
        if ord(ch) in _FILLERS:
            return (
                f"{what} contains a forbidden character U+{ord(ch):04X} ({_char_name(ch)}) "
                f"at position {position}: characters that show as blank space are not allowed"
            )
        if category in _COMBINING_CATEGORIES:
            run += 1
            if run > MAX_COMBINING_RUN:
                return (
                    f"{what} has more than {MAX_COMBINING_RUN} combining marks in a row "
                    f"at position {position}"
                )
        else:
            run = 0
    return None


def check_display_text(
    text: str,
    *,
    what: str,
    max_chars: int,
    allow_newline: bool = False,
    error: type[InputError] = InputError,
) -> str:
    """Return ``text`` unchanged if :func:`display_text_problem` finds nothing; else raise.

    ``error`` is the :class:`~p2ptransfer.errors.InputError` subclass to raise
    (MemoError for memos), with the problem as its message. Normalisation
    (NFC, stripping) is the caller's: what is checked is exactly what was given.
    """
    problem = display_text_problem(
        text, what=what, max_chars=max_chars, allow_newline=allow_newline
    )
    if problem is not None:
        raise error(problem)
    return text


def is_unsafe_for_terminal(ch: str) -> bool:
    """Whether a terminal could act on ``ch`` (or not print it): it must be shown escaped."""
    return ch in _BIDI_AND_SEPARATORS or unicodedata.category(ch) in _ESCAPED_CATEGORIES


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_for_terminal(text: str) -> str:
    """``text`` with every character a terminal could act on written out visibly.

    Control characters (C0 including newline and tab, DEL, C1), format
    characters (bidi controls, zero-width characters), lone surrogates and the
    line and paragraph separators become ``\\x1b``, ``\\u202e`` or
    ``\\U000e0001``, as Python writes them; everything else is unchanged. For
    text from the network or from another person, whatever it is: it never
    fails. (A backslash is left as it is, so an escape shown is not
    distinguishable from one typed; what matters is that neither acts.)
    """
    if text.isprintable():
        return text  # decided in C: no Cc, Cf, Cs, Zl or Zp anywhere (nor Zs, Co, Cn)
    return "".join(_escaped(ch) if is_unsafe_for_terminal(ch) else ch for ch in text)
