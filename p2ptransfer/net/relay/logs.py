"""Structured logs: one line per event, ``text`` or ``json``; never payloads or secrets.

Log lines carry text that strangers chose (a relay URL an unauthenticated
client signed, close reasons, websockets' own messages). One event is always
exactly one line, and a terminal or log viewer shows what was logged: the text
format escapes every control, bidi and separator character in the message and
in every field (``\x1b``, ``\u202e``; a backslash as ``\\``), as the JSON
format's string escaping already does.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from ...protocol.relay_limits import escape_text

__all__ = ["LOGGER_NAME", "configure_logging", "log_event"]

LOGGER_NAME = "p2ptransfer.relay"
_log = logging.getLogger(LOGGER_NAME)


def log_event(level: int, event: str, message: str = "", **fields: Any) -> None:
    """Log ``event`` with ``fields`` (small scalars: ids, addresses, codes, counts)."""
    if _log.isEnabledFor(level):
        _log.log(level, message or event, extra={"event": event, "fields": fields})


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields: dict[str, Any] = getattr(record, "fields", {})
        event = getattr(record, "event", record.name)
        extra = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        message = escape_text(record.getMessage())
        line = f"{stamp}Z {record.levelname.lower()} {_text(event)}: {message}"
        return f"{line} {extra}" if extra else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.name),
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        return json.dumps(out, separators=(",", ":"), default=str)  # escapes every control


def _text(value: object) -> str:
    """A field value: escaped, and quoted when it holds a space, quote or ``=`` (or is empty)."""
    text = escape_text(str(value))
    if text and not any(c in text for c in ' "='):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def configure_logging(fmt: str = "text", level: str = "info", stream: TextIO | None = None) -> None:
    """Send the relay's events (and websockets' warnings) to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    for name, lvl in ((LOGGER_NAME, level.upper()), ("websockets", "WARNING")):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(lvl)
        logger.propagate = False
