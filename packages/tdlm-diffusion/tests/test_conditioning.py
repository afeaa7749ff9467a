"""Conditioning on known positions (docs/method.md §8): prompts and infilling.

The oracle is the true posterior of every masked position's child slot given what the network
sees. In ``clean`` mode it sees the known tokens (leaves), so the posterior of the joint
distribution is already the conditional one; in ``projection`` mode it sees only ``a_h(x_K)``,
so the oracle that is exact for the conditional task is the posterior of ``p(· | x_K)`` (a
denoiser that knows the context; on the flat tree ``a_0(x) = x`` and the two coincide). With
it, conditional samples follow ``p(x_U | x_K)`` and the conditional NELBO is
``-log p(x_U | x_K)`` for every x — the bound is tight for the true posteriors — level by level.
"""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusion_helpers import chi2_pvalue, small_trees, state_table_denoiser
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import (
    CONTEXT_MODES,
    Context,
    SamplerConfig,
    TreeProcess,
    ancestral_sample,
    count_nelbo,
    diffusion_loss,
    evaluate_nelbo,
    harmonic_count,
    harmonic_number,
    masked_count,
    training_loss,
)
from tdlm_tree import flat_tree, random_tree

LENGTH = 4
TREES = {"two-level": random_tree(6, 3, seed=0), "flat": flat_tree(6)}  # 6 -> 2 -> 1; 6 -> 1
MASKS = {"prefix": (True, False, False, False), "infill": (True, False, False, True)}
JOINT = np.random.default_rng(0).dirichlet(np.full(6**LENGTH, 0.5)).reshape((6,) * LENGTH)


# --- the oracle ---------------------------------------------------------------------------------
def _sequences(vocab: int, length: int) -> torch.Tensor:
    """Every sequence, in the order of ``joint.reshape(-1)``."""
    return torch.cartesian_prod(*[torch.arange(vocab)] * length).reshape(-1, length)


def posterior_table(process: TreeProcess, joint: np.ndarray) -> torch.Tensor:
    """``[H, n^L, L, k]``: ``log p(slot of a_h(x^ℓ) | state)`` under ``joint`` for every state of
    ``n`` node ids and every masked position (0 elsewhere, and for states of probability 0).

    A node v at position ℓ says ``a_{h+1}(x^ℓ) = v`` (masked), ``a_h(x^ℓ) = v`` (v at level h),
    or ``x^ℓ = v`` (v a leaf below level h: a clean context's known token).
    """
    tree = process.tree
    length, n, width = joint.ndim, tree.num_nodes, process.width
    p = torch.from_numpy(joint.reshape(-1))
    support = p > 0
    sequences, p = _sequences(tree.vocab_size, length)[support], p[support]
    states = _sequences(n, length)
    table = torch.zeros(tree.depth, len(states), length, width, dtype=torch.float64)
    nodes, leaves = torch.arange(n)[:, None], torch.arange(tree.vocab_size)[None, :]
    for h in range(tree.depth):
        low, high = tree.level_offsets[h], tree.level_offsets[h + 1]
        # match[v, x]: a node v at a position is consistent with the token x there.
        seen = torch.where(nodes >= high, process.ancestors[leaves, h + 1],
                           torch.where(nodes >= low, process.ancestors[leaves, h], leaves))
        match = seen == nodes
        consistent = torch.ones(len(states), len(sequences), dtype=torch.bool)
        for pos in range(length):
            consistent &= match[states[:, pos, None], sequences[None, :, pos]]
        weights = consistent * p
        for pos in range(length):
            slots = F.one_hot(process.paths[sequences[:, pos], h], width).double()
            mass = weights @ slots
            total = mass.sum(-1, keepdim=True)
            masked = (states[:, pos, None] >= high) & (total > 0)
            table[h, :, pos] = torch.where(masked, torch.log(mass / total), 0.0)
    return table


def oracle(process: TreeProcess, joint: np.ndarray):
    return state_table_denoiser(posterior_table(process, joint), process.tree.num_nodes)


def given_context(joint: np.ndarray, known: tuple[bool, ...], tokens) -> np.ndarray:
    """``p(x | x_K = tokens)`` as a joint over all sequences (0 where x_K differs)."""
    index = tuple(int(t) if k else slice(None) for k, t in zip(known, tokens, strict=True))
    out = np.zeros_like(joint)
    out[index] = joint[index] / joint[index].sum()
    return out


def _context(known: tuple[bool, ...], tokens, batch: int, mode: str) -> Context:
    return Context(torch.tensor(known).expand(batch, -1).clone(),
                   torch.as_tensor(tokens).expand(batch, -1).clone(), mode)


def _histogram(tokens: torch.Tensor, vocab: int) -> np.ndarray:
    place = vocab ** torch.arange(tokens.shape[1] - 1, -1, -1)
    return np.bincount((tokens * place).sum(-1).numpy(), minlength=vocab ** tokens.shape[1])


# --- the context and what the network sees ------------------------------------------------------
def test_prefix_and_infill_contexts():
    prompt = torch.tensor([[4, 1], [0, 5]])
    context = Context.prefix(prompt, 5, "clean")
    assert context.known.tolist() == [[True, True, False, False, False]] * 2
    assert torch.equal(context.tokens[:, :2], prompt) and context.mode == "clean"
    assert context.unknown_count.tolist() == [3, 3]
    infill = Context.infill(prompt, 3, torch.tensor([[2], [3]]))
    assert infill.known.tolist() == [[True, True, False, False, False, True]] * 2
    assert infill.tokens[:, [0, 1, 5]].tolist() == [[4, 1, 2], [0, 5, 3]]
    assert infill.mode == "projection"
    assert Context.prefix(prompt[:, :0], 3).unknown_count.tolist() == [3, 3]


@given(small_trees(max_leaves=12), st.sampled_from(CONTEXT_MODES), st.integers(0, 10**6))
def test_known_positions_are_shown_per_mode_and_never_masked(tree, mode, seed):
    process = TreeProcess(tree)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, tree.vocab_size, (5, 6), generator=g)
    known = torch.rand(5, 6, generator=g) < 0.5
    # Unknown positions of the context hold junk: it must be ignored.
    context = Context(known, torch.where(known, x, -7), mode)
    level = torch.randint(0, tree.depth, (5,), generator=g)
    z = process.sample_in_level(x, level, torch.rand(5, generator=g), g)
    shown = context.show(process, z, level)
    expected = process.ancestor(x, level) if mode == "projection" else x
    assert torch.equal(shown[known], expected[known])
    assert torch.equal(shown[~known], z[~known])
    assert not process.is_masked(shown, level)[known].any()


# --- the sampler --------------------------------------------------------------------------------
@given(small_trees(max_leaves=12), st.sampled_from(CONTEXT_MODES), st.integers(0, 20),
       st.integers(0, 10**6))
def test_known_positions_are_bit_identical_at_every_step(tree, mode, extra_steps, seed):
    """Random masks (rows with everything or nothing known included), a network that reads the
    whole input: known positions hold their tokens in every trajectory state and the output,
    the network sees them as the mode says, unknown positions end at leaves, and the output
    reuse changes nothing but the number of calls."""
    process = TreeProcess(tree)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, tree.vocab_size, (4, 5), generator=g)
    known = torch.rand(4, 5, generator=g) < torch.tensor([[0.5], [0.5], [0.0], [1.0]])
    context = Context(known, tokens, mode)
    table = torch.randn(tree.num_nodes, process.width, generator=g)
    results = {}
    for cache in (True, False):
        seen = []

        def denoiser(nodes, level, seen=seen):
            seen.append((nodes.clone(), level.clone()))
            return table[nodes] + 0.1 * nodes.sum(-1, keepdim=True)[..., None]

        config = SamplerConfig(steps=tree.depth + extra_steps, cache=cache, keep_trajectory=True)
        results[cache] = ancestral_sample(process, denoiser, batch_size=4, length=5,
                                          config=config, context=context,
                                          generator=torch.Generator().manual_seed(seed))
        for nodes, level in seen:
            assert torch.equal(nodes, context.show(process, nodes, level))
            assert not process.is_masked(nodes, level)[known].any()
    result = results[True]
    assert (result.trajectory[:, known] == tokens[known]).all()
    assert torch.equal(result.tokens[known], tokens[known])
    assert (result.tokens < tree.vocab_size).all()
    assert (result.trajectory[0][~known] == process.root).all()
    assert torch.equal(result.trajectory, results[False].trajectory)
    assert result.network_calls <= results[False].network_calls


@given(small_trees(max_leaves=12), st.sampled_from(CONTEXT_MODES), st.integers(0, 10**6))
def test_a_context_with_nothing_known_is_the_unconditional_sampler(tree, mode, seed):
    process = TreeProcess(tree)
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(tree.num_nodes, process.width, generator=g)

    def denoiser(nodes, level):
        return table[nodes] + 0.1 * nodes.sum(-1, keepdim=True)[..., None]

    config = SamplerConfig(steps=tree.depth + 5, keep_trajectory=True)
    empty = Context(torch.zeros(3, 4, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.long), mode)
    plain, conditioned = (
        ancestral_sample(process, denoiser, batch_size=3, length=4, config=config, context=c,
                         generator=torch.Generator().manual_seed(seed))
        for c in (None, empty)
    )
    assert torch.equal(plain.trajectory, conditioned.trajectory)
    assert plain.network_calls == conditioned.network_calls


@pytest.mark.parametrize("mode", CONTEXT_MODES)
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("tree_name", list(TREES))
def test_conditional_samples_follow_the_true_conditional(tree_name, mask, mode):
    """χ² of 20000 samples of the unknown positions against ``p(x_U | x_K)`` (fixed seed).

    The positions are dependent, so the sampler is exact only when no two unknown positions
    unmask in the same step; with 400 steps per level that happens to under 1% of the samples
    per level (3 pairs / 400), a distortion below what 20000 draws resolve at p = 1e-3. The test
    has power: the unconditional marginal ``p(x_U)`` is rejected at p < 1e-6.
    """
    tree = TREES[tree_name]
    process = TreeProcess(tree)
    known = MASKS[mask]
    x_known = (2, 0, 0, 5)
    conditional = given_context(JOINT, known, x_known)
    sees_context = mode == "clean" or tree.depth == 1  # the network input holds x_K itself
    denoiser = oracle(process, JOINT if sees_context else conditional)
    draws = 20000
    result = ancestral_sample(process, denoiser, batch_size=draws, length=LENGTH,
                              config=SamplerConfig(steps=400 * tree.depth),
                              context=_context(known, x_known, draws, mode),
                              generator=torch.Generator().manual_seed(1))
    unknown = [pos for pos in range(LENGTH) if not known[pos]]
    assert (result.tokens[:, [p for p in range(LENGTH) if known[p]]]
            == torch.tensor([t for t, k in zip(x_known, known, strict=True) if k])).all()
    observed = _histogram(result.tokens[:, unknown], 6)
    index = tuple(t if k else slice(None) for k, t in zip(known, x_known, strict=True))
    assert chi2_pvalue(observed, conditional[index]) > 1e-3
    marginal = JOINT.sum(axis=tuple(p for p in range(LENGTH) if known[p]))
    assert chi2_pvalue(observed, marginal / marginal.sum()) < 1e-6


def test_projection_shows_only_a_cluster_at_coarse_levels():
    """docs/method.md §8's caveat, made visible: a network that reads only its input (here the true
    posterior of the joint given that input) samples the true conditional in ``clean`` mode
    (the test above) but not in ``projection`` mode on a deeper tree, where at level 1 it sees
    ``a_1(x_K)`` and not ``x_K`` (rejected at p < 1e-6, fixed seed)."""
    process = TreeProcess(TREES["two-level"])
    known, x_known = MASKS["prefix"], (2, 0, 0, 0)
    result = ancestral_sample(process, oracle(process, JOINT), batch_size=20000, length=LENGTH,
                              config=SamplerConfig(steps=800),
                              context=_context(known, x_known, 20000, "projection"),
                              generator=torch.Generator().manual_seed(1))
    conditional = given_context(JOINT, known, x_known)[2]
    assert chi2_pvalue(_histogram(result.tokens[:, 1:], 6), conditional) < 1e-6


# --- the conditional NELBO ----------------------------------------------------------------------
NELBO_MASKS = {"nothing": (False,) * LENGTH, **MASKS}


def exact_levels(process: TreeProcess, joint: np.ndarray, xs: torch.Tensor,
                 known: torch.Tensor) -> torch.Tensor:
    """``[m, H]``: ``-log p(a_h(x_U) | a_{h+1}(x_U), x_K)`` for each row's own known mask, the
    chain rule over levels (they sum to ``-log p(x_U | x_K)``)."""
    p = torch.from_numpy(joint.reshape(-1))
    sequences = _sequences(process.vocab_size, xs.shape[1])
    log_mass = []
    for g in range(process.depth + 1):
        ours = process.ancestors[xs, g][:, None]
        theirs = process.ancestors[sequences, g][None]
        same = torch.where(known[:, None], xs[:, None] == sequences[None], ours == theirs)
        log_mass.append(torch.log(same.all(-1).double() @ p))
    return torch.stack([log_mass[h + 1] - log_mass[h] for h in range(process.depth)], dim=1)


def _patterns(known: tuple[bool, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every non-empty subset of the unknown positions and its probability under the count
    form: ``P(k) P(S | k) = (1 / L_u) / C(L_u, k)``."""
    unknown = [pos for pos in range(len(known)) if not known[pos]]
    patterns, probability = [], []
    for k in range(1, len(unknown) + 1):
        for subset in itertools.combinations(unknown, k):
            patterns.append([pos in subset for pos in range(len(known))])
            probability.append(1 / (len(unknown) * math.comb(len(unknown), k)))
    return torch.tensor(patterns), torch.tensor(probability, dtype=torch.float64)


def expected_levels(process, denoiser, xs, known, mode, form):
    """``[m, H]``: the exact expectation of one level's conditional estimate, every row sharing
    the mask ``known``: in the count form (``count_nelbo``) over every count and subset of the
    unknown positions; in the time form (``in_level_nelbo`` is ``diffusion_loss`` without
    ``1 / Δ_h``) over every masking pattern of the unknown positions, weighted by its
    probability under ``α(s) = 1 - s``, and over s by 24-point Gauss–Legendre, exact for
    the polynomial integrand ``s^(k-1) (1-s)^(L_u-k)``."""
    m, length = xs.shape
    patterns, probability = _patterns(known)
    if form == "time":
        patterns = torch.tensor(list(itertools.product([False, True], repeat=length)))
        patterns = patterns[~(patterns & torch.tensor(known)).any(-1)]
        nodes, weights = np.polynomial.legendre.leggauss(24)
        s_grid = torch.from_numpy((nodes + 1) / 2)
        k = patterns.sum(-1)
        # P(pattern | s) over the L_u unknown positions, times the quadrature weight.
        probability = (s_grid[:, None] ** k * (1 - s_grid[:, None]) ** (~patterns).sum(-1)
                       / (1 - s_grid[:, None]) ** sum(known))
        probability = (torch.from_numpy(weights / 2)[:, None] * probability).reshape(-1)
        s_rows = s_grid.repeat_interleave(len(patterns))
        patterns = patterns.repeat(len(s_grid), 1)
    p = len(patterns)
    x = xs[None].expand(p, m, length).reshape(-1, length)
    pattern = patterns[:, None].expand(p, m, length).reshape(-1, length)
    context = Context(torch.tensor(known).expand(p * m, length).clone(), x, mode)
    columns = []
    for h in range(process.depth):
        level = torch.full((p * m,), h)
        z = torch.where(pattern, process.ancestor(x, level + 1), process.ancestor(x, level))
        z = context.show(process, z, level)
        logits = denoiser(z, level)
        if form == "count":
            value = count_nelbo(process, logits, x, z, level, pattern.sum(-1), known=context.known)
        else:
            t = (process.schedule.taus[h] + process.schedule.deltas[h]
                 * s_rows[:, None].expand(p, m).reshape(-1))
            value = diffusion_loss(process, logits, x, z, t) * process.schedule.deltas[h]
        columns.append((probability[:, None] * value.view(p, m)).sum(0))
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("mode", CONTEXT_MODES)
@pytest.mark.parametrize("mask", list(NELBO_MASKS))
@pytest.mark.parametrize("tree_name", list(TREES))
def test_conditional_nelbo_is_exact_for_the_true_conditionals(tree_name, mask, mode):
    """For every sequence x, the expected conditional estimate of each level (exact expectation,
    count and time form) is ``-log p(a_h(x_U) | a_{h+1}(x_U), x_K)``: summed, ``-log p(x_U |
    x_K)``, and averaged over x ~ p, ``H(X_U | X_K)``. With nothing known this is the
    unconditional per-level split, and conditional + ``-log p(x_K)`` = unconditional for every x.
    Float64 oracle, exact expectations: equal to 1e-10 (2e-7 in the count form, below)."""
    process = TreeProcess(TREES[tree_name])
    known = NELBO_MASKS[mask]
    sequences = _sequences(6, LENGTH)
    if mode == "clean" or process.depth == 1 or not any(known):  # the input holds x_K
        batches = [(JOINT, sequences)]
    else:  # rows grouped by x_K, each with the oracle of p(· | x_K)
        x_known = sequences[:, list(np.flatnonzero(known))]
        batches = [(given_context(JOINT, known, sequences[group[0]].tolist()),
                    sequences[group])
                   for group in (torch.nonzero((x_known == value).all(-1))[:, 0]
                                 for value in torch.unique(x_known, dim=0))]
    estimates = {"count": [], "time": []}
    for joint, xs in batches:
        denoiser = oracle(process, joint)
        for form in estimates:
            estimates[form].append(expected_levels(process, denoiser, xs, known, mode, form))
    xs = torch.cat([xs for _, xs in batches])
    exact = exact_levels(process, JOINT, xs, torch.tensor(known).expand_as(xs))
    # The count form's weight L_u / k is a float32 (as without a context): relative 6e-8.
    for form, tolerance in (("count", 2e-7), ("time", 1e-10)):
        torch.testing.assert_close(torch.cat(estimates[form]), exact, rtol=tolerance, atol=0)
    p = JOINT[tuple(xs.T.numpy())]
    marginal = JOINT.sum(axis=tuple(pos for pos in range(LENGTH) if not known[pos]), keepdims=True)
    conditional_entropy = -(JOINT * np.log(JOINT / marginal)).sum()
    assert float(torch.from_numpy(p) @ exact.sum(1)) == pytest.approx(conditional_entropy,
                                                                       rel=1e-10)
    # -log p(x_U | x_K) - log p(x_K) = -log p(x), the unconditional sum of levels.
    p_known = marginal[tuple(xs[:, pos].numpy() if known[pos] else 0 for pos in range(LENGTH))]
    unconditional = exact_levels(process, JOINT, xs, torch.zeros_like(xs, dtype=torch.bool))
    np.testing.assert_allclose(exact.sum(1).numpy() - np.log(p_known),
                               unconditional.sum(1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(unconditional.sum(1).numpy(), -np.log(p), rtol=1e-10)


def test_conditional_estimators_are_unbiased_with_a_different_context_per_sequence():
    """192 sequences of p, each with its own random known set (one with everything known, one
    with nothing): the stratified evaluation (count and time form, per level) and the four
    training estimators estimate each row's ``-log p(x_U | x_K)`` without bias — |mean error|
    < 3 standard errors over fixed-seed repeats; 3 standard errors are at most 2% of the mean
    NELBO (3.7 nats), and the cutoff's ε = 1e-3 bias is far below them —, a fully known row
    scores exactly 0, and the tokens counted are the unknown ones. ``clean`` mode, so the
    joint's posterior given the input is the oracle of every row at once."""
    process = TreeProcess(TREES["two-level"])
    denoiser = oracle(process, JOINT)
    rng = np.random.default_rng(1)
    cells = rng.choice(JOINT.size, size=192, p=JOINT.reshape(-1))
    x = torch.from_numpy(np.stack(np.unravel_index(cells, JOINT.shape), axis=1))
    known = torch.from_numpy(rng.random((192, LENGTH)) < 0.4)
    known[0], known[1] = True, False
    context = Context(known, x, "clean")
    exact = exact_levels(process, JOINT, x, known)
    exact[0] = 0.0  # log 1 - log 1, written as 0 - 0 by the chain rule above
    level_errors, total_errors = [], {}
    for estimator in ("count", "continuous"):
        for r in range(40):
            estimate = evaluate_nelbo(process, denoiser, x, samples_per_level=2,
                                      estimator=estimator, context=context,
                                      generator=torch.Generator().manual_seed(r))
            assert (estimate.level_nelbo[0] == 0).all()
            level_errors.append((estimate.level_nelbo - exact).mean(0).numpy())
        assert estimate.num_tokens == int((~known).sum())
        assert estimate.per_token == pytest.approx(estimate.total_nats / estimate.num_tokens)
    for estimator in ("cutoff", "count", "harmonic", "continuous"):
        total_errors[estimator] = []
        for r in range(250):
            out = training_loss(process, denoiser, x, estimator=estimator, context=context,
                                generator=torch.Generator().manual_seed(r))
            assert out.per_sequence[0] == 0
            torch.testing.assert_close(out.nelbo, out.per_sequence.sum() / (~known).sum())
            total_errors[estimator].append(float((out.per_sequence - exact.sum(1)).mean()))
    checks = [np.array(level_errors[:40]), np.array(level_errors[40:]),
              *map(np.array, total_errors.values())]
    for errors in checks:
        sem = errors.std(0, ddof=1) / math.sqrt(len(errors))
        assert (sem > 0).all()
        assert (np.abs(errors.mean(0)) < 3 * sem).all()


@pytest.mark.parametrize("mode", CONTEXT_MODES)
def test_a_context_with_nothing_known_gives_the_unconditional_estimates(mode):
    """Bit for bit: evaluation (both forms) and training (the harmonic count's CDF is computed
    per sequence under a context, so its estimate is equal to rounding)."""
    process = TreeProcess(TREES["two-level"])
    table = torch.randn(process.tree.num_nodes, 3, generator=torch.Generator().manual_seed(0))

    def denoiser(nodes, level):
        return table[nodes] + 0.1 * nodes.sum(-1, keepdim=True)[..., None]

    x = torch.randint(0, 6, (16, 7), generator=torch.Generator().manual_seed(1))
    empty = Context(torch.zeros_like(x, dtype=torch.bool), x, mode)
    for estimator in ("count", "continuous"):
        plain, conditioned = (
            evaluate_nelbo(process, denoiser, x, samples_per_level=3, estimator=estimator,
                           context=c, generator=torch.Generator().manual_seed(2))
            for c in (None, empty)
        )
        assert torch.equal(plain.level_nelbo, conditioned.level_nelbo)
        assert torch.equal(plain.tokens_per_sequence, conditioned.tokens_per_sequence)
    for estimator in ("cutoff", "count", "harmonic", "continuous"):
        plain, conditioned = (
            training_loss(process, denoiser, x, estimator=estimator, context=c,
                          generator=torch.Generator().manual_seed(3))
            for c in (None, empty)
        )
        if estimator == "harmonic":
            torch.testing.assert_close(conditioned.per_sequence, plain.per_sequence)
            torch.testing.assert_close(conditioned.loss, plain.loss)
        else:
            assert torch.equal(plain.per_sequence, conditioned.per_sequence)
            assert torch.equal(plain.loss, conditioned.loss)


@given(small_trees(max_leaves=12), st.sampled_from(CONTEXT_MODES),
       st.sampled_from(["cutoff", "count", "harmonic", "continuous"]), st.integers(0, 10**6))
def test_training_loss_scores_unknown_positions_only(tree, mode, estimator, seed):
    """Known positions are shown per the mode, never masked, get zero gradient, and the loss is
    per unknown token; a batch with everything known has loss 0, not NaN."""
    process = TreeProcess(tree)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, tree.vocab_size, (6, 5), generator=g)
    logits = torch.randn(6, 5, process.width, generator=g, requires_grad=True)
    seen = {}

    def denoiser(nodes, level):
        seen["nodes"], seen["level"] = nodes, level
        return logits * 1.0

    for known in (torch.rand(6, 5, generator=g) < 0.5, torch.ones(6, 5, dtype=torch.bool)):
        logits.grad = None
        context = Context(known, x, mode)
        out = training_loss(process, denoiser, x, estimator=estimator, context=context,
                            generator=torch.Generator().manual_seed(seed))
        out.loss.backward()
        assert torch.equal(seen["nodes"], context.show(process, seen["nodes"], seen["level"]))
        assert not process.is_masked(seen["nodes"], seen["level"])[known].any()
        assert (logits.grad[known] == 0).all() and torch.isfinite(logits.grad).all()
        torch.testing.assert_close(out.loss, out.per_sequence.sum() / max(int((~known).sum()), 1))


def test_count_helpers_take_per_sequence_lengths():
    """``masked_count`` and ``harmonic_count`` with a length per sequence (``L_u``) are the
    scalar laws row by row (0 where ``L_u = 0``), and ``mask_count`` masks exactly k of the
    unknown positions."""
    grid = 60_000
    s = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    for length in (1, 3, 5):
        lengths = torch.full((grid,), length)
        assert torch.equal(masked_count(s, lengths), masked_count(s, length))
        k = harmonic_count(s, lengths)
        frequencies = np.bincount(k.numpy(), minlength=length + 1)[1:] / grid
        law = (1 / np.arange(1, length + 1)) / harmonic_number(length)
        np.testing.assert_allclose(frequencies, law, atol=1 / grid)
        np.testing.assert_allclose(harmonic_number(lengths[:1]).numpy(), harmonic_number(length),
                                   rtol=1e-15)
    zero = torch.zeros(2, dtype=torch.long)
    assert masked_count(s[:2], zero).tolist() == [0, 0]
    assert harmonic_count(s[:2], zero).tolist() == [0, 0]
    assert harmonic_number(zero).tolist() == [0.0, 0.0]
    process = TreeProcess(TREES["two-level"])
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (500, 6), generator=g)
    known = torch.rand(500, 6, generator=g) < 0.5
    count = masked_count(torch.rand(500, generator=g), (~known).sum(-1))
    level = torch.randint(0, 2, (500,), generator=g)
    z = process.mask_count(x, level, count, g, known=known)
    masked = process.is_masked(z, level)
    assert torch.equal(masked.sum(-1), count) and not masked[known].any()
