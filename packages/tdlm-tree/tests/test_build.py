"""Constructions (METHOD.md §2): determinism, size limits, and what each one groups together."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdlm_tree import (
    TreeError,
    balanced_kmeans,
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
