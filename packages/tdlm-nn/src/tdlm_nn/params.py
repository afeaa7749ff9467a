"""Parameter accounting and budget matching (docs/method.md §7).

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

__all__ = ["SPENDS", "ParamBreakdown", "breakdown_table", "match_budget", "param_breakdown"]


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


SPENDS = ("depth", "width", "shallow", "none")


def match_budget(
    reference: DiTConfig,
    shape: TreeShape,
    *,
    budget: int | None = None,
    fill: bool = True,
    mlp_step: int = 64,
    spend: str = "depth",
) -> DiTConfig:
    """The reference's network on ``shape``, grown to the reference's parameter count.

    What a small head saves is spent on ``spend``: ``depth`` (the paper's rule and the default:
    the deepest model within budget, everything but the tree and the depth the reference's),
    ``width`` (the reference's depth, the widest model within budget in steps of ``2 * n_heads``
    so heads stay even-sized; activations grow with ``L · D · blocks`` but parameters with
    ``D² · blocks``, so the same parameters hold fewer activations), ``shallow`` (wider and
    shallower: the deepest model whose widest width within budget keeps ``D · blocks`` at most
    the reference's, so its block activations are the reference's while its parameters are the
    budget) or ``none`` (the reference's depth and width on the tree: fewer parameters, the
    "TDLM at MDLM's depth" of the benches).
    With ``fill`` (ours), the remainder (less than one block, or one width step) widens every
    block's MLP in steps of ``mlp_step`` units while the total stays within budget, so the match
    is tight. ``budget`` overrides the reference's total.
    """
    if spend not in SPENDS:
        raise ValueError(f"spend must be one of {SPENDS}, got {spend!r}")
    budget = param_breakdown(reference).total if budget is None else budget
    base = dataclasses.replace(reference, shape=shape)
    if spend == "none":
        return base

    def with_depth(n_blocks: int) -> int:
        return param_breakdown(dataclasses.replace(base, n_blocks=n_blocks)).total

    if spend == "depth":
        grown = dataclasses.replace(base, n_blocks=_largest_within(with_depth, 1, 1, budget))
    elif spend == "width":
        grown = _widest_within(base, budget)
    else:
        grown = _shallowest_widening(base, budget)
    if not fill:
        return grown

    def with_mlp(hidden: int) -> int:
        return param_breakdown(dataclasses.replace(grown, mlp_hidden=hidden)).total

    hidden = _largest_within(with_mlp, grown.hidden_size, mlp_step, budget)
    return dataclasses.replace(grown, mlp_hidden=hidden)


def _widest_within(base: DiTConfig, budget: int) -> DiTConfig:
    """The widest ``base`` (its MLP ``4 x`` the width) within ``budget``, in steps of
    ``2 * n_heads``. Parameters grow quadratically with the width: a bisection, not two points."""
    step = 2 * base.n_heads

    def at(width: int) -> DiTConfig:
        return dataclasses.replace(base, width=width, mlp_hidden=None)

    low, high = base.width // step, base.width // step  # in units of step; base fits or fails
    if param_breakdown(at(low * step)).total > budget:
        raise ValueError(f"even width {low * step} is over the budget {budget:,}")
    while param_breakdown(at(high * step)).total <= budget:
        high *= 2
    while high - low > 1:  # invariant: low fits, high does not
        middle = (low + high) // 2
        if param_breakdown(at(middle * step)).total <= budget:
            low = middle
        else:
            high = middle
    return at(low * step)


def _shallowest_widening(base: DiTConfig, budget: int) -> DiTConfig:
    """The deepest ``base`` whose widest width within ``budget`` keeps ``width · n_blocks`` at
    most ``base``'s (``spend="shallow"``), from ``base``'s depth down."""
    activations = base.width * base.n_blocks
    for n_blocks in range(base.n_blocks, 0, -1):
        widened = _widest_within(dataclasses.replace(base, n_blocks=n_blocks), budget)
        if widened.width * n_blocks <= activations:
            return widened
    raise ValueError(f"no depth keeps width x blocks <= {activations} within {budget:,}")


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
