"""The files that make a run folder self-contained: ``config.json``, ``tokenizer.json``,
``tree.npz`` and ``counts.npy`` (the training tokens' counts), so that any checkpoint in it is
rebuilt exactly as it was trained, without the training corpus.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tdlm_tree import TreeError, VocabTree, load_tree, save_tree

from .atomic import atomic_write, write_json
from .config import RunConfig, run_config_from_dict
from .errors import UserError
from .overrides import config_to_dict
from .tokenizer import TextTokenizer, load_tokenizer

__all__ = ["RunFiles", "save_run_files", "load_run_files", "tree_fingerprint"]


def tree_fingerprint(tree: VocabTree) -> str:
    """A hash of the tree's structure (every level's parents and slots), which checkpoints
    record: the same tree, however saved, has the same fingerprint."""
    h = hashlib.sha256(np.asarray(tree.level_sizes, dtype=np.int64).tobytes())
    for parents, slots in zip(tree.parents, tree.slots, strict=True):
        h.update(np.ascontiguousarray(parents, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(slots, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


@dataclass
class RunFiles:
    config: RunConfig
    tokenizer: TextTokenizer
    tree: VocabTree
    counts: np.ndarray  # training-token counts (for the entropy allocation and statistics)


def save_run_files(run_dir: Path, files: RunFiles, *, config_only: bool = False) -> None:
    """``config.json``, ``tokenizer.json``, ``tree.npz``, ``counts.npy`` (rank 0, atomically).
    ``config_only``: a resumed run's, whose other files its checkpoints depend on (never
    rewritten)."""
    write_json(run_dir / "config.json", config_to_dict(files.config))
    if config_only:
        return
    files.tokenizer.save(run_dir / "tokenizer.json")
    save_tree(files.tree, run_dir / "tree.npz")

    def write_counts(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, files.counts)

    atomic_write(run_dir / "counts.npy", write_counts)


def load_run_files(run_dir: Path, *, config: RunConfig | None = None) -> RunFiles:
    """The files a run folder needs for evaluation and sampling, validated. ``config``: the
    run config already read (an exported folder's ``config.json`` wraps it, :mod:`.hub`)."""
    run_dir = Path(run_dir)
    if config is None:
        try:
            raw = json.loads((run_dir / "config.json").read_text())
        except FileNotFoundError:
            raise UserError(f"{run_dir} is not a run folder (no config.json)") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{run_dir}/config.json is not valid JSON ({error})") from None
        config = run_config_from_dict(raw, f"{run_dir}/config.json")
    tokenizer = load_tokenizer(str(run_dir / "tokenizer.json"))
    try:
        tree = load_tree(
            run_dir / "tree.npz",
            vocab_size=tokenizer.vocab_size,
            tokenizer_fingerprint=tokenizer.fingerprint,
        )
    except TreeError as error:
        raise UserError(str(error)) from None
    try:
        counts = np.load(run_dir / "counts.npy", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"{run_dir}/counts.npy is missing or corrupt ({error})") from None
    if not isinstance(counts, np.ndarray) or counts.shape != (tree.vocab_size,):
        raise UserError(f"{run_dir}/counts.npy does not hold one count per token of the tree")
    return RunFiles(config, tokenizer, tree, counts)


def check_pins(state: dict, files: RunFiles, checkpoint: Path) -> None:
    """Refuse, in one line, a run folder whose tokenizer or tree is not the one ``checkpoint``
    (its ``state.json`` read as ``state``) was trained with: its ids would decode as other
    text. Checkpoints from before the tree was pinned are checked on the tokenizer only."""
    pinned = {
        "tokenizer.json": (state.get("tokenizer_fingerprint"), files.tokenizer.fingerprint),
        "tree.npz": ((state.get("tree") or {}).get("fingerprint"), tree_fingerprint(files.tree)),
    }
    for name, (then, now) in pinned.items():
        if then is not None and then != now:
            raise UserError(
                f"{checkpoint} was trained with another {name} than the one beside it "
                f"(fingerprint {then}, the file's {now}): its ids would decode as other text; "
                "restore that file"
            )
