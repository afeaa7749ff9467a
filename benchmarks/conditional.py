"""Benchmark: how well each model reads a context (issue 12, docs/method.md §8).

For every seed, three runs of the ``tiny`` preset at equal tokens (``--steps`` optimizer steps,
same data, order and seed): MDLM, TDLM trained unconditionally (conditioned by *projection* at
sampling and scoring time), and TDLM trained with clean context
(``--condition.probability 0.5``). Each run's final EMA weights score the same validation
blocks twice:

* **conditional**: the NELBO of each block's second half given its first half
  (``apps/eval --condition prefix:0.5``), per token of the second half;
* **hidden**: the same tokens with the first half hidden from the network (shown the root),
  the bound on their own ``-log p(x_U)`` — what conditioning has to beat.

TDLM with clean-context training is also scored by projection, to separate what the training
changes from what the way of showing the context changes. A few prompt continuations and infills
from the first seed's TDLM runs are written as text, coarse to fine.

    uv run benchmarks/conditional.py --out runs/bench/conditional [--steps 400] [--seeds 0,1,2]

Runs already complete in ``--out`` are reused, so an interrupted benchmark resumes where it
stopped. Writes ``conditional.json`` and ``conditional.md`` into ``--out``.
"""

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch
from tdlm_bench.report import environment, finished_run, markdown_table, write_report

from tdlm_train.config import preset
from tdlm_train.context import infill_layout, prompt_layout
from tdlm_train.evaluate import Condition, evaluate_run
from tdlm_train.inference import sample_report
from tdlm_train.overrides import apply_overrides
from tdlm_train.run import Run
from tdlm_train.train import train

NAME = "conditional"
# run name -> overrides of the tiny preset
RUNS = {
    "mdlm": {"kind": "mdlm"},
    "tdlm": {"kind": "tdlm"},
    "tdlm-clean": {"kind": "tdlm", "condition.probability": "0.5"},
}
# (run, context mode) pairs scored; MDLM's two modes coincide on the flat tree.
SCORED = [("mdlm", "projection"), ("tdlm", "projection"), ("tdlm-clean", "clean"),
          ("tdlm-clean", "projection")]  # fmt: skip
PROMPTS = ["def main(argv):\n    ", "import os\n"]
INFILLS = ["def add(a, b):\n<gap:8>\n    return result\n"]


def _trained(out: Path, name: str, seed: int, steps: int) -> Path:
    run_dir = out / "runs" / f"{name}-seed{seed}"
    if finished_run(run_dir, steps):
        return run_dir  # complete: reuse
    settings = {
        **RUNS[name],
        "run_dir": str(run_dir),
        "seed": str(seed),
        "max_steps": str(steps),
        "minutes": "0",
        "eval_every": str(steps),
        "checkpoint_every": str(steps),
        "sample_count": "1",
    }
    train(apply_overrides(preset("tiny"), settings))
    return run_dir


def _scores(run_dir: Path, mode: str, batches: int) -> dict:
    """Conditional and hidden NELBO of the second halves, cached beside the run."""
    cached = run_dir / f"conditional-{mode}-{batches}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    run = Run.from_checkpoint(run_dir, device=torch.device("cpu"))
    evaluation = evaluate_run(run, run.config, batches=batches, condition=Condition(0.5, mode))
    scores = {
        "conditional": dataclasses.asdict(evaluation.validation),
        "hidden": dataclasses.asdict(evaluation.unconditional),
    }
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(scores))
    tmp.replace(cached)
    return scores


def _texts(run_dir: Path, mode: str) -> str:
    run = Run.from_checkpoint(run_dir, device=torch.device("cpu"))
    sampler = run.sampler(keep_trajectory=True)
    pieces = []
    layouts = [prompt_layout(run.tokenizer, p, 40) for p in PROMPTS]
    layouts += [infill_layout(run.tokenizer, text) for text in INFILLS]
    for layout in layouts:
        report = sample_report(run, count=1, length=40, sampler=sampler, layout=layout, mode=mode)
        pieces.append("```\n" + report + "\n```")
    return "\n\n".join(pieces)


def _row(label: str, values: list[dict], mdlm: list[float]) -> list[str]:
    cond = [v["conditional"]["nelbo"] for v in values]
    hidden = [v["hidden"]["nelbo"] for v in values]
    gains = [h - c for c, h in zip(cond, hidden, strict=True)]
    ratios = [c / m for c, m in zip(cond, mdlm, strict=True)]

    def spread(xs: list[float], digits: int = 4) -> str:
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.fmean(xs):.{digits}f} ± {sd:.{digits}f}"

    levels = " + ".join(
        f"{statistics.fmean(v['conditional']['level_nelbo'][h] for v in values):.3f}"
        for h in range(len(values[0]["conditional"]["level_nelbo"]))
    )
    return [label, spread(cond), spread(hidden), spread(gains), spread(ratios, 3), levels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/conditional"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--batches", type=int, default=16, help="validation batches scored")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    dirs = {(n, s): _trained(args.out, n, s, args.steps) for s in seeds for n in RUNS}
    scores = {f"{n}/{m}": [_scores(dirs[n, s], m, args.batches) for s in seeds] for n, m in SCORED}
    mdlm = [v["conditional"]["nelbo"] for v in scores["mdlm/projection"]]
    rows = [_row(key, values, mdlm) for key, values in scores.items()]
    headers = ["run / context", "conditional NELBO", "hidden NELBO", "gain", "/ MDLM", "levels"]
    markdown = (
        f"{markdown_table(headers, rows)}\n\n"
        f"{args.steps} steps each (equal tokens), seeds {seeds}, {args.batches} validation "
        "batches; NELBO in nats per token of the second half of each block.\n\n"
        f"## TDLM, clean-context training (seed {seeds[0]}), coarse to fine\n\n"
        f"{_texts(dirs['tdlm-clean', seeds[0]], 'clean')}\n\n"
        f"## TDLM, unconditional training, projection (seed {seeds[0]})\n\n"
        f"{_texts(dirs['tdlm', seeds[0]], 'projection')}\n"
    )
    figures = {"scores": scores, "steps": args.steps, "seeds": seeds,
               "environment": environment(torch.device("cpu"))}  # fmt: skip
    print(markdown)
    write_report(args.out, NAME, figures, markdown)


if __name__ == "__main__":
    main()
