"""Two CPU processes with torchrun (gloo): DDP trains, only rank 0 writes."""

import subprocess
import sys
from pathlib import Path

from tdlm_train.checkpoint import latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_ddp(tmp_path, small_args):
    run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "apps" / "train"),
        *small_args(run, max_steps=4, checkpoint_every=2, eval_every=2),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(latest_checkpoint(run)).state
    assert state["step"] == 4
    assert state["tokens"] == 4 * 2 * 4 * 32  # steps x ranks x batch x length
    assert result.stdout.count("run folder") == 1  # one summary: rank 0's
