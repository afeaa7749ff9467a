"""The forward process (docs/method.md §3): marginals, lookups, device movement."""

import pytest
import torch
from diffusion_helpers import schedule_configs, small_trees
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import TreeProcess
from tdlm_tree import flat_tree, random_tree


def _batch(tree, seed, batch=5, length=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, tree.vocab_size, (batch, length), generator=g)
    return x, g


@given(small_trees(), schedule_configs(), st.integers(0, 1000))
def test_forward_sample_moves_only_to_the_two_ancestors(tree, config, seed):
    process = TreeProcess(tree, config.build(tree))
    x, g = _batch(tree, seed)
    t = torch.rand(x.shape[0], generator=g)
    z, level, _ = process.forward_sample(x, t, torch.Generator().manual_seed(seed))
    low, high = process.ancestor(x, level), process.ancestor(x, level + 1)
    assert ((z == low) | (z == high)).all()
    assert torch.equal(process.is_masked(z, level), z == high)
    # Global ids: a_h(x) lies in level h's id range.
    offsets = torch.tensor(tree.level_offsets)
    assert ((low >= offsets[level][:, None]) & (low < offsets[level + 1][:, None])).all()


@given(small_trees())
def test_levels_are_deterministic_at_their_boundaries(tree):
    process = TreeProcess(tree)
    x, g = _batch(tree, 0)
    for h, tau in enumerate(process.schedule.taus.tolist()):
        t = torch.full((x.shape[0],), tau, dtype=torch.float64)
        z = process.forward_sample(x, t, g).z
        expected = process.ancestors[x, h]  # τ_h: exactly the level-h ancestor (τ_H: the root)
        assert torch.equal(z, expected)
    assert (process.forward_sample(x, torch.ones(x.shape[0]), g).z == process.root).all()
    assert torch.equal(process.forward_sample(x, torch.zeros(x.shape[0]), g).z, x)


@given(small_trees(), schedule_configs(), st.integers(0, 1000))
def test_forward_sample_is_sample_in_level_at_the_level_of_t(tree, config, seed):
    """forward_sample returns the (h, s) of t, and its z is sample_in_level's draw there."""
    process = TreeProcess(tree, config.build(tree))
    x, g = _batch(tree, seed)
    t = torch.rand(x.shape[0], generator=g)
    z, level, s = process.forward_sample(x, t, torch.Generator().manual_seed(seed))
    expected_level, expected_s = process.schedule.level_of(t)
    assert torch.equal(level, expected_level)
    assert torch.equal(s, expected_s)
    assert torch.equal(z, process.sample_in_level(x, level, s, torch.Generator().manual_seed(seed)))


@given(small_trees(), st.integers(0, 1000))
def test_target_slots_and_children_invert_each_other(tree, seed):
    process = TreeProcess(tree)
    x, _ = _batch(tree, seed)
    for h in range(tree.depth):
        level = torch.full((x.shape[0],), h)
        parent, child = process.ancestor(x, level + 1), process.ancestor(x, level)
        slots = process.target_slots(x, level)
        rows = parent - tree.vocab_size
        assert torch.equal(process.children_table[rows, slots], child)
        valid = process.valid_slots(parent)
        assert valid.gather(-1, slots[..., None]).all()
        counts = torch.from_numpy(tree.child_counts[h].copy())[parent - tree.level_offsets[h + 1]]
        assert torch.equal(valid.sum(-1), counts)
        # Valid slots are exactly the ones with a child in the table.
        assert torch.equal(valid, process.children_table[rows] >= 0)


def test_leaves_have_no_valid_slots_and_root_is_last_id():
    tree = random_tree(11, 3, seed=2)
    process = TreeProcess(tree)
    assert process.root == tree.num_nodes - 1 == tree.level_offsets[-2]
    assert not process.valid_slots(torch.arange(11)).any()
    assert process.width == max(tree.branching)


def test_full_width_only_without_padding():
    assert TreeProcess(flat_tree(7)).full_width
    assert TreeProcess(random_tree(9, 3, seed=0)).full_width  # 9 -> 3 -> 1, all full
    assert not TreeProcess(random_tree(10, 3, seed=0)).full_width


def test_tables_are_buffers_and_not_saved():
    process = TreeProcess(random_tree(20, 4, seed=0))
    names = {name for name, _ in process.named_buffers()}
    assert {"ancestors", "paths", "child_counts", "children_table", "offsets",
            "schedule.taus"} <= names
    assert process.state_dict() == {}  # derived from the tree: nothing to checkpoint
    moved = process.to("meta")
    assert all(buffer.device.type == "meta" for buffer in moved.buffers())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_process_runs_on_cuda():
    from tdlm_diffusion import training_loss

    tree = random_tree(300, 8, seed=0)
    process = TreeProcess(tree).to("cuda")
    x = torch.randint(0, 300, (4, 16), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    table = torch.randn(tree.num_nodes, process.width, device="cuda", requires_grad=True)
    out = training_loss(process, lambda nodes, level: table[nodes], x, generator=g)
    out.loss.backward()
    assert out.loss.device.type == "cuda" and torch.isfinite(table.grad).all()
