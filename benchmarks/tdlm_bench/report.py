"""Bench outputs: the environment record, JSON, Markdown tables and the output folder (issue 6).

Every bench writes ``<out>/<name>.json`` (all figures plus :func:`environment`) and
``<out>/<name>.md`` (its tables); plots go beside them as PNG. The default folder is
``runs/bench/<name>-<YYYYmmdd-HHMMSS>``.
"""

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "environment",
    "default_out_dir",
    "markdown_table",
    "write_report",
    "mib",
    "pyplot",
    "finished_run",
]


def environment(device: torch.device) -> dict[str, Any]:
    """What a figure depends on: versions, device, threads, date and the code's git commit."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "git_commit": (commit + ("+modified" if dirty else "")) or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def default_out_dir(name: str) -> Path:
    return Path("runs") / "bench" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def mib(n_bytes: int | float) -> str:
    return f"{n_bytes / 2**20:,.0f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out_dir: Path, name: str, figures: dict[str, Any], markdown: str) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` into ``out_dir``; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    path = out_dir / f"{name}.md"
    path.write_text(markdown.rstrip() + "\n")
    return path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finished_run(run_dir: Path, steps: int) -> bool:
    """Whether a bench's training run in ``run_dir`` is complete (its checkpoint at ``steps``),
    so an interrupted bench reuses it; an incomplete one stops the bench, naming it."""
    from tdlm_train.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    if latest is not None and latest.name == f"step_{steps:08d}":
        return True
    if run_dir.exists():
        raise SystemExit(f"{run_dir} holds an incomplete run; delete it to redo it")
    return False
