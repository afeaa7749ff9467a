"""``apps/bench vocab``: memory and speed of the contenders against the vocabulary size N
(issue 15), from 32K to 256K tokens, in one command.

For every N it runs ``apps/bench memory`` (CPU peak of one training step at ``--batches``, no
activation checkpointing, and the paper-regime bf16 estimate) and ``apps/bench throughput``
(training tokens/s at batch 1, no sampling) on the paper scale at that N with ``--models``
(default :data:`.contenders.DEFAULT_MODELS`), each into its own folder under ``--out``
(``memory-N<N>``, ``throughput-N<N>``), then writes ``vocab.json``, ``vocab.md`` and one plot,
``vocab.png``: TDLM's memory and speed ratios against N, measured and analytic, to MDLM as
published and to the best MDLM (the lowest-memory, or the fastest, MDLM variant measured or
counted at that N). A folder that already holds its bench's result for the same options is
reused, so the sweep can run one N at a time on a shared machine and a last run with every N
only assembles the report.

The parameter budget is the contenders' (:mod:`.contenders`): MDLM's total parameter count,
head included, TDLM deepened to it. The analytic memory counts every contender that has a count
(:data:`.memory.COUNTED`), TDLM at MDLM's depth (``tdlm@none``: the same blocks, without the
head's parameters) among them, though its ratios to MDLM stand apart: it is not at the budget.
The analytic speed ratio is the ratio of FLOPs per training step: model FLOPs
(:func:`.throughput.step_flops`) plus, for the ``chunked`` and ``torch`` head losses, the head
their backward pass recomputes (``2 D N`` per scored position).
"""

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from tdlm_nn import param_breakdown
from tdlm_train.errors import UserError

from .contenders import (
    MASKED_SHARE,
    Scale,
    bench_scales,
    best_of,
    contender_config,
    parse_contender,
)
from .memory import COUNTED, MemoryOptions, analytic_peak, run_memory, tdlm_against_mdlm
from .report import environment, markdown_table, mib, pyplot, write_report
from .throughput import ThroughputOptions, run_throughput, step_flops

__all__ = ["VocabSweepOptions", "run_vocab_sweep"]

# Head losses whose backward pass computes the logits again (not model FLOPs, but time).
_RECOMPUTING = ("chunked", "torch")


@dataclass(frozen=True, kw_only=True)
class VocabSweepOptions:
    scale: str = "paper"  # the scale swept, at each N
    vocab_sizes: tuple[int, ...] = (32_768, 50_258, 128_256, 256_000)
    models: tuple[str, ...] = ()  # empty: DEFAULT_MODELS, less what cannot run on the device
    batches: tuple[int, ...] = (1, 2)  # memory: batches measured (skipped where they do not fit)
    rounds: int = 3  # throughput: rounds per model at batch 1
    train_steps: int = 1  # throughput: timed training steps per model per round
    device: str = "cpu"
    out_dir: Path = Path("runs/bench/vocab")


def _scales(options: VocabSweepOptions) -> list[Scale]:
    try:
        return bench_scales((options.scale,), options.vocab_sizes)
    except ValueError as error:
        raise UserError(f"--scale/--vocab-sizes: {error}") from None


def _reuse_or_run(bench: str, options, run, log) -> dict:
    """``bench``'s figures in ``options.out_dir``: read back if written with these options (an
    option added since then counts as given at its default, except ``models``: a part from
    before it measured other contenders)."""
    path = options.out_dir / f"{bench}.json"
    wanted = {k: str(v) for k, v in vars(options).items() if k != "out_dir"}
    if path.exists():
        figures = json.loads(path.read_text())
        defaults = {
            f.name: str(f.default) for f in dataclasses.fields(options) if f.name != "models"
        }
        written = {k: figures["options"].get(k, defaults.get(k)) for k in wanted}
        if written != wanted or set(figures["options"]) - set(wanted) - {"out_dir"}:
            raise UserError(
                f"{options.out_dir} holds a {bench} run with other options; delete it to redo it"
            )
        log(f"reusing {path}")
        return figures
    return run(options, log=log)


def _budget(scale: Scale) -> list[dict]:
    rows = []
    for model in ("mdlm", "tdlm"):  # the chunked MDLM is MDLM's network
        config = contender_config(model, scale)
        parts = param_breakdown(config)
        rows.append(
            {"model": model, "n_blocks": config.n_blocks, "mlp_hidden": config.hidden_size}
            | dataclasses.asdict(parts)
            | {"total": parts.total}
        )
    return rows


def _analytic(scale: Scale) -> list[dict]:
    """bf16 paper regime (16 x 1024 tokens, one GPU), every counted contender: no
    checkpointing, every block recomputed selectively, every block recomputed in full."""
    rows = []
    for mode in ("off", "selective", "all"):
        totals = {m: analytic_peak(m, scale, 16, "bf16", mode)["total"] for m in COUNTED}
        rows.append({"checkpointing": mode, "totals": totals})
    return rows


def _flops(scale: Scale, models: list[str]) -> dict[str, int]:
    """FLOPs of one training step at batch 1 (module doc)."""
    flops = {}
    for m in models:
        config = contender_config(m, scale)
        head_loss = parse_contender(m)[1]
        flops[m] = step_flops(config, 1, scale.seq_len, head_loss)
        if head_loss in _RECOMPUTING:
            scored = MASKED_SHARE * scale.seq_len
            flops[m] += round(2 * config.width * config.shape.num_slots * scored)
    return flops


def _round_ratio(models: dict, a: str, b: str) -> dict[str, float]:
    """Median, min and max over rounds of ``a``'s training tokens/s over ``b``'s."""
    pairs = zip(
        models[a]["train_tokens_per_s_rounds"], models[b]["train_tokens_per_s_rounds"], strict=True
    )
    ratios = [x / y for x, y in pairs]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def _speed(models: dict) -> dict:
    """The fastest TDLM and MDLM contenders (by median tokens/s) and the TDLM's per-round
    ratios to every MDLM contender."""
    medians = {m: r["train_tokens_per_s"]["median"] for m, r in models.items()}
    tdlm = best_of(medians, "tdlm", highest=True)
    fastest = {"tdlm": tdlm, "mdlm": best_of(medians, "mdlm", highest=True)}
    ratios = {
        f"{tdlm}/{m}": _round_ratio(models, tdlm, m)
        for m in models
        if tdlm is not None and parse_contender(m).kind == "mdlm"
    }
    return {"fastest": fastest, "speed_ratio": ratios}


def run_vocab_sweep(options: VocabSweepOptions, log=print) -> dict:
    """Memory and throughput per N (reusing finished ones); writes vocab.json/.md/.png."""
    scales = _scales(options)
    if not options.batches or min(options.batches) < 1:
        raise UserError(f"--batches must be positive batch sizes, got {options.batches}")
    points = []
    for scale in scales:
        n = scale.vocab_size
        memory_options = MemoryOptions(
            scales=(options.scale,),
            vocab_sizes=(n,),
            models=options.models,
            batches=options.batches,
            checkpointing=("off",),
            device=options.device,
            out_dir=options.out_dir / f"memory-N{n}",
        )
        throughput_options = ThroughputOptions(
            scale=options.scale,
            vocab_sizes=(n,),
            models=options.models,
            batch=1,
            rounds=options.rounds,
            train_steps=options.train_steps,
            sample_steps=0,
            device=options.device,
            out_dir=options.out_dir / f"throughput-N{n}",
        )
        memory = _reuse_or_run("memory", memory_options, run_memory, log)
        speed = _reuse_or_run("throughput", throughput_options, run_throughput, log)
        models = speed["runs"][0]["models"]
        points.append(
            {
                "vocab_size": n,
                "budget": _budget(scale),
                "models": list(models),
                "measured_memory": [
                    {
                        "batch": r["batch"],
                        "model": r["model"],
                        "peak_bytes": r["peak_bytes"],
                        "analytic_bytes": r["analytic"]["total"] if r["analytic"] else None,
                        "skipped": r.get("skipped"),
                    }
                    for r in memory["measurements"]
                ],
                "analytic_memory": _analytic(scale),
                "train_tokens_per_s": {m: r["train_tokens_per_s"] for m, r in models.items()},
                **_speed(models),
                "interleaved": speed["runs"][0]["interleaved"],
                "threads": speed["environment"]["threads"],
                "flops": _flops(scale, list(models)),
                "measured_on": sorted(
                    {memory["environment"]["date"], speed["environment"]["date"]}
                ),
                "commits": sorted(
                    {memory["environment"]["git_commit"], speed["environment"]["git_commit"]}
                ),
            }
        )
    figures = {
        "bench": "vocab",
        "environment": environment(torch.device(options.device)),
        "options": {k: str(v) for k, v in vars(options).items()},
        "points": points,
    }
    options.out_dir.mkdir(parents=True, exist_ok=True)
    _plot(points, options.out_dir / "vocab.png")
    write_report(options.out_dir, "vocab", figures, vocab_markdown(figures))
    return figures


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "—"


def _memory_rows(point: dict) -> list[list]:
    rows = []
    models = list(dict.fromkeys(r["model"] for r in point["measured_memory"]))
    cells = {(r["batch"], r["model"]): r for r in point["measured_memory"]}
    for batch in dict.fromkeys(r["batch"] for r in point["measured_memory"]):
        got = {m: cells.get((batch, m), {}) for m in models}
        rows.append(
            [f"{point['vocab_size']:,}", batch]
            + [
                f"{mib(c['peak_bytes'])} "
                f"({mib(c['analytic_bytes']) if c.get('analytic_bytes') else '—'})"
                if c.get("peak_bytes")
                else "skipped"
                for c in got.values()
            ]
            + tdlm_against_mdlm({m: c.get("peak_bytes") for m, c in got.items()})
        )
    return rows


def _stats_cell(s: dict, digits: int = 1) -> str:
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def _speed_row(p: dict) -> list[str]:
    fastest = p["fastest"]
    tdlm, best = fastest["tdlm"], fastest["mdlm"]
    ratio = p["speed_ratio"]
    flops = p["flops"]
    return (
        [f"{p['vocab_size']:,}", "interleaved" if p["interleaved"] else "one at a time"]
        + [_stats_cell(s) for s in p["train_tokens_per_s"].values()]
        + [
            _stats_cell(ratio[f"{tdlm}/mdlm"], 2) if f"{tdlm}/mdlm" in ratio else "—",
            f"{_stats_cell(ratio[f'{tdlm}/{best}'], 2)} ({best})" if best and tdlm else "—",
            _ratio(flops.get("mdlm"), flops.get(tdlm)),
            f"{_ratio(flops.get(best), flops.get(tdlm))} ({best})" if best else "—",
        ]
    )


def vocab_markdown(figures: dict) -> str:
    points, env = figures["points"], figures["environment"]
    scale = figures["options"]["scale"]
    budget = [
        [
            f"{p['vocab_size']:,}",
            "MDLM (every head loss)" if row["model"] == "mdlm" else "TDLM",
            row["n_blocks"],
            row["mlp_hidden"],
            f"{row['embedding']:,}",
            f"{row['blocks']:,}",
            f"{row['head']:,}",
            f"{row['total']:,}",
        ]
        for p in points
        for row in p["budget"]
    ]
    analytic = []
    for p in points:
        for row in p["analytic_memory"]:
            totals = row["totals"]
            analytic.append(
                [f"{p['vocab_size']:,}", row["checkpointing"]]
                + [mib(t) for t in totals.values()]
                + tdlm_against_mdlm(totals)
                + [_ratio(totals["tdlm@none"], totals["mdlm"])]
            )
    counted = list(points[0]["analytic_memory"][0]["totals"])
    measured = points[0]["models"]
    dates = sorted({d for p in points for d in p["measured_on"]})
    commits = sorted({c for p in points for c in p["commits"]})
    threads = "/".join(str(t) for t in sorted({p["threads"] for p in points}))
    return "\n\n".join(
        [
            f"The {scale} scale at each N (paper: width 768, 12 heads, L = 1,024, small preset; "
            f"TDLM on a K = 64 tree); {env['device']} {env['device_name']}, {threads} torch "
            f"thread(s), torch {env['torch']}; benches finished {dates[0]} to {dates[-1]}, "
            f"commit {', '.join(commits)}. TDLM is the best TDLM contender of a row, the best "
            "MDLM the lowest-memory (speed: the fastest) MDLM contender, named.",
            "Parameter budget (MDLM's total, head included; TDLM deepened to it):",
            markdown_table(
                ["N", "model", "blocks", "MLP", "embedding", "blocks", "head", "total"], budget
            ),
            "Peak memory of one training step on the CPU (fp32, no activation checkpointing; "
            "analytic estimate in brackets), MiB:",
            markdown_table(
                ["N", "batch", *measured, "TDLM / MDLM", "TDLM / best MDLM"],
                [row for p in points for row in _memory_rows(p)],
            ),
            "Analytic peak in the paper's regime (bf16 autocast, 16 sequences, one GPU), "
            "MiB; TDLM / best MDLM names the lowest TDLM at MDLM's budget; the last column is "
            "tdlm@none (MDLM's depth and fewer parameters) over MDLM:",
            markdown_table(
                [
                    "N",
                    "activation checkpointing",
                    *counted,
                    "TDLM / MDLM",
                    "TDLM / best MDLM",
                    "tdlm@none / MDLM",
                ],
                analytic,
            ),
            "Training tokens/s at batch 1 (median (min-max) over rounds; measured ratios are "
            "the median (min-max) of per-round ratios; FLOPs ratios are the analytic speed "
            "ratios):",
            markdown_table(
                [
                    "N",
                    "rounds",
                    *measured,
                    "TDLM / MDLM",
                    "TDLM / fastest MDLM",
                    "FLOPs MDLM / TDLM",
                    "FLOPs fastest MDLM / TDLM",
                ],
                [_speed_row(p) for p in points],
            ),
        ]
    )


_RECOMPUTE_LABEL = {"off": "", "selective": ", selective recompute", "all": ", full recompute"}


def _tdlm_over(values: dict, best: bool) -> float | None:
    """The best TDLM's value over MDLM's (``best``: over the best MDLM's), lowest wins."""
    tdlm = best_of(values, "tdlm")
    other = best_of(values, "mdlm") if best else "mdlm"
    if tdlm is None or not values.get(other):
        return None
    return values[tdlm] / values[other]


def _plot(points: list[dict], path: Path) -> None:
    plt = pyplot()
    n = [p["vocab_size"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    batches = sorted({r["batch"] for p in points for r in p["measured_memory"]})
    for best, label, color in ((False, "MDLM", "C0"), (True, "best MDLM", "C1")):
        for batch, marker in zip(batches, "os^v", strict=False):
            xs, ys = [], []
            for p in points:
                peaks = {
                    r["model"]: r["peak_bytes"] for r in p["measured_memory"] if r["batch"] == batch
                }
                ratio = _tdlm_over(peaks, best)
                if ratio is not None:
                    xs.append(p["vocab_size"])
                    ys.append(ratio)
            left.plot(
                xs, ys, marker=marker, color=color, label=f"TDLM / {label}, CPU fp32 batch {batch}"
            )
        for mode, style in (("off", "--"), ("selective", "-."), ("all", ":")):
            totals = [
                next(r for r in p["analytic_memory"] if r["checkpointing"] == mode)["totals"]
                for p in points
            ]
            left.plot(
                n,
                [_tdlm_over(t, best) for t in totals],
                style,
                color=color,
                label=f"TDLM / {label}, bf16 batch 16 analytic" + _RECOMPUTE_LABEL[mode],
            )
    left.axhline(0.3, color="grey", lw=0.8)
    left.set(xscale="log", xlabel="vocabulary size N", ylabel="peak memory ratio", ylim=(0, None))
    left.set_title("memory: TDLM / baseline (grey: 0.3)")
    left.legend(fontsize=7)
    for fastest, label, color in ((False, "MDLM", "C0"), (True, "fastest MDLM", "C1")):
        xs, ratios, flops = [], [], []
        for p in points:
            tdlm = p["fastest"]["tdlm"]
            other = p["fastest"]["mdlm"] if fastest else "mdlm"
            if f"{tdlm}/{other}" in p["speed_ratio"]:
                xs.append(p["vocab_size"])
                ratios.append(p["speed_ratio"][f"{tdlm}/{other}"])
                flops.append(p["flops"][other] / p["flops"][tdlm])
        right.errorbar(
            xs,
            [r["median"] for r in ratios],
            yerr=[
                [r["median"] - r["min"] for r in ratios],
                [r["max"] - r["median"] for r in ratios],
            ],
            fmt="o-",
            capsize=3,
            color=color,
            label=f"TDLM / {label}, CPU fp32 batch 1 (median, range over rounds)",
        )
        right.plot(xs, flops, "--", color=color, label=f"{label} / TDLM FLOPs (analytic)")
    right.axhline(1.3, color="grey", lw=0.8)
    right.axhline(1.0, color="grey", lw=0.5, ls=":")
    right.set(xscale="log", xlabel="vocabulary size N", ylabel="training tokens/s ratio")
    right.set_title("speed: TDLM / baseline (grey: 1.3)")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xticks(n, [f"{v // 1000}K" for v in n])
        ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
