"""Parameter accounting, budget matching and presets (docs/method.md §7)."""

import dataclasses

import pytest

from tdlm_nn import (
    PRESETS,
    TreeShape,
    breakdown_table,
    match_budget,
    medium,
    param_breakdown,
    preset,
    small,
    tiny,
)

GPT2 = 50_258  # MDLM's GPT-2 vocabulary size, as the issue specifies
FLAT, K64 = TreeShape.flat(GPT2), TreeShape.balanced(GPT2, 64)


def test_breakdown_counts_what_the_model_allocates(tree_shape, tiny_config):
    config = tiny_config(tree_shape, time_conditioning=True)
    model = config.build()
    counts = param_breakdown(config)
    assert counts == param_breakdown(model)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.embedding == tree_shape.num_nodes * 32
    assert counts.head == tree_shape.depth * tree_shape.num_slots * (32 + 1)


def test_mdlm_small_is_mdlm_small():
    config = small(FLAT)
    assert (config.width, config.n_heads, config.n_blocks, config.cond_dim) == (768, 12, 12, 128)
    counts = param_breakdown(config)
    assert counts.head == 768 * GPT2 + GPT2
    assert 165e6 < counts.total < 175e6  # MDLM reports ~170M parameters
    assert counts.head_share > 0.20


def test_tdlm_small_is_deepened_to_mdlm_smalls_budget():
    reference, tdlm = param_breakdown(small(FLAT)), small(K64)
    counts = param_breakdown(tdlm)
    assert counts.head_share < 0.001
    assert 0 <= reference.total - counts.total <= 0.02 * reference.total
    # Deepest: one more block of the reference's kind would not fit.
    assert tdlm.n_blocks > 12
    one_more = dataclasses.replace(tdlm, n_blocks=tdlm.n_blocks + 1, mlp_hidden=None)
    assert param_breakdown(one_more).total > reference.total


def test_matching_without_fill_is_the_deepest_plain_model():
    reference = small(FLAT)
    deepest = match_budget(reference, K64, fill=False)
    assert deepest.hidden_size == 4 * 768
    budget = param_breakdown(reference).total
    assert param_breakdown(deepest).total <= budget
    assert (
        param_breakdown(dataclasses.replace(deepest, n_blocks=deepest.n_blocks + 1)).total > budget
    )
    filled = match_budget(reference, K64)
    assert filled.n_blocks == deepest.n_blocks and filled.hidden_size > deepest.hidden_size
    assert (
        param_breakdown(dataclasses.replace(filled, mlp_hidden=filled.hidden_size + 64)).total
        > budget
    )


def test_a_budget_below_one_block_is_an_error():
    with pytest.raises(ValueError, match="over the budget"):
        match_budget(tiny(FLAT), K64, budget=1_000_000)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_their_reference_on_the_flat_tree_and_match_it_elsewhere(name):
    reference = preset(name, FLAT)
    assert reference.shape == FLAT and reference.hidden_size == 4 * reference.width
    deepened = preset(name, K64)
    assert deepened.shape == K64 and deepened.width == reference.width
    assert deepened.n_blocks > reference.n_blocks
    ratio = param_breakdown(deepened).total / param_breakdown(reference).total
    assert 0.98 <= ratio <= 1


def test_medium_shape():
    config = medium(FLAT)
    assert (config.width, config.n_heads, config.n_blocks) == (1024, 16, 24)


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="tiny"):
        preset("huge", FLAT)


def test_breakdown_table_lists_every_model():
    table = breakdown_table([("MDLM", small(FLAT)), ("TDLM", small(K64))])
    rows = table.splitlines()
    assert len(rows) == 4 and rows[2].startswith("| MDLM |") and "22.79" in rows[2]


@pytest.mark.parametrize("vocab", [4096, 50_258, 256_000])
def test_spending_on_width_keeps_the_depth_and_widens_to_the_budget(vocab):
    reference = small(TreeShape.flat(vocab))
    budget = param_breakdown(reference).total
    tree = TreeShape.balanced(vocab, 64)
    plain = match_budget(reference, tree, spend="width", fill=False)
    assert plain.n_blocks == reference.n_blocks and plain.n_heads == reference.n_heads
    assert plain.width % (2 * plain.n_heads) == 0 and plain.width >= reference.width
    assert plain.hidden_size == 4 * plain.width
    assert param_breakdown(plain).total <= budget
    wider = dataclasses.replace(plain, width=plain.width + 2 * plain.n_heads)
    assert param_breakdown(wider).total > budget  # the widest: one more step does not fit
    filled = match_budget(reference, tree, spend="width")
    # within one MLP step (64 units x blocks x 2 x width: 1.2% of the 4K budget) of it
    assert filled.width == plain.width and 0.98 <= param_breakdown(filled).total / budget <= 1
    # The point of it: fewer activations (width x blocks) than the deepened model, above 4K.
    deep = match_budget(reference, tree)
    if vocab > 4096:
        assert filled.width * filled.n_blocks < deep.width * deep.n_blocks


@pytest.mark.parametrize("vocab", [4096, 50_258, 256_000])
def test_spending_shallow_keeps_the_activations_and_fills_the_budget(vocab):
    """Wider and shallower: width x blocks at most the reference's, at the budget, and the
    deepest such model (one block more at its widest breaks the rule); at the paper's width 9
    blocks of 1,008 at 50K."""
    reference = small(TreeShape.flat(vocab))
    budget = param_breakdown(reference).total
    tree = TreeShape.balanced(vocab, 64)
    plain = match_budget(reference, tree, spend="shallow", fill=False)
    assert plain.n_heads == reference.n_heads and plain.width % (2 * plain.n_heads) == 0
    assert plain.width * plain.n_blocks <= reference.width * reference.n_blocks
    assert plain.n_blocks <= reference.n_blocks and plain.width >= reference.width
    if vocab > 4096:  # at 4K the head's 3M parameters buy no width step at 12 blocks
        assert plain.n_blocks < reference.n_blocks and plain.width > reference.width
    assert param_breakdown(plain).total <= budget
    wider = dataclasses.replace(plain, width=plain.width + 2 * plain.n_heads, mlp_hidden=None)
    assert param_breakdown(wider).total > budget  # the widest at its depth
    if plain.n_blocks < reference.n_blocks:  # the search starts at the reference's depth
        deeper = match_budget(
            dataclasses.replace(reference, n_blocks=plain.n_blocks + 1), tree, spend="width",
            fill=False, budget=budget,
        )  # fmt: skip
        assert deeper.width * deeper.n_blocks > reference.width * reference.n_blocks
    filled = match_budget(reference, tree, spend="shallow")
    assert (filled.width, filled.n_blocks) == (plain.width, plain.n_blocks)
    assert 0.98 <= param_breakdown(filled).total / budget <= 1
    if vocab == 50_258:
        assert (filled.n_blocks, filled.width) == (9, 1008)


def test_spending_nothing_is_the_reference_on_the_tree():
    config = match_budget(small(FLAT), K64, spend="none")
    assert (config.width, config.n_blocks, config.hidden_size) == (768, 12, 3072)
    assert config.shape == K64
    assert param_breakdown(config).total < param_breakdown(small(FLAT)).total
    with pytest.raises(ValueError, match="spend must be one of"):
        match_budget(small(FLAT), K64, spend="height")
