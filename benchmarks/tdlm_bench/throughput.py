"""``apps/bench throughput``: training and sampling tokens/s of the three contenders (issue 6).

Rounds interleave the models (one timed block per model per round, in turn), so every model sees
the same machine load; medians and spreads (min-max) over rounds are reported, as ratios to
MDLM. Each round also times an ``n x n`` matmul (fp32 on the CPU, bf16 on CUDA: the precision
the training step's matmuls run in), the machine's reference rate for the model FLOPs
utilisation (MFU) of the training step, counted as in ``benchmarks/nn_flops.py``::

    FLOPs = 6 * P_token * B * L  +  12 * n_blocks * B * L^2 * D

with ``P_token`` the weights each token passes through in a matmul (attention ``4 D^2`` and MLP
``2 D * hidden`` per block, plus the head ``D * k``: ``k = N`` for MDLM, the widest tree level
for TDLM). The chunked loss's recomputed head is not model FLOPs and is not counted.

Sampling: ``ancestral_sample`` with the same number of steps for every model (TDLM spreads them
over its levels), ``batch x length`` tokens per run.

``--compile true`` runs every model's backbone through ``torch.compile`` (the warm-up steps and
sampling runs, untimed, pay for compiling both the training and the sampling graphs).
"""

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tdlm_diffusion import SamplerConfig, ancestral_sample
from tdlm_nn import DiTConfig
from tdlm_train.errors import UserError

from .contenders import MODELS, SCALES, Contender, build_contender, synthetic_tokens
from .report import environment, markdown_table, write_report
from .timing import timed

__all__ = ["ThroughputOptions", "run_throughput", "step_flops"]


@dataclass(frozen=True, kw_only=True)
class ThroughputOptions:
    scale: str = "tiny"
    batch: int = 16
    rounds: int = 5
    train_steps: int = 3  # timed training steps per model per round
    sample_steps: int = 64  # sampler steps per sampling run (every model)
    sample_batch: int = 4
    matmul_size: int = 2048
    device: str = "cpu"
    compile: bool = False  # torch.compile every backbone (compiling happens in the warm-up)
    out_dir: Path = Path("runs/bench/throughput")


def step_flops(config: DiTConfig, batch: int, length: int) -> int:
    """Model FLOPs of one training step (forward + backward), as in the module doc."""
    d, hidden = config.width, config.hidden_size
    per_token = config.n_blocks * (4 * d * d + 2 * d * hidden) + d * config.shape.num_slots
    return 6 * per_token * batch * length + 12 * config.n_blocks * batch * length**2 * d


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_throughput(options: ThroughputOptions, log=print) -> dict:
    """Interleaved rounds; writes throughput.json/.md; returns the figures."""
    if options.scale not in SCALES:
        raise UserError(f"--scale must be one of {sorted(SCALES)}, got {options.scale!r}")
    if min(options.rounds, options.train_steps, options.batch, options.sample_steps) < 1:
        raise UserError("--rounds, --train-steps, --batch and --sample-steps must be >= 1")
    device = torch.device(options.device)
    scale = SCALES[options.scale]
    contenders = {m: build_contender(m, scale, device) for m in MODELS}
    x = synthetic_tokens(scale, options.batch, device)
    sampler = SamplerConfig(steps=options.sample_steps)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(options.matmul_size, options.matmul_size, device=device, dtype=dtype)

    def sample_run(contender: Contender) -> None:
        contender.model.eval()
        with torch.no_grad():
            ancestral_sample(
                contender.process,
                contender.model,
                batch_size=options.sample_batch,
                length=scale.seq_len,
                config=sampler,
            )
        contender.model.train()

    timed(lambda: a @ a, device=device)  # warm-up: a cold GPU's first matmul runs at a third speed
    for m, contender in contenders.items():  # warm-up: allocator, AdamW states, kernels
        if options.compile:
            contender.model.backbone.compile()
        warm_up = time.perf_counter()
        contender.train_step(x)
        sample_run(contender)
        seconds = time.perf_counter() - warm_up
        log(f"{m}: warm-up (one training step, one sampling run) {seconds:.1f} s")
    train = {m: [] for m in MODELS}
    sample = {m: [] for m in MODELS}
    matmul = []
    for r in range(options.rounds):
        matmul.append(2 * options.matmul_size**3 / timed(lambda: a @ a, device=device)[0])
        for m, contender in contenders.items():
            seconds, _ = timed(
                lambda c=contender: [c.train_step(x) for _ in range(options.train_steps)],
                device=device,
            )
            train[m].append(options.train_steps * x.numel() / seconds)
            seconds, _ = timed(lambda c=contender: sample_run(c), device=device)
            sample[m].append(options.sample_batch * scale.seq_len / seconds)
        log(
            f"round {r + 1}/{options.rounds}: train tok/s "
            + ", ".join(f"{m} {train[m][-1]:,.0f}" for m in MODELS)
        )
    results = {}
    for m, contender in contenders.items():
        flops = step_flops(contender.model.config, options.batch, scale.seq_len)
        tokens = options.batch * scale.seq_len
        mfu = [t / tokens * flops / rate for t, rate in zip(train[m], matmul, strict=True)]
        results[m] = {
            "parameters": contender.parameters,
            "n_blocks": contender.model.config.n_blocks,
            "step_flops": flops,
            "train_tokens_per_s": _stats(train[m]),
            "sample_tokens_per_s": _stats(sample[m]),
            "mfu": _stats(mfu),
            "train_ratio_to_mdlm": statistics.median(
                [t / b for t, b in zip(train[m], train["mdlm"], strict=True)]
            ),
            "sample_ratio_to_mdlm": statistics.median(
                [t / b for t, b in zip(sample[m], sample["mdlm"], strict=True)]
            ),
        }
    figures = {
        "bench": "throughput",
        "environment": environment(device),
        "options": {k: str(v) for k, v in vars(options).items()},
        "matmul_flops_per_s": _stats(matmul),
        "models": results,
    }
    write_report(options.out_dir, "throughput", figures, throughput_markdown(figures))
    return figures


def throughput_markdown(figures: dict) -> str:
    o, env, res = figures["options"], figures["environment"], figures["models"]

    def cell(s: dict) -> str:
        return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"

    rows = [
        [
            m,
            f"{r['parameters']:,}",
            r["n_blocks"],
            cell(r["train_tokens_per_s"]),
            f"{r['train_ratio_to_mdlm']:.2f}",
            cell(r["sample_tokens_per_s"]),
            f"{r['sample_ratio_to_mdlm']:.2f}",
            f"{100 * r['mfu']['median']:.0f}% ({100 * r['mfu']['min']:.0f}-"
            f"{100 * r['mfu']['max']:.0f}%)",
        ]
        for m, r in res.items()
    ]
    rate = figures["matmul_flops_per_s"]
    return "\n\n".join(
        [
            f"{o['scale']} scale{', torch.compile' if o.get('compile') == 'True' else ''}, "
            f"training batch {o['batch']}, {o['rounds']} interleaved rounds "
            f"of {o['train_steps']} steps; sampling {o['sample_batch']} sequences x "
            f"{o['sample_steps']} steps; {env['device']} {env['device_name']}, "
            f"{env['threads']} torch thread(s), torch {env['torch']}, {env['date']}, "
            f"commit {env['git_commit']}. Median (min-max) over rounds; matmul "
            f"{rate['median'] / 1e9:,.1f} GFLOP/s (median, {o['matmul_size']}^2, bf16 on CUDA, "
            f"else fp32).",
            markdown_table(
                [
                    "model",
                    "parameters",
                    "blocks",
                    "train tokens/s",
                    "/ MDLM",
                    "sample tokens/s",
                    "/ MDLM",
                    "MFU",
                ],
                rows,
            ),
        ]
    )
