"""Balanced, size-constrained k-means: one level of the ``embedding`` construction.

METHOD.md §2 (``embedding``). Partition ``n`` vectors into ``g = ceil(n / k)`` groups, ``g - 1`` of
exactly ``k`` and one holding the remainder (``shape.group_sizes``), minimising the within-group
sum of squared distances. Two stages, both linear in ``n`` per pass so that N = 50k tokens in
768 dimensions clusters in seconds on two cores:

1. **Recursive balanced bisection** (initialisation). Split a set in two with 2-means whose cut
   is forced to a multiple of ``k`` (difference of squared distances to the two centroids is a
   projection onto ``c_2 - c_1``, so the split is a sort), best of a few seedings; recurse until
   a set fits one group. Well-separated clusters of exactly ``k`` points are contiguous along a
   good projection and therefore never cut.
2. **Balanced Lloyd refinement**. Alternate centroid updates with a capacity-constrained
   assignment: all (point, candidate centroid) pairs among each point's nearest few, taken
   greedily by distance while the centroid has room; points left over are placed the same way
   among the centroids that still have room. Each group's capacity is its size from stage 1, so
   sizes never change. The best assignment seen (by within-group squared distance) is kept.
"""

import numpy as np

from .shape import group_sizes

__all__ = ["balanced_kmeans", "group_means", "within_group_sq_distance"]

_ROW_CHUNK = 8192  # rows of the distance matrix at a time: bounds memory at chunk x groups


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _two_means_split(
    x: np.ndarray, n_left: int, c1: np.ndarray, c2: np.ndarray, iters: int
) -> tuple[np.ndarray, float]:
    """2-means from centres ``c1, c2`` with the cut forced after ``n_left`` rows.

    Returns the permutation (left half first) and the split's within-halves squared distance
    up to a constant (``-n_l |m_l|^2 - n_r |m_r|^2``; the constant ``sum |x|^2`` is shared).
    """
    split = None
    for _ in range(iters):
        # |x - c1|^2 - |x - c2|^2 = 2 x.(c2 - c1) + const: nearest-to-c1 first.
        order = np.argsort(x @ (c2 - c1), kind="stable")
        left = np.sort(order[:n_left])
        c1, c2 = x[order[:n_left]].mean(0), x[order[n_left:]].mean(0)
        if split is not None and np.array_equal(left, split):
            break
        split = left
    cost = -n_left * float(c1 @ c1) - (len(x) - n_left) * float(c2 @ c2)
    return order, cost


def _bisect_order(
    x: np.ndarray, n_left: int, rng: np.random.Generator, iters: int, tries: int
) -> np.ndarray:
    """A permutation of ``x``'s rows whose first ``n_left`` form the left half of a 2-means split.

    The best of ``tries`` seedings: farthest-point seeding first (two distant centres), then
    random pairs of rows. A cut forced through a cluster cannot be undone by the refinement
    stage, so a few cheap restarts here are worth it.
    """
    first = x[rng.integers(len(x))]
    c1 = x[np.argmax(((x - first) ** 2).sum(1))]
    seeds = [(c1, x[np.argmax(((x - c1) ** 2).sum(1))])]
    for _ in range(tries - 1):
        i, j = rng.choice(len(x), 2, replace=False)
        seeds.append((x[i], x[j]))
    splits = [_two_means_split(x, n_left, a, b, iters) for a, b in seeds]
    return min(splits, key=lambda split: split[1])[0]


def _bisection_labels(
    x: np.ndarray, k: int, rng: np.random.Generator, iters: int, tries: int
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
        order = _bisect_order(x[index], n_left, rng, iters, tries)
        stack.append(index[order[n_left:]])
        stack.append(index[order[:n_left]])
    return labels


def group_means(
    x: np.ndarray, labels: np.ndarray, groups: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Group means ``[groups, d]``, weighted by ``weights`` where given.

    Every group must be non-empty; a group whose weights are all zero gets its plain mean.
    """
    size = np.bincount(labels, minlength=groups)
    if weights is None:
        total, weighted = size, x
    else:
        total = np.bincount(labels, weights=weights, minlength=groups)
        w = np.where((total <= 0)[labels], 1.0, weights)  # an all-zero group: plain mean
        total = np.where(total > 0, total, size)
        weighted = x * w[:, None].astype(x.dtype)
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.cumsum(size)[:-1]]
    sums = np.add.reduceat(weighted[order], starts, axis=0)
    return (sums / total[:, None]).astype(x.dtype)


def _candidate_pairs(
    x: np.ndarray, centroids: np.ndarray, allowed: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``m`` nearest allowed centroids as (rows, centroid ids, |x - c|^2 - |x|^2)."""
    c_norm = (centroids.astype(np.float64) ** 2).sum(1)
    c_norm[~allowed] = np.inf
    m = min(m, int(allowed.sum()))
    rows, cols, dists = [], [], []
    for start in range(0, len(x), _ROW_CHUNK):
        block = x[start : start + _ROW_CHUNK]
        d = c_norm[None, :] - 2.0 * (block @ centroids.T)
        top = (
            np.argpartition(d, m - 1, axis=1)[:, :m]
            if m < d.shape[1]
            else np.tile(np.arange(d.shape[1]), (len(block), 1))
        )
        rows.append(np.repeat(np.arange(start, start + len(block)), top.shape[1]))
        cols.append(top.ravel())
        dists.append(np.take_along_axis(d, top, axis=1).ravel())
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def _greedy_fill(
    rows: np.ndarray, cols: np.ndarray, dists: np.ndarray, labels: np.ndarray, room: np.ndarray
) -> None:
    """Assign pairs in order of distance while the point is free and its centroid has room."""
    order = np.argsort(dists, kind="stable")
    for i, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if labels[i] < 0 and room[c] > 0:
            labels[i] = c
            room[c] -= 1


def _balanced_assign(
    x: np.ndarray, centroids: np.ndarray, capacity: np.ndarray, candidates: int
) -> np.ndarray:
    labels = np.full(len(x), -1, dtype=np.int64)
    room = capacity.copy()
    free = np.arange(len(x))
    while len(free):
        rows, cols, dists = _candidate_pairs(x[free], centroids, room > 0, candidates)
        sub = np.full(len(free), -1, dtype=np.int64)
        _greedy_fill(rows, cols, dists, sub, room)
        labels[free] = sub
        free = free[sub < 0]
    return labels


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

    Deterministic for a given ``seed``. Group ids are ordered as the bisection left them, so
    nearby groups tend to have nearby ids.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    groups = _ceil_div(n, k)
    if groups == 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    labels = _bisection_labels(x, k, rng, bisect_iterations, bisect_tries)
    capacity = np.bincount(labels, minlength=groups)
    assert sorted(capacity.tolist(), reverse=True) == group_sizes(n, k)
    # Objective via sum |x - m_g|^2 = sum |x|^2 - sum_g n_g |m_g|^2: no pass over x per check.
    total_sq = float((x.astype(np.float64) ** 2).sum())

    def cost(means: np.ndarray) -> float:
        return total_sq - float((capacity * (means.astype(np.float64) ** 2).sum(1)).sum())

    means = group_means(x, labels, groups)
    best_cost = cost(means)
    for _ in range(iterations):
        new_labels = _balanced_assign(x, means, capacity, candidates)
        new_means = group_means(x, new_labels, groups)
        new_cost = cost(new_means)
        if new_cost >= best_cost * (1 - 1e-6):
            break
        labels, means, best_cost = new_labels, new_means, new_cost
    return labels
