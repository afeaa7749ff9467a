"""The GPU evidence (issue 14): everything a GPU must prove about this code, in one run.

    benchmarks/gpu/run.sh OUT_DIR            # on a GPU machine: its own python3 and torch
    uv run benchmarks/gpu/evidence.py --dry-run --out runs/gpu-dry   # CPU, tiny sizes (CI)

Needs torch, numpy, einops, jaxtyping, safetensors, tokenizers and tqdm (matplotlib for the
plot); no uv, no network. Phases, in this order, each written to ``OUT/evidence.json`` and
``evidence.md`` as soon as it ends (a run stopped by a time limit keeps what it finished):

1. **correctness** — SDPA (each CUDA kernel: flash, memory-efficient, cuDNN) against the fp32
   math reference in bf16, outputs and gradients; xformers if its kernels load (else why not);
   one bf16 training step per model (finite loss and gradients, the loss within 2% of the same
   step in fp32); a sampler run per model (every position a token); ``torch.compile`` against
   eager; an NCCL all-reduce; ``apps/train`` for 40 steps with validation, samples and a
   checkpoint, then resumed to 60.
2. **fused** — MDLM at its strongest: each masked-only head loss (``mdlm-masked``,
   ``mdlm-chunked``, ``mdlm-torch``, ``mdlm-liger``, ``mdlm-cce``: tdlm-diffusion's
   ``head_loss``) against ``full`` on the paper-scale MDLM under bf16 autocast, the same draw:
   the loss within a relative 1e-3 and the gradient (all parameters as one vector) within a
   relative 2e-2 (the house bf16 tolerance: the logits are bf16, or fp32 from bf16 inputs in
   the fused kernels, and the backbone's bf16 matmuls carry the difference back); then their
   peak memory (``apps/bench memory``, batch 16, no recomputation) and training step time
   (``apps/bench throughput``, interleaved) side by side with ``tdlm``, ``tdlm-masked`` and
   the equal-parameter TDLM spent shallow (``tdlm@shallow``: MDLM's block activations).
   A head loss that cannot run (``torch`` before torch 2.13; Liger-Kernel or Cut
   Cross-Entropy not installed: ``run.sh`` installs them from carried wheels) is reported with
   the library's reason and left out; the rest runs.
3. **fsdp** — ``apps/train --parallel fsdp`` under torchrun (one process: NCCL, FSDP2 with bf16
   block weights) against the same run unsharded: the same loss curve to bf16 rounding.
4. **memory** — ``apps/bench memory`` at the paper's scale (width 768, L = 1024, N = 50,258, one
   parameter budget) for its default contenders (MDLM, ``mdlm-chunked``, ``mdlm-torch``,
   TDLM), bf16, batch 1, 4 and 16, without activation checkpointing, with every block
   recomputed selectively (elementwise ops only) and in full.
5. **throughput** — ``apps/bench throughput`` (training and sampling tokens/s, interleaved
   rounds, ratios to MDLM and the best MDLM), eager (training also with selective and full
   recomputation, interleaved: their time cost), then with ``torch.compile``.
6. **sampling** — ``apps/bench sampling`` on the device: sampling tokens/s and peak memory of
   MDLM, TDLM, TDLM spent shallow (``tdlm@shallow``) and TDLM at MDLM's depth (``tdlm@none``)
   at N = 50,258 and 256,000, batches 1, 4, 16 and 64 (a cell that runs out of memory says so),
   L = 1024, 8 steps, float64 draws, one fresh process per model and cell, each run split into
   network, head and sampler.

Phases that would overrun ``--budget`` seconds are skipped (and say so). The dry run takes the
same code paths on the CPU at tiny sizes, so the script cannot rot between GPU loans.
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

# The benches (benchmarks/tdlm_bench) are imported from their folder, which no wheel installs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tdlm_bench import (  # noqa: E402
    SCALES,
    MemoryOptions,
    Scale,
    ThroughputOptions,
    bench_models,
    build_contender,
    parse_contender,
    run_memory,
    run_throughput,
)
from tdlm_bench.contenders import synthetic_tokens  # noqa: E402
from tdlm_bench.memory import memory_markdown  # noqa: E402
from tdlm_bench.report import environment, markdown_table  # noqa: E402
from tdlm_bench.sampling import SamplingOptions, run_sampling, sampling_markdown  # noqa: E402
from tdlm_bench.throughput import throughput_markdown  # noqa: E402

from tdlm_diffusion import SamplerConfig, ancestral_sample, head_loss_unavailable  # noqa: E402
from tdlm_nn import attend, resolve_attention  # noqa: E402
from tdlm_train.atomic import atomic_write, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# The dry run's scale: every code path, seconds on two CPU cores.
DRY = Scale(name="dry", preset="tiny", vocab_size=512, seq_len=64, branching=8)
NEEDED = ("numpy", "einops", "jaxtyping", "safetensors", "tokenizers", "tqdm", "matplotlib")
# MDLM's masked-only head losses, each checked against its full-logits loss (phase 2).
FUSED = ("mdlm-masked", "mdlm-chunked", "mdlm-torch", "mdlm-liger", "mdlm-cce")


@dataclasses.dataclass
class Evidence:
    """The results so far, rewritten to ``out`` after every check and phase."""

    out: Path
    dry_run: bool
    started: float = dataclasses.field(default_factory=time.perf_counter)
    figures: dict = dataclasses.field(default_factory=dict)
    checks: list = dataclasses.field(default_factory=list)
    markdown: list = dataclasses.field(default_factory=list)

    def check(self, name: str, status: str, detail: str) -> None:
        assert status in ("pass", "fail", "skip")
        self.checks.append({"check": name, "status": status, "detail": detail})
        print(f"[{time.perf_counter() - self.started:6.1f} s] {status.upper():4} {name}: {detail}")
        self.save()

    def save(self) -> None:
        write_json(
            self.out / "evidence.json",
            {"dry_run": self.dry_run, "checks": self.checks, **self.figures},
        )
        rows = "\n".join(
            f"| {c['check']} | {c['status']} | {c['detail'].replace('|', '/')} |"
            for c in self.checks
        )
        text = "\n\n".join(
            [
                "# GPU evidence" + (" (dry run: CPU, tiny sizes)" if self.dry_run else ""),
                self.figures.get("environment_line", ""),
                "## Correctness\n\n| check | status | detail |\n|---|---|---|\n" + rows,
                *self.markdown,
            ]
        )
        atomic_write(self.out / "evidence.md", lambda tmp: tmp.write_text(text + "\n"))


def guarded(evidence: Evidence, name: str, run) -> None:
    """Run one check; an exception is its failure (with the error), never the script's end."""
    try:
        status, detail = run()
    except Exception as error:  # a failed check is a result to report, not a crash
        status = "fail"
        detail = f"{type(error).__name__}: {str(error).strip()[:300]}"
        traceback.print_exc()
    evidence.check(name, status, detail)


# ---- 1. correctness ----------------------------------------------------------------------------


def trained_looking(model: str, scale: Scale, device: torch.device):
    """A contender whose zero-initialised maps (adaLN-Zero, head) are perturbed: at initialisation
    every logit is 0 and any two precisions or compilers would agree trivially."""
    contender = build_contender(model, scale, device, dropout=0.0, seed=0)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for parameter in contender.model.parameters():
            noise = torch.randn(parameter.shape, device=device, generator=generator)
            parameter.add_(noise, alpha=0.02)
    return contender


def sdpa_against_math(device: torch.device, length: int) -> list[tuple[str, object]]:
    """One check per SDPA kernel: bf16 outputs and query gradients against fp32 math."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    generator = torch.Generator(device=device).manual_seed(0)
    shape = (2, length, 12, 64)
    q, k, v = (
        torch.randn(shape, device=device, generator=generator, dtype=torch.bfloat16)
        for _ in range(3)
    )
    upstream = torch.randn(shape, device=device, generator=generator)

    def run(backend: str, kernel=None):
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        if kernel is None:
            out = attend(*leaves, backend)
        else:
            with sdpa_kernel(kernel):
                out = attend(*leaves, backend)
        (out.float() * upstream).sum().backward()
        return out.float(), leaves[0].grad.float()

    reference, reference_grad = run("math")
    kernels = {"sdpa (default choice)": None}
    if device.type == "cuda":
        kernels |= {
            "sdpa flash": SDPBackend.FLASH_ATTENTION,
            "sdpa memory-efficient": SDPBackend.EFFICIENT_ATTENTION,
            "sdpa cuDNN": SDPBackend.CUDNN_ATTENTION,
        }
    checks = []
    for name, kernel in kernels.items():

        def one(kernel=kernel):
            out, grad = run("sdpa", kernel)
            error = (out - reference).abs().max().item()
            grad_error = ((grad - reference_grad).norm() / reference_grad.norm()).item()
            # bf16 keeps 8 bits of mantissa: outputs (averages of N(0,1) values, |o| < 1)
            # within 2e-2 absolute, gradients within 2% relative of the fp32 reference.
            ok = error < 2e-2 and grad_error < 2e-2
            detail = (
                f"bf16 on {device.type}, L={length}: max |out - math| {error:.2e}, "
                f"grad rel. {grad_error:.2e}"
            )
            return ("pass" if ok else "fail"), detail

        checks.append((f"attention: {name} vs math", one))
    return checks


def xformers_status(device: torch.device) -> tuple[str, str]:
    from tdlm_nn.attention import _xformers_failure

    failure = _xformers_failure(device)
    chosen = resolve_attention("auto", device)
    if failure is None:
        return "pass", f"xformers kernels load; attention 'auto' picks {chosen}"
    return "skip", f"xformers cannot run ({failure}); attention 'auto' picks {chosen}"


def train_step_check(model: str, scale: Scale, device: torch.device, batch: int):
    """bf16 step: finite loss and gradients, weights move; the loss within 2% of fp32's."""
    contender = trained_looking(model, scale, device)
    x = synthetic_tokens(scale, batch, device)
    reference = dataclasses.replace(contender.model.config, mixed_precision=False).build()
    reference.load_state_dict(contender.model.state_dict())
    fp32 = dataclasses.replace(contender, model=reference.to(device), optimizer=None)
    torch.manual_seed(1)
    with torch.no_grad():
        loss_fp32 = float(fp32.loss(x))
    before = [p.detach().clone() for p in contender.model.parameters()]
    torch.manual_seed(1)
    loss = contender.loss(x)
    loss.backward()
    grads_finite = all(
        torch.isfinite(p.grad).all() for p in contender.model.parameters() if p.grad is not None
    )
    contender.optimizer.step()
    moved = sum(
        not torch.equal(a, p.detach())
        for a, p in zip(before, contender.model.parameters(), strict=True)
    )
    loss = float(loss.detach())
    gap = abs(loss - loss_fp32) / loss_fp32
    ok = math.isfinite(loss) and grads_finite and moved > 0 and gap < 0.02
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    detail = (
        f"{precision}, {contender.parameters:,} params, batch {batch}x{scale.seq_len}: "
        f"loss {loss:.4f} (fp32 {loss_fp32:.4f}, gap {100 * gap:.2f}%), "
        f"grads finite {grads_finite}, {moved} tensors updated"
    )
    return ("pass" if ok else "fail"), detail


def sampler_check(model: str, scale: Scale, device: torch.device, steps: int):
    contender = trained_looking(model, scale, device)
    contender.model.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        tokens = ancestral_sample(
            contender.process,
            contender.model,
            batch_size=2,
            length=scale.seq_len,
            config=SamplerConfig(steps=steps),
            generator=generator,
        ).tokens
    seconds = time.perf_counter() - start
    ok = tokens.shape == (2, scale.seq_len) and bool(
        ((tokens >= 0) & (tokens < scale.vocab_size)).all()
    )
    detail = (
        f"{steps} steps, 2 x {scale.seq_len} tokens, all in the vocabulary: {ok} ({seconds:.1f} s)"
    )
    return ("pass" if ok else "fail"), detail


def compile_check(scale: Scale, device: torch.device):
    """A compiled backbone's logits against eager ones (same weights, eval mode)."""
    contender = trained_looking("tdlm", scale, device)
    model = contender.model.eval()
    x = synthetic_tokens(scale, 2, device)
    level = torch.tensor([0, contender.process.depth - 1], device=device)
    with torch.no_grad():
        eager = model(x, level).float()
        model.backbone.compile()
        start = time.perf_counter()
        compiled = model(x, level).float()
    seconds = time.perf_counter() - start
    error = ((compiled - eager).norm() / eager.norm()).item()
    ok = error < (2e-2 if device.type == "cuda" else 1e-4)  # bf16 kernels may fuse differently
    return ("pass" if ok else "fail"), f"logits rel. error {error:.1e} (compile {seconds:.0f} s)"


def collective_check(device: torch.device):
    """NCCL (gloo on the CPU) in a one-process group: an all-reduce returns its input."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as folder:
        store = dist.FileStore(str(Path(folder) / "store"), 1)
        dist.init_process_group(backend, store=store, rank=0, world_size=1)
        try:
            x = torch.arange(4.0, device=device)
            dist.all_reduce(x)
            ok = torch.equal(x.cpu(), torch.arange(4.0))
        finally:
            dist.destroy_process_group()
    return ("pass" if ok else "fail"), f"{backend} all_reduce in a 1-process group: {ok}"


def _train_args(device: torch.device, work: Path, run: Path, dry: bool) -> list[str]:
    """A small apps/train run on our own sources (no download), every block recomputed."""
    return [
        "--max_steps",  # before --minutes 0: every override is checked as it is applied
        "60",
        "--device",
        device.type,
        "--data.source",
        str(ROOT / "packages" / "*" / "src" / "**" / "*.py"),
        "--cache_dir",
        str(work / "cache"),
        "--run_dir",
        str(run),
        "--minutes",
        "0",
        "--eval_every",
        "20",
        "--checkpoint_every",
        "20",
        "--eval_batches",
        "2",
        "--log_every",
        "1",
        "--tokenizer.vocab_size",
        "512" if dry else "2048",
        "--seq_len",
        "32" if dry else "256",
        "--model.n_blocks",
        "1" if dry else "4",
        "--model.checkpoint_blocks",
        "all",
    ]


def _run_app(command: list[str]) -> str | None:
    """None on success, else the failure in a line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A guard against a hung process, never a verdict: 10 x the slowest app run seen (the dry
    # run's two FSDP processes, about 165 s on two loaded cores), so load cannot fail a check.
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode == 0:
        return None
    return f"{' '.join(command[1:3])} exited {done.returncode}: {done.stderr.strip()[-300:]}"


APP = [sys.executable, str(ROOT / "apps" / "train")]


def train_app_check(device: torch.device, work: Path, dry: bool):
    """apps/train end to end on the device: 40 steps, validation, samples, a checkpoint; resume."""
    run = work / "run"
    common = _train_args(device, work, run, dry)
    failure = _run_app([*APP, *common, "--max_steps", "40"]) or _run_app(
        [*APP, *common, "--max_steps", "60", "--resume"]
    )
    if failure:
        return "fail", failure
    summary = (run / "summary.txt").read_text()
    line = next((s for s in summary.splitlines() if "val NELBO" in s), "no val NELBO line")
    steps = sorted(p.name for p in (run / "checkpoints").iterdir())
    ok = "step_00000060" in steps and "nan" not in line
    return ("pass" if ok else "fail"), f"40 steps, resumed to 60 ({steps}); {line.strip(' |')}"


def _train_losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["nelbo"] for r in map(json.loads, lines) if r["kind"] == "train"]


def fsdp_check(device: torch.device, work: Path, dry: bool):
    """apps/train --parallel fsdp under torchrun (one process: NCCL on a GPU, FSDP2 with bf16
    block weights) against the same run unsharded: the same loss curve to bf16 rounding."""
    curves = {}
    for strategy in ("ddp", "fsdp"):
        run = work / f"parallel-{strategy}"
        argv = [*_train_args(device, work, run, dry), "--max_steps", "30", "--parallel", strategy]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        failure = _run_app([*launcher, "--nproc_per_node", "1", *APP[1:], *argv])
        if failure:
            return "fail", f"{strategy}: {failure}"
        curves[strategy] = _train_losses(run)
    gaps = [abs(a - b) / b for a, b in zip(curves["fsdp"], curves["ddp"], strict=True)]
    # fp32 on the CPU: the same sums; bf16-gathered block weights on a GPU: rounding that the
    # optimizer then compounds over 30 steps, so a few percent at most.
    tolerance = 0.03 if device.type == "cuda" else 1e-5
    ok = max(gaps) < tolerance
    detail = (
        f"30 steps, loss fsdp {curves['fsdp'][-1]:.4f} vs unsharded {curves['ddp'][-1]:.4f}; "
        f"largest gap {100 * max(gaps):.3f}% (tolerance {100 * tolerance:g}%)"
    )
    return ("pass" if ok else "fail"), detail


def correctness(evidence: Evidence, device: torch.device, scale: Scale, work: Path) -> None:
    length = 64 if evidence.dry_run else 1024
    for name, check in sdpa_against_math(device, length):
        guarded(evidence, name, check)
    guarded(evidence, "xformers", lambda: xformers_status(device))
    batch = 2
    for model in bench_models((), device)[0]:
        guarded(
            evidence,
            f"training step: {model}",
            lambda model=model: train_step_check(model, scale, device, batch),
        )
    for model in ("mdlm", "tdlm"):
        guarded(
            evidence,
            f"sampler: {model}",
            lambda model=model: sampler_check(model, scale, device, steps=64),
        )
    small = DRY if evidence.dry_run else SCALES["tiny"]  # compiling is the cost, not the size
    guarded(evidence, "torch.compile vs eager", lambda: compile_check(small, device))
    guarded(evidence, "collective", lambda: collective_check(device))
    guarded(
        evidence,
        "apps/train on the device",
        lambda: train_app_check(device, work, evidence.dry_run),
    )


# ---- 2. fused head losses ---------------------------------------------------------------------


def _loss_and_gradient(contender, x: torch.Tensor, device: torch.device):
    """The contender's loss on a fixed draw (generator seeded alike) and its gradient as one
    fp32 vector over every parameter."""
    contender.model.zero_grad(set_to_none=True)
    generator = torch.Generator(device=device).manual_seed(1)
    loss = contender.loss(x, generator)
    loss.backward()
    gradient = torch.cat([p.grad.float().flatten() for p in contender.model.parameters()])
    return float(loss.detach()), gradient


def fused_check(name: str, reference, full: tuple, x: torch.Tensor, device: torch.device):
    """``name``'s loss and gradient against ``full``'s (module doc, phase 2), on ``reference``'s
    network: the same weights and draw, only the head loss differs."""
    head_loss = parse_contender(name)[1]
    contender = dataclasses.replace(reference, name=name, head_loss=head_loss)
    loss, gradient = _loss_and_gradient(contender, x, device)
    full_loss, full_gradient = full
    loss_error = abs(loss - full_loss) / full_loss
    grad_error = ((gradient - full_gradient).norm() / full_gradient.norm()).item()
    bf16 = device.type == "cuda"
    loss_tolerance, grad_tolerance = (1e-3, 2e-2) if bf16 else (1e-5, 1e-5)
    ok = loss_error < loss_tolerance and grad_error < grad_tolerance
    detail = (
        f"{'bf16 autocast' if bf16 else 'fp32'}, {contender.parameters:,} params, batch "
        f"{x.shape[0]}x{x.shape[1]}: loss {loss:.5f} vs full {full_loss:.5f} (rel. "
        f"{loss_error:.1e}, tolerance {loss_tolerance:g}), gradient rel. {grad_error:.1e} "
        f"(tolerance {grad_tolerance:g})"
    )
    return ("pass" if ok else "fail"), detail


def fused_checks(evidence: Evidence, device: torch.device, scale: Scale) -> list[str]:
    """Every available head loss of :data:`FUSED` against ``full``; returns those available
    (the others are reported, with the library's reason)."""
    available = []
    for name in FUSED:
        reason = head_loss_unavailable(parse_contender(name)[1], device)
        if reason is None:
            available.append(name)
        else:
            evidence.check(f"head loss: {name}", "skip", f"unavailable: {reason}")
    reference = trained_looking("mdlm", scale, device)
    x = synthetic_tokens(scale, 2, device)
    full = _loss_and_gradient(reference, x, device)
    for name in available:
        guarded(
            evidence,
            f"head loss: {name} vs full",
            lambda name=name: fused_check(name, reference, full, x, device),
        )
    return available


def fused_phase(evidence: Evidence, device: torch.device, work: Path) -> None:
    """Phase 2 (module doc): the checks, then memory and step time side by side with TDLM."""
    dry = evidence.dry_run
    scale = DRY if dry else SCALES["paper"]
    available = fused_checks(evidence, device, scale)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the checks' model and gradients are gone; the workers start
    models = ("mdlm", *available, "tdlm", "tdlm-masked", "tdlm@shallow")
    batch = 2 if dry else 16
    memory = run_memory(
        MemoryOptions(
            scales=(scale.name,),
            models=models,
            batches=(batch,),
            checkpointing=("off",),
            device=device.type,
            out_dir=work / "fused-memory",
        )
    )
    speed = run_throughput(
        ThroughputOptions(
            scale=scale.name,
            models=models,
            batch=batch,
            rounds=2 if dry else 3,
            train_steps=1 if dry else 3,
            sample_steps=0,
            matmul_size=256 if dry else 8192,
            device=device.type,
            out_dir=work / "fused-throughput",
        )
    )
    evidence.figures["fused"] = {"memory": memory, "throughput": speed}
    evidence.markdown.append(
        f"## Fused head losses ({scale.name} scale, batch {batch})\n\n"
        + fused_markdown(memory, speed)
    )
    evidence.save()


def fused_markdown(memory: dict, speed: dict) -> str:
    """One row per contender: measured peak (analytic), step time, both against MDLM."""
    peaks = {r["model"]: r for r in memory["measurements"]}
    run = speed["runs"][0]
    tokens = run["seq_len"] * int(speed["options"]["batch"])
    rows = []
    for name, r in run["models"].items():
        peak, mdlm_peak = peaks[name].get("peak_bytes"), peaks["mdlm"].get("peak_bytes")
        rate = r["train_tokens_per_s"]["median"]
        analytic = peaks[name]["analytic"]
        rows.append(
            [
                name,
                f"{peak / 2**20:,.0f}" if peak else "OOM",
                f"{analytic['total'] / 2**20:,.0f}" if analytic else "—",
                f"{peak / mdlm_peak:.2f}" if peak and mdlm_peak else "—",
                f"{1e3 * tokens / rate:,.0f}",
                f"{r['train_ratio_to_mdlm']:.2f}",
            ]
        )
    header = ["contender", "peak MiB", "analytic MiB", "/ MDLM", "step ms (median)", "speed / MDLM"]
    env = memory["environment"]
    return "\n\n".join(
        [
            f"{env['device_name']}, torch {env['torch']}; peak of one training step (fresh "
            "process each), step time the median of interleaved rounds.",
            markdown_table(header, rows),
        ]
    )


# ---- 6. sampling -------------------------------------------------------------------------------


def sampling_phase(evidence: Evidence, device: torch.device, work: Path) -> None:
    """Phase 6 (module doc); the dry run: MDLM and tdlm@shallow (the same code path as every
    TDLM network) at the dry scale and N, batch 1."""
    dry = evidence.dry_run
    options = SamplingOptions(
        scale=DRY.name if dry else "paper",
        models=("mdlm", "tdlm@shallow") if dry else ("mdlm", "tdlm", "tdlm@shallow", "tdlm@none"),
        vocab_sizes=(DRY.vocab_size,) if dry else (50_258, 256_000),
        batches=(1,) if dry else (1, 4, 16, 64),
        analytic_batches=(),
        seq_len=DRY.seq_len if dry else 1024,
        rounds=1,
        device=device.type,
        out_dir=work / "sampling",
    )
    figures = run_sampling(options)
    evidence.figures["sampling"] = figures
    evidence.markdown.append("## Sampling at large vocabularies\n\n" + sampling_markdown(figures))
    evidence.save()


# ---- 4. memory, 5. throughput ------------------------------------------------------------------


def memory_phase(evidence: Evidence, device: torch.device, work: Path) -> None:
    scale = "dry" if evidence.dry_run else "paper"
    options = MemoryOptions(
        scales=(scale,),
        batches=(1,) if evidence.dry_run else (1, 4, 16),
        checkpointing=("off", "selective", "all"),
        device=device.type,
        dropout=0.1,
        out_dir=work / "memory",
    )
    figures = run_memory(options)
    evidence.figures["memory"] = figures
    evidence.markdown.append("## Memory (apps/bench memory)\n\n" + memory_markdown(figures))
    shutil.copy(work / "memory" / "memory.png", evidence.out / "memory.png")
    evidence.save()


def throughput_phase(evidence: Evidence, device: torch.device, work: Path, compiled: bool) -> None:
    dry = evidence.dry_run
    options = ThroughputOptions(
        scale="dry" if dry else "paper",
        batch=2 if dry else 16,
        rounds=2 if dry else 3,
        train_steps=1 if dry else 3,
        sample_steps=8 if dry else 64,
        sample_batch=2 if dry else 4,
        matmul_size=256 if dry else 8192,
        device=device.type,
        compile=compiled,
        checkpointing=("off",) if compiled else ("off", "selective", "all"),
        out_dir=work / ("throughput-compiled" if compiled else "throughput"),
    )
    figures = run_throughput(options)
    key = "throughput_compiled" if compiled else "throughput"
    evidence.figures[key] = figures
    title = "torch.compile" if compiled else "eager"
    evidence.markdown.append(
        f"## Throughput, {title} (apps/bench throughput)\n\n" + throughput_markdown(figures)
    )
    evidence.save()


# ---- main --------------------------------------------------------------------------------------


def missing_modules() -> list[str]:
    import importlib.util

    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the CI check")
    parser.add_argument(
        "--budget", type=float, default=450, help="seconds; phases that would overrun skip"
    )
    parser.add_argument(
        "--phases",
        default="correctness,fused,fsdp,memory,throughput,compiled,sampling",
        help="comma-separated subset of the default phases, run in the order given",
    )
    args = parser.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run")
    device = torch.device("cpu" if dry else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    evidence = Evidence(args.out, dry)
    env = environment(device)
    missing = missing_modules()
    evidence.figures["environment"] = env | {"missing_modules": missing}
    evidence.figures["environment_line"] = (
        f"{env['device_name']}, torch {env['torch']}, Python {env['python']}, {env['cpus']} CPUs, "
        f"{env['date']}, commit {env['git_commit']}"
        + (f"; missing modules: {', '.join(missing)}" if missing else "")
    )
    evidence.save()
    SCALES[DRY.name] = DRY  # the benches look scales up by name
    # Budget shares (seconds on an H100) each phase is expected to need; skip what cannot fit.
    # Measured on an H100 (2026-11-28): correctness 73 s, memory 270 s with one worker at a
    # time (now all at once); fused, fsdp and compiled are guesses (not yet run on a GPU).
    expected = {
        "correctness": 90,
        "fused": 120,
        "fsdp": 60,
        "memory": 150,
        "throughput": 75,
        "compiled": 150,
        "sampling": 300,
    }
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(expected)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for phase in phases:
            elapsed = time.perf_counter() - evidence.started
            if not dry and elapsed + expected[phase] > args.budget:
                evidence.check(
                    f"phase {phase}",
                    "skip",
                    f"{elapsed:.0f} s used of a {args.budget:.0f} s budget",
                )
                continue
            try:
                if phase == "correctness":
                    scale = DRY if dry else SCALES["paper"]
                    correctness(evidence, device, scale, work)
                elif phase == "fused":
                    fused_phase(evidence, device, work)
                elif phase == "fsdp":
                    guarded(evidence, "FSDP2 (torchrun)", lambda: fsdp_check(device, work, dry))
                elif phase == "memory":
                    memory_phase(evidence, device, work)
                elif phase == "sampling":
                    sampling_phase(evidence, device, work)
                else:
                    throughput_phase(evidence, device, work, compiled=phase == "compiled")
            except Exception as error:  # report it and go on to the next phase
                traceback.print_exc()
                evidence.check(f"phase {phase}", "fail", f"{type(error).__name__}: {error}"[:300])
            if device.type == "cuda":
                torch.cuda.empty_cache()
    evidence.figures["seconds"] = round(time.perf_counter() - evidence.started, 1)
    evidence.save()
    failed = [c["check"] for c in evidence.checks if c["status"] == "fail"]
    print(f"done in {evidence.figures['seconds']} s; failed: {failed or 'none'}")
    print((args.out / "evidence.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
