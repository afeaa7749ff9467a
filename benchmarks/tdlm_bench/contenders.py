"""The contenders every bench compares at one parameter budget (issue 6; docs/method.md).

A contender is a model kind and a head loss, named ``<kind>`` (head loss ``full``) or
``<kind>-<head loss>`` (:func:`parse_contender`, the one place a name is read); its loss is
tdlm-diffusion's ``training_loss(..., head_loss=...)`` for every one:

* ``mdlm`` — MDLM as published: the flat tree, full-vocabulary logits ``[b, l, N]`` at every
  position and the diffusion loss on them (on the flat tree it is MDLM's loss, invariant I1).
* ``mdlm-masked`` — the same network and loss, logits at the masked positions only (half of
  them in expectation, :data:`MASKED_SHARE`).
* ``mdlm-chunked`` — ``masked``, ``tdlm_diffusion.CHUNK_LOGITS`` logits at a time under
  activation checkpointing (recomputed in the backward pass): any torch, any device.
* ``mdlm-torch`` — ``masked`` through ``torch.nn.functional.linear_cross_entropy``'s chunked
  path (torch >= 2.13).
* ``mdlm-liger`` / ``mdlm-cce`` — ``masked`` through Liger-Kernel / Cut Cross-Entropy (CUDA,
  optional packages).
* ``tdlm`` / ``tdlm-masked`` — a K-ary vocabulary tree, every position's K-wide logits or the
  masked positions' only, and the same preset deepened to MDLM's parameter budget
  (``tdlm_nn.match_budget``).
* ``ar`` / ``ar-torch`` — the autoregressive baseline (``--kind ar``): MDLM's network with
  causal attention, trained on the exact next-token NLL, every position's logits or every
  position's cross-entropy fused; sampled left to right, one network call per token (no
  key-value cache, as ``tdlm_train.autoregressive_sample``).
* ``tdlm@width`` / ``tdlm@shallow`` / ``tdlm@none`` — TDLM with the head's saved budget spent
  on width instead (MDLM's depth, equal parameters), on width at the cost of depth (MDLM's
  ``D · blocks``, so MDLM's block activations, equal parameters), or not spent: MDLM's depth
  and width, fewer parameters (``--model.spend``). A name is ``<kind>[-<head loss>][@<spend>]``.

The MDLM variants are MDLM at its strongest: the same network and the same loss and gradients
(``tests/test_head_loss.py``), with less memory. A contender whose head loss cannot run on the
device is refused with the library's reason (:func:`bench_models`).

The budget is MDLM's total parameter count: its input embedding (N + 1 rows: the N leaves and
the root, MDLM's ``[MASK]`` state), its blocks, its full-vocabulary head (``D x N`` + N biases,
untied from the embedding as in MDLM) and the conditioning. TDLM keeps the same width and
preset, pays for its own embedding (the leaves, every internal node and the root) and its
K-wide heads, and spends the rest on blocks, the last fraction of a block as a wider MLP.
Whatever MDLM's head costs, TDLM gets as depth: at the paper's width and N = 256,000 the head
(197M) outweighs MDLM's 12 blocks (92M), and TDLM has 37 blocks. The head loss changes no
parameter.

``N`` (``Scale.vocab_size``) counts the leaves, which is MDLM's head width: the paper scale's
50,258 is GPT-2's 50,257 tokens + MDLM's ``[MASK]`` column; ``--vocab-sizes`` takes other N
as given (:meth:`Scale.at_vocab`).

Memory and speed do not depend on which tokens share a parent, so the benches use a seeded
random tree and synthetic tokens; the quality bench trains on real text instead.
"""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Int
from torch import Tensor

from tdlm_diffusion import TreeProcess, head_loss_unavailable, training_loss
from tdlm_nn import DiTConfig, TreeDiT, TreeShape, param_breakdown
from tdlm_nn import preset as model_preset
from tdlm_train.autoregressive import next_token_nll
from tdlm_train.errors import UserError
from tdlm_tree import VocabTree, flat_tree, random_tree

__all__ = [
    "CHECKPOINTING",
    "DEFAULT_MODELS",
    "MASKED_SHARE",
    "MODELS",
    "SCALES",
    "Scale",
    "Contender",
    "bench_models",
    "bench_scales",
    "best_of",
    "build_contender",
    "ContenderName",
    "contender_config",
    "equal_budget",
    "parse_contender",
    "scored_share",
    "synthetic_tokens",
]

MODELS = (
    "mdlm",
    "mdlm-masked",
    "mdlm-chunked",
    "mdlm-torch",
    "mdlm-liger",
    "mdlm-cce",
    "tdlm",
    "tdlm-masked",
    "tdlm@width",
    "tdlm@shallow",
    "tdlm@none",
    "ar",
    "ar-torch",
)
# What the benches compare unless told otherwise: MDLM as published, its two leanest variants
# that need no extra package, and TDLM (whose K-wide logits were never its peak).
DEFAULT_MODELS = ("mdlm", "mdlm-chunked", "mdlm-torch", "tdlm")
# The expected share of positions a masked-only head scores: E_t[1 - α(t)] = 1/2 under the
# linear schedule (every bench contender's). A batch of B low-discrepancy times masks
# 1/2 ± 1/(2B) of its positions on average.
MASKED_SHARE = 0.5


class ContenderName(NamedTuple):
    kind: str  # mdlm | tdlm | ar
    head_loss: str  # tdlm_diffusion.HEAD_LOSSES
    spend: str  # tdlm_nn.SPENDS: what a tree's saved head buys (depth for MDLM: nothing)


def parse_contender(name: str) -> ContenderName:
    """``(kind, head loss, spend)`` of a contender name: ``mdlm`` is ``("mdlm", "full",
    "depth")``, ``mdlm-torch`` is ``("mdlm", "torch", "depth")``, ``tdlm@none`` is ``("tdlm",
    "full", "none")``."""
    if name not in MODELS:
        raise ValueError(f"unknown bench model {name!r}; choose from {', '.join(MODELS)}")
    rest, _, spend = name.partition("@")
    kind, _, head_loss = rest.partition("-")
    return ContenderName(kind, head_loss or "full", spend or "depth")


def scored_share(name: str) -> float:
    """The expected share of positions a contender's head scores in training: every one for
    the ``full`` head loss and for AR (each position predicts the next token), the masked ones
    (:data:`MASKED_SHARE`) for a diffusion model's other head losses."""
    kind, head_loss, _ = parse_contender(name)
    return 1.0 if head_loss == "full" or kind == "ar" else MASKED_SHARE


def equal_budget(name: str) -> bool:
    """Whether a contender has MDLM's parameter budget (``@none`` keeps the saving)."""
    return parse_contender(name).spend != "none"


def bench_models(
    names: Sequence[str], device: torch.device | str, log: Callable[[str], object] = print
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The contenders a bench runs on ``device`` and those it leaves out, with the reason.

    ``names`` given (``--models``): every one must exist and run here, else a
    :class:`UserError` with the library's reason. None given: :data:`DEFAULT_MODELS`, those
    whose head loss cannot run here left out and the reason logged.
    """
    reasons = {}
    for name in names or DEFAULT_MODELS:
        try:
            reason = head_loss_unavailable(parse_contender(name)[1], device)
        except ValueError as error:
            raise UserError(f"--models: {error}") from None
        if reason is not None:
            if names:
                raise UserError(f"--models: {name} cannot run on {device}: {reason}")
            log(f"{name} left out: {reason}")
            reasons[name] = reason
    return tuple(n for n in names or DEFAULT_MODELS if n not in reasons), reasons


def best_of(values: dict[str, float | None], kind: str, *, highest: bool = False) -> str | None:
    """The contender of ``kind`` with the lowest value (``highest``: the largest) among those
    with one at MDLM's parameter budget: e.g. the lowest-memory MDLM variant of a row."""
    mine = {
        m: v for m, v in values.items() if v and parse_contender(m).kind == kind and equal_budget(m)
    }
    if not mine:
        return None
    return (max if highest else min)(mine, key=mine.__getitem__)


@dataclass(frozen=True, kw_only=True)
class Scale:
    """A model preset on a vocabulary and sequence length."""

    name: str
    preset: str  # tdlm-nn preset: tiny | small | medium
    vocab_size: int
    seq_len: int
    branching: int = 64

    def at_vocab(self, vocab_size: int) -> "Scale":
        """This scale with another vocabulary (N leaves; everything else kept)."""
        return dataclasses.replace(self, vocab_size=vocab_size)


SCALES = {
    # The paper's: MDLM-small (width 768, 12 heads, 12 blocks), GPT-2's vocabulary + [MASK].
    "paper": Scale(name="paper", preset="small", vocab_size=50_258, seq_len=1024),
    # The out-of-the-box CPU run's: tiny preset, the 4,096-token BPE of apps/train.
    "tiny": Scale(name="tiny", preset="tiny", vocab_size=4096, seq_len=128),
}


def bench_scales(names: Sequence[str], vocab_sizes: Sequence[int] = ()) -> list[Scale]:
    """The scales called ``names``, each at every N of ``vocab_sizes`` (none: at its own N)."""
    unknown = sorted(set(names) - set(SCALES))
    if unknown:
        raise ValueError(f"unknown scales {unknown}; choose from {sorted(SCALES)}")
    small = [n for n in vocab_sizes if n < 2]
    if small:
        raise ValueError(f"vocabulary sizes must be at least 2, got {small}")
    return [
        SCALES[name].at_vocab(n) if vocab_sizes else SCALES[name]
        for name in names
        for n in vocab_sizes or (None,)
    ]


def _tree(model: str, scale: Scale) -> VocabTree:
    if parse_contender(model).kind == "tdlm":
        return random_tree(scale.vocab_size, scale.branching, seed=0)
    return flat_tree(scale.vocab_size)


def contender_config(model: str, scale: Scale, *, dropout: float = 0.1) -> DiTConfig:
    """The network of ``model`` at ``scale`` (TDLM: the flat MDLM's budget spent on its spend,
    depth unless named); the head loss changes nothing here."""
    name = parse_contender(model)
    if name.kind == "tdlm":
        shape = TreeShape.balanced(scale.vocab_size, scale.branching)
    else:
        shape = TreeShape.flat(scale.vocab_size)
    config = model_preset(scale.preset, shape, name.spend)
    return DiTConfig.from_dict(
        {**config.to_dict(), "dropout": dropout, "causal": name.kind == "ar"}
    )


@dataclass
class Contender:
    """One model with its process, head loss and AdamW optimizer, ready for training steps."""

    name: str
    kind: str
    head_loss: str
    process: TreeProcess
    model: TreeDiT
    optimizer: torch.optim.Optimizer

    @property
    def parameters(self) -> int:
        return param_breakdown(self.model).total

    def loss(self, x: Int[Tensor, "b l"], generator: torch.Generator | None = None) -> Tensor:
        """The training loss (nats per token) on a batch, through the contender's head loss;
        ``generator`` draws the noise (the same draw for every contender of a kind; AR has
        none)."""
        if self.kind == "ar":
            nll = next_token_nll(self.model, x, head_loss=self.head_loss)
            return nll.sum() / x.numel()
        return training_loss(
            self.process, self.model, x, generator=generator, head_loss=self.head_loss
        ).loss

    def train_step(self, x: Int[Tensor, "b l"]) -> float:
        """Forward, backward and the AdamW step; returns the loss."""
        loss = self.loss(x)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


# The benches' activation-checkpointing modes, as TreeDiT.checkpoint_blocks(blocks, recompute).
CHECKPOINTING = {"off": ("none", "full"), "selective": ("all", "selective"), "all": ("all", "full")}


def build_contender(
    model: str,
    scale: Scale,
    device: torch.device,
    *,
    dropout: float = 0.1,
    seed: int = 0,
    checkpointing: str = "off",
) -> Contender:
    """``model`` at ``scale``; ``checkpointing``: ``off``, or every block recomputed in the
    backward pass, ``all`` of it or its elementwise ops only (``selective``). A head loss that
    cannot run on ``device`` is refused with the library's reason (a ``ValueError``)."""
    kind, head_loss, _ = parse_contender(model)
    reason = head_loss_unavailable(head_loss, device)
    if reason is not None:
        raise ValueError(f"{model}: {reason}")
    torch.manual_seed(seed)
    process = TreeProcess(_tree(model, scale)).to(device)
    network = contender_config(model, scale, dropout=dropout).build().to(device).train()
    if checkpointing not in CHECKPOINTING:
        raise ValueError(f"checkpointing: off, selective or all, not {checkpointing!r}")
    network.checkpoint_blocks(*CHECKPOINTING[checkpointing])
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8)
    return Contender(model, kind, head_loss, process, network, optimizer)


def synthetic_tokens(scale: Scale, batch: int, device: torch.device, seed: int = 0) -> Tensor:
    """Uniform random token ids ``[batch, seq_len]`` (memory and speed ignore the tokens)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, scale.vocab_size, (batch, scale.seq_len), generator=generator).to(
        device
    )
