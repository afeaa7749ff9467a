"""Tree shapes (docs/method.md §2): n_h = ceil(n_{h-1} / k_h) down to exactly one root."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdlm_tree import TreeError, group_sizes, level_sizes_for, random_tree, resolve_branching
from tdlm_tree.testing import shapes


@given(shapes())
def test_one_k_reaches_a_single_root_in_ceil_log_k_levels(shape):
    n, k = shape
    ks = resolve_branching(n, k)
    sizes = level_sizes_for(n, ks)
    assert sizes[-1] == 1 and 1 not in sizes[1:-1]
    assert len(ks) == max(1, math.ceil(round(math.log(n, k), 9)) if n > 1 else 1)


@given(shapes(), st.integers(1, 400))
def test_leaf_cluster_size_sets_the_first_level(shape, c):
    n, k = shape
    ks = resolve_branching(n, k, leaf_cluster_size=c)
    assert ks[0] == c and all(x == k for x in ks[1:])
    assert level_sizes_for(n, ks)[-1] == 1


@given(shapes())
def test_built_tree_has_the_resolved_sizes_and_balanced_groups(shape):
    n, k = shape
    tree = random_tree(n, k, seed=1)
    ks = resolve_branching(n, k)
    assert tree.level_sizes == level_sizes_for(n, ks)
    for h, count in enumerate(tree.child_counts):
        # Groups are full except one remainder group: fewer only where arithmetic forces it.
        assert sorted(count.tolist(), reverse=True) == group_sizes(tree.level_sizes[h], ks[h])


@given(st.integers(1, 10_000), st.integers(1, 500))
def test_group_sizes_are_full_but_one(n, k):
    sizes = group_sizes(n, k)
    assert sum(sizes) == n and len(sizes) == -(-n // k)
    assert all(s == k for s in sizes[:-1]) and 1 <= sizes[-1] <= k


def test_explicit_lists():
    assert resolve_branching(1000, [10, 10, 10]) == (10, 10, 10)
    assert resolve_branching(1000, [1000]) == (1000,)
    assert resolve_branching(1, 64) == (1,)
    with pytest.raises(TreeError, match="reach a single root"):
        resolve_branching(1000, [10, 10])
    with pytest.raises(TreeError, match="drop the last 1"):
        resolve_branching(1000, [10, 100, 10])
    with pytest.raises(TreeError, match="at least 2"):
        resolve_branching(1000, 1)
    with pytest.raises(TreeError, match="single K"):
        resolve_branching(1000, [10, 100], leaf_cluster_size=4)
