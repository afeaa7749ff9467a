"""Checkpoints: safetensors weights, a weights-only optimizer file and JSON state, atomically.

A checkpoint is a folder ``checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors`` and ``ema.safetensors`` — the weights and their exponential average;
* ``optimizer.pt`` — the optimizer's state dict (tensors and numbers only, read back with
  ``torch.load(weights_only=True)``, so loading never unpickles code);
* ``rng.safetensors`` — the torch RNG states (CPU, and CUDA where used);
* ``state.json`` — step, tokens seen, data-order position, best validation NELBO, the resolved
  config, the tree and tokenizer files and fingerprints, library versions.

The folder is assembled under a temporary name and renamed into place, so a run killed at any
instant (even SIGKILL mid-write) leaves the previous checkpoint intact and loadable. After each
save only the newest ``keep_last`` checkpoints and the best one are kept.
"""

import json
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import replace_dir, temp_dir_beside, write_json
from .errors import UserError

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "latest_checkpoint",
    "list_checkpoints",
    "resolve_checkpoint",
]

_STEP_DIR = re.compile(r"^step_(\d{8})$")
_FILES = ("model.safetensors", "ema.safetensors", "optimizer.pt", "rng.safetensors", "state.json")


@dataclass
class Checkpoint:
    path: Path
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]

    def states(self) -> dict[str, Any]:
        """The run's parts' state dicts, keyed as ``Run.parts()`` (the inverse of the file
        layout :func:`save_checkpoint` writes)."""
        if "ema_updates" not in self.state:
            raise UserError(
                f"checkpoint {self.path} predates the EMA warm-up; it cannot be resumed"
            )
        return {
            "train": {k: self.state.get(k) for k in _TRAIN_KEYS},
            "model": self.model,
            "ema": {"shadow": self.ema, "updates": self.state["ema_updates"]},
            "optimizer": self.optimizer,
            "rng": self.rng,
            "data_order": self.state["data_order"],
        }


# state.json's progress keys (a TrainState's state dict).
_TRAIN_KEYS = ("step", "tokens", "best_nelbo", "best_step")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temporary folders are not listed)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := _STEP_DIR.match(p.name)) and p.is_dir()  # a file of that name is not one
    ]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def resolve_checkpoint(path: Path, flag: str = "--checkpoint") -> Path:
    """A checkpoint folder, or a run folder (its latest checkpoint)."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise UserError(f"{flag} {path}: neither a checkpoint nor a run folder with one")
    return latest


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    run_dir: Path, states: dict[str, Any], meta: dict[str, Any], *, keep_last: int
) -> Path:
    """Write the run's ``states`` (keyed as ``Run.parts()``) and ``meta`` (config, tokenizer,
    tree, versions) as checkpoint ``step`` atomically, then prune old ones (keeping the best)."""
    train = states["train"]
    step, best_step = train["step"], train["best_step"]
    state = {
        **meta,
        **train,
        "ema_updates": states["ema"]["updates"],
        # Ranks advance in lockstep, so one position (epoch, step) serves them all.
        "data_order": states["data_order"],
    }
    final = Path(run_dir) / "checkpoints" / f"step_{step:08d}"
    previous = latest_checkpoint(run_dir)
    try:
        tmp = temp_dir_beside(final)
    except OSError as error:
        raise _unwritten(final, previous, error) from None
    try:
        save_file(_contiguous(states["model"]), tmp / "model.safetensors")
        save_file(_contiguous(states["ema"]["shadow"]), tmp / "ema.safetensors")
        save_file(_contiguous(states["rng"]), tmp / "rng.safetensors")
        torch.save(states["optimizer"], tmp / "optimizer.pt")
        write_json(tmp / "state.json", state)
        replace_dir(tmp, final)
    except (OSError, RuntimeError, SafetensorError) as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _unwritten(final, previous, error) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old_step, path in list_checkpoints(run_dir)[:-keep_last]:
        if old_step != best_step:
            shutil.rmtree(path, ignore_errors=True)
    return final


def _unwritten(final: Path, previous: Path | None, error: Exception) -> UserError:
    """One line for a checkpoint that could not be written (torch reports a full disk as
    "enforce fail at inline_container.cc ... unexpected pos", so the free space is named)."""
    reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0][:200]
    try:
        free = shutil.disk_usage(final.parent.parent).free
        reason += f"; {free / 2**20:,.0f} MiB free there"
    except OSError:
        pass
    return UserError(
        f"could not write checkpoint {final} ({reason}); "
        f"the last checkpoint, {previous or 'none yet'}, is intact"
    )


def load_weights(path: Path, *, ema: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(weights, state)`` for inference: the EMA (or raw) weights and ``state.json`` only, so
    a checkpoint shared without its optimizer and RNG files still loads for eval and sample."""
    path = Path(path)
    name = "ema.safetensors" if ema else "model.safetensors"
    if not (path / name).is_file() or not (path / "state.json").is_file():
        hint = " (pass --raw_weights to use model.safetensors)" if ema else ""
        raise UserError(f"checkpoint {path} lacks {name} or state.json{hint}")
    try:
        state = json.loads((path / "state.json").read_text())
        weights = load_file(path / name)
        int(state["step"]), int(state["tokens"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({error})") from None
    return weights, state


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and check a checkpoint folder; any defect is a :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"checkpoint {path}: no such folder")
    missing = [name for name in _FILES if not (path / name).is_file()]
    if missing:
        raise UserError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    try:
        state = json.loads((path / "state.json").read_text())
        tensors = {
            name: load_file(path / f"{name}.safetensors") for name in ("model", "ema", "rng")
        }
        optimizer = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        # torch's message advises retrying with weights_only=False: running the file's code.
        raise UserError(
            f"checkpoint {path}: optimizer.pt holds objects other than tensors and numbers, so it "
            "was not loaded (TDLM writes only those, and never runs code from a file); use a "
            "checkpoint a TDLM run wrote"
        ) from None
    except (OSError, ValueError, SafetensorError, RuntimeError, EOFError) as error:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error)
        raise UserError(f"checkpoint {path} is corrupt or truncated ({first})") from None
    if not isinstance(state, dict) or "step" not in state or "config" not in state:
        raise UserError(f"checkpoint {path}: state.json lacks its step or config")
    return Checkpoint(path, tensors["model"], tensors["ema"], optimizer, tensors["rng"], state)
