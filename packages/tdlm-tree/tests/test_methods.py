"""``build_tree``: each method by name is its constructor, and a missing input is named."""

import numpy as np
import pytest

from tdlm_tree import (
    METHODS,
    build_tree,
    cooccurrence_tree,
    embedding_tree,
    flat_tree,
    frequency_tree,
    random_tree,
)

N, K = 40, 4


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, N, 2000)
    return {
        "tokens": tokens,
        "counts": np.bincount(tokens, minlength=N),
        "vectors": rng.normal(size=(N, 8)),
    }


def test_each_method_by_name_is_its_constructor(inputs):
    tokens, counts, vectors = inputs["tokens"], inputs["counts"], inputs["vectors"]
    direct = {
        "flat": flat_tree(N),
        "random": random_tree(N, K, seed=3),
        "frequency": frequency_tree(counts, K),
        "embedding": embedding_tree(vectors, counts, K, seed=3),
        "cooccurrence": cooccurrence_tree(tokens, N, K, seed=3),
    }
    assert set(direct) == set(METHODS)
    for method, expected in direct.items():
        built = build_tree(method, N, K, seed=3, **inputs)
        assert built.level_sizes == expected.level_sizes, method
        assert np.array_equal(built.ancestors, expected.ancestors), method


@pytest.mark.parametrize(
    ("method", "missing", "message"),
    [
        ("frequency", {"tokens", "counts"}, "token counts"),
        ("embedding", {"vectors"}, "token vectors"),
        ("cooccurrence", {"tokens"}, "token stream"),
        ("magic", set(), "unknown tree method"),
    ],
)
def test_a_missing_input_or_method_is_named(inputs, method, missing, message):
    given = {k: v for k, v in inputs.items() if k not in missing}
    with pytest.raises(ValueError, match=message):
        build_tree(method, N, K, **given)
