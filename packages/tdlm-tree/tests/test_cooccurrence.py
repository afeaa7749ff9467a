"""The cooccurrence construction recovers word classes planted in a token stream."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdlm_tree import TreeError, cooccurrence, cooccurrence_tree, cooccurrence_vectors


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


def _dense_counts(ids, vocab, context_size, window):
    """The ``[N, 2V]`` table counted position by position: the reference for the blocked,
    sparse counting (same contexts, same sum over distances of integer counts / distance)."""
    counts = np.bincount(ids, minlength=vocab)
    contexts = np.argsort(-counts, kind="stable")[: min(context_size, vocab)]
    v = len(contexts)
    column = dict(zip(contexts.tolist(), range(v), strict=True))
    n_d = np.zeros((window, vocab, 2 * v))
    for i, x in enumerate(ids.tolist()):
        for d in range(1, window + 1):
            for side, j in ((0, i - d), (v, i + d)):
                if 0 <= j < len(ids) and ids[j] in column:
                    n_d[d - 1, x, side + column[int(ids[j])]] += 1
    return sum(n_d[d - 1] / d for d in range(1, window + 1))


@st.composite
def _streams(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vocab = draw(st.integers(1, 40))
    p = 1.0 / np.arange(1, vocab + 1)  # Zipf: frequent and rare ids, some never drawn
    ids = rng.choice(vocab, size=draw(st.integers(2, 300)), p=p / p.sum())
    return ids, vocab, draw(st.integers(1, 50)), draw(st.integers(1, 4))


@given(_streams(), st.integers(1, 300), st.integers(1, 50))
def test_blocked_sparse_counts_and_ppmi_equal_the_dense_table(stream, block, chunk):
    # Tiny blocks and chunks take the path that keeps N = 256k off an N x 2V table.
    ids, vocab, context_size, window = stream
    with (
        mock.patch.object(cooccurrence, "_BLOCK_ENTRIES", block),
        mock.patch.object(cooccurrence, "_STREAM_CHUNK", chunk),
    ):
        keys, counts, width = cooccurrence._context_counts(ids, vocab, context_size, window)
    table = _dense_counts(ids, vocab, context_size, window)
    assert width == table.shape[1]
    np.testing.assert_array_equal(keys, np.flatnonzero(table))
    np.testing.assert_array_equal(counts, table.ravel()[keys])  # bit for bit
    # PPMI of the dense table as the pipeline computed it before it went sparse.
    with np.errstate(divide="ignore", invalid="ignore"):
        col = table.sum(0) ** 0.75
        pmi = np.log(table) - np.log(table.sum(1, keepdims=True)) - np.log(col / col.sum())
    pmi = np.where(table > 0, np.maximum(pmi, 0.0), 0.0).ravel()
    sparse = cooccurrence._ppmi(keys, counts, width)
    if window <= 2:  # counts in halves: every sum exact, so bit for bit (the default window)
        np.testing.assert_array_equal(sparse, pmi[keys])
    # Else the sums of thirds, ... are taken in another order: equal but for the last bits.
    np.testing.assert_allclose(sparse, pmi[keys], atol=1e-13)


@given(_streams(), st.integers(1, 300))
def test_dense_blocks_tile_the_sparse_matrix(stream, block):
    # The SVD's products take the matrix in these blocks: together they must be the matrix.
    ids, vocab, context_size, window = stream
    keys, counts, width = cooccurrence._context_counts(ids, vocab, context_size, window)
    with mock.patch.object(cooccurrence, "_BLOCK_ENTRIES", block):
        blocks = list(cooccurrence._dense_blocks(keys, counts, (vocab, width)))
    assert all(b.size <= max(block, width) for _, b in blocks)
    assert [r.start for r, _ in blocks[1:]] == [r.stop for r, _ in blocks[:-1]]
    np.testing.assert_array_equal(
        np.concatenate([b for _, b in blocks]), _dense_counts(ids, vocab, context_size, window)
    )


def test_the_tree_does_not_depend_on_the_block_sizes():
    ids, _ = _class_language(classes=6, per_class=8, length=20_000, seed=1)
    tree = cooccurrence_tree(ids, 48, 4, seed=0, dim=8)
    with (
        mock.patch.object(cooccurrence, "_BLOCK_ENTRIES", 100),
        mock.patch.object(cooccurrence, "_STREAM_CHUNK", 999),
    ):
        assert cooccurrence_tree(ids, 48, 4, seed=0, dim=8) == tree
