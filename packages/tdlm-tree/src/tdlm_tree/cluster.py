"""Balanced, size-constrained k-means: one level of the ``embedding`` construction.

docs/method.md §2 (``embedding``). Partition ``n`` vectors into ``g = ceil(n / k)`` groups,
``g - 1`` of exactly ``k`` and one holding the remainder (``shape.group_sizes``), minimising
the within-group sum of squared distances. Two stages, each pass linear in ``n`` (but for the
refinement's ``g x g`` centroid distances), so that N = 256k tokens in 768 dimensions cluster in
about three minutes on one core:

1. **Recursive balanced bisection** (initialisation). Split a set in two with 2-means whose cut
   is forced to a multiple of ``k`` (difference of squared distances to the two centroids is a
   projection onto ``c_2 - c_1``, so the split is a sort), best of a few seedings; recurse until
   a set fits one group. Well-separated clusters of exactly ``k`` points are contiguous along a
   good projection and therefore never cut.
2. **Balanced Lloyd refinement**. Alternate centroid updates with a capacity-constrained
   assignment: all (point, candidate centroid) pairs among each point's nearest few, taken
   greedily by distance while the centroid has room; points left over are placed the same way
   among all the centroids that still have room. Each group's capacity is its size from stage 1,
   so sizes never change. The best assignment seen (by within-group squared distance) is kept.
   A point's nearest few are sought among the ``_NEIGHBOURS`` centroids nearest its own group's,
   not among all ``g``, whose ``n g = n^2 / k`` distances per pass took 100 of 132 s at
   N = 128k, k = 64 (768-d, one core) and grow four-fold with each doubling of N. Where
   ``g <= _NEIGHBOURS`` (N <= 65,536 at k = 64) that is every centroid, and the labels are
   those of the search over all.

Every decision is exact, so the labels are the same for any BLAS, thread count, SIMD width or
CPU (``grid``): the vectors are mapped to an integer grid, centroids are rounded to it, and
projections, distances and the objective are exact integers. Ties break by index everywhere:
stable sorts, and an exact selection of each point's nearest centroids in place of
``np.argpartition``, whose choice among equal values depends on the SIMD sort numpy dispatches to.
"""

import operator

import numpy as np

from .grid import grid_bits, to_grid
from .shape import group_sizes

__all__ = ["balanced_kmeans", "group_means", "group_sums", "within_group_sq_distance"]

_ROW_CHUNK = 8192  # rows of a distance matrix at a time: bounds memory at chunk x groups
# Centroids a group's points are compared with in the assignment. Against the search over all,
# at N = 128,256, k = 64 (2,004 groups), 1,024 changed the k-means objective by +0.04% (random
# 768-d vectors), +0.06% (co-occurrence vectors) and -0.06% (a Gaussian mixture): about what
# another seed changes (0.07%); 256 changed it by +0.1% to +0.6%.
_NEIGHBOURS = 1024


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _grid_centroids(sums: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Group means rounded to the grid. Sums of grid rows are exact in any order (integers below
    ``n 2^Q < 2^53``) and the division is correctly rounded, so they are the same everywhere."""
    return np.rint(sums / sizes[:, None])


def _fit(sums: np.ndarray, sizes: np.ndarray, centroids: np.ndarray) -> int:
    """``sum_g (2 T_g - n_g c_g) . c_g``, exactly: the within-group squared distance to the grid
    centroids is ``sum_i |x_i|^2`` minus this (expand ``|x_i - c_g|^2``; ``T_g``: the group's sum).

    Integers too large for float64, so multiplied in Python's, which neither round nor overflow:
    a comparison of two fits cannot flip.
    """
    scaled = 2 * sums.astype(np.int64) - sizes[:, None] * centroids.astype(np.int64)
    return sum(
        map(operator.mul, scaled.ravel().tolist(), centroids.astype(np.int64).ravel().tolist())
    )


def _two_means_split(
    x: np.ndarray, n_left: int, c1: np.ndarray, c2: np.ndarray, iters: int
) -> tuple[np.ndarray, int]:
    """2-means from grid centres ``c1, c2`` with the cut forced after ``n_left`` rows.

    Returns the permutation (left half first) and the split's :func:`_fit` (larger is better).
    """
    sizes = np.array([n_left, len(x) - n_left])
    total = x.sum(0)
    was_left = None
    for _ in range(iters):
        # |x - c1|^2 - |x - c2|^2 = 2 x.(c2 - c1) + const, exact: nearest-to-c1 first, ties by row.
        order = np.argsort(x @ (c2 - c1), kind="stable")
        in_left = np.zeros(len(x), dtype=bool)
        in_left[order[:n_left]] = True
        # Exact, like every sum of grid rows, in any order: so after the first pass only the rows
        # that changed sides are added and taken away (few, once the split settles).
        if was_left is None:
            left_sum = in_left @ x
        else:
            left_sum = left_sum + x[in_left & ~was_left].sum(0) - x[was_left & ~in_left].sum(0)
        sums = np.stack([left_sum, total - left_sum])
        c1, c2 = _grid_centroids(sums, sizes)
        if was_left is not None and np.array_equal(in_left, was_left):
            break
        was_left = in_left
    return order, _fit(sums, sizes, np.stack([c1, c2]))


def _bisect_order(
    x: np.ndarray,
    sq_norms: np.ndarray,
    n_left: int,
    rng: np.random.Generator,
    iters: int,
    tries: int,
) -> np.ndarray:
    """A permutation of ``x``'s rows whose first ``n_left`` form the left half of a 2-means split.

    The best of ``tries`` seedings: farthest-point seeding first (two distant centres), then
    random pairs of rows. A cut forced through a cluster cannot be undone by the refinement
    stage, so a few cheap restarts here are worth it. ``argmax`` and ``max`` keep the first of
    equals, and what they compare is exact.
    """
    first = x[rng.integers(len(x))]
    c1 = x[np.argmax(sq_norms - 2 * (x @ first))]  # |x - p|^2 - |p|^2, exact on the grid
    seeds = [(c1, x[np.argmax(sq_norms - 2 * (x @ c1))])]
    for _ in range(tries - 1):
        i, j = rng.choice(len(x), 2, replace=False)
        seeds.append((x[i], x[j]))
    splits = [_two_means_split(x, n_left, a, b, iters) for a, b in seeds]
    return max(splits, key=lambda split: split[1])[0]


def _bisection_labels(
    x: np.ndarray, sq_norms: np.ndarray, k: int, rng: np.random.Generator, iters: int, tries: int
) -> np.ndarray:
    labels = np.empty(len(x), dtype=np.int64)
    next_label = 0
    stack = [np.arange(len(x))]
    while stack:
        index = stack.pop()
        groups = _ceil_div(len(index), k)
        if groups == 1:
            labels[index] = next_label
            next_label += 1
            continue
        n_left = (groups // 2) * k  # the left half holds only full groups; the remainder goes right
        order = _bisect_order(x[index], sq_norms[index], n_left, rng, iters, tries)
        stack.append(index[order[n_left:]])
        stack.append(index[order[:n_left]])
    return labels


def group_sums(x: np.ndarray, labels: np.ndarray, groups: int) -> np.ndarray:
    """Group sums ``[groups, d]`` in float64; every group must be non-empty.

    Each group's rows are added in row order, elementwise (numpy's ``sum`` over a contiguous
    block, several times faster here than ``np.add.reduceat``): a fixed order of additions, not
    a matrix product, so the result does not depend on the BLAS even where it is inexact.
    """
    x = np.asarray(x, dtype=np.float64)
    members = np.argsort(labels, kind="stable")
    ends = np.cumsum(np.bincount(labels, minlength=groups)).tolist()
    # A group's rows gathered at a time: no sorted copy of x (page faults, memory).
    return np.stack([x[members[a:b]].sum(0) for a, b in zip([0, *ends[:-1]], ends, strict=True)])


def group_means(
    x: np.ndarray, labels: np.ndarray, groups: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Group means ``[groups, d]`` in float64, weighted by ``weights`` where given.

    Every group must be non-empty; a group whose weights are all zero gets its plain mean.
    """
    size = np.bincount(labels, minlength=groups)
    if weights is None:
        return group_sums(x, labels, groups) / size[:, None]
    total = np.bincount(labels, weights=weights, minlength=groups)
    w = np.where((total <= 0)[labels], 1.0, weights)  # an all-zero group: plain mean
    total = np.where(total > 0, total, size)
    return group_sums(x * w[:, None], labels, groups) / total[:, None]


def _nearest(d: np.ndarray, m: int) -> np.ndarray:
    """Mask of each row's ``m`` smallest entries, ties going to the smaller column.

    The ``m``-th smallest value is well defined, so take every entry below it and then the equal
    ones in column order: unlike ``np.argpartition``, independent of how numpy sorts.
    """
    kth = np.partition(d, m - 1, axis=1)[:, m - 1 : m]
    mask = d <= kth
    crowded = np.flatnonzero(mask.sum(1) > m)  # rows with more than m candidates: ties at kth
    below = d[crowded] < kth[crowded]
    tied = d[crowded] == kth[crowded]
    need = m - below.sum(1, keepdims=True)
    mask[crowded] = below | (tied & (np.cumsum(tied, axis=1) <= need))
    return mask


def _candidate_pairs(
    x: np.ndarray, centroids: np.ndarray, allowed: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``m`` nearest allowed centroids as (rows, centroid ids, |x - c|^2 - |x|^2).

    Exact on the grid, and listed row-major, so a stable sort by distance breaks ties by
    (row, centroid id).
    """
    c_norm = (centroids**2).sum(1)
    c_norm[~allowed] = np.inf
    m = min(m, int(allowed.sum()))
    rows, cols, dists = [], [], []
    for start in range(0, len(x), _ROW_CHUNK):
        d = x[start : start + _ROW_CHUNK] @ centroids.T
        d *= -2.0
        d += c_norm
        row, col = np.nonzero(_nearest(d, m))
        rows.append(row + start)
        cols.append(col)
        dists.append(d[row, col])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def _greedy_fill(
    rows: np.ndarray, cols: np.ndarray, dists: np.ndarray, labels: np.ndarray, room: np.ndarray
) -> None:
    """Assign pairs in order of distance (ties by row, then centroid id) while the point is free
    and its centroid has room."""
    order = np.lexsort((cols, rows, dists))
    for i, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if labels[i] < 0 and room[c] > 0:
            labels[i] = c
            room[c] -= 1


def _neighbours(centroids: np.ndarray, count: int) -> np.ndarray:
    """``[g, min(count, g)]``: each centroid's ``count`` nearest centroids in increasing id;
    exact on the grid, ties going to the smaller id (``_nearest``)."""
    c_norm = (centroids**2).sum(1)
    count = min(count, len(centroids))
    near = []
    for start in range(0, len(centroids), _ROW_CHUNK):
        d = centroids[start : start + _ROW_CHUNK] @ centroids.T
        d *= -2.0
        d += c_norm
        near.append(np.nonzero(_nearest(d, count))[1].reshape(-1, count))
    return np.concatenate(near)


def _neighbourhood_pairs(
    x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`_candidate_pairs` over all centroids, but each row looks only among the
    ``_NEIGHBOURS`` centroids nearest its own group's: ``n x _NEIGHBOURS`` distances instead of
    ``n x g``, which at ``g = n / k`` would grow as ``n^2``. The same pairs wherever
    ``g <= _NEIGHBOURS``.

    Consecutive groups with the same neighbourhood (all of them where it spans every centroid)
    are taken together, ``_ROW_CHUNK`` rows at a time, for fewer and larger matrix products.
    """
    groups = len(centroids)
    near = _neighbours(centroids, _NEIGHBOURS)
    m = min(m, near.shape[1])
    c_norm = (centroids**2).sum(1)
    members = np.argsort(labels, kind="stable")
    ends = np.cumsum(np.bincount(labels, minlength=groups))
    new_run = np.r_[True, (near[1:] != near[:-1]).any(1)]
    firsts = np.flatnonzero(new_run)  # the first group of each run of equal neighbourhoods
    run_ends = ends[np.r_[firsts[1:] - 1, groups - 1]].tolist()
    rows, cols, dists = [], [], []
    for g, a, b in zip(firsts.tolist(), [0, *run_ends[:-1]], run_ends, strict=True):
        for start in range(a, b, _ROW_CHUNK):
            chunk = members[start : min(start + _ROW_CHUNK, b)]
            d = x[chunk] @ centroids[near[g]].T
            d *= -2.0
            d += c_norm[near[g]]
            row, col = np.nonzero(_nearest(d, m))
            rows.append(chunk[row])
            cols.append(near[g][col])
            dists.append(d[row, col])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def _balanced_assign(
    x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, capacity: np.ndarray, candidates: int
) -> np.ndarray:
    """A capacity-constrained assignment: first among each group's neighbourhood
    (:func:`_neighbourhood_pairs`), then the points left over among all centroids with room."""
    new_labels = np.full(len(x), -1, dtype=np.int64)
    room = capacity.copy()
    _greedy_fill(*_neighbourhood_pairs(x, labels, centroids, candidates), new_labels, room)
    free = np.flatnonzero(new_labels < 0)
    while len(free):
        rows, cols, dists = _candidate_pairs(x[free], centroids, room > 0, candidates)
        sub = np.full(len(free), -1, dtype=np.int64)
        _greedy_fill(rows, cols, dists, sub, room)
        new_labels[free] = sub
        free = free[sub < 0]
    return new_labels


def within_group_sq_distance(x: np.ndarray, labels: np.ndarray) -> float:
    """Sum over points of the squared distance to their group's mean (the k-means objective)."""
    x = np.asarray(x, dtype=np.float64)
    groups = int(labels.max()) + 1
    return float(((x - group_means(x, labels, groups)[labels]) ** 2).sum())


def balanced_kmeans(
    x: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    iterations: int = 8,
    bisect_iterations: int = 8,
    bisect_tries: int = 3,
    candidates: int = 8,
) -> np.ndarray:
    """Labels ``[n]`` in ``0..ceil(n/k)-1`` with the sizes of ``shape.group_sizes(n, k)``.

    A function of ``x``, ``k``, ``seed`` and the options alone, identical on any machine (see
    the module docstring); it sees ``x`` only through its integer grid (``grid.to_grid``), so
    scaling ``x`` by a power of two, permuting its dimensions or negating some of them leaves
    the labels unchanged. Group ids are ordered as the bisection left them, so nearby groups
    tend to have nearby ids.
    """
    x = np.asarray(x)
    x = to_grid(x, grid_bits(x.shape[1]))[0]
    n = len(x)
    groups = _ceil_div(n, k)
    if groups == 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    sq_norms = np.einsum("ij,ij->i", x, x)  # exact: at most d 2^(2Q) < 2^53
    labels = _bisection_labels(x, sq_norms, k, rng, bisect_iterations, bisect_tries)
    capacity = np.bincount(labels, minlength=groups)
    assert sorted(capacity.tolist(), reverse=True) == group_sizes(n, k)
    # The objective sum_i |x_i - c_g|^2 = sum_i |x_i|^2 - fit, in exact integers.
    sq_total = sum(sq_norms.astype(np.int64).tolist())
    sums = group_sums(x, labels, groups)
    centroids = _grid_centroids(sums, capacity)
    best_cost = sq_total - _fit(sums, capacity, centroids)
    for _ in range(iterations):
        new_labels = _balanced_assign(x, labels, centroids, capacity, candidates)
        sums = group_sums(x, new_labels, groups)
        new_centroids = _grid_centroids(sums, capacity)
        new_cost = sq_total - _fit(sums, capacity, new_centroids)
        if new_cost * 10**6 >= best_cost * (10**6 - 1):  # fell by under a millionth: stop
            break
        labels, centroids, best_cost = new_labels, new_centroids, new_cost
    return labels
