"""Saving and loading trees as data: one ``.npz`` of integer arrays plus JSON metadata.

docs/method.md §2: a tree is saved as data, never as a pickle, and loading validates everything.
File layout (``format_version`` 1), all arrays 1-D ``int64``, nodes in global-id order
(level 0 first, root last):

* ``level_sizes`` ``[H+1]``: ``n_0 .. n_H``;
* ``parent`` ``[T]``: each node's parent as a global id, ``-1`` for the root;
* ``slot`` ``[T]``: each node's slot under its parent, ``0`` for the root;
* ``metadata``: UTF-8 JSON bytes (``uint8``): format name and version, N, level sizes,
  branching, construction method, seed, tokenizer fingerprint, construction parameters.

A single global parent array can express cycles, self-loops and skipped levels; the loader
rejects them (every node's parent must sit on the next level up), then rebuilds the tree, which
checks slots and child counts. Any defect raises :class:`TreeError` naming the file.
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .tree import TreeError, VocabTree

__all__ = ["save_tree", "load_tree", "FORMAT_VERSION", "TEMP_MARK", "temp_prefix"]

FORMAT_NAME = "tdlm-tree"
FORMAT_VERSION = 1
_ARRAYS = ("level_sizes", "parent", "slot", "metadata")
# Every temporary name a TDLM package writes starts with this mark and the writer's pid, so a
# cleanup can tell its own half-written files (a killed writer's) from a user's, and never
# touches a name without it (docs/architecture.md "What TDLM owns in a folder").
TEMP_MARK = ".tdlm-tmp-"


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary names for a file or folder ``name``."""
    return f"{TEMP_MARK}{os.getpid()}-{name}-"


def _metadata(tree: VocabTree) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "vocab_size": tree.vocab_size,
        "level_sizes": list(tree.level_sizes),
        "branching": list(tree.branching),
        "num_nodes": tree.num_nodes,
        "method": tree.method,
        "seed": tree.seed,
        "tokenizer_fingerprint": tree.tokenizer_fingerprint,
        "params": tree.params,
    }


def save_tree(tree: VocabTree, path: str | os.PathLike[str]) -> Path:
    """Write ``tree`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    offsets = tree.level_offsets
    parent = np.full(tree.num_nodes, -1, dtype=np.int64)
    slot = np.zeros(tree.num_nodes, dtype=np.int64)
    for h in range(tree.depth):
        parent[offsets[h] : offsets[h + 1]] = tree.parents[h] + offsets[h + 1]
        slot[offsets[h] : offsets[h + 1]] = tree.slots[h]
    meta = np.frombuffer(json.dumps(_metadata(tree), sort_keys=True).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                level_sizes=np.asarray(tree.level_sizes, dtype=np.int64),
                parent=parent,
                slot=slot,
                metadata=meta,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in _ARRAYS if name not in data.files]
            if missing:
                raise TreeError(f"{path}: not a tdlm-tree file (missing arrays {missing})")
            return {name: data[name] for name in _ARRAYS}
    except TreeError:
        raise
    except FileNotFoundError:
        raise TreeError(f"{path}: no such tree file") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise TreeError(f"{path}: not a readable tdlm-tree file ({error})") from None


def _check_int_vector(path: Path, name: str, array: np.ndarray) -> np.ndarray:
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise TreeError(
            f"{path}: array {name!r} must be a 1-D integer array, got {array.dtype} {array.shape}"
        )
    return array.astype(np.int64)


def _read_metadata(path: Path, raw: np.ndarray) -> dict[str, Any]:
    if raw.ndim != 1 or raw.dtype != np.uint8:
        raise TreeError(f"{path}: metadata must be UTF-8 JSON bytes (uint8), got {raw.dtype}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TreeError(f"{path}: metadata is not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise TreeError(f"{path}: metadata does not describe a {FORMAT_NAME} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TreeError(
            f"{path}: format version {meta.get('format_version')!r}; this tdlm-tree reads "
            f"version {FORMAT_VERSION}"
        )
    return meta


def _per_level_arrays(
    path: Path, sizes: np.ndarray, parent: np.ndarray, slot: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(sizes) < 2 or (sizes < 1).any() or sizes[-1] != 1:
        raise TreeError(
            f"{path}: level sizes {sizes.tolist()} must be >= 2 positive entries ending in 1"
        )
    offsets = np.r_[0, np.cumsum(sizes)]
    if len(parent) != offsets[-1] or len(slot) != offsets[-1]:
        raise TreeError(
            f"{path}: {len(parent)} parents and {len(slot)} slots for {int(offsets[-1])} nodes"
        )
    if parent[-1] != -1 or slot[-1] != 0:
        raise TreeError(f"{path}: the root must have parent -1 and slot 0")
    parents, slots = [], []
    for h in range(len(sizes) - 1):
        level = parent[offsets[h] : offsets[h + 1]]
        above = (level >= offsets[h + 1]) & (level < offsets[h + 2])
        if not above.all():
            node = int(offsets[h] + np.flatnonzero(~above)[0])
            raise TreeError(
                f"{path}: node {node} (level {h}) has parent {int(parent[node])}, not a "
                f"level-{h + 1} node ({int(offsets[h + 1])}..{int(offsets[h + 2]) - 1}): the "
                "parent links contain a cycle, a self-loop or a skipped level"
            )
        parents.append(level - offsets[h + 1])
        slots.append(slot[offsets[h] : offsets[h + 1]])
    return parents, slots


def load_tree(
    path: str | os.PathLike[str],
    *,
    vocab_size: int | None = None,
    tokenizer_fingerprint: str | None = None,
) -> VocabTree:
    """Load and fully validate a tree; optionally require its N and tokenizer to match.

    Raises :class:`TreeError` for a missing, truncated, corrupt or inconsistent file, and for a
    tree whose vocabulary size (or recorded tokenizer fingerprint) differs from the one given.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    meta = _read_metadata(path, arrays["metadata"])
    sizes, parent, slot = (
        _check_int_vector(path, name, arrays[name]) for name in ("level_sizes", "parent", "slot")
    )
    parents, slots = _per_level_arrays(path, sizes, parent, slot)
    seed = meta.get("seed")
    params = meta.get("params") or {}
    if not isinstance(params, dict) or not (seed is None or isinstance(seed, int)):
        raise TreeError(f"{path}: metadata 'params' must be an object and 'seed' an integer")
    try:
        tree = VocabTree(
            parents,
            slots,
            method=str(meta.get("method", "custom")),
            seed=seed,
            tokenizer_fingerprint=meta.get("tokenizer_fingerprint"),
            params=params,
        )
    except TreeError as error:
        raise TreeError(f"{path}: {error}") from None
    recorded = (meta.get("vocab_size"), meta.get("level_sizes"), meta.get("branching"))
    if recorded != (tree.vocab_size, list(tree.level_sizes), list(tree.branching)):
        raise TreeError(
            f"{path}: metadata says N={recorded[0]}, level sizes {recorded[1]}, branching "
            f"{recorded[2]}, but the arrays describe N={tree.vocab_size}, level sizes "
            f"{list(tree.level_sizes)}, branching {list(tree.branching)}"
        )
    if vocab_size is not None and vocab_size != tree.vocab_size:
        raise TreeError(
            f"{path}: the tree has {tree.vocab_size} leaves but the vocabulary has {vocab_size} "
            "tokens; build a tree for this tokenizer"
        )
    if (
        tokenizer_fingerprint is not None
        and tree.tokenizer_fingerprint is not None
        and tokenizer_fingerprint != tree.tokenizer_fingerprint
    ):
        raise TreeError(
            f"{path}: the tree was built for tokenizer {tree.tokenizer_fingerprint!r}, "
            f"not {tokenizer_fingerprint!r}"
        )
    return tree
