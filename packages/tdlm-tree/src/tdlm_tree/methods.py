"""Every tree construction by name: ``build_tree(method, ...)`` (docs/method.md §2).

The one place that maps a method name to its constructor and the inputs it needs, shared by the
``tdlm-tree build`` CLI and tdlm-train's tree stage: ``flat`` (MDLM), ``random``, ``frequency``
(token counts), ``embedding`` (token vectors, counts to weight them) and ``cooccurrence`` (a
token stream).
"""

from typing import Any

import numpy as np

from .build import embedding_tree, flat_tree, frequency_tree, random_tree
from .cooccurrence import cooccurrence_tree
from .tree import VocabTree

__all__ = ["METHODS", "build_tree"]

METHODS = ("flat", "random", "frequency", "embedding", "cooccurrence")


def build_tree(
    method: str,
    vocab_size: int,
    branching: int,
    *,
    tokens: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
    seed: int = 0,
    leaf_cluster_size: int | None = None,
    tokenizer_fingerprint: str | None = None,
    **options: Any,
) -> VocabTree:
    """The ``method`` tree of ``vocab_size`` tokens with branching ``branching``.

    ``counts`` default to the token frequencies of ``tokens``; ``options`` go to the method's
    constructor (``embedding``: ``iterations``; ``cooccurrence``: ``dim``, ``window``,
    ``context_size``, ``iterations``). A missing input is a ``ValueError`` naming it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown tree method {method!r}; choose one of {', '.join(METHODS)}")
    if counts is None and tokens is not None:
        counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size)
    fingerprint = {"tokenizer_fingerprint": tokenizer_fingerprint}
    shape = {"leaf_cluster_size": leaf_cluster_size}
    if method == "flat":
        return flat_tree(vocab_size, **fingerprint)
    if method == "random":
        return random_tree(vocab_size, branching, seed=seed, **fingerprint, **shape)
    if method == "frequency":
        if counts is None:
            raise ValueError("the frequency tree needs token counts (or tokens)")
        return frequency_tree(counts, branching, **fingerprint, **shape)
    if method == "embedding":
        if vectors is None:
            raise ValueError("the embedding tree needs token vectors")
        return embedding_tree(
            vectors, counts, branching, seed=seed, **fingerprint, **shape, **options
        )
    if tokens is None:
        raise ValueError("the cooccurrence tree needs a token stream")
    return cooccurrence_tree(
        tokens, vocab_size, branching, seed=seed, **fingerprint, **shape, **options
    )
