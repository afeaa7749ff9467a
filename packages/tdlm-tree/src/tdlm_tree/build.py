"""Tree constructions of docs/method.md §2: ``flat``, ``random``, ``frequency`` and ``embedding``.

Every construction is bottom-up and balanced: level h's nodes are grouped into
``ceil(n_h / k_{h+1})`` parents of exactly ``k_{h+1}`` children but one (``shape.group_sizes``).
All are deterministic given their inputs and ``seed``, on any machine: ``embedding`` decides by
exact integer arithmetic (``cluster``, ``grid``). ``cooccurrence`` lives in its own module: it
derives the vectors, then calls :func:`embedding_tree`.
"""

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .cluster import balanced_kmeans, group_means
from .shape import resolve_branching
from .tree import TreeError, VocabTree

__all__ = ["flat_tree", "random_tree", "frequency_tree", "embedding_tree"]

Branching = int | Sequence[int]
logger = logging.getLogger(__name__)


def _group_in_order(order: np.ndarray, k: int) -> np.ndarray:
    """Parents that group the nodes consecutively in ``order``, ``k`` to a parent."""
    parents = np.empty(len(order), dtype=np.int64)
    parents[order] = np.arange(len(order)) // k
    return parents


def _shape_params(branching: Branching, leaf_cluster_size: int | None) -> dict[str, Any]:
    requested = branching if isinstance(branching, int) else [int(k) for k in branching]
    return {"requested_branching": requested, "leaf_cluster_size": leaf_cluster_size}


def _as_counts(counts: Any, what: str = "counts") -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise TreeError(f"{what} must be a non-empty 1-D array, got shape {counts.shape}")
    if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
        raise TreeError(f"{what} must be numeric, got dtype {counts.dtype}")
    counts = counts.astype(np.float64)
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise TreeError(f"{what} must be finite and non-negative")
    return counts


def flat_tree(vocab_size: int, *, tokenizer_fingerprint: str | None = None) -> VocabTree:
    """The one-level tree: every token is a child of the root. TDLM on it is exactly MDLM."""
    if vocab_size < 1:
        raise TreeError(f"vocabulary size must be at least 1, got {vocab_size}")
    return VocabTree(
        [np.zeros(vocab_size, dtype=np.int64)],
        method="flat",
        tokenizer_fingerprint=tokenizer_fingerprint,
    )


def random_tree(
    vocab_size: int,
    branching: Branching = 64,
    *,
    leaf_cluster_size: int | None = None,
    seed: int = 0,
    tokenizer_fingerprint: str | None = None,
) -> VocabTree:
    """Seeded balanced random grouping at every level (the ablation baseline)."""
    ks = resolve_branching(vocab_size, branching, leaf_cluster_size=leaf_cluster_size)
    rng = np.random.default_rng(seed)
    parents, n = [], vocab_size
    for k in ks:
        parents.append(_group_in_order(rng.permutation(n), k))
        n = int(parents[-1].max()) + 1
    return VocabTree(
        parents,
        method="random",
        seed=seed,
        tokenizer_fingerprint=tokenizer_fingerprint,
        params=_shape_params(branching, leaf_cluster_size),
    )


def frequency_tree(
    counts: Any,
    branching: Branching = 64,
    *,
    leaf_cluster_size: int | None = None,
    tokenizer_fingerprint: str | None = None,
) -> VocabTree:
    """Tokens sorted by corpus frequency (ties by id) and grouped consecutively.

    Above the leaves, parents keep that rank order, so each level again groups nodes of similar
    total frequency.
    """
    counts = _as_counts(counts)
    ks = resolve_branching(len(counts), branching, leaf_cluster_size=leaf_cluster_size)
    order = np.argsort(-counts, kind="stable")
    parents = [_group_in_order(order, ks[0])]
    n = int(parents[0].max()) + 1
    for k in ks[1:]:
        parents.append(np.arange(n, dtype=np.int64) // k)
        n = int(parents[-1].max()) + 1
    return VocabTree(
        parents,
        method="frequency",
        tokenizer_fingerprint=tokenizer_fingerprint,
        params=_shape_params(branching, leaf_cluster_size),
    )


def embedding_tree(
    vectors: Any,
    weights: Any = None,
    branching: Branching = 64,
    *,
    leaf_cluster_size: int | None = None,
    seed: int = 0,
    iterations: int = 8,
    tokenizer_fingerprint: str | None = None,
    method: str = "embedding",
    params: dict[str, Any] | None = None,
) -> VocabTree:
    """Balanced, size-constrained recursive k-means on one vector per token, bottom-up.

    ``vectors`` ``[N, d]`` (e.g. a pretrained LM's input embeddings); ``weights`` ``[N]`` token
    frequencies (default uniform). A parent's vector is the frequency-weighted mean of its
    children's, and its weight their sum. ``iterations`` bounds the balanced Lloyd refinement
    per level (see ``cluster.balanced_kmeans``).

    The same tree on every machine: each level's clustering is exact on its integer grid, and
    the parent vectors are computed without a matrix product (``cluster.group_means``), so they
    too are the same everywhere before the next level maps them to its grid.
    """
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise TreeError(f"vectors must be a non-empty [N, d] array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise TreeError("vectors must be finite numbers")
    w = np.ones(len(x)) if weights is None else _as_counts(weights, "weights")
    if len(w) != len(x):
        raise TreeError(f"{len(w)} weights for {len(x)} vectors")
    ks = resolve_branching(len(x), branching, leaf_cluster_size=leaf_cluster_size)
    parents = []
    for h, k in enumerate(ks):
        start = time.perf_counter()
        labels = balanced_kmeans(x, k, seed=seed + h, iterations=iterations)
        parents.append(labels)
        groups = int(labels.max()) + 1
        logger.info(
            "level %d: %d nodes -> %d parents of <= %d (%.1f s)",
            h,
            len(x),
            groups,
            k,
            time.perf_counter() - start,
        )
        x = group_means(x, labels, groups, weights=w)
        w = np.bincount(labels, weights=w, minlength=groups)
    all_params = _shape_params(branching, leaf_cluster_size) | {"iterations": iterations}
    return VocabTree(
        parents,
        method=method,
        seed=seed,
        tokenizer_fingerprint=tokenizer_fingerprint,
        params=all_params | (params or {}),
    )
