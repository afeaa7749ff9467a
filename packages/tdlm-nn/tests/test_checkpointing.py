"""Activation checkpointing per block: same function and gradients, fewer saved activations."""

import gc
import weakref

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tdlm_nn import RECOMPUTE_MODES


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
@given(
    blocks=st.sets(st.integers(0, 2)),
    recompute=st.sampled_from(RECOMPUTE_MODES),
    seed=st.integers(0, 2**16),
)
def test_any_subset_gives_the_plain_gradients_with_dropout(
    tree_shape, build, inputs, blocks, recompute, seed
):
    # Recomputation replays the forward's RNG state, so dropout draws the same masks and the
    # gradients equal the plain model's (bit for bit on the CPU: the same kernels run again,
    # and a selective block's kept products are the forward's own tensors).
    model = build(tree_shape, n_blocks=3, dropout=0.2).train()
    nodes, level = inputs(tree_shape)
    plain = _grads(model, nodes, level, seed)
    model.checkpoint_blocks(blocks, recompute)
    assert model.checkpointed_blocks == tuple(sorted(blocks))
    assert model.recompute == recompute
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


class _LiveTensors(TorchDispatchMode):
    """Every tensor an op makes inside the mode, by weak reference: what is still alive after
    the forward pass is what the graph holds for the backward (checkpoint caches included)."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.made += [weakref.ref(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return out

    def live_bytes(self) -> int:
        gc.collect()
        storages = {}
        for ref in self.made:
            if (tensor := ref()) is not None:
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())


def _held_bytes(model, nodes, level) -> int:
    with _LiveTensors() as live:
        loss = model(nodes, level).square().mean()
    held = live.live_bytes()
    del loss
    return held


def test_selective_blocks_keep_their_matmul_and_attention_outputs_only(tree_shape, build, inputs):
    width, n_blocks = 64, 4
    model = build(tree_shape, n_blocks=n_blocks, width=width, dropout=0.1).train()
    nodes, level = inputs(tree_shape, batch=4, length=64)
    tensor = nodes.numel() * width * 4  # one fp32 [b, l, d] tensor
    held = {}
    for blocks, recompute in (("none", "full"), ("all", "full"), ("all", "selective")):
        model.checkpoint_blocks(blocks, recompute)
        held[blocks, recompute] = _held_bytes(model, nodes, level)
    full = held["all", "full"]
    per_block = {
        "plain": (held["none", "full"] - full) / n_blocks / tensor,
        "selective": (held["all", "selective"] - full) / n_blocks / tensor,
    }
    # Beyond its input a selective block keeps q, k, v, the attention output, its projection
    # and the MLP's 4D hidden and D output: 10 [b, l, d] tensors; plus attention's log-sum-exp
    # per head and position (n_heads / d of one) and its modulation, 6 D per sequence
    # (6 / l of one). Nothing else: a plain block keeps about 25.
    n_heads, length = model.config.n_heads, nodes.shape[1]
    assert per_block["selective"] == 10 + n_heads / width + 6 / length
    assert per_block["plain"] > 2 * per_block["selective"]


def test_unknown_recompute_mode_is_rejected(tree_shape, build):
    model = build(tree_shape, n_blocks=2)
    with pytest.raises(ValueError, match="recompute"):
        model.checkpoint_blocks("all", "some")


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
