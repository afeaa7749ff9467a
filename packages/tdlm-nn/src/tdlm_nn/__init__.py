"""tdlm-nn: the DiT denoiser of tree-structured diffusion language models (docs/method.md §4, §7).

A node embedding over every tree node, the MDLM/SEDD DiT backbone (adaLN-Zero, rotary,
bidirectional attention through xformers, SDPA or plain math), and a per-level child-slot head,
together implementing the denoiser protocol ``model(nodes, level[, s]) -> logits [b, l, k]``.
Parameter accounting matches TDLM to an MDLM budget; presets give tiny/small/medium models,
and :class:`NetworkConfig` (a preset and its overrides) builds one for a tree.
"""

from .attention import ATTENTION_BACKENDS, attend, resolve_attention
from .heads import NodeEmbedding, TreeHead
from .layers import Conditioning, DiTBlock, LayerNorm, apply_rotary, modulate, rotary_tables
from .model import DiTBackbone, DiTConfig, TreeDiT
from .params import SPENDS, ParamBreakdown, breakdown_table, match_budget, param_breakdown
from .presets import PRESETS, NetworkConfig, medium, preset, small, tiny
from .recompute import RECOMPUTE_MODES
from .shape import TreeShape

__version__ = "0.1.0"

__all__ = [
    "ATTENTION_BACKENDS",
    "PRESETS",
    "RECOMPUTE_MODES",
    "SPENDS",
    "Conditioning",
    "DiTBackbone",
    "DiTBlock",
    "DiTConfig",
    "LayerNorm",
    "NetworkConfig",
    "NodeEmbedding",
    "ParamBreakdown",
    "TreeDiT",
    "TreeHead",
    "TreeShape",
    "apply_rotary",
    "attend",
    "breakdown_table",
    "match_budget",
    "medium",
    "modulate",
    "param_breakdown",
    "preset",
    "resolve_attention",
    "rotary_tables",
    "small",
    "tiny",
]
