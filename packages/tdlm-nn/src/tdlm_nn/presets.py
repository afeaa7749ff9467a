"""Model presets: ``tiny``, ``small``, ``medium`` (docs/method.md §7).

Each preset is an MDLM-style reference architecture on the flat tree of the same vocabulary.
On the flat tree a preset *is* that reference (MDLM); on any other tree it is the reference
deepened to the same parameter budget (:func:`match_budget`), which is how the paper compares
TDLM with MDLM — or widened to it at MDLM's depth (``spend="width"``), or left at MDLM's depth
and width with fewer parameters (``spend="none"``). ``small`` is MDLM-small (width 768, 12
heads, 12 blocks, conditioning size 128; ~170M parameters with GPT-2's vocabulary); ``medium``
is width 1024, 16 heads, 24 blocks.
``tiny`` (width 256, 4 heads, 4 blocks) is for CPU runs of a few minutes with a small vocabulary.

:class:`NetworkConfig` is the user-facing choice a training package nests: a preset and its
overrides (depth, dropout, attention backend, time conditioning) plus the runtime settings
(activation checkpointing, ``torch.compile``); ``build(shape, device)`` makes the model.

``python -m tdlm_nn`` prints the presets' parameter breakdowns for a vocabulary.
"""

import argparse
import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import ATTENTION_BACKENDS, resolve_attention
from .model import DiTConfig, TreeDiT
from .params import SPENDS, breakdown_table, match_budget
from .recompute import RECOMPUTE_MODES
from .shape import TreeShape

__all__ = ["PRESETS", "NetworkConfig", "medium", "preset", "small", "tiny"]


def _on(
    shape: TreeShape, spend: str, *, width: int, n_heads: int, n_blocks: int
) -> DiTConfig:
    reference = DiTConfig(
        shape=TreeShape.flat(shape.vocab_size), width=width, n_heads=n_heads, n_blocks=n_blocks
    )
    return reference if shape.is_flat else match_budget(reference, shape, spend=spend)


def tiny(shape: TreeShape, spend: str = "depth") -> DiTConfig:
    """Width 256, 4 heads, 4 blocks on the flat tree (CPU: trains in minutes)."""
    return _on(shape, spend, width=256, n_heads=4, n_blocks=4)


def small(shape: TreeShape, spend: str = "depth") -> DiTConfig:
    """MDLM-small: width 768, 12 heads, 12 blocks on the flat tree."""
    return _on(shape, spend, width=768, n_heads=12, n_blocks=12)


def medium(shape: TreeShape, spend: str = "depth") -> DiTConfig:
    """Width 1024, 16 heads, 24 blocks on the flat tree."""
    return _on(shape, spend, width=1024, n_heads=16, n_blocks=24)


PRESETS: dict[str, Callable[..., DiTConfig]] = {
    "tiny": tiny,
    "small": small,
    "medium": medium,
}


def preset(name: str, shape: TreeShape, spend: str = "depth") -> DiTConfig:
    """The preset called ``name`` for a tree of this shape; on a tree, the flat reference's
    parameter budget spent on ``spend`` (:func:`match_budget`: depth, width, shallow or none)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name](shape, spend)


_BLOCK_LIST = re.compile(r"\s*-?\d+\s*(,\s*-?\d+\s*)*")


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """A preset and its overrides: the model a user picks, without knowing the tree's shape.

    ``dit_config(shape)`` resolves it to the :class:`DiTConfig` for a tree; ``build(shape,
    device)`` also applies the runtime settings that are not part of ``DiTConfig`` (activation
    checkpointing, ``torch.compile``). The trailing comment on each field is its help line.
    """

    preset: str = "tiny"  # tdlm-nn preset: tiny | small | medium (TDLM grown to MDLM's budget)
    spend: str = "depth"  # a tree's saved head buys: depth | width | shallow | none
    n_blocks: int = 0  # override the preset's depth (0: keep it)
    dropout: float = 0.1  # dropout in attention and MLP
    attention: str = "auto"  # auto | xformers | sdpa | math
    time_conditioning: bool = False  # condition on (level, s) instead of the level only
    compile: bool = False  # torch.compile the backbone
    checkpoint_blocks: str = ""  # recompute these blocks in backward: all | 0,2,-1 | "" (none)
    recompute: str = "full"  # checkpointed blocks keep: full (input only) | selective (+ matmuls)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.spend not in SPENDS:
            raise ValueError(f"spend must be one of {SPENDS}, got {self.spend!r}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention must be one of {ATTENTION_BACKENDS}, got {self.attention!r}"
            )
        if not (math.isfinite(self.dropout) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.n_blocks < 0:
            raise ValueError(
                f"n_blocks must be 0 (the preset's depth) or more, got {self.n_blocks}"
            )
        self.blocks_to_checkpoint()  # a malformed list fails here, not mid-run
        if self.recompute not in RECOMPUTE_MODES:
            raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, got {self.recompute!r}")

    def blocks_to_checkpoint(self) -> tuple[int, ...] | str:
        """``checkpoint_blocks`` as :meth:`TreeDiT.checkpoint_blocks` takes it."""
        text = self.checkpoint_blocks.strip()
        if text in ("", "none", "all"):
            return text or "none"
        if not _BLOCK_LIST.fullmatch(text):
            raise ValueError(
                "checkpoint_blocks takes all, none or block indices like 0,2,-1; "
                f"got {self.checkpoint_blocks!r}"
            )
        return tuple(int(part) for part in text.split(","))

    def dit_config(self, shape: TreeShape, *, causal: bool = False) -> DiTConfig:
        """The preset on a tree of this shape, with the overrides applied (``causal``: the
        autoregressive model, on the flat tree)."""
        config = dataclasses.replace(
            preset(self.preset, shape, self.spend),
            dropout=self.dropout,
            attention=self.attention,
            time_conditioning=self.time_conditioning,
            causal=causal,
        )
        return dataclasses.replace(config, n_blocks=self.n_blocks) if self.n_blocks else config

    def build(
        self,
        shape: TreeShape,
        device: torch.device | str | None = None,
        *,
        causal: bool = False,
    ) -> TreeDiT:
        """The model on ``device``, checkpointed and compiled as configured.

        With a device, the attention backend is resolved first, so one that cannot run there
        (``xformers`` on the CPU) raises before anything is built. A block index out of range
        for the model's depth raises ``ValueError``.
        """
        if device is not None:
            resolve_attention(self.attention, torch.device(device))
        model = self.dit_config(shape, causal=causal).build().to(device)
        model.checkpoint_blocks(self.blocks_to_checkpoint(), self.recompute)
        if self.compile:
            model.backbone.compile()
        return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=50_258, help="vocabulary size N")
    parser.add_argument("--branching", type=int, default=64, help="TDLM tree branching K")
    args = parser.parse_args(argv)
    flat = TreeShape.flat(args.vocab)
    tree = TreeShape.balanced(args.vocab, args.branching)
    rows = [
        (f"{name} {kind}", PRESETS[name](shape))
        for name in PRESETS
        for kind, shape in (("MDLM", flat), (f"TDLM (K={args.branching})", tree))
    ]
    print(breakdown_table(rows))


if __name__ == "__main__":
    main()
