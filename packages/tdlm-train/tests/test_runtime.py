"""Runtime helpers: the learning-rate schedule, EMA weights, RNG state."""

import math

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


def _set_params(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_ema_follows_mdlms_warm_up_in_closed_form():
    """Update n uses d_n = min(decay, (1 + n) / (10 + n)); with the model's weights set to the
    value v_n before update n, the average is Π d_j · init + Σ_n (1 - d_n) Π_{j>n} d_j v_n
    (init = 0 here; 0.99 takes over from the warm-up at n = 881: the check spans both)."""
    model = torch.nn.Linear(3, 2)
    _set_params(model, 0.0)
    ema = Ema(model, decay=0.99)
    values = [float(v) for v in torch.linspace(1, 2, 1000)]
    expected = 0.0
    for n, v in enumerate(values, start=1):
        assert ema.current_decay() == pytest.approx(min(0.99, (1 + n) / (10 + n)), rel=1e-15)
        d = min(0.99, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * v
        _set_params(model, v)
        ema.update(model)
    assert ema.updates == 1000
    for shadow in ema.shadow.values():
        torch.testing.assert_close(shadow, torch.full_like(shadow, expected), rtol=1e-5, atol=0)


def test_ema_initialisation_share_is_the_closed_form():
    """While the warm-up decay is below ``decay``, the initialisation's share after n updates
    is the telescoping product Π_{j<=n} (1 + j) / (10 + j) = 10! (n + 1)! / (n + 10)!."""
    model = torch.nn.Linear(3, 2)
    _set_params(model, 1.0)  # the "initialisation"
    ema = Ema(model, decay=0.9999)
    _set_params(model, 0.0)  # every later weight
    for n in range(1, 61):
        ema.update(model)
        share = math.factorial(10) * math.factorial(n + 1) / math.factorial(n + 10)
        for shadow in ema.shadow.values():
            torch.testing.assert_close(shadow, torch.full_like(shadow, share), rtol=1e-4, atol=0)


def test_ema_state_round_trip_continues_the_same_average():
    model = torch.nn.Linear(3, 2)
    a = Ema(model, decay=0.999)
    for v in (0.5, 1.5, 2.5):
        _set_params(model, v)
        a.update(model)
    b = Ema(torch.nn.Linear(3, 2), decay=0.999)
    b.load_state_dict(a.state_dict())
    assert b.updates == 3
    for v in (3.0, 4.0):
        _set_params(model, v)
        a.update(model)
        b.update(model)
    for k in a.shadow:
        assert torch.equal(a.shadow[k], b.shadow[k])
    with pytest.raises(UserError, match="shape"):
        Ema(torch.nn.Linear(4, 2), decay=0.9).load_state_dict(a.state_dict())
    with pytest.raises(UserError, match="does not fit"):
        Ema(torch.nn.Sequential(torch.nn.Linear(3, 2)), decay=0.9).load_state_dict(a.state_dict())


def test_ema_decay_zero_keeps_raw_weights_and_swap_restores():
    model = torch.nn.Linear(3, 2)
    ema = Ema(model, decay=0.0)
    _set_params(model, 7.0)
    ema.update(model)
    assert all(torch.equal(v, torch.full_like(v, 7.0)) for v in ema.shadow.values())
    assert ema.description == "raw weights (EMA off)"
    _set_params(model, 1.0)
    ema.swap(model)
    assert all(torch.equal(p, torch.full_like(p, 7.0)) for p in model.parameters())
    assert all(torch.equal(v, torch.full_like(v, 1.0)) for v in ema.shadow.values())
    ema.swap(model)
    assert all(torch.equal(p, torch.full_like(p, 1.0)) for p in model.parameters())


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
