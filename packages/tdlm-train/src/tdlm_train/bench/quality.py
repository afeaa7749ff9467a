"""``apps/bench quality``: MDLM and TDLM trained at one budget, side by side (issue 6, item 3).

Every run is ``tdlm_train.trainer.train`` on the ``tiny`` run preset (plus any overrides) with the
same seed, data order, optimizer and batch; only the model kind, the tree and the level time
allocation differ. The protocol gives both comparisons of the issue exactly, without
interpolation:

1. MDLM trains for ``--minutes`` of wall-clock time: S steps, T seconds.
2. TDLM trains for S steps (equal tokens; its final validation is the equal-token figure), then,
   if it got there in less than T seconds, resumes from its checkpoint until its training time
   reaches T (equal wall-clock; the final validation). Validation time inside the loop counts
   as training time for both (TDLM's validation costs one pass per level: conservative).
3. Each ablation (``--trees``, ``--branchings``, ``--leaf-cluster-sizes``, ``--allocations``)
   is one more TDLM run of S steps, changing that one setting of the base TDLM.

Reported per run: validation NELBO, perplexity (bound), bits per byte, per-level NELBO, the
learning curves (``metrics.jsonl``) against tokens and wall-clock time, and the unigram entropy
of each generated sample (nats; ``-Σ p log p`` over the sample's token frequencies: low values
flag repetitive text), optionally generative perplexity (:mod:`tdlm_train.genppl`). Samples come
from each run's final EMA weights (the base TDLM's: after the equal wall-clock phase).
"""

import dataclasses
import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tdlm_diffusion import SamplerConfig

from ..config import RunConfig, preset
from ..errors import UserError
from ..evaluate import Validation, sample_texts
from ..inference import load_trained
from ..overrides import apply_overrides
from ..runtime import pick_device
from ..trainer import train
from .report import environment, markdown_table, pyplot, write_report

__all__ = ["QualityOptions", "run_quality", "unigram_entropy"]


@dataclass(frozen=True, kw_only=True)
class QualityOptions:
    minutes: float = 8.0  # MDLM's wall-clock training budget (TDLM: its tokens, then its time)
    data: str = ""  # corpus source (default: the tiny preset's embedded corpus)
    trees: tuple[str, ...] = ()  # ablation: tree constructions besides cooccurrence
    branchings: tuple[int, ...] = ()  # ablation: branching K besides 64
    leaf_cluster_sizes: tuple[int, ...] = ()  # ablation: children per level-1 node
    allocations: tuple[str, ...] = ()  # ablation: level time allocations besides uniform
    eval_every: int = 100  # steps between validations (the learning curves' points)
    samples: int = 8  # generated sequences per model for the unigram entropy
    gen_ppl_model: str = ""  # a transformers causal LM to score the samples with
    overrides: dict[str, str] = field(default_factory=dict)  # --section.key for every run
    out_dir: Path = Path("runs/bench/quality")


def unigram_entropy(tokens: list[int]) -> float:
    """Entropy (nats) of the token frequencies within one sequence."""
    counts = Counter(tokens)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def _variants(options: QualityOptions) -> list[tuple[str, dict[str, str]]]:
    """(label, overrides) of every TDLM ablation run."""
    out = [(f"tdlm tree={t}", {"tree.method": t}) for t in options.trees]
    out += [(f"tdlm K={k}", {"tree.branching": str(k)}) for k in options.branchings]
    out += [
        (f"tdlm leaf={c}", {"tree.leaf_cluster_size": str(c)}) for c in options.leaf_cluster_sizes
    ]
    out += [(f"tdlm alloc={a}", {"diffusion.allocation": a}) for a in options.allocations]
    return out


def _config(options: QualityOptions, run_dir: Path, changes: dict[str, str]) -> RunConfig:
    base = {
        "run_dir": str(run_dir),
        "eval_every": str(options.eval_every),
        "checkpoint_every": str(10**9),  # only the final checkpoint
        "keep_last": "1",
        **({"data.source": options.data} if options.data else {}),
        **options.overrides,
        **changes,
    }
    return apply_overrides(preset("tiny"), base)


def _val_records(
    run_dir: Path, offset_after: int | None = None, offset: float = 0.0
) -> list:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = []
    for r in records:
        if r["kind"] != "val":
            continue
        # A resumed invocation's clock restarts at 0: shift its records by the first one's time.
        shift = offset if offset_after is not None and r["step"] > offset_after else 0.0
        curve.append(
            {
                "step": r["step"],
                "tokens": r["tokens"],
                "seconds": r["seconds"] + shift,
                "nelbo": r["nelbo"],
                "level_nelbo": r["level_nelbo"],
            }
        )
    return curve


def _generated(run_dir: Path, options: QualityOptions, device: torch.device) -> dict:
    loaded = load_trained(str(run_dir), device)
    config = loaded.files.config
    texts, result = sample_texts(
        loaded.process,
        loaded.model,
        loaded.files.tokenizer,
        count=options.samples,
        length=config.seq_len,
        config=SamplerConfig(steps=max(config.diffusion.sample_steps, loaded.files.tree.depth)),
        device=device,
        seed=config.seed,
    )
    entropies = [unigram_entropy(row.tolist()) for row in result.tokens.cpu()]
    out = {
        "unigram_entropy": {
            "mean": statistics.fmean(entropies),
            "min": min(entropies),
            "per_sample": entropies,
        },
        "samples": [t[:300] for t in texts[:2]],
    }
    if options.gen_ppl_model:
        from ..genppl import generative_perplexity

        out["gen_ppl"] = dataclasses.asdict(
            generative_perplexity(texts, options.gen_ppl_model, device=device)
        )
    return out


def _figures(label: str, validation: Validation | None, run, extra: dict) -> dict:
    return {
        "label": label,
        "steps": run.steps,
        "tokens": run.tokens,
        "seconds": run.seconds,
        "tokens_per_second": run.tokens_per_second,
        "validation": dataclasses.asdict(validation) if validation else None,
        **extra,
    }


def run_quality(options: QualityOptions, log=print) -> dict:
    """Train the runs of the module doc; write quality.json/.md/.png; return the figures."""
    if options.minutes <= 0 or options.samples < 1:
        raise UserError("--minutes must be > 0 and --samples >= 1")
    runs_dir = options.out_dir / "runs"
    if runs_dir.exists():
        raise UserError(f"{runs_dir} exists; choose another --out")
    mdlm_config = _config(
        options,
        runs_dir / "mdlm",
        {"model.kind": "mdlm", "minutes": str(options.minutes), "max_steps": "0"},
    )
    device = pick_device(mdlm_config.device)
    log(f"MDLM: {options.minutes} minutes of training")
    mdlm = train(mdlm_config)
    steps, budget = mdlm.steps, mdlm.seconds
    runs = [
        _figures(
            "mdlm",
            mdlm.validation,
            mdlm,
            {
                "curve": _val_records(mdlm.run_dir),
                **_generated(mdlm.run_dir, options, device),
            },
        )
    ]
    log(f"TDLM: {steps} steps (MDLM's tokens), then up to MDLM's {budget:.0f} s")
    tdlm_dir = runs_dir / "tdlm"
    tdlm_config = _config(
        options, tdlm_dir, {"model.kind": "tdlm", "max_steps": str(steps), "minutes": "0"}
    )
    tdlm = train(tdlm_config)
    equal_tokens = tdlm.validation
    equal_time, seconds = None, tdlm.seconds
    if tdlm.seconds < budget:
        more = dataclasses.replace(tdlm_config, max_steps=0, minutes=(budget - tdlm.seconds) / 60)
        resumed = train(more, resume=True)
        equal_time, seconds = resumed.validation, tdlm.seconds + resumed.seconds
        extra_steps = resumed.steps
    else:
        extra_steps = tdlm.steps
    tdlm_figures = _figures(
        "tdlm",
        equal_tokens,
        tdlm,
        {
            "curve": _val_records(tdlm_dir, offset_after=steps, offset=tdlm.seconds),
            "equal_time": {
                "steps": extra_steps,
                "seconds": seconds,
                "validation": dataclasses.asdict(equal_time) if equal_time else None,
            },
            **_generated(tdlm_dir, options, device),
        },
    )
    runs.append(tdlm_figures)
    for i, (label, changes) in enumerate(_variants(options)):
        log(f"{label}: {steps} steps")
        config = _config(
            options,
            runs_dir / f"ablation-{i}",
            {"model.kind": "tdlm", "max_steps": str(steps), "minutes": "0", **changes},
        )
        run = train(config)
        runs.append(
            _figures(
                label,
                run.validation,
                run,
                {
                    "curve": _val_records(run.run_dir),
                    **_generated(run.run_dir, options, device),
                },
            )
        )
    figures = {
        "bench": "quality",
        "environment": environment(device),
        "options": {k: str(v) for k, v in vars(options).items()},
        "budget": {"steps": steps, "tokens": mdlm.tokens, "mdlm_seconds": budget},
        "runs": runs,
    }
    _plot(runs, options.out_dir / "quality.png")
    write_report(options.out_dir, "quality", figures, quality_markdown(figures))
    return figures


def quality_markdown(figures: dict) -> str:
    env, budget = figures["environment"], figures["budget"]
    mdlm = figures["runs"][0]["validation"]["nelbo"]
    rows = []
    for run in figures["runs"]:
        v = run["validation"]
        entropy = run["unigram_entropy"]
        rows.append(
            [
                run["label"],
                f"{run['tokens']:,}",
                f"{run['seconds']:.0f}",
                f"{run['tokens_per_second']:,.0f}",
                f"{v['nelbo']:.4f}",
                f"{v['nelbo'] / mdlm:.3f}",
                f"{v['perplexity']:.2f}",
                f"{v['bits_per_byte']:.4f}",
                " + ".join(f"{x:.3f}" for x in v["level_nelbo"]),
                f"{entropy['mean']:.2f} (min {entropy['min']:.2f})",
            ]
            + ([f"{run['gen_ppl']['perplexity']:.1f}"] if "gen_ppl" in run else [])
        )
    header = [
        "run",
        "tokens",
        "train s",
        "tokens/s",
        "val NELBO",
        "/ MDLM",
        "PPL (bound)",
        "BPB",
        "levels L_0 + L_1 + ...",
        "sample unigram entropy",
    ] + (["gen PPL"] if "gen_ppl" in figures["runs"][0] else [])
    parts = [
        f"Equal tokens: {budget['tokens']:,} training tokens ({budget['steps']} steps) each; "
        f"{env['device']} {env['device_name']}, {env['threads']} threads, torch "
        f"{env['torch']}, {env['date']}, commit {env['git_commit']}.",
        markdown_table(header, rows),
    ]
    tdlm = figures["runs"][1]["equal_time"]
    if tdlm["validation"]:
        v = tdlm["validation"]
        parts.append(
            f"Equal wall-clock ({budget['mdlm_seconds']:.0f} s of training, MDLM's budget): "
            f"TDLM reached step {tdlm['steps']} and validation NELBO {v['nelbo']:.4f} "
            f"({v['nelbo'] / mdlm:.3f} x MDLM's {mdlm:.4f})."
        )
    else:
        parts.append("Equal wall-clock: TDLM needed longer than MDLM for MDLM's tokens.")
    return "\n\n".join(parts)


def _plot(runs: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, (by_tokens, by_time, levels) = plt.subplots(1, 3, figsize=(16, 4.5))
    for run in runs:
        curve = run["curve"]
        by_tokens.plot(
            [r["tokens"] for r in curve],
            [r["nelbo"] for r in curve],
            "o-",
            ms=3,
            label=run["label"],
        )
        by_time.plot(
            [r["seconds"] for r in curve],
            [r["nelbo"] for r in curve],
            "o-",
            ms=3,
            label=run["label"],
        )
    by_tokens.set(
        xlabel="training tokens",
        ylabel="validation NELBO (nats/token)",
        title="learning curve vs tokens",
    )
    by_time.set(
        xlabel="training wall-clock (s)",
        ylabel="validation NELBO (nats/token)",
        title="learning curve vs time",
    )
    for ax in (by_tokens, by_time):
        ax.legend(fontsize=7)
    labels = [run["label"] for run in runs]
    bottom = [0.0] * len(runs)
    depth = max(len(run["validation"]["level_nelbo"]) for run in runs)
    for h in range(depth):
        heights = [
            run["validation"]["level_nelbo"][h]
            if h < len(run["validation"]["level_nelbo"])
            else 0.0
            for run in runs
        ]
        levels.bar(labels, heights, bottom=bottom, label=f"L_{h}")
        bottom = [b + x for b, x in zip(bottom, heights, strict=True)]
    levels.set(ylabel="nats/token", title="validation NELBO per level (equal tokens)")
    levels.tick_params(axis="x", rotation=30, labelsize=7)
    levels.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
