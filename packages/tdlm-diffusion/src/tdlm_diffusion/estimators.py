"""The training loss: four Monte-Carlo estimators of the NELBO (docs/method.md §4), one interface.

Every estimator draws low-discrepancy times ``t_i = (u + i/B) mod 1``, so each level h gets its
share ``Δ_h`` of the batch (the levels are stratified across the batch) and the in-level times
``s`` of a level are evenly spread. They differ in how a level's integral over ``s`` is sampled:

* ``continuous`` — ``z ~ q^h_s``, weight ``w(t) = -α'(s) / (Δ_h (1 - α(s)))``. Unbiased, but the
  weight grows like ``1 / (Δ_h s)`` near each level's ``s = 0``, where a masked position is rare:
  the estimator's variance is infinite (log-divergent), H times over on a tree, and a batch that
  draws a small ``s`` and masks one position gets a spike of ``CE / (Δ_h s B L)`` per token.
* ``cutoff`` — the default (picked by measurement: docs/method.md), MDLM's remedy: ``s`` is
  drawn in ``[ε, 1]`` instead (per level), weight scaled by ``1 - ε``. Bounded weight
  ``1 / (Δ_h ε)``, but spikes of order ``CE / (Δ_h ε B L)`` remain at short L, and
  the estimate omits each level's ``∫_0^ε``: it is biased low by about ``ε · E[CE at a clean
  context]`` per token and level (a training objective, not a bound).
* ``count`` — the count form of :mod:`.elbo`: ``k = ⌊s L⌋ + 1`` positions masked exactly, a uniform
  subset, weight ``L / (k Δ_h)``. Unbiased for the same NELBO and bounded: a sequence's per-token
  value is its mean masked CE over ``Δ_h``. Needs a denoiser that ignores ``s``.
* ``harmonic`` — the count form importance-sampled: ``P(k) ∝ 1/k`` (the masking rate
  log-uniform), every masked position weighted ``H_L / Δ_h`` (``H_L = Σ 1/k ≈ ln L + 0.58``).
  Unbiased for the same NELBO, bounded, and the weights are equal across positions: most
  sequences are lightly masked, so predictions from nearly clean context — where the time form
  concentrates its rare, huge weights — are drawn often with moderate weight instead.

:func:`noised_batch` draws the state ``z`` and a per-sequence weight ``w`` such that
``w · Σ_ℓ 1[masked] CE`` estimates ``NELBO(x)``; :func:`training_loss` adds the network call and
returns the per-token loss to backpropagate (optionally reweighted per level by ``λ_h``) and the
unweighted estimate that gets logged; its ``head_loss`` computes the masked cross-entropy from
every position's logits or from the masked positions' only, fused or chunked (:mod:`.head_loss`).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .conditioning import Context, check_scored
from .elbo import (
    harmonic_count,
    harmonic_number,
    low_discrepancy_times,
    masked_count,
)
from .head_loss import masked_nll_sum
from .process import TreeProcess
from .protocol import Denoiser, TimeConditionedDenoiser
from .validation import DiffusionInputError, check_level_weights, check_tokens

__all__ = [
    "COUNT_ESTIMATORS",
    "ESTIMATORS",
    "NoisedBatch",
    "TrainingLoss",
    "noised_batch",
    "training_loss",
]

ESTIMATORS: tuple[str, ...] = ("cutoff", "count", "harmonic", "continuous")
# The estimators that integrate the in-level time out: their denoiser must not see s.
COUNT_ESTIMATORS: tuple[str, ...] = ("count", "harmonic")


@dataclass(frozen=True)
class NoisedBatch:
    """A training draw: times, the noised state, and the weight of each sequence's masked CE.

    ``E[weight · Σ_ℓ 1[z^ℓ masked] CE^ℓ] = NELBO(x)`` per sequence (for ``cutoff``: the
    truncated objective). ``s`` is what a time-conditioned denoiser is shown. Under a context,
    ``z`` is the network's input (known positions shown, never masked) and the NELBO is the
    conditional one.
    """

    t: Float[Tensor, " b"]
    level: Int[Tensor, " b"]
    s: Float[Tensor, " b"]
    z: Int[Tensor, "b l"]
    weight: Float[Tensor, " b"]


@dataclass(frozen=True)
class TrainingLoss:
    """One training step's loss and what to log about it.

    ``loss`` (nats per token, ``λ_h``-weighted) is what to backpropagate; ``nelbo`` and
    ``per_sequence`` are the unweighted, detached estimates that get reported (for ``cutoff``,
    of the truncated objective). Under a context, per token means per unknown token.
    """

    loss: Float[Tensor, ""]
    nelbo: Float[Tensor, ""]
    per_sequence: Float[Tensor, " b"]
    t: Float[Tensor, " b"]
    level: Int[Tensor, " b"]


def check_estimator(estimator: str, cutoff: float, pass_time: bool) -> None:
    """One clear sentence for an estimator that does not exist or cannot serve this process."""
    if estimator not in ESTIMATORS:
        raise DiffusionInputError(
            f"unknown NELBO estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
        )
    if estimator == "cutoff" and not 0 < cutoff < 1:
        raise DiffusionInputError(f"the cutoff ε must lie in (0, 1), got {cutoff}")
    if estimator in COUNT_ESTIMATORS and pass_time:
        raise DiffusionInputError(
            f"the {estimator} estimator integrates the in-level time out, so it needs a denoiser "
            "that does not see s; with time conditioning use 'continuous' or 'cutoff'"
        )


def noised_batch(
    process: TreeProcess,
    x: Int[Tensor, "b l"],
    *,
    estimator: str = "cutoff",
    cutoff: float = 1e-3,
    generator: torch.Generator | None = None,
    context: Context | None = None,
) -> NoisedBatch:
    """Draw low-discrepancy times, the state ``z`` and the weights of ``estimator``.

    Under a ``context`` (docs/method.md §8) ``z`` is the network's input: known positions are never
    noised and are shown as the context's mode says (:meth:`Context.show`); the count forms mask
    ``k`` of the ``L_u`` unknown positions with weights in ``L_u``, so ``weight · Σ_ℓ 1[masked]
    CE`` estimates the conditional NELBO.
    """
    check_estimator(estimator, cutoff, process.pass_time)
    if context is not None:
        check_tokens(x, process.vocab_size)
        check_scored(context, process, x)
    # Each branch's one process call checks x (a device sync, so not twice); the shape is
    # indexed, not unpacked, so that a wrong-rank x reaches that check's clear message.
    batch, length = x.shape[0], x.shape[-1]
    t = low_discrepancy_times(batch, generator=generator, device=x.device)
    if estimator == "continuous":
        z, level, s = process.forward_sample(x, t, generator)
        weight = process.schedule.elbo_weight(t)
    else:
        level, s = process.schedule.level_of(t)
        # 1 / Δ_h, the density of level h under t ~ U[0, 1], is in every estimator's weight.
        delta = process.schedule.delta(level, t.dtype)
        # The count forms choose among the positions that can be masked: L, or L_u.
        known = None if context is None else context.known
        positions = length if context is None else context.unknown_count
        if estimator == "count":
            count = masked_count(s, positions)
            z = process.mask_count(x, level, count, generator, known=known)
            # As in count_nelbo: L / k in float64 (a long's reciprocal is float32: 4 * (1/3)
            # would be 6e-8 off), k = 0 only where L_u = 0, where nothing is masked.
            weight = (positions / count.clamp(min=1).double()).to(t.dtype) / delta
        elif estimator == "harmonic":
            count = harmonic_count(s, positions)
            z = process.mask_count(x, level, count, generator, known=known)
            harmonic = torch.as_tensor(harmonic_number(positions), dtype=torch.float64,
                                       device=t.device)
            weight = harmonic.to(t.dtype).expand_as(t) / delta
        else:  # cutoff
            s = cutoff + (1 - cutoff) * s  # uniform on [ε, 1]: density 1 / (1 - ε)
            z = process.sample_in_level(x, level, s, generator)
            weight = (1 - cutoff) * process.schedule.in_level_weight(s) / delta
    if context is not None:
        z = context.show(process, z, level)
    return NoisedBatch(t=t, level=level, s=s, z=z, weight=weight)


def training_loss(
    process: TreeProcess,
    denoiser: Denoiser | TimeConditionedDenoiser,
    x: Int[Tensor, "b l"],
    *,
    estimator: str = "cutoff",
    cutoff: float = 1e-3,
    level_weights: Sequence[float] | Float[Tensor, " h"] | None = None,
    generator: torch.Generator | None = None,
    context: Context | None = None,
    head_loss: str = "full",
) -> TrainingLoss:
    """:func:`noised_batch`, the denoiser on ``z``, and the weighted masked cross-entropy.

    ``estimator`` picks how each level's integral is sampled (module docstring); ``cutoff`` is
    the ε of ``cutoff``. ``level_weights`` are optional per-level training weights ``λ_h``
    (ablations); they scale only ``loss``, never the reported ``nelbo``. Losses are per token:
    sums over the batch's positions divided by ``b · l``. With a ``context`` (docs/method.md §8)
    the known positions are shown to the network as its mode says and excluded from the loss,
    which is then per unknown token (divided by ``Σ L_u``): the conditional NELBO
    ``-log p_θ(x_U | x_K)`` per scored token. A ``clean`` context trains the network to read
    clean context (e.g. a random prefix per sequence, as instruction-tuned masked LMs do).
    ``head_loss`` is how the masked cross-entropy is computed (:mod:`.head_loss`: every
    position's logits, the masked positions' only, or a fused kernel); it changes memory and
    time, not the loss.
    """
    draw = noised_batch(process, x, estimator=estimator, cutoff=cutoff, generator=generator,
                        context=context)
    total = masked_nll_sum(process, denoiser, x, draw.z, draw.level, draw.s, head_loss)
    per_sequence = draw.weight.to(total.dtype) * total
    if level_weights is None:
        weighted = per_sequence
    else:
        weights = torch.as_tensor(level_weights, dtype=per_sequence.dtype, device=x.device)
        check_level_weights(weights, process.depth)
        weighted = weights[draw.level] * per_sequence
    # At least one, so that a batch with every position known has loss 0, not 0/0.
    tokens = x.numel() if context is None else context.unknown_count.sum().clamp(min=1)
    return TrainingLoss(
        loss=weighted.sum() / tokens,
        nelbo=per_sequence.detach().sum() / tokens,
        per_sequence=per_sequence.detach(),
        t=draw.t,
        level=draw.level,
    )
