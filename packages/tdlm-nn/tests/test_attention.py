"""Attention backends: SDPA and xformers agree with the math reference; ``auto`` falls back."""

import logging

import pytest
import torch

import tdlm_nn.attention as attention
from tdlm_nn import attend, resolve_attention

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


def _qkv(device="cpu", dtype=torch.float32, shape=(3, 37, 4, 16)):
    generator = torch.Generator(device).manual_seed(0)
    return [torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(3)]


def test_sdpa_matches_math_in_fp32():
    q, k, v = _qkv()
    assert _relative_error(attend(q, k, v, "sdpa"), attend(q, k, v, "math")) <= 1e-5


def test_causal_sdpa_matches_causal_math_and_sees_no_future():
    q, k, v = _qkv()
    causal = attend(q, k, v, "math", causal=True)
    assert _relative_error(attend(q, k, v, "sdpa", causal=True), causal) <= 1e-5
    # Position i reads positions <= i only: changing the last key and value moves nothing else.
    k2, v2 = k.clone(), v.clone()
    k2[:, -1], v2[:, -1] = 5.0, -3.0
    moved = attend(q, k2, v2, "math", causal=True)
    torch.testing.assert_close(moved[:, :-1], causal[:, :-1], rtol=0, atol=0)
    assert not torch.allclose(moved[:, -1], causal[:, -1])
    # and without the mask every position moves.
    assert not torch.allclose(attend(q, k2, v2, "math")[:, 0], attend(q, k, v, "math")[:, 0])


def test_a_causal_model_is_a_function_of_the_prefix(tree_shape, build, inputs):
    nodes, level = inputs(tree_shape, length=12)
    for backend in ("math", "sdpa"):
        model = build(tree_shape, attention=backend, causal=True)
        changed = nodes.clone()
        changed[:, 7:] = (changed[:, 7:] + 1) % tree_shape.num_nodes
        torch.testing.assert_close(model(changed, level)[:, :7], model(nodes, level)[:, :7])
        assert not torch.allclose(model(changed, level)[:, 7:], model(nodes, level)[:, 7:])


def test_model_with_sdpa_matches_model_with_math(tree_shape, build, inputs):
    nodes, level = inputs(tree_shape)
    reference = build(tree_shape, attention="math")(nodes, level)
    fast = build(tree_shape, attention="sdpa")(nodes, level)
    assert _relative_error(fast, reference) <= 1e-5


def test_auto_picks_sdpa_on_cpu_and_says_so_once(monkeypatch, caplog, tree_shape, build, inputs):
    monkeypatch.setattr(attention, "_resolved", {})
    model = build(tree_shape, attention="auto")
    nodes, level = inputs(tree_shape)
    with caplog.at_level(logging.INFO, logger="tdlm_nn.attention"):
        model(nodes, level)
        model(nodes, level)
        assert resolve_attention("auto", torch.device("cpu")) == "sdpa"
    assert model.attention_backend == "sdpa"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "attention on cpu: sdpa" in messages[0]


def test_naming_an_unavailable_backend_is_an_error():
    with pytest.raises(RuntimeError, match="xformers"):
        resolve_attention("xformers", torch.device("cpu"))
    with pytest.raises(ValueError, match="flash"):
        resolve_attention("flash", torch.device("cpu"))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_xformers_matches_sdpa_on_cuda(dtype, tolerance):
    if attention._xformers_failure(torch.device("cuda")) is not None:
        pytest.skip("xformers kernels do not load with this torch")
    q, k, v = _qkv("cuda", dtype, shape=(2, 300, 8, 64))
    assert _relative_error(attend(q, k, v, "xformers"), attend(q, k, v, "sdpa")) <= tolerance


@pytest.mark.gpu
@needs_cuda
def test_auto_on_cuda_records_its_choice_and_runs_bf16(tree_shape, build, inputs):
    model = build(tree_shape, attention="auto").cuda()
    nodes, level = (t.cuda() for t in inputs(tree_shape))
    logits = model(nodes, level)
    usable = attention._xformers_failure(torch.device("cuda")) is None
    assert model.attention_backend == ("xformers" if usable else "sdpa")
    print(f"torch {torch.__version__}: auto attention on CUDA ran {model.attention_backend}")
    # bf16 autocast over fp32 master weights; the head's input stays fp32.
    assert logits.dtype == torch.bfloat16 and model.hidden(nodes, level).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    logits.float().square().mean().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    reference = build(tree_shape, attention="math", mixed_precision=False).cuda()(nodes, level)
    assert _relative_error(logits.float(), reference) <= 5e-2
