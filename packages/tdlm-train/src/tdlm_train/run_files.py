"""Building the run's parts from a config: data, tree, diffusion process and network.

Shared by training, evaluation and sampling, so that a checkpoint is always rebuilt exactly as it
was trained. A run folder is self-contained: it holds copies of its ``tokenizer.json`` and
``tree.npz`` next to ``config.json``.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tdlm_diffusion import ScheduleConfig, TreeProcess
from tdlm_nn import DiTConfig, TreeDiT, TreeShape, resolve_attention
from tdlm_nn import preset as model_preset
from tdlm_tree import TreeError, VocabTree, load_tree, save_tree

from .atomic import atomic_write, write_json
from .config import RunConfig
from .errors import UserError
from .overrides import config_from_dict, config_to_dict
from .tokenizer import TextTokenizer, load_tokenizer

__all__ = [
    "network_config",
    "build_process",
    "build_network",
    "RunFiles",
    "save_run_files",
    "load_run_files",
]


def network_config(config: RunConfig, tree: VocabTree) -> DiTConfig:
    """The tdlm-nn preset on this tree (TDLM: deepened to the MDLM budget), with overrides."""
    try:
        net = model_preset(config.model.preset, TreeShape.of(tree))
        changes = {
            "dropout": config.model.dropout,
            "attention": config.model.attention,
            "time_conditioning": config.model.time_conditioning,
        }
        if config.model.n_blocks:
            changes["n_blocks"] = config.model.n_blocks
        return dataclasses.replace(net, **changes)
    except ValueError as error:
        raise UserError(f"--model: {error}") from None


def build_process(config: RunConfig, tree: VocabTree, counts: np.ndarray | None) -> TreeProcess:
    d = config.diffusion
    try:
        schedule = ScheduleConfig(alpha=d.alpha, allocation=d.allocation, gamma=d.gamma).build(
            tree, counts if d.allocation == "entropy" else None
        )
    except ValueError as error:
        raise UserError(f"--diffusion: {error}") from None
    return TreeProcess(tree, schedule, pass_time=config.model.time_conditioning)


def build_network(config: RunConfig, tree: VocabTree, device: torch.device) -> TreeDiT:
    try:  # a backend that cannot run here (xformers on the CPU) is the user's choice to fix
        resolve_attention(config.model.attention, device)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"--model.attention: {error}") from None
    model = network_config(config, tree).build().to(device)
    try:
        model.checkpoint_blocks(config.model.checkpointed_blocks())
    except ValueError as error:
        raise UserError(f"--model.checkpoint_blocks: {error}") from None
    if config.model.compile:
        model.backbone.compile()
    return model


@dataclass
class RunFiles:
    config: RunConfig
    tokenizer: TextTokenizer
    tree: VocabTree
    counts: np.ndarray  # training-token counts (for the entropy allocation and statistics)


def save_run_files(run_dir: Path, files: RunFiles) -> None:
    """``config.json``, ``tokenizer.json``, ``tree.npz``, ``counts.npy`` (rank 0, atomically)."""
    write_json(run_dir / "config.json", config_to_dict(files.config))
    files.tokenizer.save(run_dir / "tokenizer.json")
    save_tree(files.tree, run_dir / "tree.npz")

    def write_counts(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, files.counts)

    atomic_write(run_dir / "counts.npy", write_counts)


def load_run_files(run_dir: Path) -> RunFiles:
    """The files a run folder needs for evaluation and sampling, validated."""
    run_dir = Path(run_dir)
    try:
        raw = json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run folder (no config.json)") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{run_dir}/config.json is not valid JSON ({error})") from None
    config = config_from_dict(RunConfig, raw, f"{run_dir}/config.json")
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
    return RunFiles(config, tokenizer, tree, counts)
