"""Structural invariants of VocabTree (docs/method.md §2) over arbitrary and constructed trees."""

import numpy as np
import pytest
from hypothesis import given

from tdlm_tree import TreeError, VocabTree, flat_tree, random_tree
from tdlm_tree.testing import any_trees, shapes


@given(any_trees())
def test_every_leaf_has_one_path_of_length_depth(tree):
    assert tree.paths.shape == (tree.vocab_size, tree.depth)
    assert tree.ancestors.shape == (tree.vocab_size, tree.depth + 1)
    assert (tree.ancestors[:, -1] == 0).all()  # every path ends at the root
    assert tree.level_sizes[0] == tree.vocab_size and tree.level_sizes[-1] == 1
    # Distinct leaves have distinct paths: the path identifies the leaf.
    assert len(np.unique(tree.paths, axis=0)) == tree.vocab_size
    np.testing.assert_array_equal(tree.leaf_of_path(tree.paths), np.arange(tree.vocab_size))


@given(any_trees())
def test_ancestors_agree_with_parents(tree):
    for h in range(tree.depth):
        np.testing.assert_array_equal(
            tree.ancestors[:, h + 1], tree.parents[h][tree.ancestors[:, h]]
        )
        np.testing.assert_array_equal(tree.paths[:, h], tree.slots[h][tree.ancestors[:, h]])


@given(any_trees())
def test_slots_unique_in_range_and_children_invert_parents(tree):
    for h in range(tree.depth):
        parent, slot, table = tree.parents[h], tree.slots[h], tree.children[h]
        count = tree.child_counts[h]
        assert table.shape == (tree.level_sizes[h + 1], tree.branching[h])
        assert tree.branching[h] == count.max()
        assert (slot >= 0).all() and (slot < count[parent]).all()
        # (parent, slot) pairs are unique, so the children table is a bijection onto level h.
        np.testing.assert_array_equal(table[parent, slot], np.arange(tree.level_sizes[h]))
        filled = table >= 0
        np.testing.assert_array_equal(filled.sum(1), count)
        # Slots are dense: a node's real children occupy exactly slots 0..count-1.
        np.testing.assert_array_equal(filled, np.arange(table.shape[1]) < count[:, None])
        np.testing.assert_array_equal(parent[table[filled]], np.nonzero(filled)[0])


@given(any_trees())
def test_global_ids_and_level_lookup(tree):
    offsets = tree.level_offsets
    assert offsets[-1] == tree.num_nodes == sum(tree.level_sizes)
    for h, n in enumerate(tree.level_sizes):
        ids = tree.global_ids(h, np.arange(n))
        np.testing.assert_array_equal(ids, offsets[h] + np.arange(n))
        assert (tree.level_of(ids) == h).all()


@given(shapes())
def test_flat_tree_has_one_level_with_every_token_under_the_root(shape):
    n, _ = shape
    tree = flat_tree(n)
    assert tree.depth == 1 and tree.is_flat
    assert tree.branching == (n,)
    np.testing.assert_array_equal(tree.children[0][0], np.arange(n))


def test_arrays_are_read_only():
    tree = random_tree(100, 8)
    with pytest.raises(ValueError):
        tree.parents[0][0] = 1
    with pytest.raises(ValueError):
        tree.ancestors[0, 0] = 1


@pytest.mark.parametrize(
    ("parents", "slots", "message"),
    [
        ([], None, "at least one level"),
        ([np.zeros(0, dtype=int)], None, "empty"),
        ([np.array([0, 1, 2]), np.array([0, 0])], None, "outside level 1"),
        ([np.array([0, 0, 2]), np.array([0, 0, 0])], None, "no children"),
        ([np.array([0.0, 0.0])], None, "integers"),
        ([np.array([0, 0, 0])], [np.array([0, 1, 1])], "share a slot"),
        ([np.array([0, 0, 0])], [np.array([0, 1, 3])], "slots must be 0..count-1"),
        ([np.array([0, 0, 0])], [np.array([0, 1])], "2 entries for 3 nodes"),
        ([np.array([[0, 0]])], None, "1-D"),
    ],
)
def test_inconsistent_arrays_are_rejected(parents, slots, message):
    with pytest.raises(TreeError, match=message):
        VocabTree(parents, slots)


def test_a_top_level_with_two_roots_is_rejected():
    with pytest.raises(TreeError, match="outside level 1's range 0..0"):
        VocabTree([np.array([0, 0, 0, 1])])


def test_lookup_errors():
    tree = random_tree(10, 3)  # level sizes 10, 4, 2, 1; the last level-1 node has one child
    with pytest.raises(TreeError, match="no child"):
        tree.child(0, [3], [2])
    with pytest.raises(TreeError, match="outside"):
        tree.global_ids(1, [4])
    with pytest.raises(TreeError, match="path has 3 slots"):
        tree.leaf_of_path([0, 0])
