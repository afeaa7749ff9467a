"""The vocabulary tree: an immutable, validated object built from per-level parent arrays.

Implements the data structure of docs/method.md §2. Levels are numbered bottom-up: the leaves (the
tokens ``0..N-1``) are level 0 and the single root is level H. Everything is indexed by the
*transition* ``h = 0..H-1`` between level h and level h+1, which is also how the diffusion
process and the network's heads index their levels:

* ``parents[h]``  ``[n_h]``       the level-(h+1) parent of each level-h node (``parent_h``),
* ``slots[h]``    ``[n_h]``       each level-h node's index among its siblings (``slot_h``),
* ``children[h]`` ``[n_{h+1}, k_{h+1}]`` the inverse map, padded with ``-1``,
* ``child_counts[h]`` ``[n_{h+1}]`` the number of real children,
* ``branching[h]`` = ``k_{h+1}``, the widest node of level h+1 (the K-way head's width).

Slots are dense: a node with ``c`` children uses slots ``0..c-1``, so "slot >= child count" is
exactly the set of invalid choices a network's logits must mask.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["TreeError", "VocabTree"]


class TreeError(ValueError):
    """An invalid, corrupt or mismatched vocabulary tree (in memory or on disk)."""


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _as_index_array(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise TreeError(f"{what} must be a 1-D array, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TreeError(f"{what} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _dense_slots(parents: np.ndarray) -> np.ndarray:
    """Slots numbering each parent's children 0, 1, ... in increasing child id."""
    order = np.argsort(parents, kind="stable")
    sorted_parents = parents[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_parents)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    slots = np.empty_like(parents)
    slots[order] = np.arange(len(order)) - run_start
    return slots


class VocabTree:
    """A vocabulary tree over the tokens ``0..N-1`` with every leaf at depth exactly H.

    Build one with a construction (``flat_tree``, ``random_tree``, ``frequency_tree``,
    ``embedding_tree``, ``cooccurrence_tree``) or directly from per-level arrays::

        VocabTree([parents_0, parents_1, ...], slots=None)

    ``parents[h][i]`` is the level-(h+1) parent of level-h node ``i``; the last level must map
    everything to the root 0. ``slots`` default to numbering siblings by increasing id. The
    constructor validates everything and raises :class:`TreeError` on any inconsistency.
    All arrays are read-only.
    """

    def __init__(
        self,
        parents: Sequence[Any],
        slots: Sequence[Any] | None = None,
        *,
        method: str = "custom",
        seed: int | None = None,
        tokenizer_fingerprint: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        if len(parents) == 0:
            raise TreeError("a tree needs at least one level (parents is empty)")
        parent_arrays = [_as_index_array(p, f"parents[{h}]") for h, p in enumerate(parents)]
        if slots is None:
            slot_arrays = [_dense_slots(p) for p in parent_arrays]
        else:
            if len(slots) != len(parent_arrays):
                raise TreeError(f"{len(slots)} slot arrays for {len(parent_arrays)} levels")
            slot_arrays = [_as_index_array(s, f"slots[{h}]") for h, s in enumerate(slots)]

        depth = len(parent_arrays)
        sizes = [len(p) for p in parent_arrays] + [1]
        if sizes[0] == 0:
            raise TreeError("the vocabulary is empty (level 0 has no nodes)")
        children, counts = [], []
        for h, (parent, slot) in enumerate(zip(parent_arrays, slot_arrays, strict=True)):
            n_up = sizes[h + 1]
            if len(slot) != len(parent):
                raise TreeError(f"slots[{h}] has {len(slot)} entries for {len(parent)} nodes")
            if parent.min() < 0 or parent.max() >= n_up:
                bad = int(np.flatnonzero((parent < 0) | (parent >= n_up))[0])
                raise TreeError(
                    f"level-{h} node {bad} has parent {int(parent[bad])}, outside level {h + 1}'s "
                    f"range 0..{n_up - 1}"
                )
            count = np.bincount(parent, minlength=n_up)
            if (count == 0).any():
                orphan = int(np.flatnonzero(count == 0)[0])
                raise TreeError(
                    f"level-{h + 1} node {orphan} has no children, so some leaf path would be "
                    f"shorter than the tree's depth {depth}"
                )
            if slot.min() < 0 or (slot >= count[parent]).any():
                bad = int(np.flatnonzero((slot < 0) | (slot >= count[parent]))[0])
                raise TreeError(
                    f"level-{h} node {bad} has slot {int(slot[bad])}, but its parent has "
                    f"{int(count[parent[bad]])} children (slots must be 0..count-1)"
                )
            width = int(count.max())
            table = np.full((n_up, width), -1, dtype=np.int64)
            table[parent, slot] = np.arange(len(parent))
            if (table >= 0).sum() != len(parent):
                raise TreeError(f"two level-{h} siblings share a slot (slots must be unique)")
            children.append(_frozen(table))
            counts.append(_frozen(count.astype(np.int64)))

        self._parents = tuple(_frozen(p) for p in parent_arrays)
        self._slots = tuple(_frozen(s) for s in slot_arrays)
        self._children = tuple(children)
        self._child_counts = tuple(counts)
        self._level_sizes = tuple(sizes)
        self._depth = depth
        self._branching = tuple(int(t.shape[1]) for t in children)
        self._offsets = tuple(int(o) for o in np.r_[0, np.cumsum(sizes)])
        self.method = method
        self.seed = seed
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.params = dict(params or {})

        ancestors = np.empty((sizes[0], depth + 1), dtype=np.int64)
        ancestors[:, 0] = np.arange(sizes[0])
        for h in range(depth):
            ancestors[:, h + 1] = self._parents[h][ancestors[:, h]]
        self._ancestors = _frozen(ancestors)
        paths = np.stack([self._slots[h][ancestors[:, h]] for h in range(depth)], axis=1)
        self._paths = _frozen(paths)

    # --- sizes -----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """N, the number of leaves (tokens)."""
        return self._level_sizes[0]

    @property
    def depth(self) -> int:
        """H, the number of levels above the leaves; every leaf's path has length H."""
        return self._depth

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """``(n_0, ..., n_H)`` with ``n_0 = N`` and ``n_H = 1``."""
        return self._level_sizes

    @property
    def branching(self) -> tuple[int, ...]:
        """``(k_1, ..., k_H)``: the most children any node of level h+1 has (head widths)."""
        return self._branching

    @property
    def is_flat(self) -> bool:
        """True for the one-level tree (the root's children are the tokens): MDLM's case."""
        return self._depth == 1

    # --- per-level maps --------------------------------------------------------------------
    @property
    def parents(self) -> tuple[np.ndarray, ...]:
        """``parents[h]`` ``[n_h]``: level-(h+1) parent of each level-h node."""
        return self._parents

    @property
    def slots(self) -> tuple[np.ndarray, ...]:
        """``slots[h]`` ``[n_h]``: each level-h node's slot under its parent."""
        return self._slots

    @property
    def children(self) -> tuple[np.ndarray, ...]:
        """``children[h]`` ``[n_{h+1}, k_{h+1}]``: level-h child at each slot, ``-1`` padded."""
        return self._children

    @property
    def child_counts(self) -> tuple[np.ndarray, ...]:
        """``child_counts[h]`` ``[n_{h+1}]``: the number of children of each level-(h+1) node."""
        return self._child_counts

    @property
    def ancestors(self) -> np.ndarray:
        """``[N, H+1]``: ``ancestors[x, h] = a_h(x)`` (local id at level h); column 0 is x."""
        return self._ancestors

    @property
    def paths(self) -> np.ndarray:
        """``[N, H]``: ``paths[x, h]`` is the slot of ``a_h(x)`` under ``a_{h+1}(x)``.

        Read right to left it is the sequence of child choices from the root down to x.
        """
        return self._paths

    # --- global node ids -------------------------------------------------------------------
    @property
    def level_offsets(self) -> tuple[int, ...]:
        """``(offset_0, ..., offset_H, total)``: level h's global ids are ``offset_h + local``."""
        return self._offsets

    @property
    def num_nodes(self) -> int:
        """Total number of nodes, leaves + internal + root (the input embedding's rows)."""
        return self._offsets[-1]

    def global_ids(self, level: int, local: Any) -> np.ndarray:
        """Global node ids of local ids at ``level``."""
        self._check_level(level, self._depth)
        local = np.asarray(local, dtype=np.int64)
        if local.size and (local.min() < 0 or local.max() >= self._level_sizes[level]):
            raise TreeError(
                f"local ids outside level {level}'s range 0..{self._level_sizes[level] - 1}"
            )
        return local + self._offsets[level]

    def level_of(self, global_ids: Any) -> np.ndarray:
        """The level of each global node id."""
        global_ids = np.asarray(global_ids, dtype=np.int64)
        if global_ids.size and (global_ids.min() < 0 or global_ids.max() >= self.num_nodes):
            raise TreeError(f"global node ids outside 0..{self.num_nodes - 1}")
        return np.searchsorted(np.asarray(self._offsets), global_ids, side="right") - 1

    # --- path lookups ----------------------------------------------------------------------
    def child(self, level: int, parent: Any, slot: Any) -> np.ndarray:
        """The level-``level`` node under level-(level+1) ``parent`` at ``slot`` (vectorised).

        Raises :class:`TreeError` where a parent has no child at that slot.
        """
        self._check_level(level, self._depth - 1)
        parent = np.asarray(parent, dtype=np.int64)
        slot = np.asarray(slot, dtype=np.int64)
        if parent.size and (parent.min() < 0 or parent.max() >= self._level_sizes[level + 1]):
            raise TreeError(f"parent ids outside level {level + 1}'s range")
        if slot.size and (slot.min() < 0 or slot.max() >= self._branching[level]):
            raise TreeError(f"slots outside 0..{self._branching[level] - 1} at level {level}")
        node = self._children[level][parent, slot]
        if (node < 0).any():
            raise TreeError(f"a level-{level + 1} node has no child at the requested slot")
        return node

    def leaf_of_path(self, path: Any) -> np.ndarray:
        """Inverse of :attr:`paths`: the token(s) reached by ``path`` (``[..., H]``)."""
        path = np.asarray(path, dtype=np.int64)
        if path.shape[-1:] != (self._depth,):
            raise TreeError(f"a path has {self._depth} slots, got shape {path.shape}")
        node = np.zeros(path.shape[:-1], dtype=np.int64)
        for h in reversed(range(self._depth)):
            node = self.child(h, node, path[..., h])
        return node

    # --- comparison ------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VocabTree):
            return NotImplemented
        return (
            self._level_sizes == other._level_sizes
            and all(
                np.array_equal(a, b) for a, b in zip(self._parents, other._parents, strict=True)
            )
            and all(np.array_equal(a, b) for a, b in zip(self._slots, other._slots, strict=True))
            and (self.method, self.seed, self.tokenizer_fingerprint, self.params)
            == (other.method, other.seed, other.tokenizer_fingerprint, other.params)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-free but array-valued: compare, do not hash

    def __repr__(self) -> str:
        return (
            f"VocabTree(N={self.vocab_size}, depth={self._depth}, "
            f"level_sizes={self._level_sizes}, branching={self._branching}, method={self.method!r})"
        )

    @staticmethod
    def _check_level(level: int, top: int) -> None:
        if not 0 <= level <= top:
            raise TreeError(f"level {level} outside 0..{top}")
