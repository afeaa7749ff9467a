"""Noise schedules: the in-level schedule α(s), the level time allocation Δ_h, and the ELBO weight.

Implements docs/method.md §3 (time split ``0 = τ_0 < ... < τ_H = 1``, in-level time
``s = (t - τ_h) / Δ_h``, decreasing ``α(s)`` with ``α(0) = 1``, ``α(1) = 0``) and the Monte-Carlo
weight of §4, ``w(t) = -α'(s) / (Δ_h (1 - α(s)))``. The ``1 / Δ_h`` is the density of the level
given ``t ~ U[0, 1]``; without it the estimate is off by the number of levels.

The in-level schedules are ``linear`` (MDLM's log-linear ``α(s) = 1 - s``, the default),
``cosine`` and ``polynomial``. The allocations are ``uniform``, ``linear``, ``exponential`` (the
paper's families; their exact form here is ours), an explicit list, and ``entropy``-proportional
(ours).
"""

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tdlm_tree import VocabTree, conditional_entropies

__all__ = [
    "CosineSchedule",
    "DiffusionSchedule",
    "InLevelSchedule",
    "LinearSchedule",
    "PolynomialSchedule",
    "ScheduleConfig",
    "entropy_allocation",
    "exponential_allocation",
    "linear_allocation",
    "uniform_allocation",
]


class InLevelSchedule(ABC):
    """``α(s)`` on ``s ∈ [0, 1]``: decreasing, ``α(0) = 1``, ``α(1) = 0``; and its derivative.

    ``one_minus_alpha`` is the masking probability ``1 - α(s)``; each schedule computes it in a
    form that keeps full relative precision near ``s = 0``, where the ELBO weight divides by it.
    """

    @abstractmethod
    def alpha(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """``α(s)``, the probability that a position has not yet moved up within its level."""

    @abstractmethod
    def one_minus_alpha(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """``1 - α(s)``, the probability that a position sits at its parent ("masked")."""

    @abstractmethod
    def alpha_prime(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """``α'(s) = dα/ds`` (non-positive)."""


@dataclass(frozen=True)
class LinearSchedule(InLevelSchedule):
    """``α(s) = 1 - s``: MDLM's log-linear schedule; the ELBO weight is ``1 / (Δ_h s)``."""

    def alpha(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return 1 - s

    def one_minus_alpha(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return s.clone()

    def alpha_prime(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return torch.full_like(s, -1.0)


@dataclass(frozen=True)
class CosineSchedule(InLevelSchedule):
    """``α(s) = cos(π s / 2)``, written ``sin(π (1 - s) / 2)`` so that ``α(1) = 0`` exactly."""

    def alpha(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return torch.sin(math.pi / 2 * (1 - s))

    def one_minus_alpha(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        # 1 - cos(x) = 2 sin²(x / 2) avoids cancellation for small s; for large s the plain
        # difference is accurate and exact at s = 1, where 2 sin²(π/4) rounds to 1 - 2e-16.
        return torch.where(s < 0.5, 2 * torch.sin(math.pi / 4 * s) ** 2, 1 - self.alpha(s))

    def alpha_prime(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return -math.pi / 2 * torch.cos(math.pi / 2 * (1 - s))


@dataclass(frozen=True)
class PolynomialSchedule(InLevelSchedule):
    """``α(s) = 1 - s^p`` (``p = 1`` is linear); the ELBO weight is ``p / (Δ_h s)``."""

    power: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.power) and self.power > 0):
            raise ValueError(f"polynomial schedule power must be positive, got {self.power}")

    def alpha(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return 1 - s**self.power

    def one_minus_alpha(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return s**self.power

    def alpha_prime(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        return -self.power * s ** (self.power - 1)


# --- level time allocations: proportions Δ_0..Δ_{H-1}, summing to 1 --------------------------
def _normalised(weights: Sequence[float] | np.ndarray, what: str) -> tuple[float, ...]:
    array = np.asarray(weights, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty list of per-level values, got {weights!r}")
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise ValueError(f"{what} must all be positive and finite (every level needs time), got "
                         f"{array.tolist()}")
    return tuple(float(v) for v in array / array.sum())


def uniform_allocation(depth: int) -> tuple[float, ...]:
    """``Δ_h = 1 / H``."""
    return _normalised([1.0] * depth, "uniform allocation")


def linear_allocation(depth: int) -> tuple[float, ...]:
    """``Δ_h ∝ H - h`` (ours): time decreases linearly from the leaf level to the root's."""
    return _normalised([float(depth - h) for h in range(depth)], "linear allocation")


def exponential_allocation(depth: int, gamma: float) -> tuple[float, ...]:
    """``Δ_h ∝ γ^h`` (ours): ``γ < 1`` gives levels near the leaves more time, ``γ > 1`` less."""
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"exponential allocation needs gamma > 0, got {gamma}")
    return _normalised([gamma**h for h in range(depth)], "exponential allocation")


def entropy_allocation(entropies: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """``Δ_h ∝ H(A_h | A_{h+1})`` (ours): each level's time follows the information it decides.

    ``entropies`` come from ``tdlm_tree.conditional_entropies(tree, counts)``.
    """
    return _normalised(entropies, "per-level entropies")


class DiffusionSchedule(nn.Module):
    """``α(s)`` with a level time allocation: the map ``t -> (h, s)`` and the ELBO weights.

    ``proportions`` are the ``Δ_h`` (normalised to sum to 1). The boundaries ``τ_h`` live in a
    float64 buffer, so the schedule moves with ``.to(device)``; times keep their own dtype.
    """

    taus: Tensor

    def __init__(
        self, in_level: InLevelSchedule, proportions: Sequence[float] | np.ndarray
    ) -> None:
        super().__init__()
        deltas = _normalised(proportions, "level time proportions")
        self.in_level = in_level
        taus = torch.tensor([0.0, *np.cumsum(deltas)], dtype=torch.float64)
        taus[-1] = 1.0  # exact, so that t = 1 is the end of the top level despite rounding
        self.register_buffer("taus", taus, persistent=False)

    @property
    def depth(self) -> int:
        """H, the number of levels the time axis is split into."""
        return len(self.taus) - 1

    @property
    def deltas(self) -> tuple[float, ...]:
        """``(Δ_0, ..., Δ_{H-1})``."""
        return tuple((self.taus[1:] - self.taus[:-1]).tolist())

    def level_of(
        self, t: Float[Tensor, "*shape"]
    ) -> tuple[Int[Tensor, "*shape"], Float[Tensor, "*shape"]]:
        """``(h, s)`` with ``τ_h ≤ t < τ_{h+1}`` (``t = 1`` is the top level at ``s = 1``).

        At ``t = τ_h`` this gives ``(h, 0)``: every position at its level-h ancestor.
        """
        taus = self.taus.to(t.dtype)
        level = torch.searchsorted(taus[1:-1].contiguous(), t.contiguous(), right=True)
        start, end = taus[level], taus[level + 1]
        s = ((t - start) / (end - start)).clamp(0, 1)
        return level, s

    def delta(self, level: Int[Tensor, "*shape"], dtype: torch.dtype) -> Float[Tensor, "*shape"]:
        """``Δ_h`` for each entry of ``level``, computed from the boundaries in ``dtype``."""
        taus = self.taus.to(dtype)
        return taus[level + 1] - taus[level]

    def in_level_weight(self, s: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """``-α'(s) / (1 - α(s))``, the weight of the in-level NELBO (docs/method.md §4, Thm 3.4).

        Where ``1 - α(s) = 0`` no position can be masked, so the term is exactly zero; the
        weight is set to 0 there rather than ``inf`` (which would turn ``0 · inf`` into NaN).
        """
        masked = self.in_level.one_minus_alpha(s)
        safe = torch.where(masked > 0, masked, torch.ones_like(masked))
        return torch.where(masked > 0, -self.in_level.alpha_prime(s) / safe, torch.zeros_like(s))

    def elbo_weight(self, t: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """Weight ``w(t) = -α'(s) / (Δ_h (1 - α(s)))`` for ``t ~ U[0, 1]`` (docs/method.md §4)."""
        level, s = self.level_of(t)
        return self.in_level_weight(s) / self.delta(level, t.dtype)

    def extra_repr(self) -> str:
        deltas = ", ".join(f"{d:.4g}" for d in self.deltas)
        return f"in_level={self.in_level!r}, deltas=({deltas})"


# Named so that ScheduleConfig's field, with its help comment, fits on one line.
Allocation = Literal["uniform", "linear", "exponential", "explicit", "entropy"]


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """A serialisable schedule description that builds a :class:`DiffusionSchedule` for a tree.

    ``power`` is read by the ``polynomial`` schedule, ``gamma`` by the ``exponential`` allocation,
    ``proportions`` by ``explicit``; ``entropy`` needs token ``counts`` at build time.
    """

    alpha: Literal["linear", "cosine", "polynomial"] = "linear"  # in-level schedule α(s)
    power: float = 2.0  # p of the polynomial schedule α(s) = 1 - s^p
    allocation: Allocation = "uniform"  # how time splits into the levels' spans Δ_h
    gamma: float = 0.5  # γ of the exponential allocation Δ_h ∝ γ^h
    proportions: tuple[float, ...] | None = None  # the explicit allocation's Δ_h, one per level

    def __post_init__(self) -> None:
        if self.alpha not in ("linear", "cosine", "polynomial"):
            raise ValueError(f"unknown in-level schedule {self.alpha!r} "
                             "(linear, cosine, polynomial)")
        if self.allocation not in ("uniform", "linear", "exponential", "explicit", "entropy"):
            raise ValueError(f"unknown level time allocation {self.allocation!r} "
                             "(uniform, linear, exponential, explicit, entropy)")
        if (self.allocation == "explicit") != (self.proportions is not None):
            raise ValueError("proportions are given exactly when allocation is 'explicit'")

    def build(self, tree: VocabTree, counts: Any = None) -> DiffusionSchedule:
        """The schedule for ``tree``; ``counts`` (``[N]`` token counts) only for ``entropy``."""
        in_level: InLevelSchedule
        if self.alpha == "polynomial":
            in_level = PolynomialSchedule(self.power)
        else:
            in_level = CosineSchedule() if self.alpha == "cosine" else LinearSchedule()
        depth = tree.depth
        if self.allocation == "entropy":
            if counts is None:
                raise ValueError("the entropy allocation needs token counts to build from")
            proportions = entropy_allocation(conditional_entropies(tree, counts))
        elif counts is not None:
            raise ValueError(f"token counts are only read by the entropy allocation, "
                             f"not {self.allocation!r}")
        elif self.allocation == "explicit":
            assert self.proportions is not None
            if len(self.proportions) != depth:
                raise ValueError(f"{len(self.proportions)} level time proportions for a tree of "
                                 f"depth {depth}")
            proportions = self.proportions
        elif self.allocation == "exponential":
            proportions = exponential_allocation(depth, self.gamma)
        elif self.allocation == "linear":
            proportions = linear_allocation(depth)
        else:
            proportions = uniform_allocation(depth)
        return DiffusionSchedule(in_level, proportions)
