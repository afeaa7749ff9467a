"""Loading a trained checkpoint for evaluation and sampling (``apps/eval``, ``apps/sample``).

A checkpoint folder lives in ``<run>/checkpoints/step_N``; the run folder holds the config,
tokenizer, tree and token counts it was trained with, so the model is rebuilt exactly. The EMA
weights are used by default, as in validation during training.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tdlm_diffusion import TreeProcess
from tdlm_nn import TreeDiT

from .checkpoint import load_weights, resolve_checkpoint
from .components import RunFiles, build_network, build_process, load_run_files
from .errors import UserError

__all__ = ["Loaded", "load_trained", "node_representatives", "render_nodes"]


@dataclass
class Loaded:
    files: RunFiles
    process: TreeProcess
    model: TreeDiT
    step: int
    checkpoint: Path


def load_trained(checkpoint: str, device: torch.device, *, ema: bool = True) -> Loaded:
    path = resolve_checkpoint(Path(checkpoint))
    files = load_run_files(path.parent.parent)
    weights, step = load_weights(path, ema=ema)
    process = build_process(files.config, files.tree, files.counts).to(device)
    model = build_network(files.config, files.tree, device)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise UserError(f"checkpoint {path} does not fit its run's config ({error})") from None
    model.eval()
    return Loaded(files, process, model, step, path)


def node_representatives(files: RunFiles) -> np.ndarray:
    """For every global node id, its most frequent leaf token (how an unfinished position reads)."""
    tree, counts = files.tree, files.counts
    reps = np.empty(tree.num_nodes, dtype=np.int64)
    reps[: tree.vocab_size] = np.arange(tree.vocab_size)
    for h in range(1, tree.depth + 1):
        # argmax of counts within each level-h subtree: sort leaves by count, keep the last per node
        ancestor = tree.ancestors[:, h]
        order = np.lexsort((counts, ancestor))
        last = np.r_[np.flatnonzero(np.diff(ancestor[order])), len(order) - 1]
        reps[tree.level_offsets[h] + ancestor[order][last]] = order[last]
    return reps


def render_nodes(nodes: np.ndarray, files: RunFiles, reps: np.ndarray) -> str:
    """Tokens as text; positions still at internal nodes as ``⟨rep⟩`` (``⟨·⟩`` for the root)."""
    vocab = files.tree.vocab_size
    root = files.tree.num_nodes - 1
    pieces = []
    for node in nodes.tolist():
        if node < vocab:
            pieces.append(files.tokenizer.decode([node]))
        elif node == root:
            pieces.append("⟨·⟩")
        else:
            text = files.tokenizer.decode([int(reps[node])])
            pieces.append("⟨" + text.replace(" ", "␣").replace("\n", "↵") + "⟩")
    return "".join(pieces)
