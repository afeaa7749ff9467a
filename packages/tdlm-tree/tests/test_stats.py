"""Statistics: the per-level conditional entropies telescope to the unigram entropy."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdlm_tree import (
    TreeError,
    conditional_cross_entropies,
    conditional_entropies,
    flat_tree,
    format_stats,
    level_stats,
    neighbour_cross_entropies,
    random_tree,
    unigram_entropy,
)
from tdlm_tree.testing import any_trees


@given(any_trees(2000), st.integers(0, 10**6), st.booleans())
def test_level_entropies_sum_to_the_unigram_entropy(tree, seed, sparse):
    rng = np.random.default_rng(seed)
    counts = rng.zipf(1.5, tree.vocab_size).astype(float)
    if sparse:
        counts[rng.random(tree.vocab_size) < 0.5] = 0  # unseen tokens and empty subtrees
        counts[0] += 1
    h = conditional_entropies(tree, counts)
    assert (h >= -1e-12).all()
    np.testing.assert_allclose(h.sum(), unigram_entropy(counts), rtol=1e-10, atol=1e-12)


@given(any_trees(500), st.integers(0, 10**6))
def test_cross_entropies_of_the_counted_tokens_are_the_entropies(tree, seed):
    # Scored on the very tokens that were counted, without smoothing, the per-level
    # cross-entropies are the conditional entropies level by level (not only in sum).
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, tree.vocab_size, size=rng.integers(1, 300))
    counts = np.bincount(tokens, minlength=tree.vocab_size)
    np.testing.assert_allclose(
        conditional_cross_entropies(tree, counts, tokens, smoothing=0),
        conditional_entropies(tree, counts),
        rtol=1e-9,
        atol=1e-12,
    )


@given(any_trees(500), st.integers(0, 10**6))
def test_cross_entropies_telescope_and_stay_finite(tree, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, tree.vocab_size).astype(float)  # unseen tokens included
    counts[0] += 1
    tokens = rng.integers(0, tree.vocab_size, size=50)
    levels = conditional_cross_entropies(tree, counts, tokens)
    q = (counts + 0.5) / (counts + 0.5).sum()
    assert np.isfinite(levels).all() and (levels >= -1e-12).all()
    np.testing.assert_allclose(levels.sum(), -np.log(q[tokens]).mean(), rtol=1e-10)


def test_hand_computed_case():
    # Tokens 0,1 under node A, tokens 2,3 under node B; p = (.1, .3, .2, .4).
    tree = random_tree(4, 2, seed=0)
    a = tree.parents[0]
    counts = np.array([1.0, 3.0, 2.0, 4.0])
    p_parent = np.bincount(a, weights=counts / 10)
    expected_top = -(p_parent * np.log(p_parent)).sum()
    h = conditional_entropies(tree, counts)
    np.testing.assert_allclose(h[1], expected_top, rtol=1e-12)
    assert tree.depth == 2


def test_flat_tree_puts_all_entropy_in_one_level():
    counts = np.arange(1, 101)
    np.testing.assert_allclose(
        conditional_entropies(flat_tree(100), counts), [unigram_entropy(counts)]
    )


def test_level_stats_and_table():
    tree = random_tree(1000, 16)
    rows = level_stats(tree)
    assert [r.parents for r in rows] == [63, 4, 1]
    assert rows[0].max_children == 16 and rows[0].min_children == 1000 - 62 * 16
    assert rows[0].entropy is None
    text = format_stats(tree, np.ones(1000))
    assert "sum of levels 6.9078 nats = unigram entropy 6.9078" in text


def test_bad_counts():
    with pytest.raises(TreeError, match="shape"):
        conditional_entropies(random_tree(10, 2), np.ones(9))
    with pytest.raises(TreeError, match="not all zero"):
        conditional_entropies(random_tree(10, 2), np.zeros(10))
    with pytest.raises(TreeError, match="token ids"):
        conditional_cross_entropies(random_tree(10, 2), np.ones(10), np.array([10]))


def _empirical_conditional_entropy(keys: list[tuple], targets: list) -> float:
    """Plug-in H(target | key) over the listed occurrences, by brute-force counting."""
    from collections import Counter

    joint, marginal = Counter(zip(keys, targets, strict=True)), Counter(keys)
    return -sum(c * np.log(c / marginal[k]) for (k, _), c in joint.items()) / len(keys)


@given(any_trees(300), st.integers(0, 10**6))
def test_neighbour_cross_entropies_of_the_counted_pairs_are_their_plug_in_entropies(tree, seed):
    # Unsmoothed, on the very stream that was counted: level h's value is the plug-in
    # H(A_h,t | A_h+1,t, A_h,t-1) of its consecutive pairs, and no more than H(A_h,t | A_h+1,t)
    # on the same positions (conditioning on more never raises a plug-in entropy).
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, tree.vocab_size, size=rng.integers(2, 400))
    got = neighbour_cross_entropies(tree, tokens, tokens, smoothing=0)
    path = tree.ancestors[tokens]
    for h in range(tree.depth):
        here, parent, before = path[1:, h].tolist(), path[1:, h + 1].tolist(), path[:-1, h]
        with_neighbour = _empirical_conditional_entropy(
            list(zip(parent, before.tolist(), strict=True)), here
        )
        alone = _empirical_conditional_entropy([(p,) for p in parent], here)
        np.testing.assert_allclose(got[h], with_neighbour, rtol=1e-9, atol=1e-12)
        assert got[h] <= alone + 1e-12


def test_a_determined_next_token_costs_nothing_and_independent_tokens_gain_nothing():
    tree = random_tree(16, 4, seed=1)
    cycle = np.tile(np.arange(16), 100)  # the previous token fixes the next one
    assert neighbour_cross_entropies(tree, cycle, cycle, smoothing=0)[0] == 0
    # i.i.d. uniform tokens: a neighbour tells nothing, so on held-out tokens the smoothed
    # estimate matches the no-context one up to its estimation cost (~ cells / 2T, here
    # 16 * 16 / 4e5 < 1e-3 nats at level 0; the bound 5e-3 holds for this fixed seed).
    rng = np.random.default_rng(0)
    train, held = rng.integers(0, 16, 200_000), rng.integers(0, 16, 50_000)
    counts = np.bincount(train, minlength=16)
    alone = conditional_cross_entropies(tree, counts, held[1:])
    np.testing.assert_allclose(neighbour_cross_entropies(tree, train, held), alone, atol=5e-3)


@pytest.mark.parametrize(
    "train, held, message",
    [([3], [0, 1], "at least 2"), ([0, 1], [0, 99], "0..15"), ([[0, 1]], [0, 1], "1-D")],
)
def test_neighbour_cross_entropies_reject_bad_streams(train, held, message):
    with pytest.raises(TreeError, match=message):
        neighbour_cross_entropies(random_tree(16, 4, seed=0), np.array(train), np.array(held))
