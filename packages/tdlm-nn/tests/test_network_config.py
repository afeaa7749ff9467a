"""``NetworkConfig``: a preset and its overrides, validated, resolved for a tree and built."""

import dataclasses

import pytest
import torch

from tdlm_nn import DiTBackbone, NetworkConfig, preset


def test_defaults_build_the_tiny_preset(shape):
    model = NetworkConfig().build(shape)
    assert model.config == preset("tiny", shape)
    assert model.checkpointed_blocks == ()


def test_each_override_lands_in_the_dit_config(tree_shape):
    network = NetworkConfig(
        preset="small", n_blocks=3, dropout=0.0, attention="math", time_conditioning=True
    )
    expected = dataclasses.replace(
        preset("small", tree_shape),
        n_blocks=3,
        dropout=0.0,
        attention="math",
        time_conditioning=True,
    )
    assert network.dit_config(tree_shape) == expected


def test_n_blocks_zero_keeps_the_presets_depth(tree_shape):
    depth = preset("tiny", tree_shape).n_blocks
    assert NetworkConfig(n_blocks=0).dit_config(tree_shape).n_blocks == depth
    assert len(NetworkConfig(n_blocks=2).build(tree_shape).backbone.blocks) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("preset", "huge"),
        ("attention", "flash"),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("dropout", float("nan")),
        ("dropout", float("inf")),
        ("n_blocks", -1),
        ("checkpoint_blocks", "x"),
        ("checkpoint_blocks", "0,,1"),
        ("checkpoint_blocks", "0,"),
        ("checkpoint_blocks", "1.5"),
        ("checkpoint_blocks", "0;1"),
        ("checkpoint_blocks", "All"),
        ("recompute", "partial"),
    ],
)
def test_a_bad_value_names_its_field(field, value):
    with pytest.raises(ValueError, match=field):
        NetworkConfig(**{field: value})


@pytest.mark.parametrize(
    ("text", "parsed", "checkpointed"),
    [
        ("", "none", ()),
        ("none", "none", ()),
        ("all", "all", (0, 1, 2, 3)),
        ("0,-1", (0, -1), (0, 3)),
        (" 2, 1 ", (2, 1), (1, 2)),
    ],
)
def test_checkpoint_blocks_reach_the_model(tree_shape, text, parsed, checkpointed):
    network = NetworkConfig(n_blocks=4, checkpoint_blocks=text)
    assert network.blocks_to_checkpoint() == parsed
    assert network.build(tree_shape).checkpointed_blocks == checkpointed


def test_recompute_reaches_the_model(tree_shape):
    assert NetworkConfig().build(tree_shape).recompute == "full"
    network = NetworkConfig(checkpoint_blocks="all", recompute="selective")
    assert network.build(tree_shape).recompute == "selective"


@pytest.mark.parametrize("text", ["2", "-3"])
def test_a_block_out_of_range_fails_at_build(tree_shape, text):
    network = NetworkConfig(n_blocks=2, checkpoint_blocks=text)  # well-formed: the depth decides
    with pytest.raises(ValueError, match="no block"):
        network.build(tree_shape)


def test_an_impossible_backend_fails_before_building(tree_shape, monkeypatch):
    def fail(self):
        raise AssertionError("built before the backend was checked")

    monkeypatch.setattr("tdlm_nn.model.DiTConfig.build", fail)
    with pytest.raises(RuntimeError, match="xformers"):
        NetworkConfig(attention="xformers").build(tree_shape, device="cpu")


def test_build_places_the_model_on_the_device(tree_shape):
    model = NetworkConfig(attention="math").build(tree_shape, device="cpu")
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}


@pytest.mark.parametrize("asked", [False, True])
def test_compile_compiles_the_backbone_only_when_asked(tree_shape, monkeypatch, asked):
    compiled = []
    monkeypatch.setattr(DiTBackbone, "compile", lambda self, *a, **k: compiled.append(self))
    model = NetworkConfig(compile=asked).build(tree_shape)
    assert compiled == ([model.backbone] if asked else [])
