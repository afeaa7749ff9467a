"""The ``cooccurrence`` construction: token vectors from a token stream, then ``embedding``.

METHOD.md §2 (``embedding`` with vectors computed from a token stream). Each token is described
by how often each of the ``context_size`` most frequent tokens occurs just before it and just
after it (within ``window`` positions, weighted 1/distance); the counts become positive
pointwise mutual information with context-distribution smoothing (Levy, Goldberg & Dagan 2015,
exponent 0.75), and a randomized truncated SVD (Halko, Martinsson & Tropp 2011) reduces them to
``dim`` dense dimensions, scaled by the square root of the singular values. Separate left and
right contexts make tokens that play the same syntactic role land close together.
Tokens that never occur get the zero vector.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from .build import embedding_tree
from .tree import TreeError, VocabTree

__all__ = ["cooccurrence_vectors", "cooccurrence_tree"]


def _validated_stream(token_ids: Any, vocab_size: int) -> np.ndarray:
    ids = np.asarray(token_ids)
    if ids.ndim != 1 or ids.size < 2:
        raise TreeError(
            f"token stream must be a 1-D array of at least 2 ids, got shape {ids.shape}"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise TreeError(f"token ids must be integers, got dtype {ids.dtype}")
    if vocab_size < 1:
        raise TreeError(f"vocabulary size must be at least 1, got {vocab_size}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise TreeError(f"token ids span {low}..{high}, outside the vocabulary 0..{vocab_size - 1}")
    return ids.astype(np.int64, copy=False)


def _context_counts(ids: np.ndarray, vocab_size: int, context_size: int, window: int) -> np.ndarray:
    """``[N, 2V]``: 1/distance-weighted counts of frequent tokens left (first V) and right of x."""
    counts = np.bincount(ids, minlength=vocab_size)
    contexts = np.argsort(-counts, kind="stable")[: min(context_size, vocab_size)]
    v = len(contexts)
    column = np.full(vocab_size, -1, dtype=np.int64)
    column[contexts] = np.arange(v)
    table = np.zeros(vocab_size * 2 * v, dtype=np.float64)
    for distance in range(1, window + 1):
        # (token, its context, which half): the context sits `distance` before / after the token.
        for who, ctx, side in (
            (ids[distance:], ids[:-distance], 0),
            (ids[:-distance], ids[distance:], v),
        ):
            col = column[ctx]
            keep = col >= 0
            key = who[keep] * (2 * v) + side + col[keep]
            table += np.bincount(
                key, weights=np.full(len(key), 1.0 / distance), minlength=table.size
            )
    return table.reshape(vocab_size, 2 * v).astype(np.float32)


def _ppmi(table: np.ndarray, smoothing: float = 0.75) -> np.ndarray:
    total = table.sum()
    if total <= 0:
        return np.zeros_like(table, dtype=np.float32)
    row = table.sum(1, keepdims=True)
    col = table.sum(0, keepdims=True) ** smoothing
    col_p = col / col.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(table / total) - np.log(row / total) - np.log(col_p)
    return np.where(table > 0, np.maximum(pmi, 0.0), 0.0).astype(np.float32)


def _randomized_svd_embedding(m: np.ndarray, dim: int, seed: int, power: int = 2) -> np.ndarray:
    """``U_r sqrt(S_r)`` of a truncated SVD of ``m`` (zero-padded if ``m`` has fewer columns)."""
    n, f = m.shape
    rank = min(dim, n, f)
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(m @ rng.standard_normal((f, min(rank + 10, f))).astype(np.float32))[0]
    for _ in range(power):  # power iterations sharpen the spectrum's decay
        q = np.linalg.qr(m @ np.linalg.qr(m.T @ q)[0])[0]
    u_small, s, _ = np.linalg.svd(q.T @ m, full_matrices=False)
    vectors = np.zeros((n, dim), dtype=np.float32)
    vectors[:, :rank] = (q @ u_small[:, :rank]) * np.sqrt(s[:rank])
    return vectors


def cooccurrence_vectors(
    token_ids: Any,
    vocab_size: int,
    *,
    dim: int = 64,
    window: int = 2,
    context_size: int = 1024,
    seed: int = 0,
) -> np.ndarray:
    """Per-token context vectors ``[N, dim]`` (PPMI + randomized SVD) from a token stream."""
    if dim < 1 or window < 1 or context_size < 1:
        raise TreeError("dim, window and context_size must all be at least 1")
    ids = _validated_stream(token_ids, vocab_size)
    table = _context_counts(ids, vocab_size, context_size, window)
    return _randomized_svd_embedding(_ppmi(table), dim, seed)


def cooccurrence_tree(
    token_ids: Any,
    vocab_size: int,
    branching: int | Sequence[int] = 64,
    *,
    leaf_cluster_size: int | None = None,
    seed: int = 0,
    dim: int = 64,
    window: int = 2,
    context_size: int = 1024,
    iterations: int = 8,
    tokenizer_fingerprint: str | None = None,
) -> VocabTree:
    """An ``embedding`` tree on :func:`cooccurrence_vectors`, weighted by token frequency."""
    ids = _validated_stream(token_ids, vocab_size)
    vectors = cooccurrence_vectors(
        ids, vocab_size, dim=dim, window=window, context_size=context_size, seed=seed
    )
    return embedding_tree(
        vectors,
        np.bincount(ids, minlength=vocab_size),
        branching,
        leaf_cluster_size=leaf_cluster_size,
        seed=seed,
        iterations=iterations,
        tokenizer_fingerprint=tokenizer_fingerprint,
        method="cooccurrence",
        params={"dim": dim, "window": window, "context_size": context_size},
    )
