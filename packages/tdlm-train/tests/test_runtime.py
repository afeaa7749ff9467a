"""Runtime helpers: the learning-rate schedule, EMA weights, RNG state."""

import pytest
import torch

from tdlm_train.errors import UserError
from tdlm_train.runtime import Ema, learning_rate, pick_device, rng_state, set_rng_state


def test_learning_rate_warmup_then_cosine():
    kw = dict(lr=1.0, warmup=10, max_steps=110, min_ratio=0.1)
    assert learning_rate(0, schedule="cosine", **kw) == pytest.approx(0.1)
    assert learning_rate(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert learning_rate(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert learning_rate(60, schedule="cosine", **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(110, schedule="cosine", **kw) == pytest.approx(0.1)
    assert learning_rate(500, schedule="constant", **kw) == 1.0


def test_ema_is_an_exponential_average_and_swap_restores():
    model = torch.nn.Linear(3, 2)
    ema = Ema(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for k, p in model.named_parameters():
        torch.testing.assert_close(ema.shadow[k], 0.9 * start[k] + 0.1 * p.detach())
    raw = {k: p.detach().clone() for k, p in model.named_parameters()}
    averaged = {k: v.clone() for k, v in ema.shadow.items()}
    ema.swap(model)
    for k, p in model.named_parameters():
        assert torch.equal(p, averaged[k]) and torch.equal(ema.shadow[k], raw[k])
    ema.swap(model)
    for k, p in model.named_parameters():
        assert torch.equal(p, raw[k])


def test_rng_state_round_trip():
    state = rng_state(torch.device("cpu"))
    first = torch.rand(5)
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(5), first)


def test_bad_devices():
    with pytest.raises(UserError, match="not a device"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            pick_device("cuda")
