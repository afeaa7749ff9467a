"""TreeShape agrees with the trees tdlm-tree builds (sizes, widths, global id offsets)."""

import pytest

from tdlm_nn import TreeShape
from tdlm_tree import flat_tree, random_tree


@pytest.mark.parametrize(
    ("vocab", "branching", "cluster"), [(300, 8, None), (1000, 64, None), (4096, 16, 4), (50, 7, 3)]
)
def test_balanced_shape_matches_built_tree(vocab, branching, cluster):
    tree = random_tree(vocab, branching, leaf_cluster_size=cluster, seed=1)
    shape = TreeShape.balanced(vocab, branching, leaf_cluster_size=cluster)
    assert shape == TreeShape.of(tree)
    assert shape.level_offsets == tree.level_offsets
    assert shape.num_nodes == tree.num_nodes
    assert shape.depth == tree.depth
    assert shape.num_slots == max(tree.branching)


def test_flat_shape_is_the_flat_tree():
    shape = TreeShape.flat(300)
    assert shape == TreeShape.of(flat_tree(300))
    assert shape.is_flat and shape.num_slots == 300 and shape.num_nodes == 301


@pytest.mark.parametrize(
    ("sizes", "widths"),
    [
        ((300, 1), (200,)),  # the root cannot hold 300 children in 200 slots
        ((300, 2), (300,)),  # does not end at one root
        ((300, 30, 1), (8, 30)),  # 30 parents of at most 8 cannot hold 300 nodes
        ((300, 38, 1), (8, 39)),  # wider than the level below
        ((5,), ()),  # no levels
    ],
)
def test_inconsistent_shapes_are_rejected(sizes, widths):
    with pytest.raises(ValueError):
        TreeShape(level_sizes=sizes, widths=widths)
