"""The ELBO (docs/method.md §4): I2 (tight for the true model), I4 (schedule-free), training loss,
per-level evaluation and reporting helpers."""

import math

import numpy as np
import pytest
import torch
from diffusion_helpers import (
    SCHEDULES,
    expected_nelbo,
    factorised_denoiser,
    random_context_denoiser,
    small_trees,
    uneven_trees,
)
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import (
    ScheduleConfig,
    TreeProcess,
    bits_per_byte,
    evaluate_nelbo,
    low_discrepancy_times,
    perplexity,
    training_loss,
)
from tdlm_tree import random_tree


def _token_probs(vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(vocab))


@given(small_trees(max_leaves=16), st.sampled_from(SCHEDULES), st.integers(0, 1000))
def test_i2_nelbo_is_exact_for_the_true_conditionals(tree, config, seed):
    """Length 1, p_θ = true p(a_h | a_{h+1}): E[NELBO(x)] = -log p(x) for every token x
    (quadrature over t, exact expectation over z)."""
    process = TreeProcess(tree, config.build(tree))
    probs = _token_probs(tree.vocab_size, seed)
    xs = torch.arange(tree.vocab_size)[:, None]
    nelbo = expected_nelbo(process, factorised_denoiser(process, probs), xs)
    np.testing.assert_allclose(nelbo.numpy(), -np.log(probs), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("estimator", ["count", "harmonic", "continuous"])
def test_i2_monte_carlo_estimates_within_three_standard_errors(estimator):
    """The training estimators and the stratified evaluation estimate -log p(x) without bias.

    R independent repeats (fixed seeds) of the batch-mean error; |mean| < 3 standard errors.
    The sizes give the test power: 3 standard errors are ~2% of the NELBO for training and
    ~1% for evaluation (a 2% bias in either fails it). At length 1 the count form of the
    evaluation has nothing left to sample (one position, always masked): it is exact.
    """
    tree = random_tree(12, 3, seed=0)
    config = ScheduleConfig(alpha="cosine", allocation="exponential")
    process = TreeProcess(tree, config.build(tree))
    probs = _token_probs(12, 3)
    denoiser = factorised_denoiser(process, probs)
    tokens = np.random.default_rng(0).choice(12, size=1024, p=probs)
    x = torch.from_numpy(tokens)[:, None]
    # Per-level exact terms -log p(a_h | a_{h+1}); by the chain rule they sum to -log p(x).
    levels, p_node = [], probs
    for h in range(tree.depth):
        p_up = np.bincount(tree.parents[h], weights=p_node, minlength=tree.level_sizes[h + 1])
        child, parent = tree.ancestors[tokens, h], tree.ancestors[tokens, h + 1]
        levels.append(-np.log(p_node[child] / p_up[parent]))
        p_node = p_up
    levels = np.stack(levels, axis=1)
    np.testing.assert_allclose(levels.sum(1), -np.log(probs[tokens]), rtol=1e-12)

    train_err = [training_loss(process, denoiser, x, estimator=estimator,
                               generator=torch.Generator().manual_seed(r))
                 .per_sequence.numpy().mean() - levels.sum(1).mean() for r in range(200)]
    # Evaluation has two estimators; the harmonic one is for training only.
    scored_by = "count" if estimator == "harmonic" else estimator
    level_err = [evaluate_nelbo(process, denoiser, x, samples_per_level=4, estimator=scored_by,
                                generator=torch.Generator().manual_seed(r))
                 .level_nelbo.numpy().mean(0) - levels.mean(0) for r in range(100)]
    level_err = np.array(level_err)
    checks = [np.array(train_err)]
    if scored_by == "count":
        np.testing.assert_allclose(level_err, 0, atol=1e-12)
    else:
        checks += [level_err, level_err.sum(1)]
    for errors in checks:
        sem = errors.std(0, ddof=1) / math.sqrt(len(errors))
        assert (sem > 0).all()
        assert (np.abs(errors.mean(0)) < 3 * sem).all()


@given(small_trees(max_leaves=5), st.integers(0, 1000))
def test_i4_expected_nelbo_does_not_depend_on_the_schedule(tree, seed):
    """Length-2 sequences, an arbitrary network that sees the whole state but not s: the expected
    NELBO is the same under every α and level time allocation (to quadrature accuracy)."""
    g = np.random.default_rng(seed)
    xs = torch.from_numpy(g.integers(0, tree.vocab_size, (3, 2)))
    values = []
    for config in SCHEDULES:
        process = TreeProcess(tree, config.build(tree))
        denoiser = random_context_denoiser(process, 2, seed)
        values.append(expected_nelbo(process, denoiser, xs).numpy())
    for value in values[1:]:
        np.testing.assert_allclose(value, values[0], rtol=1e-10, atol=1e-10)


def test_i4_is_not_vacuous():
    """The same computation with a network that does see s gives schedule-dependent values, so
    the I4 test above can fail."""
    tree = random_tree(4, 2, seed=0)
    xs = torch.tensor([[0, 3], [1, 1]])
    values = []
    for config in SCHEDULES[:2]:
        process = TreeProcess(tree, config.build(tree), pass_time=True)
        base = random_context_denoiser(process, 2, 0)
        def timed(z, h, s, base=base):
            return base(z, h) * (1 + s)[:, None, None]

        values.append(expected_nelbo(process, timed, xs))
    assert not torch.allclose(values[0], values[1], rtol=1e-3)


def test_level_weights_never_touch_reported_numbers():
    tree = random_tree(20, 4, seed=0)
    process = TreeProcess(tree)
    table = torch.randn(tree.num_nodes, process.width, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 20, (16, 8), generator=torch.Generator().manual_seed(1))
    plain = training_loss(process, lambda z, h: table[z], x,
                          generator=torch.Generator().manual_seed(2))
    weighted = training_loss(process, lambda z, h: table[z], x, level_weights=[0.0, 2.0, 0.5],
                             generator=torch.Generator().manual_seed(2))
    assert torch.equal(plain.nelbo, weighted.nelbo)
    assert torch.equal(plain.per_sequence, weighted.per_sequence)
    lam = torch.tensor([0.0, 2.0, 0.5])[plain.level]
    torch.testing.assert_close(weighted.loss, (lam * plain.per_sequence).sum() / x.numel())
    assert plain.loss == plain.nelbo


@given(uneven_trees(), st.integers(0, 1000))
def test_gradients_are_finite_and_only_at_masked_positions(tree, seed):
    """Clean positions (possibly leaves, with no children) and invalid slots get zero gradient;
    nothing is NaN."""
    process = TreeProcess(tree)
    x = torch.randint(0, tree.vocab_size, (6, 5), generator=torch.Generator().manual_seed(seed))
    logits = torch.randn(6, 5, process.width, requires_grad=True)
    seen = {}

    def denoiser(z, level):
        seen["z"], seen["level"] = z, level
        return logits

    out = training_loss(process, denoiser, x, generator=torch.Generator().manual_seed(seed))
    out.loss.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    masked = process.is_masked(seen["z"], seen["level"])
    assert (grad[~masked] == 0).all()
    parent = process.ancestor(x, seen["level"] + 1)
    assert (grad[~process.valid_slots(parent)] == 0).all()


def test_time_conditioned_denoiser_sees_in_level_time():
    tree = random_tree(10, 3, seed=0)
    process = TreeProcess(tree, pass_time=True)
    calls = []

    def denoiser(z, level, s):
        calls.append((level, s))
        return torch.zeros(*z.shape, process.width)

    x = torch.zeros(8, 4, dtype=torch.long)
    out = training_loss(process, denoiser, x, estimator="continuous",
                        generator=torch.Generator().manual_seed(0))
    level, s = process.schedule.level_of(out.t)
    assert torch.equal(calls[0][0], level) and torch.equal(calls[0][1], s)
    evaluate_nelbo(process, denoiser, x, samples_per_level=2)
    assert len(calls) == 1 + tree.depth * 2


@pytest.mark.parametrize("estimator", ["count", "continuous"])
def test_evaluation_per_level_for_a_uniform_child_model(estimator):
    """All-zero logits put 1/c on each of a node's c children, so L_h(x) = log c(a_{h+1}(x)):
    the stratified estimate of every level is unbiased (|mean error| < 3 standard errors over
    independent repeats, plus 1e-6 for the float32 logits: the count form of a level where every
    node has the same c has no variance left), and the reported totals are consistent."""
    tree = random_tree(10, 3, seed=0)  # 10 -> 4 -> 2 -> 1, with a short group per level
    process = TreeProcess(tree)
    x = torch.arange(10).repeat(8, 1)

    def uniform(z, level):
        return torch.zeros(*z.shape, process.width)

    exact = np.stack([np.log(tree.child_counts[h][tree.ancestors[:, h + 1]]) for h in range(3)], 1)
    errors = []
    for r in range(30):
        estimate = evaluate_nelbo(process, uniform, x, samples_per_level=2, estimator=estimator,
                                  generator=torch.Generator().manual_seed(r))
        errors.append(estimate.level_nelbo.numpy().mean(0) - exact.sum(0))
    errors = np.array(errors)
    sem = errors.std(0, ddof=1) / math.sqrt(len(errors))
    assert (np.abs(errors.mean(0)) < 3 * sem + 1e-6).all()
    assert estimate.num_tokens == 80
    assert estimate.per_token == pytest.approx(sum(estimate.level_per_token), rel=1e-12)
    assert estimate.per_token == pytest.approx(estimate.total_nats / 80, rel=1e-12)
    torch.testing.assert_close(estimate.nelbo, estimate.level_nelbo.sum(1))


def test_low_discrepancy_times_cover_the_unit_interval():
    t = low_discrepancy_times(16, generator=torch.Generator().manual_seed(3))
    assert ((t >= 0) & (t < 1)).all()
    gaps = torch.diff(torch.sort(t).values)
    torch.testing.assert_close(gaps, torch.full_like(gaps, 1 / 16), rtol=0, atol=1e-6)


def test_reporting_helpers():
    assert perplexity(2 * math.log(3.0), 2) == pytest.approx(3.0)
    assert bits_per_byte(math.log(2) * 12, 4) == pytest.approx(3.0)
