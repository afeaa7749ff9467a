"""Sampling precision (issue 13): float32 draws cannot resolve a child's chance below 2^-24,
float64 draws can (Zheng et al. 2024, arXiv:2409.02908, on float32 categorical sampling).

A child is drawn by inverting its CDF at one uniform of the distribution's dtype. torch's float32
uniforms take the 2^24 values ``g / 2^24``, so the exact distribution of float32 draws is the
inverse CDF over that grid, which the tests enumerate; no sampling test could see the difference
(it is at most 2^-24 per child per draw, so it takes ~2^24 draws of whole rows to show once).
"""

import math

import numpy as np
import pytest
import torch
from diffusion_helpers import chi2_pvalue, factorised_denoiser

from tdlm_diffusion import (
    DiffusionInputError,
    SamplerConfig,
    TreeProcess,
    ancestral_sample,
    child_distribution,
)
from tdlm_diffusion.sampler import _categorical, _inverse_cdf
from tdlm_tree import flat_tree, random_tree

# The toy: one head child of mass 1 - τ, then a tail of K children of q = 2^-28 each, 16 times
# below float32's uniform step 2^-24 (τ = K q = 2^-14).
TAIL, Q = 2**14, 2.0**-28
FLOAT32_STEP = 2.0**-24


def _toy_distribution(precision: str) -> torch.Tensor:
    """The toy as the sampler computes it: the root of a flat tree over K + 1 tokens, from
    float32 logits (a network's dtype) converted to ``precision``."""
    process = TreeProcess(flat_tree(TAIL + 1))
    probs = torch.full((TAIL + 1,), Q, dtype=torch.float64)
    probs[0] = 1 - TAIL * Q
    logits = probs.log().float()[None]
    root = torch.tensor([process.root])
    return child_distribution(process, logits, root, precision=precision)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_a_draw_inverts_the_cdf_at_a_uniform_of_the_precision(precision):
    """What the enumeration below relies on: ``_categorical`` is the inverse CDF at one uniform
    of the distribution's dtype, and float32 uniforms lie on the 2^-24 grid (float64's not)."""
    probs = _toy_distribution(precision).expand(500, -1)
    assert probs.dtype == getattr(torch, precision)
    drawn = _categorical(probs, torch.Generator().manual_seed(0))
    u = torch.rand(500, 1, generator=torch.Generator().manual_seed(0), dtype=probs.dtype)
    assert torch.equal(drawn, _inverse_cdf(probs, u).squeeze(-1))
    on_grid = (u / FLOAT32_STEP).frac() == 0
    # Every float32 uniform is on the grid; a float64 one is with chance 2^-29 (of 500, none
    # but by a fluke of ~1e-6, and never half).
    assert bool(on_grid.all()) if precision == "float32" else float(on_grid.double().mean()) < 0.5


def test_float32_collapses_a_tail_below_its_resolution_float64_resolves_it():
    # float32: the exact law of a draw, the inverse CDF at each of the 2^24 uniforms in turn.
    probs32 = _toy_distribution("float32")
    counts = torch.zeros(TAIL + 1, dtype=torch.long)
    for chunk in torch.arange(2**24, dtype=torch.float32).mul_(FLOAT32_STEP).split(2**22):
        counts += torch.bincount(_inverse_cdf(probs32, chunk[None])[0], minlength=TAIL + 1)
    law32 = counts.numpy() / 2**24
    reached = np.flatnonzero(law32[1:])
    # At most the τ 2^24 + 1 grid uniforms that land in the tail can reach it: 1 child in 16 at
    # most; each reached child is drawn with at least 2^-24 = 16 q, every other one never.
    assert 0 < len(reached) <= TAIL * Q / FLOAT32_STEP + 1 == TAIL / 16 + 1
    assert law32[1:][reached].min() >= FLOAT32_STEP
    # So the draws' entropy is lower than the distribution's: by ~τ ln(2^-24 / q) = τ ln 16
    # where the tail's mass is kept (the CPU sums the CDF in double), by more where it is lost.
    true = np.full(TAIL + 1, Q)
    true[0] = 1 - TAIL * Q
    assert _entropy(law32) < _entropy(true) - 0.5 * TAIL * Q * math.log(16)

    # float64: every tail child has an interval of uniforms of its own, of ~2^25 float64 steps.
    probs64 = _toy_distribution("float64")
    cdf = probs64.cumsum(-1)[0]
    middles = ((cdf[:-1] + cdf[1:]) / 2 / cdf[-1])[None]
    assert torch.equal(_inverse_cdf(probs64, middles)[0], torch.arange(1, TAIL + 1))
    assert torch.allclose(probs64[0, 1:], torch.full((TAIL,), Q, dtype=torch.float64), rtol=1e-5)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_both_precisions_sample_the_distribution_at_coarse_scales(precision):
    """Away from 2^-24 the two agree: i.i.d. positions over a 9-token, 3-level tree."""
    tree = random_tree(9, 3, seed=4)
    process = TreeProcess(tree)
    probs = np.random.default_rng(2).dirichlet(np.ones(9))
    config = SamplerConfig(steps=6, precision=precision)
    result = ancestral_sample(
        process,
        factorised_denoiser(process, probs),
        batch_size=20000,
        length=1,
        config=config,
        generator=torch.Generator().manual_seed(3),
    )
    assert chi2_pvalue(np.bincount(result.tokens[:, 0].numpy(), minlength=9), probs) > 1e-3


def test_an_unknown_precision_is_refused(runtime_checks_only):
    with pytest.raises(DiffusionInputError, match="precision 'float16'"):
        SamplerConfig(precision="float16")
