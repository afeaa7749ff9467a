"""The denoiser protocol: where this package meets a network (docs/method.md §4).

A denoiser takes node ids and the level being diffused and returns child-slot logits:

* ``nodes`` ``[b, l]``: GLOBAL node ids (``tree.level_offsets[h] + local id``; the root is
  ``tree.num_nodes - 1``). In sample i every position is at level ``level[i]`` ("clean at this
  level") or at level ``level[i] + 1`` ("masked").
* ``level`` ``[b]``: the transition h being diffused in each sample.
* returns ``[b, l, k]`` logits over child slots, ``k = max(tree.branching)`` for every level (the
  flat tree has ``k = N``). The network need not mask slots a node does not have: the process
  masks ``slot >= child count`` to ``-inf`` itself.

Time conditioning is optional (docs/method.md §4): by default the network sees the level only, which
lets the sampler reuse its output exactly when nothing changed. A process built with
``pass_time=True`` calls ``denoiser(nodes, level, s)`` with the in-level time ``s`` ``[b]``.
tdlm-diffusion never imports a network package; any callable of this shape works.
"""

from typing import Protocol, runtime_checkable

from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["Denoiser", "TimeConditionedDenoiser"]


@runtime_checkable
class Denoiser(Protocol):
    """``denoiser(nodes, level) -> child logits`` (the default, level-only conditioning)."""

    def __call__(
        self, nodes: Int[Tensor, "b l"], level: Int[Tensor, " b"]
    ) -> Float[Tensor, "b l k"]: ...


@runtime_checkable
class TimeConditionedDenoiser(Protocol):
    """``denoiser(nodes, level, s) -> child logits``, for processes with ``pass_time=True``."""

    def __call__(
        self, nodes: Int[Tensor, "b l"], level: Int[Tensor, " b"], s: Float[Tensor, " b"]
    ) -> Float[Tensor, "b l k"]: ...
