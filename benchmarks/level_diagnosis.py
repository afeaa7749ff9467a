"""Per-level diagnosis of finished quality benches: where each model's NELBO goes.

    uv run benchmarks/level_diagnosis.py runs/bench/quality-cpu [more bench folders ...]

For every run of each ``apps/bench quality`` output folder, adds the no-context references of
``tdlm_bench.quality.level_references`` (the tree's conditional entropies on the training
split, and the training unigram's per-level NLL on the validation tokens) where the JSON lacks
them — benches run before these references existed — then rewrites ``quality.json``, ``.md`` and
``.png`` from it (the training runs are not touched) and prints the diagnosis table.
Needs the runs' folders (``<out>/runs``) and their data cache.
"""

import argparse
import json
from pathlib import Path

from tdlm_bench.quality import (
    _plot,
    _verdict,
    level_references,
    level_table,
    quality_markdown,
)
from tdlm_bench.report import write_report


def _run_dirs(out: Path, runs: list[dict]) -> list[Path]:
    """Each run's folder: recorded since the field existed, else from the bench's fixed order
    (per seed: mdlm, tdlm, then ablation-i, whose two-stage runs train in ``stage2``)."""
    dirs, index = [], {}
    for run in runs:
        if "run_dir" in run:
            dirs.append(Path(run["run_dir"]))
            continue
        seed_dir = out / "runs" / f"seed{run['seed']}"
        if run["label"] in ("mdlm", "tdlm"):
            dirs.append(seed_dir / run["label"])
            continue
        i = index[run["seed"]] = index.get(run["seed"], -1) + 1
        dirs.append(seed_dir / f"ablation-{i}" / ("stage2" if "stage1" in run else ""))
    return dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="+", type=Path, help="apps/bench quality --out folders")
    args = parser.parse_args()
    for out in args.benches:
        figures = json.loads((out / "quality.json").read_text())
        runs = figures["runs"]
        for run, run_dir in zip(runs, _run_dirs(out, runs), strict=True):
            if "unigram_val_nll" not in run:
                run.update(level_references(run_dir))
        figures["verdict"] = _verdict(runs)
        _plot(runs, out / "quality.png")
        write_report(out, "quality", figures, quality_markdown(figures))
        print(f"{out}:")
        for label, v in figures["verdict"].items():
            print(f"  {label:<24} {level_table(v)}")


if __name__ == "__main__":
    main()
