"""The part of a vocabulary tree the network needs: level sizes and per-level head widths.

docs/method.md §2 and §4: the input embedding has one row per tree node (global id
``offset_h + local id``) and the head for transition h is a ``D -> k_{h+1}`` map. Both follow from
``(n_0, ..., n_H)`` and ``(k_1, ..., k_H)`` alone, so a GPT-2-sized model can be built (or counted)
without building a tree or reading data.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from tdlm_tree import VocabTree, level_sizes_for, resolve_branching

__all__ = ["TreeShape"]


@dataclass(frozen=True, kw_only=True)
class TreeShape:
    """Level sizes ``(n_0, ..., n_H)`` and head widths ``(k_1, ..., k_H)`` of a vocabulary tree.

    ``widths[h]`` is the most children any level-(h+1) node has, i.e. ``VocabTree.branching``.
    """

    level_sizes: tuple[int, ...]
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        sizes, widths = self.level_sizes, self.widths
        if len(sizes) != len(widths) + 1 or not widths:
            raise ValueError(
                f"a tree shape needs H >= 1 head widths and H + 1 level sizes, got "
                f"{len(widths)} widths and {len(sizes)} sizes"
            )
        if sizes[-1] != 1 or min(sizes) < 1 or min(widths) < 1:
            raise ValueError(f"level sizes {sizes} must be positive and end at one root")
        for h, k in enumerate(widths):
            # n_{h+1} parents of at most k children must hold all n_h nodes.
            if sizes[h + 1] * k < sizes[h] or k > sizes[h]:
                raise ValueError(
                    f"head width k_{h + 1} = {k} cannot group {sizes[h]} level-{h} nodes under "
                    f"{sizes[h + 1]} parents"
                )

    @classmethod
    def of(cls, tree: VocabTree) -> "TreeShape":
        """The shape of a built tree."""
        return cls(level_sizes=tree.level_sizes, widths=tree.branching)

    @classmethod
    def flat(cls, vocab_size: int) -> "TreeShape":
        """The one-level tree (MDLM): the root's children are the ``vocab_size`` tokens."""
        return cls(level_sizes=(vocab_size, 1), widths=(vocab_size,))

    @classmethod
    def balanced(
        cls,
        vocab_size: int,
        branching: int | Sequence[int],
        *,
        leaf_cluster_size: int | None = None,
    ) -> "TreeShape":
        """The shape every balanced construction of ``tdlm_tree`` gives for this branching.

        Groups hold exactly ``k_h`` children but the last (``tdlm_tree.group_sizes``), so the
        widest node of level h has ``min(k_h, n_{h-1})`` children.
        """
        ks = resolve_branching(vocab_size, branching, leaf_cluster_size=leaf_cluster_size)
        sizes = level_sizes_for(vocab_size, ks)
        return cls(
            level_sizes=sizes, widths=tuple(min(k, n) for k, n in zip(ks, sizes, strict=False))
        )

    @property
    def vocab_size(self) -> int:
        """N, the number of leaves."""
        return self.level_sizes[0]

    @property
    def depth(self) -> int:
        """H, the number of transitions (and of head maps)."""
        return len(self.widths)

    @property
    def num_slots(self) -> int:
        """``k = max_h k_{h+1}``: the common width every level's logits are padded to."""
        return max(self.widths)

    @property
    def num_nodes(self) -> int:
        """Leaves + internal nodes + root: the input embedding's rows."""
        return sum(self.level_sizes)

    @property
    def level_offsets(self) -> tuple[int, ...]:
        """``(offset_0, ..., offset_H, total)``, as ``VocabTree.level_offsets``."""
        return (0, *accumulate(self.level_sizes))

    @property
    def is_flat(self) -> bool:
        """True for the one-level tree, where the head is MDLM's full-vocabulary layer."""
        return self.depth == 1
