"""The masked cross-entropy from the head's input: only the positions the loss reads, and the
fused full-vocabulary kernels (docs/method.md, "Scoring only the masked positions").

Every estimator's loss is ``w · Σ_ℓ 1[z^ℓ masked] CE^ℓ`` (:mod:`.elbo`): the clean positions'
logits are computed and thrown away. On the flat tree (MDLM) those logits are ``[b, l, N]``, the
largest tensor of a training step. ``head_loss`` picks how the same per-sequence sum is
computed; every choice gives the same value and gradients up to float summation order:

* ``full`` — the denoiser's logits at every position (the plain protocol; MDLM as published).
* ``masked`` — logits at the masked positions only (about half of them on average): the
  denoiser hands over its final hidden states and head (``denoiser(..., readout=fn)``) and the
  head runs on the gathered rows. Any tree; invalid slots are masked as in :func:`.child_nll`.
* ``chunked`` — ``masked``, with the rows' cross-entropy computed :data:`CHUNK_LOGITS` logits at
  a time under activation checkpointing: one chunk's logits exist at once, in the forward pass
  and again (recomputed, one more head matmul) in the backward pass. Any torch.
* ``torch`` — ``masked`` through ``torch.nn.functional.linear_cross_entropy``'s chunked path
  (torch >= 2.13), CPU and CUDA.
* ``liger`` / ``cce`` — ``masked`` through Liger-Kernel's fused linear cross-entropy or Apple's
  Cut Cross-Entropy (Triton kernels, CUDA only; ``pip install tdlm-diffusion[liger]`` /
  ``[cce]``).

The four fused choices compute a softmax over every one of the head's ``k`` slots, so they need
a tree in which every node has ``k`` children (``TreeProcess.full_width``; the flat tree). A
tree head's logits are ``k ≈ 64`` wide: ``masked`` is what applies to TDLM.

The network computes no loss (docs/architecture.md): it calls ``fn(hidden, weight, bias)`` inside
its forward pass and precision context, and this module supplies ``fn``.
"""

import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .elbo import _masked_nll_sum
from .process import TreeProcess
from .protocol import Denoiser, TimeConditionedDenoiser
from .validation import DiffusionInputError

__all__ = [
    "CHUNK_LOGITS",
    "FUSED_HEAD_LOSSES",
    "HEAD_LOSSES",
    "check_head_loss",
    "head_loss_unavailable",
    "linear_nll",
    "masked_nll_sum",
]

HEAD_LOSSES: tuple[str, ...] = ("full", "masked", "chunked", "torch", "liger", "cce")
# Softmax over every slot of the head: only for trees whose nodes all have k children.
FUSED_HEAD_LOSSES: tuple[str, ...] = ("chunked", "torch", "liger", "cce")
# ``chunked``'s logits per chunk: 2^24 (32 MiB in bf16): 333 rows of GPT-2's 50,258 slots, 65 of
# 256,000; a fixed number of rows would let a chunk grow with N.
CHUNK_LOGITS = 2**24

_EXTRAS = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}


def head_loss_unavailable(head_loss: str, device: torch.device | str | None = None) -> str | None:
    """Why ``head_loss`` cannot run here (on ``device``, when given), or ``None`` if it can."""
    if head_loss == "torch" and not hasattr(F, "linear_cross_entropy"):
        return (
            f"head loss 'torch' needs torch.nn.functional.linear_cross_entropy (torch >= 2.13; "
            f"this is torch {torch.__version__}); use 'chunked'"
        )
    if head_loss in _EXTRAS:
        module = _EXTRAS[head_loss]
        if importlib.util.find_spec(module) is None:
            return (
                f"head loss {head_loss!r} needs the {module} package "
                f"(pip install 'tdlm-diffusion[{head_loss}]'); 'torch' or 'chunked' need nothing"
            )
        if device is not None and torch.device(device).type != "cuda":
            return f"head loss {head_loss!r} runs Triton kernels on CUDA only, not {device}"
    return None


def check_head_loss(
    head_loss: str, process: TreeProcess, device: torch.device | str | None = None
) -> None:
    """One clear sentence for a head loss that does not exist, does not fit the tree or cannot
    run here."""
    if head_loss not in HEAD_LOSSES:
        raise DiffusionInputError(
            f"unknown head loss {head_loss!r}; choose one of {', '.join(HEAD_LOSSES)}"
        )
    if head_loss in FUSED_HEAD_LOSSES and not process.full_width:
        raise DiffusionInputError(
            f"head loss {head_loss!r} takes a softmax over all {process.width} slots, but some "
            "nodes of this tree have fewer children; use 'masked' (a tree head's logits are "
            "small) or a flat tree"
        )
    reason = head_loss_unavailable(head_loss, device)
    if reason is not None:
        raise DiffusionInputError(reason)


def masked_nll_sum(
    process: TreeProcess,
    denoiser: Denoiser | TimeConditionedDenoiser,
    x: Int[Tensor, "b l"],
    z: Int[Tensor, "b l"],
    level: Int[Tensor, " b"],
    s: Float[Tensor, " b"],
    head_loss: str = "full",
) -> Float[Tensor, " b"]:
    """``Σ_ℓ 1[z^ℓ masked] · CE^ℓ`` per sequence (fp32), the denoiser called on ``z`` once.

    ``head_loss`` is how (module docstring); anything but ``full`` needs a denoiser that takes
    ``readout=`` (tdlm-nn's ``TreeDiT`` does).
    """
    check_head_loss(head_loss, process, z.device)
    if head_loss == "full":
        logits = process.child_logits(denoiser, z, level, s)
        return _masked_nll_sum(process, logits, x, z, level)

    def readout(hidden: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return _rows_nll_sum(process, head_loss, hidden, weight, bias, x, z, level)

    if process.pass_time:
        return denoiser(z, level, s, readout=readout)
    return denoiser(z, level, readout=readout)


def _rows_nll_sum(
    process: TreeProcess,
    head_loss: str,
    hidden: Float[Tensor, "b l d"],
    weight: Float[Tensor, "maps k d"],
    bias: Float[Tensor, "maps k"],
    x: Int[Tensor, "b l"],
    z: Int[Tensor, "b l"],
    level: Int[Tensor, " b"],
) -> Float[Tensor, " b"]:
    """The masked rows' CE, head map by head map, summed per sequence."""
    if weight.shape[1] != process.width:
        raise DiffusionInputError(
            f"the denoiser's head has {weight.shape[1]} slots; this process needs "
            f"{process.width}"
        )
    sequence, position = process.is_masked(z, level).nonzero(as_tuple=True)
    rows = hidden[sequence, position]  # [m, d]
    target = process.target_slots(x, level)[sequence, position]  # [m]
    valid = None
    if not process.full_width:  # the slots of the nodes choosing, a_{h+1}(x)
        valid = process.valid_slots(process.ancestor(x, level + 1)[sequence, position])
    # One head map per level (or one for all): each map's rows in one call.
    row_map = level[sequence] if weight.shape[0] > 1 else torch.zeros_like(sequence)
    total = hidden.new_zeros(x.shape[0], dtype=torch.float32)
    if rows.shape[0] == 0:  # nothing masked: a zero that still reaches every parameter
        return total + 0 * (rows.sum() + weight.sum() + bias.sum())
    for j in torch.unique(row_map).tolist():
        chosen = row_map == j
        ce = linear_nll(
            head_loss, rows[chosen], weight[j], bias[j], target[chosen],
            None if valid is None else valid[chosen],
        )  # fmt: skip
        total = total.index_add(0, sequence[chosen], ce.float())
    return total


def linear_nll(
    head_loss: str,
    rows: Float[Tensor, "m d"],
    weight: Float[Tensor, "k d"],
    bias: Float[Tensor, " k"],
    target: Int[Tensor, " m"],
    valid: Bool[Tensor, "m k"] | None = None,
) -> Float[Tensor, " m"]:
    """``-log softmax(rows W^T + b)[target]`` per row, computed as ``head_loss`` says
    (``masked`` here means: these rows' logits, plainly). ``valid`` marks each row's real slots
    (the rest count as ``-inf``); the fused kernels need ``valid=None``, every slot real. The
    rows may be any next-token prediction's: the autoregressive baseline scores with it too.
    """
    if head_loss not in _ROW_LOSSES:
        raise DiffusionInputError(
            f"linear_nll computes {', '.join(_ROW_LOSSES)}, not {head_loss!r}"
        )
    if valid is not None and head_loss != "masked":
        raise DiffusionInputError(f"head loss {head_loss!r} cannot mask invalid slots")
    return _ROW_LOSSES[head_loss](rows, weight, bias, target, valid)


def _compute_dtype(rows: Tensor) -> torch.dtype:
    """The precision the head computes in: autocast's (bf16 on CUDA) when it is on."""
    device = rows.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return rows.dtype


def _masked(rows, weight, bias, target, valid) -> Tensor:
    """The rows' logits, plainly; upcast to fp32 for the normalisation as in ``child_nll``."""
    logits = F.linear(rows, weight, bias).float()
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    chosen = logits.gather(-1, target[:, None]).squeeze(-1)
    return torch.logsumexp(logits, dim=-1) - chosen


def _chunked(rows, weight, bias, target, valid) -> Tensor:
    size = max(1, CHUNK_LOGITS // weight.shape[0])
    # split, not slicing: the backward concatenates the chunks' row gradients in one go.
    return torch.cat([
        checkpoint(_masked, r, weight, bias, t, None, use_reentrant=False)
        for r, t in zip(rows.split(size), target.split(size), strict=True)
    ])  # fmt: skip


def _fused_inputs(rows: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    dtype = _compute_dtype(rows)
    return rows.to(dtype), weight.to(dtype), bias.to(dtype)


def _torch(rows, weight, bias, target, valid) -> Tensor:
    rows, weight, bias = _fused_inputs(rows, weight, bias)
    with torch.autocast(rows.device.type, enabled=False):
        return F.linear_cross_entropy(
            rows, weight, target, linear_bias=bias, reduction="none",
            options=torch.nn.LinearCrossEntropyOptions(),
        )  # fmt: skip


def _liger(rows, weight, bias, target, valid) -> Tensor:
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    rows, weight, bias = _fused_inputs(rows, weight, bias)
    return liger_fused_linear_cross_entropy(rows, weight, target, bias, reduction="none")


def _cce(rows, weight, bias, target, valid) -> Tensor:
    from cut_cross_entropy import linear_cross_entropy

    rows, weight, bias = _fused_inputs(rows, weight, bias)
    # CCE takes no bias: a bias is one more input feature of constant 1.
    rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    weight = torch.cat([weight, bias[:, None]], dim=1)
    return linear_cross_entropy(rows, weight, target, reduction="none")


_ROW_LOSSES: dict[str, Callable[..., Tensor]] = {
    "masked": _masked,
    "chunked": _chunked,
    "torch": _torch,
    "liger": _liger,
    "cce": _cce,
}
