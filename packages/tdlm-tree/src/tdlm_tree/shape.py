"""Tree shapes: per-level branching factors ``(k_1, ..., k_H)`` from the user's conveniences.

docs/method.md §2: level sizes follow ``n_h = ceil(n_{h-1} / k_h)`` down to a single root. A shape
is given as one ``K`` for every level (``H = ceil(log_K N)``), an explicit bottom-up list, or a
leaf cluster size ``c = k_1`` with ``K`` above it (the paper varies these two separately).
"""

from collections.abc import Sequence

from .tree import TreeError

__all__ = ["resolve_branching", "level_sizes_for", "group_sizes"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def level_sizes_for(vocab_size: int, branching: Sequence[int]) -> tuple[int, ...]:
    """``(n_0, ..., n_H)`` for a vocabulary of ``vocab_size`` under ``branching``."""
    sizes = [vocab_size]
    for k in branching:
        sizes.append(_ceil_div(sizes[-1], k))
    return tuple(sizes)


def resolve_branching(
    vocab_size: int,
    branching: int | Sequence[int],
    *,
    leaf_cluster_size: int | None = None,
) -> tuple[int, ...]:
    """Per-level branching factors ``(k_1, ..., k_H)`` that take ``vocab_size`` leaves to one root.

    ``branching`` is one K for every level (>= 2) or an explicit bottom-up list that must reach a
    single root exactly at its last level. ``leaf_cluster_size`` (only with one K) fixes ``k_1``.
    A vocabulary of one token gets the single level ``(1,)``.
    """
    if vocab_size < 1:
        raise TreeError(f"vocabulary size must be at least 1, got {vocab_size}")
    if isinstance(branching, int):
        if branching < 2:
            raise TreeError(f"branching factor K must be at least 2, got {branching}")
        if leaf_cluster_size is not None and leaf_cluster_size < 1:
            raise TreeError(f"leaf cluster size must be at least 1, got {leaf_cluster_size}")
        ks = [] if leaf_cluster_size is None else [leaf_cluster_size]
        n = _ceil_div(vocab_size, leaf_cluster_size) if ks else vocab_size
        while n > 1:
            ks.append(branching)
            n = _ceil_div(n, branching)
        return tuple(ks) or (1,)
    if leaf_cluster_size is not None:
        raise TreeError("leaf_cluster_size goes with a single K, not an explicit branching list")
    ks = tuple(int(k) for k in branching)
    if not ks or min(ks) < 1:
        raise TreeError(f"branching list must be non-empty with factors >= 1, got {list(ks)}")
    sizes = level_sizes_for(vocab_size, ks)
    if sizes[-1] != 1:
        raise TreeError(
            f"branching {list(ks)} leaves {sizes[-1]} nodes at the top level; the last level must "
            "reach a single root (add a level or widen one)"
        )
    if len(ks) > 1 and 1 in sizes[1:-1]:
        first = sizes.index(1)
        raise TreeError(
            f"branching {list(ks)} reaches a single root after {first} levels; "
            f"drop the last {len(ks) - first}"
        )
    return ks


def group_sizes(n: int, k: int) -> list[int]:
    """Balanced group sizes for ``n`` nodes under parents of at most ``k`` children.

    ``ceil(n / k)`` groups, all of exactly ``k`` but the last, which holds the remainder: groups
    are smaller than ``k`` only where the arithmetic forces it.
    """
    full, rest = divmod(n, k)
    return [k] * full + ([rest] if rest else [])
