"""``torch.compile`` works on the backbone (a smoke test: same outputs and gradients as eager)."""

import jaxtyping
import pytest
import torch


@pytest.fixture
def unchecked_while_compiling(monkeypatch):
    """Runtime shape checks (on in tests) skip code that dynamo is tracing: it cannot trace them.

    jaxtyping's wrappers return the bare function when ``config.jaxtyping_disable`` is true; make
    that read ``torch.compiler.is_compiling()`` so eager calls are still checked.
    """
    monkeypatch.setattr(
        type(jaxtyping.config),
        "jaxtyping_disable",
        property(lambda _: torch.compiler.is_compiling()),
        raising=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [("none", "full"), ("all", "selective")])
def test_compiled_backbone_matches_eager(
    tree_shape, build, inputs, unchecked_while_compiling, checkpointing
):
    # Selective recomputation's checkpoint policy is traced by dynamo too.
    model = build(tree_shape, n_blocks=1)
    model.checkpoint_blocks(*checkpointing)
    nodes, level = inputs(tree_shape, batch=2, length=8)
    eager = model(nodes, level)
    eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    model.backbone.compile(fullgraph=True)
    compiled = model(nodes, level)
    compiled.square().sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for grad, expected in zip((p.grad for p in model.parameters()), eager_grads, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)
