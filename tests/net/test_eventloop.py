"""net/eventloop.py: uvloop when installed and wanted, else asyncio's loop; a bad switch refused."""

from __future__ import annotations

import asyncio

import pytest

from p2ptransfer.errors import InputError
from p2ptransfer.net.eventloop import UVLOOP_ENV, run, uvloop_wanted


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize("value", ["0", "false", "no", "off", " OFF "])
def test_switch_off_runs_the_standard_loop(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(UVLOOP_ENV, value)
    assert not uvloop_wanted()
    assert run(_loop_module()).startswith("asyncio.")


@pytest.mark.parametrize("value", [None, "", "1", "on"])
def test_switch_on_runs_uvloop(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    pytest.importorskip("uvloop")
    if value is None:
        monkeypatch.delenv(UVLOOP_ENV, raising=False)
    else:
        monkeypatch.setenv(UVLOOP_ENV, value)
    assert uvloop_wanted()
    assert run(_loop_module()).startswith("uvloop")


def test_run_returns_the_coroutines_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UVLOOP_ENV, "0")

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run(answer()) == 42


def test_unknown_value_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UVLOOP_ENV, "fast")
    started = []

    async def body() -> None:
        started.append(True)

    with pytest.raises(InputError, match="P2PTRANSFER_UVLOOP='fast'"):
        run(body())
    assert started == []
