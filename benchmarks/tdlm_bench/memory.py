"""``apps/bench memory``: peak training-step memory of MDLM, chunked-CE MDLM and TDLM (issue 6).

Each (scale, model, batch) runs in a fresh process (:mod:`.memory_worker`, which documents the
CUDA and CPU measures). Beside every measurement stands :func:`analytic_peak`, a count of what
the step holds, so that the CPU figures validate the model and the model gives the paper's
regime (bf16 autocast, 16 x 1024 tokens per GPU) where no GPU is at hand.

The analytic count (bytes), for P parameters, T = batch x length tokens, width D, n blocks and
E = T x k logits (k = N for MDLM, the widest tree level for TDLM):

* weights, gradients and AdamW's two moments, all fp32: ``16 P``;
* activations saved for the backward pass, per token and block: fp32 ``92 D`` (23 D-sized
  tensors: the residual input, LayerNorm and modulation outputs twice, q/k/v, rotated q/k, the
  attention output and its copy, the 4D MLP hidden before and after GELU, two dropout outputs)
  plus two byte-masks ``2 D``; under bf16 autocast the 17 D-sized matmul products are bf16 and
  the six fp32 ones stay, ``62 D``; plus the backward's working set (about ``10 D`` fp32 per
  token: gradients of the residual stream and of one MLP hidden) and the embedding/final norm;
* the head's logits at the start of the backward pass: the logits, softmax, the gather's
  gradient and their sum, fp32: ``16 E``; under autocast the bf16 logits, their fp32 copy and
  three fp32 working tensors: ``2 + 4 + 12 = 18 E``; the chunked loss holds only one
  ``batch x 128``-position chunk's logits: ``E = batch x 128 x N``;
* the optimizer step's peak ``16 P + 4 P`` (a foreach temporary per parameter), when larger.

With activation checkpointing on every block (``--checkpointing all``) a block saves only its
fp32 input, ``4 D`` per token, and the one block being recomputed holds its full set, so the
activations become ``T x (n x 4 D + per-block set + working set)``.

Under FSDP over ``w`` GPUs (``--parallel fsdp``) each GPU holds ``16 P / w`` of the states plus
the unsharded working set of the blocks in flight: two blocks' bf16 parameters and fp32
gradients before their reduce-scatter, ``2 x 6 P_block``. Activations are per GPU and unchanged.
"""

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tdlm_nn import param_breakdown
from tdlm_train.errors import UserError

from .contenders import MODELS, SCALES, Scale, contender_config
from .report import environment, markdown_table, mib, pyplot, write_report

__all__ = ["MemoryOptions", "analytic_peak", "run_memory"]

_CHUNK = 128  # chunked_loss's default chunk (positions of the sequence)
_HOME = Path(__file__).resolve().parents[1]  # benchmarks/, the folder holding tdlm_bench


@dataclass(frozen=True, kw_only=True)
class MemoryOptions:
    scales: tuple[str, ...] = ("paper", "tiny")
    batches: tuple[int, ...] = ()  # empty: CPU 1, 2, 4; CUDA doubling until out of memory
    checkpointing: tuple[str, ...] = ("off", "all")  # activation checkpointing: off | all blocks
    device: str = "cpu"
    dropout: float = 0.1
    out_dir: Path = Path("runs/bench/memory")


def analytic_peak(
    model: str,
    scale: Scale,
    batch: int,
    precision: str,
    checkpointed: bool = False,
    world_size: int = 1,
) -> dict[str, int]:
    """The peak bytes of one training step by the count in the module doc, and its parts.

    ``world_size`` > 1: per GPU under FSDP sharding over that many GPUs.
    """
    config = contender_config(model, scale)
    params = param_breakdown(config).total
    d, n = config.width, config.n_blocks
    tokens = batch * scale.seq_len
    per_block = {"fp32": 94 * d, "bf16": 64 * d}[precision]
    saved = n * 4 * d + per_block if checkpointed else n * per_block
    activations = tokens * (saved + (10 + 4) * d * 4)
    width = config.shape.num_slots
    positions = batch * min(_CHUNK, scale.seq_len) if model == "mdlm-chunked" else tokens
    per_logit = {"fp32": 16, "bf16": 18}[precision]
    head = positions * width * per_logit
    if world_size > 1:
        hidden = config.hidden_size
        block = 4 * d * d + 2 * d * hidden + hidden + d + (config.cond_dim + 1) * 6 * d + 2 * d
        states = 16 * params // world_size + 2 * 6 * block
        step_peak = states + 4 * params // world_size
    else:
        states = 16 * params
        step_peak = states + 4 * params
    total = max(states + activations + head, step_peak)
    return {
        "states": states,
        "activations": activations,
        "head": head,
        "total": total,
        "parameters": params,
    }


def _measure(
    models: tuple[str, ...], scale: str, batch: int, checkpointed: bool, options: MemoryOptions
) -> list[dict]:
    """One fresh worker process per model. On CUDA the models' workers run at once (each
    process's ``max_memory_allocated`` counts its own tensors only), and one that ran out of
    memory beside the others is measured again alone; on the CPU one at a time (the host's
    memory is the measure there)."""
    at_once = len(models) if options.device.startswith("cuda") else 1
    results = _workers(models, scale, batch, checkpointed, options, at_once)
    if at_once > 1:
        for i, result in enumerate(results):
            if result.get("out_of_memory"):
                results[i] = _workers((models[i],), scale, batch, checkpointed, options, 1)[0]
    return results


def _workers(
    models: tuple[str, ...],
    scale: str,
    batch: int,
    checkpointed: bool,
    options: MemoryOptions,
    at_once: int,
) -> list[dict]:
    # The worker imports this package from its folder (benchmarks/), which no wheel installs.
    path = os.pathsep.join(filter(None, [str(_HOME), os.environ.get("PYTHONPATH", "")]))
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "0",
    }
    results = []
    for first in range(0, len(models), at_once):
        workers = []
        for model in models[first : first + at_once]:
            args = {
                "model": model,
                "scale": dataclasses.asdict(SCALES[scale]),
                "batch": batch,
                "device": options.device,
                "dropout": options.dropout,
                "checkpointed": checkpointed,
            }
            command = [sys.executable, "-m", "tdlm_bench.memory_worker", json.dumps(args)]
            pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
            workers.append((args, subprocess.Popen(command, env=env, **pipes)))
        for args, worker in workers:
            out, err = worker.communicate()
            if worker.returncode != 0:
                raise UserError(f"the memory worker failed on {args}: {err.strip()[-500:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _batches(options: MemoryOptions) -> list[int]:
    if options.batches:
        return list(options.batches)
    if options.device.startswith("cuda"):
        return [2**i for i in range(10)]  # stops at the first out-of-memory
    return [1, 2, 4]


def run_memory(options: MemoryOptions, log=print) -> dict:
    """Sweep scales x batches x models; write memory.json/.md/.png; return the figures."""
    unknown = set(options.scales) - set(SCALES)
    if unknown:
        raise UserError(f"--scales: unknown {sorted(unknown)}; choose from {sorted(SCALES)}")
    modes = set(options.checkpointing)
    if not modes or modes - {"off", "all"}:
        raise UserError(f"--checkpointing takes off and/or all, got {options.checkpointing}")
    device = torch.device(options.device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    rows = []
    for scale in options.scales:
        for mode in options.checkpointing:
            checkpointed = mode == "all"
            for batch in _batches(options):
                out = _measure(MODELS, scale, batch, checkpointed, options)
                for model, result in zip(MODELS, out, strict=True):
                    result["analytic"] = analytic_peak(
                        model, SCALES[scale], batch, precision, checkpointed
                    )
                    log(
                        f"{scale} {model} batch {batch} checkpointing {mode}: "
                        + (
                            "out of memory"
                            if result.get("out_of_memory")
                            else f"{mib(result['peak_bytes'])} MiB measured, "
                            f"{mib(result['analytic']['total'])} MiB analytic"
                        )
                    )
                rows += out
                if any(r.get("out_of_memory") for r in out):
                    break
    regime = [
        {"model": model, "checkpointing": mode, "gpus": gpus}
        | analytic_peak(model, SCALES["paper"], 16, "bf16", mode == "all", gpus)
        for gpus in (1, 8)
        for mode in ("off", "all")
        for model in MODELS
    ]
    curve = {
        precision_: {
            str(b): {m: analytic_peak(m, SCALES["paper"], b, precision_)["total"] for m in MODELS}
            for b in (1, 2, 4, 8, 16, 32, 64)
        }
        for precision_ in ("fp32", "bf16")
    }
    figures = {
        "bench": "memory",
        "environment": environment(device),
        "options": {k: str(v) for k, v in vars(options).items()},
        "precision": precision,
        "measurements": rows,
        "paper_regime_analytic": regime,
        "analytic_curve": curve,
    }
    options.out_dir.mkdir(parents=True, exist_ok=True)
    _plot(rows, curve, options.out_dir / "memory.png")
    write_report(options.out_dir, "memory", figures, memory_markdown(figures))
    return figures


def _ratio(a: int | float | None, b: int | float | None) -> str:
    return f"{a / b:.2f}" if a and b else "—"


def memory_markdown(figures: dict) -> str:
    """The measured table (with the analytic column and ratios) and the paper-regime estimate."""
    rows = figures["measurements"]
    table = []
    keyed = {(r["scale"], r["checkpointed"], r["batch"], r["model"]): r for r in rows}
    for scale, checkpointed, batch in dict.fromkeys(
        (r["scale"], r["checkpointed"], r["batch"]) for r in rows
    ):
        cells = [keyed[(scale, checkpointed, batch, m)] for m in MODELS]
        peaks = [c.get("peak_bytes") for c in cells]
        table.append(
            [scale, "all blocks" if checkpointed else "off", batch]
            + [
                f"{mib(p)} ({mib(c['analytic']['total'])})" if p else "OOM"
                for p, c in zip(peaks, cells, strict=True)
            ]
            + [_ratio(peaks[2], peaks[0]), _ratio(peaks[2], peaks[1])]
        )
    header = [
        "scale",
        "activation checkpointing",
        "batch",
        "MDLM MiB (analytic)",
        "MDLM chunked-CE MiB (analytic)",
        "TDLM MiB (analytic)",
        "TDLM / MDLM",
        "TDLM / chunked",
    ]
    regime = figures["paper_regime_analytic"]
    faithful = {(r["checkpointing"], r["gpus"]): r["total"] for r in regime if r["model"] == "mdlm"}
    regime_rows = [
        [
            r["model"],
            r["checkpointing"],
            "1" if r["gpus"] == 1 else f"{r['gpus']} (FSDP)",
            f"{r['parameters']:,}",
            mib(r["states"]),
            mib(r["activations"]),
            mib(r["head"]),
            mib(r["total"]),
            _ratio(r["total"], faithful[(r["checkpointing"], r["gpus"])]),
        ]
        for r in regime
    ]
    env = figures["environment"]
    return "\n\n".join(
        [
            f"Peak memory of one training step ({figures['precision']}, "
            f"{rows[0]['method'] if rows else ''}; analytic estimate in brackets), "
            f"{env['device']} {env['device_name']}, torch {env['torch']}, "
            f"{env['date']}, commit {env['git_commit']}.",
            markdown_table(header, table),
            "Analytic estimate in the paper's regime (bf16 autocast, 16 x 1024 tokens per GPU, "
            "paper scale), per GPU; / MDLM is to faithful MDLM in the same setting:",
            markdown_table(
                [
                    "model",
                    "activation checkpointing",
                    "GPUs",
                    "parameters",
                    "states MiB",
                    "activations MiB",
                    "head MiB",
                    "total MiB",
                    "/ MDLM",
                ],
                regime_rows,
            ),
        ]
    )


def _plot(rows: list[dict], curve: dict, path: Path) -> None:
    plt = pyplot()
    scales = list(dict.fromkeys(r["scale"] for r in rows))
    fig, axes = plt.subplots(1, len(scales) + 1, figsize=(5 * (len(scales) + 1), 4))
    for ax, scale in zip(axes, scales, strict=False):
        for model in MODELS:
            mine = [
                r
                for r in rows
                if r["scale"] == scale and r["model"] == model and not r["checkpointed"]
            ]
            got = [r for r in mine if r.get("peak_bytes")]
            line = ax.plot(
                [r["batch"] for r in got],
                [r["peak_bytes"] / 2**30 for r in got],
                "o-",
                label=f"{model} measured",
            )[0]
            recomputed = [
                r
                for r in rows
                if r["scale"] == scale
                and r["model"] == model
                and r["checkpointed"]
                and r.get("peak_bytes")
            ]
            ax.plot(
                [r["batch"] for r in recomputed],
                [r["peak_bytes"] / 2**30 for r in recomputed],
                "s:",
                color=line.get_color(),
                label=f"{model} measured, checkpointed blocks",
            )
            ax.plot(
                [r["batch"] for r in mine],
                [r["analytic"]["total"] / 2**30 for r in mine],
                "--",
                color=line.get_color(),
                label=f"{model} analytic",
            )
        ax.set(xlabel="batch (sequences)", ylabel="peak GiB", title=f"{scale} scale, measured")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for precision, style in (("fp32", "-"), ("bf16", "--")):
        batches = [int(b) for b in curve[precision]]
        for other in ("mdlm", "mdlm-chunked"):
            ax.plot(
                batches,
                [
                    curve[precision][str(b)]["tdlm"] / curve[precision][str(b)][other]
                    for b in batches
                ],
                style,
                marker="o",
                label=f"TDLM / {other}, {precision}",
            )
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set(
        xscale="log",
        xlabel="batch (x 1024 tokens)",
        ylabel="ratio",
        title="paper scale, analytic ratio",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
