"""Shared test machinery: random small trees, quadrature, χ² tests and oracle denoisers.

An *oracle* denoiser returns the true conditionals of a known distribution, which is what the
ELBO's tightness (I2) and the sampler's correctness (I6) are stated for.
"""

import itertools
import math

import numpy as np
import torch
from hypothesis import strategies as st

from tdlm_diffusion import ScheduleConfig, TreeProcess, count_nelbo, diffusion_loss
from tdlm_tree import VocabTree, flat_tree, random_tree


# --- trees and schedules ------------------------------------------------------------------------
@st.composite
def uneven_trees(draw, max_leaves: int = 24) -> VocabTree:
    """Trees with uneven child counts (some nodes with one child, others with many)."""
    sizes = [draw(st.integers(2, max_leaves))]
    while sizes[-1] > 1:
        sizes.append(draw(st.integers(1, sizes[-1] - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    parents = []
    for n, n_up in zip(sizes[:-1], sizes[1:], strict=True):
        # A surjection: the first n_up (shuffled) children cover every parent once.
        parent = np.concatenate([np.arange(n_up), rng.integers(0, n_up, n - n_up)])
        parents.append(rng.permutation(parent))
    return VocabTree(parents)


def small_trees(max_leaves: int = 24) -> st.SearchStrategy[VocabTree]:
    """Flat, balanced random, and uneven trees over at most ``max_leaves`` tokens."""
    return st.one_of(
        st.integers(1, max_leaves).map(flat_tree),
        st.builds(lambda n, k, seed: random_tree(n, k, seed=seed),
                  st.integers(2, max_leaves), st.integers(2, 5), st.integers(0, 100)),
        uneven_trees(max_leaves),
    )


SCHEDULES = [
    ScheduleConfig(),
    ScheduleConfig(alpha="cosine", allocation="exponential", gamma=0.5),
    ScheduleConfig(alpha="polynomial", power=2.0, allocation="linear"),
    ScheduleConfig(alpha="polynomial", power=3.0, allocation="exponential", gamma=1.7),
]


def schedule_configs() -> st.SearchStrategy[ScheduleConfig]:
    return st.sampled_from(SCHEDULES)


# --- numerics -----------------------------------------------------------------------------------
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the n-point Gauss–Legendre rule on [0, 1] (exact to degree 2n-1)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1) / 2, weights / 2


def level_quadrature(process: TreeProcess, n: int = 24) -> list[tuple[int, torch.Tensor, float]]:
    """``(h, t, weight)`` nodes integrating over t ∈ [0, 1] level interval by level interval.

    The integrands are smooth inside a level but not across its ends, so each interval gets its
    own rule; interior nodes never touch a boundary.
    """
    taus = process.schedule.taus.tolist()
    nodes, weights = gauss_legendre(n)
    out = []
    for h in range(process.depth):
        width = taus[h + 1] - taus[h]
        for s, w in zip(nodes, weights, strict=True):
            out.append((h, torch.tensor([taus[h] + width * s], dtype=torch.float64), w * width))
    return out


def chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's χ² goodness-of-fit p-value of ``counts`` against ``probs``.

    Cells of probability 0 must be empty (checked). Cells expecting fewer than 5 are pooled, so
    the χ² approximation holds. The survival function is the regularised upper incomplete gamma.
    """
    counts = np.asarray(counts, dtype=np.float64).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    assert np.all(counts[probs == 0] == 0), "a zero-probability outcome occurred"
    total = counts.sum()
    expected = probs * total
    big = expected >= 5
    obs = np.r_[counts[big], counts[~big].sum()]
    exp = np.r_[expected[big], expected[~big].sum()]
    if exp[-1] < 5:  # fold a small pooled cell into the smallest big one
        smallest = int(np.argmin(exp[:-1]))
        obs[smallest] += obs[-1]
        exp[smallest] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    dof = len(obs) - 1
    if dof < 1:
        return 1.0
    stat = float(((obs - exp) ** 2 / exp).sum())
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))


# --- oracle denoisers ---------------------------------------------------------------------------
def node_probabilities(process: TreeProcess, token_probs: np.ndarray) -> np.ndarray:
    """``p(v)`` for every global node: the mass of the leaves under it."""
    tree = process.tree
    p = np.zeros(tree.num_nodes)
    level_p = np.asarray(token_probs, dtype=np.float64)
    for h in range(tree.depth + 1):
        p[tree.level_offsets[h]: tree.level_offsets[h + 1]] = level_p
        if h < tree.depth:
            level_p = np.bincount(tree.parents[h], weights=level_p,
                                  minlength=tree.level_sizes[h + 1])
    return p


def conditional_logits(process: TreeProcess, token_probs: np.ndarray) -> torch.Tensor:
    """``[num_nodes, k]``: ``log p(child at slot | node)`` (0 for nodes without mass/children)."""
    tree = process.tree
    p = node_probabilities(process, token_probs)
    table = np.zeros((tree.num_nodes, process.width))
    for h in range(tree.depth):
        children = tree.children[h]
        for u in range(tree.level_sizes[h + 1]):
            node = tree.level_offsets[h + 1] + u
            if p[node] == 0:
                continue
            for slot, child in enumerate(children[u]):
                if child >= 0:
                    q = p[tree.level_offsets[h] + child] / p[node]
                    table[node, slot] = np.log(q) if q > 0 else -np.inf
    return torch.from_numpy(table)


def factorised_denoiser(process: TreeProcess, token_probs: np.ndarray):
    """The true conditionals when positions are i.i.d. with ``token_probs``: a table lookup
    (float64, so that exact identities can be checked to ~1e-12)."""
    table = conditional_logits(process, token_probs)

    def denoiser(nodes: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return table[nodes]

    return denoiser


def joint_denoiser(process: TreeProcess, joint: np.ndarray):
    """The true conditionals of a distribution ``joint`` ``[N] * L`` over length-L sequences.

    For a masked position the posterior of its level-h node given the whole state z is
    ``p(a_h(x^ℓ) = c | z) ∝ Σ_{x consistent with z} p(x) 1[a_h(x^ℓ) = c]``, enumerated exhaustively
    over the (tiny) sequence space for every state up front; the denoiser is a table lookup.
    """
    tree = process.tree
    length, n = joint.ndim, tree.num_nodes
    ancestors = process.ancestors.numpy()
    sequences = np.array(list(itertools.product(range(tree.vocab_size), repeat=length)))
    probs = joint.reshape(-1)
    table = np.zeros((tree.depth, n**length, length, process.width))
    for h in range(tree.depth):
        for index, state in enumerate(itertools.product(range(n), repeat=length)):
            masked = [v >= tree.level_offsets[h + 1] for v in state]
            consistent = np.ones(len(sequences), dtype=bool)
            for pos, v in enumerate(state):
                consistent &= ancestors[sequences[:, pos], h + int(masked[pos])] == v
            weights = probs * consistent
            if weights.sum() == 0:
                continue
            for pos in range(length):
                if masked[pos]:
                    mass = np.bincount(tree.paths[sequences[:, pos], h], weights=weights,
                                       minlength=process.width)
                    with np.errstate(divide="ignore"):
                        table[h, index, pos] = np.log(mass / mass.sum())
    return state_table_denoiser(torch.from_numpy(table), n)


def state_table_denoiser(table: torch.Tensor, num_nodes: int):
    """A denoiser looking up ``table[level, state]`` ``[L, k]``, the state being all L node ids."""
    length = table.shape[2]
    place = torch.tensor([num_nodes**pos for pos in reversed(range(length))])

    def denoiser(nodes: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return table[level, (nodes * place).sum(-1)]

    return denoiser


def random_context_denoiser(process: TreeProcess, length: int, seed: int):
    """An arbitrary network that looks at the whole state (not at s): random logits per state."""
    n = process.tree.num_nodes
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(process.depth, n**length, length, process.width, generator=g,
                        dtype=torch.float64)
    return state_table_denoiser(table, n)


# --- exact expectations -------------------------------------------------------------------------
def expected_nelbo(process: TreeProcess, denoiser, xs: torch.Tensor, n: int = 24) -> torch.Tensor:
    """``E_{t ~ U[0,1]} E_{z ~ q_t(·|x)} [diffusion_loss]`` per sequence of ``xs`` ``[m, L]``.

    Exact over z (every masking pattern, weighted by its probability under α(s)) and by
    Gauss–Legendre quadrature over t, level by level; one batched call of the package's loss.
    """
    m, length = xs.shape
    patterns = torch.tensor(list(itertools.product([False, True], repeat=length)))
    quad = level_quadrature(process, n)
    times = torch.cat([t for _, t, _ in quad])
    weights = torch.tensor([w for _, _, w in quad], dtype=torch.float64)
    q, p = len(quad), len(patterns)
    t = times[:, None, None].expand(q, p, m).reshape(-1)
    x = xs[None, None].expand(q, p, m, length).reshape(-1, length)
    pattern = patterns[None, :, None].expand(q, p, m, length).reshape(-1, length)
    level, s = process.schedule.level_of(t)
    z = torch.where(pattern, process.ancestor(x, level + 1), process.ancestor(x, level))
    loss = diffusion_loss(process, process.child_logits(denoiser, z, level, s), x, z, t)
    masked = process.schedule.in_level.one_minus_alpha(s)[:, None]
    probability = torch.where(pattern, masked, 1 - masked).prod(-1)
    quad_weight = weights[:, None, None].expand(q, p, m).reshape(-1)
    return (quad_weight * probability * loss).view(q * p, m).sum(0)


def expected_count_nelbo(process: TreeProcess, denoiser, xs: torch.Tensor) -> torch.Tensor:
    """``Σ_h E_{k ~ U{1..L}} E_{S uniform, |S| = k} [count_nelbo]`` per sequence of ``xs``.

    Exact: every level, every count and every masked subset, one batched call of the package's
    count-form estimate.
    """
    m, length = xs.shape
    patterns = torch.tensor(list(itertools.product([False, True], repeat=length)))
    patterns = patterns[patterns.sum(-1) > 0]  # k >= 1
    k = patterns.sum(-1)
    # P(pattern) = P(k) P(S | k) = (1 / L) / C(L, k)
    probability = 1.0 / (length * torch.tensor([math.comb(length, int(c)) for c in k],
                                               dtype=torch.float64))
    total = torch.zeros(m, dtype=torch.float64)
    p = len(patterns)
    x = xs[None].expand(p, m, length).reshape(-1, length)
    pattern = patterns[:, None].expand(p, m, length).reshape(-1, length)
    count = k[:, None].expand(p, m).reshape(-1)
    for h in range(process.depth):
        level = torch.full((p * m,), h)
        z = torch.where(pattern, process.ancestor(x, level + 1), process.ancestor(x, level))
        s = torch.zeros(p * m, dtype=torch.float64)
        logits = process.child_logits(denoiser, z, level, s)
        value = count_nelbo(process, logits, x, z, level, count).view(p, m)
        total += (probability[:, None] * value).sum(0)
    return total
