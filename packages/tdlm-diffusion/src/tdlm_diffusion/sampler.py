"""Ancestral sampling, level by level from the root down (docs/method.md §6).

Within level h, on the grid ``1 = s_0 > s_1 > ... > s_m = 0``, each position still at level
h+1 moves to a child drawn from ``p_θ`` with probability
``(α(s_{j+1}) - α(s_j)) / (1 - α(s_j))`` (the exact reverse of the in-level masking process, as in
MDLM's sampler); at ``s = 0`` every remaining position moves. Positions already at level h are
carried over (SUBS). On the flat tree this is MDLM's ancestral sampler (invariant I6).

A step in which no position moved leaves the network's input unchanged, so when the network does
not see ``s`` its previous output is reused exactly; :class:`SampleResult` reports how many
network calls were made. The total step budget is split across levels uniformly or in proportion
to ``Δ_h``. Temperature and top-p reshape each node's child distribution.

Every draw is made in the sampler's ``precision``: the child distributions, their CDFs and the
uniforms. The default is float64, as the field now samples: Zheng et al. 2024 (arXiv:2409.02908)
showed that float32 categorical sampling truncates the low-probability tail, lowering the
samples' entropy and with it their generative perplexity. Here a child is drawn by inverting its
CDF with one uniform, so in float32 every child's chance is a whole number of 2^-24 steps (the
uniform's levels): children far below that are dropped or rounded up to it, and a CDF summed in
float32 can lose a tail that follows a large mass. Float64 resolves 2^-53.

Given a :class:`Context` (docs/method.md §8) the known positions start at their tokens (leaf ids)
and never move: they are never at level h+1, so no step chooses them, and the state — the
trajectory too — holds them bit-identical at every step. The network sees them as the context's
mode says (:meth:`Context.show`); the state within a level still changes only when a position
moves, so the output reuse stays exact.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from .conditioning import Context, check_context
from .process import TreeProcess
from .protocol import Denoiser, TimeConditionedDenoiser
from .schedules import DiffusionSchedule
from .validation import DiffusionInputError, check_logits

__all__ = [
    "SampleResult",
    "SamplerConfig",
    "ancestral_sample",
    "ancestral_sample_step",
    "child_distribution",
    "step_grid",
    "steps_per_level",
]


Precision = Literal["float64", "float32"]
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _check_draws(temperature: float, top_p: float, precision: str) -> None:
    if precision not in _DTYPES:
        raise DiffusionInputError(f"unknown sampling precision {precision!r} (float64, float32)")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise DiffusionInputError(
            f"temperature must be finite and >= 0 (0: greedy), got {temperature}"
        )
    if not 0 < top_p <= 1:
        raise DiffusionInputError(f"top_p must lie in (0, 1], got {top_p}")


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    """How to sample: the total step budget and its split, child-distribution reshaping, the
    draws' precision, caching.

    ``steps`` counts grid steps over all levels (at least one per level). ``step_allocation`` is
    ``uniform`` (equal per level) or ``time`` (in proportion to ``Δ_h``). ``precision`` is the
    dtype of every draw (module docstring; float32 only to compare with samplers that used it).
    ``cache`` reuses the network output after a step that changed nothing (ignored when the
    process passes ``s``; exact for a deterministic network, e.g. one in eval mode).
    ``keep_trajectory`` returns the nodes after every step (memory: ``(steps + 1) · b · l`` ids).
    """

    steps: int = 64  # grid steps over all levels (at least one per level)
    step_allocation: Literal["uniform", "time"] = "uniform"  # steps per level: equal or ∝ Δ_h
    temperature: float = 1.0  # divides the child logits (0: greedy)
    top_p: float = 1.0  # keep the most probable children up to this mass (1: all)
    precision: Precision = "float64"  # dtype of child distributions, CDFs and uniforms
    cache: bool = True  # reuse the network output after a step that changed nothing
    keep_trajectory: bool = False  # also return the nodes after every step

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise DiffusionInputError(f"the sampler needs at least one step, got {self.steps}")
        if self.step_allocation not in ("uniform", "time"):
            raise DiffusionInputError(
                f"unknown step allocation {self.step_allocation!r} (uniform, time)"
            )
        _check_draws(self.temperature, self.top_p, self.precision)


@dataclass(frozen=True)
class SampleResult:
    """Sampled token ids, the number of denoiser calls, the step split, and the trajectory.

    ``trajectory[j]`` holds the global node ids after step j (``trajectory[0]`` is all root),
    when asked for: generation resolving from coarse to fine. Under a context, known positions
    hold their tokens at every step (what the network saw there is :meth:`Context.show`).
    """

    tokens: Int[Tensor, "b l"]
    network_calls: int
    steps_per_level: tuple[int, ...]
    trajectory: Int[Tensor, "n b l"] | None


def steps_per_level(
    schedule: DiffusionSchedule, steps: int, allocation: Literal["uniform", "time"] = "uniform"
) -> tuple[int, ...]:
    """Split ``steps`` over the levels (``h = 0`` first), at least one each, summing to ``steps``.

    Shares are ``steps / H`` (``uniform``) or ``steps · Δ_h`` (``time``), rounded by largest
    remainder; ties favour the levels nearer the leaves.
    """
    depth = schedule.depth
    if steps < depth:
        raise DiffusionInputError(
            f"{steps} steps cannot cover {depth} levels (one step each at least)"
        )
    weights = [1.0 / depth] * depth if allocation == "uniform" else list(schedule.deltas)
    spare = steps - depth  # every level gets one step, the rest is shared out
    shares = [spare * w for w in weights]
    counts = [math.floor(share) for share in shares]
    by_remainder = sorted(range(depth), key=lambda h: (-(shares[h] - counts[h]), h))
    for h in by_remainder[: spare - sum(counts)]:
        counts[h] += 1
    return tuple(c + 1 for c in counts)


def step_grid(steps: int) -> Float[Tensor, " m"]:
    """The in-level grid ``1 = s_0 > ... > s_steps = 0``, evenly spaced (float64)."""
    if steps < 1:
        raise DiffusionInputError(f"a level needs at least one step, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def child_distribution(
    process: TreeProcess,
    logits: Float[Tensor, "m k"],
    nodes: Int[Tensor, " m"],
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    precision: Precision = "float64",
) -> Float[Tensor, "m k"]:
    """``p_θ(child | node)`` over slots in ``precision`` (the logits, whatever their dtype, are
    converted first): invalid slots get 0, then temperature, then top-p.

    Top-p keeps the most probable children until their mass reaches ``top_p`` (always at least
    one) and renormalises. ``temperature = 0`` is the limit T -> 0: all mass on the most probable
    valid child (greedy decoding of each child choice; which positions move at a step stays
    random, as the schedule says).
    """
    _check_draws(temperature, top_p, precision)
    logits = logits.to(_DTYPES[precision]).masked_fill(~process.valid_slots(nodes), float("-inf"))
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def _categorical(
    probs: Float[Tensor, "m k"], generator: torch.Generator | None
) -> Int[Tensor, " m"]:
    """One draw per row by inverting the CDF with one uniform in the probs' dtype
    (torch.multinomial and the exponential race are several times slower on many short rows)."""
    u = torch.rand(len(probs), 1, generator=generator, device=probs.device, dtype=probs.dtype)
    return _inverse_cdf(probs, u).squeeze(-1)


def _inverse_cdf(probs: Float[Tensor, "m k"], u: Float[Tensor, "m j"]) -> Int[Tensor, "m j"]:
    """Each row's slot at each of its uniforms ``u`` in [0, 1): the first slot whose CDF exceeds
    ``u`` times the row's total, in the probs' dtype."""
    cdf = probs.cumsum(dim=-1)
    slots = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    # u can round up to the total; the limit u -> total picks the last slot of positive mass.
    last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(dim=-1, keepdim=True)
    return torch.minimum(slots, last)


def _move_probability(schedule: DiffusionSchedule, s_from: float, s_to: float) -> float:
    masked = schedule.in_level.one_minus_alpha(torch.tensor([s_from, s_to], dtype=torch.float64))
    return float((masked[0] - masked[1]) / masked[0])


def _step(
    process: TreeProcess,
    logits: Tensor,
    z: Tensor,
    level: int,
    move_probability: float,
    temperature: float,
    top_p: float,
    precision: Precision,
    generator: torch.Generator | None,
) -> tuple[Tensor, bool]:
    """One grid step; also says whether any position moved (the cache's condition)."""
    at_parent = z >= process.offsets[level + 1]
    u = torch.rand(z.shape, generator=generator, device=z.device, dtype=_DTYPES[precision])
    moving = (at_parent & (u < move_probability)).reshape(-1).nonzero().squeeze(1)
    if moving.numel() == 0:
        return z, False
    parents = z.reshape(-1)[moving]
    rows = logits.reshape(-1, logits.shape[-1])[moving]
    probs = child_distribution(
        process, rows, parents, temperature=temperature, top_p=top_p, precision=precision
    )
    slots = _categorical(probs, generator)
    z = z.clone(memory_format=torch.contiguous_format)
    z.view(-1)[moving] = process.children_table[parents - process.vocab_size, slots]
    return z, True


def ancestral_sample_step(
    process: TreeProcess,
    logits: Float[Tensor, "b l k"],
    z: Int[Tensor, "b l"],
    level: int,
    s_from: float,
    s_to: float,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    precision: Precision = "float64",
    generator: torch.Generator | None = None,
    context: Context | None = None,
) -> Int[Tensor, "b l"]:
    """Move ``z`` (every position at level ``level`` or ``level + 1``) from ``s_from`` to ``s_to``.

    ``logits`` are the denoiser's output on ``z``. Each position at level ``level + 1`` moves to a
    child drawn from :func:`child_distribution` with probability
    ``(α(s_to) - α(s_from)) / (1 - α(s_from))``, every draw in ``precision``. Under a
    ``context`` the known positions of ``z`` hold the context's tokens and stay; ``logits`` are
    then the denoiser's output on ``context.show(process, z, level)``.
    """
    if not 0 <= level < process.depth:
        raise DiffusionInputError(f"level {level} outside 0..{process.depth - 1}")
    if not 0 <= s_to < s_from <= 1:
        raise DiffusionInputError(
            f"a step goes from s_from to a smaller s_to in [0, 1], got {s_from} -> {s_to}"
        )
    check_logits(logits, z.shape[0], z.shape[1], process.width)
    _check_draws(temperature, top_p, precision)
    offsets = process.tree.level_offsets
    outside = (z < offsets[level]) | (z >= offsets[level + 2])
    if context is not None:
        check_context(context, process, z.shape[0], z.shape[1], z.device)
        if bool(((z != context.tokens) & context.known).any()):
            raise DiffusionInputError("z must hold the context's tokens at its known positions")
        outside &= ~context.known
    if bool(outside.any()):
        raise DiffusionInputError(
            f"every node of z must be at level {level} or {level + 1}"
            + ("" if context is None else " (known positions aside)")
        )
    probability = _move_probability(process.schedule, s_from, s_to)
    z, _ = _step(process, logits, z, level, probability, temperature, top_p, precision, generator)
    return z


def ancestral_sample(
    process: TreeProcess,
    denoiser: Denoiser | TimeConditionedDenoiser,
    *,
    batch_size: int,
    length: int,
    config: SamplerConfig,
    generator: torch.Generator | None = None,
    context: Context | None = None,
) -> SampleResult:
    """Sample ``batch_size`` sequences of ``length`` tokens from the root down (docs/method.md §6).

    Runs on the process's device; ``generator`` (on that device) makes it reproducible. With a
    ``context`` (``[batch_size, length]``) the known positions are the context's tokens from the
    first step to the last, and only the unknown ones are sampled (module docstring); without
    one, or with one where nothing is known, the draws are exactly the unconditional ones.
    """
    if batch_size < 1 or length < 1:
        raise DiffusionInputError(
            f"batch_size and length must be positive, got {batch_size} and {length}"
        )
    device = process.offsets.device
    budget = steps_per_level(process.schedule, config.steps, config.step_allocation)
    reuse = config.cache and not process.pass_time
    z = torch.full((batch_size, length), process.root, dtype=torch.long, device=device)
    if context is not None:
        check_context(context, process, batch_size, length, device)
        z = torch.where(context.known, context.tokens.long(), z)
    trajectory = [z] if config.keep_trajectory else None
    calls = 0
    with torch.no_grad():
        for h in reversed(range(process.depth)):
            level = torch.full((batch_size,), h, dtype=torch.long, device=device)
            grid = step_grid(budget[h]).tolist()
            logits, moved = None, True
            for s_from, s_to in zip(grid[:-1], grid[1:], strict=True):
                if logits is None or moved or not reuse:
                    s = torch.full((batch_size,), s_from, device=device)
                    nodes = z if context is None else context.show(process, z, level)
                    logits = process.child_logits(denoiser, nodes, level, s)
                    calls += 1
                probability = _move_probability(process.schedule, s_from, s_to)
                z, moved = _step(
                    process,
                    logits,
                    z,
                    h,
                    probability,
                    config.temperature,
                    config.top_p,
                    config.precision,
                    generator,
                )
                if trajectory is not None:
                    trajectory.append(z)
    return SampleResult(
        tokens=z,
        network_calls=calls,
        steps_per_level=budget,
        trajectory=None if trajectory is None else torch.stack(trajectory),
    )
