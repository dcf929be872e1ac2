"""Talk to ``python -m p2ptransfer`` through a real pseudo-terminal, prompt by prompt.

Hidden prompts (getpass) flush whatever was typed ahead when they turn echo
off, so each answer is typed only after its prompt has appeared on stderr.
The child gets a session of its own: it has no controlling terminal, so
getpass reads the pseudo-terminal on stdin and can never reach the terminal
the tests themselves run in. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
STEP_TIMEOUT = 30.0


@dataclass
class _Collected:
    chunks: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def text(self) -> str:
        with self.lock:
            return b"".join(self.chunks).decode("utf-8", "replace")


def _pump(stream: IO[bytes], into: _Collected) -> None:
    while chunk := stream.read1(4096):  # type: ignore[attr-defined]
        with into.lock:
            into.chunks.append(chunk)


def converse(
    args: list[str], env: dict[str, str], steps: list[tuple[str, str]]
) -> subprocess.CompletedProcess[str]:
    """Run ``p2ptransfer ARGS``; per (prompt, answer): wait for prompt on stderr, type answer."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2ptransfer", *args],
        cwd=ROOT,
        env=env,
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(secondary)
    out, err = _Collected(), _Collected()
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        seen = 0
        for prompt, answer in steps:
            deadline = time.monotonic() + STEP_TIMEOUT
            while (at := err.text().find(prompt, seen)) < 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"no prompt {prompt!r}; stderr so far: {err.text()!r}")
                time.sleep(0.02)
            seen = at + len(prompt)
            os.write(primary, answer.encode() + b"\n")
        proc.wait(timeout=STEP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pump in pumps:
            pump.join(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
        os.close(primary)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.text(), err.text())


def child_env(**extra: str) -> dict[str, str]:
    """This environment without P2PTRANSFER_* settings, cheap keys, no colour, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PTRANSFER_")}
    env.pop("FORCE_COLOR", None)
    env.update(P2PTRANSFER_KDF_LOG_N="10", NO_COLOR="1", PYTHONUNBUFFERED="1", **extra)
    return env


def on_terminal(
    args: list[str],
    env: dict[str, str],
    *,
    columns: int,
    steps: list[tuple[str, Callable[[int], None]]],
) -> tuple[int, str]:
    """Run ``p2ptransfer ARGS`` with stdin, stdout and stderr on one pseudo-terminal.

    The terminal is ``columns`` wide. Per (text, action): wait until ``text``
    has been written, then call ``action`` with the child's pid (Ctrl-C: :func:`interrupt`).
    Returns the exit code and everything written, escape sequences included.
    """
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2ptransfer", *args],
        cwd=ROOT,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    written = bytearray()

    def read(timeout: float) -> None:
        ready, _, _ = select.select([primary], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):  # EIO: the child closed the terminal
                written.extend(os.read(primary, 65536))

    try:
        for text, action in steps:
            deadline = time.monotonic() + STEP_TIMEOUT
            while text.encode() not in written:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"no {text!r} on the terminal: {bytes(written)!r}")
                read(0.05)
            action(proc.pid)
        deadline = time.monotonic() + STEP_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            read(0.05)
        read(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(primary)
    return proc.returncode, written.decode("utf-8", "replace")


def interrupt(pid: int) -> None:
    """An action for :func:`on_terminal`: Ctrl-C, to the child's process group."""
    os.killpg(pid, signal.SIGINT)


_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(written: str, columns: int) -> list[str]:
    """What a terminal ``columns`` wide shows after ``written``: the lines, right-trimmed.

    Just enough of a terminal for rich's Live display: text, CR, LF, cursor
    up (``ESC [ n A``) and erase line (``ESC [ 2 K``); colours and other
    sequences are ignored, a long line wraps.
    """
    lines: list[list[str]] = [[]]
    row = col = 0
    at = 0
    while at < len(written):
        match = _CSI.match(written, at)
        if match is not None:
            at = match.end()
            if match.group(2) == "A":
                row = max(0, row - int(match.group(1) or 1))
            elif match.group(2) == "K":
                lines[row] = []
            continue
        ch = written[at]
        at += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
        elif ch >= " ":
            if col >= columns:
                row, col = row + 1, 0
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col - len(line) + 1))
            line[col] = ch
            col += 1
        while len(lines) <= row:
            lines.append([])
    return ["".join(line).rstrip() for line in lines]
