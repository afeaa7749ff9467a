"""The TDLM denoiser: node embedding -> DiT backbone -> per-level child-slot head.

Implements the reverse model of docs/method.md §4 as the denoiser protocol shared with
``tdlm-diffusion``::

    model(nodes: Int[Tensor, "b l"], level: Int[Tensor, " b"]) -> Float[Tensor, "b l k"]

``nodes`` are global node ids, ``level[i] = h`` is the transition sample i is diffusing (its
positions at level h+1 choose among their children at level h) and ``k = max_h k_{h+1}``. Slots
at or beyond a node's child count hold arbitrary values: the caller masks them to ``-inf``.
A model configured with ``time_conditioning`` is called as ``model(nodes, level, s)``.

A loss that needs the head's input rather than its output (logits at the masked positions only,
a fused linear cross-entropy) passes ``readout=fn``: the model then returns
``fn(hidden, weight, bias)`` — its final hidden states ``[b, l, D]`` and its head's maps
``[maps, k, D]`` / ``[maps, k]`` (:class:`~tdlm_nn.heads.TreeHead`) — computed inside its own
forward pass and precision context, so that DDP, FSDP and autocast see one ordinary call. The
network still computes no loss: ``fn`` is the caller's.

Precision: parameters are fp32 (master weights); on CUDA the backbone and head run under bf16
autocast (``mixed_precision``), LayerNorms stay fp32, and the logits come out bf16 as in MDLM.
On the CPU everything is fp32.
"""

import dataclasses
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from .attention import ATTENTION_BACKENDS, resolve_attention
from .heads import NodeEmbedding, TreeHead
from .layers import Conditioning, DiTBlock, LayerNorm, modulate, rotary_tables
from .recompute import RECOMPUTE_MODES, recomputed
from .shape import TreeShape

__all__ = ["DiTBackbone", "DiTConfig", "TreeDiT"]


@dataclass(frozen=True, kw_only=True)
class DiTConfig:
    """Everything that determines a :class:`TreeDiT`; ``build()`` makes one.

    ``mlp_hidden`` defaults to ``4 * width``. ``cond_dim`` is the conditioning vector's size
    (MDLM: 128). ``shared_head`` uses one ``D -> k`` map for every level instead of one per level.
    ``causal`` masks attention to the past: on the flat tree, with the logits at position i read
    as the next token's, it is the autoregressive baseline at MDLM's exact architecture and
    parameter count (the ``--kind ar`` of tdlm-train).
    """

    shape: TreeShape
    width: int
    n_heads: int
    n_blocks: int
    cond_dim: int = 128
    mlp_hidden: int | None = None
    dropout: float = 0.1
    time_conditioning: bool = False
    shared_head: bool = False
    attention: str = "auto"
    rotary_base: float = 10_000.0
    mixed_precision: bool = True
    causal: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention must be one of {ATTENTION_BACKENDS}, got {self.attention!r}"
            )
        if min(self.width, self.n_heads, self.n_blocks, self.cond_dim, self.hidden_size) < 1:
            raise ValueError(f"model sizes must be positive: {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @property
    def hidden_size(self) -> int:
        """The MLP's hidden width."""
        return 4 * self.width if self.mlp_hidden is None else self.mlp_hidden

    def build(self) -> "TreeDiT":
        return TreeDiT(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (saved with every run and checkpoint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DiTConfig":
        fields = dict(values)
        fields["shape"] = TreeShape(**{k: tuple(v) for k, v in fields["shape"].items()})
        return cls(**fields)


class DiTBackbone(nn.Module):
    """The blocks and the final adaLN-modulated LayerNorm: embeddings -> head-ready hidden states.

    The part worth ``torch.compile``-ing: a pure function of ``(x, c)`` with no data-dependent
    control flow.

    Activation checkpointing (``checkpointed``, a set of block indices; empty by default): a
    checkpointed block recomputes activations in the backward pass instead of keeping them,
    everything but its input (``recompute = "full"``, one more forward of the block) or only its
    elementwise ops (``"selective"``, keeping the matmul and attention outputs; see
    :mod:`.recompute`). The recomputed dropout masks equal the forward's and the gradients are
    those of the plain block. It changes memory and time, never the function, so it is a
    runtime setting (:meth:`TreeDiT.checkpoint_blocks`) and not part of :class:`DiTConfig`.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.head_dim = config.width // config.n_heads
        self.rotary_base = config.rotary_base
        self.blocks = nn.ModuleList(
            DiTBlock(
                config.width, config.n_heads, config.cond_dim, config.hidden_size, config.dropout,
                causal=config.causal,
            )
            for _ in range(config.n_blocks)
        )
        self.norm = LayerNorm(config.width)
        self.modulation = nn.Linear(config.cond_dim, 2 * config.width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.checkpointed: frozenset[int] = frozenset()
        self.recompute = "full"

    def forward(self, x: Float[Tensor, "b l d"], c: Float[Tensor, "b c"]) -> Float[Tensor, "b l d"]:
        cos, sin = rotary_tables(x.shape[1], self.head_dim, self.rotary_base, x.device)
        recompute = torch.is_grad_enabled()  # without a backward pass there is nothing to save
        for i, block in enumerate(self.blocks):
            if recompute and i in self.checkpointed:
                x = recomputed(block, self.recompute, x, c, cos, sin)
            else:
                x = block(x, c, cos, sin)
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale)


class TreeDiT(nn.Module):
    """The denoiser: ``(nodes, level[, s]) -> child-slot logits [b, l, k]`` (see module doc)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        shape = config.shape
        self.embed = NodeEmbedding(shape.num_nodes, config.width)
        self.cond = Conditioning(shape.depth, config.cond_dim, time=config.time_conditioning)
        self.backbone = DiTBackbone(config)
        self.head = TreeHead(config.width, shape.widths, shared=config.shared_head)
        self._backend_device: str | None = None

    @property
    def shape(self) -> TreeShape:
        return self.config.shape

    @property
    def conditions_on_time(self) -> bool:
        """False (the default) means outputs depend on (nodes, level) only: reusable across s."""
        return self.config.time_conditioning

    @property
    def attention_backend(self) -> str:
        """The concrete attention backend the last forward pass used."""
        return self.backbone.blocks[0].backend

    def checkpoint_blocks(self, blocks: Iterable[int] | str, recompute: str = "full") -> None:
        """Recompute these blocks' activations in the backward pass (see :class:`DiTBackbone`).

        ``blocks``: block indices (negative ones count from the end, as in Python), ``"all"`` or
        ``"none"``/empty. ``recompute``: ``"full"`` (keep only each block's input) or
        ``"selective"`` (also keep its matmul and attention outputs). Replaces the previous
        choice.
        """
        if recompute not in RECOMPUTE_MODES:
            raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, got {recompute!r}")
        n = self.config.n_blocks
        if isinstance(blocks, str):
            if blocks not in ("all", "none"):
                raise ValueError(
                    f"checkpoint_blocks takes indices, 'all' or 'none', not {blocks!r}"
                )
            chosen = range(n) if blocks == "all" else ()
        else:
            chosen = list(blocks)
        bad = [i for i in chosen if not -n <= i < n]
        if bad:
            raise ValueError(f"checkpoint_blocks: no block {bad} in a {n}-block model")
        self.backbone.checkpointed = frozenset(i % n for i in chosen)
        self.backbone.recompute = recompute

    @property
    def checkpointed_blocks(self) -> tuple[int, ...]:
        """The blocks recomputed in the backward pass, in order."""
        return tuple(sorted(self.backbone.checkpointed))

    @property
    def recompute(self) -> str:
        """What the checkpointed blocks recompute: ``"full"`` or ``"selective"``."""
        return self.backbone.recompute

    def _set_attention(self, device: torch.device) -> None:
        # Decided eagerly, outside any compiled region (a compiled backbone then guards on it).
        if self._backend_device != device.type:
            backend = resolve_attention(self.config.attention, device)
            for block in self.backbone.blocks:
                block.backend = backend
            self._backend_device = device.type

    def autocast(self, device: torch.device):
        """The precision context the model computes in on ``device`` (bf16 autocast on CUDA)."""
        if self.config.mixed_precision and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def hidden(
        self,
        nodes: Int[Tensor, "b l"],
        level: Int[Tensor, " b"],
        s: Float[Tensor, " b"] | None = None,
    ) -> Float[Tensor, "b l d"]:
        """The backbone's output, the head's input (fp32 on every device)."""
        if not torch.compiler.is_compiling():
            self._set_attention(nodes.device)
        with self.autocast(nodes.device):
            return self.backbone(self.embed(nodes), self.cond(level, s))

    def forward(
        self,
        nodes: Int[Tensor, "b l"],
        level: Int[Tensor, " b"],
        s: Float[Tensor, " b"] | None = None,
        *,
        readout: Callable[[Tensor, Tensor, Tensor], Any] | None = None,
    ) -> Float[Tensor, "b l k"] | Any:
        """Child-slot logits. ``s`` is read only by a time-conditioned model (else ignored).

        With ``readout``: ``readout(hidden [b, l, D], weight [maps, k, D], bias [maps, k])``
        instead, under the model's precision context (module docstring).
        """
        hidden = self.hidden(nodes, level, s)
        with self.autocast(nodes.device):
            if readout is not None:
                return readout(hidden, self.head.weight, self.head.bias)
            return self.head(hidden, level)
