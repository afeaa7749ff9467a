"""``apps/bench throughput``: training and sampling tokens/s of the contenders (issue 6).

Rounds interleave the models (one timed block per model per round, in turn), so every model sees
the same machine load; medians and spreads (min-max) over rounds are reported, as ratios to
MDLM as published and to the best MDLM (the fastest MDLM variant measured, by median).
``--models`` picks the contenders (default :data:`.contenders.DEFAULT_MODELS`, less those that
cannot run on the device, which the report names with the reason). Each round also times an
``n x n`` matmul (fp32 on the CPU, bf16 on CUDA: the precision the training step's matmuls run
in), the machine's reference rate for the model FLOPs utilisation (MFU) of the training step,
counted as in ``benchmarks/nn_flops.py``::

    FLOPs = 6 * P_token * B * L  +  12 * n_blocks * B * L^2 * D

with ``P_token`` the weights each token passes through in a matmul (attention ``4 D^2`` and MLP
``2 D * hidden`` per block, plus the head ``D * k``: ``k = N`` for MDLM, the widest tree level
for TDLM). A masked-only head loss runs the head on the positions it scores, half of them in
expectation (:data:`.contenders.MASKED_SHARE`), and its head FLOPs count for those only; the head
that the chunked and ``torch`` losses recompute in the backward pass is not model FLOPs and is
not counted.

Sampling: ``ancestral_sample`` with the same number of steps for every model (TDLM spreads them
over its levels), ``batch x length`` tokens per run; AR (``ar``) instead calls its network once
per token, ``length - 1`` times on the growing prefix (the library keeps no key-value cache,
so its figure is an AR without one). The sampler never reads the head loss, so
each network (kind and spend) is sampled once, with its first contender, and its figure stands
for every contender with that network.

``--compile true`` runs every model's backbone through ``torch.compile`` (the warm-up steps and
sampling runs, untimed, pay for compiling both the training and the sampling graphs).
``--sample-steps 0`` times training only.

``--checkpointing off,selective,all`` times each model's training step in each of these
activation-checkpointing modes (the same model switched between them, interleaved within every
round, after an untimed step in each): the first mode is the report's main result; each
further one is reported with its tokens/s, its ratio to MDLM in that mode and its cost, the
per-round ratio to the same model's tokens/s in the first mode.

``--vocab-sizes`` runs the scale at each of those N in turn (issue 15). On the CPU, where the
models (weights, gradients and AdamW states: 16 bytes per parameter each) and one step's
working set would not fit in the memory available together (by :func:`.memory.analytic_peak`:
at N = 256,000 each holds 7 GiB of states), the models run one after the other instead,
each its own rounds, with the reference matmul timed in each round; the report says which.
"""

import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tdlm_diffusion import SamplerConfig, ancestral_sample
from tdlm_nn import DiTConfig
from tdlm_train.autoregressive import autoregressive_sample
from tdlm_train.errors import UserError

from .contenders import (
    CHECKPOINTING,
    MASKED_SHARE,
    Contender,
    Scale,
    bench_models,
    bench_scales,
    best_of,
    build_contender,
    parse_contender,
    synthetic_tokens,
)
from .memory import HOST_BASELINE, analytic_peak, available_bytes
from .report import environment, markdown_table, write_report
from .timing import timed

__all__ = ["ThroughputOptions", "run_throughput", "step_flops", "throughput_scales"]


@dataclass(frozen=True, kw_only=True)
class ThroughputOptions:
    scale: str = ""  # empty: tiny; with vocab_sizes, paper
    vocab_sizes: tuple[int, ...] = ()  # run the scale at each of these N instead of its own
    models: tuple[str, ...] = ()  # empty: DEFAULT_MODELS, less what cannot run on the device
    batch: int = 16
    rounds: int = 5
    train_steps: int = 3  # timed training steps per model per round
    sample_steps: int = 64  # sampler steps per sampling run (every model); 0: no sampling
    sample_batch: int = 4
    matmul_size: int = 2048
    device: str = "cpu"
    compile: bool = False  # torch.compile every backbone (compiling happens in the warm-up)
    checkpointing: tuple[str, ...] = ("off",)  # off | selective | all; the first is the main one
    out_dir: Path = Path("runs/bench/throughput")


def step_flops(config: DiTConfig, batch: int, length: int, head_loss: str = "full") -> int:
    """Model FLOPs of one training step (forward + backward), as in the module doc: the head
    on every position for ``full`` and for AR (``config.causal``), on the expected masked share
    for the others."""
    d, hidden = config.width, config.hidden_size
    tokens = batch * length
    scored = tokens if head_loss == "full" or config.causal else MASKED_SHARE * tokens
    blocks = config.n_blocks * (4 * d * d + 2 * d * hidden) * tokens
    head = d * config.shape.num_slots * scored
    return round(6 * (blocks + head) + 12 * config.n_blocks * batch * length**2 * d)


def _network(model: str) -> tuple[str, str]:
    """What sampling speed depends on: the kind and the spend, not the head loss."""
    name = parse_contender(model)
    return name.kind, name.spend


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def throughput_scales(options: ThroughputOptions) -> list[Scale]:
    """The scales ``options`` runs (``--scale`` at each of ``--vocab-sizes``)."""
    name = options.scale or ("paper" if options.vocab_sizes else "tiny")
    try:
        return bench_scales((name,), options.vocab_sizes)
    except ValueError as error:
        raise UserError(f"--scale/--vocab-sizes: {error}") from None


def _together(
    models: tuple[str, ...], scale: Scale, options: ThroughputOptions, device: torch.device
) -> bool:
    """Whether the models fit in memory at once (always assumed on CUDA, as before)."""
    if device.type == "cuda":
        return True
    peaks = [analytic_peak(m, scale, options.batch, "fp32") for m in models]
    states = sum(p["states"] for p in peaks)
    working = max(p["total"] - p["states"] for p in peaks)
    return states + working + HOST_BASELINE <= available_bytes()


def run_throughput(options: ThroughputOptions, log=print) -> dict:
    """Interleaved rounds per scale; writes throughput.json/.md; returns the figures."""
    scales = throughput_scales(options)
    if min(options.rounds, options.train_steps, options.batch) < 1 or options.sample_steps < 0:
        raise UserError("--rounds, --train-steps and --batch must be >= 1 and --sample-steps >= 0")
    modes = options.checkpointing
    if not modes or set(modes) - set(CHECKPOINTING) or len(set(modes)) < len(modes):
        raise UserError(f"--checkpointing takes off, selective and/or all, got {modes}")
    device = torch.device(options.device)
    models, left_out = bench_models(options.models, device, log)
    runs = [_run_scale(models, scale, options, device, log) for scale in scales]
    figures = {
        "bench": "throughput",
        "environment": environment(device),
        "options": {k: str(v) for k, v in vars(options).items()},
        "left_out": left_out,
        "runs": runs,
    }
    write_report(options.out_dir, "throughput", figures, throughput_markdown(figures))
    return figures


def _run_scale(
    models: tuple[str, ...], scale: Scale, options: ThroughputOptions, device: torch.device, log
) -> dict:
    """Every model's rounds at one scale: interleaved, or one model after the other."""
    x = synthetic_tokens(scale, options.batch, device)
    sampler = SamplerConfig(steps=max(options.sample_steps, 1))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(options.matmul_size, options.matmul_size, device=device, dtype=dtype)

    def sample_run(contender: Contender) -> None:
        contender.model.eval()
        with torch.no_grad():
            if contender.kind == "ar":  # left to right from one token, a call per token
                prefix = torch.zeros(options.sample_batch, 1, dtype=torch.long, device=device)
                autoregressive_sample(
                    contender.process, contender.model, prefix, scale.seq_len, config=sampler
                )
            else:
                ancestral_sample(
                    contender.process,
                    contender.model,
                    batch_size=options.sample_batch,
                    length=scale.seq_len,
                    config=sampler,
                )
        contender.model.train()

    together = _together(models, scale, options, device)
    label = f"{scale.name} N={scale.vocab_size:,}"
    log(f"{label}: " + ("models interleaved" if together else "one model at a time"))
    timed(lambda: a @ a, device=device)  # warm-up: a cold GPU's first matmul runs at a third speed
    modes = options.checkpointing
    # The contender that samples for each network (kind and spend): its first (module doc).
    sampler_of = {_network(m): m for m in reversed(models)}
    samplers = set(sampler_of.values()) if options.sample_steps else set()
    train = {(m, mode): [] for m in models for mode in modes}
    sample = {m: [] for m in models}
    matmul = {m: [] for m in models}  # the reference rate of each model's rounds
    shape = {}
    for group in [models] if together else [(m,) for m in models]:
        contenders = {m: build_contender(m, scale, device) for m in group}
        for m, contender in contenders.items():  # warm-up: allocator, AdamW states, kernels
            if options.compile:
                contender.model.backbone.compile()
            warm_up = time.perf_counter()
            for mode in reversed(modes):  # every mode's first step untimed; the main one last
                contender.model.checkpoint_blocks(*CHECKPOINTING[mode])
                contender.train_step(x)
            if m in samplers:
                sample_run(contender)
            seconds = time.perf_counter() - warm_up
            log(f"{label} {m}: warm-up {seconds:.1f} s")
            config = contender.model.config
            flops = step_flops(config, *x.shape, contender.head_loss)
            shape[m] = (contender.parameters, config.n_blocks, flops)
        for r in range(options.rounds):
            rate = 2 * options.matmul_size**3 / timed(lambda: a @ a, device=device)[0]
            for m, contender in contenders.items():
                matmul[m].append(rate)
                for mode in modes:
                    contender.model.checkpoint_blocks(*CHECKPOINTING[mode])
                    seconds, _ = timed(
                        lambda c=contender: [c.train_step(x) for _ in range(options.train_steps)],
                        device=device,
                    )
                    train[m, mode].append(options.train_steps * x.numel() / seconds)
                if m in samplers:
                    seconds, _ = timed(lambda c=contender: sample_run(c), device=device)
                    sample[m].append(options.sample_batch * scale.seq_len / seconds)
            log(
                f"{label} round {r + 1}/{options.rounds}: train tok/s "
                + ", ".join(f"{m} {train[m, modes[0]][-1]:,.0f}" for m in group)
            )
        del contenders
        gc.collect()  # the next group's models need this one's memory

    def ratio(values: list[float], to: list[float]) -> float | None:
        if not values or not to:
            return None
        return statistics.median([t / b for t, b in zip(values, to, strict=True)])

    def speed(m: str, mode: str) -> dict:
        parameters, n_blocks, flops = shape[m]
        rounds = train[m, mode]
        mfu = [t / x.numel() * flops / rate for t, rate in zip(rounds, matmul[m], strict=True)]
        medians = {other: statistics.median(train[other, mode]) for other in models}
        best = best_of(medians, "mdlm", highest=True)
        return {
            "parameters": parameters,
            "n_blocks": n_blocks,
            "step_flops": flops,
            "train_tokens_per_s": _stats(rounds),
            "train_tokens_per_s_rounds": rounds,
            "mfu": _stats(mfu),
            "train_ratio_to_mdlm": ratio(rounds, train.get(("mdlm", mode))),
            "best_mdlm": best,
            "train_ratio_to_best_mdlm": ratio(rounds, train.get((best, mode))),
        }

    def sampled(m: str) -> list[float]:
        return sample[sampler_of[_network(m)]]

    results = {
        m: speed(m, modes[0])
        | {
            "sample_tokens_per_s": _stats(sampled(m)) if sampled(m) else None,
            "sample_ratio_to_mdlm": ratio(sampled(m), sample.get(sampler_of.get(_network("mdlm")))),
        }
        for m in models
    }
    recomputed = {
        mode: {
            m: speed(m, mode) | {"ratio_to_main_mode": ratio(train[m, mode], train[m, modes[0]])}
            for m in models
        }
        for mode in modes[1:]
    }
    return {
        "scale": scale.name,
        "vocab_size": scale.vocab_size,
        "seq_len": scale.seq_len,
        "interleaved": together,
        "matmul_flops_per_s": _stats([r for m in models for r in matmul[m]]),
        "checkpointing": modes[0],
        "models": results,
        "other_checkpointing": recomputed,
    }


def throughput_markdown(figures: dict) -> str:
    o, env = figures["options"], figures["environment"]

    def cell(s: dict | None) -> str:
        return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})" if s else "—"

    def ratio(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    def to_best(r: dict) -> str:
        best = r["best_mdlm"]
        return "—" if best is None else f"{ratio(r['train_ratio_to_best_mdlm'])} ({best})"

    rows = [
        [
            run["scale"],
            f"{run['vocab_size']:,}",
            "interleaved" if run["interleaved"] else "one at a time",
            m,
            f"{r['parameters']:,}",
            r["n_blocks"],
            cell(r["train_tokens_per_s"]),
            ratio(r["train_ratio_to_mdlm"]),
            to_best(r),
            cell(r["sample_tokens_per_s"]),
            ratio(r["sample_ratio_to_mdlm"]),
            f"{100 * r['mfu']['median']:.0f}% ({100 * r['mfu']['min']:.0f}-"
            f"{100 * r['mfu']['max']:.0f}%)",
        ]
        for run in figures["runs"]
        for m, r in run["models"].items()
    ]
    others = [
        [
            run["scale"],
            f"{run['vocab_size']:,}",
            mode,
            m,
            cell(r["train_tokens_per_s"]),
            ratio(r["train_ratio_to_mdlm"]),
            to_best(r),
            ratio(r["ratio_to_main_mode"]),
        ]
        for run in figures["runs"]
        for mode, models in run.get("other_checkpointing", {}).items()
        for m, r in models.items()
    ]
    main_mode = figures["runs"][0].get("checkpointing", "off")
    rates = ", ".join(
        f"{run['matmul_flops_per_s']['median'] / 1e9:,.1f}" for run in figures["runs"]
    )
    sampling = (
        f"sampling {o['sample_batch']} sequences x {o['sample_steps']} steps"
        if o["sample_steps"] != "0"
        else "no sampling"
    )
    left_out = figures["left_out"]
    return "\n\n".join(
        [
            f"Training batch {o['batch']}, {o['rounds']} rounds of {o['train_steps']} steps per "
            f"model{', torch.compile' if o.get('compile') == 'True' else ''}; {sampling}; "
            f"activation checkpointing {main_mode}; {env['device']} {env['device_name']}, "
            f"{env['threads']} torch thread(s), torch {env['torch']}, {env['date']}, "
            f"commit {env['git_commit']}. Median (min-max) over rounds; ratios are medians of "
            f"per-round ratios; / best MDLM is to the fastest MDLM variant (named); matmul "
            f"{rates} GFLOP/s (median per scale, {o['matmul_size']}^2, bf16 on CUDA, else "
            "fp32). The sampler reads no head loss: each network (kind and spend) is sampled "
            "once; AR left to right, a network call per token (no key-value cache).",
            *(
                ["Not run here: " + "; ".join(f"{m}: {why}" for m, why in left_out.items()) + "."]
                if left_out
                else []
            ),
            markdown_table(
                [
                    "scale",
                    "N",
                    "rounds",
                    "model",
                    "parameters",
                    "blocks",
                    "train tokens/s",
                    "/ MDLM",
                    "/ best MDLM",
                    "sample tokens/s",
                    "/ MDLM",
                    "MFU",
                ],
                rows,
            ),
            *(
                [
                    "The same training steps, interleaved with those above, in other activation "
                    f"checkpointing modes (above: {main_mode}); / MDLM is to MDLM in the same "
                    f"mode, / {main_mode} to the same model's tokens/s above (its cost):",
                    markdown_table(
                        [
                            "scale",
                            "N",
                            "checkpointing",
                            "model",
                            "train tokens/s",
                            "/ MDLM",
                            "/ best MDLM",
                            f"/ {main_mode}",
                        ],
                        others,
                    ),
                ]
                if others
                else []
            ),
        ]
    )
