"""Model presets: ``tiny``, ``small``, ``medium`` (METHOD.md §7).

Each preset is an MDLM-style reference architecture on the flat tree of the same vocabulary.
On the flat tree a preset *is* that reference (MDLM); on any other tree it is the reference
deepened to the same parameter budget (:func:`match_budget`), which is how the paper compares
TDLM with MDLM. ``small`` is MDLM-small (width 768, 12 heads, 12 blocks, conditioning size 128;
~170M parameters with GPT-2's vocabulary); ``medium`` is width 1024, 16 heads, 24 blocks.
``tiny`` (width 256, 4 heads, 4 blocks) is for CPU runs of a few minutes with a small vocabulary.

``python -m tdlm_nn`` prints the presets' parameter breakdowns for a vocabulary.
"""

import argparse
from collections.abc import Callable

from .model import DiTConfig
from .params import breakdown_table, match_budget
from .shape import TreeShape

__all__ = ["PRESETS", "medium", "preset", "small", "tiny"]


def _on(shape: TreeShape, *, width: int, n_heads: int, n_blocks: int) -> DiTConfig:
    reference = DiTConfig(
        shape=TreeShape.flat(shape.vocab_size), width=width, n_heads=n_heads, n_blocks=n_blocks
    )
    return reference if shape.is_flat else match_budget(reference, shape)


def tiny(shape: TreeShape) -> DiTConfig:
    """Width 256, 4 heads, 4 blocks on the flat tree (CPU: trains in minutes)."""
    return _on(shape, width=256, n_heads=4, n_blocks=4)


def small(shape: TreeShape) -> DiTConfig:
    """MDLM-small: width 768, 12 heads, 12 blocks on the flat tree."""
    return _on(shape, width=768, n_heads=12, n_blocks=12)


def medium(shape: TreeShape) -> DiTConfig:
    """Width 1024, 16 heads, 24 blocks on the flat tree."""
    return _on(shape, width=1024, n_heads=16, n_blocks=24)


PRESETS: dict[str, Callable[[TreeShape], DiTConfig]] = {
    "tiny": tiny,
    "small": small,
    "medium": medium,
}


def preset(name: str, shape: TreeShape) -> DiTConfig:
    """The preset called ``name`` for a tree of this shape."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name](shape)


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
