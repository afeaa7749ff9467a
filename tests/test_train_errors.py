"""Bad input to the apps: one clear line, status 2, and nothing already written is lost."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdlm_train.checkpoint import latest_checkpoint, list_checkpoints
from tdlm_train.cli import eval_main, sample_main, train_main

ROOT = Path(__file__).resolve().parents[1]


def _fails(capsys, main, argv, message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error:") and message in err[-1], err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"data.source": "/nonexistent/*.txt"}, "no such file"),
        ({"batch_size": "0"}, "--batch_size >= 1"),
        ({"optim.lr": "fast"}, "--optim.lr expects float, got 'fast'"),
        ({"optim.schedule": "linear"}, "constant or cosine"),
        ({"model.preset": "huge"}, "--model: preset must be one of"),
        ({"model.attention": "flash"}, "--model: attention must be one of"),
        pytest.param(
            {"model.attention": "xformers"},
            "xformers needs a CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only case"),
        ),
        ({"diffusion.schedule.allocation": "random"}, "schedule.allocation expects one of"),
        # A fused head loss takes a softmax over every slot: not on a tree with fewer children.
        ({"diffusion.head_loss": "chunked"}, "--diffusion.head_loss: head loss 'chunked' takes"),
        ({"kind": "mdlm", "diffusion.head_loss": "cce"}, "head loss 'cce'"),
        ({"tree.method": "magic"}, "tree.method must be one of"),
        ({"tree.method": "embedding"}, "needs tree.embeddings"),
        (
            {"tree.method": "embedding", "tree.embeddings": "/nonexistent"},
            "tree.embeddings /nonexistent: neither a checkpoint nor a run folder",
        ),
        ({"model.checkpoint_blocks": "first"}, "takes all, none or block indices"),
        ({"model.checkpoint_blocks": "0,7"}, "no block [7] in a"),
        ({"no_such.option": "1"}, "unknown option --no_such.option"),
        ({"seq_len": "4096"}, "validation split has fewer than 4096 tokens"),
    ],
)
def test_invalid_configs(tmp_path, small_args, capsys, extra, message):
    _fails(capsys, train_main, small_args(tmp_path / "run", **extra), message)
    assert not list_checkpoints(tmp_path / "run")


def test_empty_and_unreadable_corpus(tmp_path, small_args, capsys):
    (tmp_path / "empty.txt").write_text("\n \n")
    _fails(
        capsys,
        train_main,
        small_args(tmp_path / "a", **{"data.source": tmp_path / "empty.txt"}),
        "no non-empty documents",
    )
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\xfa")
    _fails(
        capsys,
        train_main,
        small_args(tmp_path / "b", **{"data.source": tmp_path / "binary.txt"}),
        "as UTF-8 text",
    )


def test_tree_for_another_vocabulary(tmp_path, small_args, capsys):
    from tdlm_tree import random_tree, save_tree

    save_tree(random_tree(500, 8), tmp_path / "tree.npz")
    _fails(
        capsys,
        train_main,
        small_args(tmp_path / "run", **{"tree.path": tmp_path / "tree.npz"}),
        "500 leaves but the vocabulary has 300",
    )


def test_checkpoint_errors(tmp_path, small_args, capsys):
    run = tmp_path / "run"
    assert train_main(small_args(run, max_steps=3)) == 0
    capsys.readouterr()
    _fails(capsys, train_main, small_args(run, max_steps=6), "already holds checkpoints")
    _fails(
        capsys,
        train_main,
        [*small_args(run, max_steps=6, **{"model.n_blocks": 2}), "--resume"],
        "differs from the checkpoint's: model.n_blocks: checkpoint 1, now 2",
    )
    _fails(capsys, train_main, [*small_args(tmp_path / "fresh"), "--resume"], "no checkpoint")
    model = latest_checkpoint(run) / "model.safetensors"
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 3])
    _fails(capsys, train_main, [*small_args(run, max_steps=6), "--resume"], "corrupt or truncated")
    # Inference reads only the weights it uses: the raw ones here.
    _fails(capsys, eval_main, ["--checkpoint", str(run), "--raw_weights"], "corrupt or truncated")
    _fails(capsys, sample_main, ["--checkpoint", str(tmp_path / "nothing")], "neither a checkpoint")
    assert model.read_bytes() == good[: len(good) // 3]  # nothing was overwritten


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, small_args, capsys):
    run = tmp_path / "run"
    argv = small_args(
        run,
        max_steps=40,
        checkpoint_every=2,
        **{"optim.lr": "1e30", "optim.warmup_steps": "1", "optim.grad_clip": "0"},
    )
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the loss became nan" in err or "the loss became inf" in err
    assert "at step" in err and "Last good checkpoint" in err


def test_app_help_lists_every_option():
    for app in ("train", "eval", "sample"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "apps" / app), "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "--checkpoint" in result.stdout or app == "train"
    train_help = subprocess.run(
        [sys.executable, str(ROOT / "apps" / "train"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--optim.lr", "--tree.branching", "--data.source", "--minutes", "--resume"):
        line = next(line for line in train_help.splitlines() if line.strip().startswith(option))
        assert len(line.split()) > 2, f"{option} has no one-line meaning"
