"""The autoregressive baseline (``--kind ar``): MDLM's network with causal attention, trained
on and scored by the exact next-token NLL, and its left-to-right sampler.

The network is tdlm-nn's ``TreeDiT`` on the flat tree with ``causal=True``: the same blocks,
embedding and full-vocabulary head as MDLM (the same parameter count), conditioned on level 0
throughout; position i's logits are read as the next token's. That is the AR row of every table
in the field (MDLM's paper: the same transformer, causal).

What it scores: every packed block starts with BOS (:class:`~tdlm_train.packing.PackedBlocks`),
so ``-log p(x) = Σ_{i>=1} -log p(x_i | x_<i)`` exactly, the first token costing 0 nats by
construction. Figures are per token over all L positions, as the diffusion models' NELBO is
(framing tokens included), so NLL, PPL and BPB sit in the same columns: the AR NLL is exact where
the diffusion figures are upper bounds. Given a set of scored positions (a context), only their
terms count; each term conditions on every earlier position, so for a prefix context (or padding
at the end) the sum is exactly ``-log p(x_U | x_K)`` (resp. ``-log p(x_U)``).

The head loss (``--diffusion.head_loss``) works as for the diffusion models
(:mod:`tdlm_diffusion.head_loss`): ``full`` computes every position's logits, the others only
the scored rows', fused or chunked.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tdlm_diffusion import SamplerConfig, TreeProcess, child_distribution, linear_nll

__all__ = ["autoregressive_sample", "is_causal", "next_token_nll"]


def is_causal(model: torch.nn.Module) -> bool:
    """Whether ``model`` is the autoregressive baseline's network (a causal ``TreeDiT``); any
    other denoiser is a diffusion model's."""
    return bool(getattr(getattr(model, "config", None), "causal", False))


def next_token_nll(
    model: torch.nn.Module,
    x: Int[Tensor, "b l"],
    *,
    head_loss: str = "full",
    scored: Bool[Tensor, "b l"] | None = None,
) -> Float[Tensor, " b"]:
    """``Σ_{i>=1, scored} -log p(x_i | x_<i)`` per sequence (fp32), one causal forward pass.

    ``model`` is a causal flat-tree denoiser (``model(x, level) -> [b, l, N]``); ``scored``
    (default: every position) picks the terms; position 0 is never a term.
    """
    batch, length = x.shape
    level = torch.zeros(batch, dtype=torch.long, device=x.device)
    target = x[:, 1:]
    terms = torch.ones_like(target, dtype=torch.bool) if scored is None else scored[:, 1:]
    if head_loss == "full":
        logits = model(x, level)[:, :-1]
        nll = F.cross_entropy(
            rearrange(logits.float(), "b l n -> (b l) n"),
            rearrange(target, "b l -> (b l)"),
            reduction="none",
        )
        nll = rearrange(nll, "(b l) -> b l", b=batch)
        return torch.where(terms, nll, torch.zeros_like(nll)).sum(dim=-1)
    sequence, position = terms.nonzero(as_tuple=True)

    def readout(hidden: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        rows = hidden[sequence, position]  # position i's state predicts x_{i+1}
        nll = linear_nll(head_loss, rows, weight[0], bias[0], target[sequence, position])
        total = hidden.new_zeros(batch, dtype=torch.float32)
        return total.index_add(0, sequence, nll.float()) + 0 * (weight.sum() + bias.sum())

    return model(x, level, readout=readout)


@torch.no_grad()
def autoregressive_sample(
    process: TreeProcess,
    model: torch.nn.Module,
    prefix: Int[Tensor, "b p"],
    length: int,
    *,
    config: SamplerConfig,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "b length"]:
    """``prefix`` (e.g. BOS, or BOS and a prompt) continued to ``length`` tokens, one token per
    network call, with ``config``'s temperature, top-p and precision (its step count is the
    diffusion samplers' and has no meaning here: an AR model takes ``length - p`` steps).

    ``process`` is the flat tree's (its root's children are the vocabulary). Each step runs the
    whole prefix again (no key-value cache): ``O(length²)`` work, fine at the lengths the
    baseline is sampled at for a look or for generative perplexity.
    """
    if not 0 < prefix.shape[1] <= length:
        raise ValueError(f"the prefix has {prefix.shape[1]} tokens; need 1..{length}")
    x = prefix
    level = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    root = torch.full((x.shape[0],), process.root, dtype=torch.long, device=x.device)
    while x.shape[1] < length:
        logits = model(x, level)[:, -1]
        probs = child_distribution(
            process, logits, root, temperature=config.temperature, top_p=config.top_p,
            precision=config.precision,
        )  # fmt: skip
        token = torch.multinomial(probs, 1, generator=generator)
        x = torch.cat([x, token.to(x.dtype)], dim=1)
    return x
