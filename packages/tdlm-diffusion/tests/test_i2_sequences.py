"""I2 at sequence lengths 2-4 (issue 27): with the true conditionals of a joint distribution
over whole sequences (not i.i.d. positions), every form of the bound has expectation exactly
``-log p(x)``. At length 1 the count form always masks k = 1 with weight 1, so any count law or
weight with the right integral passed; here the library's own law (``masked_count``,
``harmonic_count``, read back by bisection) and the training estimators' own weights
(``noised_batch``, read back per count) must combine to the bound, exactly, in float64.

* time form: Gauss–Legendre quadrature over t, every masking pattern (``expected_nelbo``);
* count form: ``P(k)`` and ``w(k)`` as the library draws and weighs them, every subset of k
  positions with probability 1 / C(L, k) (``mask_count`` is uniform: test_estimators.py).
"""

import itertools
import math

import numpy as np
import pytest
import torch
from diffusion_helpers import expected_nelbo, joint_denoiser

from tdlm_diffusion import ScheduleConfig, TreeProcess, child_nll, estimators
from tdlm_diffusion.elbo import harmonic_count, harmonic_number, masked_count
from tdlm_tree import random_tree

LAWS = {"count": masked_count, "harmonic": harmonic_count}


def _setup(length: int, seed: int):
    tree = random_tree(3 if length > 2 else 4, 2, seed=seed)
    config = ScheduleConfig(alpha="cosine", allocation="exponential")
    process = TreeProcess(tree, config.build(tree))
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.ones(tree.vocab_size**length)).reshape([tree.vocab_size] * length)
    xs = torch.tensor(list(itertools.product(range(tree.vocab_size), repeat=length)))
    return process, joint, xs


def law_probabilities(law, length: int) -> np.ndarray:
    """``P(k)``, k = 1..L, of ``k = law(s)`` with ``s ~ U[0, 1)``: the law is monotone in s,
    so each count's mass is the distance between the bisected points where it starts."""
    starts = [0.0]
    for k in range(1, length):
        lo, hi = 0.0, 1.0
        for _ in range(64):
            mid = (lo + hi) / 2
            if int(law(torch.tensor([mid], dtype=torch.float64), length)) > k:
                hi = mid
            else:
                lo = mid
        starts.append(hi)
    return np.diff(np.array([*starts, 1.0]))


def estimator_weights(process, x, estimator: str, monkeypatch) -> dict[int, float]:
    """``w(k)`` of ``noised_batch``: its weight times Δ_h (the level's density), read at 4,096
    evenly spaced times and checked to be one number per count."""
    length = x.shape[-1]
    t = (torch.arange(4096, dtype=torch.float64) + 0.5) / 4096
    monkeypatch.setattr(estimators, "low_discrepancy_times", lambda *a, **k: t)
    draw = estimators.noised_batch(process, x.expand(len(t), length), estimator=estimator,
                                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    counts = LAWS[estimator](draw.s, length)
    weight = draw.weight * process.schedule.delta(draw.level, t.dtype)
    out = {}
    for k in range(1, length + 1):
        values = weight[counts == k]
        assert len(values) > 0
        torch.testing.assert_close(values, values[:1].expand_as(values), rtol=1e-12, atol=0)
        out[k] = float(values[0])
    return out


def expected_estimate(process, denoiser, xs, probs, weights) -> torch.Tensor:
    """``Σ_h Σ_k P(k) w(k) E_{|S| = k} Σ_{ℓ ∈ S} CE_h``, every subset enumerated."""
    m, length = xs.shape
    total = torch.zeros(m, dtype=torch.float64)
    for h, k in itertools.product(range(process.depth), range(1, length + 1)):
        subsets = list(itertools.combinations(range(length), k))
        for subset in subsets:
            mask = torch.zeros(length, dtype=torch.bool)
            mask[list(subset)] = True
            mask = mask.expand(m, length)
            level = torch.full((m,), h)
            z = torch.where(mask, process.ancestor(xs, level + 1), process.ancestor(xs, level))
            s = torch.zeros(m, dtype=torch.float64)
            nll = child_nll(process, process.child_logits(denoiser, z, level, s), xs, level)
            total += probs[k - 1] * weights[k] * (nll * mask).sum(-1) / len(subsets)
    return total


@pytest.mark.parametrize("length", [2, 3, 4])
def test_the_time_form_is_exact_for_a_joint_at_length_above_one(length):
    process, joint, xs = _setup(length, seed=length)
    truth = -np.log(joint.reshape(-1))
    nelbo = expected_nelbo(process, joint_denoiser(process, joint), xs)
    np.testing.assert_allclose(nelbo.numpy(), truth, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("estimator", ["count", "harmonic"])
@pytest.mark.parametrize("length", [2, 3, 4])
def test_the_count_forms_law_and_weight_give_the_exact_bound(estimator, length, monkeypatch):
    process, joint, xs = _setup(length, seed=length)
    probs = law_probabilities(LAWS[estimator], length)
    harmonic = sum(1 / k for k in range(1, length + 1))
    expected_law = [1 / length] * length if estimator == "count" else [
        1 / (k * harmonic) for k in range(1, length + 1)
    ]  # fmt: skip
    np.testing.assert_allclose(probs, expected_law, rtol=1e-12)
    weights = estimator_weights(process, xs[:1], estimator, monkeypatch)
    estimate = expected_estimate(process, joint_denoiser(process, joint), xs, probs, weights)
    np.testing.assert_allclose(estimate.numpy(), -np.log(joint.reshape(-1)), rtol=1e-10,
                               atol=1e-10)  # fmt: skip


def test_a_wrong_weight_is_not_exact_at_length_three(monkeypatch):
    """The check has power: the count law with the harmonic weight (or no 1/k) is off."""
    process, joint, xs = _setup(3, seed=3)
    probs = law_probabilities(masked_count, 3)
    wrong = {k: sum(1 / j for j in range(1, 4)) for k in range(1, 4)}
    estimate = expected_estimate(process, joint_denoiser(process, joint), xs, probs, wrong)
    assert not np.allclose(estimate.numpy(), -np.log(joint.reshape(-1)), rtol=1e-3)
    assert math.isfinite(float(estimate.sum()))


def test_per_sequence_lengths_follow_the_same_law():
    """A context's ``L_u`` per sequence (a tensor of lengths, 0 where nothing is unknown) gives
    each row what its own int length gives, and the row's law: ``H_0 = 0`` and ``k = 0`` there,
    and the law's probabilities by bisection on each row's length alike."""
    lengths = torch.tensor([0, 1, 2, 3, 4, 7])
    numbers = harmonic_number(lengths)
    expected = [0.0] + [harmonic_number(int(n)) for n in lengths[1:]]
    np.testing.assert_allclose(numbers.numpy(), expected, rtol=1e-15, atol=0)
    s = (torch.arange(512, dtype=torch.float64) + 0.5) / 512
    for law in (masked_count, harmonic_count):
        per_row = law(s[:, None].expand(512, len(lengths)).reshape(-1), lengths.repeat(512))
        per_row = per_row.view(512, len(lengths))
        assert (per_row[:, 0] == 0).all()
        for j, n in enumerate(lengths.tolist()[1:], start=1):
            assert torch.equal(per_row[:, j], law(s, n)), (law.__name__, n)
