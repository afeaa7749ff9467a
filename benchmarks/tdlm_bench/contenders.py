"""The three models every bench compares at one parameter budget (issue 6; METHOD.md §1, §7).

* ``mdlm`` — MDLM as it computes: the flat tree, full-vocabulary logits ``[b, l, N]`` and the
  diffusion loss on them (tdlm-diffusion's ``training_loss``; on the flat tree it is MDLM's
  loss, invariant I1 of METHOD.md §5).
* ``mdlm-chunked`` — the same network and loss through :func:`.chunked.chunked_loss`: logits for
  128 positions at a time (fewer beyond N = 50,258), recomputed in the backward pass. The
  memory-lean baseline the paper does not compare against.
* ``tdlm`` — a K-ary vocabulary tree and the same preset deepened to MDLM's parameter budget
  (``tdlm_nn.match_budget``).

The budget is MDLM's total parameter count: its input embedding (N + 1 rows: the N leaves and
the root, MDLM's ``[MASK]`` state), its blocks, its full-vocabulary head (``D x N`` + N biases,
untied from the embedding as in MDLM) and the conditioning. TDLM keeps the same width and
preset, pays for its own embedding (the leaves, every internal node and the root) and its
K-wide heads, and spends the rest on blocks, the last fraction of a block as a wider MLP.
Whatever MDLM's head costs, TDLM gets as depth: at the paper's width and N = 256,000 the head
(197M) outweighs MDLM's 12 blocks (92M), and TDLM has 37 blocks.

``N`` (``Scale.vocab_size``) counts the leaves, which is MDLM's head width: the paper scale's
50,258 is GPT-2's 50,257 tokens + MDLM's ``[MASK]`` column; ``--vocab-sizes`` takes other N
as given (:meth:`Scale.at_vocab`).

Memory and speed do not depend on which tokens share a parent, so the benches use a seeded
random tree and synthetic tokens; the quality bench trains on real text instead.
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from tdlm_diffusion import TreeProcess, noised_batch, training_loss
from tdlm_nn import DiTConfig, TreeDiT, TreeShape, param_breakdown
from tdlm_nn import preset as model_preset
from tdlm_tree import VocabTree, flat_tree, random_tree

from .chunked import chunked_loss

__all__ = [
    "CHECKPOINTING",
    "MODELS",
    "SCALES",
    "Scale",
    "Contender",
    "bench_scales",
    "build_contender",
    "contender_config",
    "synthetic_tokens",
]

MODELS = ("mdlm", "mdlm-chunked", "tdlm")


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
    if model not in MODELS:
        raise ValueError(f"unknown bench model {model!r}; choose from {MODELS}")
    if model == "tdlm":
        return random_tree(scale.vocab_size, scale.branching, seed=0)
    return flat_tree(scale.vocab_size)


def contender_config(model: str, scale: Scale, *, dropout: float = 0.1) -> DiTConfig:
    """The network of ``model`` at ``scale`` (TDLM: deepened to the flat MDLM's budget)."""
    if model == "tdlm":
        shape = TreeShape.balanced(scale.vocab_size, scale.branching)
    else:
        shape = TreeShape.flat(scale.vocab_size)
    config = model_preset(scale.preset, shape)
    return DiTConfig.from_dict({**config.to_dict(), "dropout": dropout})


@dataclass
class Contender:
    """One model with its process and AdamW optimizer, ready for training steps."""

    name: str
    process: TreeProcess
    model: TreeDiT
    optimizer: torch.optim.Optimizer

    @property
    def parameters(self) -> int:
        return param_breakdown(self.model).total

    def loss(self, x: Int[Tensor, "b l"]) -> Tensor:
        """The training loss (nats per token) on a batch, as the contender computes it."""
        if self.name != "mdlm-chunked":
            return training_loss(self.process, self.model, x).loss
        # The same draw as training_loss (its default estimator), scored by the chunked CE.
        draw = noised_batch(self.process, x)
        weights = self.process.is_masked(draw.z, draw.level) * draw.weight[:, None]
        targets = self.process.target_slots(x, draw.level)
        return chunked_loss(self.model, draw.z, draw.level, targets, weights.float()) / x.numel()

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
    backward pass, ``all`` of it or its elementwise ops only (``selective``)."""
    torch.manual_seed(seed)
    process = TreeProcess(_tree(model, scale)).to(device)
    network = contender_config(model, scale, dropout=dropout).build().to(device).train()
    if checkpointing not in CHECKPOINTING:
        raise ValueError(f"checkpointing: off, selective or all, not {checkpointing!r}")
    network.checkpoint_blocks(*CHECKPOINTING[checkpointing])
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8)
    return Contender(model, process, network, optimizer)


def synthetic_tokens(scale: Scale, batch: int, device: torch.device, seed: int = 0) -> Tensor:
    """Uniform random token ids ``[batch, seq_len]`` (memory and speed ignore the tokens)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, scale.vocab_size, (batch, scale.seq_len), generator=generator).to(
        device
    )
