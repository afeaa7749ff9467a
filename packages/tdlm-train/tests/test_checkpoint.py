"""Checkpoint files: round trip, pruning, and clear errors for damaged folders."""

import json

import pytest
import torch

from tdlm_train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from tdlm_train.errors import UserError


def _states(step, best=None):
    return {
        "train": {"step": step, "tokens": 10 * step, "best_nelbo": 1.5, "best_step": best},
        "model": {"w": torch.full((3,), float(step))},
        "ema": {"shadow": {"w": torch.zeros(3)}, "updates": step},
        "optimizer": {
            "state": {0: {"exp_avg": torch.ones(2)}},
            "param_groups": [{"lr": 0.1, "params": [0]}],
        },
        "rng": {"cpu": torch.get_rng_state()},
        "data_order": {"epoch": 0, "step_in_epoch": step, "seed": 0, "world_size": 1},
    }


def _save(run, step, best=None, keep=2):
    return save_checkpoint(run, _states(step, best), {"config": {"a": 1}}, keep_last=keep)


def test_round_trip(tmp_path):
    path = _save(tmp_path, 3)
    ckpt = load_checkpoint(path)
    assert ckpt.state["config"] == {"a": 1} and ckpt.state["step"] == 3
    assert torch.equal(ckpt.model["w"], torch.full((3,), 3.0))
    assert torch.equal(ckpt.rng["cpu"], torch.get_rng_state())
    assert ckpt.optimizer["param_groups"][0]["lr"] == 0.1


def test_states_round_trip_exactly(tmp_path):
    """What a run saves is what it loads: the file layout is invisible to the parts."""
    saved = _states(4, best=2)
    loaded = load_checkpoint(save_checkpoint(tmp_path, saved, {"config": {}}, keep_last=2))
    states = loaded.states()
    assert set(states) == set(saved)
    for name in ("train", "data_order", "optimizer"):
        assert states[name].keys() == saved[name].keys()
    assert states["train"] == saved["train"] and states["data_order"] == saved["data_order"]
    assert states["ema"]["updates"] == 4
    assert torch.equal(states["ema"]["shadow"]["w"], saved["ema"]["shadow"]["w"])
    assert torch.equal(states["model"]["w"], saved["model"]["w"])


def test_keeps_the_last_n_and_the_best(tmp_path):
    for step in range(1, 7):
        _save(tmp_path, step, best=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 5, 6]
    assert latest_checkpoint(tmp_path).name == "step_00000006"


def test_leftover_temporary_folders_are_ignored(tmp_path):
    _save(tmp_path, 1)
    (tmp_path / "checkpoints" / ".step_00000002.abc.tmp").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000001"


@pytest.mark.parametrize(
    "damage", ["truncate-model", "delete-state", "garbage-optimizer", "bad-json"]
)
def test_damaged_checkpoints_are_clear_errors(tmp_path, damage):
    path = _save(tmp_path, 1)
    if damage == "truncate-model":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "delete-state":
        (path / "state.json").unlink()
    elif damage == "garbage-optimizer":
        (path / "optimizer.pt").write_bytes(b"not a torch file")
    else:
        (path / "state.json").write_text("{")
    with pytest.raises(UserError, match=f"checkpoint {path}"):
        load_checkpoint(path)


def test_optimizer_file_is_never_unpickled(tmp_path):
    path = _save(tmp_path, 1)

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"state": Evil()}, path / "optimizer.pt")
    with pytest.raises(UserError, match="optimizer.pt holds objects other than tensors") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)  # torch's advice: run the file's code
    assert json.loads((path / "state.json").read_text())["step"] == 1
