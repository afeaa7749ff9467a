"""Evaluation: the NELBO stratified by level, and the numbers it is reported in (docs/method.md §4).

``NELBO(x) = Σ_h L_h(x)`` (the paper's Corollary 3.5). Instead of drawing ``t ~ U[0, 1]`` as in
training, evaluation estimates every ``L_h`` separately with ``n`` in-level times per level
(stratification removes the variance of which level a sample lands in, and gives the paper's
per-height split). The ``n · b`` in-level times of a level form one low-discrepancy grid
``s = (u + j / (n b)) mod 1``. Each ``L_h`` is estimated in the count form of :mod:`.elbo`
(exactly ``k = ⌊s L⌋ + 1`` positions masked, weight ``L / k``: unbiased with bounded variance) or,
for denoisers that see ``s``, in the time form (``z ~ q^h_s``, weight ``-α'(s) / (1 - α(s))``:
unbiased, with the heavy tail of its ``1 / s`` weight). Reported: nats per token, perplexity
``exp(NELBO / token)`` and bits per byte (comparable across tokenizers).

Given a :class:`Context` (docs/method.md §8) the same estimate bounds ``-log p_θ(x_U | x_K)``: known
positions are shown as the context's mode says and never noised or scored, the count form masks
``k ~ U{1..L_u}`` of the ``L_u`` unknown positions with weight ``L_u / k`` (``L_u`` may differ
per sequence), and the tokens counted are the unknown ones.
"""

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .conditioning import Context, check_scored
from .elbo import count_nelbo, in_level_nelbo, low_discrepancy_times, masked_count
from .estimators import check_estimator
from .process import TreeProcess
from .protocol import Denoiser, TimeConditionedDenoiser
from .validation import DiffusionInputError, check_tokens

__all__ = ["NelboEstimate", "bits_per_byte", "evaluate_nelbo", "perplexity"]


@dataclass(frozen=True)
class NelboEstimate:
    """Per-sequence, per-level NELBO estimates of one batch, in nats.

    ``level_nelbo[i, h]`` estimates ``L_h(x_i)``; ``tokens_per_sequence[i]`` is the number of
    tokens scored in sequence i (``l``, or ``L_u`` under a context). To report a dataset, sum
    ``total_nats`` and ``num_tokens`` over batches, then use :func:`perplexity` and
    :func:`bits_per_byte`.
    """

    level_nelbo: Float[Tensor, "b h"]
    tokens_per_sequence: Int[Tensor, " b"]

    @property
    def nelbo(self) -> Float[Tensor, " b"]:
        """``NELBO(x_i) = Σ_h L_h(x_i)`` per sequence."""
        return self.level_nelbo.sum(dim=-1)

    @property
    def num_tokens(self) -> int:
        """The tokens scored: ``b · l``, or ``Σ L_u`` under a context."""
        return int(self.tokens_per_sequence.sum())

    @property
    def total_nats(self) -> float:
        """The batch's NELBO summed over sequences and levels."""
        return float(self.level_nelbo.sum())

    @property
    def per_token(self) -> float:
        """NELBO in nats per token."""
        return self.total_nats / self.num_tokens

    @property
    def level_per_token(self) -> list[float]:
        """``L_h`` in nats per token, level ``h = 0`` (the leaves' choice) first."""
        return (self.level_nelbo.sum(dim=0) / self.num_tokens).tolist()


@torch.no_grad()
def evaluate_nelbo(
    process: TreeProcess,
    denoiser: Denoiser | TimeConditionedDenoiser,
    x: Int[Tensor, "b l"],
    *,
    samples_per_level: int = 1,
    estimator: str | None = None,
    generator: torch.Generator | None = None,
    context: Context | None = None,
) -> NelboEstimate:
    """Estimate every level's ``L_h(x)`` with ``samples_per_level`` noise draws each.

    ``estimator``: ``count`` (the default for denoisers that ignore ``s``) or ``continuous``
    (the default, and the only choice, for time-conditioned ones); both are unbiased for the
    same NELBO. Costs ``H · samples_per_level`` denoiser calls on the batch. With a ``context``
    whose known tokens ``x`` holds, the conditional NELBO of the unknown positions (module
    docstring); a context with nothing known gives exactly the unconditional estimate.
    """
    check_tokens(x, process.vocab_size)
    if context is not None:
        check_scored(context, process, x)
    if samples_per_level < 1:
        raise DiffusionInputError(f"samples_per_level must be at least 1, got {samples_per_level}")
    if estimator is None:
        estimator = "continuous" if process.pass_time else "count"
    if estimator not in ("count", "continuous"):
        raise DiffusionInputError(
            f"evaluation estimates the NELBO with 'count' or 'continuous', not {estimator!r}"
        )
    check_estimator(estimator, 0.5, process.pass_time)
    batch, length = x.shape
    n = samples_per_level
    known = None if context is None else context.known
    # The positions that can be masked and are scored: L, or L_u per sequence.
    positions = length if context is None else context.unknown_count
    columns = []
    for h in range(process.depth):
        level = torch.full((batch,), h, dtype=torch.long, device=x.device)
        grid = low_discrepancy_times(n * batch, generator=generator, device=x.device)
        total = torch.zeros(batch, dtype=torch.float64, device=x.device)
        for s in grid.view(n, batch):
            if estimator == "count":
                count = masked_count(s, positions)
                z = process.mask_count(x, level, count, generator, known=known)
            else:
                z = process.sample_in_level(x, level, s, generator)
            if context is not None:
                z = context.show(process, z, level)
            logits = process.child_logits(denoiser, z, level, s)
            if estimator == "count":
                total += count_nelbo(process, logits, x, z, level, count, known=known).double()
            else:
                total += in_level_nelbo(process, logits, x, z, level, s).double()
        columns.append(total / n)
    scored = torch.full((batch,), length, device=x.device) if context is None else positions
    return NelboEstimate(level_nelbo=torch.stack(columns, dim=-1), tokens_per_sequence=scored)


def perplexity(total_nats: float, num_tokens: int) -> float:
    """``exp(NELBO per token)``: an upper bound on the model's perplexity."""
    if num_tokens < 1:
        raise DiffusionInputError(f"perplexity needs at least one token, got {num_tokens}")
    return math.exp(total_nats / num_tokens)


def bits_per_byte(total_nats: float, num_bytes: int) -> float:
    """The NELBO in bits per UTF-8 byte of the evaluated text: ``nats / (ln 2 · bytes)``."""
    if num_bytes < 1:
        raise DiffusionInputError(f"bits per byte needs at least one byte, got {num_bytes}")
    return total_nats / (math.log(2) * num_bytes)
