"""The cooccurrence construction recovers word classes planted in a token stream."""

import numpy as np
import pytest

from tdlm_tree import TreeError, cooccurrence_tree, cooccurrence_vectors


def _class_language(classes: int, per_class: int, length: int, seed: int):
    """A stream whose class sequence is a Markov chain (class c is mostly followed by c+1) and
    whose tokens are uniform within their class: tokens of one class share their contexts."""
    rng = np.random.default_rng(seed)
    step = np.where(rng.random(length) < 0.8, 1, rng.integers(0, classes, length))
    cls = np.cumsum(step) % classes
    tokens = cls * per_class + rng.integers(0, per_class, length)
    token_class = np.repeat(np.arange(classes), per_class)
    permutation = rng.permutation(classes * per_class)  # hide the classes from the token ids
    return permutation[tokens], token_class[np.argsort(permutation)]


@pytest.mark.parametrize("seed", range(3))
def test_planted_classes_become_level_one_groups(seed):
    ids, token_class = _class_language(classes=12, per_class=8, length=60_000, seed=seed)
    tree = cooccurrence_tree(ids, 96, 4, leaf_cluster_size=8, seed=seed, dim=16)
    pairs = set(zip(tree.ancestors[:, 1].tolist(), token_class.tolist(), strict=True))
    assert len(pairs) == 12  # each level-1 node holds exactly one class


def test_vectors_are_deterministic_and_zero_for_unseen_tokens():
    ids, _ = _class_language(classes=4, per_class=5, length=5_000, seed=0)
    a = cooccurrence_vectors(ids, 25, dim=8, seed=3)
    b = cooccurrence_vectors(ids, 25, dim=8, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (25, 8)
    np.testing.assert_array_equal(a[20:], 0)  # ids 20..24 never occur
    assert np.abs(a[:20]).sum(1).min() > 0


@pytest.mark.parametrize(
    ("ids", "vocab", "message"),
    [
        (np.array([0, 1, 5]), 5, "outside the vocabulary 0..4"),
        (np.array([0, -1, 2]), 5, "outside the vocabulary"),
        (np.array([0.5, 1.0]), 5, "integers"),
        (np.array([1]), 5, "at least 2"),
    ],
)
def test_bad_streams(ids, vocab, message):
    with pytest.raises(TreeError, match=message):
        cooccurrence_tree(ids, vocab, 4)
