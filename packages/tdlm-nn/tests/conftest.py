"""Tiny models shared by tdlm-nn's tests (CPU, fp32, tens of thousands of parameters).

Helpers are fixtures because tests are imported in pytest's importlib mode (no sibling imports).
"""

import pytest
import torch

from tdlm_nn import DiTConfig, TreeShape

VOCAB = 300


@pytest.fixture(params=["flat", "tree"])
def shape(request) -> TreeShape:
    if request.param == "flat":
        return TreeShape.flat(VOCAB)
    return TreeShape.balanced(VOCAB, 8)  # widths (8, 8, 5): three levels, one padded


@pytest.fixture
def tree_shape() -> TreeShape:
    return TreeShape.balanced(VOCAB, 8)


@pytest.fixture
def tiny_config():
    def make(shape: TreeShape, **overrides) -> DiTConfig:
        values = dict(shape=shape, width=32, n_heads=4, n_blocks=2, cond_dim=16, dropout=0.0)
        return DiTConfig(**(values | overrides))

    return make


@pytest.fixture
def build(tiny_config):
    """A tiny model, seeded; ``perturbed=True`` randomises every parameter (zero-inits too)."""

    def make(shape: TreeShape, *, seed: int = 0, perturbed: bool = True, **overrides):
        torch.manual_seed(seed)
        model = tiny_config(shape, **overrides).build()
        if perturbed:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.normal_(0, 0.3)
        return model

    return make


@pytest.fixture
def inputs():
    """Global node ids of any level and per-sample levels covering every transition."""

    def make(shape: TreeShape, batch: int = 6, length: int = 10, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        nodes = torch.randint(0, shape.num_nodes, (batch, length), generator=generator)
        return nodes, torch.arange(batch) % shape.depth

    return make
