"""The tree ELBO and the training loss (METHOD.md §4; the paper's Theorem 3.4 and Corollary 3.5).

In-level NELBO, for level h::

    L_h(x) = ∫_0^1 (-α'(s) / (1 - α(s)))
             E_{z ~ q^h_s} Σ_ℓ 1[z^ℓ = a_{h+1}(x^ℓ)] (-log p_θ(slot(a_h(x^ℓ)) | z, h)) ds

and ``NELBO(x) = Σ_h L_h(x) ≥ -log p_θ(x)``. With ``t ~ U[0, 1]`` and the weight
``w(t) = -α'(s) / (Δ_h (1 - α(s)))`` one sample ``w(t) Σ_ℓ 1[masked] CE`` is an unbiased estimate
of the whole NELBO (:func:`diffusion_loss`); :func:`in_level_nelbo` is the same sample for a
fixed level, without the ``1 / Δ_h``. On the flat tree both are MDLM's loss (invariant I1).

Everything works on ``[b, l]`` gathers from the tree's tables plus one ``logsumexp`` over the
``k`` child slots: no ``[b, l, N]`` tensor exists unless the tree is flat (``k = N``).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .process import TreeProcess
from .protocol import Denoiser, TimeConditionedDenoiser
from .validation import (
    DiffusionInputError,
    check_level_weights,
    check_levels,
    check_logits,
    check_same_shape,
    check_times,
    check_tokens,
)

__all__ = [
    "TrainingLoss",
    "child_nll",
    "diffusion_loss",
    "in_level_nelbo",
    "low_discrepancy_times",
    "training_loss",
]


def low_discrepancy_times(
    batch: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, " batch"]:
    """``t_i = (u + i / B) mod 1`` with one ``u ~ U[0, 1)``: every ``t_i`` is uniform, and the
    batch covers ``[0, 1)`` evenly (Kingma et al. 2021's low-discrepancy sampler)."""
    if batch < 1:
        raise DiffusionInputError(f"the batch must hold at least one sequence, got {batch}")
    u = torch.rand(1, generator=generator, device=device, dtype=dtype)
    return torch.remainder(u + torch.arange(batch, device=device, dtype=dtype) / batch, 1.0)


def child_nll(
    process: TreeProcess,
    logits: Float[Tensor, "b l k"],
    x: Int[Tensor, "b l"],
    level: Int[Tensor, " b"],
) -> Float[Tensor, "b l"]:
    """``-log p_θ(slot(a_h(x)) | z, h)`` at every position, with invalid slots masked to ``-inf``.

    The slots are those of ``a_{h+1}(x)``, the node every masked position sits at; using it at
    clean positions too keeps every row finite, so their (discarded) terms never produce NaN
    gradients. Half-precision logits are upcast to float32 for the normalisation.
    """
    check_tokens(x, process.vocab_size)
    check_levels(level, x.shape[0], process.depth)
    check_logits(logits, x.shape[0], x.shape[1], process.width)
    return _child_nll(process, logits, x, level)


def _child_nll(process: TreeProcess, logits: Tensor, x: Tensor, level: Tensor) -> Tensor:
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if not process.full_width:
        parent = process.ancestor(x, level + 1)
        logits = logits.masked_fill(~process.valid_slots(parent), float("-inf"))
    target = process.target_slots(x, level)
    chosen = logits.gather(-1, target[..., None]).squeeze(-1)
    return torch.logsumexp(logits, dim=-1) - chosen


def _masked_nll_sum(
    process: TreeProcess, logits: Tensor, x: Tensor, z: Tensor, level: Tensor
) -> Tensor:
    """``Σ_ℓ 1[z^ℓ masked] · CE^ℓ`` per sequence ``[b]``; inputs already checked."""
    nll = _child_nll(process, logits, x, level)
    masked = process.is_masked(z, level)
    return torch.where(masked, nll, torch.zeros_like(nll)).sum(dim=-1)


def _check_batch(process: TreeProcess, logits: Tensor, x: Tensor, z: Tensor) -> None:
    check_tokens(x, process.vocab_size)
    check_same_shape(z, x, "z", "x")
    check_logits(logits, x.shape[0], x.shape[1], process.width)


def in_level_nelbo(
    process: TreeProcess,
    logits: Float[Tensor, "b l k"],
    x: Int[Tensor, "b l"],
    z: Int[Tensor, "b l"],
    level: Int[Tensor, " b"],
    s: Float[Tensor, " b"],
) -> Float[Tensor, " b"]:
    """One-sample estimate of ``L_h(x)`` per sequence, for ``z ~ q^h_s(· | x)``, ``s ~ U[0, 1]``.

    ``logits`` are the denoiser's output on ``z``; the weight is ``-α'(s) / (1 - α(s))``.
    """
    _check_batch(process, logits, x, z)
    check_levels(level, x.shape[0], process.depth)
    check_times(s, x.shape[0], "in-level time s")
    return _in_level_nelbo(process, logits, x, z, level, s)


def _in_level_nelbo(
    process: TreeProcess, logits: Tensor, x: Tensor, z: Tensor, level: Tensor, s: Tensor
) -> Tensor:
    total = _masked_nll_sum(process, logits, x, z, level)
    return process.schedule.in_level_weight(s).to(total.dtype) * total


def diffusion_loss(
    process: TreeProcess,
    logits: Float[Tensor, "b l k"],
    x: Int[Tensor, "b l"],
    z: Int[Tensor, "b l"],
    t: Float[Tensor, " b"],
) -> Float[Tensor, " b"]:
    """One-sample estimate of ``NELBO(x)`` per sequence, for ``z ~ q_t(· | x)``, ``t ~ U[0, 1]``.

    ``w(t) Σ_ℓ 1[masked] CE`` with ``w(t) = -α'(s) / (Δ_h (1 - α(s)))`` (METHOD.md §4).
    """
    _check_batch(process, logits, x, z)
    check_times(t, x.shape[0])
    return _diffusion_loss(process, logits, x, z, t)


def _diffusion_loss(
    process: TreeProcess, logits: Tensor, x: Tensor, z: Tensor, t: Tensor
) -> Tensor:
    level, _ = process.schedule.level_of(t)
    total = _masked_nll_sum(process, logits, x, z, level)
    return process.schedule.elbo_weight(t).to(total.dtype) * total


@dataclass(frozen=True)
class TrainingLoss:
    """One training step's loss and what to log about it.

    ``loss`` (nats per token, ``λ_h``-weighted) is what to backpropagate; ``nelbo`` and
    ``per_sequence`` are the unweighted, detached estimates that get reported.
    """

    loss: Float[Tensor, ""]
    nelbo: Float[Tensor, ""]
    per_sequence: Float[Tensor, " b"]
    t: Float[Tensor, " b"]
    level: Int[Tensor, " b"]


def training_loss(
    process: TreeProcess,
    denoiser: Denoiser | TimeConditionedDenoiser,
    x: Int[Tensor, "b l"],
    *,
    level_weights: Sequence[float] | Float[Tensor, " h"] | None = None,
    generator: torch.Generator | None = None,
) -> TrainingLoss:
    """Sample ``t`` (low-discrepancy across the batch), noise ``x``, run the denoiser, weight.

    ``level_weights`` are optional per-level training weights ``λ_h`` (ablations); they scale
    only ``loss``, never the reported ``nelbo``. Losses are per token: sums over the batch's
    positions divided by ``b · l``.
    """
    check_tokens(x, process.vocab_size)
    batch, length = x.shape
    t = low_discrepancy_times(batch, generator=generator, device=x.device)
    level, s = process.schedule.level_of(t)
    z = process._noise(x, level, s, generator)
    logits = process.child_logits(denoiser, z, level, s)
    per_sequence = _diffusion_loss(process, logits, x, z, t)
    if level_weights is None:
        weighted = per_sequence
    else:
        weights = torch.as_tensor(level_weights, dtype=per_sequence.dtype, device=x.device)
        check_level_weights(weights, process.depth)
        weighted = weights[level] * per_sequence
    tokens = batch * length
    return TrainingLoss(
        loss=weighted.sum() / tokens,
        nelbo=per_sequence.detach().sum() / tokens,
        per_sequence=per_sequence.detach(),
        t=t,
        level=level,
    )
