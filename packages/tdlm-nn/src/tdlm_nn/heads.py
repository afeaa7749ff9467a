"""Input embedding over all tree nodes and the per-level child-slot head.

docs/method.md §4: the network reads global node ids (leaves, internal nodes and root share one
table, ``offset_h + local id``) and, for a sample diffusing level h, outputs logits over the
``k_{h+1}`` child slots of every position through one linear map ``W_h : D -> k_{h+1}`` per
level (ours; a single shared map is an option). Every level's map is padded to the common width
``k = max_h k_{h+1}``; the padded slots hold arbitrary values and the diffusion process masks
every slot at or beyond a node's child count to ``-inf`` (the network does not know child counts).
On the flat tree (H = 1, k_1 = N) the head is exactly MDLM's full-vocabulary output layer, and on
any other tree no ``[batch, length, N]`` tensor exists.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

__all__ = ["NodeEmbedding", "TreeHead"]


class NodeEmbedding(nn.Module):
    """One ``D``-vector per tree node, looked up by global node id."""

    def __init__(self, num_nodes: int, width: int) -> None:
        super().__init__()
        # Uniform(+-1/sqrt(D)), the range MDLM's embedding gets from kaiming_uniform(a=sqrt(5)).
        bound = 1 / math.sqrt(width)
        self.weight = nn.Parameter(torch.empty(num_nodes, width).uniform_(-bound, bound))

    def forward(self, nodes: Int[Tensor, "b l"]) -> Float[Tensor, "b l d"]:
        return F.embedding(nodes, self.weight)


class TreeHead(nn.Module):
    """Child-slot logits: ``h W_level^T + b_level``, zero-initialised (uniform first predictions).

    Stored as ``weight [maps, k, D]`` and ``bias [maps, k]`` with ``maps = H`` (per level) or 1
    (shared, or the flat tree). With several maps each sample's map is gathered by its level and
    applied by one batched matmul, so samples at different levels need no loop.
    """

    def __init__(self, width: int, widths: tuple[int, ...], *, shared: bool) -> None:
        super().__init__()
        maps = 1 if shared else len(widths)
        self.weight = nn.Parameter(torch.zeros(maps, max(widths), width))
        self.bias = nn.Parameter(torch.zeros(maps, max(widths)))

    def forward(
        self, hidden: Float[Tensor, "b l d"], level: Int[Tensor, " b"]
    ) -> Float[Tensor, "b l k"]:
        if self.weight.shape[0] == 1:
            return F.linear(hidden, self.weight[0], self.bias[0])
        weight = rearrange(self.weight[level], "b k d -> b d k")
        return torch.baddbmm(self.bias[level][:, None, :], hidden, weight)
