"""Option checks that refuse bad input before anything starts."""

from __future__ import annotations

import pytest

from .conftest import Invoke, Person, snapshot

# --- float options: finite only -------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "infinity"])
@pytest.mark.parametrize(
    "command",
    [("send", "bob", "1", "EUR"), ("receive",), ("resend",)],
    ids=["send", "receive", "resend"],
)
def test_timeout_refuses_nan_and_infinity(
    invoke: Invoke, alice: Person, value: str, command: tuple[str, ...]
) -> None:
    before = snapshot(alice.home)
    run = invoke(*alice.args(command[0], "--timeout", value, *command[1:]), passphrase=None)
    assert run.code == 2, run
    assert f"Invalid value for '--timeout': {value!r} is not a finite number of seconds" in run.err
    assert snapshot(alice.home) == before


def test_timeout_range_still_applies(invoke: Invoke, alice: Person) -> None:
    run = invoke(*alice.args("receive", "--timeout", "0"), passphrase=None)
    assert run.code == 2
    assert "Invalid value for '--timeout': 0.0 is not in the range 0.1<=x<=86400." in run.err
