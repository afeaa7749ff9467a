"""I5: transition matrices Q̄_{t|u} and their agreement with forward_sample (docs/method.md §3)."""

import numpy as np
import pytest
import torch
from diffusion_helpers import chi2_pvalue, schedule_configs, small_trees
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import ScheduleConfig, TreeProcess, transition_matrix
from tdlm_tree import random_tree

times = st.floats(0.0, 1.0, allow_nan=False)


def _proposition_3_2(process: TreeProcess, t: float) -> np.ndarray:
    """``Q̄_{t|0} = M_h [α(s) I + (1 - α(s)) A_h]`` from 0/1 parent matrices (leaf rows only)."""
    tree = process.tree
    level, s = process.schedule.level_of(torch.tensor([t], dtype=torch.float64))
    h, alpha = int(level), float(process.schedule.in_level.alpha(s))
    parent_matrices = []
    for g in range(tree.depth):
        a = np.zeros((tree.level_sizes[g], tree.level_sizes[g + 1]))
        a[np.arange(tree.level_sizes[g]), tree.parents[g]] = 1
        parent_matrices.append(a)
    m = np.eye(tree.vocab_size)
    for a in parent_matrices[:h]:
        m = m @ a
    step = np.zeros((tree.level_sizes[h], tree.num_nodes))
    lo, mid, hi = tree.level_offsets[h], tree.level_offsets[h + 1], tree.level_offsets[h + 2]
    step[:, lo:mid] = alpha * np.eye(tree.level_sizes[h])
    step[:, mid:hi] = (1 - alpha) * parent_matrices[h]
    return m @ step


@given(small_trees(), schedule_configs(), times, times)
def test_row_stochastic_nonnegative_and_proposition_3_2(tree, config, a, b):
    process = TreeProcess(tree, config.build(tree))
    u, t = sorted((a, b))
    q = transition_matrix(process, t, u)
    assert q.dtype == torch.float64 and (q >= 0).all()
    torch.testing.assert_close(q.sum(1), torch.ones(tree.num_nodes, dtype=torch.float64),
                               rtol=0, atol=1e-14)
    leaf_rows = transition_matrix(process, t)[: tree.vocab_size].numpy()
    np.testing.assert_allclose(leaf_rows, _proposition_3_2(process, t), rtol=0, atol=1e-14)


@given(small_trees(), schedule_configs(), times, times, times)
def test_chapman_kolmogorov(tree, config, a, b, c):
    process = TreeProcess(tree, config.build(tree))
    v, u, t = sorted((a, b, c))
    # Rows are "from" states (as in docs/method.md's Q̄_{t|0} = M_h [...]), so the earlier transition
    # stands on the left: Q̄_{u|v} Q̄_{t|u} = Q̄_{t|v}.
    lhs = transition_matrix(process, u, v) @ transition_matrix(process, t, u)
    torch.testing.assert_close(lhs, transition_matrix(process, t, v), rtol=0, atol=1e-13)


@given(small_trees(), schedule_configs())
def test_deterministic_ancestor_maps_at_every_boundary(tree, config):
    process = TreeProcess(tree, config.build(tree))
    taus = process.schedule.taus.tolist()
    for h, tau in enumerate(taus):
        q = transition_matrix(process, tau)[: tree.vocab_size]
        expected = torch.zeros_like(q)
        expected[torch.arange(tree.vocab_size), process.ancestors[:, h]] = 1
        assert torch.equal(q, expected)  # exactly 0/1, no rounding
    for g, tau in enumerate(taus[:-1]):
        # Between boundaries: level-g nodes map deterministically to their level-h ancestors.
        for h in range(g, tree.depth + 1):
            q = transition_matrix(process, taus[h], tau)
            rows = torch.arange(tree.level_offsets[g], tree.level_offsets[g + 1])
            assert torch.equal(q[rows].sum(1), torch.ones(len(rows), dtype=torch.float64))
            assert ((q[rows] == 0) | (q[rows] == 1)).all()


def test_rate_form_within_a_level():
    """Within one level a level-h node stays with probability α(s_t)/α(s_u) (docs/method.md §3)."""
    tree = random_tree(8, 2, seed=0)
    process = TreeProcess(tree, ScheduleConfig(alpha="cosine").build(tree))
    u, t = 0.40, 0.60  # both in level 1 of 3 (uniform)
    q = transition_matrix(process, t, u)
    alpha = process.schedule.in_level.alpha
    s_u, s_t = torch.tensor(0.40 * 3 - 1, dtype=torch.float64), torch.tensor(0.60 * 3 - 1,
                                                                          dtype=torch.float64)
    node = tree.level_offsets[1]
    parent = tree.level_offsets[2] + tree.parents[1][0]
    assert float(q[node, node]) == pytest.approx(float(alpha(s_t) / alpha(s_u)), rel=1e-12)
    assert float(q[node, parent]) == pytest.approx(1 - float(alpha(s_t) / alpha(s_u)), rel=1e-12)


@given(small_trees(max_leaves=10), schedule_configs(), st.sampled_from([0.13, 0.5, 0.77, 0.95]))
def test_forward_sample_frequencies_match_the_matrix(tree, config, t):
    """χ² of forward_sample's outcomes per token against Q̄_{t|0}; fixed seed, so never flaky.

    With the seed fixed a correct process gives one fixed p-value; the 1e-3 threshold only
    fails when frequencies are off (a wrong α, level or ancestor gives p ≈ 0 at 4000 draws).
    """
    process = TreeProcess(tree, config.build(tree))
    draws = 4000
    x = torch.arange(tree.vocab_size).repeat(draws, 1)
    z = process.forward_sample(x, torch.full((draws,), t, dtype=torch.float64),
                               torch.Generator().manual_seed(1234)).z
    q = transition_matrix(process, t)[: tree.vocab_size].numpy()
    for token in range(tree.vocab_size):
        counts = np.bincount(z[:, token].numpy(), minlength=tree.num_nodes)
        assert chi2_pvalue(counts, q[token]) > 1e-3


def test_transition_matrix_errors():
    process = TreeProcess(random_tree(10, 3, seed=0))
    with pytest.raises(ValueError, match="0 <= u <= t <= 1"):
        transition_matrix(process, 0.2, 0.5)
    with pytest.raises(ValueError, match="for small trees"):
        transition_matrix(TreeProcess(random_tree(5000, 8, seed=0)), 0.5)
