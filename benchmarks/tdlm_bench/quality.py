"""``apps/bench quality``: MDLM and TDLM trained at one budget, side by side (issue 6, item 3).

Every run is ``tdlm_train.train.train`` on the ``tiny`` run preset (plus any overrides) with the
same seed, data order, optimizer and batch; only the model kind, the tree, the level time
allocation and what TDLM spends MDLM's head budget on differ. The protocol gives both
comparisons of the issue exactly, without interpolation:

Everything below is repeated for every seed of ``--seeds`` (default 0, 1, 2: a quality claim is
a claim over seeds), and each ratio is taken against the same seed's MDLM:

1. MDLM trains for ``--minutes`` of wall-clock time: S steps, T seconds.
2. TDLM trains for S steps (equal tokens; its final validation is the equal-token figure), then,
   if it got there in less than T seconds, resumes from its checkpoint until its training time
   reaches T (equal wall-clock; the final validation). Validation time inside the loop counts
   as training time for both (TDLM's validation costs one pass per level: conservative). The
   autoregressive baseline (``--ar``, on by default: MDLM's network with causal attention) does
   the same; its figure is an exact NLL where the others are bounds.
3. Each ablation (``--trees``, ``--branchings``, ``--leaf-cluster-sizes``, ``--allocations``,
   ``--level-weights``, ``--spends``) is one more TDLM run of S steps, changing that one setting
   of the base TDLM (``--spends width,none``: the head's budget on width at MDLM's depth, or
   MDLM's depth and width with fewer parameters). ``--trees embedding`` is the two-stage
   recipe: an MDLM trains for ``--embedding-fraction`` of the S steps, the tree is built from
   its token input embeddings, and TDLM trains the remaining steps; both stages' tokens count
   against the budget.

Seeds are independent: ``--merge DIR,DIR,...`` reports finished bench folders that differ only
in their seeds as one (run one seed per core or machine at the same time, then merge).

Reported per label: mean ± sd over seeds of the validation NELBO and of its ratio to MDLM at
equal tokens (and, for the base TDLM, at equal wall-clock), and the diagnosis: each level's
NELBO beside its tree's unigram conditional entropy ``H(A_h | A_{h+1})`` (``tdlm_tree.stats``;
the difference is what the network learned from context at that level). Reported per run:
validation NELBO, perplexity (bound), bits per byte, per-level NELBO, the learning curves
(``metrics.jsonl``) against tokens and wall-clock time, and the unigram entropy of each
generated sample (nats; ``-Σ p log p`` over the sample's token frequencies: low values flag
repetitive text), optionally
generative perplexity (:mod:`tdlm_train.genppl`). Samples come from each run's final EMA weights
(the base TDLM's: after the equal wall-clock phase).
"""

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tdlm_train.config import RunConfig, preset
from tdlm_train.data import prepare_data
from tdlm_train.errors import UserError
from tdlm_train.evaluate import Validation
from tdlm_train.inference import sample_texts
from tdlm_train.overrides import apply_overrides
from tdlm_train.run import Run
from tdlm_train.runtime import pick_device
from tdlm_train.train import train
from tdlm_tree import conditional_cross_entropies, conditional_entropies, unigram_entropy

from .report import environment, markdown_table, pyplot, write_report

__all__ = ["QualityOptions", "run_quality", "level_references"]


@dataclass(frozen=True, kw_only=True)
class QualityOptions:
    minutes: float = 8.0  # MDLM's wall-clock training budget (TDLM: its tokens, then its time)
    data: str = ""  # corpus source (default: the tiny preset's embedded corpus)
    trees: tuple[str, ...] = ()  # ablation: tree constructions besides cooccurrence
    branchings: tuple[int, ...] = ()  # ablation: branching K besides 64
    leaf_cluster_sizes: tuple[int, ...] = ()  # ablation: children per level-1 node
    allocations: tuple[str, ...] = ()  # ablation: level time allocations besides uniform
    level_weights: tuple[str, ...] = ()  # ablation: training weights λ_h, leaf level first (1:2)
    spends: tuple[str, ...] = ()  # ablation: what the head's budget buys besides depth
    ar: bool = True  # also the autoregressive baseline (equal tokens, then equal time)
    embedding_fraction: float = 0.1  # tree=embedding: share of the steps its stage-1 MDLM trains
    seeds: tuple[int, ...] = (0, 1, 2)  # every run is repeated with each seed
    eval_every: int = 100  # steps between validations (the learning curves' points)
    samples: int = 8  # generated sequences per model for the unigram entropy
    gen_ppl_model: str = ""  # a transformers causal LM to score the samples with
    overrides: dict[str, str] = field(default_factory=dict)  # --section.key for every run
    merge: tuple[str, ...] = ()  # finished bench folders to report together instead of training
    out_dir: Path = Path("runs/bench/quality")


def _variants(options: QualityOptions) -> list[tuple[str, dict[str, str]]]:
    """(label, overrides) of every TDLM ablation run."""
    out = [(f"tdlm tree={t}", {"tree.method": t}) for t in options.trees]
    out += [(f"tdlm K={k}", {"tree.branching": str(k)}) for k in options.branchings]
    out += [
        (f"tdlm leaf={c}", {"tree.leaf_cluster_size": str(c)}) for c in options.leaf_cluster_sizes
    ]
    out += [(f"tdlm alloc={a}", {"diffusion.schedule.allocation": a}) for a in options.allocations]
    out += [
        (f"tdlm λ={w}", {"diffusion.level_weights": w.replace(":", ",")})
        for w in options.level_weights
    ]
    out += [(f"tdlm spend={w}", {"model.spend": w}) for w in options.spends]
    return out


def level_references(run_dir: Path) -> dict[str, list[float]]:
    """What each level of a run's tree is worth with no context, per level h (nats):

    * ``tree_entropy``: ``H(A_h | A_{h+1})`` under the training unigram (``tdlm_tree.stats``);
    * ``unigram_val_nll``: the validation tokens scored by that unigram (Jeffreys-smoothed) —
      the per-level NELBO of a network that ignores all context, so ``unigram_val_nll[h] -
      level_nelbo[h]`` is what the network has learned from context at level h.
    """
    run = Run.from_checkpoint(run_dir, device=torch.device("cpu"))
    config = run.config
    data = prepare_data(config.data, config.tokenizer, Path(config.cache_dir))
    val = np.asarray(data.val_tokens, dtype=np.int64)
    return {
        "tree_entropy": conditional_entropies(run.tree, run.counts).tolist(),
        "unigram_val_nll": conditional_cross_entropies(run.tree, run.counts, val).tolist(),
    }


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
    run_dir: Path,
    offset_after: int | None = None,
    offset: float = 0.0,
    prior: tuple[int, int] = (0, 0),
) -> list:
    """Validation records; ``prior`` = (steps, tokens) trained before this run (a stage 1)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = []
    for r in records:
        if r["kind"] != "val":
            continue
        # A resumed invocation's clock restarts at 0: shift its records by the first one's time.
        shift = offset if offset_after is not None and r["step"] > offset_after else 0.0
        curve.append(
            {
                "step": r["step"] + prior[0],
                "tokens": r["tokens"] + prior[1],
                "seconds": r["seconds"] + shift,
                "nelbo": r["nelbo"],
                "level_nelbo": r["level_nelbo"],
            }
        )
    return curve


def _generated(run_dir: Path, options: QualityOptions, device: torch.device) -> dict:
    run = Run.from_checkpoint(run_dir, device=device)
    config = run.config
    texts, result = sample_texts(
        run.process,
        run.model,
        run.tokenizer,
        count=options.samples,
        length=config.seq_len,
        config=run.sampler(),
        device=device,
        seed=config.seed,
    )
    # Entropy (nats) of the token frequencies within each sample: low when a sampler repeats.
    entropies = [unigram_entropy(np.bincount(row)) for row in result.tokens.cpu().numpy()]
    out = {
        "unigram_entropy": {
            "mean": statistics.fmean(entropies),
            "min": min(entropies),
            "per_sample": entropies,
        },
        "samples": [t[:300] for t in texts[:2]],
    }
    if options.gen_ppl_model:
        from tdlm_train.genppl import generative_perplexity

        out["gen_ppl"] = dataclasses.asdict(
            generative_perplexity(texts, options.gen_ppl_model, device=device)
        )
    return out


def _figures(label: str, validation: Validation | None, run, extra: dict) -> dict:
    return {
        "label": label,
        "run_dir": str(run.run_dir),
        "steps": run.steps,
        "tokens": run.tokens,
        "seconds": run.seconds,
        "tokens_per_second": run.tokens_per_second,
        "validation": dataclasses.asdict(validation) if validation else None,
        **level_references(run.run_dir),
        **extra,
    }


def _seed_runs(options: QualityOptions, seed: int, runs_dir: Path, device, log) -> list[dict]:
    """MDLM, TDLM (equal tokens, then equal time) and every ablation, all with ``seed``."""
    seeded = {"seed": str(seed)}
    mdlm_config = _config(
        options,
        runs_dir / "mdlm",
        {**seeded, "kind": "mdlm", "minutes": str(options.minutes), "max_steps": "0"},
    )
    log(f"seed {seed} MDLM: {options.minutes} minutes of training")
    mdlm = train(mdlm_config)
    steps, budget = mdlm.steps, mdlm.seconds
    runs = [
        _figures(
            "mdlm",
            mdlm.validation,
            mdlm,
            {"curve": _val_records(mdlm.run_dir), **_generated(mdlm.run_dir, options, device)},
        )
    ]
    for kind in ("tdlm", "ar") if options.ar else ("tdlm",):
        runs.append(
            _tokens_then_time(options, kind, seeded, steps, budget, runs_dir / kind, device, log)
        )
    for i, (label, changes) in enumerate(_variants(options)):
        log(f"seed {seed} {label}: {steps} steps")
        run_dir, stage1 = runs_dir / f"ablation-{i}", None
        if changes.get("tree.method") == "embedding":
            stage1 = _embedding_stage(options, seeded, steps, run_dir / "stage1", log)
            changes = {**changes, "tree.embeddings": str(stage1.run_dir)}
            run_dir = run_dir / "stage2"
        left = steps - (stage1.steps if stage1 else 0)
        config = _config(
            options,
            run_dir,
            {**seeded, "kind": "tdlm", "max_steps": str(left), "minutes": "0", **changes},
        )
        run = train(config)
        prior = (stage1.steps, stage1.tokens) if stage1 else (0, 0)
        extra = {"curve": _val_records(run.run_dir, prior=prior)}
        if stage1:
            extra["stage1"] = {
                "steps": stage1.steps,
                "tokens": stage1.tokens,
                "seconds": stage1.seconds,
            }
        figures = _figures(
            label, run.validation, run, {**extra, **_generated(run.run_dir, options, device)}
        )
        if stage1:  # the budget is both stages' tokens and time
            figures["steps"] += stage1.steps
            figures["tokens"] += stage1.tokens
            figures["seconds"] += stage1.seconds
        runs.append(figures)
    budget_figures = {"steps": steps, "tokens": mdlm.tokens, "mdlm_seconds": budget}
    return [{"seed": seed, "budget": budget_figures, **run} for run in runs]


def _tokens_then_time(
    options: QualityOptions,
    kind: str,
    seeded: dict,
    steps: int,
    budget: float,
    run_dir: Path,
    device: torch.device,
    log,
) -> dict:
    """``kind`` for MDLM's ``steps`` (equal tokens), then resumed up to MDLM's ``budget``
    seconds of training (equal wall-clock) if it got there sooner."""
    log(f"seed {seeded['seed']} {kind}: {steps} steps (MDLM's tokens), then up to MDLM's "
        f"{budget:.0f} s")
    config = _config(options, run_dir, {**seeded, "kind": kind, "max_steps": str(steps),
                                         "minutes": "0"})
    first = train(config)
    equal_time, seconds, extra_steps = None, first.seconds, first.steps
    if first.seconds < budget:
        more = dataclasses.replace(config, max_steps=0, minutes=(budget - first.seconds) / 60)
        resumed = train(more, resume=True)
        equal_time, seconds = resumed.validation, first.seconds + resumed.seconds
        extra_steps = resumed.steps
    return _figures(
        kind,
        first.validation,
        first,
        {
            "curve": _val_records(run_dir, offset_after=steps, offset=first.seconds),
            "equal_time": {
                "steps": extra_steps,
                "seconds": seconds,
                "validation": dataclasses.asdict(equal_time) if equal_time else None,
            },
            **_generated(run_dir, options, device),
        },
    )


def _embedding_stage(options: QualityOptions, seeded: dict, steps: int, run_dir: Path, log):
    """Stage 1 of the two-stage embedding tree: a brief MDLM whose input embeddings are used."""
    first = max(1, round(options.embedding_fraction * steps))
    if first >= steps:
        raise UserError("--embedding-fraction leaves no steps for the TDLM stage")
    log(f"  stage 1: MDLM for {first} of the {steps} steps (its embeddings make the tree)")
    config = _config(
        options,
        run_dir,
        {**seeded, "kind": "mdlm", "max_steps": str(first), "minutes": "0"},
    )
    return train(config)


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else math.nan,
        "n": len(values),
        "values": values,
    }


def _verdict(runs: list[dict]) -> dict:
    """Per label: NELBO and its ratio to the same seed's MDLM, mean ± sd over seeds."""
    mdlm = {r["seed"]: r["validation"]["nelbo"] for r in runs if r["label"] == "mdlm"}
    out: dict = {}
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        out[label] = {
            "nelbo": _spread([r["validation"]["nelbo"] for r in mine]),
            "ratio_equal_tokens": _spread(
                [r["validation"]["nelbo"] / mdlm[r["seed"]] for r in mine]
            ),
            "level_nelbo": [
                statistics.fmean(levels)
                for levels in zip(*(r["validation"]["level_nelbo"] for r in mine), strict=True)
            ],
            **{
                key: [
                    statistics.fmean(levels) for levels in zip(*(r[key] for r in mine), strict=True)
                ]
                for key in ("tree_entropy", "unigram_val_nll")
            },
            "tokens_per_second": statistics.fmean(r["tokens_per_second"] for r in mine),
        }
        timed = [r for r in mine if r.get("equal_time", {}).get("validation")]
        if timed:
            out[label]["ratio_equal_time"] = _spread(
                [r["equal_time"]["validation"]["nelbo"] / mdlm[r["seed"]] for r in timed]
            )
    return out


# Options that may differ between the parts of one merged report.
_PER_PART = {"seeds", "out_dir", "merge"}


def merge_quality(folders: tuple[str, ...], out_dir: Path) -> dict:
    """One report over finished bench folders that differ only in their seeds (e.g. one seed
    per core or machine, run at the same time): their runs together, verdict over all seeds."""
    if out_dir.resolve() in {Path(folder).resolve() for folder in folders}:
        raise UserError(f"--merge: --out {out_dir} is one of the merged folders; choose another")
    parts = []
    for folder in folders:
        path = Path(folder) / "quality.json"
        try:
            parts.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"--merge {folder}: no readable quality.json ({error})") from None
    first = {k: v for k, v in parts[0]["options"].items() if k not in _PER_PART}
    seen: dict[int, str] = {}
    for folder, part in zip(folders, parts, strict=True):
        mine = {k: v for k, v in part["options"].items() if k not in _PER_PART}
        if mine != first:
            differ = sorted(k for k in first.keys() | mine.keys() if first.get(k) != mine.get(k))
            raise UserError(f"--merge {folder}: its options differ from {folders[0]}'s in {differ}")
        for seed in sorted({r["seed"] for r in part["runs"]}):
            if seed in seen:
                raise UserError(f"--merge: seed {seed} is in both {seen[seed]} and {folder}")
            seen[seed] = folder
    runs = sorted((run for part in parts for run in part["runs"]), key=lambda run: run["seed"])
    options = {**parts[0]["options"], "seeds": str(tuple(sorted(seen))), "out_dir": str(out_dir)}
    figures = {
        "bench": "quality",
        "environment": parts[0]["environment"],
        "options": {**options, "merge": str(tuple(folders))},
        "merged": [
            {"folder": f, "seeds": sorted({r["seed"] for r in p["runs"]}), **p["environment"]}
            for f, p in zip(folders, parts, strict=True)
        ],
        "verdict": _verdict(runs),
        "runs": runs,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(runs, out_dir / "quality.png")
    write_report(out_dir, "quality", figures, quality_markdown(figures))
    return figures


def run_quality(options: QualityOptions, log=print) -> dict:
    """Train the runs of the module doc for every seed; write quality.json/.md/.png."""
    if options.merge:
        return merge_quality(options.merge, options.out_dir)
    if options.minutes <= 0 or options.samples < 1 or not options.seeds:
        raise UserError("--minutes must be > 0, --samples >= 1 and --seeds non-empty")
    if not 0 < options.embedding_fraction < 1:
        raise UserError("--embedding-fraction must lie in (0, 1)")
    runs_dir = options.out_dir / "runs"
    if runs_dir.exists():
        raise UserError(f"{runs_dir} exists; choose another --out")
    device = pick_device(_config(options, runs_dir, {}).device)
    runs: list[dict] = []
    for seed in options.seeds:
        runs += _seed_runs(options, seed, runs_dir / f"seed{seed}", device, log)
    figures = {
        "bench": "quality",
        "environment": environment(device),
        "options": {k: str(v) for k, v in vars(options).items()},
        "verdict": _verdict(runs),
        "runs": runs,
    }
    _plot(runs, options.out_dir / "quality.png")
    write_report(options.out_dir, "quality", figures, quality_markdown(figures))
    return figures


def level_table(figures: dict) -> str:
    """One cell: per level, the NELBO beside its no-context references (``level_references``)."""
    return "; ".join(
        f"h={h}: {loss:.3f} vs {nll:.3f} ({loss - nll:+.3f}; H {entropy:.3f})"
        for h, (loss, nll, entropy) in enumerate(
            zip(
                figures["level_nelbo"],
                figures["unigram_val_nll"],
                figures["tree_entropy"],
                strict=True,
            )
        )
    )


def _pm(spread: dict, digits: int = 3) -> str:
    if spread["n"] < 2:
        return f"{spread['mean']:.{digits}f}"
    return f"{spread['mean']:.{digits}f} ± {spread['sd']:.{digits}f}"


def quality_markdown(figures: dict) -> str:
    env, runs, verdict = figures["environment"], figures["runs"], figures["verdict"]
    seeds = sorted({r["seed"] for r in runs})
    summary_rows = []
    for label, v in verdict.items():
        timed = v.get("ratio_equal_time")
        summary_rows.append(
            [
                label,
                _pm(v["nelbo"], 4),
                _pm(v["ratio_equal_tokens"]),
                _pm(timed) if timed else "",
                " + ".join(f"{x:.3f}" for x in v["level_nelbo"]),
                f"{v['tokens_per_second']:,.0f}",
            ]
        )
    summary = markdown_table(
        [
            "run",
            "val NELBO (ar: NLL)",
            "/ MDLM, equal tokens",
            "/ MDLM, equal wall-clock",
            "levels L_0 + L_1 + ... (mean)",
            "tokens/s (mean)",
        ],
        summary_rows,
    )
    diagnosis = markdown_table(
        [
            "run",
            "per level h, leaf level first: val NELBO L_h vs the no-context NLL (difference; "
            "the tree's conditional entropy H on train)",
        ],
        [[label, level_table(v)] for label, v in verdict.items()],
    )
    rows = []
    for run in runs:
        v, b = run["validation"], run["budget"]
        mdlm = next(r for r in runs if r["seed"] == run["seed"] and r["label"] == "mdlm")
        equal_time = run.get("equal_time", {})
        timed = equal_time.get("validation")
        rows.append(
            [
                run["seed"],
                run["label"],
                f"{run['tokens']:,}",
                f"{run['seconds']:.0f}",
                f"{v['nelbo']:.4f}",
                f"{v['nelbo'] / mdlm['validation']['nelbo']:.3f}",
                f"{timed['nelbo'] / mdlm['validation']['nelbo']:.3f} "
                f"({equal_time['steps']} steps in {b['mdlm_seconds']:.0f} s)"
                if timed
                else "",
                f"{v['perplexity']:.2f}",
                f"{v['bits_per_byte']:.4f}",
                " + ".join(f"{x:.3f}" for x in v["level_nelbo"]),
                f"{run['unigram_entropy']['mean']:.2f}",
            ]
            + ([f"{run['gen_ppl']['perplexity']:.1f}"] if "gen_ppl" in run else [])
        )
    header = [
        "seed",
        "run",
        "tokens",
        "train s",
        "val NELBO (ar: NLL)",
        "/ MDLM",
        "equal wall-clock / MDLM",
        "PPL (bound; ar: exact)",
        "BPB",
        "levels L_0 + L_1 + ...",
        "sample unigram entropy",
    ] + (["gen PPL"] if "gen_ppl" in runs[0] else [])
    provenance = "".join(
        f" Seed(s) {', '.join(map(str, part['seeds']))} from {part['folder']}: {part['date']}, "
        f"commit {part['git_commit']}, {part['threads']} torch thread(s)."
        for part in figures.get("merged", [])
    )
    return "\n\n".join(
        [
            f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); per seed MDLM trains "
            f"{figures['options']['minutes']} minutes and every TDLM run its number of steps "
            f"(equal tokens); the base TDLM (and the autoregressive baseline, `ar`) then resumes "
            f"until it has trained as long as MDLM (equal wall-clock). `ar`'s figure is its exact "
            f"NLL, the others' an upper bound (NELBO) on theirs. Ratios are to the same seed's "
            f"MDLM; ± is the sd over seeds. "
            f"{env['device']} {env['device_name']}, {env['threads']} torch thread(s), torch "
            f"{env['torch']}, {env['date']}, commit {env['git_commit']}." + provenance,
            summary,
            "Where the NELBO goes (means over seeds): each level's validation NELBO beside what a "
            "network that ignores all context would score there (the training unigram on the "
            "validation tokens), their difference, and the tree's conditional entropy:",
            diagnosis,
            "Per seed:",
            markdown_table(header, rows),
        ]
    )


def _plot(runs: list[dict], path: Path) -> None:
    """Learning curves (one line per run and seed, one colour per label), the base TDLM's
    per-level curves, and what each level learned from context (mean over seeds)."""
    plt = pyplot()
    fig, (by_tokens, by_time, per_level, levels) = plt.subplots(1, 4, figsize=(21, 4.5))
    for run in runs:
        if run["label"] != "tdlm":
            continue
        first = run["seed"] == runs[0]["seed"]
        tokens = [r["tokens"] for r in run["curve"]]
        for h in range(len(run["curve"][0]["level_nelbo"])):
            values = [r["level_nelbo"][h] for r in run["curve"]]
            per_level.plot(
                tokens, values, "o-", color=f"C{h}", ms=2, lw=1, label=f"L_{h}" if first else None
            )
            if first:  # the no-context reference: the unigram on the validation tokens
                per_level.axhline(run["unigram_val_nll"][h], color=f"C{h}", ls=":", lw=1)
    per_level.set(
        xlabel="training tokens",
        ylabel="nats/token",
        title="base TDLM per level (dotted: no-context unigram NLL)",
    )
    per_level.legend(fontsize=7)
    labels = list(dict.fromkeys(run["label"] for run in runs))
    colours = {label: f"C{i}" for i, label in enumerate(labels)}
    for run in runs:
        curve, label = run["curve"], run["label"]
        first = run["seed"] == runs[0]["seed"]
        style = {"color": colours[label], "ms": 3, "lw": 1, "label": label if first else None}
        by_tokens.plot([r["tokens"] for r in curve], [r["nelbo"] for r in curve], "o-", **style)
        by_time.plot([r["seconds"] for r in curve], [r["nelbo"] for r in curve], "o-", **style)
    by_tokens.set(
        xlabel="training tokens",
        ylabel="validation NELBO (nats/token)",
        title="learning curves vs tokens (every seed)",
    )
    by_time.set(
        xlabel="training wall-clock (s)",
        ylabel="validation NELBO (nats/token)",
        title="learning curves vs time (every seed)",
    )
    for ax in (by_tokens, by_time):
        ax.legend(fontsize=7)
    # What each level learned from context: its no-context NLL minus its NELBO, stacked, so a
    # bar's height is the whole model's gain over the unigram (the sd over seeds as error bar).
    verdict = _verdict(runs)
    depth = max(len(v["level_nelbo"]) for v in verdict.values())
    bottom = [0.0] * len(labels)
    for h in range(depth):
        gains = [
            v["unigram_val_nll"][h] - v["level_nelbo"][h] if h < len(v["level_nelbo"]) else 0.0
            for v in (verdict[label] for label in labels)
        ]
        levels.bar(labels, gains, bottom=bottom, label=f"level {h}")
        bottom = [b + g for b, g in zip(bottom, gains, strict=True)]
    sds = [verdict[label]["nelbo"]["sd"] for label in labels]
    levels.errorbar(
        labels,
        bottom,
        yerr=[0 if math.isnan(sd) else sd for sd in sds],
        fmt="none",
        ecolor="black",
        capsize=4,
    )
    levels.set(
        ylabel="nats/token below the unigram",
        title="learned from context, per level (equal tokens, mean)",
    )
    levels.tick_params(axis="x", rotation=30, labelsize=7)
    levels.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
