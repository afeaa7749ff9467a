"""Bad input gets one clear error (docs/architecture.md "Errors").

Each case runs twice: as at run time (jaxtyping off), where the package's own checks must raise
:class:`DiffusionInputError` with a telling message, and under the test suite's shape checking,
where either that error or jaxtyping's shape error may come first.
"""

import jaxtyping
import pytest
import torch

from tdlm_diffusion import (
    Context,
    DiffusionInputError,
    SamplerConfig,
    ScheduleConfig,
    TreeProcess,
    ancestral_sample,
    ancestral_sample_step,
    bits_per_byte,
    count_nelbo,
    diffusion_loss,
    evaluate_nelbo,
    perplexity,
    training_loss,
)
from tdlm_tree import flat_tree, random_tree

TREE = random_tree(20, 4, seed=0)  # 20 -> 5 -> 2 -> 1, k = 4
PROCESS = TreeProcess(TREE)
X = torch.randint(0, 20, (3, 5), generator=torch.Generator().manual_seed(0))
T = torch.tensor([0.1, 0.5, 0.9])


def _zeros(width=4):
    return lambda z, level: torch.zeros(*z.shape, width)


def _z():
    return PROCESS.forward_sample(X, T, torch.Generator().manual_seed(0)).z


KNOWN = torch.tensor([[True, False, False, True, False]] * 3)


def _sample(context):
    return ancestral_sample(PROCESS, _zeros(), batch_size=3, length=5,
                            config=SamplerConfig(steps=3), context=context)


CASES = {
    "token id >= N": (lambda: PROCESS.forward_sample(X + 20, T), "outside the tree's vocabulary"),
    "negative token id": (lambda: PROCESS.forward_sample(X - 30, T), "outside the tree's"),
    "tokens from a bigger tokenizer": (
        lambda: training_loss(PROCESS, _zeros(), torch.tensor([[5, 25]])), "another tokenizer"),
    "count-estimator tokens from a bigger tokenizer": (
        lambda: training_loss(PROCESS, _zeros(), torch.tensor([[5, 25]]), estimator="count"),
        "another tokenizer"),
    "float token ids": (lambda: PROCESS.forward_sample(X.float(), T), "integer tensor"),
    "token ids without a batch axis": (lambda: PROCESS.forward_sample(X[0], T[:1]),
                                       r"shape \[batch, length\]"),
    "training tokens without a batch axis": (lambda: training_loss(PROCESS, _zeros(), X[0]),
                                             r"shape \[batch, length\]"),
    "t above 1": (lambda: PROCESS.forward_sample(X, T + 0.5), r"must lie in \[0, 1\]"),
    "t below 0": (lambda: PROCESS.forward_sample(X, -T), r"must lie in \[0, 1\]"),
    "t NaN": (lambda: PROCESS.forward_sample(X, torch.full((3,), float("nan"))), "NaN"),
    "integer t": (lambda: PROCESS.forward_sample(X, torch.zeros(3, dtype=torch.long)),
                  "floating-point"),
    "t of the wrong length": (lambda: PROCESS.forward_sample(X, T[:2]), "one per sequence"),
    "z and x of different shapes": (lambda: diffusion_loss(PROCESS, torch.zeros(3, 5, 4), X,
                                                           _z()[:, :4], T), "same positions"),
    "logits of another tree's width": (
        lambda: diffusion_loss(PROCESS, torch.zeros(3, 5, 7), X, _z(), T), "another tree"),
    "denoiser built for another tree": (lambda: training_loss(PROCESS, _zeros(7), X),
                                        "k = 4 = max"),
    "flat-tree network of another vocabulary": (
        lambda: training_loss(TreeProcess(flat_tree(20)), _zeros(21), X), "another tree"),
    "level weights of the wrong length": (
        lambda: training_loss(PROCESS, _zeros(), X, level_weights=[1.0, 1.0]),
        "one weight per level"),
    "negative level weights": (
        lambda: training_loss(PROCESS, _zeros(), X, level_weights=[1.0, -1.0, 1.0]),
        "non-negative"),
    "schedule for a tree of another depth": (
        lambda: TreeProcess(TREE, ScheduleConfig().build(flat_tree(20))), "tree has depth 3"),
    "no evaluation samples": (lambda: evaluate_nelbo(PROCESS, _zeros(), X, samples_per_level=0),
                              "at least 1"),
    "zero sampler steps": (lambda: SamplerConfig(steps=0), "at least one step"),
    "negative temperature": (lambda: SamplerConfig(steps=3, temperature=-1.0), "temperature"),
    "top-p of zero": (lambda: SamplerConfig(steps=3, top_p=0.0), "top_p"),
    "top-p above one": (lambda: SamplerConfig(steps=3, top_p=1.5), "top_p"),
    "unknown step allocation": (lambda: SamplerConfig(steps=3, step_allocation="cosine"),
                                "unknown step allocation"),
    "empty sample batch": (lambda: ancestral_sample(PROCESS, _zeros(), batch_size=0, length=4,
                                                    config=SamplerConfig(steps=3)), "positive"),
    "a step that goes up in s": (
        lambda: ancestral_sample_step(PROCESS, torch.zeros(1, 2, 4), torch.full((1, 2), 26), 2,
                                      0.2, 0.5), "smaller s_to"),
    "a step at a level that does not exist": (
        lambda: ancestral_sample_step(PROCESS, torch.zeros(1, 2, 4), torch.full((1, 2), 26), 3,
                                      0.5, 0.2), "outside 0..2"),
    "a step from nodes at the wrong level": (
        lambda: ancestral_sample_step(PROCESS, torch.zeros(1, 2, 4), torch.zeros(1, 2,
                                      dtype=torch.long), 2, 0.5, 0.2), "at level 2 or 3"),
    "unknown context mode": (lambda: Context(KNOWN, X, "leaf"), "unknown context mode"),
    "integer known mask": (lambda: Context(KNOWN.long(), X), "bool tensor"),
    "float context tokens": (lambda: Context(KNOWN, X.float()), "integer tensor"),
    "context mask and tokens of different shapes": (lambda: Context(KNOWN, X[:, :4]),
                                                    "must both have shape"),
    "prompt longer than the sequence": (lambda: Context.prefix(X, 4), "p <= length"),
    "negative infill gap": (lambda: Context.infill(X, -1, X), ">= 0 positions"),
    "context for another batch": (lambda: _sample(Context(KNOWN[:2], X[:2])),
                                  r"the batch is \[3, 5\]"),
    "known token outside the vocabulary": (lambda: _sample(Context(KNOWN, X + 20)),
                                           "outside the tree's vocabulary"),
    "x differs from its context": (
        lambda: evaluate_nelbo(PROCESS, _zeros(), X, context=Context(KNOWN, (X + 1) % 20)),
        "differs from the context's tokens"),
    "a step whose known positions moved": (
        lambda: ancestral_sample_step(PROCESS, torch.zeros(1, 2, 4), torch.full((1, 2), 26), 2,
                                      0.5, 0.2, context=Context(KNOWN[:1, :2], X[:1, :2])),
        "hold the context's tokens"),
    "more masked than unknown positions": (
        lambda: count_nelbo(PROCESS, torch.zeros(3, 5, 4), X, _z(), T.long(),
                            torch.full((3,), 4), known=KNOWN), "1..L_u"),
    "perplexity of nothing": (lambda: perplexity(1.0, 0), "at least one token"),
    "bits per byte of nothing": (lambda: bits_per_byte(1.0, 0), "at least one byte"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_at_run_time(case, runtime_checks_only):
    call, message = CASES[case]
    with pytest.raises(DiffusionInputError, match=message):
        call()


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_under_shape_checking(case):
    call, _ = CASES[case]
    with pytest.raises((DiffusionInputError, jaxtyping.TypeCheckError)):
        call()


def test_errors_are_value_errors():
    assert issubclass(DiffusionInputError, ValueError)
