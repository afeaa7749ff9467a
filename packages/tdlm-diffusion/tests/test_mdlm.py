"""I1 and half of I6: TDLM on the flat tree is MDLM (Sahoo et al. 2024), loss and sampler.

The reference functions below transcribe MDLM's published formulas (SUBS parameterisation,
log-linear schedule ``α_t = 1 - t``) independently of this package; on the flat tree the root's
global id is N, which is exactly MDLM's ``[MASK]`` index, and the root's child slots are the tokens.
"""

import numpy as np
import torch
from diffusion_helpers import chi2_pvalue
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import (
    SamplerConfig,
    TreeProcess,
    ancestral_sample,
    ancestral_sample_step,
    diffusion_loss,
    step_grid,
    steps_per_level,
    training_loss,
)
from tdlm_tree import flat_tree


def mdlm_q_xt(x, t, mask_index, generator):
    """MDLM's forward process: each token becomes [MASK] with probability ``1 - α_t = t``."""
    move = torch.rand(x.shape, generator=generator, dtype=t.dtype) < t[:, None]
    return torch.where(move, mask_index, x)


def mdlm_loss(logits, x, z, t, mask_index):
    """MDLM's continuous-time NELBO per sequence (Sahoo et al. 2024, eq. 10, SUBS):
    ``α'_t / (1 - α_t) Σ_ℓ log ⟨x_θ(z_t), x^ℓ⟩ 1[z_t^ℓ = m]`` with ``α_t = 1 - t``.

    SUBS gives [MASK] zero probability (a ``-inf`` logit) and copies unmasked tokens (log 1 = 0).
    """
    mask_logit = torch.full((*logits.shape[:2], 1), float("-inf"), dtype=logits.dtype)
    full = torch.cat([logits, mask_logit], dim=-1)
    log_p = torch.log_softmax(full, dim=-1).gather(-1, x[..., None]).squeeze(-1)
    log_p = torch.where(z == mask_index, log_p, torch.zeros_like(log_p))
    alpha, alpha_prime = 1 - t, -torch.ones_like(t)
    return (alpha_prime / (1 - alpha))[:, None].mul(log_p).sum(-1)


def mdlm_update(p_x0, z, t, s, mask_index):
    """MDLM's ancestral step (``_ddpm_update``): per position, the distribution over the N tokens
    and [MASK] (last) of ``z_s``: masked rows ``q = ((t - s) p_x0, s) / t``, other rows copy."""
    n = p_x0.shape[-1]
    q = torch.cat([p_x0 * (t - s), torch.full((*p_x0.shape[:-1], 1), s, dtype=p_x0.dtype)], -1) / t
    copy = torch.nn.functional.one_hot(z, n + 1).to(q.dtype)
    return torch.where((z == mask_index)[..., None], q, copy)


def _network(vocab_size, seed):
    """A fixed random 'network' on MDLM's ids: logits depend on the token/[MASK] at each position
    and on its position."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab_size + 1, vocab_size, generator=g, dtype=torch.float64)
    position = torch.randn(64, vocab_size, generator=g, dtype=torch.float64)
    return lambda z: table[z] + position[: z.shape[1]]


@given(st.integers(1, 30), st.integers(1, 4), st.integers(1, 12), st.integers(0, 10**6),
       st.lists(st.floats(1e-6, 1.0), min_size=4, max_size=4))
def test_i1_flat_tree_loss_is_mdlm_loss(vocab, batch, length, seed, times):
    """Same inputs, same noise, same network: the same noised ids and the same loss."""
    process = TreeProcess(flat_tree(vocab))
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (batch, length), generator=g)
    t = torch.tensor(times[:batch], dtype=torch.float64)
    net = _network(vocab, seed)
    z = process.forward_sample(x, t, torch.Generator().manual_seed(seed)).z
    z_ref = mdlm_q_xt(x, t, vocab, torch.Generator().manual_seed(seed))
    assert torch.equal(z, z_ref)
    ours = diffusion_loss(process, net(z), x, z, t)
    ref = mdlm_loss(net(z_ref), x, z_ref, t, vocab)
    # Equal up to float64 rounding (logsumexp vs log_softmax, 1/t vs 1/(1 - (1 - t))).
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@given(st.integers(2, 30), st.integers(0, 10**6))
def test_i1_training_loss_is_mdlm_training_loss(vocab, seed):
    """The full training step: low-discrepancy t, noise, network, token-mean loss."""
    process = TreeProcess(flat_tree(vocab))
    x = torch.randint(0, vocab, (8, 10), generator=torch.Generator().manual_seed(seed))
    net = _network(vocab, seed)
    out = training_loss(process, lambda nodes, level: net(nodes), x, estimator="continuous",
                        generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(1, generator=g)
    t = (u + torch.arange(8) / 8) % 1
    z = mdlm_q_xt(x, t, vocab, g)
    ref = mdlm_loss(net(z), x, z, t.double(), vocab)
    torch.testing.assert_close(out.t, t, rtol=0, atol=0)
    # Times are float32 here: the weights 1/t agree to float32 rounding.
    torch.testing.assert_close(out.per_sequence, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(out.loss, ref.sum() / x.numel(), rtol=1e-6, atol=1e-9)


def test_i6_flat_tree_step_is_mdlm_update():
    """One ancestral step on the flat tree has MDLM's transition probabilities (χ², fixed seed)."""
    vocab, t, s, draws = 6, 0.7, 0.4, 20000
    process = TreeProcess(flat_tree(vocab))
    z0 = torch.tensor([[vocab, 2, vocab, vocab, 5]])
    logits = torch.randn(1, 5, vocab, generator=torch.Generator().manual_seed(0))
    z = z0.repeat(draws, 1)
    out = ancestral_sample_step(process, logits.repeat(draws, 1, 1), z, 0, t, s,
                                generator=torch.Generator().manual_seed(1))
    expected = mdlm_update(torch.softmax(logits.double(), -1), z0, t, s, vocab)[0]
    for pos in range(5):
        counts = np.bincount(out[:, pos].numpy(), minlength=vocab + 1)
        assert chi2_pvalue(counts, expected[pos].numpy()) > 1e-3


def test_i6_flat_tree_grid_is_mdlm_grid():
    """MDLM steps on ``linspace(1, 0, m + 1)`` (ε = 0); the flat tree's single level does too."""
    process = TreeProcess(flat_tree(5))
    assert steps_per_level(process.schedule, 16) == (16,)
    torch.testing.assert_close(step_grid(16), torch.linspace(1, 0, 17, dtype=torch.float64))
    result = ancestral_sample(process, lambda nodes, level: torch.zeros(*nodes.shape, 5),
                              batch_size=3, length=4, config=SamplerConfig(steps=16),
                              generator=torch.Generator().manual_seed(0))
    assert ((result.tokens >= 0) & (result.tokens < 5)).all()
