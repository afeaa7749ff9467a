"""Tree statistics: level sizes, children per node and per-level conditional entropies.

Under the unigram distribution ``p(x)`` of the tokens, a level-h node has probability
``p(v) = sum of p(x) over the leaves under v``. The level-h choice given the level-(h+1) node
has conditional entropy ``H(A_h | A_{h+1}) = sum_u p(u) H(p(. | u))``. Because ``A_{h+1}`` is a
function of ``A_h`` the chain rule telescopes: ``sum_h H(A_h | A_{h+1}) = H(A_0) = H(unigram)``.
A good tree puts most of that entropy at the levels its network predicts well; the split is the
cheap, data-only counterpart of the per-level NELBO (METHOD.md §4 "Reporting").
:func:`conditional_cross_entropies` scores held-out tokens with the same per-level unigram model:
the per-level NELBO a network that ignores all context would get on them, hence the reference a
model's per-level validation NELBO is measured against. All entropies are in nats.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from .tree import TreeError, VocabTree

__all__ = [
    "LevelStats",
    "conditional_entropies",
    "conditional_cross_entropies",
    "level_stats",
    "unigram_entropy",
    "format_stats",
]


@dataclass(frozen=True, kw_only=True)
class LevelStats:
    """One transition h (level h+1 nodes choosing among their level-h children)."""

    level: int
    parents: int
    children: int
    min_children: int
    mean_children: float
    max_children: int
    entropy: float | None  # H(A_h | A_{h+1}) in nats, when token counts were given


def _probabilities(tree: VocabTree, counts: Any) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (tree.vocab_size,):
        raise TreeError(f"counts must have shape ({tree.vocab_size},), got {counts.shape}")
    if not np.isfinite(counts).all() or (counts < 0).any() or counts.sum() <= 0:
        raise TreeError("counts must be finite, non-negative and not all zero")
    return counts / counts.sum()


def _entropy_terms(p: np.ndarray) -> np.ndarray:
    """``-p log p`` elementwise, with ``0 log 0 = 0``."""
    safe = np.where(p > 0, p, 1.0)
    return -p * np.log(safe)


def conditional_entropies(tree: VocabTree, counts: Any) -> np.ndarray:
    """``[H]``: ``H(A_h | A_{h+1})`` in nats under the unigram distribution of ``counts``."""
    p = _probabilities(tree, counts)
    entropies = np.empty(tree.depth)
    for h in range(tree.depth):
        parent = tree.parents[h]
        p_up = np.bincount(parent, weights=p, minlength=tree.level_sizes[h + 1])
        # p(child | parent), computed directly rather than by the telescoping identity above.
        conditional = np.divide(p, p_up[parent], out=np.zeros_like(p), where=p_up[parent] > 0)
        per_parent = np.bincount(parent, weights=_entropy_terms(conditional), minlength=len(p_up))
        entropies[h] = float((p_up * per_parent).sum())
        p = p_up
    return entropies


def conditional_cross_entropies(
    tree: VocabTree, counts: Any, tokens: Any, *, smoothing: float = 0.5
) -> np.ndarray:
    """``[H]``: mean ``-log q(a_h(x) | a_{h+1}(x))`` over ``tokens`` (nats), ``q`` the unigram of
    ``counts + smoothing`` (add-``smoothing``, default Jeffreys: a token never counted stays
    finite). Sums over levels to the tokens' unigram cross-entropy under ``q``."""
    if not (np.isfinite(smoothing) and smoothing >= 0):
        raise TreeError(f"smoothing must be finite and >= 0, got {smoothing}")
    q = _probabilities(tree, np.asarray(counts, dtype=np.float64) + smoothing)
    ids = np.asarray(tokens)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise TreeError(f"tokens must be a non-empty 1-D integer array, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= tree.vocab_size:
        raise TreeError(f"token ids must lie in 0..{tree.vocab_size - 1}")
    path = tree.ancestors[ids.astype(np.int64)]  # [T, H+1]: each token's node at every level
    out = np.empty(tree.depth)
    node_q = q
    for h in range(tree.depth):
        up_q = np.bincount(tree.parents[h], weights=node_q, minlength=tree.level_sizes[h + 1])
        with np.errstate(divide="ignore"):
            out[h] = float(-np.log(node_q[path[:, h]] / up_q[path[:, h + 1]]).mean())
        node_q = up_q
    return out


def unigram_entropy(counts: Any) -> float:
    """``H(A_0)`` in nats."""
    counts = np.asarray(counts, dtype=np.float64)
    return float(_entropy_terms(counts / counts.sum()).sum())


def level_stats(tree: VocabTree, counts: Any = None) -> list[LevelStats]:
    """One :class:`LevelStats` per transition, bottom (h = 0) first."""
    entropies = None if counts is None else conditional_entropies(tree, counts)
    rows = []
    for h, count in enumerate(tree.child_counts):
        rows.append(
            LevelStats(
                level=h,
                parents=tree.level_sizes[h + 1],
                children=tree.level_sizes[h],
                min_children=int(count.min()),
                mean_children=float(count.mean()),
                max_children=int(count.max()),
                entropy=None if entropies is None else float(entropies[h]),
            )
        )
    return rows


def format_stats(tree: VocabTree, counts: Any = None) -> str:
    """A plain-text table of :func:`level_stats`, with the unigram entropy when counts are given."""
    rows = level_stats(tree, counts)
    header = f"{'h':>3} {'n_h+1':>8} {'n_h':>8} {'min':>6} {'mean':>8} {'max':>6}"
    if counts is not None:
        header += f" {'H(A_h|A_h+1) nats':>18}"
    lines = [repr(tree), header]
    for r in rows:
        line = (
            f"{r.level:>3} {r.parents:>8} {r.children:>8} {r.min_children:>6} "
            f"{r.mean_children:>8.2f} {r.max_children:>6}"
        )
        if r.entropy is not None:
            line += f" {r.entropy:>18.4f}"
        lines.append(line)
    if counts is not None:
        total = sum(r.entropy for r in rows if r.entropy is not None)
        lines.append(
            f"sum of levels {total:.4f} nats = unigram entropy {unigram_entropy(counts):.4f}"
        )
    return "\n".join(lines)
