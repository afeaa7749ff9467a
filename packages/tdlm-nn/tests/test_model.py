"""The denoiser protocol, initialisation, conditioning and the tree head (docs/method.md §4)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tdlm_nn import DiTConfig, TreeShape
from tdlm_tree import random_tree


def test_logits_have_one_slot_per_widest_node(shape, build, inputs):
    model = build(shape)
    nodes, level = inputs(shape)
    logits = model(nodes, level)
    assert logits.shape == (*nodes.shape, shape.num_slots)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_zero_initialised_model_predicts_uniform_children(shape, build, inputs):
    model = build(shape, perturbed=False, dropout=0.1).train()
    nodes, level = inputs(shape)
    probs = model(nodes, level).softmax(dim=-1)
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / shape.num_slots))


def test_gradients_reach_every_parameter(shape, build, inputs):
    model = build(shape, time_conditioning=True)
    nodes, level = inputs(shape)
    logits = model(nodes, level, torch.rand(len(level)))
    (logits * torch.randn_like(logits)).sum().backward()
    starved = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not starved


def test_eval_mode_is_deterministic_and_train_mode_drops_out(tree_shape, build, inputs):
    model = build(tree_shape, dropout=0.3)
    nodes, level = inputs(tree_shape)
    model.eval()
    torch.testing.assert_close(model(nodes, level), model(nodes, level), rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(nodes, level), model(nodes, level))


def test_level_conditioning_changes_outputs(tree_shape, build, inputs):
    # One shared head map, so any difference comes from the backbone's conditioning.
    model = build(tree_shape, shared_head=True)
    nodes, _ = inputs(tree_shape, batch=2)
    first = model(nodes, torch.tensor([0, 0]))
    second = model(nodes, torch.tensor([1, 2]))
    assert (first - second).abs().amax(dim=(1, 2)).min() > 1e-3


def test_time_conditioning_reads_s_and_level_only_ignores_it(tree_shape, build, inputs):
    nodes, level = inputs(tree_shape, batch=3)
    timed = build(tree_shape, time_conditioning=True)
    assert timed.conditions_on_time
    early, late = (
        timed(nodes, level, torch.full((3,), 0.1)),
        timed(nodes, level, torch.full((3,), 0.9)),
    )
    assert (early - late).abs().amax() > 1e-3
    with pytest.raises(ValueError, match="pass s"):
        timed(nodes, level)
    plain = build(tree_shape)
    assert not plain.conditions_on_time
    torch.testing.assert_close(
        plain(nodes, level, torch.rand(3)), plain(nodes, level), rtol=0, atol=0
    )


@pytest.mark.parametrize("shared_head", [False, True])
def test_mixed_level_batch_equals_samples_one_by_one(tree_shape, build, inputs, shared_head):
    model = build(tree_shape, shared_head=shared_head)
    nodes, level = inputs(tree_shape)
    together = model(nodes, level)
    alone = torch.cat([model(nodes[i : i + 1], level[i : i + 1]) for i in range(len(level))])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_flat_head_is_mdlms_full_vocabulary_output_layer(build, inputs):
    shape = TreeShape.flat(300)
    model = build(shape)
    nodes, level = inputs(shape)
    assert tuple(model.head.weight.shape) == (
        1,
        300,
        32,
    )  # one D -> N map with bias, like nn.Linear
    expected = F.linear(model.hidden(nodes, level), model.head.weight[0], model.head.bias[0])
    torch.testing.assert_close(model(nodes, level), expected)


def test_tree_head_has_one_map_per_level_padded_to_the_widest(tree_shape, build, inputs):
    model = build(tree_shape)
    assert tuple(model.head.weight.shape) == (3, 8, 32) and tuple(model.head.bias.shape) == (3, 8)
    nodes, level = inputs(tree_shape)
    hidden = model.hidden(nodes, level)
    expected = (
        torch.einsum("bld,bkd->blk", hidden, model.head.weight[level])
        + model.head.bias[level][:, None]
    )
    torch.testing.assert_close(model(nodes, level), expected)


def test_masking_invalid_slots_as_the_diffusion_process_does(build):
    """The contract: the network leaves slots >= a node's child count arbitrary; the caller masks
    them to -inf, after which they get zero probability and their padded weights no gradient."""
    tree = random_tree(300, 8, seed=3)
    shape = TreeShape.of(tree)
    model = build(shape)
    level = torch.tensor([0, 1, 2, 2])
    # Every sample's positions sit at level h+1, so each is a parent choosing a level-h child.
    generator = np.random.default_rng(0)
    local = [generator.integers(0, shape.level_sizes[h + 1], size=7) for h in level.tolist()]
    pairs = list(zip(level.tolist(), local, strict=True))
    nodes = torch.tensor(np.stack([ids + shape.level_offsets[h + 1] for h, ids in pairs]))
    counts = torch.tensor(np.stack([tree.child_counts[h][ids] for h, ids in pairs]))
    valid = torch.arange(shape.num_slots) < counts[..., None]
    assert not valid.all()  # the root has 5 children under an 8-wide head

    logits = model(nodes, level).masked_fill(~valid, float("-inf"))
    probs = logits.softmax(dim=-1)
    assert (probs[~valid] == 0).all() and (probs.argmax(dim=-1) < counts).all()
    targets = (torch.rand(counts.shape) * counts).long()  # a valid slot at every position
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    assert not model.head.weight.grad[2, 5:].any() and not model.head.bias.grad[2, 5:].any()
    assert model.head.weight.grad[2, :5].any()


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces (forward and backward)."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, tuple | list) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


@pytest.mark.parametrize("flat", [False, True])
def test_no_batch_length_vocabulary_tensor_on_a_tree(build, inputs, flat):
    vocab, batch, length = 4096, 4, 16
    shape = TreeShape.flat(vocab) if flat else TreeShape.balanced(vocab, 16)
    model = build(shape, width=16, n_heads=2, cond_dim=8)
    nodes, level = inputs(shape, batch=batch, length=length)
    with _LargestTensor() as mode:
        model(nodes, level).square().sum().backward()
    # Only the flat tree (MDLM) materialises [b, l, N] logits; the embedding table is 4.4x smaller.
    assert (mode.largest >= batch * length * vocab) == flat


def test_config_round_trips_through_json(tree_shape, tiny_config):
    config = tiny_config(tree_shape, mlp_hidden=96, time_conditioning=True, attention="math")
    restored = DiTConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


@pytest.mark.parametrize(
    "overrides",
    [{"attention": "flash"}, {"n_heads": 5}, {"n_heads": 32}, {"dropout": 1.0}, {"n_blocks": 0}],
)
def test_bad_configs_are_rejected(tree_shape, tiny_config, overrides):
    with pytest.raises(ValueError):
        tiny_config(tree_shape, **overrides).build()


def test_bf16_autocast_keeps_the_residual_stream_fp32(tree_shape, build, inputs):
    """What the model does on CUDA (``mixed_precision``), checked under the CPU's bf16 autocast."""
    model = build(tree_shape, time_conditioning=True)
    nodes, level = inputs(tree_shape)
    s = torch.rand(len(level))
    reference = model(nodes, level, s)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden, logits = model.hidden(nodes, level, s), model(nodes, level, s)
    assert hidden.dtype == torch.float32 and logits.dtype == torch.bfloat16
    logits.float().square().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    error = (logits.float() - reference).norm() / reference.norm()
    assert error < 0.05
