"""Loading an exported model (issue 13): a folder :func:`tdlm_train.hub.export_run` wrote, or
its Hugging Face hub repo id.

:meth:`Run.from_checkpoint <tdlm_train.run.Run.from_checkpoint>` takes either: a repo id
``owner/name[@revision]`` that is not a local path is fetched by :func:`local_folder` with
``huggingface_hub.snapshot_download`` (its cache, ``HF_HUB_OFFLINE=1`` and tokens apply), and
:func:`load_export` reads and checks every file. This module knows the folder's layout and
nothing of the run, so :mod:`.run` imports it and :mod:`.hub` (which writes the folder) builds on
both.
"""

import hashlib
import json
import logging
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .config import run_config_from_dict
from .errors import UserError
from .run_files import RunFiles, check_pins, load_run_files

__all__ = [
    "MODEL_TYPE",
    "FORMAT_VERSION",
    "EXPORT_FILES",
    "EXPORT_KEYS",
    "file_digest",
    "local_folder",
    "is_export",
    "export_config_of",
    "load_export",
    "library_version",
]

logger = logging.getLogger(__name__)
MODEL_TYPE = "tdlm"
FORMAT_VERSION = 1
EXPORT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tree.npz",
    "counts.npy",
    "README.md",
)
# The keys of an export's config.json; others are named in a warning and ignored.
EXPORT_KEYS = frozenset({
    "model_type", "format_version", "kind", "weights", "run_config", "step", "tokens",
    "parameters", "level_sizes", "vocab_size", "tokenizer_fingerprint", "tree_fingerprint",
    "files", "validation", "library",
})  # fmt: skip
# owner/name[@revision]: the hub's repo id form; anything else is only ever a local path.
_REPO_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")


def library_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:  # run from source (PYTHONPATH) without an install
        return None


# --- loading -----------------------------------------------------------------------------------
def local_folder(name: str | Path) -> Path:
    """``name`` as a local path, or (a string ``owner/name[@revision]`` that is not one) the
    hub repo's snapshot, fetched with huggingface_hub into its cache."""
    path = Path(name)
    match = _REPO_ID.fullmatch(name) if isinstance(name, str) else None
    if path.exists() or match is None:
        return path
    repo, revision = match["repo"], match["revision"]
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(
            f"--checkpoint {name}: no such folder, and fetching it from the Hugging Face hub "
            "needs the huggingface_hub package"
        ) from None
    try:
        folder = Path(
            snapshot_download(
                repo,
                revision=revision,
                allow_patterns=list(EXPORT_FILES),
                library_name="tdlm",
                library_version=library_version("tdlm-train"),
            )
        )
    except (OSError, ValueError) as error:  # offline, not found, gated, a bad id
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = text if len(text) <= 160 else text[:160].rsplit(" ", 1)[0] + " ..."
        raise UserError(
            f"--checkpoint {name}: no such folder, and the Hugging Face hub model {repo} could "
            f"not be fetched ({type(error).__name__}: {reason}); the hub must be reachable, or "
            "set HF_HUB_OFFLINE=1 with a copy in its cache"
        ) from None
    if not is_export(folder):
        raise UserError(f"hub model {repo} is not a TDLM export (no config.json with a model_type)")
    return folder


def is_export(folder: Path) -> bool:
    """Whether ``folder`` is an exported model: its ``config.json`` names a ``model_type`` (a
    run folder's ``config.json`` is a bare RunConfig)."""
    return export_config_of(Path(folder)) is not None


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (an export records its files' to notice later edits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def export_config_of(folder: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and "model_type" in raw else None


def load_export(
    folder: Path, weights: str = "ema"
) -> tuple[RunFiles, dict[str, torch.Tensor], dict[str, Any]]:
    """``(files, weights, state)`` of an exported folder, every file checked: the run files
    (config, tokenizer, tree, counts), the weights, and the progress (step, tokens). ``weights``
    must name the set the export holds."""
    folder = Path(folder)
    where = f"{folder}/config.json"
    raw = export_config_of(folder)
    if raw is None:
        raise UserError(f"{folder} is not an export: no readable config.json with a model_type")
    if raw.get("model_type") != MODEL_TYPE:
        raise UserError(f"{where} names model_type {raw.get('model_type')!r}, not a TDLM export")
    if raw.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{where} has format_version {raw.get('format_version')!r}; this tdlm-train reads "
            f"{FORMAT_VERSION} (upgrade it for newer exports)"
        )
    unknown = sorted(set(raw) - EXPORT_KEYS)
    if unknown:
        logger.warning(
            "warning: %s has keys this tdlm-train does not know, ignored: %s", where,
            ", ".join(unknown),
        )  # fmt: skip
    needed = [name for name in EXPORT_FILES if name != "README.md"]  # the card is for people
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise UserError(f"export {folder} is incomplete: missing {', '.join(missing)}")
    try:
        held = raw["weights"]
        state = {"step": int(raw["step"]), "tokens": int(raw["tokens"])}
        fingerprint = str(raw["tokenizer_fingerprint"])
        run_config = dict(raw["run_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{where} is not a complete export config ({error!r})") from None
    if held != weights:
        hint = ' (weights="raw"; --raw_weights in the apps)' if held == "raw" else ""
        raise UserError(f"export {folder} holds the {held} weights, not the {weights} ones{hint}")
    config = run_config_from_dict(run_config, where)
    files = load_run_files(folder, config=config)
    tree = {"fingerprint": raw.get("tree_fingerprint")}
    check_pins({"tokenizer_fingerprint": fingerprint, "tree": tree}, files, folder)
    try:
        tensors = load_file(folder / "model.safetensors")
    except (OSError, SafetensorError) as error:
        raise UserError(f"{folder}/model.safetensors is corrupt or truncated ({error})") from None
    return files, tensors, state
