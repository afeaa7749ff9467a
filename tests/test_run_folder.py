"""The guarded run folder and option checks (issue 11): a second run on a folder is refused,
no folder problem is found late, a failure after training started keeps the last checkpoint and
says so in one line, killed runs' leftovers are cleaned, a changed config is named field by field
before any data work, options are checked whatever their order, and inference needs only the
weights."""

import os
import re
import shutil
import subprocess

import pytest

from tdlm_train import trainer
from tdlm_train.checkpoint import latest_checkpoint, list_checkpoints
from tdlm_train.cli import eval_main, sample_main, train_main
from tdlm_train.config import RunConfig
from tdlm_train.errors import UserError
from tdlm_train.overrides import apply_overrides
from tdlm_train.run_folder import RunFolderLock


def _error_lines(capsys) -> list[str]:
    lines = capsys.readouterr().err.strip().splitlines()
    return [line for line in lines if line.startswith("error:")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_args):
    """A 3-step run with checkpoints at steps 3 (copied by the tests that change it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train_main(small_args(run, max_steps=3)) == 0
    return run


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(tmp_path, small_args, capsys):
    run = tmp_path / "run"
    with RunFolderLock(run):
        assert train_main(small_args(run)) == 2
    assert _error_lines(capsys) == [
        f"error: {run} is in use by another run (pid {os.getpid()}); wait for it to finish or "
        "choose another --run_dir"
    ]
    assert not list_checkpoints(run)
    assert train_main(small_args(run, max_steps=1)) == 0  # released: the folder is usable


def test_an_unusable_folder_is_refused_before_any_data_work(
    tmp_path, small_args, capsys, monkeypatch, no_data_work
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert train_main(small_args(blocker / "run")) == 2
    assert "cannot use" in _error_lines(capsys)[0]
    monkeypatch.setattr(
        "tdlm_train.run_folder.shutil.disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 2**20)
    )
    assert train_main(small_args(tmp_path / "full")) == 2
    assert "has 1 MiB free; a run needs about 64 MiB" in _error_lines(capsys)[0]


def test_a_failed_validation_keeps_the_checkpoint_written_before_it(
    tmp_path, small_args, capsys, monkeypatch
):
    def broken(*_args, **_kwargs):
        raise RuntimeError("validation broke")

    monkeypatch.setattr(trainer, "validate", broken)
    run = tmp_path / "run"
    assert train_main(small_args(run, max_steps=3)) == 2
    kept = run / "checkpoints" / "step_00000003"
    assert _error_lines(capsys) == [
        "error: training stopped at step 3 (RuntimeError: validation broke); "
        f"the last checkpoint, {kept}, is intact"
    ]
    assert latest_checkpoint(run) == kept


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous(
    tmp_path, finished, small_args, capsys, monkeypatch
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)

    def full(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64")

    monkeypatch.setattr("tdlm_train.checkpoint.save_file", full)
    assert train_main([*small_args(run, max_steps=6), "--resume"]) == 2
    (line,) = _error_lines(capsys)
    assert line.startswith(f"error: could not write checkpoint {run}/checkpoints/step_00000006")
    assert "MiB free there" in line
    assert line.endswith(f"the last checkpoint, {run}/checkpoints/step_00000003, is intact")
    assert [step for step, _ in list_checkpoints(run)] == [3]


def _dead_pid() -> int:
    """The pid of a process that has ended (so no TDLM writer owns its marked names)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_killed_runs_leftovers_are_cleaned_and_a_lone_old_copy_restored(
    tmp_path, finished, small_args
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    checkpoints = run / "checkpoints"
    pid = _dead_pid()
    (checkpoints / f".tdlm-tmp-{pid}-step_00000006-abc12345").mkdir()
    (run / f".tdlm-tmp-{pid}-metrics.jsonl-xyz12345").write_text("partial")
    # Killed between replace_dir's two renames: the only complete copy is the aside one.
    os.replace(checkpoints / "step_00000003", checkpoints / f".tdlm-old-{pid}-step_00000003")
    # The user's files that look like leftovers, and a live process's temporary: kept.
    mine = {
        run / "thesis.old": b"chapter 1",
        run / ".notes.abc.tmp": b"draft",
        checkpoints / "step_00000003.old": b"a copy I made",
        checkpoints / "step_00000099": b"a file, not a checkpoint",
        run / f".tdlm-tmp-{os.getppid()}-config.json-live1234": b"being written",
    }
    for path, data in mine.items():
        path.write_bytes(data)
    assert train_main([*small_args(run, max_steps=4), "--resume"]) == 0
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == ["step_00000003", "step_00000003.old", "step_00000004", "step_00000099"]
    assert not list(run.glob(f".tdlm-tmp-{pid}-*"))
    assert {path: path.read_bytes() for path in mine} == mine


def test_a_changed_config_is_named_field_by_field_before_any_data_work(
    finished, small_args, capsys, no_data_work
):
    argv = small_args(finished, max_steps=6, **{"model.n_blocks": 2, "optim.lr": "1e-3"})
    assert train_main([*argv, "--resume"]) == 2
    (line,) = _error_lines(capsys)
    assert "model.n_blocks: checkpoint 1, now 2" in line
    assert "optim.lr: checkpoint 0.003, now 0.001" in line


@pytest.mark.parametrize(
    "flags",
    [["--minutes", "0", "--max_steps", "2"], ["--max_steps", "2", "--minutes", "0"]],
)
def test_options_are_checked_once_whatever_their_order(flags):
    names = [flag.removeprefix("--") for flag in flags[::2]]
    config = apply_overrides(RunConfig(), dict(zip(names, flags[1::2], strict=True)))
    assert (config.max_steps, config.minutes) == (2, 0)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("optim.lr", "nan", "--optim.lr must be a positive number"),
        ("minutes", "nan", "--minutes and --max_steps must be >= 0"),
        ("optim.betas", "2,3", "--optim.betas takes two numbers in [0, 1)"),
        ("seed", "-1", "--seed must be >= 0"),
        ("eval_batches", "0", "must be >= 1: --eval_batches 0"),
        ("sample_count", "0", "must be >= 1: --sample_count 0"),
        # The libraries' own configs (nested as they are) speak through their section.
        ("diffusion.sampler.temperature", "-1", "--diffusion.sampler: temperature must be"),
        ("diffusion.sampler.steps", "0", "--diffusion.sampler: the sampler needs at least"),
        ("diffusion.schedule.alpha", "sine", "--diffusion.schedule.alpha expects one of"),
        ("model.dropout", "1.5", "--model: dropout must lie in [0, 1)"),
        ("model.checkpoint_blocks", "x", "--model: checkpoint_blocks takes all, none or"),
        ("model.preset", "huge", "--model: preset must be one of"),
        ("kind", "gpt", "--kind (--model) must be tdlm, mdlm or ar"),
            ("model.spend", "height", "--model: spend must be one of"),
            ("diffusion.head_loss", "fast", "unknown --diffusion.head_loss 'fast'"),
    ],
)
def test_nonsense_values_get_one_clear_sentence(flag, value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        apply_overrides(RunConfig(), {flag: value})


@pytest.mark.parametrize("reverse", [False, True])
def test_every_bad_value_is_named_on_its_own_line(reverse):
    """Values that convert but make no sense, in several sections and within one, all at once
    and whatever the flag order."""
    flags = [
        ("optim.lr", "nan"),
        ("optim.warmup_steps", "-2"),
        ("seed", "-1"),
        ("model.dropout", "1.5"),
        ("diffusion.sampler.top_p", "0"),
    ]
    overrides = dict(reversed(flags) if reverse else flags)
    with pytest.raises(UserError) as caught:
        apply_overrides(RunConfig(), overrides)
    lines = str(caught.value).splitlines()
    assert len(lines) == 5, lines
    for flag, _ in flags:
        section = flag if flag.startswith(("optim", "seed")) else flag.rsplit(".", 1)[0]
        assert any(f"--{section}" in line for line in lines), (flag, lines)


def test_every_unreadable_flag_is_named_on_its_own_line(tmp_path, small_args, capsys):
    argv = small_args(tmp_path / "run", **{"optim.lr": "fast", "batch_size": "many"})
    assert train_main(argv) == 2
    assert sorted(_error_lines(capsys)) == [
        "error: --batch_size expects int, got 'many'",
        "error: --optim.lr expects float, got 'fast'",
    ]


def test_inference_needs_only_the_weights_and_samples_greedily(tmp_path, finished, capsys):
    run = tmp_path / "shared"
    shutil.copytree(finished, run)
    for checkpoint in (run / "checkpoints").iterdir():
        (checkpoint / "optimizer.pt").unlink()
        (checkpoint / "rng.safetensors").unlink()
    assert eval_main(["--checkpoint", str(run), "--batches", "1"]) == 0
    greedy = ["--checkpoint", str(run), "--count", "2", "--temperature", "0", "--length", "12"]
    assert sample_main(greedy) == 0
    assert "2 samples of 12 tokens" in capsys.readouterr().out
    for flag in ("--count", "--steps", "--length"):
        assert sample_main(["--checkpoint", str(run), flag, "0"]) == 2
        assert _error_lines(capsys) == [f"error: {flag} must be >= 1, got 0"]
    out = tmp_path / "new" / "folder" / "eval.json"
    assert eval_main(["--checkpoint", str(run), "--batches", "1", "--out", str(out)]) == 0
    assert out.is_file()
    for flag in ("--kind", "--model.preset"):
        assert eval_main(["--checkpoint", str(run), flag, "mdlm"]) == 2
        assert f"{flag} cannot change them" in _error_lines(capsys)[0]


def test_trees_without_a_tokenizer_fingerprint_warn(tmp_path, small_args, caplog):
    from tdlm_tree import random_tree, save_tree

    path = tmp_path / "tree.npz"
    save_tree(random_tree(300, 8, seed=0), path)
    with caplog.at_level("WARNING"):
        assert train_main(small_args(tmp_path / "run", max_steps=1, **{"tree.path": path})) == 0
    # The run trains: the warning names a risk, it does not refuse.
    assert "records no tokenizer fingerprint" in caplog.text
