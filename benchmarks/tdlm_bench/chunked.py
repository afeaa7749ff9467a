"""The chunked-CE MDLM contender's loss: the memory-lean full-vocabulary baseline (METHOD.md §1).

MDLM's peak training memory is dominated by the ``[batch, length, N]`` logits and their
gradient. Computing the loss ``chunk_size`` positions at a time under activation checkpointing
keeps only one chunk's logits alive: the forward pass drops them once the chunk's loss is
summed, and the backward pass recomputes them (one extra head matmul) and turns them into that
chunk's gradient before the next chunk. This is the strong baseline TDLM's memory claim must also
beat; loss and gradients equal the plain computation up to summation order.

The chunk is 128 positions up to GPT-2's vocabulary and shrinks beyond it
(:func:`chunk_positions`), so that a chunk never holds more logits than 128 positions of
50,258 do: with a fixed 128 positions the chunk would grow with N (9 GiB at N = 256,000 and
16 x 1024 tokens in bf16) and the baseline would stop being memory-lean.

It lives with the benches, not in a library: it exists to be compared against (ARCHITECTURE.md),
and the network package knows no loss. It reaches the network through its public parts only
(``TreeDiT.hidden``, ``.head``, ``.autocast``).
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tdlm_nn import TreeDiT

__all__ = [
    "LOGITS_PER_CHUNK",
    "chunk_positions",
    "chunked_cross_entropy",
    "chunked_loss",
    "weighted_cross_entropy",
]

LOGITS_PER_CHUNK = 128 * 50_258  # per sequence: 128 positions of GPT-2's vocabulary + [MASK]


def chunk_positions(vocab_size: int) -> int:
    """Positions per chunk: 128, fewer where N > 50,258 (at most ``LOGITS_PER_CHUNK`` logits
    per sequence; N = 128,256: 50 positions, N = 256,000: 25)."""
    return max(1, min(128, LOGITS_PER_CHUNK // vocab_size))


def weighted_cross_entropy(
    logits: Float[Tensor, "b l k"],
    targets: Int[Tensor, "b l"],
    weights: Float[Tensor, "b l"],
) -> Float[Tensor, ""]:
    """``sum_{i,l} weights[i,l] * (-log softmax(logits[i,l])[targets[i,l]])``, in fp32."""
    ce = F.cross_entropy(
        rearrange(logits.float(), "b l k -> (b l) k"),
        rearrange(targets, "b l -> (b l)"),
        reduction="none",
    )
    return (ce * rearrange(weights.float(), "b l -> (b l)")).sum()


def _chunk_loss(
    head: nn.Module,
    hidden: Float[Tensor, "b c d"],
    level: Int[Tensor, " b"],
    targets: Int[Tensor, "b c"],
    weights: Float[Tensor, "b c"],
) -> Float[Tensor, ""]:
    return weighted_cross_entropy(head(hidden, level), targets, weights)


def chunked_cross_entropy(
    head: nn.Module,
    hidden: Float[Tensor, "b l d"],
    level: Int[Tensor, " b"],
    targets: Int[Tensor, "b l"],
    weights: Float[Tensor, "b l"],
    chunk_size: int,
) -> Float[Tensor, ""]:
    """:func:`weighted_cross_entropy` of ``head(hidden, level)``, ``chunk_size`` positions at once.

    ``head`` maps ``(hidden [b, c, d], level [b]) -> logits [b, c, k]``; every slot counts in the
    softmax (the flat tree's case). Returns the weighted sum (no normalisation); positions with
    weight 0 contribute nothing but still need a valid target.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    total = hidden.new_zeros((), dtype=torch.float32)
    # split, not slicing: its backward concatenates the chunks' input gradients in one go.
    for h, t, w in zip(
        hidden.split(chunk_size, dim=1),
        targets.split(chunk_size, dim=1),
        weights.split(chunk_size, dim=1),
        strict=True,
    ):
        total = total + checkpoint(_chunk_loss, head, h, level, t, w, use_reentrant=False)
    return total


def chunked_loss(
    model: TreeDiT,
    nodes: Int[Tensor, "b l"],
    level: Int[Tensor, " b"],
    targets: Int[Tensor, "b l"],
    weights: Float[Tensor, "b l"],
    s: Float[Tensor, " b"] | None = None,
    *,
    chunk_size: int | None = None,
) -> Float[Tensor, ""]:
    """``sum_{i,l} weights[i,l] * CE(logits[i,l], targets[i,l])`` of a flat-tree ``model``
    without its full logits.

    On the flat tree every one of the N slots is a token, so this equals the same weighted sum
    over ``model(nodes, level, s)``'s logits, but logits exist for ``chunk_size`` positions at a
    time, in the forward pass and again in the backward pass. ``targets`` are token ids (valid
    everywhere: put 0 where the weight is 0); the weights carry the diffusion loss's masking and
    ``w(t)``; normalising is the caller's. ``chunk_size`` defaults to
    :func:`chunk_positions` of the model's vocabulary.
    """
    if not model.shape.is_flat:
        raise ValueError(
            "chunked_loss is the flat tree's (MDLM's) full-vocabulary loss; a tree head's "
            "logits are small and its invalid slots need the diffusion process's mask"
        )
    if chunk_size is None:
        chunk_size = chunk_positions(model.shape.vocab_size)
    hidden = model.hidden(nodes, level, s)
    with model.autocast(nodes.device):
        return chunked_cross_entropy(model.head, hidden, level, targets, weights, chunk_size)
