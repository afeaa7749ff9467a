"""benchmarks/prose_corpus.py: the R-serialization reader and the chapter split, offline.

The real package is fetched only by the script; here a hand-built XDR stream of the shape its
index holds (a named list of character vectors) checks the reader byte by byte.
"""

import importlib.util
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("prose_corpus", ROOT / "benchmarks/prose_corpus.py")
prose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prose)


def _int(value: int) -> bytes:
    return struct.pack(">i", value)


def _char(text: str | None) -> bytes:
    if text is None:
        return _int(9) + _int(-1)
    data = text.encode()
    return _int(9) + _int(len(data)) + data


def _strings(values: list[str | None]) -> bytes:
    return _int(16) + _int(len(values)) + b"".join(_char(v) for v in values)


def _stream(body: bytes, version: int = 3) -> bytes:
    header = b"X\n" + _int(version) + _int(0x40201) + _int(0x20300)
    if version == 3:
        header += _int(5) + b"UTF-8"
    return header + body


def test_reader_named_list_of_strings():
    names_attr = (
        _int(2 | (1 << 10))  # LISTSXP with a tag
        + _int(1)
        + _char("names")  # SYMSXP "names"
        + _strings(["emma", "empty"])
        + _int(254)  # end of the pairlist
    )
    body = (
        _int(19 | (1 << 9))  # VECSXP with attributes
        + _int(2)
        + _strings(["CHAPTER I", "Emma Woodhouse,", None])
        + _strings([])
        + names_attr
    )
    for version in (2, 3):
        value = prose._RReader(_stream(body, version)).read()
        assert value == {"emma": ["CHAPTER I", "Emma Woodhouse,", None], "empty": []}


def test_reader_refuses_other_formats():
    with pytest.raises(SystemExit, match="XDR"):
        prose._RReader(b"A\n1\n")
    with pytest.raises(SystemExit, match="version 4"):
        prose._RReader(b"X\n" + _int(4) + _int(0) + _int(0))


def test_chapters_drop_front_matter_and_headings():
    lines = ["EMMA", "", "VOLUME I", "CHAPTER I", "", "Emma Woodhouse,", "Chapter 2.", "Next."]
    assert prose.chapters(lines) == ["Emma Woodhouse,\n", "Next.\n"]
    assert prose.chapters(["no headings at all"]) == []
