"""The ``cooccurrence`` construction: token vectors from a token stream, then ``embedding``.

docs/method.md §2 (``embedding`` with vectors computed from a token stream). Each token is described
by how often each of the ``context_size`` most frequent tokens occurs just before it and just
after it (within ``window`` positions, weighted 1/distance); the counts become positive
pointwise mutual information with context-distribution smoothing (Levy, Goldberg & Dagan 2015,
exponent 0.75), and a randomized truncated SVD (Halko, Martinsson & Tropp 2011) reduces them to
``dim`` dense dimensions, scaled by the square root of the singular values. Separate left and
right contexts make tokens that play the same syntactic role land close together.
Tokens that never occur get the zero vector. The ``N x 2V`` table is kept sparse (the pairs that
occur) and made dense only a block of rows at a time, for counting and for the SVD's products.

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

from collections.abc import Iterator, Sequence
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
# Entries of a dense block of the [N, 2V] table (32 MB in float64) and stream positions counted
# at a time: beyond the stream, its token order and the non-zero counts, memory independent of
# N x 2V (4 GiB at N = 256k in float64) and of the stream's length.
_BLOCK_ENTRIES = 1 << 22
_STREAM_CHUNK = 1 << 22


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


def _row_blocks(rows: int, width: int) -> list[tuple[int, int]]:
    """``(first, end)`` rows of the blocks of at most ``_BLOCK_ENTRIES`` entries (or one row) of a
    ``[rows, width]`` table: the one unit in which the table is ever dense."""
    step = max(1, _BLOCK_ENTRIES // width)
    return [(low, min(low + step, rows)) for low in range(0, rows, step)]


def _context_counts(
    ids: np.ndarray, vocab_size: int, context_size: int, window: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """The non-zero entries of the ``[N, 2V]`` table of 1/distance-weighted counts of the V most
    frequent tokens left (first V columns) and right of each token x: ``(keys, counts, 2V)``,
    ``key = x 2V + column`` increasing.

    Counted one block of rows at a time over the stream's positions grouped by token, so memory
    holds one block of ``_BLOCK_ENTRIES`` entries per distance and ``_STREAM_CHUNK`` positions,
    never ``N x 2V``. Each entry is ``sum_d n_d / d`` over the integer counts ``n_d`` at distance
    d, so neither the blocks nor the order of counting change a bit of it.
    """
    counts = np.bincount(ids, minlength=vocab_size)
    contexts = np.argsort(-counts, kind="stable")[: min(context_size, vocab_size)]
    v = len(contexts)
    width = 2 * v
    column = np.full(vocab_size, -1, dtype=np.int64)
    column[contexts] = np.arange(v)
    by_token = np.argsort(ids, kind="stable")  # positions of token 0, then of token 1, ...
    first = np.r_[0, np.cumsum(counts)]
    keys, values = [], []
    for low, high in _row_blocks(vocab_size, width):
        n_d = np.zeros((window, (high - low) * width))
        for start in range(first[low], first[high], _STREAM_CHUNK):
            at = by_token[start : min(start + _STREAM_CHUNK, first[high])]
            row = (ids[at] - low) * width
            for distance in range(1, window + 1):
                # The context sits `distance` before (first half) or after (second half) x.
                for side, where in ((0, at - distance), (v, at + distance)):
                    inside = (where >= 0) & (where < len(ids))
                    col = column[ids[where[inside]]]
                    keep = col >= 0
                    key = row[inside][keep] + side + col[keep]
                    n_d[distance - 1] += np.bincount(key, minlength=n_d.shape[1])
        # In float64, as everything up to the SVD, so that its rounding noise sits far below the
        # grid the vectors are rounded to (``_canonical``).
        block = n_d[0]
        for distance in range(2, window + 1):
            block += n_d[distance - 1] / distance
        nonzero = np.flatnonzero(block)
        keys.append(nonzero + low * width)
        values.append(block[nonzero])
    return np.concatenate(keys), np.concatenate(values), width


def _ppmi(keys: np.ndarray, counts: np.ndarray, width: int, smoothing: float = 0.75) -> np.ndarray:
    """Positive PMI ``max(0, log p(x, c) / (p(x) p_s(c)))`` of each non-zero count; a zero count
    has PMI zero (unseen pairs, and the rows of tokens that never occur)."""
    rows, cols = np.divmod(keys, width)
    col = np.bincount(cols, weights=counts, minlength=width) ** smoothing
    # log p(x, c) - log p(x) = log n(x, c) - log n(x): the total cancels. Read where counted
    # only, so that no log sees a zero.
    pmi = np.log(counts)
    pmi -= np.log(np.bincount(rows, weights=counts)[rows])
    pmi -= np.log((col / col.sum())[cols])
    return np.maximum(pmi, 0.0, out=pmi)


def _dense_blocks(
    keys: np.ndarray, values: np.ndarray, shape: tuple[int, int]
) -> Iterator[tuple[slice, np.ndarray]]:
    """The sparse ``[n, f]`` matrix with ``values`` at ``keys = row f + column`` (increasing), as
    ``(rows, dense block)`` over consecutive blocks of rows (``_row_blocks``)."""
    n, f = shape
    blocks = _row_blocks(n, f)
    bounds = np.searchsorted(keys, np.array([0] + [high for _, high in blocks]) * f).tolist()
    for (low, high), a, b in zip(blocks, bounds[:-1], bounds[1:], strict=True):
        block = np.zeros((high - low) * f)
        block[keys[a:b] - low * f] = values[a:b]
        yield slice(low, high), block.reshape(high - low, f)


def _randomized_svd_embedding(
    keys: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    dim: int,
    seed: int,
    power: int = 2,
) -> np.ndarray:
    """``U_r sqrt(S_r)`` of a truncated SVD of the sparse ``m`` (``_dense_blocks``), zero-padded
    if ``m`` has fewer columns than ``dim``. Each product with ``m`` takes it a block of rows at a
    time: the flops of the dense product, the memory of one block."""
    n, f = shape

    def times(right: np.ndarray) -> np.ndarray:  # m @ right
        return np.concatenate([block @ right for _, block in _dense_blocks(keys, values, shape)])

    def transposed_times(left: np.ndarray) -> np.ndarray:  # m.T @ left
        out = np.zeros((f, left.shape[1]))
        for rows, block in _dense_blocks(keys, values, shape):
            out += block.T @ left[rows]
        return out

    rank = min(dim, n, f)
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(times(rng.standard_normal((f, min(rank + 10, f)))))[0]
    for _ in range(power):  # power iterations sharpen the spectrum's decay
        q = np.linalg.qr(times(np.linalg.qr(transposed_times(q))[0]))[0]
    u_small, s, _ = np.linalg.svd(transposed_times(q).T, full_matrices=False)
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
    keys, counts, width = _context_counts(ids, vocab_size, context_size, window)
    pmi = _ppmi(keys, counts, width)
    return _canonical(_randomized_svd_embedding(keys, pmi, (vocab_size, width), dim, seed))


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
