"""Hypothesis strategies for vocabulary trees, for property tests here and in dependent packages.

Needs ``hypothesis`` (the ``testing`` extra: ``pip install tdlm-tree[testing]``); nothing else in
tdlm-tree imports this module.
"""

import numpy as np
from hypothesis import strategies as st

from .build import frequency_tree, random_tree
from .tree import VocabTree

__all__ = ["shapes", "custom_trees", "built_trees", "any_trees"]


@st.composite
def shapes(draw, max_vocab: int = 5000):
    """``(N, K)`` with N in 1..max_vocab and K in 2..300."""
    return draw(st.integers(1, max_vocab)), draw(st.integers(2, 300))


@st.composite
def custom_trees(draw, max_vocab: int = 400):
    """Arbitrary trees: random surjective parent maps per level and random slot orders."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, max_vocab))
    parents, slots = [], []
    while True:
        n_up = 1 if n == 1 or draw(st.booleans()) and n <= 40 else int(rng.integers(1, n))
        parent = np.r_[np.arange(n_up), rng.integers(0, n_up, n - n_up)]
        rng.shuffle(parent)
        slot = np.empty(n, dtype=np.int64)
        for p in range(n_up):
            members = np.flatnonzero(parent == p)
            slot[members] = rng.permutation(len(members))
        parents.append(parent)
        slots.append(slot)
        if n_up == 1:
            return VocabTree(parents, slots, method="custom")
        n = n_up


@st.composite
def built_trees(draw, max_vocab: int = 5000):
    """Trees from the random and frequency constructions over random shapes."""
    n, k = draw(shapes(max_vocab))
    seed = draw(st.integers(0, 1000))
    if draw(st.booleans()):
        return random_tree(n, k, seed=seed)
    counts = np.random.default_rng(seed).integers(0, 100, n)
    return frequency_tree(counts, k)


def any_trees(max_vocab: int = 5000):
    """Either kind of tree: arbitrary (up to 400 leaves) or constructed."""
    return st.one_of(custom_trees(min(max_vocab, 400)), built_trees(max_vocab))
