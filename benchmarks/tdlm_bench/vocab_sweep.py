"""``apps/bench vocab``: memory and speed of the three contenders against the vocabulary size N
(issue 15), from 32K to 256K tokens, in one command.

For every N it runs ``apps/bench memory`` (CPU peak of one training step at ``--batches``, no
activation checkpointing, and the paper-regime bf16 estimate) and ``apps/bench throughput``
(training tokens/s at batch 1, no sampling) on the paper scale at that N, each into its own
folder under ``--out`` (``memory-N<N>``, ``throughput-N<N>``), then writes ``vocab.json``,
``vocab.md`` and one plot, ``vocab.png``: TDLM's memory and speed ratios against N, measured
and analytic. A folder that already holds its bench's result for the same options is reused, so
the sweep can run one N at a time on a shared machine and a last run with every N only
assembles the report.

The parameter budget is the contenders' (:mod:`.contenders`): MDLM's total parameter count,
head included, TDLM deepened to it. Beside the analytic memory it also gives, as a reference
and not a contender, TDLM at MDLM's depth (the same blocks, without the head's parameters).
The analytic speed ratio is the ratio of FLOPs per training step: model FLOPs
(:func:`.throughput.step_flops`) plus, for the chunked loss, its recomputed head (``2 D N`` per
token).
"""

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from tdlm_nn import param_breakdown
from tdlm_train.errors import UserError

from .contenders import MODELS, Scale, bench_scales, contender_config
from .memory import MemoryOptions, analytic_peak, run_memory
from .report import environment, markdown_table, mib, pyplot, write_report
from .throughput import ThroughputOptions, run_throughput, step_flops

__all__ = ["VocabSweepOptions", "run_vocab_sweep"]


@dataclass(frozen=True, kw_only=True)
class VocabSweepOptions:
    scale: str = "paper"  # the scale swept, at each N
    vocab_sizes: tuple[int, ...] = (32_768, 50_258, 128_256, 256_000)
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
    option added since then counts as given at its default)."""
    path = options.out_dir / f"{bench}.json"
    wanted = {k: str(v) for k, v in vars(options).items() if k != "out_dir"}
    if path.exists():
        figures = json.loads(path.read_text())
        defaults = {f.name: str(f.default) for f in dataclasses.fields(options)}
        written = {k: figures["options"].get(k, defaults[k]) for k in wanted}
        if written != wanted or set(figures["options"]) - set(defaults):
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
    """bf16 paper regime (16 x 1024 tokens, one GPU): no checkpointing, every block recomputed
    selectively, every block recomputed in full."""
    mdlm = contender_config("mdlm", scale)
    shallow = dataclasses.replace(
        contender_config("tdlm", scale), n_blocks=mdlm.n_blocks, mlp_hidden=mdlm.hidden_size
    )
    rows = []
    for mode in ("off", "selective", "all"):
        totals = {m: analytic_peak(m, scale, 16, "bf16", mode)["total"] for m in MODELS}
        reference = analytic_peak("tdlm", scale, 16, "bf16", mode, config=shallow)
        rows.append(
            {"checkpointing": mode, "totals": totals, "tdlm_at_mdlm_depth": reference["total"]}
        )
    return rows


def _flops(scale: Scale) -> dict[str, int]:
    """FLOPs of one training step at batch 1 (module doc)."""
    flops = {m: step_flops(contender_config(m, scale), 1, scale.seq_len) for m in MODELS}
    flops["mdlm-chunked"] += (
        2 * contender_config("mdlm", scale).width * scale.vocab_size * (scale.seq_len)
    )
    return flops


def _round_ratio(models: dict, a: str, b: str) -> dict[str, float]:
    """Median, min and max over rounds of ``a``'s training tokens/s over ``b``'s."""
    pairs = zip(
        models[a]["train_tokens_per_s_rounds"], models[b]["train_tokens_per_s_rounds"], strict=True
    )
    ratios = [x / y for x, y in pairs]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


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
            batches=options.batches,
            checkpointing=("off",),
            device=options.device,
            out_dir=options.out_dir / f"memory-N{n}",
        )
        throughput_options = ThroughputOptions(
            scale=options.scale,
            vocab_sizes=(n,),
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
                "measured_memory": [
                    {
                        "batch": r["batch"],
                        "model": r["model"],
                        "peak_bytes": r["peak_bytes"],
                        "analytic_bytes": r["analytic"]["total"],
                        "skipped": r.get("skipped"),
                    }
                    for r in memory["measurements"]
                ],
                "analytic_memory": _analytic(scale),
                "train_tokens_per_s": {m: models[m]["train_tokens_per_s"] for m in MODELS},
                "speed_ratio": {
                    "tdlm/mdlm": _round_ratio(models, "tdlm", "mdlm"),
                    "tdlm/mdlm-chunked": _round_ratio(models, "tdlm", "mdlm-chunked"),
                },
                "interleaved": speed["runs"][0]["interleaved"],
                "threads": speed["environment"]["threads"],
                "flops": _flops(scale),
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
    cells = {(r["batch"], r["model"]): r for r in point["measured_memory"]}
    for batch in dict.fromkeys(r["batch"] for r in point["measured_memory"]):
        got = [cells.get((batch, m), {}) for m in MODELS]
        peaks = [c.get("peak_bytes") for c in got]
        rows.append(
            [f"{point['vocab_size']:,}", batch]
            + [
                f"{mib(c['peak_bytes'])} ({mib(c['analytic_bytes'])})"
                if c.get("peak_bytes")
                else "skipped"
                for c in got
            ]
            + [_ratio(peaks[2], peaks[0]), _ratio(peaks[2], peaks[1])]
        )
    return rows


def vocab_markdown(figures: dict) -> str:
    points, env = figures["points"], figures["environment"]
    scale = figures["options"]["scale"]
    budget = [
        [
            f"{p['vocab_size']:,}",
            "MDLM (both)" if row["model"] == "mdlm" else "TDLM",
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
    analytic = [
        [f"{p['vocab_size']:,}", row["checkpointing"]]
        + [mib(row["totals"][m]) for m in MODELS]
        + [
            _ratio(row["totals"]["tdlm"], row["totals"]["mdlm"]),
            _ratio(row["totals"]["tdlm"], row["totals"]["mdlm-chunked"]),
            f"{mib(row['tdlm_at_mdlm_depth'])} "
            f"({_ratio(row['tdlm_at_mdlm_depth'], row['totals']['mdlm'])})",
        ]
        for p in points
        for row in p["analytic_memory"]
    ]
    speed = [
        [f"{p['vocab_size']:,}", "interleaved" if p["interleaved"] else "one at a time"]
        + [
            f"{s['median']:,.1f} ({s['min']:,.1f}-{s['max']:,.1f})"
            for s in (p["train_tokens_per_s"][m] for m in MODELS)
        ]
        + [
            "{median:.2f} ({min:.2f}-{max:.2f})".format(**p["speed_ratio"][key])
            for key in ("tdlm/mdlm", "tdlm/mdlm-chunked")
        ]
        + [
            _ratio(p["flops"]["mdlm"], p["flops"]["tdlm"]),
            _ratio(p["flops"]["mdlm-chunked"], p["flops"]["tdlm"]),
        ]
        for p in points
    ]
    dates = sorted({d for p in points for d in p["measured_on"]})
    commits = sorted({c for p in points for c in p["commits"]})
    threads = "/".join(str(t) for t in sorted({p["threads"] for p in points}))
    return "\n\n".join(
        [
            f"The {scale} scale at each N (paper: width 768, 12 heads, L = 1,024, small preset; "
            f"TDLM on a K = 64 tree); {env['device']} {env['device_name']}, {threads} torch "
            f"thread(s), torch {env['torch']}; benches finished {dates[0]} to {dates[-1]}, "
            f"commit {', '.join(commits)}.",
            "Parameter budget (MDLM's total, head included; TDLM deepened to it):",
            markdown_table(
                ["N", "model", "blocks", "MLP", "embedding", "blocks", "head", "total"], budget
            ),
            "Peak memory of one training step on the CPU (fp32, no activation checkpointing; "
            "analytic estimate in brackets), MiB:",
            markdown_table(
                [
                    "N",
                    "batch",
                    "MDLM",
                    "MDLM chunked-CE",
                    "TDLM",
                    "TDLM / MDLM",
                    "TDLM / chunked",
                ],
                [row for p in points for row in _memory_rows(p)],
            ),
            "Analytic peak in the paper's regime (bf16 autocast, 16 sequences, one GPU), "
            "MiB; the last column is a reference, not a contender: TDLM with MDLM's depth and "
            "fewer parameters (its ratio to MDLM in brackets):",
            markdown_table(
                [
                    "N",
                    "activation checkpointing",
                    "MDLM",
                    "MDLM chunked-CE",
                    "TDLM",
                    "TDLM / MDLM",
                    "TDLM / chunked",
                    "TDLM at MDLM's depth",
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
                    "MDLM",
                    "MDLM chunked-CE",
                    "TDLM",
                    "TDLM / MDLM",
                    "TDLM / chunked",
                    "FLOPs MDLM / TDLM",
                    "FLOPs chunked / TDLM",
                ],
                speed,
            ),
        ]
    )


_RECOMPUTE_LABEL = {"off": "", "selective": ", selective recompute", "all": ", full recompute"}


def _plot(points: list[dict], path: Path) -> None:
    plt = pyplot()
    n = [p["vocab_size"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    batches = sorted({r["batch"] for p in points for r in p["measured_memory"]})
    for other, color in (("mdlm", "C0"), ("mdlm-chunked", "C1")):
        for batch, marker in zip(batches, "os^v", strict=False):
            xs, ys = [], []
            for p in points:
                peaks = {
                    r["model"]: r["peak_bytes"] for r in p["measured_memory"] if r["batch"] == batch
                }
                if peaks.get("tdlm") and peaks.get(other):
                    xs.append(p["vocab_size"])
                    ys.append(peaks["tdlm"] / peaks[other])
            left.plot(
                xs, ys, marker=marker, color=color, label=f"TDLM / {other}, CPU fp32 batch {batch}"
            )
        for mode, style in (("off", "--"), ("selective", "-."), ("all", ":")):
            ratios = [
                next(r for r in p["analytic_memory"] if r["checkpointing"] == mode)["totals"]
                for p in points
            ]
            left.plot(
                n,
                [t["tdlm"] / t[other] for t in ratios],
                style,
                color=color,
                label=f"TDLM / {other}, bf16 batch 16 analytic" + _RECOMPUTE_LABEL[mode],
            )
    left.axhline(0.3, color="grey", lw=0.8)
    left.set(xscale="log", xlabel="vocabulary size N", ylabel="peak memory ratio", ylim=(0, None))
    left.set_title("memory: TDLM / baseline (grey: 0.3)")
    left.legend(fontsize=7)
    for other, color in (("mdlm", "C0"), ("mdlm-chunked", "C1")):
        ratios = [p["speed_ratio"][f"tdlm/{other}"] for p in points]
        right.errorbar(
            n,
            [r["median"] for r in ratios],
            yerr=[
                [r["median"] - r["min"] for r in ratios],
                [r["max"] - r["median"] for r in ratios],
            ],
            fmt="o-",
            capsize=3,
            color=color,
            label=f"TDLM / {other}, CPU fp32 batch 1 (median, range over rounds)",
        )
        right.plot(
            n,
            [p["flops"][other] / p["flops"]["tdlm"] for p in points],
            "--",
            color=color,
            label=f"{other} / TDLM FLOPs (analytic)",
        )
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
