"""Which weights the trainer validates (issue 27): the figure it reports as the EMA weights' is
the EMA weights' own, scored with the same seed and noise; the raw weights come back bit for bit
and the average is left as it was. Every figure is computed again here, independently: the
documented EMA recurrence replayed on the raw weights after each step, loaded into a copy of the
model and scored with :func:`tdlm_train.evaluate.validate`.

On the CPU with one thread the same computation on the same weights with the same seeded
generator is bit-identical, so the figures are compared with ``==``.
"""

import copy
import math

import pytest
import torch

from tdlm_train.cli import parse_options
from tdlm_train.config import RunConfig
from tdlm_train.evaluate import Validation, validate
from tdlm_train.overrides import apply_overrides
from tdlm_train.run import Run
from tdlm_train.trainer import Trainer, ValidationReport

STEPS = 4


class Recorder:
    def __init__(self) -> None:
        self.validations: list[ValidationReport] = []

    def on_step(self, report) -> None:
        pass

    def on_validation(self, report: ValidationReport) -> None:
        self.validations.append(report)

    def close(self) -> None:
        pass


def _run(small_args, run_dir, decay: float) -> Run:
    # A large, constant learning rate from the first step: the raw weights move far from the
    # average of their past values in a few steps.
    extra = {"optim.ema_decay": decay, "optim.lr": "1e-2", "optim.warmup_steps": "1"}
    _, _, overrides = parse_options(small_args(run_dir, **extra), set(), set())
    return Run.from_config(apply_overrides(RunConfig(), overrides))


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def _everything(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, copied."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return {k: t.detach().clone() for k, t in named}


def _score(run: Run, weights: dict[str, torch.Tensor]) -> Validation:
    """``validate`` on a copy of the run's model carrying ``weights``, as the trainer calls it."""
    model = copy.deepcopy(run.model)
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(weights[k])
    config = run.config
    return validate(
        run.process,
        model,
        run.data.val_blocks,
        batches=config.eval_batches,
        batch_size=config.batch_size,
        samples_per_level=config.diffusion.eval_samples_per_level,
        token_bytes=run.data.prepared.token_bytes,
        device=run.device,
        seed=config.seed,
    )


def _train_and_replay(run: Run, trainer: Trainer) -> dict[str, torch.Tensor]:
    """``STEPS`` steps; returns the EMA replayed independently from the raw weights after each
    (MDLM's warm-up: update n uses ``min(decay, (1 + n) / (10 + n))``; decay 0 copies)."""
    expected = _params(run.model)  # the average starts at the initial weights
    for n in range(1, STEPS + 1):
        trainer.step()
        decay = min(run.ema.decay, (1 + n) / (10 + n)) if run.ema.decay else 0.0
        for k, p in _params(run.model).items():
            expected[k] = torch.lerp(expected[k], p, 1 - decay)
    return expected


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_ema_figure_is_the_ema_weights_and_the_raw_weights_come_back(tmp_path, small_args):
    torch.manual_seed(0)
    run = _run(small_args, tmp_path / "run", decay=0.999)
    recorder = Recorder()
    trainer = Trainer(run, [recorder])
    expected_ema = _train_and_replay(run, trainer)
    assert run.ema.updates == STEPS
    # The shadow is the documented average (lerp in float32; the fused kernel may round
    # differently in the last place: 1e-6 is ~10 ulp at these magnitudes).
    assert run.ema.shadow.keys() == expected_ema.keys()
    for k, v in expected_ema.items():
        torch.testing.assert_close(run.ema.shadow[k], v, rtol=1e-6, atol=1e-7, msg=k)
    raw = _params(run.model)
    # The test means something: after 4 steps the average is far from the raw weights.
    moved = max(float((raw[k] - expected_ema[k]).abs().max()) for k in raw)
    assert moved > 1e-3

    before = _everything(run.model)
    shadow_before = {k: v.clone() for k, v in run.ema.shadow.items()}
    run.model.train()
    rng_before = torch.get_rng_state()

    reported = trainer.validate()

    # Scored independently: a copy of the model carrying the average (as the trainer holds
    # it) and one carrying the raw weights, same seed and validation blocks.
    ema_figure = _score(run, shadow_before)
    raw_figure = _score(run, raw)
    assert reported == ema_figure  # every field, exactly (deterministic on the CPU)
    assert reported.nelbo != raw_figure.nelbo  # which weights were scored matters here
    assert abs(reported.nelbo - raw_figure.nelbo) > 1e-4
    assert math.isfinite(reported.nelbo) and reported.tokens > 0
    (report,) = recorder.validations
    assert report.validation == ema_figure and report.step == STEPS
    assert report.weights.startswith("EMA weights") and f"{STEPS:,} updates" in report.weights
    assert trainer.validation == ema_figure

    # Nothing leaks out of validation: the raw weights (and buffers) bit for bit, the average
    # unchanged, the training mode and the training run's random stream as they were.
    _assert_same(_everything(run.model), before)
    _assert_same(run.ema.shadow, shadow_before)
    assert run.ema.updates == STEPS
    assert run.model.training
    assert torch.equal(torch.get_rng_state(), rng_before)

    # Validating again scores the same weights the same way.
    assert trainer.validate() == ema_figure
    _assert_same(_everything(run.model), before)


@pytest.mark.parametrize("decay", [0.0])
def test_with_the_ema_off_the_figure_is_the_raw_weights(tmp_path, small_args, decay):
    torch.manual_seed(0)
    run = _run(small_args, tmp_path / "run", decay=decay)
    recorder = Recorder()
    trainer = Trainer(run, [recorder])
    expected = _train_and_replay(run, trainer)
    raw = _params(run.model)
    _assert_same(expected, raw)  # decay 0: the "average" is the raw weights
    _assert_same(run.ema.shadow, raw)
    before = _everything(run.model)

    reported = trainer.validate()

    assert reported == _score(run, raw)
    (report,) = recorder.validations
    assert report.weights == "raw weights (EMA off)" and report.validation == reported
    _assert_same(_everything(run.model), before)
    _assert_same(run.ema.shadow, raw)
