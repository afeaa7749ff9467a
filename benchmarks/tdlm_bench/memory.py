"""``apps/bench memory``: peak training-step memory of the contenders (issue 6): MDLM as
published, MDLM at its leanest (masked-only, chunked and fused head losses) and TDLM.

Each (scale, model, batch) runs in a fresh process (:mod:`.memory_worker`, which documents the
CUDA and CPU measures). Beside every measurement stands :func:`analytic_peak`, a count of what
the step holds, so that the CPU figures validate the model and the model gives the paper's
regime (bf16 autocast, 16 x 1024 tokens per GPU) where no GPU is at hand. The tables set TDLM
against MDLM as published and against the best MDLM: the lowest-memory MDLM variant measured
(or, in the analytic tables, counted) in the same setting.

The analytic count (bytes), for P parameters, T = batch x length tokens, width D, n blocks and
head width k (k = N for MDLM, the widest tree level for TDLM):

* weights, gradients and AdamW's two moments, all fp32: ``16 P``;
* activations saved for the backward pass, per token and block: fp32 ``92 D`` (23 D-sized
  tensors: the residual input, LayerNorm and modulation outputs twice, q/k/v, rotated q/k, the
  attention output and its copy, the 4D MLP hidden before and after GELU, two dropout outputs)
  plus two byte-masks ``2 D``; under bf16 autocast the 17 D-sized matmul products are bf16 and
  the six fp32 ones stay, ``62 D``; plus the backward's working set (about ``10 D`` fp32 per
  token: gradients of the residual stream and of one MLP hidden) and the embedding/final norm;
* the head at the start of the backward pass, by head loss (:func:`head_bytes`), for the
  ``M`` rows it scores: ``M = T`` for ``full``; for the masked-only ones ``M = T / 2``, the
  expected share ``E_t[1 - α(t)] = 1/2`` of the linear schedule (a batch of B low-discrepancy
  times masks 1/2 ± 1/(2B) of its positions on average, one draw's own share varies around it):

  - ``full`` and ``masked``: the logits, softmax, the gather's gradient and their sum, fp32:
    ``16`` bytes per logit; under autocast the bf16 logits, their fp32 copy and three fp32
    working tensors: ``2 + 4 + 12 = 18``; ``M x k`` logits;
  - ``chunked``: the same per logit, for one chunk of ``tdlm_diffusion.CHUNK_LOGITS`` logits
    (``⌊2^24 / k⌋`` rows, fewer if fewer are masked): at most 256 MiB (fp32) or 288 MiB (bf16)
    whatever N;
  - ``torch`` (``F.linear_cross_entropy``'s chunked path, reduction ``none``, as torch 2.15
    implements it in ``torch/nn/modules/linear_cross_entropy.py``): its forward keeps no
    logits, only its inputs; its backward recomputes them chunk by chunk in one ``[c, N]``
    buffer in the fp32 accumulation dtype, turned into the softmax gradient in place, plus
    under bf16 its bf16 copy for the input gradient: ``4`` bytes per logit (fp32) or ``6``
    (bf16) for ``c x N`` logits, ``c = min(M, next_pow2(⌈M / ⌈N / D⌉⌉))`` rows (its
    ``aspect_ratio`` heuristic: a buffer about the size of the rows' input, up to twice by
    the power of two). This figure is an estimate, checked by the measured CPU cell;
  - ``liger``, ``cce``: not counted (CUDA only: measured, never estimated).

  The head's weight-sized buffers (its bf16 copy under autocast, its gradient before it is
  accumulated) and the gathered rows (``M x D``) are alike for every head loss or small
  beside the logits, and not counted;
* the optimizer step's peak ``16 P + 4 P`` (a foreach temporary per parameter), when larger.

With activation checkpointing on every block (``--checkpointing all``) a block saves only its
fp32 input, ``4 D`` per token, and the one block being recomputed holds its full set, so the
activations become ``T x (n x 4 D + per-block set + working set)``. Selective recomputation
(``--checkpointing selective``: every block, keeping its matmul and attention outputs,
:mod:`tdlm_nn.recompute`) saves per block the fp32 input plus the products q, k, v, the
attention output, its projection, the MLP hidden H and the MLP output: ``4 D + 4 (6 D + H)``
fp32, ``4 D + 2 (6 D + H)`` under bf16 autocast (44 D and 24 D at H = 4 D).

Under FSDP over ``w`` GPUs (``--parallel fsdp``) each GPU holds ``16 P / w`` of the states plus
the unsharded working set of the blocks in flight: two blocks' bf16 parameters and fp32
gradients before their reduce-scatter, ``2 x 6 P_block``. Activations are per GPU and unchanged.

``--models`` picks the contenders (default :data:`.contenders.DEFAULT_MODELS`, less those that
cannot run on the device, which the report names with the reason). ``--vocab-sizes`` measures
the scales at those N instead of their own (issue 15); the paper regime's estimate is then
given at every N. On the CPU a cell whose fp32 estimate (plus 1 GiB for the interpreter and
libraries) exceeds the memory available when it would start is skipped and says so: the host
has no out-of-memory error to catch, only the kernel's OOM killer.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tdlm_diffusion import CHUNK_LOGITS
from tdlm_nn import DiTConfig, param_breakdown
from tdlm_train.errors import UserError

from .contenders import (
    CHECKPOINTING,
    MASKED_SHARE,
    MODELS,
    SCALES,
    Scale,
    bench_models,
    bench_scales,
    best_of,
    contender_config,
    parse_contender,
    scored_share,
)
from .report import environment, markdown_table, mib, pyplot, write_report

__all__ = [
    "COUNTED",
    "MemoryOptions",
    "analytic_peak",
    "head_bytes",
    "memory_scales",
    "paper_regime",
    "run_memory",
]

HOST_BASELINE = 2**30  # CPU: interpreter, libraries and allocator slack beside the estimate
_HOME = Path(__file__).resolve().parents[1]  # benchmarks/, the folder holding tdlm_bench
# Activation checkpointing modes, as the reports name them.
_MODE_LABEL = {"off": "off", "selective": "all blocks, selective", "all": "all blocks"}
# The contenders with an analytic count (the CUDA-only kernels are measured, not counted).
COUNTED = tuple(m for m in MODELS if parse_contender(m)[1] not in ("liger", "cce"))


@dataclass(frozen=True, kw_only=True)
class MemoryOptions:
    scales: tuple[str, ...] = ()  # empty: paper and tiny; with vocab_sizes, paper
    models: tuple[str, ...] = ()  # empty: DEFAULT_MODELS, less what cannot run on the device
    vocab_sizes: tuple[int, ...] = ()  # measure the scales at these N instead of their own
    batches: tuple[int, ...] = ()  # empty: CPU 1, 2, 4; CUDA doubling until out of memory
    checkpointing: tuple[str, ...] = ("off", "all")  # off | selective | all (blocks recomputed)
    device: str = "cpu"
    dropout: float = 0.1
    out_dir: Path = Path("runs/bench/memory")


def head_bytes(
    head_loss: str,
    tokens: int,
    width: int,
    d: int,
    precision: str,
    share: float = MASKED_SHARE,
) -> int:
    """The head's bytes at the start of the backward pass, by the count in the module doc:
    ``tokens`` positions, ``width`` slots (k), model width ``d``; a head loss other than
    ``full`` scores ``share`` of the positions (AR: all of them)."""
    scored = tokens if head_loss == "full" else round(share * tokens)
    if head_loss == "torch":
        rows = min(scored, 1 << (math.ceil(scored / math.ceil(width / d)) - 1).bit_length())
        return rows * width * {"fp32": 4, "bf16": 6}[precision]
    if head_loss == "chunked":
        scored = min(scored, max(1, CHUNK_LOGITS // width))
    elif head_loss not in ("full", "masked"):
        raise ValueError(f"head loss {head_loss!r} has no analytic count (measured on CUDA only)")
    return scored * width * {"fp32": 16, "bf16": 18}[precision]


def analytic_peak(
    model: str,
    scale: Scale,
    batch: int,
    precision: str,
    checkpointing: str = "off",
    world_size: int = 1,
    *,
    config: DiTConfig | None = None,
) -> dict[str, int]:
    """The peak bytes of one training step by the count in the module doc, and its parts.

    ``model``: one of :data:`COUNTED`. ``checkpointing``: ``off``, ``selective`` or ``all``
    (module doc). ``world_size`` > 1: per GPU under FSDP sharding over that many GPUs.
    ``config`` replaces ``model``'s network at ``scale`` (e.g. TDLM at another depth).
    """
    head_loss = parse_contender(model)[1]
    config = contender_config(model, scale) if config is None else config
    share = scored_share(model)
    params = param_breakdown(config).total
    d, n = config.width, config.n_blocks
    tokens = batch * scale.seq_len
    per_block = {"fp32": 94 * d, "bf16": 64 * d}[precision]
    product = {"fp32": 4, "bf16": 2}[precision]  # bytes of a matmul output
    kept = {"selective": 4 * d + product * (6 * d + config.hidden_size), "all": 4 * d}
    saved = n * per_block if checkpointing == "off" else n * kept[checkpointing] + per_block
    activations = tokens * (saved + (10 + 4) * d * 4)
    head = head_bytes(head_loss, tokens, config.shape.num_slots, d, precision, share)
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
        "n_blocks": n,
    }


def available_bytes() -> int:
    """The host memory available now (``MemAvailable`` of ``/proc/meminfo``)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def _measure(
    models: tuple[str, ...], scale: Scale, batch: int, checkpointing: str, options: MemoryOptions
) -> list[dict]:
    """One fresh worker process per model. On CUDA the models' workers run at once (each
    process's ``max_memory_allocated`` counts its own tensors only), and one that ran out of
    memory beside the others is measured again alone; on the CPU one at a time (the host's
    memory is the measure there), each only if its estimate fits (module doc)."""
    if not options.device.startswith("cuda"):
        return [
            _workers((model,), scale, batch, checkpointing, options, 1)[0]
            if (need := _cpu_need(model, scale, batch, checkpointing)) <= available_bytes()
            else _skipped(model, scale, batch, checkpointing, need)
            for model in models
        ]
    results = _workers(models, scale, batch, checkpointing, options, len(models))
    for i, result in enumerate(results):
        if result.get("out_of_memory"):
            results[i] = _workers((models[i],), scale, batch, checkpointing, options, 1)[0]
    return results


def _cpu_need(model: str, scale: Scale, batch: int, checkpointing: str) -> int:
    return analytic_peak(model, scale, batch, "fp32", checkpointing)["total"] + HOST_BASELINE


def _skipped(model: str, scale: Scale, batch: int, checkpointing: str, need: int) -> dict:
    estimate = analytic_peak(model, scale, batch, "fp32", checkpointing)
    return {
        "model": model,
        "scale": scale.name,
        "vocab_size": scale.vocab_size,
        "batch": batch,
        "checkpointing": checkpointing,
        "parameters": estimate["parameters"],
        "n_blocks": estimate["n_blocks"],
        "peak_bytes": None,
        "skipped": f"needs about {need / 2**30:.1f} GiB, "
        f"{available_bytes() / 2**30:.1f} GiB available",
    }


def _workers(
    models: tuple[str, ...],
    scale: Scale,
    batch: int,
    checkpointing: str,
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
                "scale": dataclasses.asdict(scale),
                "batch": batch,
                "device": options.device,
                "dropout": options.dropout,
                "checkpointing": checkpointing,
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


def memory_scales(options: MemoryOptions) -> list[Scale]:
    """The scales ``options`` measures (``--scales`` at ``--vocab-sizes``)."""
    names = options.scales or (("paper",) if options.vocab_sizes else ("paper", "tiny"))
    try:
        return bench_scales(names, options.vocab_sizes)
    except ValueError as error:
        raise UserError(f"--scales/--vocab-sizes: {error}") from None


def paper_regime(scale: Scale) -> list[dict]:
    """The analytic estimate in the paper's regime (bf16 autocast, 16 x 1024 tokens per GPU) at
    ``scale``'s vocabulary, per counted model and checkpointing mode, on 1 and 8 GPUs (FSDP)."""
    return [
        {"model": model, "vocab_size": scale.vocab_size, "checkpointing": mode, "gpus": gpus}
        | analytic_peak(model, scale, 16, "bf16", mode, gpus)
        for gpus in (1, 8)
        for mode in CHECKPOINTING
        for model in COUNTED
    ]


def _label(scale_name: str, vocab_size: int) -> str:
    return f"{scale_name} N={vocab_size:,}"


def run_memory(options: MemoryOptions, log=print) -> dict:
    """Sweep scales x batches x models; write memory.json/.md/.png; return the figures."""
    scales = memory_scales(options)
    modes = set(options.checkpointing)
    if not modes or modes - set(CHECKPOINTING):
        raise UserError(
            f"--checkpointing takes off, selective and/or all, got {options.checkpointing}"
        )
    device = torch.device(options.device)
    models, left_out = bench_models(options.models, device, log)
    precision = "bf16" if device.type == "cuda" else "fp32"
    rows = []
    for scale in scales:
        for mode in options.checkpointing:
            for batch in _batches(options):
                out = _measure(models, scale, batch, mode, options)
                for model, result in zip(models, out, strict=True):
                    result["vocab_size"] = scale.vocab_size
                    result["analytic"] = (
                        analytic_peak(model, scale, batch, precision, mode)
                        if model in COUNTED
                        else None
                    )
                    log(
                        f"{_label(scale.name, scale.vocab_size)} {model} batch {batch} "
                        f"checkpointing {mode}: "
                        + (
                            "out of memory"
                            if result.get("out_of_memory")
                            else f"skipped ({result['skipped']})"
                            if result.get("skipped")
                            else f"{mib(result['peak_bytes'])} MiB measured, "
                            f"{_analytic_mib(result)} MiB analytic"
                        )
                    )
                rows += out
                if any(r.get("out_of_memory") or r.get("skipped") for r in out):
                    break
    paper = SCALES["paper"]
    regime_scales = [s for s in scales if s.preset == paper.preset] or [paper]
    regime = [row for scale in regime_scales for row in paper_regime(scale)]
    curve = {
        precision_: {
            str(b): {m: analytic_peak(m, paper, b, precision_)["total"] for m in COUNTED}
            for b in (1, 2, 4, 8, 16, 32, 64)
        }
        for precision_ in ("fp32", "bf16")
    }
    figures = {
        "bench": "memory",
        "environment": environment(device),
        "options": {k: str(v) for k, v in vars(options).items()},
        "precision": precision,
        "left_out": left_out,
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


def _analytic_mib(row: dict) -> str:
    return mib(row["analytic"]["total"]) if row.get("analytic") else "—"


def _cell(row: dict) -> str:
    if row.get("peak_bytes"):
        return f"{mib(row['peak_bytes'])} ({_analytic_mib(row)})"
    return "skipped" if row.get("skipped") else "OOM"


def tdlm_against_mdlm(values: dict[str, float | None]) -> list[str]:
    """``TDLM / MDLM`` and ``TDLM / best MDLM (which / which)`` of one row's peaks, TDLM being
    its lowest-memory TDLM variant and the best MDLM its lowest-memory MDLM variant, both at
    MDLM's parameter budget (:func:`.contenders.best_of`)."""
    tdlm, best = best_of(values, "tdlm"), best_of(values, "mdlm")
    if tdlm is None or best is None:
        return ["—", "—"]
    return [
        _ratio(values[tdlm], values.get("mdlm")),
        f"{_ratio(values[tdlm], values[best])} ({tdlm} / {best})",
    ]


def memory_markdown(figures: dict) -> str:
    """The measured table (with the analytic column and ratios) and the paper-regime estimate."""
    rows = figures["measurements"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    table = []
    keyed = {
        (r["scale"], r["vocab_size"], r["checkpointing"], r["batch"], r["model"]): r for r in rows
    }
    for scale, vocab, checkpointing, batch in dict.fromkeys(
        (r["scale"], r["vocab_size"], r["checkpointing"], r["batch"]) for r in rows
    ):
        cells = {m: keyed[(scale, vocab, checkpointing, batch, m)] for m in models}
        table.append(
            [scale, f"{vocab:,}", _MODE_LABEL[checkpointing], batch]
            + [_cell(c) for c in cells.values()]
            + tdlm_against_mdlm({m: c.get("peak_bytes") for m, c in cells.items()})
        )
    header = [
        "scale",
        "N",
        "activation checkpointing",
        "batch",
        *(f"{m} MiB (analytic)" for m in models),
        "TDLM / MDLM",
        "TDLM / best MDLM",
    ]
    regime = figures["paper_regime_analytic"]
    settings = {}
    for r in regime:
        settings.setdefault((r["vocab_size"], r["checkpointing"], r["gpus"]), {})[r["model"]] = r
    regime_rows = []
    for counted in settings.values():
        totals = {m: r["total"] for m, r in counted.items()}
        best = best_of(totals, "mdlm")
        regime_rows += [
            [
                f"{r['vocab_size']:,}",
                r["model"],
                r["checkpointing"],
                "1" if r["gpus"] == 1 else f"{r['gpus']} (FSDP)",
                f"{r['parameters']:,}",
                r["n_blocks"],
                mib(r["states"]),
                mib(r["activations"]),
                mib(r["head"]),
                mib(r["total"]),
                _ratio(r["total"], totals["mdlm"]),
                f"{_ratio(r['total'], totals[best])} ({best})",
            ]
            for r in counted.values()
        ]
    skipped = [r for r in rows if r.get("skipped")]
    left_out = figures["left_out"]
    env = figures["environment"]
    measured = next((r for r in rows if r.get("method")), {})
    return "\n\n".join(
        [
            f"Peak memory of one training step ({figures['precision']}, "
            f"{measured.get('method', '')}; analytic estimate in brackets), "
            f"{env['device']} {env['device_name']}, torch {env['torch']}, "
            f"{env['date']}, commit {env['git_commit']}. TDLM is the lowest-memory TDLM "
            "contender of a row, the best MDLM the lowest-memory MDLM one.",
            markdown_table(header, table),
            *(
                ["Not run here: " + "; ".join(f"{m}: {why}" for m, why in left_out.items()) + "."]
                if left_out
                else []
            ),
            *(
                [
                    "Skipped (would not fit in the host's memory): "
                    + "; ".join(
                        f"{_label(r['scale'], r['vocab_size'])} {r['model']} batch {r['batch']}: "
                        f"{r['skipped']}"
                        for r in skipped
                    )
                    + "."
                ]
                if skipped
                else []
            ),
            "Analytic estimate in the paper's regime (bf16 autocast, 16 x 1024 tokens per GPU, "
            "paper scale), per GPU; / MDLM is to MDLM as published in the same setting, "
            "/ best MDLM to the lowest-memory MDLM variant counted there:",
            markdown_table(
                [
                    "N",
                    "model",
                    "activation checkpointing",
                    "GPUs",
                    "parameters",
                    "blocks",
                    "states MiB",
                    "activations MiB",
                    "head MiB",
                    "total MiB",
                    "/ MDLM",
                    "/ best MDLM",
                ],
                regime_rows,
            ),
        ]
    )


def _plot(rows: list[dict], curve: dict, path: Path) -> None:
    plt = pyplot()
    scales = list(dict.fromkeys((r["scale"], r["vocab_size"]) for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(scales) + 1, figsize=(5 * (len(scales) + 1), 4))
    for ax, scale in zip(axes, scales, strict=False):
        here = [r for r in rows if (r["scale"], r["vocab_size"]) == scale]
        modes = [m for m in _MODE_LABEL if any(r["checkpointing"] == m for r in here)]
        for model in models:
            color = None
            for mode, marker in zip(modes, "os^", strict=False):
                mine = [r for r in here if r["model"] == model and r["checkpointing"] == mode]
                got = [r for r in mine if r.get("peak_bytes")]
                line = ax.plot(
                    [r["batch"] for r in got],
                    [r["peak_bytes"] / 2**30 for r in got],
                    marker=marker,
                    ls="-" if mode == "off" else ":",
                    color=color,
                    label=f"{model} measured"
                    + ("" if mode == "off" else f", checkpointing {_MODE_LABEL[mode]}"),
                )[0]
                color = line.get_color()
                counted = [r for r in mine if r.get("analytic")]
                ax.plot(
                    [r["batch"] for r in counted],
                    [r["analytic"]["total"] / 2**30 for r in counted],
                    "--",
                    lw=0.8,
                    color=color,
                    label=f"{model} analytic" if mode == modes[0] and counted else None,
                )
        ax.set(xlabel="batch (sequences)", ylabel="peak GiB", title=f"{_label(*scale)}, measured")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for precision, style in (("fp32", "-"), ("bf16", "--")):
        batches = [int(b) for b in curve[precision]]
        totals = [curve[precision][str(b)] for b in batches]
        for label, pick in (
            ("MDLM", lambda t: "mdlm"),
            ("best MDLM", lambda t: best_of(t, "mdlm")),
        ):
            ax.plot(
                batches,
                [t[best_of(t, "tdlm")] / t[pick(t)] for t in totals],
                style,
                marker="o",
                label=f"TDLM / {label}, {precision}",
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
