"""Tree statistics: level sizes, children per node and per-level conditional entropies.

Under the unigram distribution ``p(x)`` of the tokens, a level-h node has probability
``p(v) = sum of p(x) over the leaves under v``. The level-h choice given the level-(h+1) node
has conditional entropy ``H(A_h | A_{h+1}) = sum_u p(u) H(p(. | u))``. Because ``A_{h+1}`` is a
function of ``A_h`` the chain rule telescopes: ``sum_h H(A_h | A_{h+1}) = H(A_0) = H(unigram)``.
A good tree puts most of that entropy at the levels its network predicts well; the split is the
cheap, data-only counterpart of the per-level NELBO (docs/method.md §4 "Reporting").
:func:`conditional_cross_entropies` scores held-out tokens with the same per-level unigram model:
the per-level NELBO a network that ignores all context would get on them, hence the reference a
model's per-level validation NELBO is measured against. :func:`neighbour_cross_entropies` adds
one position of context (the previous token's node at the same level, counted on a training
stream): how much a level's choice can be learned from its neighbour, the cheapest measure of a
tree's top-level predictability. All entropies are in nats.
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
    "neighbour_cross_entropies",
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


def _token_ids(tree: VocabTree, tokens: Any, what: str, minimum: int = 1) -> np.ndarray:
    ids = np.asarray(tokens)
    if ids.ndim != 1 or ids.size < minimum or not np.issubdtype(ids.dtype, np.integer):
        raise TreeError(
            f"{what} must be a 1-D integer array of at least {minimum} ids, got shape {ids.shape}"
        )
    if ids.min() < 0 or ids.max() >= tree.vocab_size:
        raise TreeError(f"{what}: token ids must lie in 0..{tree.vocab_size - 1}")
    return ids.astype(np.int64)


def _counts_of(keys: np.ndarray, table_keys: np.ndarray, table_counts: np.ndarray) -> np.ndarray:
    """How often each of ``keys`` occurs in the sorted ``table_keys`` (0 where absent)."""
    at = np.minimum(np.searchsorted(table_keys, keys), len(table_keys) - 1)
    return np.where(table_keys[at] == keys, table_counts[at], 0)


def conditional_cross_entropies(
    tree: VocabTree, counts: Any, tokens: Any, *, smoothing: float = 0.5
) -> np.ndarray:
    """``[H]``: mean ``-log q(a_h(x) | a_{h+1}(x))`` over ``tokens`` (nats), ``q`` the unigram of
    ``counts + smoothing`` (add-``smoothing``, default Jeffreys: a token never counted stays
    finite). Sums over levels to the tokens' unigram cross-entropy under ``q``."""
    if not (np.isfinite(smoothing) and smoothing >= 0):
        raise TreeError(f"smoothing must be finite and >= 0, got {smoothing}")
    q = _probabilities(tree, np.asarray(counts, dtype=np.float64) + smoothing)
    path = tree.ancestors[_token_ids(tree, tokens, "tokens")]  # [T, H+1]: nodes at every level
    out = np.empty(tree.depth)
    node_q = q
    for h in range(tree.depth):
        up_q = np.bincount(tree.parents[h], weights=node_q, minlength=tree.level_sizes[h + 1])
        with np.errstate(divide="ignore"):
            out[h] = float(-np.log(node_q[path[:, h]] / up_q[path[:, h + 1]]).mean())
        node_q = up_q
    return out


def _pairs(path: np.ndarray, before: int, here: int, width: int) -> np.ndarray:
    """One key per consecutive pair: the previous token's level-``before`` node and this
    token's level-``here`` node (``width`` = the number of level-``here`` nodes)."""
    return path[:-1, before] * width + path[1:, here]


def neighbour_cross_entropies(
    tree: VocabTree, train_tokens: Any, tokens: Any, *, smoothing: float = 0.5
) -> np.ndarray:
    """``[H]``: mean ``-log q(a_h(x_t) | a_{h+1}(x_t), a_h(x_{t-1}))`` over ``t >= 1`` of
    ``tokens``, ``q`` the add-``smoothing`` estimate (over the parent's children) from the
    consecutive pairs of ``train_tokens``. Level h's choice given its parent *and the previous
    token's level-h node*: :func:`conditional_cross_entropies` minus this is what one neighbour
    at the same granularity tells about that level — available context, where the other gives
    none. Pairs are counted sparsely (memory ~ the number of distinct pairs)."""
    if not (np.isfinite(smoothing) and smoothing >= 0):
        raise TreeError(f"smoothing must be finite and >= 0, got {smoothing}")
    train = tree.ancestors[_token_ids(tree, train_tokens, "train_tokens", 2)]  # [T, H+1]
    held = tree.ancestors[_token_ids(tree, tokens, "tokens", 2)]
    out = np.empty(tree.depth)
    for h in range(tree.depth):
        n_h, n_up = tree.level_sizes[h], tree.level_sizes[h + 1]
        joint = np.unique(_pairs(train, h, h, n_h), return_counts=True)
        context = np.unique(_pairs(train, h, h + 1, n_up), return_counts=True)
        k = tree.child_counts[h][held[1:, h + 1]]
        numerator = _counts_of(_pairs(held, h, h, n_h), *joint) + smoothing
        denominator = _counts_of(_pairs(held, h, h + 1, n_up), *context) + smoothing * k
        with np.errstate(divide="ignore", invalid="ignore"):
            out[h] = float(-np.log(numerator / denominator).mean())
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
