"""The ancestral sampler (docs/method.md §6) and I6: it reproduces the distribution whose true
conditionals it is given; caching only saves network calls."""

import itertools

import numpy as np
import pytest
import torch
from diffusion_helpers import (
    chi2_pvalue,
    conditional_logits,
    factorised_denoiser,
    joint_denoiser,
    small_trees,
)
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import (
    DiffusionInputError,
    SamplerConfig,
    ScheduleConfig,
    TreeProcess,
    ancestral_sample,
    steps_per_level,
)
from tdlm_tree import random_tree

DRAWS = 20000


def _histogram(tokens: torch.Tensor, vocab: int) -> np.ndarray:
    """Counts of whole sequences, indexed like ``joint.reshape(-1)``."""
    place = vocab ** torch.arange(tokens.shape[1] - 1, -1, -1)
    return np.bincount((tokens * place).sum(-1).numpy(), minlength=vocab ** tokens.shape[1])


def test_i6_reproduces_a_correlated_joint_distribution():
    """Length 2, strongly correlated positions, the exact posteriors p(a_h(x^ℓ) | z) as the model.

    Exact only when no two positions unmask in the same step; with 400 steps per level that
    happens to ~1/400 of sequences per level, a distortion far below what 20000 draws resolve.
    """
    tree = random_tree(6, 2, seed=1)  # 6 -> 3 -> 2 -> 1
    config = ScheduleConfig(alpha="cosine", allocation="exponential")
    process = TreeProcess(tree, config.build(tree))
    rng = np.random.default_rng(0)
    joint = rng.dirichlet(np.full(36, 0.3)).reshape(6, 6)
    result = ancestral_sample(process, joint_denoiser(process, joint), batch_size=DRAWS, length=2,
                              config=SamplerConfig(steps=3 * 400),
                              generator=torch.Generator().manual_seed(0))
    assert chi2_pvalue(_histogram(result.tokens, 6), joint) > 1e-3
    # The positions are dependent, so the product of the marginals must be rejected: the test has
    # power against a sampler that ignores context.
    product = np.outer(joint.sum(1), joint.sum(0))
    assert chi2_pvalue(_histogram(result.tokens, 6), product) < 1e-6


@pytest.mark.parametrize(("steps", "allocation"), [(3, "uniform"), (7, "time"), (30, "uniform")])
def test_i6_reproduces_a_factorised_distribution_at_any_step_count(steps, allocation):
    """Independent positions: exact for every grid, even one step per level (all positions at
    once), for any α; 3 positions over a 6-token vocabulary (216 outcomes)."""
    tree = random_tree(6, 2, seed=1)
    process = TreeProcess(tree, ScheduleConfig(alpha="polynomial", allocation="linear").build(tree))
    probs = np.random.default_rng(1).dirichlet(np.ones(6))
    config = SamplerConfig(steps=steps, step_allocation=allocation)
    result = ancestral_sample(process, factorised_denoiser(process, probs), batch_size=DRAWS,
                              length=3, config=config,
                              generator=torch.Generator().manual_seed(steps))
    joint = np.einsum("i,j,k->ijk", probs, probs, probs)
    assert chi2_pvalue(_histogram(result.tokens, 6), joint) > 1e-3


def _tempered_token_distribution(process, probs, temperature, top_p):
    """Per token: Π_h q(slot_h(x) | a_{h+1}(x)) with q the reshaped child distribution,
    recomputed here in numpy from the true conditionals."""
    tree = process.tree
    table = conditional_logits(process, probs).numpy()
    out = np.ones(tree.vocab_size)
    for x in range(tree.vocab_size):
        for h in range(tree.depth):
            node = process.ancestors[x, h + 1].item()
            count = tree.child_counts[h][node - tree.level_offsets[h + 1]]
            logits = table[node, :count] / temperature
            q = np.exp(logits - logits.max())
            q /= q.sum()
            order = np.argsort(-q, kind="stable")
            before = np.cumsum(q[order]) - q[order]
            kept = np.zeros_like(q)
            kept[order[before < top_p]] = q[order[before < top_p]]
            out[x] *= kept[tree.paths[x, h]] / kept.sum()
    return out


@pytest.mark.parametrize(("temperature", "top_p"), [(0.5, 1.0), (2.0, 1.0), (1.0, 0.7)])
def test_temperature_and_top_p_reshape_each_child_choice(temperature, top_p):
    tree = random_tree(9, 3, seed=4)
    process = TreeProcess(tree)
    probs = np.random.default_rng(2).dirichlet(np.ones(9))
    config = SamplerConfig(steps=4, temperature=temperature, top_p=top_p)
    result = ancestral_sample(process, factorised_denoiser(process, probs), batch_size=DRAWS,
                              length=1, config=config, generator=torch.Generator().manual_seed(5))
    expected = _tempered_token_distribution(process, probs, temperature, top_p)
    assert chi2_pvalue(_histogram(result.tokens, 9), expected) > 1e-3


def test_tiny_top_p_is_greedy_per_level():
    tree = random_tree(9, 3, seed=4)
    process = TreeProcess(tree)
    probs = np.random.default_rng(2).dirichlet(np.ones(9))
    result = ancestral_sample(process, factorised_denoiser(process, probs), batch_size=50,
                              length=3, config=SamplerConfig(steps=6, top_p=1e-9),
                              generator=torch.Generator().manual_seed(0))
    greedy = _tempered_token_distribution(process, probs, 1.0, 1e-9).argmax()
    assert (result.tokens == int(greedy)).all()


@given(small_trees(max_leaves=12), st.integers(0, 1000))
def test_zero_temperature_takes_the_most_probable_child_at_every_choice(tree, seed):
    """Greedy decoding: every token is the path of argmax child choices (the T -> 0 limit,
    which equals the tiny-top-p limit), whatever the random choice of positions per step."""
    process = TreeProcess(tree)
    probs = np.random.default_rng(seed).dirichlet(np.ones(tree.vocab_size))
    result = ancestral_sample(process, factorised_denoiser(process, probs), batch_size=4,
                              length=3, config=SamplerConfig(steps=6, temperature=0.0),
                              generator=torch.Generator().manual_seed(seed))
    greedy = _tempered_token_distribution(process, probs, 1.0, 1e-9).argmax()
    assert (result.tokens == int(greedy)).all()


@given(small_trees(max_leaves=12), st.integers(1, 40), st.integers(0, 1000))
def test_caching_changes_nothing_but_the_number_of_calls(tree, extra_steps, seed):
    process = TreeProcess(tree)
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(tree.num_nodes, process.width, generator=g)
    outputs = {}
    for cache in (True, False):
        calls = []

        def denoiser(nodes, level, calls=calls):
            calls.append(nodes.clone())
            return table[nodes] + 0.1 * nodes.sum(-1, keepdim=True)[..., None]  # sees context

        config = SamplerConfig(steps=tree.depth + extra_steps, cache=cache, keep_trajectory=True)
        result = ancestral_sample(process, denoiser, batch_size=2, length=3, config=config,
                                  generator=torch.Generator().manual_seed(seed))
        assert result.network_calls == len(calls)
        outputs[cache] = result, calls
    (cached, cached_calls), (plain, plain_calls) = outputs[True], outputs[False]
    assert torch.equal(cached.tokens, plain.tokens)
    assert torch.equal(cached.trajectory, plain.trajectory)
    assert plain.network_calls == tree.depth + extra_steps
    # A call is skipped exactly when the previous step changed nothing within the same level.
    starts = set(np.cumsum((0,) + tuple(reversed(plain.steps_per_level)))[:-1].tolist())
    changed = (plain.trajectory[1:] != plain.trajectory[:-1]).flatten(1).any(1).tolist()
    expected = sum(1 for j in range(len(changed)) if j in starts or changed[j - 1])
    assert cached.network_calls == expected
    # The calls that were made saw the same inputs as the corresponding uncached ones.
    assert all(any(torch.equal(c, p) for p in plain_calls) for c in cached_calls)


def test_time_conditioned_sampling_never_reuses_and_sees_the_grid():
    tree = random_tree(8, 2, seed=0)
    process = TreeProcess(tree, pass_time=True)
    seen = []

    def denoiser(nodes, level, s):
        seen.append((int(level[0]), float(s[0])))
        return torch.zeros(*nodes.shape, process.width)

    result = ancestral_sample(process, denoiser, batch_size=1, length=1,
                              config=SamplerConfig(steps=6), generator=torch.Generator())
    assert result.network_calls == 6
    assert seen == [(2, 1.0), (2, 0.5), (1, 1.0), (1, 0.5), (0, 1.0), (0, 0.5)]


@given(small_trees(max_leaves=12), st.integers(0, 30), st.integers(0, 1000))
def test_trajectory_resolves_coarse_to_fine(tree, extra_steps, seed):
    process = TreeProcess(tree)
    steps = tree.depth + extra_steps
    result = ancestral_sample(process, lambda z, h: torch.zeros(*z.shape, process.width),
                              batch_size=3, length=4,
                              config=SamplerConfig(steps=steps, keep_trajectory=True),
                              generator=torch.Generator().manual_seed(seed))
    path = result.trajectory
    assert path.shape == (steps + 1, 3, 4)
    assert (path[0] == process.root).all() and torch.equal(path[-1], result.tokens)
    assert ((result.tokens >= 0) & (result.tokens < tree.vocab_size)).all()
    # Every change is a move from a node to one of its children.
    before, after = path[:-1], path[1:]
    moved = before != after
    parent_of = torch.full((tree.num_nodes,), -1)
    for h in range(tree.depth):
        nodes = torch.arange(tree.level_sizes[h]) + tree.level_offsets[h]
        parent_of[nodes] = torch.from_numpy(tree.parents[h].copy()) + tree.level_offsets[h + 1]
    assert torch.equal(parent_of[after[moved]], before[moved])
    # At the end of each level's block every position has reached that level.
    end = 0
    for h in reversed(range(tree.depth)):
        end += result.steps_per_level[h]
        level_lo, level_hi = tree.level_offsets[h], tree.level_offsets[h + 1]
        assert ((path[end] >= level_lo) & (path[end] < level_hi)).all()


def test_steps_per_level():
    tree = random_tree(30, 3, seed=0)  # depth 4
    uniform = ScheduleConfig().build(tree)
    assert steps_per_level(uniform, 4) == (1, 1, 1, 1)
    assert steps_per_level(uniform, 10) == (3, 3, 2, 2)  # ties go to the levels near the leaves
    skewed = ScheduleConfig(allocation="explicit", proportions=(0.7, 0.1, 0.1, 0.1)).build(tree)
    assert steps_per_level(skewed, 24, "time") == (15, 3, 3, 3)
    for steps in range(4, 60):
        split = steps_per_level(skewed, steps, "time")
        assert sum(split) == steps and min(split) >= 1
    with pytest.raises(DiffusionInputError, match="cannot cover 4 levels"):
        steps_per_level(uniform, 3)


def test_sampler_rejects_too_few_steps():
    process = TreeProcess(random_tree(30, 3, seed=0))
    with pytest.raises(DiffusionInputError, match="cannot cover"):
        ancestral_sample(process, lambda z, h: torch.zeros(*z.shape, 3), batch_size=1, length=1,
                         config=SamplerConfig(steps=2))


def test_every_sequence_is_reachable_with_a_uniform_model():
    """A sanity check of the tree walk: a uniform child model reaches every token."""
    tree = random_tree(7, 2, seed=3)
    process = TreeProcess(tree)
    result = ancestral_sample(process, lambda z, h: torch.zeros(*z.shape, process.width),
                              batch_size=2000, length=1, config=SamplerConfig(steps=3),
                              generator=torch.Generator().manual_seed(0))
    expected = np.ones(7)
    for x, h in itertools.product(range(7), range(tree.depth)):
        node = tree.ancestors[x, h + 1]
        expected[x] /= tree.child_counts[h][node]
    assert chi2_pvalue(np.bincount(result.tokens[:, 0].numpy(), minlength=7), expected) > 1e-3
