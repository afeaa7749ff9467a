"""Activation checkpointing per block: same function and gradients, fewer saved activations."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _saved_bytes(model, nodes, level) -> tuple[torch.Tensor, int]:
    """The loss of one forward pass and the bytes autograd saved for its backward pass."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(nodes, level).square().mean()
    return loss, total


def _grads(model, nodes, level, seed: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks
    model(nodes, level).square().mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# The fixtures are stateless factories, so sharing them across examples is safe.
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blocks=st.sets(st.integers(0, 2)), seed=st.integers(0, 2**16))
def test_any_subset_gives_the_plain_gradients_with_dropout(tree_shape, build, inputs, blocks, seed):
    # Recomputation replays the forward's RNG state, so dropout draws the same masks and the
    # gradients equal the plain model's (bit for bit on the CPU: the same kernels run again).
    model = build(tree_shape, n_blocks=3, dropout=0.2).train()
    nodes, level = inputs(tree_shape)
    plain = _grads(model, nodes, level, seed)
    model.checkpoint_blocks(blocks)
    assert model.checkpointed_blocks == tuple(sorted(blocks))
    again = _grads(model, nodes, level, seed)
    for name, grad in plain.items():
        torch.testing.assert_close(again[name], grad, rtol=0, atol=0, msg=name)


def test_checkpointed_blocks_save_only_their_input(tree_shape, build, inputs):
    model = build(tree_shape, n_blocks=4, width=64, dropout=0.1).train()
    nodes, level = inputs(tree_shape, batch=4, length=64)
    _, plain = _saved_bytes(model, nodes, level)
    model.checkpoint_blocks([0, 1])
    _, half = _saved_bytes(model, nodes, level)
    model.checkpoint_blocks("all")
    _, full = _saved_bytes(model, nodes, level)
    # A plain block saves tens of [b, l, d] tensors; a checkpointed one a handful of inputs.
    per_block = (plain - full) / 4
    assert per_block > 10 * nodes.numel() * 64 * 4
    assert half == pytest.approx(plain - 2 * per_block, rel=1e-6)


def test_without_grad_nothing_is_recomputed_and_outputs_agree(tree_shape, build, inputs):
    model = build(tree_shape, n_blocks=2).eval()
    nodes, level = inputs(tree_shape)
    with torch.no_grad():
        plain = model(nodes, level)
        model.checkpoint_blocks("all")
        checkpointed = model(nodes, level)
    torch.testing.assert_close(checkpointed, plain, rtol=0, atol=0)


@pytest.mark.parametrize("blocks", [[2], [-3], "some"])
def test_bad_block_choices_are_rejected(tree_shape, build, blocks):
    model = build(tree_shape, n_blocks=2)
    with pytest.raises(ValueError, match="checkpoint_blocks"):
        model.checkpoint_blocks(blocks)


def test_negative_indices_count_from_the_end_and_none_clears(tree_shape, build):
    model = build(tree_shape, n_blocks=3)
    model.checkpoint_blocks([-1, 0])
    assert model.checkpointed_blocks == (0, 2)
    model.checkpoint_blocks("none")
    assert model.checkpointed_blocks == ()
