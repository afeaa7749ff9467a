"""The ``cooccurrence`` construction: token vectors from a token stream, then ``embedding``.

METHOD.md §2 (``embedding`` with vectors computed from a token stream). Each token is described
by how often each of the ``context_size`` most frequent tokens occurs just before it and just
after it (within ``window`` positions, weighted 1/distance); the counts become positive
pointwise mutual information with context-distribution smoothing (Levy, Goldberg & Dagan 2015,
exponent 0.75), and a randomized truncated SVD (Halko, Martinsson & Tropp 2011) reduces them to
``dim`` dense dimensions, scaled by the square root of the singular values. Separate left and
right contexts make tokens that play the same syntactic role land close together.
Tokens that never occur get the zero vector.

Determinism across machines. The k-means that follows is exact (``cluster``), but an SVD is float
arithmetic that no grid makes exact: its last bits vary with the BLAS kernel, thread count and
numpy's SIMD ``log``, amplified by near-equal singular values. Between OpenBLAS with one and two
threads and its Haswell, SkylakeX and Nehalem kernels we measured coordinate differences up to
2e-12 of the largest coordinate (in float32, enough to change trees). So the pipeline
runs in float64 and the vectors are rounded to ``2^VECTOR_GRID_BITS`` steps over their largest
magnitude with canonical column signs: a coordinate rounds differently on two machines only if
it lies within that noise of a step boundary. Summed over all coordinates (``2 |noise| / step``
each) that chance is about 3e-3 at N = 50,257 (a 10M-token stream, ``dim = 64``) and 2e-4 at
N = 4,096; none differed in our runs. A single coordinate moved by one step changed the tree in 1
of 200 trials (N = 4,096), so trees differ with a probability of order 1e-5: an estimate, not a
bound. Save a tree you want to reuse exactly.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from .build import embedding_tree
from .grid import to_grid
from .tree import TreeError, VocabTree

__all__ = ["cooccurrence_vectors", "cooccurrence_tree"]

# Coarse enough that float64 noise rarely crosses a step (module docstring), fine enough that a
# column 100 times smaller than the largest keeps ~160 steps; trees built on 8- to 20-bit grids
# had the same within-group squared distance to 1%.
VECTOR_GRID_BITS = 14


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
    # float64 throughout (N x 2V: 0.8 GB at N = 50k, V = 1024, twice float32's), so that the SVD's
    # rounding noise sits far below the grid the vectors are rounded to (``_canonical``).
    return table.reshape(vocab_size, 2 * v)


def _ppmi(table: np.ndarray, smoothing: float = 0.75) -> np.ndarray:
    """Positive PMI ``max(0, log p(x, c) / (p(x) p_s(c)))``, computed in place (one N x 2V)."""
    total = table.sum()
    if total <= 0:
        return np.zeros_like(table)
    col = table.sum(0) ** smoothing
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(table)  # log p(x, c) - log p(x) = log n(x, c) - log n(x): the total cancels
        pmi -= np.log(table.sum(1, keepdims=True))
        pmi -= np.log(col / col.sum())
    np.maximum(pmi, 0.0, out=pmi)
    pmi[table <= 0] = 0.0  # unseen pairs (and unseen tokens' NaN rows)
    return pmi


def _randomized_svd_embedding(m: np.ndarray, dim: int, seed: int, power: int = 2) -> np.ndarray:
    """``U_r sqrt(S_r)`` of a truncated SVD of ``m`` (zero-padded if ``m`` has fewer columns)."""
    n, f = m.shape
    rank = min(dim, n, f)
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(m @ rng.standard_normal((f, min(rank + 10, f))))[0]
    for _ in range(power):  # power iterations sharpen the spectrum's decay
        q = np.linalg.qr(m @ np.linalg.qr(m.T @ q)[0])[0]
    u_small, s, _ = np.linalg.svd(q.T @ m, full_matrices=False)
    vectors = np.zeros((n, dim))
    vectors[:, :rank] = (q @ u_small[:, :rank]) * np.sqrt(s[:rank])
    return vectors


def _canonical(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` rounded to ``2^VECTOR_GRID_BITS`` steps over their largest magnitude, each
    column's sign chosen so that its largest-magnitude entry (the first of equals) is positive.

    An SVD's singular vectors are defined up to sign and its rounding varies with the BLAS; on
    this coarse grid the float64 noise (about 1e-12 of the largest entry) rarely crosses a step
    boundary (see the module docstring for how rarely), and ``rint`` being odd, the sign is
    chosen on values that do not depend on the input's sign. Rows that are zero in exact
    arithmetic (tokens that never occur) come out exactly zero, not as +-1e-16 noise.
    """
    grid, shift = to_grid(vectors, VECTOR_GRID_BITS)
    top = np.argmax(np.abs(grid), axis=0)
    grid *= np.where(grid[top, np.arange(grid.shape[1])] < 0, -1.0, 1.0)
    return np.ldexp(grid, -shift)


def cooccurrence_vectors(
    token_ids: Any,
    vocab_size: int,
    *,
    dim: int = 64,
    window: int = 2,
    context_size: int = 1024,
    seed: int = 0,
) -> np.ndarray:
    """Per-token context vectors ``[N, dim]`` (PPMI + randomized SVD) from a token stream.

    Rounded to a coarse grid with canonical signs (``_canonical``), so that the same stream and
    seed give the same vectors on any machine except with a probability estimated in the
    module docstring.
    """
    if dim < 1 or window < 1 or context_size < 1:
        raise TreeError("dim, window and context_size must all be at least 1")
    ids = _validated_stream(token_ids, vocab_size)
    table = _context_counts(ids, vocab_size, context_size, window)
    return _canonical(_randomized_svd_embedding(_ppmi(table), dim, seed))


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
