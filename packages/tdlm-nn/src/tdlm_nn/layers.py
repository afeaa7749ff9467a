"""The DiT's layers: fp32 LayerNorm, rotary positions, conditioning, and the adaLN-Zero block.

This is the backbone of MDLM and SEDD (Sahoo et al. 2024, Lou et al. 2024; itself DiT, Peebles &
Xie 2023) that docs/method.md §1/§4 assume: pre-norm blocks whose LayerNorm outputs are shifted and
scaled, and whose residual branches are gated, by maps of a small conditioning vector that start
at zero (adaLN-Zero: every block is the identity at initialisation). Attention is bidirectional
with rotary position embeddings (Su et al. 2021); the MLP is 4x with tanh-GELU.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from .attention import attend

__all__ = ["Conditioning", "DiTBlock", "LayerNorm", "apply_rotary", "modulate", "rotary_tables"]


class LayerNorm(nn.Module):
    """LayerNorm without bias, computed in fp32 whatever the autocast dtype (as in MDLM)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Float[Tensor, "b l d"]) -> Float[Tensor, "b l d"]:
        # layer_norm is on autocast's fp32 list, so the statistics stay fp32 under bf16 autocast.
        return F.layer_norm(x.float(), self.weight.shape, self.weight)


def modulate(
    x: Float[Tensor, "b l d"], shift: Float[Tensor, "b d"], scale: Float[Tensor, "b d"]
) -> Float[Tensor, "b l d"]:
    """adaLN: ``x * (1 + scale) + shift`` per sample (zero modulation is the identity)."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])


def rotary_tables(
    length: int, head_dim: int, base: float, device: torch.device
) -> tuple[Float[Tensor, "l d"], Float[Tensor, "l d"]]:
    """cos and signed sin of the rotary angles ``position * base^(-2i/d)``, halves repeated.

    The sine's first half is negated so that rotating is ``x cos + swap_halves(x) sin``.
    """
    inv_freq = base ** -(
        torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    )
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    return torch.cat((angles, angles), dim=-1).cos(), torch.cat((-angles, angles), dim=-1).sin()


def apply_rotary(
    x: Float[Tensor, "b l two h e"], cos: Float[Tensor, "l e"], sin: Float[Tensor, "l e"]
) -> Float[Tensor, "b l two h e"]:
    """Rotate queries and keys (stacked on ``two``) by their positions' angles (RoPE).

    GPT-NeoX layout (dimension i pairs with i + e/2), as the flash-attn rotary MDLM uses; one
    call for queries and keys halves the elementwise passes.
    """
    first, second = x.chunk(2, dim=-1)
    swapped = torch.cat((second, first), dim=-1)
    cos, sin = (rearrange(t.to(x.dtype), "l e -> l 1 1 e") for t in (cos, sin))
    return torch.addcmul(x * cos, swapped, sin)


class Conditioning(nn.Module):
    """The conditioning vector ``c = SiLU(e_level [+ MLP(sinusoid(s))])`` of every sample.

    docs/method.md §4: level only by default; (level, s) as an option. ``s`` in [0, 1] is scaled by
    1000 before the sinusoidal embedding (DiT's timestep range) so its frequencies resolve it.
    """

    def __init__(self, depth: int, cond_dim: int, *, time: bool, freq_dim: int = 256) -> None:
        super().__init__()
        self.level = nn.Parameter(torch.randn(depth, cond_dim))
        self.freq_dim = freq_dim
        self.time = (
            nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
            if time
            else None
        )

    def forward(
        self, level: Int[Tensor, " b"], s: Float[Tensor, " b"] | None
    ) -> Float[Tensor, "b c"]:
        c = self.level[level]
        if self.time is not None:
            if s is None:
                raise ValueError("this model conditions on (level, s): pass s, a [batch] tensor")
            half = self.freq_dim // 2
            freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=s.device) / half)
            args = 1000 * s.float()[:, None] * freqs
            c = c + self.time(torch.cat((args.cos(), args.sin()), dim=-1))
        return F.silu(c)


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block: gated attention and MLP residuals with dropout
    (``causal``: each position attends to itself and the positions before it)."""

    def __init__(
        self,
        width: int,
        n_heads: int,
        cond_dim: int,
        mlp_hidden: int,
        dropout: float,
        *,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if width % n_heads or (width // n_heads) % 2:
            raise ValueError(f"width {width} must split into {n_heads} heads of even size")
        self.n_heads = n_heads
        self.causal = causal
        self.backend = "sdpa"  # concrete attention backend; TreeDiT sets it per device
        self.norm1 = LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.norm2 = LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, width)
        )
        self.dropout = nn.Dropout(dropout)
        self.modulation = nn.Linear(cond_dim, 6 * width)
        # adaLN-Zero: zero shift/scale/gate, so the block starts as the identity.
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(
        self,
        x: Float[Tensor, "b l d"],
        c: Float[Tensor, "b c"],
        cos: Float[Tensor, "l e"],
        sin: Float[Tensor, "l e"],
    ) -> Float[Tensor, "b l d"]:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        qkv = self.qkv(modulate(self.norm1(x), shift1, scale1))
        qkv = rearrange(qkv, "b l (three h e) -> b l three h e", three=3, h=self.n_heads)
        q, k = apply_rotary(qkv[:, :, :2], cos, sin).unbind(dim=2)
        att = attend(q, k, qkv[:, :, 2], self.backend, self.causal)
        att = self.dropout(self.out(rearrange(att, "b l h e -> b l (h e)")))
        x = torch.addcmul(x, gate1[:, None], att)
        mlp = self.mlp(modulate(self.norm2(x), shift2, scale2))
        return torch.addcmul(x, gate2[:, None], self.dropout(mlp))
