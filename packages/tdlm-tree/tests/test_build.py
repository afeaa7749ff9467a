"""Constructions (docs/method.md §2): determinism, size limits and what each one groups together."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdlm_tree import (
    TreeError,
    balanced_kmeans,
    cluster,
    embedding_tree,
    frequency_tree,
    group_sizes,
    random_tree,
    within_group_sq_distance,
)


def _planted(groups: int, k: int, dim: int, seed: int, noise: float = 1e-3):
    """``groups`` tight, well-separated clusters of exactly ``k`` points, shuffled."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((groups, dim))
    truth = np.repeat(np.arange(groups), k)
    x = centres[truth] + noise * rng.standard_normal((groups * k, dim))
    order = rng.permutation(len(x))
    return x[order], truth[order]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@given(st.integers(2, 30), st.integers(2, 40), st.integers(2, 32), st.integers(0, 10**6))
def test_planted_clusters_of_size_k_are_recovered_exactly(groups, k, dim, seed):
    x, truth = _planted(groups, k, dim, seed)
    labels = balanced_kmeans(x, k, seed=seed)
    assert _same_partition(labels, truth)


@given(st.integers(1, 3000), st.integers(2, 300), st.integers(1, 16), st.integers(0, 1000))
def test_balanced_kmeans_respects_size_limits(n, k, dim, seed):
    x = np.random.default_rng(seed).standard_normal((n, dim))
    labels = balanced_kmeans(x, k, seed=seed)
    sizes = np.bincount(labels)
    assert sorted(sizes.tolist(), reverse=True) == group_sizes(n, k)


@st.composite
def _grid_assignment(draw):
    """Integer grid points with many ties, a balanced labelling, its groups' grid centroids, and
    a number of candidates per point: the state of one balanced Lloyd assignment."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, d, k = draw(st.integers(2, 300)), draw(st.integers(1, 6)), draw(st.integers(1, 20))
    x = rng.integers(-4, 5, (n, d)).astype(np.float64)
    labels = rng.permutation(np.arange(n) // k)
    groups = int(labels.max()) + 1
    sums = cluster.group_sums(x, labels, groups)
    centroids = np.rint(sums / np.bincount(labels)[:, None])
    return x, labels, centroids, draw(st.integers(1, 10))


def _sorted_pairs(rows, cols, dists):
    order = np.lexsort((cols, rows))
    return rows[order], cols[order], dists[order]


@given(_grid_assignment())
def test_neighbourhood_search_is_the_search_over_all_when_it_spans_every_centroid(case):
    # N <= 65,536 at K = 64: the scaled search must leave those trees exactly as they were.
    x, labels, centroids, m = case
    assert len(centroids) <= cluster._NEIGHBOURS
    everywhere = np.ones(len(centroids), dtype=bool)
    near = cluster._neighbourhood_pairs(x, labels, centroids, m)
    full = cluster._candidate_pairs(x, centroids, everywhere, m)
    for a, b in zip(_sorted_pairs(*near), _sorted_pairs(*full), strict=True):
        np.testing.assert_array_equal(a, b)


@given(_grid_assignment(), st.integers(1, 6))
def test_neighbourhood_search_takes_each_points_nearest_among_its_groups_neighbours(case, size):
    # The path that runs at N = 256k (a neighbourhood smaller than the number of groups), against
    # brute force: distances |x - c|^2 - |x|^2, ties by centroid id, at both steps.
    x, labels, centroids, m = case
    with mock.patch.object(cluster, "_NEIGHBOURS", size):
        rows, cols, dists = cluster._neighbourhood_pairs(x, labels, centroids, m)
    ids = np.arange(len(centroids))
    c_dist = ((centroids[:, None] - centroids[None]) ** 2).sum(-1)
    expected = []
    for i, point in enumerate(x):
        own = c_dist[labels[i]]
        near = np.sort(np.lexsort((ids, own))[:size])
        d = ((point - centroids[near]) ** 2).sum(1) - (point**2).sum()
        for j in np.lexsort((near, d))[: min(m, len(near))]:
            expected.append((i, near[j], d[j]))
    got = sorted(zip(rows.tolist(), cols.tolist(), dists.tolist(), strict=True))
    assert got == sorted((int(i), int(c), float(d)) for i, c, d in expected)


@given(st.integers(1, 1500), st.integers(2, 60), st.integers(1, 8), st.integers(2, 6))
def test_a_small_neighbourhood_keeps_sizes_and_finds_planted_clusters(n, k, dim, size):
    # Points left over by the neighbourhood pass are placed among all centroids with room. (A
    # neighbourhood of 1, a group's own centroid, would keep the bisection's groups unrefined.)
    x = np.random.default_rng(n).standard_normal((n, dim))
    planted, truth = _planted(min(30, max(2, n // k)), k, dim + 1, seed=n)  # as separated as above
    with mock.patch.object(cluster, "_NEIGHBOURS", size):
        labels = balanced_kmeans(x, k, seed=n)
        assert _same_partition(balanced_kmeans(planted, k, seed=n), truth)
    assert sorted(np.bincount(labels).tolist(), reverse=True) == group_sizes(n, k)


@pytest.mark.parametrize("seed", range(5))
def test_clustering_beats_random_grouping(seed):
    # A Gaussian mixture whose components are not of size k: no exact answer, but structure.
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((37, 24)) * 3
    x = centres[rng.integers(0, 37, 2000)] + rng.standard_normal((2000, 24))
    clustered = balanced_kmeans(x, 32, seed=seed)
    random = random_tree(2000, 32, seed=seed).parents[0]
    assert within_group_sq_distance(x, clustered) < 0.5 * within_group_sq_distance(x, random)


def test_embedding_tree_groups_planted_clusters_at_every_level():
    # 4 super-clusters, each of 4 clusters of 8 tokens: level 1 must recover the clusters and
    # level 2 the super-clusters (parents are weighted means of their children).
    rng = np.random.default_rng(0)
    supers = rng.standard_normal((4, 16)) * 10
    centres = supers.repeat(4, axis=0) + rng.standard_normal((16, 16))
    truth = np.repeat(np.arange(16), 8)
    x = centres[truth] + 1e-3 * rng.standard_normal((128, 16))
    tree = embedding_tree(x, rng.integers(1, 50, 128), 4, leaf_cluster_size=8, seed=0)
    assert tree.level_sizes == (128, 16, 4, 1)
    assert _same_partition(tree.ancestors[:, 1], truth)
    assert _same_partition(tree.ancestors[:, 2], truth // 4)


@given(st.integers(2, 800), st.integers(2, 64), st.integers(0, 100))
def test_constructions_are_deterministic(n, k, seed):
    x = np.random.default_rng(seed).standard_normal((n, 4))
    assert embedding_tree(x, None, k, seed=seed) == embedding_tree(x, None, k, seed=seed)
    assert random_tree(n, k, seed=seed) == random_tree(n, k, seed=seed)


def test_random_tree_depends_on_the_seed():
    assert random_tree(500, 8, seed=0) != random_tree(500, 8, seed=1)


def test_frequency_tree_groups_tokens_of_similar_rank():
    counts = np.random.default_rng(0).permutation(1000)  # distinct counts
    tree = frequency_tree(counts, 10)
    rank = np.argsort(np.argsort(-counts))
    np.testing.assert_array_equal(tree.parents[0], rank // 10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: embedding_tree(np.zeros((0, 3))), "non-empty"),
        (lambda: embedding_tree(np.full((4, 2), np.nan)), "finite"),
        (lambda: embedding_tree(np.zeros((4, 2)), np.ones(3)), "3 weights for 4 vectors"),
        (lambda: frequency_tree(-np.ones(4)), "non-negative"),
        (lambda: frequency_tree(np.ones((2, 2))), "1-D"),
        (lambda: random_tree(0), "at least 1"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(TreeError, match=message):
        call()
