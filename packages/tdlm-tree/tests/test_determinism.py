"""The k-means constructions give one tree on any BLAS, thread count or CPU (docs/method.md §2).

A tree that changes with the machine makes training runs and golden tests irreproducible. Two
kinds of evidence: real BLAS variation (subprocesses with other thread counts and OpenBLAS
kernels), and in-process transformations that change every summation order or rounding a BLAS
could choose without changing the exact answer.
"""

import json
import os
import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tdlm_tree import embedding_tree
from tdlm_tree.cluster import _fit, _nearest, group_sums
from tdlm_tree.grid import grid_bits

# Inputs on which the float32 clustering (before the integer grid) built different trees with one
# thread and with two (the cooccurrence stream), or with OpenBLAS's AVX-512 and SSE kernels
# (the embedding vectors: near-duplicates, so distances tie but for the last bits).
_BUILD = """
import json
import numpy as np
from tdlm_tree import cooccurrence_tree, embedding_tree

rng = np.random.default_rng(0)
steps = np.cumsum(13 * rng.integers(0, 5, 20_000))
jumps = rng.random(20_000) < 0.1
ids = np.where(jumps, rng.integers(0, 270, 20_000), steps % 270)  # ids 270..299 never occur
rng = np.random.default_rng(0)
base = rng.standard_normal((500, 64)).astype(np.float32)
vectors = np.repeat(base, 4, axis=0) + 1e-6 * rng.standard_normal((2000, 64)).astype(np.float32)
trees = [cooccurrence_tree(ids, 300, 8, seed=0), embedding_tree(vectors, None, 8, seed=0)]
print(json.dumps([[p.tolist() for p in tree.parents] for tree in trees]))
"""


def _build_in_subprocess(threads: int, **env: str) -> list:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", _BUILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_trees_are_identical_across_thread_counts_and_blas_kernels():
    one_thread = _build_in_subprocess(1)
    # Another machine, as far as one can be simulated: two threads, OpenBLAS's SSE4.2 kernels
    # instead of AVX2/AVX-512 ones, and numpy without its AVX-512 loops (its SIMD sort and log).
    # Where these variables name nothing (another BLAS, another CPU) they are ignored.
    other = _build_in_subprocess(
        2,
        OPENBLAS_CORETYPE="Nehalem",
        NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR",
    )
    assert one_thread[0] == other[0], "cooccurrence trees differ"
    assert one_thread[1] == other[1], "embedding trees differ"


@st.composite
def _tied_vectors(draw):
    """Vectors with many exact and near ties: rows drawn from a small pool of lattice points,
    some nudged by a relative 1e-9, plus frequency weights; and a branching factor."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, d = draw(st.integers(2, 400)), draw(st.integers(1, 24))
    pool = rng.integers(-3, 4, (max(2, n // 4), d)).astype(np.float64)
    x = pool[rng.integers(0, len(pool), n)]
    x *= 1 + 1e-9 * rng.integers(-1, 2, x.shape)
    weights = rng.integers(1, 20, n)
    return x, weights, draw(st.integers(2, 40)), rng


@given(_tied_vectors())
def test_permuting_dimensions_gives_the_same_tree(case):
    # Every dot product is summed in another order: exact arithmetic makes that invisible.
    x, weights, k, rng = case
    permuted = x[:, rng.permutation(x.shape[1])]
    assert embedding_tree(permuted, weights, k) == embedding_tree(x, weights, k)


@given(_tied_vectors())
def test_negating_dimensions_gives_the_same_tree(case):
    x, weights, k, rng = case
    signs = rng.choice([-1.0, 1.0], x.shape[1])
    assert embedding_tree(x * signs, weights, k) == embedding_tree(x, weights, k)


@given(_tied_vectors(), st.integers(-40, 40))
def test_scaling_by_a_power_of_two_gives_the_same_tree(case, power):
    x, weights, k, _ = case
    assert embedding_tree(x * 2.0**power, weights, k) == embedding_tree(x, weights, k)


@given(_tied_vectors(), st.integers(0, 100))
def test_exact_ties_break_the_same_way_on_every_build(case, seed):
    x, weights, k, _ = case
    duplicated = np.repeat(x, 3, axis=0)  # every distance ties with two others exactly
    weights = np.repeat(weights, 3)
    first = embedding_tree(duplicated, weights, k, seed=seed)
    assert all(embedding_tree(duplicated, weights, k, seed=seed) == first for _ in range(2))


@given(st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_nearest_centroid_selection_breaks_ties_by_centroid_id(seed, m):
    # The exact replacement of argpartition: the m smallest per row, equal values by column.
    d = np.random.default_rng(seed).integers(0, 4, (50, 12)).astype(np.float64)
    expected = np.zeros(d.shape, dtype=bool)
    for row, values in enumerate(d):
        expected[row, np.lexsort((np.arange(len(values)), values))[:m]] = True
    np.testing.assert_array_equal(_nearest(d, m), expected)


@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_objective_is_exact_where_float64_would_round(seed, d):
    # Grid points at the largest magnitude the grid allows, in groups big enough that their sums
    # of squared distances exceed 2^53: the fit, in integers, matches a brute-force count.
    rng = np.random.default_rng(seed)
    q = grid_bits(d)
    x = rng.integers(-(2**q), 2**q + 1, (300, d)).astype(np.float64)
    labels = rng.integers(0, 3, 300)
    labels[:3] = [0, 1, 2]
    sizes = np.bincount(labels)
    sums = group_sums(x, labels, 3)
    centroids = np.rint(sums / sizes[:, None])
    exact = sum(
        (int(a) - int(c)) ** 2
        for row, g in zip(x, labels, strict=True)
        for a, c in zip(row, centroids[g], strict=True)
    )
    assert exact > 2**53
    sq_total = sum(int(v) ** 2 for v in x.ravel())
    assert sq_total - _fit(sums, sizes, centroids) == exact
