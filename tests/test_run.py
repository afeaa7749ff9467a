"""The `Run` and its `Trainer` as a library: parts with state dicts, one-call save and resume,
inference runs, watchers, and configs saved before the libraries' configs were nested."""

import json

import pytest
import torch

from tdlm_train.checkpoint import load_checkpoint
from tdlm_train.cli import parse_options
from tdlm_train.config import RunConfig, run_config_from_dict
from tdlm_train.errors import UserError
from tdlm_train.overrides import apply_overrides, config_to_dict
from tdlm_train.run import Run
from tdlm_train.trainer import StepReport, Trainer, ValidationReport


def _config(small_args, run_dir, **extra) -> RunConfig:
    _, _, overrides = parse_options(small_args(run_dir, **extra), set(), set())
    return apply_overrides(RunConfig(), overrides)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Recorder:
    def __init__(self) -> None:
        self.steps: list[StepReport] = []
        self.validations: list[ValidationReport] = []
        self.closed = False

    def on_step(self, report: StepReport) -> None:
        self.steps.append(report)

    def on_validation(self, report: ValidationReport) -> None:
        self.validations.append(report)

    def close(self) -> None:
        self.closed = True


def test_a_run_saves_and_resumes_in_one_call_each(tmp_path, small_args):
    """Every part's state goes into the checkpoint and comes back: a run resumed from it
    continues exactly as the original does (same next loss, same weights after a step)."""
    config = _config(small_args, tmp_path / "run")
    run = Run.from_config(config)
    assert set(run.parts()) == {"train", "model", "ema", "optimizer", "rng", "data_order"}
    trainer = Trainer(run)
    for _ in range(2):
        trainer.step()
    path = trainer.save()
    assert path is not None and load_checkpoint(path).state["step"] == 2

    resumed = Run.from_checkpoint(path, training=True, config=config)
    assert resumed.state.step == 2 and resumed.state.tokens == run.state.tokens
    assert _same(resumed.state_dict()["model"], run.state_dict()["model"])
    assert resumed.order.state_dict() == run.order.state_dict()
    # One process, one global RNG: each continues from the saved state (which resuming set).
    saved_rng = torch.get_rng_state()
    first = Trainer(run).step()
    torch.set_rng_state(saved_rng)
    second = Trainer(resumed).step()
    assert first.nelbo == second.nelbo and first.grad_norm == second.grad_norm
    assert _same(resumed.state_dict()["model"], run.state_dict()["model"])
    assert _same(resumed.ema.state_dict()["shadow"], run.ema.state_dict()["shadow"])


def test_load_state_dict_restores_a_fresh_run(tmp_path, small_args):
    config = _config(small_args, tmp_path / "run")
    trained = Run.from_config(config)
    Trainer(trained).step()
    states = trained.state_dict()
    fresh = Run.from_config(config)
    assert not _same(fresh.state_dict()["model"], states["model"])
    fresh.load_state_dict(states)
    assert _same(fresh.state_dict()["model"], states["model"])
    assert fresh.state.step == 1 and fresh.ema.updates == 1


def test_watchers_see_every_step_and_validation(tmp_path, small_args):
    run = Run.from_config(_config(small_args, tmp_path / "run", max_steps=4, eval_every=2))
    recorder = Recorder()
    result = Trainer(run, [recorder]).fit()
    assert [r.step for r in recorder.steps] == [1, 2, 3, 4]
    assert [r.step for r in recorder.validations] == [2, 4]
    assert recorder.closed and result.steps == 4 and result.validation is not None
    assert run.state.best_step in (2, 4)
    assert recorder.validations[-1].weights.startswith("EMA weights")


def test_an_inference_run_reads_only_the_weights(tmp_path, small_args):
    config = _config(small_args, tmp_path / "run")
    run = Run.from_config(config)
    run.save_files()
    trainer = Trainer(run)
    trainer.step()
    path = trainer.save()
    for name in ("optimizer.pt", "rng.safetensors", "model.safetensors"):
        (path / name).unlink()
    moved = tmp_path / "shared-elsewhere"  # a run folder is self-contained: it can move
    (tmp_path / "run").rename(moved)
    trained = Run.from_checkpoint(moved, device=torch.device("cpu"))
    assert trained.checkpoint == moved / path.relative_to(tmp_path / "run")
    assert trained.folder == moved and trained.tokenizer_file().is_file()
    assert trained.state.step == 1
    assert not trained.model.training and trained.optimizer is None
    ema = run.ema.state_dict()["shadow"]
    assert _same({k: v for k, v in trained.model.state_dict().items() if k in ema}, ema)
    with pytest.raises(UserError, match="rebuilt for inference"):
        trained.parts()
    with pytest.raises(ValueError, match="cannot be trained"):
        Trainer(trained)


def test_run_sampler_covers_every_level():
    class Tree:
        depth = 5

    run = Run.__new__(Run)
    run.config, run.tree = RunConfig(), Tree()
    assert run.sampler(steps=2).steps == 5
    assert run.sampler(temperature=0.0).temperature == 0
    with pytest.raises(UserError, match="sampler: temperature"):
        run.sampler(temperature=-1.0)


def test_configs_saved_before_nesting_still_load():
    old = config_to_dict(RunConfig())
    old["model"]["kind"] = old.pop("kind")
    schedule, sampler = old["diffusion"].pop("schedule"), old["diffusion"].pop("sampler")
    old["diffusion"] |= {"alpha": "cosine", "allocation": schedule["allocation"], "gamma": 0.5}
    old["diffusion"] |= {"sample_steps": 12, "temperature": 0.5, "top_p": sampler["top_p"]}
    old["model"]["kind"] = "mdlm"
    config = run_config_from_dict(json.loads(json.dumps(old)), "old config.json")
    assert config.kind == "mdlm" and config.diffusion.schedule.alpha == "cosine"
    assert config.diffusion.sampler.steps == 12 and config.diffusion.sampler.temperature == 0.5
