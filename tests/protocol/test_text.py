"""protocol/text.py: the one rule for display text, and escaping for the terminal."""

from __future__ import annotations

import pytest

from p2ptransfer.errors import InputError, MemoError
from p2ptransfer.protocol.text import (
    check_display_text,
    display_text_problem,
    escape_for_terminal,
)

# --- escape_for_terminal -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2K\x1b[1G out 12.50 EUR [completed]", "\\x1b[2K\\x1b[1G out 12.50 EUR [completed]"),
        ("a\nb\rc\td\x00", "a\\x0ab\\x0dc\\x09d\\x00"),
        ("del\x7f", "del\\x7f"),
        ("csi\x9b2J nel\x85", "csi\\x9b2J nel\\x85"),
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("lone \ud800", "lone \\ud800"),
    ],
    ids=["erase-line", "c0", "del", "c1", "override", "isolates", "marks", "separators",
         "zero-width", "tag", "surrogate"],
)  # fmt: skip
def test_escape_makes_every_dangerous_character_visible(raw: str, shown: str) -> None:
    assert escape_for_terminal(raw) == shown


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ascii",
        "Miete für März \u2013 12,50 €",
        "إيجار شهر",
        "🏠 [red]x[/red] :smile:",
        "a\u00a0b",
    ],
    ids=["empty", "ascii", "latin", "arabic", "emoji-and-markup", "no-break-space"],
)
def test_escape_leaves_ordinary_text_alone(text: str) -> None:
    assert escape_for_terminal(text) == text


# --- check_display_text --------------------------------------------------------------


def test_check_display_text_returns_the_text_unchanged() -> None:
    assert check_display_text("Zoë", what="the name", max_chars=64) == "Zoë"


def test_check_display_text_raises_the_given_error_class() -> None:
    with pytest.raises(MemoError) as info:
        check_display_text("a\u200db", what="memo", max_chars=280, error=MemoError)
    assert str(info.value) == (
        "memo contains a forbidden character U+200D (ZERO WIDTH JOINER) at position 2: "
        "control, invisible and text-direction characters are not allowed"
    )


def test_check_display_text_counts_characters() -> None:
    with pytest.raises(InputError) as info:
        check_display_text("x" * 65, what="the name", max_chars=64)
    assert str(info.value) == "the name is 65 characters; at most 64 are allowed"


def test_newline_only_when_allowed() -> None:
    assert display_text_problem("a\nb", what="a note", max_chars=10, allow_newline=True) is None
    assert display_text_problem("a\nb", what="a note", max_chars=10) == (
        "a note contains a forbidden character U+000A (control character) at position 2: "
        "control, invisible and text-direction characters are not allowed"
    )
    problem = display_text_problem("a\rb", what="a note", max_chars=10, allow_newline=True)
    assert problem is not None and "U+000D" in problem


@pytest.mark.parametrize(
    "filler",
    ["\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f", "\u17b4", "\u17b5",
     "\u180b", "\u180c", "\u180d", "\u180e", "\u180f", "\ufe00", "\ufe0f", "\U000e0100",
     "\U000e01ef"],
)  # fmt: skip
def test_blank_fillers_are_refused(filler: str) -> None:
    problem = display_text_problem(f"x{filler}y", what="the name", max_chars=64)
    assert problem is not None
    assert problem.startswith(f"the name contains a forbidden character U+{ord(filler):04X} (")
    assert "at position 2" in problem


def test_combining_marks_at_most_four_in_a_row() -> None:
    four = "q\u0300\u0301\u0302\u0303"
    assert display_text_problem(four + " " + four, what="memo", max_chars=280) is None
    assert display_text_problem(four + "\u0304", what="memo", max_chars=280) == (
        "memo has more than 4 combining marks in a row at position 6"
    )


def test_unassigned_and_private_use_are_refused() -> None:
    for ch, shown in (("\ue000", "U+E000 (private-use character)"), ("\U0010fffd", "U+10FFFD")):
        problem = display_text_problem(ch, what="x", max_chars=5)
        assert problem is not None and shown in problem
    problem = display_text_problem("\U000e0080", what="x", max_chars=5)
    assert problem is not None and "U+E0080 (unassigned character)" in problem


def test_not_text_is_refused() -> None:
    assert display_text_problem(b"x", what="memo", max_chars=5) == "memo must be text"  # type: ignore[arg-type]
