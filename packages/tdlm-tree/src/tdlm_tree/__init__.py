"""tdlm-tree: vocabulary trees for tree-structured diffusion language models (docs/method.md §2).

Leaves are the tokens, the root is the fully-noised state, every leaf sits at depth H, and a
token is predicted by H K-way child choices instead of one N-way softmax. This package builds
such trees (``flat``, ``random``, ``frequency``, ``embedding``, ``cooccurrence``), validates them,
saves and loads them as plain arrays + JSON, and reports their statistics. numpy only.
"""

from .build import embedding_tree, flat_tree, frequency_tree, random_tree
from .cluster import balanced_kmeans, within_group_sq_distance
from .cooccurrence import cooccurrence_tree, cooccurrence_vectors
from .io import FORMAT_VERSION, load_tree, save_tree
from .methods import METHODS, build_tree
from .shape import group_sizes, level_sizes_for, resolve_branching
from .stats import (
    LevelStats,
    conditional_cross_entropies,
    conditional_entropies,
    format_stats,
    level_stats,
    neighbour_cross_entropies,
    unigram_entropy,
)
from .tree import TreeError, VocabTree

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "METHODS",
    "LevelStats",
    "TreeError",
    "VocabTree",
    "balanced_kmeans",
    "build_tree",
    "conditional_cross_entropies",
    "conditional_entropies",
    "cooccurrence_tree",
    "cooccurrence_vectors",
    "embedding_tree",
    "flat_tree",
    "format_stats",
    "frequency_tree",
    "group_sizes",
    "level_sizes_for",
    "level_stats",
    "neighbour_cross_entropies",
    "load_tree",
    "random_tree",
    "resolve_branching",
    "save_tree",
    "unigram_entropy",
    "within_group_sq_distance",
]
