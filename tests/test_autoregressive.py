"""The autoregressive baseline (``--kind ar``): an exact, normalised NLL, every head loss giving
it, a sampler that draws from that distribution, and the apps end to end."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tdlm_diffusion import SamplerConfig, TreeProcess
from tdlm_nn import DiTConfig, TreeShape
from tdlm_train.autoregressive import autoregressive_sample, next_token_nll
from tdlm_train.cli import eval_main, sample_main, train_main
from tdlm_tree import flat_tree

VOCAB, LENGTH, BOS = 4, 4, 0


def _model(seed: int = 0, vocab: int = VOCAB, **overrides):
    torch.manual_seed(seed)
    values = dict(shape=TreeShape.flat(vocab), width=32, n_heads=4, n_blocks=2, cond_dim=16,
                  dropout=0.0, causal=True)
    model = DiTConfig(**(values | overrides)).build().eval()
    with torch.no_grad():  # the head is zero-initialised: randomise everything
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    return model


def _every_sequence() -> torch.Tensor:
    """Every block BOS, x_1, ..., x_{L-1} over the vocabulary: [VOCAB^(L-1), L]."""
    rest = torch.tensor(list(itertools.product(range(VOCAB), repeat=LENGTH - 1)))
    return torch.cat([torch.full((len(rest), 1), BOS), rest], dim=1)


@pytest.mark.parametrize("seed", range(3))
def test_the_nll_is_a_normalised_distribution_over_blocks(seed):
    # Σ_x exp(-NLL(x)) = 1 over every block that starts with BOS: the NLL is exact, not a bound.
    # A target not shifted by one (the model reading the token it predicts) or a non-causal
    # mask breaks this by orders of magnitude.
    every = _every_sequence()
    with torch.no_grad():
        nll = next_token_nll(_model(seed), every).double()
    assert abs(torch.exp(-nll).sum().item() - 1) < 1e-5


def test_the_nll_is_the_product_of_prefix_conditionals():
    model = _model(1, vocab=11)
    x = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(0))
    level = torch.zeros(3, dtype=torch.long)
    expected = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for i in range(1, x.shape[1]):  # each conditional from the prefix alone
            logits = model(x[:, :i], level)[:, -1].double()
            expected -= logits.log_softmax(-1).gather(-1, x[:, i : i + 1]).squeeze(-1)
        actual = next_token_nll(model, x)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)


def test_scored_positions_are_the_conditional_of_the_rest():
    model = _model(2, vocab=11)
    x = torch.randint(0, 11, (4, 10), generator=torch.Generator().manual_seed(1))
    known = torch.zeros_like(x, dtype=torch.bool)
    known[:, :4] = True  # a prefix context: -log p(x_U | x_K) = total - the prefix's own terms
    with torch.no_grad():
        prefix_only = next_token_nll(model, x[:, :4])
        conditional = next_token_nll(model, x, scored=~known)
        total = next_token_nll(model, x)
    torch.testing.assert_close(conditional + prefix_only, total, rtol=1e-5, atol=1e-5)


HEAD_LOSSES = ["masked", "chunked"] + (["torch"] if hasattr(F, "linear_cross_entropy") else [])


@pytest.mark.parametrize("head_loss", HEAD_LOSSES)
@pytest.mark.parametrize("scored", [False, True])
def test_every_head_loss_gives_the_nll_and_its_gradients(head_loss, scored):
    model = _model(3, vocab=50).train()
    x = torch.randint(0, 50, (5, 12), generator=torch.Generator().manual_seed(2))
    draws = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    terms = draws < 0.6 if scored else None

    def run(loss):
        model.zero_grad()
        value = next_token_nll(model, x, head_loss=loss, scored=terms)
        value.sum().backward()
        return value.detach(), [p.grad.clone() for p in model.parameters()]

    plain, plain_grads = run("full")
    other, other_grads = run(head_loss)
    torch.testing.assert_close(other, plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(other_grads, plain_grads, strict=True):  # summation order only
        assert (got - want).norm() <= 1e-5 * want.norm()


def test_the_sampler_draws_from_the_models_distribution():
    # 3,000 seeded draws of whole blocks against exp(-NLL) by χ²; a wrong draw (the sampler
    # reading position i's logits for token i, say) gives p ~ 0. Seeded: the verdict is fixed.
    model = _model(4)
    every = _every_sequence()
    with torch.no_grad():
        probs = torch.exp(-next_token_nll(model, every).double()).numpy()
    process = TreeProcess(flat_tree(VOCAB))
    bos = torch.full((3000, 1), BOS)
    draws = autoregressive_sample(process, model, bos, LENGTH, config=SamplerConfig(),
                                  generator=torch.Generator().manual_seed(5))
    index = (draws[:, 1:] * torch.tensor([VOCAB**2, VOCAB, 1])).sum(-1).numpy()
    counts = np.bincount(index, minlength=len(every))
    expected = probs / probs.sum() * counts.sum()
    common = expected >= 5  # χ² needs expected counts of at least 5: pool the rare cells
    observed = np.append(counts[common], counts[~common].sum())
    wanted = np.append(expected[common], expected[~common].sum())
    statistic = float(((observed - wanted) ** 2 / wanted).sum())
    # The χ² survival function: the upper regularised incomplete gamma at (df / 2, χ² / 2).
    dof = torch.tensor((len(observed) - 1) / 2, dtype=torch.float64)
    pvalue = torch.special.gammaincc(dof, torch.tensor(statistic / 2, dtype=torch.float64))
    assert pvalue.item() > 1e-3


def test_greedy_sampling_picks_the_most_probable_token():
    model = _model(5, vocab=11)
    process = TreeProcess(flat_tree(11))
    start = torch.tensor([[BOS, 3]])
    out = autoregressive_sample(process, model, start, 6, config=SamplerConfig(temperature=0.0))
    level = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        for i in range(2, 6):
            assert out[0, i] == model(out[:, :i], level)[0, -1].argmax()


def test_train_eval_sample_as_the_apps_run_it(tmp_path, small_args, capsys):
    run = tmp_path / "ar"
    assert train_main([*small_args(run, max_steps=30, eval_every=10), "--model", "ar"]) == 0
    out = capsys.readouterr().out
    assert "val NLL (exact)" in out and "val PPL" in out and "(bound)" not in out
    # It learns: below log(300) = 5.70 nats, what a uniform model pays per predicted token.
    nll = float(out.split("val NLL (exact)")[1].split()[0])
    assert nll < math.log(300) - 0.3
    assert eval_main(["--checkpoint", str(run)]) == 0
    assert sample_main(["--checkpoint", str(run), "--count", "2", "--prompt", "def"]) == 0
    assert "2 samples of" in capsys.readouterr().out
    assert sample_main(["--checkpoint", str(run), "--infill", "a<gap:3>b"]) == 2
    assert "cannot fill gaps" in capsys.readouterr().err
    assert train_main([*small_args(tmp_path / "bad"), "--model", "ar",
                       "--condition.probability", "0.5"]) == 2
    assert "--kind ar" in capsys.readouterr().err
