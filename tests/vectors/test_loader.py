"""The vector loader refuses damaged files instead of silently dropping vectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vectors.loader import load_json_vectors, load_kv_vectors, unhex


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "vectors.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)  # absolute: VECTORS_DIR / path is path


def test_parses_blocks_comments_and_empty_values(tmp_path: Path) -> None:
    name = write(tmp_path, "# comment\n\nID = a\nX = 0a0b\nEMPTY =\n\nID = b\nX = ff\n")
    assert load_kv_vectors(name) == [{"ID": "a", "X": "0a0b", "EMPTY": ""}, {"ID": "b", "X": "ff"}]
    assert unhex("0a0b") == b"\x0a\x0b"
    assert unhex("") == b""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ID = a\nno equals sign\n", "expected 'NAME = value'"),
        ("X = 00\nID = a\n", "X before the first ID"),
        ("ID = a\nX = 00\nX = 01\n", "X repeated in vector a"),
        ("ID = a\n\nID = a\n", "vector IDs must be present and unique"),
        ("# only a comment\n", "vector IDs must be present and unique"),
    ],
    ids=["no-equals", "before-id", "repeated-name", "duplicate-id", "empty-file"],
)
def test_refuses_damaged_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_kv_vectors(write(tmp_path, text))


@pytest.mark.parametrize(
    "name",
    [
        "rfc7748_x25519.txt",
        "rfc8032_ed25519.txt",
        "rfc5869_hkdf.txt",
        "rfc7914_scrypt.txt",
        "gcm_aes256.txt",
    ],
)
def test_every_shipped_file_loads_and_its_hex_is_hex(name: str) -> None:
    decimal = {"ID", "L", "ITERATIONS", "N", "R", "P_PARALLEL", "DKLEN"}
    for vector in load_kv_vectors(name):
        for key, value in vector.items():
            if key in decimal or key.endswith("_TEXT"):
                continue
            assert value == value.lower(), f"{vector['ID']}.{key} is not lowercase hex"
            unhex(value)


def test_json_vectors_are_listed_by_name(tmp_path: Path) -> None:
    path = tmp_path / "vectors.json"
    path.write_text('{"vectors": [{"name": "a", "x": "00"}, {"name": "b"}]}', encoding="utf-8")
    assert load_json_vectors(str(path)) == [{"name": "a", "x": "00"}, {"name": "b"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"vectors": []}', "expected an object with a non-empty 'vectors' list"),
        ("[]", "expected an object with a non-empty 'vectors' list"),
        ('{"vectors": [{"x": 1}]}', "vector names must be present and unique"),
        ('{"vectors": [{"name": "a"}, {"name": "a"}]}', "vector names must be present and unique"),
    ],
    ids=["empty", "not-an-object", "no-name", "duplicate-name"],
)
def test_damaged_json_vector_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "vectors.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_json_vectors(str(path))
    assert str(info.value) == f"{path}: {message}"
