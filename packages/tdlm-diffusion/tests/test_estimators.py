"""The three training estimators (``estimators.py``) and the count form of the in-level NELBO:
the count form is the same bound exactly, bounded per token, masks exactly k of a uniform subset;
the cutoff is biased by exactly the integral it omits; bad choices get one clear error."""

import itertools
import math

import numpy as np
import pytest
import torch
from diffusion_helpers import (
    SCHEDULES,
    chi2_pvalue,
    expected_count_nelbo,
    expected_nelbo,
    factorised_denoiser,
    random_context_denoiser,
    small_trees,
)
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import (
    DiffusionInputError,
    ScheduleConfig,
    TreeProcess,
    child_nll,
    evaluate_nelbo,
    harmonic_count,
    harmonic_number,
    masked_count,
    training_loss,
)
from tdlm_tree import random_tree


@given(small_trees(max_leaves=5), st.sampled_from(SCHEDULES), st.integers(2, 3),
       st.integers(0, 1000))
def test_count_form_is_the_same_nelbo_exactly(tree, config, length, seed):
    """An arbitrary network that sees the whole state (not s): the count form's exact
    expectation (every level, count and subset) equals the time form's (quadrature over t,
    every masking pattern), for every α and allocation."""
    process = TreeProcess(tree, config.build(tree))
    denoiser = random_context_denoiser(process, length, seed)
    xs = torch.from_numpy(np.random.default_rng(seed).integers(0, tree.vocab_size, (3, length)))
    np.testing.assert_allclose(expected_count_nelbo(process, denoiser, xs).numpy(),
                               expected_nelbo(process, denoiser, xs).numpy(),
                               rtol=1e-10, atol=1e-10)


def test_count_form_equality_is_not_vacuous():
    """The same comparison with the weight 1/k dropped from the count form fails: the exact
    equality above holds only for the right weights."""
    tree = random_tree(4, 2, seed=0)
    process = TreeProcess(tree)
    denoiser = random_context_denoiser(process, 3, 0)
    xs = torch.tensor([[0, 3, 1], [2, 2, 0]])
    right = expected_count_nelbo(process, denoiser, xs)
    unweighted = 0.0
    for h, k in itertools.product(range(tree.depth), range(1, 4)):
        # k masked with weight L / k averages to L * mean CE; without 1/k: sum of masked CE.
        patterns = [p for p in itertools.product([False, True], repeat=3) if sum(p) == k]
        for pattern in patterns:
            mask = torch.tensor(pattern)[None].expand(2, 3)
            level = torch.full((2,), h)
            z = torch.where(mask, process.ancestor(xs, level + 1), process.ancestor(xs, level))
            nll = child_nll(process, denoiser(z, level), xs, level)
            unweighted = unweighted + (nll * mask).sum(-1) / (3 * len(patterns))
    assert not torch.allclose(right, unweighted, rtol=1e-3)


@given(small_trees(max_leaves=24), st.integers(1, 40), st.integers(0, 10**6))
def test_count_estimators_are_bounded_per_token(tree, length, seed):
    """Whatever the network and the draw, a sequence's per-token count estimate is its mean CE
    over the masked positions over Δ_h (at most max CE / min Δ), and the harmonic one at most
    H_L times that. (The time form has no bound: its weight 1 / (Δ_h s) is unbounded.)"""
    process = TreeProcess(tree)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, tree.vocab_size, (8, length), generator=g)
    logits = 5 * torch.randn(8, length, process.width, generator=g, dtype=torch.float64)
    for estimator, factor in (("count", 1.0), ("harmonic", harmonic_number(length))):
        out = training_loss(process, lambda z, h: logits, x, estimator=estimator, generator=g)
        worst = float(child_nll(process, logits, x, out.level).max())
        bound = factor * worst / min(process.schedule.deltas)
        assert float(out.per_sequence.max()) / length <= bound * (1 + 1e-6)  # float32 weights


def test_mask_count_masks_exactly_k_of_a_uniform_subset():
    """Exactly k positions at the parent in every row, and every k-subset equally likely (χ²)."""
    tree = random_tree(9, 3, seed=0)
    process = TreeProcess(tree)
    draws, length = 12000, 4
    x = torch.randint(0, 9, (draws, length), generator=torch.Generator().manual_seed(0))
    level = torch.randint(0, tree.depth, (draws,), generator=torch.Generator().manual_seed(1))
    count = torch.full((draws,), 2)
    z = process.mask_count(x, level, count, torch.Generator().manual_seed(2))
    masked = process.is_masked(z, level)
    assert torch.equal(masked.sum(-1), count)
    subsets = list(itertools.combinations(range(length), 2))
    index = {frozenset(c): i for i, c in enumerate(subsets)}
    observed = np.bincount([index[frozenset(np.flatnonzero(row).tolist())]
                            for row in masked.numpy()], minlength=len(subsets))
    assert chi2_pvalue(observed, np.full(len(subsets), 1 / len(subsets))) > 1e-3
    # Unmasked positions sit at a_h(x), masked ones at a_{h+1}(x).
    expected = torch.where(masked, process.ancestor(x, level + 1), process.ancestor(x, level))
    assert torch.equal(z, expected)


def test_masked_count_maps_a_stratified_grid_to_every_count_once():
    length = 16
    for u in (0.0, 0.3, 0.999):
        s = (u + torch.arange(length, dtype=torch.float32) / length) % 1
        assert sorted(masked_count(s, length).tolist()) == list(range(1, length + 1))
    assert masked_count(torch.tensor([0.0, 1.0]), 5).tolist() == [1, 5]


def test_harmonic_count_has_the_harmonic_law_and_weights_that_undo_it():
    """Evenly spaced s map to counts with frequencies (1/k) / H_L (to the grid's resolution);
    a masked position's weight H_L times P(k) is then 1/k, the count form's weight per draw of
    k, so the estimate is unbiased (checked by Monte Carlo in test_elbo's I2 test and below)."""
    length, grid = 16, 100_000
    s = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    k = harmonic_count(s, length)
    frequencies = np.bincount(k.numpy(), minlength=length + 1)[1:] / grid
    law = (1 / np.arange(1, length + 1)) / harmonic_number(length)
    np.testing.assert_allclose(frequencies, law, atol=1 / grid)
    np.testing.assert_allclose(law * harmonic_number(length), 1 / np.arange(1, length + 1))
    assert harmonic_number(1) == 1.0 and harmonic_number(4) == pytest.approx(25 / 12)
    assert harmonic_count(torch.tensor([0.0, 1.0]), 5).tolist() == [1, 5]


def test_cutoff_is_biased_by_the_integral_it_omits():
    """Length 1, linear α, the true conditionals: each level's integrand is the constant
    -log p(a_h | a_{h+1}), so the cutoff estimator's mean is (1 - ε) (-log p(x)), not -log p(x)
    (|mean error| < 3 standard errors over fixed seeds; the bias is 30 standard errors)."""
    tree = random_tree(12, 3, seed=0)
    process = TreeProcess(tree)
    probs = np.random.default_rng(3).dirichlet(np.ones(12))
    denoiser = factorised_denoiser(process, probs)
    tokens = np.random.default_rng(0).choice(12, size=512, p=probs)
    x = torch.from_numpy(tokens)[:, None]
    exact = float(-np.log(probs[tokens]).mean())
    eps = 0.3
    means = np.array([
        float(training_loss(process, denoiser, x, estimator="cutoff", cutoff=eps,
                            generator=torch.Generator().manual_seed(r)).per_sequence.mean())
        for r in range(60)
    ])
    sem = means.std(ddof=1) / math.sqrt(len(means))
    assert abs(means.mean() - (1 - eps) * exact) < 3 * sem
    assert abs(means.mean() - exact) > 30 * sem


def test_estimators_agree_on_a_uniform_child_model():
    """All-zero logits: every masked CE is log c(a_{h+1}(x)); all three estimators' means are
    within 3 standard errors of the exact NELBO Σ_h log c (the cutoff's ε = 1e-3 bias is
    far below that)."""
    tree = random_tree(10, 3, seed=0)
    process = TreeProcess(tree)
    x = torch.arange(10).repeat(16, 2)

    def uniform(z, level):
        return torch.zeros(*z.shape, process.width)

    exact = sum(np.log(tree.child_counts[h][tree.ancestors[:, h + 1]]).mean() for h in range(3))
    for estimator in ("count", "harmonic", "cutoff", "continuous"):
        means = np.array([
            float(training_loss(process, uniform, x, estimator=estimator,
                                generator=torch.Generator().manual_seed(r)).nelbo)
            for r in range(80)
        ])
        sem = means.std(ddof=1) / math.sqrt(len(means))
        assert abs(means.mean() - exact) < 3 * sem, estimator


@pytest.mark.parametrize(("call", "message"), [
    (lambda p, d, x: training_loss(p, d, x, estimator="exact"), "unknown NELBO estimator"),
    (lambda p, d, x: training_loss(p, d, x, estimator="cutoff", cutoff=0.0), "(0, 1)"),
    (lambda p, d, x: evaluate_nelbo(p, d, x, estimator="cutoff"), "'count' or 'continuous'"),
    (lambda p, d, x: evaluate_nelbo(p, d, x, estimator="harmonic"), "'count' or 'continuous'"),
])
def test_bad_estimator_choices(call, message):
    process = TreeProcess(random_tree(10, 3, seed=0))
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(DiffusionInputError, match=message):
        call(process, lambda z, h: torch.zeros(*z.shape, process.width), x)


def test_count_form_refuses_a_time_conditioned_denoiser():
    process = TreeProcess(random_tree(10, 3, seed=0), ScheduleConfig().build(
        random_tree(10, 3, seed=0)), pass_time=True)
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(DiffusionInputError, match="does not see s"):
        training_loss(process, lambda z, h, s: torch.zeros(*z.shape, process.width), x,
                      estimator="count")
    with pytest.raises(DiffusionInputError, match="does not see s"):
        evaluate_nelbo(process, lambda z, h, s: torch.zeros(*z.shape, process.width), x,
                       estimator="count")
