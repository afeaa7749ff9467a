"""Schedules (docs/method.md §3): α(s), its derivative, level allocations, t -> (h, s), w(t), I3."""

import math

import numpy as np
import pytest
import torch
from diffusion_helpers import level_quadrature, small_trees
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import (
    CosineSchedule,
    DiffusionSchedule,
    LinearSchedule,
    PolynomialSchedule,
    ScheduleConfig,
    TreeProcess,
    entropy_allocation,
    exponential_allocation,
    linear_allocation,
    transition_matrix,
    uniform_allocation,
)
from tdlm_tree import conditional_entropies, random_tree

IN_LEVEL = [LinearSchedule(), CosineSchedule(), PolynomialSchedule(2.0), PolynomialSchedule(0.5),
            PolynomialSchedule(3.0)]


@pytest.mark.parametrize("schedule", IN_LEVEL, ids=repr)
def test_alpha_endpoints_monotone_and_complement(schedule):
    s = torch.linspace(0, 1, 1001, dtype=torch.float64)
    alpha = schedule.alpha(s)
    assert alpha[0] == 1 and alpha[-1] == 0  # exact: t = τ_h and t = τ_{h+1} are deterministic
    assert (alpha[1:] <= alpha[:-1]).all()
    torch.testing.assert_close(schedule.one_minus_alpha(s), 1 - alpha, rtol=0, atol=1e-15)
    assert schedule.one_minus_alpha(s)[0] == 0 and schedule.one_minus_alpha(s)[-1] == 1


@pytest.mark.parametrize("schedule", IN_LEVEL, ids=repr)
def test_alpha_prime_is_the_derivative(schedule):
    # Central differences in float64 have error O(eps^2) = 1e-12 relative on these smooth
    # functions, away from s = 0 where s^(p-1) is singular for p < 1.
    s = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    eps = 1e-6
    numeric = (schedule.alpha(s + eps) - schedule.alpha(s - eps)) / (2 * eps)
    torch.testing.assert_close(schedule.alpha_prime(s), numeric, rtol=1e-7, atol=1e-8)


def test_one_minus_alpha_keeps_precision_near_zero():
    s = torch.tensor([1e-6], dtype=torch.float32)
    # cos(π s / 2) rounds to 1 in float32 here, but 1 - α = π² s² / 8 must stay positive.
    assert CosineSchedule().one_minus_alpha(s) > 0
    expected = math.pi**2 * 1e-12 / 8
    assert float(CosineSchedule().one_minus_alpha(s)) == pytest.approx(expected, rel=1e-5)


def test_allocations():
    assert uniform_allocation(4) == pytest.approx((0.25,) * 4)
    assert linear_allocation(3) == pytest.approx((3 / 6, 2 / 6, 1 / 6))
    assert exponential_allocation(3, 0.5) == pytest.approx((4 / 7, 2 / 7, 1 / 7))
    assert exponential_allocation(2, 3.0) == pytest.approx((0.25, 0.75))
    assert entropy_allocation([1.0, 3.0]) == pytest.approx((0.25, 0.75))


def test_entropy_allocation_from_a_tree():
    tree = random_tree(30, 4, seed=1)
    counts = np.arange(1, 31) ** 2
    schedule = ScheduleConfig(allocation="entropy").build(tree, counts)
    entropies = conditional_entropies(tree, counts)
    assert schedule.deltas == pytest.approx(tuple(entropies / entropies.sum()), rel=1e-12)


@given(small_trees(), st.sampled_from(["uniform", "linear", "exponential"]))
def test_level_of_maps_boundaries_and_interiors(tree, allocation):
    schedule = ScheduleConfig(allocation=allocation, gamma=1.5).build(tree)
    taus = schedule.taus
    depth = tree.depth
    assert taus[0] == 0 and taus[-1] == 1 and (taus[1:] > taus[:-1]).all()
    assert sum(schedule.deltas) == pytest.approx(1.0, abs=1e-12)
    # Every boundary τ_h (h < H) starts level h at s = 0; t = 1 ends the top level at s = 1.
    level, s = schedule.level_of(taus)
    assert level.tolist() == [*range(depth), depth - 1]
    assert s.tolist() == [0.0] * depth + [1.0]
    # Midpoints are in the middle of their level.
    mid = (taus[1:] + taus[:-1]) / 2
    level, s = schedule.level_of(mid)
    assert level.tolist() == list(range(depth))
    torch.testing.assert_close(s, torch.full_like(s, 0.5), rtol=0, atol=1e-12)


@given(small_trees(), st.floats(0.0, 1.0))
def test_elbo_weight_formula(tree, t):
    schedule = ScheduleConfig(allocation="linear").build(tree)
    time = torch.tensor([t], dtype=torch.float64)
    level, s = schedule.level_of(time)
    delta = schedule.deltas[int(level)]
    expected = 0.0 if float(s) == 0 else 1 / (delta * float(s))  # linear α: 1 / (Δ_h s)
    assert float(schedule.elbo_weight(time)) == pytest.approx(expected, rel=1e-12)


def test_weight_is_zero_where_nothing_can_be_masked():
    schedule = DiffusionSchedule(CosineSchedule(), [0.5, 0.5])
    w = schedule.elbo_weight(torch.tensor([0.0, 0.5], dtype=torch.float64))
    assert w.tolist() == [0.0, 0.0]


@given(small_trees(max_leaves=12), st.sampled_from(range(4)))
def test_i3_each_level_is_chosen_once_in_expectation(tree, which):
    """I3: per level h, ∫ w(t) P(a position sits at a_{h+1}(x) within level h) dt = 1.

    P(masked) is read off the transition matrix Q̄_{t|0}, so this ties the weight to the process.
    Gauss–Legendre per level is exact to ~1e-14 for these smooth integrands (-α'(s)/Δ_h).
    """
    configs = [ScheduleConfig(), ScheduleConfig(alpha="cosine", allocation="exponential"),
               ScheduleConfig(alpha="polynomial", power=3.0, allocation="linear"),
               ScheduleConfig(alpha="polynomial", power=2.0, allocation="exponential", gamma=2.0)]
    process = TreeProcess(tree, configs[which].build(tree))
    x = 0
    ancestors = process.ancestors[x]
    totals = np.zeros(tree.depth)
    for h, t, weight in level_quadrature(process):
        masked = float(transition_matrix(process, float(t))[x, ancestors[h + 1]])
        totals[h] += weight * float(process.schedule.elbo_weight(t)) * masked
    np.testing.assert_allclose(totals, 1.0, rtol=0, atol=1e-10)


def test_schedule_config_errors(runtime_checks_only):
    tree = random_tree(10, 3, seed=0)
    with pytest.raises(ValueError, match="unknown in-level schedule"):
        ScheduleConfig(alpha="sqrt")
    with pytest.raises(ValueError, match="unknown level time allocation"):
        ScheduleConfig(allocation="random")
    with pytest.raises(ValueError, match="exactly when allocation is 'explicit'"):
        ScheduleConfig(proportions=(0.5, 0.5))
    with pytest.raises(ValueError, match="level time proportions for a tree of depth"):
        ScheduleConfig(allocation="explicit", proportions=(0.5, 0.5)).build(tree)
    with pytest.raises(ValueError, match="needs token counts"):
        ScheduleConfig(allocation="entropy").build(tree)
    with pytest.raises(ValueError, match="only read by the entropy allocation"):
        ScheduleConfig().build(tree, np.ones(10))
    with pytest.raises(ValueError, match="positive and finite"):
        DiffusionSchedule(LinearSchedule(), [0.5, 0.0])
    with pytest.raises(ValueError, match="positive and finite"):
        entropy_allocation([1.0, 0.0])  # a level that decides nothing would get no time
    with pytest.raises(ValueError, match="gamma > 0"):
        exponential_allocation(3, 0.0)
    with pytest.raises(ValueError, match="power must be positive"):
        PolynomialSchedule(-1.0)


def test_explicit_proportions_are_normalised():
    tree = random_tree(10, 3, seed=0)
    schedule = ScheduleConfig(allocation="explicit", proportions=(1.0, 2.0, 1.0)).build(tree)
    assert schedule.deltas == pytest.approx((0.25, 0.5, 0.25), rel=1e-12)
