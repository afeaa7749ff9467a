"""``apps/bench sampling``: sampling tokens/s and peak memory of TDLM and MDLM at equal sampler
steps, each step split into network, head and sampler (docs/method.md, "The sampler").

Both models are the contenders of :mod:`.contenders` at the paper scale (``small``: width 768;
MDLM 12 blocks on the flat tree, TDLM deepened to MDLM's parameter budget) at every N of
``--vocab-sizes``, sampling ``batch x seq_len`` tokens with tdlm-diffusion's
``ancestral_sample`` in ``--steps`` steps (TDLM spreads them over its levels) and draws in
``--precision`` (float64, the library's default). Memory and speed do not depend on the
tree's grouping, so the contenders' seeded random tree and untrained (seeded) weights stand in.

**Measured cells** (``--batches``): each round runs one fresh worker process per model
(:mod:`.sampling_worker`, which documents the measures), MDLM then TDLM, so the two are timed
side by side and every peak is a fresh process's: one whole ``ancestral_sample`` run timed with
its peak memory, then the same draws again through the sampler's parts, **network**
(``TreeDiT.hidden``), **head** (``TreeDiT.head``: ``D -> N`` or ``D -> K``) and **sampler**
(``ancestral_sample_step``), each timed with the memory it adds; the parts' sum is reported
against the whole run's time.

**Analytic cells** (every batch, ``--analytic-batches`` only so): :func:`analytic_sampling`,
for T = batch x length tokens, width D, MLP width H, k = N (MDLM) or K (TDLM) slots, logits of
``b_l`` bytes (fp32 on the CPU, bf16 under CUDA autocast) and draws of ``p`` bytes:

* weights and tree tables: fp32 parameters plus the process's buffers;
* a no-grad forward's working set at its widest, in a block's MLP: the MLP hidden before and
  after GELU and ten D-sized fp32 tensors (the block's input and output residuals, norms,
  modulation and attention leftovers), ``T (40 D + 2 b_l H)``: measured on the CPU (fp32: 12, 18,
  26 and 42 D-sized tensors per token at H = D, 4 D, 8 D and 16 D); then the head's fp32 input
  ``4 T D`` beside its logits ``b_l T k``;
* the previous step's logits, which ``ancestral_sample`` holds while the network computes the
  next ones (a level's first call aside): ``b_l T k`` more during the forward;
* the sampler's step on its ``m`` movers, the most a step moves in expectation (``T / n_h`` for
  the linear schedule and ``n_h`` steps at level h): the movers' logits ``b_l m k``, then at
  most three ``p``-byte ``m x k`` tensors (the masked logits, their scaled copy, the softmax)
  or two and 6 bytes (probabilities, CDF, the last-positive-slot search's masks), so
  ``m k (b_l + max(3 p, 2 p + 6))``; its ``probabilities`` term is ``p m k``.

The peak is the weights plus the larger of the forward's and the sampler's phase. MDLM's own
sampler normalises every position's ``N`` probabilities at every step (``p T N``); the library's
normalises only the movers' (``p m N``, ``m = T`` only when a level has one step). FLOPs per
network call are a third of :func:`.throughput.step_flops` (the forward of forward + backward),
the head's ``2 T D k`` of them. On the CPU a model whose analytic peak (plus 1 GiB) exceeds the
memory available is not run, and its cell stays analytic.
"""

import dataclasses
import functools
import json
import math
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tdlm_diffusion import TreeProcess, step_grid, steps_per_level
from tdlm_nn import param_breakdown
from tdlm_train.errors import UserError
from tdlm_tree import flat_tree, random_tree

from .contenders import SCALES, Scale, contender_config, parse_contender
from .memory import HOST_BASELINE, available_bytes
from .report import environment, markdown_table, mib, pyplot, write_report
from .sampling_worker import PARTS
from .throughput import step_flops

__all__ = ["SamplingOptions", "analytic_sampling", "run_sampling", "sampling_scale"]

MODELS = ("mdlm", "tdlm")  # the default contenders; MDLM always runs (the ratios' base)
# The cell: N = 256,000, batch 4, L = 1024, measured on the CPU.
TARGET = {"vocab_size": 256_000, "batch": 4, "speed": 2.0, "memory": 0.3}
_PRECISION_BYTES = {"float64": 8, "float32": 4}
_HOME = Path(__file__).resolve().parents[1]  # benchmarks/, the folder holding tdlm_bench


@dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    scale: str = "paper"  # the model preset's scale (contenders.SCALES), at each N
    models: tuple[str, ...] = MODELS  # mdlm and TDLM networks: tdlm, tdlm@<spend>
    vocab_sizes: tuple[int, ...] = (32_768, 50_258, 128_256, 256_000)
    batches: tuple[int, ...] = (1, 4)  # measured (fresh worker per model and round)
    analytic_batches: tuple[int, ...] = (16, 64)  # given by the analytic count only
    seq_len: int = 1024
    steps: int = 8  # sampler steps per run, every model
    rounds: int = 3
    precision: str = "float64"  # the draws' dtype: float64 (the library's default) | float32
    device: str = "cpu"
    out_dir: Path = Path("runs/bench/sampling")


def sampling_scale(vocab_size: int, seq_len: int, name: str = "paper") -> Scale:
    """The scale called ``name`` (the paper's) at ``vocab_size`` leaves and ``seq_len``
    positions."""
    return dataclasses.replace(SCALES[name], vocab_size=vocab_size, seq_len=seq_len)


@functools.cache
def _process(model: str, scale: Scale) -> TreeProcess:
    """The contender's process (its seeded tree), without a network: for the analytic count."""
    if parse_contender(model).kind == "tdlm":
        return TreeProcess(random_tree(scale.vocab_size, scale.branching, seed=0))
    return TreeProcess(flat_tree(scale.vocab_size))


def _movers(process: TreeProcess, steps: int, tokens: int) -> int:
    """The most positions one step moves in expectation: every position enters each level at
    its parent and leaves it between ``s_j`` and ``s_{j+1}`` with probability
    ``(1 - α(s_j)) - (1 - α(s_{j+1}))`` (docs/method.md, "The sampler")."""
    most = 0.0
    for n in set(steps_per_level(process.schedule, steps)):
        masked = process.schedule.in_level.one_minus_alpha(step_grid(n))
        most = max(most, float((masked[:-1] - masked[1:]).max()))
    return math.ceil(tokens * most)


def analytic_sampling(
    model: str, scale: Scale, batch: int, steps: int, precision: str, device: str = "cpu"
) -> dict[str, int]:
    """The peak bytes and FLOPs of one sampling run by the count in the module doc."""
    config = contender_config(model, scale)
    process = _process(model, scale)
    tokens = batch * scale.seq_len
    d, hidden, k = config.width, config.hidden_size, config.shape.num_slots
    logit_bytes = 2 if device.startswith("cuda") else 4  # bf16 autocast on CUDA
    p = _PRECISION_BYTES[precision]
    movers = _movers(process, steps, tokens)
    weights = 4 * param_breakdown(config).total + sum(
        b.numel() * b.element_size() for b in process.buffers()
    )
    activations = tokens * (40 * d + 2 * logit_bytes * hidden)
    logits = logit_bytes * tokens * k
    # The sampler holds the previous logits during a call unless every level has one step.
    held = logits if max(steps_per_level(process.schedule, steps)) > 1 else 0
    working = movers * k * (logit_bytes + max(3 * p, 2 * p + 6))
    network_phase = held + max(activations, 4 * tokens * d + logits)
    sampler_phase = logits + working
    forward = step_flops(config, batch, scale.seq_len) // 3
    head = 2 * tokens * d * k
    return {
        "weights": weights,
        "activations": activations,
        "logits": logits,
        "movers": movers,
        "probabilities": p * movers * k,
        "sampler_working": working,
        "network_phase": network_phase,
        "sampler_phase": sampler_phase,
        "total": weights + max(network_phase, sampler_phase),
        "parameters": param_breakdown(config).total,
        "n_blocks": config.n_blocks,
        "slots": k,
        "depth": config.shape.depth,
        "network_flops": forward - head,
        "head_flops": head,
        "run_flops": steps * forward,  # every step calls the network unless nothing moved
        "sampler_elements": tokens * k * config.shape.depth,  # each position moves once a level
    }


def _worker(args: dict) -> dict:
    path = os.pathsep.join(filter(None, [str(_HOME), os.environ.get("PYTHONPATH", "")]))
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "0",
    }
    command = [sys.executable, "-m", "tdlm_bench.sampling_worker", json.dumps(args, default=str)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"the sampling worker failed on {args}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _check(options: SamplingOptions) -> None:
    if options.scale not in SCALES:
        raise UserError(f"--scale takes one of {', '.join(SCALES)}, got {options.scale!r}")
    if options.precision not in _PRECISION_BYTES:
        raise UserError(f"--precision takes float64 or float32, got {options.precision!r}")
    try:
        names = [parse_contender(m) for m in options.models]
    except ValueError as error:
        raise UserError(f"--models: {error}") from None
    if "mdlm" not in options.models or any(n.head_loss != "full" or n.kind == "ar" for n in names):
        raise UserError(
            "--models takes mdlm (every ratio's base) and TDLM networks (tdlm, tdlm@width, "
            "tdlm@shallow, tdlm@none; the sampler reads no head loss), got "
            f"{','.join(options.models)}"
        )
    sizes = [*options.batches, *options.analytic_batches, options.seq_len, options.rounds]
    if not options.vocab_sizes or min(options.vocab_sizes) < 2 or min(sizes) < 1:
        raise UserError("--vocab-sizes must be >= 2 and --batches, --seq-len, --rounds >= 1")
    for n in options.vocab_sizes:
        scale = sampling_scale(n, options.seq_len, options.scale)
        depth = contender_config("tdlm", scale).shape.depth
        if options.steps < depth:
            raise UserError(f"--steps {options.steps} cannot cover TDLM's {depth} levels at N={n}")


def _cell(options: SamplingOptions, n: int, batch: int, log) -> list[dict]:
    """Both models at one (N, batch): analytic, and measured in interleaved rounds where asked
    and where they fit."""
    scale = sampling_scale(n, options.seq_len, options.scale)
    label = f"N={n:,} batch {batch}"
    rows, run = {}, []
    for m in options.models:
        a = analytic_sampling(m, scale, batch, options.steps, options.precision, options.device)
        rows[m] = {"model": m, "vocab_size": n, "batch": batch, "source": "analytic", "analytic": a}
        need = a["total"] + HOST_BASELINE
        if batch not in options.batches:
            continue
        if options.device == "cpu" and need > available_bytes():
            rows[m]["skipped"] = (
                f"needs {need / 2**30:.1f} GiB, {available_bytes() / 2**30:.1f} free"
            )
        else:
            run.append(m)
    worker = {"batch": batch, "steps": options.steps, "precision": options.precision}
    worker |= {"scale": dataclasses.asdict(scale), "device": options.device}
    got: dict[str, list[dict]] = {m: [] for m in run}
    for r in range(options.rounds if run else 0):
        for m in run:  # side by side: every model once per round
            got[m].append(_worker(worker | {"model": m}))
        done = [
            f"{m} out of memory"
            if g[-1].get("out_of_memory")
            else f"{m} {g[-1]['tokens_per_s']:,.1f} tok/s, {mib(g[-1]['peak_bytes'])} MiB"
            for m, g in got.items()
        ]
        log(f"{label} round {r + 1}/{options.rounds}: " + "; ".join(done))
    for m, rounds in got.items():
        if any(g.get("out_of_memory") for g in rounds):
            rows[m]["skipped"] = "out of memory"
        else:
            rows[m] |= _summary(rounds)
    _ratios(rows)
    for m, row in rows.items():
        if row["source"] == "analytic":
            why = f" (not run: {row['skipped']})" if row.get("skipped") else ""
            log(f"{label} {m}: analytic {mib(row['analytic']['total'])} MiB{why}")
    return list(rows.values())


def _summary(rounds: list[dict]) -> dict:
    """One model's measured rounds at one cell."""
    sums = [sum(g["parts_s"].values()) for g in rounds]
    return {
        "source": "measured",
        "method": rounds[0]["method"],
        "steps": rounds[0]["steps"],
        "network_calls": rounds[0]["network_calls"],
        "same_tokens": all(g["same_tokens"] for g in rounds),
        "tokens_per_s": _stats([g["tokens_per_s"] for g in rounds]),
        "tokens_per_s_rounds": [g["tokens_per_s"] for g in rounds],
        "peak_bytes": _stats([g["peak_bytes"] for g in rounds]),
        "parts_s": {p: _stats([g["parts_s"][p] for g in rounds]) for p in PARTS},
        "parts_bytes": {p: max(g["parts_bytes"][p] for g in rounds) for p in PARTS},
        "whole_s": _stats([g["whole_s"] for g in rounds]),
        "parts_sum_over_whole": _stats(
            [total / g["whole_s"] for total, g in zip(sums, rounds, strict=True)]
        ),
    }


def _ratios(rows: dict[str, dict]) -> None:
    """Each TDLM to MDLM, measured where both were measured (speed: median of per-round
    ratios)."""
    mdlm = rows["mdlm"]
    for m, tdlm in rows.items():
        if m == "mdlm":
            continue
        a = tdlm["analytic"]
        a["memory_ratio"] = a["total"] / mdlm["analytic"]["total"]
        a["flops_ratio"] = a["run_flops"] / mdlm["analytic"]["run_flops"]
        if mdlm["source"] == tdlm["source"] == "measured":
            pairs = zip(tdlm["tokens_per_s_rounds"], mdlm["tokens_per_s_rounds"], strict=True)
            tdlm["speed_ratio"] = statistics.median([t / b for t, b in pairs])
            tdlm["memory_ratio"] = tdlm["peak_bytes"]["median"] / mdlm["peak_bytes"]["median"]


def _target(cells: list[dict], device: str) -> dict:
    """The issue's cell, if measured on the CPU."""
    found = [
        c
        for c in cells
        if c["model"] == "tdlm"
        and (c["vocab_size"], c["batch"]) == (TARGET["vocab_size"], TARGET["batch"])
    ]
    if device != "cpu" or not found or "speed_ratio" not in found[0]:
        return TARGET | {"measured": False}
    cell = found[0]
    return TARGET | {
        "measured": True,
        "speed_ratio": cell["speed_ratio"],
        "memory_ratio": cell["memory_ratio"],
        "speed_met": cell["speed_ratio"] >= TARGET["speed"],
        "memory_met": cell["memory_ratio"] <= TARGET["memory"],
    }


def run_sampling(options: SamplingOptions, log=print) -> dict:
    """Every (N, batch) cell, measured and analytic; writes sampling.json/.md/.png."""
    _check(options)
    batches = sorted({*options.batches, *options.analytic_batches})
    cells = [
        row
        for n in options.vocab_sizes
        for batch in batches
        for row in _cell(options, n, batch, log)
    ]
    figures = {
        "bench": "sampling",
        "environment": environment(torch.device(options.device)),
        "options": {k: str(v) for k, v in vars(options).items()},
        "cells": cells,
        "target": _target(cells, options.device),
    }
    options.out_dir.mkdir(parents=True, exist_ok=True)
    _plot(cells, options.out_dir / "sampling.png")
    write_report(options.out_dir, "sampling", figures, sampling_markdown(figures))
    return figures


def _range(s: dict, digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def sampling_markdown(figures: dict) -> str:
    """Every cell (measured or analytic), the measured cells' parts, the analytic count."""
    o, env, cells = figures["options"], figures["environment"], figures["cells"]
    main, parts, count = [], [], []
    for c in cells:
        a, measured = c["analytic"], c["source"] == "measured"
        key = [f"{c['vocab_size']:,}", c["batch"], c["model"]]
        source = c["source"] + (f" (not run: {c['skipped']})" if c.get("skipped") else "")
        main.append(
            key
            + [source, f"{a['parameters']:,}", a["n_blocks"], a["slots"]]
            + (
                [
                    f"{c['steps']} / {c['network_calls']}",
                    _range(c["tokens_per_s"], 1),
                    _x(c.get("speed_ratio", 1.0 if c["model"] == "mdlm" else None)),
                    f"{mib(c['peak_bytes']['median'])} ({mib(a['total'])})",
                    _x(c.get("memory_ratio", 1.0 if c["model"] == "mdlm" else None)),
                ]
                if measured
                else [
                    f"{o['steps']} / —",
                    "—",
                    "—",
                    f"({mib(a['total'])})",
                    f"({a.get('memory_ratio', 1.0):.2f})",
                ]
            )
        )
        if measured:
            s, b = c["parts_s"], c["parts_bytes"]
            expected = {
                "network": a["activations"],
                "head": a["logits"],
                "sampler": a["sampler_working"],
            }
            parts.append(
                key
                + [f"{s[p]['median']:,.2f}" for p in PARTS]
                + [_range(c["parts_sum_over_whole"], 2)]
                + [f"{mib(b[p])} ({mib(expected[p])})" for p in PARTS]
                + ["yes" if c["same_tokens"] else "**no**"]
            )
        count.append(
            key
            + [mib(a[p]) for p in ("weights", "activations", "logits")]
            + [f"{a['movers']:,}"]
            + [mib(a[p]) for p in ("probabilities", "sampler_working", "total")]
            + [f"{a.get('memory_ratio', 1.0):.2f}"]
            + [
                f"{a['network_flops'] / 1e9:,.0f} + {a['head_flops'] / 1e9:,.0f}",
                f"{a['run_flops'] / 1e12:,.1f}",
                f"{a.get('flops_ratio', 1.0):.2f}",
            ]
        )
    t = figures["target"]
    target = (
        f"Target cell (N = {t['vocab_size']:,}, batch {t['batch']}, CPU measured): TDLM samples "
        f"**{t['speed_ratio']:.2f} x** MDLM's tokens/s (target >= {t['speed']} x: "
        f"{'met' if t['speed_met'] else 'not met'}) in **{t['memory_ratio']:.2f} x** its peak "
        f"memory (target <= {t['memory']} x: {'met' if t['memory_met'] else 'not met'})."
        if t["measured"]
        else f"Target cell (N = {t['vocab_size']:,}, batch {t['batch']}, CPU): not measured here."
    )
    key = ["N", "batch", "model"]
    return "\n\n".join(
        [
            f"Sampling batch x {o['seq_len']} tokens in {o['steps']} steps, draws in "
            f"{o['precision']}, {o['scale']} scale (MDLM's parameter budget); {env['device']} "
            f"{env['device_name']}, {env['threads']} torch thread(s), torch {env['torch']}, "
            f"{env['date']}, commit {env['git_commit']}. Measured cells: median (min-max) over "
            f"{o['rounds']} rounds, MDLM and TDLM side by side in each, a fresh process per model "
            "and round; / MDLM of tokens/s is the median of per-round ratios. Analytic cells and "
            "figures in brackets: the count in benchmarks/tdlm_bench/sampling.py.",
            target,
            markdown_table(
                key
                + [
                    "cell",
                    "parameters",
                    "blocks",
                    "k",
                    "steps / network calls",
                    "tokens/s",
                    "/ MDLM",
                    "peak MiB (analytic)",
                    "/ MDLM",
                ],
                main,
            ),
            "Each measured run again, part by part (seconds per run, median over rounds; the "
            "most memory a part adds above what was live when it started, and its analytic "
            "term: the forward's working set, the logits, the sampler's working set); parts / "
            "whole is their sum over the whole ancestral_sample run's time; same draws: the "
            "parts drew the whole run's tokens:",
            markdown_table(
                key
                + [
                    "network s",
                    "head s",
                    "sampler s",
                    "parts / whole",
                    "network MiB",
                    "head MiB",
                    "sampler MiB",
                    "same draws",
                ],
                parts,
            )
            if parts
            else "(no measured cells)",
            "The analytic count of every cell (MiB; movers: the most positions a step moves in "
            "expectation; GFLOP per network call, TFLOP per run):",
            markdown_table(
                key
                + [
                    "weights",
                    "forward working set",
                    "logits",
                    "movers",
                    "probabilities",
                    "sampler working set",
                    "peak",
                    "TDLM / MDLM",
                    "GFLOP network + head",
                    "run TFLOP",
                    "TDLM / MDLM FLOPs",
                ],
                count,
            ),
        ]
    )


def _plot(cells: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4))
    for model in dict.fromkeys(c["model"] for c in cells):
        for batch in sorted({c["batch"] for c in cells}):
            mine = [c for c in cells if (c["model"], c["batch"]) == (model, batch)]
            got = [c for c in mine if c["source"] == "measured"]
            label = f"{model}, batch {batch}"
            if got:
                n = [c["vocab_size"] for c in got]
                speed.plot(n, [c["tokens_per_s"]["median"] for c in got], marker="o", label=label)
                line = memory.plot(
                    n, [c["peak_bytes"]["median"] / 2**30 for c in got], marker="o", label=label
                )[0]
                color = line.get_color()
            else:
                color = None
            memory.plot(
                [c["vocab_size"] for c in mine],
                [c["analytic"]["total"] / 2**30 for c in mine],
                "--",
                lw=0.8,
                color=color,
                label=f"{label}, analytic",
            )
    speed.set(xscale="log", xlabel="vocabulary N", ylabel="sampling tokens/s", title="measured")
    memory.set(
        xscale="log",
        yscale="log",
        xlabel="vocabulary N",
        ylabel="peak GiB",
        title="measured (solid), analytic (dashed)",
    )
    for ax in (speed, memory):
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
