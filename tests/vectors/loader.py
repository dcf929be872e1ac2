"""Loaders for the known-answer vector files in this directory (see README.md).

One small loader per file format, so a vector file is the RFC's values and
nothing else, and a test parametrizes over its blocks with the block's ``ID``
(or, in our own JSON files, its ``name``) as the test id (a failure names the
vector).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["VECTORS_DIR", "load_json_vectors", "load_kv_vectors", "unhex"]

VECTORS_DIR = Path(__file__).resolve().parent


def load_kv_vectors(name: str) -> list[dict[str, str]]:
    """Parse a ``NAME = value`` block file: one vector per block, ``ID`` first.

    Blank lines and ``#`` comment lines are ignored; a line ``ID = …`` starts a
    new vector. Values are kept as text (``unhex`` turns hex into bytes). A
    repeated name within a block, a line without ``=``, a block without ``ID``
    or a duplicate ``ID`` is an error, so a damaged file cannot silently drop
    or merge vectors.
    """
    vectors: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    path = VECTORS_DIR / name
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"{name}:{lineno}: expected 'NAME = value'")
        if key == "ID":
            current = {"ID": value}
            vectors.append(current)
            continue
        if current is None:
            raise ValueError(f"{name}:{lineno}: {key} before the first ID")
        if key in current:
            raise ValueError(f"{name}:{lineno}: {key} repeated in vector {current['ID']}")
        current[key] = value
    ids = [v["ID"] for v in vectors]
    if len(set(ids)) != len(ids) or not ids:
        raise ValueError(f"{name}: vector IDs must be present and unique")
    return vectors


def load_json_vectors(name: str) -> list[dict[str, Any]]:
    """The ``vectors`` list of one of our JSON files; each vector has a unique ``name``.

    A file without a ``vectors`` list, a vector without a ``name`` or a
    duplicate name is an error, as in :func:`load_kv_vectors`.
    """
    document = json.loads((VECTORS_DIR / name).read_text(encoding="utf-8"))
    vectors = document.get("vectors") if isinstance(document, dict) else None
    if not isinstance(vectors, list) or not vectors:
        raise ValueError(f"{name}: expected an object with a non-empty 'vectors' list")
    names = [v.get("name") if isinstance(v, dict) else None for v in vectors]
    if None in names or len(set(names)) != len(names):
        raise ValueError(f"{name}: vector names must be present and unique")
    return vectors


def unhex(value: str) -> bytes:
    """Bytes from a hex value; the empty value is the empty string."""
    return bytes.fromhex(value)
