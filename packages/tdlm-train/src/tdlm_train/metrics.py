"""Run records: metrics as JSON lines and TensorBoard, the loss plot, the summary table.

``metrics.jsonl`` holds one object per logged step (``kind`` = ``train`` or ``val``);
TensorBoard event files go to ``tb/`` when the ``tensorboard`` package is importable (otherwise
the JSONL file is the record, and a note says so once). ``curves.png`` shows the training loss
and each level's validation NELBO against tokens seen.
"""

import json
import logging
from pathlib import Path
from typing import Any

from .atomic import atomic_write

__all__ = ["MetricsLog", "plot_curves", "summary_table"]

logger = logging.getLogger(__name__)


class MetricsLog:
    """Append-only metrics of one process (rank 0 only writes; other ranks pass ``None``)."""

    def __init__(self, run_dir: Path | None) -> None:
        self.path = None if run_dir is None else run_dir / "metrics.jsonl"
        self.tb = None
        if run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                logger.info("tensorboard is not installed: metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "tokens"):
                    self.tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])
                elif isinstance(value, list) and key == "level_nelbo":
                    for h, v in enumerate(value):
                        self.tb.add_scalar(f"{record['kind']}/nelbo_level_{h}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(run_dir: Path, title: str) -> Path | None:
    """``curves.png``: training loss and per-level validation NELBO against tokens seen."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no plot")
        return None
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["tokens"] for r in train], [r["nelbo"] for r in train], lw=1)
    left.set(xlabel="training tokens", ylabel="NELBO (nats/token)", title="training NELBO")
    if val:
        depth = len(val[0]["level_nelbo"])
        tokens = [r["tokens"] for r in val]
        for h in range(depth):
            right.plot(tokens, [r["level_nelbo"][h] for r in val], marker="o", label=f"L_{h}")
        right.plot(tokens, [r["nelbo"] for r in val], marker="s", color="k", label="total")
        right.legend()
    right.set(xlabel="training tokens", ylabel="nats/token", title="validation NELBO per level")
    fig.suptitle(title)
    fig.tight_layout()
    path = run_dir / "curves.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def summary_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
