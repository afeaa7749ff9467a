"""Parameter accounting and budget matching (METHOD.md §7).

"Same parameter budget" means: count the MDLM model (input embedding + blocks + full-vocabulary
head), give TDLM the same input embedding plus its internal-node rows and a negligible head, and
as many blocks as fit. Counts come from building the model on PyTorch's ``meta`` device (no
memory, no data), so they are exactly what :meth:`DiTConfig.build` allocates.
"""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .model import DiTConfig
from .shape import TreeShape

__all__ = ["ParamBreakdown", "breakdown_table", "match_budget", "param_breakdown"]


@dataclass(frozen=True, kw_only=True)
class ParamBreakdown:
    """Parameter counts by part: input embedding, DiT blocks, output head, and the rest.

    ``other`` holds the conditioning (level table, optional time MLP) and the final adaLN
    LayerNorm; ``head`` is only the child-slot map (MDLM's output layer on the flat tree).
    """

    embedding: int
    blocks: int
    head: int
    other: int

    @property
    def total(self) -> int:
        return self.embedding + self.blocks + self.head + self.other

    @property
    def head_share(self) -> float:
        """The head's fraction of all parameters."""
        return self.head / self.total


def _part(name: str) -> str:
    if name.startswith("embed."):
        return "embedding"
    if name.startswith("backbone.blocks."):
        return "blocks"
    if name.startswith("head."):
        return "head"
    return "other"


def param_breakdown(model: nn.Module | DiTConfig) -> ParamBreakdown:
    """The breakdown of a built :class:`TreeDiT`, or of a config (built on the meta device)."""
    if isinstance(model, DiTConfig):
        with torch.device("meta"):
            model = model.build()
    counts = dict.fromkeys(("embedding", "blocks", "head", "other"), 0)
    for name, parameter in model.named_parameters():
        counts[_part(name)] += parameter.numel()
    return ParamBreakdown(**counts)


def _largest_within(count: Callable[[int], int], start: int, step: int, budget: int) -> int:
    """The largest ``x = start + j * step`` (j >= 0) with ``count(x) <= budget``.

    ``count`` is affine and increasing in ``x`` (parameters grow linearly with the number of
    blocks and with the MLP width), so two evaluations locate it.
    """
    first = count(start)
    if first > budget:
        raise ValueError(f"even {start} gives {first:,} parameters, over the budget {budget:,}")
    x = start + step * ((budget - first) // (count(start + step) - first))
    assert count(x) <= budget < count(x + step)
    return x


def match_budget(
    reference: DiTConfig,
    shape: TreeShape,
    *,
    budget: int | None = None,
    fill: bool = True,
    mlp_step: int = 64,
) -> DiTConfig:
    """The deepest model on ``shape`` whose total does not exceed the reference's parameters.

    Everything but the tree and the depth is the reference's. With ``fill`` (ours), the remainder
    (less than one block) widens every block's MLP in steps of ``mlp_step`` units while the total
    stays within budget, so the match is tight to a fraction of a block rather than up to a whole
    one. ``budget`` overrides the reference's total.
    """
    budget = param_breakdown(reference).total if budget is None else budget
    base = dataclasses.replace(reference, shape=shape)

    def with_depth(n_blocks: int) -> int:
        return param_breakdown(dataclasses.replace(base, n_blocks=n_blocks)).total

    deepest = dataclasses.replace(base, n_blocks=_largest_within(with_depth, 1, 1, budget))
    if not fill:
        return deepest

    def with_mlp(hidden: int) -> int:
        return param_breakdown(dataclasses.replace(deepest, mlp_hidden=hidden)).total

    hidden = _largest_within(with_mlp, deepest.hidden_size, mlp_step, budget)
    return dataclasses.replace(deepest, mlp_hidden=hidden)


def breakdown_table(models: Sequence[tuple[str, DiTConfig]]) -> str:
    """A Markdown table of named configs' shapes and parameter breakdowns."""
    lines = [
        "| model | tree (widths) | blocks | MLP | embedding | blocks | head | other | total "
        "| head share |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, config in models:
        b = param_breakdown(config)
        tree = "flat" if config.shape.is_flat else "x".join(map(str, config.shape.widths))
        lines.append(
            f"| {name} | N={config.shape.vocab_size:,} {tree} | {config.n_blocks} "
            f"| {config.hidden_size} | {b.embedding:,} | {b.blocks:,} | {b.head:,} | {b.other:,} "
            f"| {b.total:,} | {100 * b.head_share:.3f}% |"
        )
    return "\n".join(lines)
