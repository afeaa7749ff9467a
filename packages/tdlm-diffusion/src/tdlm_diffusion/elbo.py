"""The tree ELBO and the training loss (docs/method.md §4; the paper's Theorem 3.4, Corollary 3.5).

In-level NELBO, for level h::

    L_h(x) = ∫_0^1 (-α'(s) / (1 - α(s)))
             E_{z ~ q^h_s} Σ_ℓ 1[z^ℓ = a_{h+1}(x^ℓ)] (-log p_θ(slot(a_h(x^ℓ)) | z, h)) ds

and ``NELBO(x) = Σ_h L_h(x) ≥ -log p_θ(x)``. With ``t ~ U[0, 1]`` and the weight
``w(t) = -α'(s) / (Δ_h (1 - α(s)))`` one sample ``w(t) Σ_ℓ 1[masked] CE`` is an unbiased estimate
of the whole NELBO (:func:`diffusion_loss`); :func:`in_level_nelbo` is the same sample for a
fixed level, without the ``1 / Δ_h``. On the flat tree both are MDLM's loss (invariant I1).

**Count form** (:func:`count_nelbo`). Substituting ``u = 1 - α(s)`` and conditioning on the
number k of masked positions (a uniform subset of size k given k) turns ``L_h`` into
``Σ_{k=1}^{L} g_h(k) / k`` with ``g_h(k) = E[Σ_ℓ 1[masked] CE | k masked]``, since
``∫_0^1 C(L,k) u^{k-1} (1-u)^{L-k} du = 1/k``. So with ``k ~ U{1..L}`` and exactly k positions
masked, ``(L / k) Σ_ℓ 1[masked] CE`` is an unbiased one-sample estimate of the same ``L_h`` —
for any α — whose per-token value is the mean CE over the masked positions: bounded by the
largest CE, where the time form's ``1 / s`` weight has infinite variance near ``s = 0``. It
needs a denoiser that does not see s (the default, docs/method.md §4): the identity integrates s
out.

Conditioning (docs/method.md §8): known positions are never masked, so the indicator of every
estimate here is already restricted to the unknown ones when ``z`` is a context's shown state; the
count form then draws ``k ~ U{1..L_u}`` among the ``L_u`` unknown positions with weight
``L_u / k`` (the same identity over ``L_u`` positions): the conditional ``L_h``.

Everything works on ``[b, l]`` gathers from the tree's tables plus one ``logsumexp`` over the
``k`` child slots: no ``[b, l, N]`` tensor exists unless the tree is flat (``k = N``).
"""

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .process import TreeProcess
from .validation import (
    DiffusionInputError,
    check_counts,
    check_levels,
    check_logits,
    check_same_shape,
    check_times,
    check_tokens,
)

__all__ = [
    "child_nll",
    "count_nelbo",
    "diffusion_loss",
    "in_level_nelbo",
    "harmonic_count",
    "harmonic_number",
    "low_discrepancy_times",
    "masked_count",
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

    ``w(t) Σ_ℓ 1[masked] CE`` with ``w(t) = -α'(s) / (Δ_h (1 - α(s)))`` (docs/method.md §4).
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


def masked_count(s: Float[Tensor, " b"], length: int | Int[Tensor, " b"]) -> Int[Tensor, " b"]:
    """``k = ⌊s L⌋ + 1`` (at most L): uniform on ``1..L`` when ``s ~ U[0, 1)``, and evenly spread
    when the ``s`` of a batch are (``L`` evenly spaced times give every count once).

    ``length`` may be per sequence: ``L_u``, the unknown positions under a context (``k = 0``
    where ``L_u = 0``)."""
    return (torch.floor(s.double() * length).long() + 1).clamp(max=length)


def _harmonic_table(size: int, device: torch.device | None = None) -> Tensor:
    """``H_1, ..., H_size`` (float64)."""
    steps = torch.reciprocal(torch.arange(1, size + 1, dtype=torch.float64, device=device))
    return torch.cumsum(steps, 0)


def harmonic_number(length: int | Int[Tensor, " b"]) -> float | Float[Tensor, " b"]:
    """``H_L = Σ_{k=1}^{L} 1/k``; per sequence (``H_0 = 0``) for a tensor of lengths ``L_u``."""
    if isinstance(length, int):
        return float(torch.reciprocal(torch.arange(1, length + 1, dtype=torch.float64)).sum())
    table = _harmonic_table(max(int(length.max()), 1), length.device)  # one device sync
    return torch.where(length > 0, table[(length - 1).clamp(min=0)], 0.0)


def harmonic_count(s: Float[Tensor, " b"], length: int | Int[Tensor, " b"]) -> Int[Tensor, " b"]:
    """``k`` with ``P(k) = (1/k) / H_L`` on ``1..L``, by inverting the CDF ``H_k / H_L`` at ``s``
    (so stratified ``s`` give stratified counts). With this law, weighting each masked position
    by ``H_L`` is the count form's importance-sampled estimate: ``E[H_L Σ_ℓ 1[masked] CE] =
    Σ_k g_h(k) / k = L_h``, every masked position carrying the same weight.

    ``length`` may be per sequence: ``L_u``, the unknown positions under a context (``k = 0``
    where ``L_u = 0``)."""
    if isinstance(length, int):
        steps = torch.reciprocal(torch.arange(1, length + 1, dtype=torch.float64,
                                              device=s.device))
        cdf = torch.cumsum(steps, 0) / steps.sum()
        return (torch.searchsorted(cdf, s.double(), right=True) + 1).clamp(max=length)
    table = _harmonic_table(max(int(length.max()), 1), s.device)  # one device sync
    # Row i's CDF H_k / H_{L_u}; entries past L_u exceed 1, so an s < 1 never lands there.
    cdf = table[None, :] / table[(length - 1).clamp(min=0)][:, None]
    return (torch.searchsorted(cdf, s.double()[:, None], right=True)[:, 0] + 1).clamp(max=length)


def count_nelbo(
    process: TreeProcess,
    logits: Float[Tensor, "b l k"],
    x: Int[Tensor, "b l"],
    z: Int[Tensor, "b l"],
    level: Int[Tensor, " b"],
    count: Int[Tensor, " b"],
    *,
    known: Bool[Tensor, "b l"] | None = None,
) -> Float[Tensor, " b"]:
    """One-sample estimate of ``L_h(x)`` per sequence in the count form (module docstring).

    ``z`` must have exactly ``count`` positions masked, a uniform random subset
    (:meth:`TreeProcess.mask_count`), with ``count ~ U{1..L}``; the estimate is
    ``(L / k) Σ_ℓ 1[masked] CE``. ``logits`` are the denoiser's output on ``z``. Under a context
    (docs/method.md §8) ``known`` positions are never masked, the subset is drawn among the ``L_u``
    others with ``count ~ U{1..L_u}``, and ``L_u`` replaces ``L``: the conditional ``L_h``.
    """
    _check_batch(process, logits, x, z)
    check_levels(level, x.shape[0], process.depth)
    if known is None:
        check_counts(count, x.shape[0], x.shape[1])
        return _count_nelbo(process, logits, x, z, level, count, x.shape[1])
    check_same_shape(known, x, "known", "x")
    unknown = (~known).sum(dim=-1)
    check_counts(count, x.shape[0], unknown)
    return _count_nelbo(process, logits, x, z, level, count, unknown)


def _count_nelbo(
    process: TreeProcess,
    logits: Tensor,
    x: Tensor,
    z: Tensor,
    level: Tensor,
    count: Tensor,
    length: int | Tensor,
) -> Tensor:
    total = _masked_nll_sum(process, logits, x, z, level)
    # L / k in float64, for a per-sequence L_u too (a long's reciprocal would be float32, its
    # 1/3 off by 6e-8; issue 27's L = 4 test caught it). count = 0 only where L_u = 0: nothing
    # is masked, the level contributes 0.
    return (length / count.clamp(min=1).double()).to(total.dtype) * total
