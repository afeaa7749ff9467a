"""The tree forward (noising) process with synchronized levels (docs/method.md §3).

Per position, independently (the paper's Lemma 3.1), with ``(h, s)`` the level and in-level time
of ``t``::

    q_t(z | x) = α(s) · 1[z = a_h(x)] + (1 - α(s)) · 1[z = a_{h+1}(x)]

so noising is two table lookups and one Bernoulli draw per position. :class:`TreeProcess` holds
the tree's lookup tables as (non-persistent) buffers, so ``.to(device)`` moves them with the
schedule; it also calls the denoiser (docs/method.md §4's protocol, see :mod:`.protocol`) so that
the choice of time conditioning lives in one place for training, evaluation and sampling.
Node ids are global ids throughout (``tree.level_offsets[h] + local id``).
"""

from typing import Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from tdlm_tree import VocabTree

from .protocol import Denoiser, TimeConditionedDenoiser
from .schedules import DiffusionSchedule, LinearSchedule, uniform_allocation
from .validation import (
    DiffusionInputError,
    check_counts,
    check_levels,
    check_logits,
    check_same_shape,
    check_times,
    check_tokens,
)

__all__ = ["ForwardSample", "TreeProcess"]


class ForwardSample(NamedTuple):
    """A draw of :meth:`TreeProcess.forward_sample`: the state and the ``(h, s)`` of its ``t``,
    which is what a loss needs next (``process.child_logits(denoiser, z, level, s)``)."""

    z: Int[Tensor, "b l"]
    level: Int[Tensor, " b"]
    s: Float[Tensor, " b"]


def _long(values: Any) -> Tensor:
    # A copy: the tree's arrays are read-only and torch tensors must own writable memory.
    return torch.from_numpy(np.array(values, dtype=np.int64))


class TreeProcess(nn.Module):
    """The forward process of a :class:`~tdlm_tree.VocabTree` under a :class:`DiffusionSchedule`.

    ``schedule`` defaults to the linear in-level schedule with a uniform level time allocation.
    ``pass_time`` makes every denoiser call ``denoiser(nodes, level, s)`` instead of the default
    ``denoiser(nodes, level)`` (docs/method.md §4 explains why level-only is the default).
    """

    ancestors: Tensor
    paths: Tensor
    child_counts: Tensor
    children_table: Tensor
    offsets: Tensor

    def __init__(
        self,
        tree: VocabTree,
        schedule: DiffusionSchedule | None = None,
        *,
        pass_time: bool = False,
    ) -> None:
        super().__init__()
        if schedule is None:
            schedule = DiffusionSchedule(LinearSchedule(), uniform_allocation(tree.depth))
        if schedule.depth != tree.depth:
            raise DiffusionInputError(f"the schedule splits time into {schedule.depth} levels but "
                                      f"the tree has depth {tree.depth}")
        self.tree = tree
        self.schedule = schedule
        self.pass_time = pass_time
        offsets = tree.level_offsets
        depth, n_leaves = tree.depth, tree.vocab_size
        self.width = max(tree.branching)
        # Global ancestor ids a_h(x) for every token and level: [N, H+1].
        ancestors = _long(tree.ancestors) + _long(offsets[: depth + 1])
        counts = torch.zeros(tree.num_nodes, dtype=torch.long)
        children = torch.full((tree.num_nodes - n_leaves, self.width), -1, dtype=torch.long)
        for h in range(depth):
            level_nodes = slice(offsets[h + 1], offsets[h + 2])
            counts[level_nodes] = _long(tree.child_counts[h])
            table = _long(tree.children[h])
            rows = slice(offsets[h + 1] - n_leaves, offsets[h + 2] - n_leaves)
            children[rows, : table.shape[1]] = torch.where(table >= 0, table + offsets[h], -1)
        self.register_buffer("ancestors", ancestors, persistent=False)
        self.register_buffer("paths", _long(tree.paths), persistent=False)
        self.register_buffer("child_counts", counts, persistent=False)
        self.register_buffer("children_table", children, persistent=False)
        self.register_buffer("offsets", _long(offsets), persistent=False)
        # Levels where every node has k children need no -inf masking (e.g. the flat tree, whose
        # [b, l, N] logits are then never copied).
        self.full_width = all(int(c.min()) == self.width for c in tree.child_counts)

    # --- sizes -----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """N, the number of tokens (leaves)."""
        return self.tree.vocab_size

    @property
    def depth(self) -> int:
        """H, the number of levels (child choices per token)."""
        return self.tree.depth

    @property
    def root(self) -> int:
        """The root's global id (the fully-noised state; MDLM's ``[MASK]`` on the flat tree)."""
        return self.tree.num_nodes - 1

    # --- the forward process ---------------------------------------------------------------
    def forward_sample(
        self,
        x: Int[Tensor, "b l"],
        t: Float[Tensor, " b"],
        generator: torch.Generator | None = None,
    ) -> ForwardSample:
        """Draw ``z_t ~ q_t(· | x)`` (global node ids, one time per sequence) and its ``(h, s)``."""
        check_tokens(x, self.vocab_size)
        check_times(t, x.shape[0])
        level, s = self.schedule.level_of(t)
        return ForwardSample(self._noise(x, level, s, generator), level, s)

    def sample_in_level(
        self,
        x: Int[Tensor, "b l"],
        level: Int[Tensor, " b"],
        s: Float[Tensor, " b"],
        generator: torch.Generator | None = None,
    ) -> Int[Tensor, "b l"]:
        """Draw ``z ~ q^h_s(· | x)`` for a given level h and in-level time s per sequence."""
        check_tokens(x, self.vocab_size)
        check_levels(level, x.shape[0], self.depth)
        check_times(s, x.shape[0], "in-level time s")
        return self._noise(x, level, s, generator)

    def _noise(
        self,
        x: Int[Tensor, "b l"],
        level: Int[Tensor, " b"],
        s: Float[Tensor, " b"],
        generator: torch.Generator | None = None,
    ) -> Int[Tensor, "b l"]:
        """:meth:`sample_in_level` without the input checks, for callers that made them once.

        A position is masked where a uniform draw (in ``s``'s dtype) falls below ``1 - α(s)``,
        MDLM's ``q_xt`` rule.
        """
        move = self.schedule.in_level.one_minus_alpha(s)
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=s.dtype)
        return self._state(x, level, u < move[:, None])

    def mask_count(
        self,
        x: Int[Tensor, "b l"],
        level: Int[Tensor, " b"],
        count: Int[Tensor, " b"],
        generator: torch.Generator | None = None,
        *,
        known: Bool[Tensor, "b l"] | None = None,
    ) -> Int[Tensor, "b l"]:
        """``z`` with exactly ``count[i]`` positions of sequence i at ``a_{h+1}(x)`` ("masked"),
        a uniformly random subset, and the others at ``a_h(x)``.

        Given how many positions are masked, ``q^h_s`` masks a uniform subset of that size for
        every ``s``: this is the state the count form of the in-level NELBO needs
        (:func:`~tdlm_diffusion.count_nelbo`). ``known`` positions (a conditioning context,
        docs/method.md §8) are never masked: the subset is drawn among the others, at most ``L_u``.
        """
        check_tokens(x, self.vocab_size)
        check_levels(level, x.shape[0], self.depth)
        if known is None:
            check_counts(count, x.shape[0], x.shape[1])
        else:
            check_same_shape(known, x, "known", "x")
            check_counts(count, x.shape[0], (~known).sum(dim=-1))
        # The ranks of i.i.d. uniforms are a uniform permutation; ties (float32 draws collide
        # at L ~ 1000) are broken by position, which keeps the count exact.
        u = torch.rand(x.shape, generator=generator, device=x.device)
        if known is not None:
            u = u.masked_fill(known, 2.0)  # ranked after every unknown position: never masked
        rank = u.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
        return self._state(x, level, rank < count[:, None])

    def _state(
        self, x: Int[Tensor, "b l"], level: Int[Tensor, " b"], masked: Bool[Tensor, "b l"]
    ) -> Int[Tensor, "b l"]:
        """``a_{h+1}(x)`` where ``masked``, ``a_h(x)`` elsewhere: the state of level h."""
        return torch.where(masked, self.ancestor(x, level + 1), self.ancestor(x, level))

    # --- lookups -----------------------------------------------------------------------------
    def ancestor(self, x: Int[Tensor, "b l"], level: Int[Tensor, " b"]) -> Int[Tensor, "b l"]:
        """``a_h(x)`` as global ids, for ``h = level[i]`` in sequence i (``0 ≤ h ≤ H``)."""
        return self.ancestors[x.long(), level[:, None]]

    def is_masked(self, z: Int[Tensor, "b l"], level: Int[Tensor, " b"]) -> Bool[Tensor, "b l"]:
        """Positions of ``z`` at level ``h + 1``: at the parent, still to choose a child."""
        return z >= self.offsets[level + 1][:, None]

    def target_slots(self, x: Int[Tensor, "b l"], level: Int[Tensor, " b"]) -> Int[Tensor, "b l"]:
        """The slot of ``a_h(x)`` under ``a_{h+1}(x)``: the child a masked position must choose."""
        return self.paths[x.long(), level[:, None]]

    def valid_slots(self, nodes: Int[Tensor, "*shape"]) -> Bool[Tensor, "*shape k"]:
        """Which of the ``k`` slots are real children of each node (``slot < child count``)."""
        slots = torch.arange(self.width, device=nodes.device)
        return slots < self.child_counts[nodes.long()][..., None]

    def child_logits(
        self,
        denoiser: Denoiser | TimeConditionedDenoiser,
        z: Int[Tensor, "b l"],
        level: Int[Tensor, " b"],
        s: Float[Tensor, " b"],
    ) -> Float[Tensor, "b l k"]:
        """Call the denoiser on ``z`` at ``level`` (and ``s`` if ``pass_time``); check its output.

        Invalid slots are not masked here: the loss and the sampler mask them where it matters.
        """
        logits = denoiser(z, level, s) if self.pass_time else denoiser(z, level)
        check_logits(logits, z.shape[0], z.shape[1], self.width)
        return logits

    def extra_repr(self) -> str:
        return f"tree={self.tree!r}, width={self.width}, pass_time={self.pass_time}"
