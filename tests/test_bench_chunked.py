"""The chunked-CE contender's loss equals the plain full-vocabulary loss (METHOD.md §1)."""

import pytest
import torch
from tdlm_bench.chunked import chunked_loss, weighted_cross_entropy

from tdlm_nn import DiTConfig, TreeShape

VOCAB = 300


@pytest.fixture
def build():
    """A tiny seeded model with every parameter randomised (zero-initialised maps too)."""

    def make(shape: TreeShape, **overrides):
        torch.manual_seed(0)
        values = dict(shape=shape, width=32, n_heads=4, n_blocks=2, cond_dim=16, dropout=0.0)
        model = DiTConfig(**(values | overrides)).build()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0, 0.3)
        return model

    return make


@pytest.fixture
def inputs():
    def make(shape: TreeShape, batch: int = 6, length: int = 10, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        nodes = torch.randint(0, shape.num_nodes, (batch, length), generator=generator)
        return nodes, torch.arange(batch) % shape.depth

    return make


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


def _batch(shape: TreeShape, inputs, seed: int = 0):
    nodes, level = inputs(shape, batch=4, length=13, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, shape.vocab_size, nodes.shape, generator=generator)
    # Diffusion-style weights: zero on unmasked positions, w(t) > 0 on masked ones.
    weights = torch.rand(nodes.shape, generator=generator) * (
        torch.rand(nodes.shape, generator=generator) < 0.6
    )
    return nodes, level, targets, weights


def _loss_and_grads(model, loss):
    model.zero_grad()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("chunk_size", [1, 4, 13, 64])
def test_chunked_loss_equals_plain_loss_and_gradients(build, inputs, chunk_size):
    shape = TreeShape.flat(VOCAB)
    model = build(shape, time_conditioning=True)
    nodes, level, targets, weights = _batch(shape, inputs)
    s = torch.rand(len(level))
    plain, plain_grads = _loss_and_grads(
        model, weighted_cross_entropy(model(nodes, level, s), targets, weights)
    )
    chunked, chunked_grads = _loss_and_grads(
        model, chunked_loss(model, nodes, level, targets, weights, s, chunk_size=chunk_size)
    )
    assert _relative_error(chunked, plain) <= 1e-6
    for name, grad in plain_grads.items():
        assert _relative_error(chunked_grads[name], grad) <= 1e-6, name


def test_zero_weights_contribute_nothing(build, inputs):
    shape = TreeShape.flat(VOCAB)
    model = build(shape)
    nodes, level, targets, weights = _batch(shape, inputs)
    loss = chunked_loss(model, nodes, level, targets, weights, chunk_size=5)
    other_targets = torch.where(weights > 0, targets, (targets + 1) % shape.vocab_size)
    torch.testing.assert_close(
        chunked_loss(model, nodes, level, other_targets, weights, chunk_size=5), loss
    )


class _SavedForBackward:
    """Records the largest tensor autograd keeps for the backward pass."""

    largest = 0

    def __enter__(self):
        def pack(tensor):
            self.largest = max(self.largest, tensor.numel())
            return tensor

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def test_chunked_loss_keeps_no_full_logits_for_backward(build, inputs):
    shape = TreeShape.flat(VOCAB)
    model = build(shape)
    nodes, level, targets, weights = _batch(shape, inputs)
    full_logits = nodes.numel() * shape.vocab_size
    with _SavedForBackward() as plain:
        weighted_cross_entropy(model(nodes, level), targets, weights)
    with _SavedForBackward() as chunked:
        chunked_loss(model, nodes, level, targets, weights, chunk_size=4)
    assert plain.largest >= full_logits > chunked.largest


def test_chunked_loss_is_for_the_flat_tree_only(build, inputs):
    tree_shape = TreeShape.balanced(VOCAB, 8)
    model = build(tree_shape)
    nodes, level = inputs(tree_shape)
    with pytest.raises(ValueError, match="flat tree"):
        chunked_loss(model, nodes, level, torch.zeros_like(nodes), torch.ones(nodes.shape))
