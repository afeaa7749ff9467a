"""What a checkpointed block keeps for its backward pass, and what it recomputes there.

``full``: the block keeps only its inputs and runs its whole forward again in the backward
pass (one more forward per block, about a third more training FLOPs). ``selective``: it also
keeps the outputs of its matmuls and of attention, and recomputes only the cheap elementwise
work between them (LayerNorms, adaLN modulation, rotary, GELU, dropout, gated residuals) —
Korthikanti et al. 2022's selective recomputation taken to every memory-bound op. The kept
products are, per token, q/k/v (3 D), the attention output (D), its projection (D) and the MLP's
two products (hidden + D), about a third of a plain block's saved bytes for no extra matmul.

Both are non-reentrant ``torch.utils.checkpoint`` with the RNG state replayed, so dropout draws
the same masks and the gradients are exactly the plain block's (the kept products are the very
tensors the forward computed; the elementwise ops run the same kernels on the same inputs).
"""

import functools
from collections.abc import Callable

import torch
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

__all__ = ["RECOMPUTE_MODES", "KEPT_OPS", "keep_products", "recomputed"]

RECOMPUTE_MODES = ("full", "selective")

_aten = torch.ops.aten
# The products a selective block keeps: matmuls (nn.Linear lowers to mm/addmm, the math
# attention to bmm) and every fused attention kernel torch dispatches SDPA to.
KEPT_OPS = frozenset(
    {
        _aten.mm.default,
        _aten.addmm.default,
        _aten.bmm.default,
        _aten._scaled_dot_product_flash_attention.default,
        _aten._scaled_dot_product_flash_attention_for_cpu.default,
        _aten._scaled_dot_product_efficient_attention.default,
        _aten._scaled_dot_product_cudnn_attention.default,
    }
)


def keep_products(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """The selective policy: keep matmul and attention outputs, recompute everything else.

    xformers' attention kernels (custom ops in ``xformers*`` namespaces) count as attention.
    """
    namespace = getattr(op, "namespace", "")
    if op in KEPT_OPS or namespace.startswith("xformers"):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def recomputed(block: Callable[..., torch.Tensor], mode: str, *args) -> torch.Tensor:
    """``block(*args)`` checkpointed: its activations recomputed in backward as ``mode`` says."""
    if mode == "selective":
        context = functools.partial(create_selective_checkpoint_contexts, keep_products)
        return checkpoint(block, *args, use_reentrant=False, context_fn=context)
    if mode == "full":
        return checkpoint(block, *args, use_reentrant=False)
    raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, got {mode!r}")
