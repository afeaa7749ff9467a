"""Text sources and the deterministic train/validation split (issue 5, "Data").

A corpus is a list of documents ``(doc_id, text)`` from one of three sources:

* ``stdlib`` (the default, no download): the Python standard library source files of the running
  interpreter, found through ``sysconfig``, test folders and ``site-packages`` excluded — real
  text every machine has;
* local files: a path, a glob, or several separated by commas (``.jsonl`` and ``.json`` files
  give one document per record's ``text`` field — JSON lines, or a ``.json`` array of objects —
  every other file is one document; ``.gz``, ``.bz2`` and ``.xz`` files are read decompressed);
* ``hf:NAME[:CONFIG]``: a Hugging Face dataset, loaded through ``datasets`` (imported lazily;
  the hub is needed for named datasets, and offline that fails with a clear message). Local
  files go through the same loader with ``hf:json`` / ``hf:text`` and ``data_files``.

The split is by document and depends only on each document's id: a keyed hash puts a fixed
fraction in validation, so adding documents never moves existing ones between splits. A corpus
of a single document (one big text file) is split inside it: its tail is validation.

Text is normalised as it is read, and each change is reported once per kind: a leading
byte-order mark is dropped, CRLF line ends become LF, and NUL characters are removed (a file of
nothing else is then empty, and skipped). A document of any size is processed in pieces of at
most :data:`PIECE_CHARS` characters (:func:`text_pieces`), cut before whitespace, so reading,
BPE training and tokenization need bounded memory beyond the text itself.
"""

import bz2
import glob
import gzip
import hashlib
import json
import logging
import lzma
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = [
    "CorpusConfig",
    "Document",
    "load_documents",
    "split_documents",
    "corpus_fingerprint",
    "corpus_pins",
    "pin_changes",
    "hub_column",
    "text_pieces",
    "PIECE_CHARS",
]

logger = logging.getLogger(__name__)
Document = tuple[str, str]
# The longest piece of one document handed to the tokenizer at once (characters). A byte-level
# BPE's pre-tokenizer starts a word at every whitespace run that follows a non-space, so cuts
# there leave its tokens unchanged; 256 Ki characters bound its working memory to tens of MiB.
PIECE_CHARS = 2**18
# Pins name changed source files up to this many sources (beyond it, only the fingerprint).
_MAX_PINNED_SOURCES = 20_000
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """Where the text comes from and how it is split."""

    source: str = "stdlib"  # stdlib (no download) | path/glob[,path/glob...] | hf:NAME[:CONFIG]
    hf_split: str = "train"  # split of an hf: source
    data_files: str = ""  # local files for an hf: loader, e.g. hf:json (comma-separated)
    text_field: str = "text"  # the text field of .jsonl files and hf: datasets
    val_fraction: float = 0.05  # share of documents held out for validation (by id hash)
    max_documents: int = 0  # use only the first N documents in id order (0: all)

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_documents < 0:
            raise UserError(f"data.max_documents must be >= 0, got {self.max_documents}")


def _stdlib_documents() -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in _EXCLUDED_DIRS or p.startswith("test") for p in parts[:-1]):
            continue
        if parts[-1].startswith("test_"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append((f"stdlib/{'/'.join(parts)}", text))
    if not docs:
        raise UserError(f"no Python sources found under the standard library folder {root}")
    return docs


def _local_documents(spec: str, text_field: str) -> list[Document]:
    paths: list[Path] = []
    for pattern in (p.strip() for p in spec.split(",") if p.strip()):
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise UserError(f"data.source {pattern!r}: no such file, and no files match it")
        paths += [Path(m) for m in matches if Path(m).is_file()]
    # Ids relative to the files' common folder: moving a corpus keeps its split and cache keys.
    base = Path(os.path.commonpath([p.parent.resolve() for p in paths])) if paths else Path()
    docs = []
    for path in paths:
        doc_id = str(path.resolve().relative_to(base))
        text, kind = _read_text(path), _record_suffix(path)
        if kind in (".jsonl", ".json"):
            docs += _json_documents(path, doc_id, text, text_field, arrays=kind == ".json")
        elif text.strip():
            docs.append((doc_id, text))
    return docs


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _record_suffix(path: Path) -> str:
    """``.jsonl`` for ``a.jsonl`` and ``a.jsonl.gz`` alike: the suffix under any compression."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _read_text(path: Path) -> str:
    """The file's UTF-8 text, decompressed first when it ends in ``.gz``, ``.bz2`` or ``.xz``."""
    opener = _OPENERS.get(path.suffix.lower(), open)
    try:  # newline="": line ends as they are, so that CRLF is converted and reported once
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            return f.read()
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"data.source: cannot read {path} as UTF-8 text ({error})") from None


def _json_documents(path: Path, doc_id: str, text: str, field: str, arrays: bool) -> list[Document]:
    """One document per record's ``field``: JSON lines (``.jsonl``, and ``.json`` files that
    hold one object per line, as C4's shards) or, where ``arrays``, one JSON array of objects."""
    if arrays and text.lstrip().startswith("["):
        try:
            records = list(enumerate(json.loads(text)))
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: not valid JSON ({error})") from None
        where = "item"
    else:
        records = []
        for line_no, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    records.append((line_no, json.loads(line)))
                except json.JSONDecodeError:
                    records.append((line_no, None))
        where = "line"
    docs = []
    for index, record in records:
        if not isinstance(record, dict) or field not in record:
            raise UserError(
                f"{path} {where} {index + 1}: expected a JSON object with a {field!r} field "
                "(set data.text_field for another name)"
            )
        if str(record[field]).strip():
            docs.append((f"{doc_id}:{index}", str(record[field])))
    return docs


def hub_column(source: str, split: str, field: str, data_files: str = "") -> list[str]:
    """Column ``field`` of split ``split`` of the Hugging Face dataset ``hf:NAME[:CONFIG]``
    (``datasets`` imported here; named datasets need the hub or its local cache), every row."""
    name, _, subset = source.removeprefix("hf:").partition(":")
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"{source!r} needs the `datasets` package; install it or use local files"
        ) from None
    files = [f.strip() for f in data_files.split(",") if f.strip()] or None
    try:
        dataset = datasets.load_dataset(name, subset or None, split=split, data_files=files)
    except Exception as error:  # datasets raises many types (connection, not found, config)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise UserError(
            f"cannot load Hugging Face dataset {source!r} split {split!r} ({first_line}); "
            "named datasets need the hub — offline, pass local files"
        ) from None
    if field not in dataset.column_names:
        raise UserError(
            f"dataset {source!r} has columns {dataset.column_names}, not {field!r}"
            + (" (set data.text_field)" if field == "text" else "")
        )
    return [str(text) if text is not None else "" for text in dataset[field]]


def _hub_documents(config: CorpusConfig) -> list[Document]:
    rows = hub_column(config.source, config.hf_split, config.text_field, config.data_files)
    return [
        (f"{config.source}/{config.hf_split}/{i}", text)
        for i, text in enumerate(rows)
        if text.strip()
    ]


def load_documents(config: CorpusConfig) -> list[Document]:
    """All non-empty documents of the configured source, sorted by id (deterministic)."""
    if config.source == "stdlib":
        docs = _stdlib_documents()
    elif config.source.startswith("hf:"):
        docs = _hub_documents(config)
    else:
        docs = _local_documents(config.source, config.text_field)
    docs = _normalised(docs)
    if not docs:
        raise UserError(f"data.source {config.source!r} holds no non-empty documents")
    docs.sort(key=lambda doc: doc[0])
    return docs[: config.max_documents] if config.max_documents else docs


# What is replaced in every document (the text, by what), named as reported once per kind.
_REPLACED = {"CRLF line ends": ("\r\n", "\n", "converted to LF"),
             "NUL characters": ("\0", "", "removed")}  # fmt: skip


def _normalised(docs: list[Document]) -> list[Document]:
    """``docs`` without a leading BOM, CRLF line ends and NULs (each kind reported once, with
    a few of the documents named); documents left empty are dropped."""
    found: dict[str, list[str]] = {}
    kept = []
    for doc_id, text in docs:
        if text.startswith("\ufeff"):
            text = text[1:]
            found.setdefault("a byte-order mark: dropped", []).append(doc_id)
        for what, (needle, replacement, done) in _REPLACED.items():
            if needle in text:
                text = text.replace(needle, replacement)
                found.setdefault(f"{what}: {done}", []).append(doc_id)
        if text.strip():
            kept.append((doc_id, text))
    for what, ids in found.items():
        examples = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        logger.warning("warning: %d document(s) held %s (%s)", len(ids), what, examples)
    return kept


def text_pieces(text: str, size: int | None = None) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``size`` characters, joined back exactly.

    Each cut falls before a run of spaces or line breaks that follows a non-space character
    (the last one in the piece's second half), where a byte-level BPE's pre-tokenizer starts a
    new word anyway: tokenizing the pieces gives the same tokens as the whole. Where the half
    holds no such place (a huge run without whitespace) the cut falls at ``size``. ``size``
    defaults to :data:`PIECE_CHARS`.
    """
    size = size or PIECE_CHARS
    start, end = 0, len(text)
    while end - start > size:
        low, cut = start + size // 2, start + size
        at = max(text.rfind(" ", low, cut), text.rfind("\n", low, cut))
        while at > low and text[at - 1].isspace():  # to the start of the whitespace run
            at -= 1
        if at > low:
            cut = at
        yield text[start:cut]
        start = cut
    yield text[start:]


def _unit_hash(doc_id: str) -> float:
    digest = hashlib.blake2b(doc_id.encode(), digest_size=8, key=b"tdlm-split").digest()
    return int.from_bytes(digest, "big") / 2**64


def split_documents(
    docs: list[Document], val_fraction: float
) -> tuple[list[Document], list[Document]]:
    """(train, validation) by a keyed hash of each id; both sides are non-empty.

    A corpus of one document (one big text file, as many corpora come) is split inside it
    instead: the last ``val_fraction`` of its text, from a line break, is validation.
    """
    if len(docs) == 1:
        return _split_inside(docs[0], val_fraction)
    train = [d for d in docs if _unit_hash(d[0]) >= val_fraction]
    val = [d for d in docs if _unit_hash(d[0]) < val_fraction]
    if not val:  # tiny corpora: the document with the smallest hash goes to validation
        first = min(docs, key=lambda d: _unit_hash(d[0]))
        train, val = [d for d in docs if d is not first], [first]
    if not train:
        train, val = val[1:], val[:1]
    return train, val


def _split_inside(doc: Document, val_fraction: float) -> tuple[list[Document], list[Document]]:
    """One document cut in two at the line break nearest ``1 - val_fraction`` of its text (a
    contiguous tail, so validation shares no passage with training; within a line when no
    break lies within half the tail's length of that point). Both parts keep some non-space
    text."""
    doc_id, text = doc
    lo = len(text) - len(text.lstrip()) + 1  # the head keeps the first non-space character
    hi = len(text.rstrip()) - 1  # the tail keeps the last one
    if lo > hi:
        raise UserError(
            f"the corpus is one document ({doc_id}) too short to hold out part of it for "
            "validation; give it more text or more documents"
        )
    target = round(len(text) * (1.0 - val_fraction))
    slack = (len(text) - target) // 2  # a line break may move the cut by half the tail
    breaks = (text.rfind("\n", 0, target) + 1, text.find("\n", target) + 1)
    near = [c for c in breaks if lo <= c <= hi and abs(c - target) <= slack]
    cut = min(near, key=lambda c: abs(c - target)) if near else min(max(target, lo), hi)
    return [(f"{doc_id}#train", text[:cut])], [(f"{doc_id}#val", text[cut:])]


def _text_digest(text: str) -> bytes:
    """``sha256(text.encode())``, computed piece by piece (no copy of a huge text)."""
    h = hashlib.sha256()
    for piece in text_pieces(text):
        h.update(piece.encode())
    return h.digest()


def corpus_fingerprint(docs: list[Document]) -> str:
    """A hash of every document's id and text: the cache key's view of the corpus."""
    h = hashlib.sha256()
    for doc_id, text in docs:
        h.update(doc_id.encode())
        h.update(b"\0")
        h.update(_text_digest(text))
    return h.hexdigest()[:16]


def _source_of(doc_id: str) -> str:
    """The file (or dataset split) a document came from: ``a.jsonl`` for ``a.jsonl:7``."""
    if doc_id.startswith("hf:"):
        return doc_id.rsplit("/", 1)[0]
    head, colon, index = doc_id.rpartition(":")
    return head if colon and index.isdigit() else doc_id


def corpus_pins(docs: list[Document]) -> dict:
    """What a checkpoint records of the corpus it was trained on: the fingerprint, the number
    of documents and a hash per source file (dataset split), so a resume can name what
    changed."""
    sources: dict[str, Any] = {}  # source -> its sha256 object
    for doc_id, text in docs:
        h = sources.setdefault(_source_of(doc_id), hashlib.sha256())
        h.update(doc_id.encode() + b"\0" + _text_digest(text))
    pins = {"fingerprint": corpus_fingerprint(docs), "documents": len(docs)}
    if len(sources) <= _MAX_PINNED_SOURCES:
        pins["sources"] = {name: h.hexdigest()[:16] for name, h in sorted(sources.items())}
    return pins


def pin_changes(then: dict, now: dict) -> list[str]:
    """How corpus ``now`` differs from pinned ``then``, in words (empty: the same corpus)."""
    if then.get("fingerprint") == now.get("fingerprint"):
        return []
    old, new = then.get("sources"), now.get("sources")
    if old is None or new is None:
        return [f"{then.get('documents')} documents then, {now.get('documents')} now"]
    changes = [f"edited {n}" for n in sorted(old) if n in new and old[n] != new[n]]
    changes += [f"removed {n}" for n in sorted(set(old) - set(new))]
    changes += [f"added {n}" for n in sorted(set(new) - set(old))]
    return changes or ["its documents were reordered or renamed"]
