"""Dense transition matrices ``Q̄_{t|u}`` of the forward process, for tests (docs/method.md §3).

The process is a continuous-time Markov chain on all tree nodes: while ``t`` is in level h's
interval, a level-h node jumps to its parent at rate ``β = -α'(s) / (Δ_h α(s))`` and every other
node stays. Hence, for ``u ≤ t`` and a node v at level g (the paper's Proposition 3.2 for
``u = 0``, where it reads ``Q̄_{t|0} = M_h [α(s) I + (1 - α(s)) A_h]``):

* ``g < h_u`` or ``g > h_t``: v never moves (it is never the active level);
* otherwise v climbs to its level-``h_t`` ancestor w (every level interval it completes ends at
  ``α(1) = 0``), then stays at w with probability ``α(s_t) / α(s_u)`` if v started in the same
  level interval as ``t`` (``g = h_u = h_t``), else ``α(s_t)``; otherwise it sits at w's parent.

The matrices are ``[num_nodes, num_nodes]`` in float64, indexed by global node ids, rows "from"
and columns "to" (so rows ``0..N-1`` of ``Q̄_{t|0}`` are the leaf marginals, and
Chapman–Kolmogorov reads ``Q̄_{u|v} Q̄_{t|u} = Q̄_{t|v}`` for ``v ≤ u ≤ t``). Training never
builds them.
"""

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .process import TreeProcess
from .validation import DiffusionInputError

__all__ = ["MAX_DENSE_NODES", "transition_matrix"]

MAX_DENSE_NODES = 4096


def _level_and_alpha(process: TreeProcess, time: float) -> tuple[int, float, float]:
    t = torch.tensor([time], dtype=torch.float64, device=process.schedule.taus.device)
    level, s = process.schedule.level_of(t)
    return int(level), float(s), float(process.schedule.in_level.alpha(s))


def transition_matrix(process: TreeProcess, t: float, u: float = 0.0) -> Float[Tensor, "n n"]:
    """``Q̄_{t|u}`` over all global node ids (float64, on the CPU); requires ``0 ≤ u ≤ t ≤ 1``."""
    if not 0.0 <= u <= t <= 1.0:
        raise DiffusionInputError(f"transition matrices need 0 <= u <= t <= 1, got u = {u}, "
                                  f"t = {t}")
    tree = process.tree
    if tree.num_nodes > MAX_DENSE_NODES:
        raise DiffusionInputError(f"dense transition matrices are for small trees (at most "
                                  f"{MAX_DENSE_NODES} nodes); this tree has {tree.num_nodes}")
    h_t, s_t, alpha_t = _level_and_alpha(process, t)
    h_u, s_u, alpha_u = _level_and_alpha(process, u)
    offsets = tree.level_offsets
    q = np.zeros((tree.num_nodes, tree.num_nodes))
    for g in range(tree.depth + 1):
        nodes = np.arange(tree.level_sizes[g])
        rows = nodes + offsets[g]
        if g < h_u or g > h_t:
            q[rows, rows] = 1.0
            continue
        for h in range(g, h_t):
            nodes = tree.parents[h][nodes]
        if g == h_u == h_t:
            # Same interval: survival α(s_t)/α(s_u); "no time elapsed" also covers α(s_u) = 0
            # at u = t = 1.
            stay = 1.0 if s_t == s_u else alpha_t / alpha_u
        else:
            stay = alpha_t
        q[rows, nodes + offsets[h_t]] += stay
        q[rows, tree.parents[h_t][nodes] + offsets[h_t + 1]] += 1.0 - stay
    return torch.from_numpy(q)
