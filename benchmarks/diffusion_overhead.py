"""Overhead of the tree diffusion process itself: noising + loss, and the sampler's own work.

Run: ``uv run benchmarks/diffusion_overhead.py [--out results.json] [--device cpu|cuda]``.

For B = 64 sequences of L = 1024 tokens over a 50,257-token random tree with K = 64
(50257 -> 786 -> 13 -> 1, so k = 64), with the network's output replaced by precomputed logits:

* **loss**: noising + the training loss given ``[B, L, k]`` logits (and, separately, with the
  backward pass to the logits that a training step adds), median of repeats, for every training
  estimator (``cutoff``, the default, first);
* **sampler**: ``ancestral_sample`` with a denoiser that returns precomputed logits, so the time
  is the sampler's own work (noise draws, child sampling, bookkeeping, caching checks): per run
  and per step.

The issue's targets compare these with the tiny model's training step and sampling run (at most
5% each); :func:`measure_loss` and :func:`measure_sampler` return the seconds so that comparison
can import them. Shape checking is off here, as at run time.
"""

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from tdlm_diffusion import (
    ESTIMATORS,
    SamplerConfig,
    TreeProcess,
    ancestral_sample,
    training_loss,
)
from tdlm_tree import random_tree


def _median_seconds(
    step: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1
) -> float:
    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        timed()
    return statistics.median(timed() for _ in range(repeats))


def build_process(vocab: int = 50257, branching: int = 64, device: str = "cpu") -> TreeProcess:
    """The benchmark's process: a seeded random tree with the default schedule."""
    return TreeProcess(random_tree(vocab, branching, seed=0)).to(device)


def measure_loss(
    process: TreeProcess, batch: int = 64, length: int = 1024, repeats: int = 7
) -> dict[str, float]:
    """Median seconds of noising + loss given logits, without and with the backward pass, for
    the default estimator (``ESTIMATORS[0]``) and, as ``<estimator>_...``, for every other one."""
    device = process.offsets.device
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, process.vocab_size, (batch, length), generator=g, device=device)
    logits = torch.randn(batch, length, process.width, generator=g, device=device)
    trainable = logits.clone().requires_grad_(True)
    out = {}
    for estimator in ESTIMATORS:

        def forward(target: torch.Tensor, estimator: str = estimator) -> torch.Tensor:
            return training_loss(
                process, lambda z, h: target, x, estimator=estimator, generator=g
            ).loss

        def forward_backward(estimator: str = estimator) -> None:
            trainable.grad = None
            forward(trainable, estimator).backward()

        with torch.no_grad():
            seconds = _median_seconds(lambda: forward(logits), device, repeats)
        prefix = "" if estimator == ESTIMATORS[0] else f"{estimator}_"
        out[f"{prefix}forward_sample_and_loss_s"] = seconds
        out[f"{prefix}with_backward_s"] = _median_seconds(forward_backward, device, repeats)
    return out


def measure_sampler(
    process: TreeProcess, batch: int = 64, length: int = 1024, steps: int = 256, repeats: int = 3
) -> dict[str, float]:
    """Median seconds of a sampling run whose denoiser returns precomputed logits."""
    device = process.offsets.device
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(batch, length, process.width, generator=g, device=device)
    calls = []

    def denoiser(nodes: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return logits

    def run() -> None:
        result = ancestral_sample(
            process,
            denoiser,
            batch_size=batch,
            length=length,
            config=SamplerConfig(steps=steps),
            generator=g,
        )
        calls.append(result.network_calls)

    seconds = _median_seconds(run, device, repeats)
    return {
        "steps": steps,
        "run_s": seconds,
        "per_step_s": seconds / steps,
        "network_calls": calls[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--branching", type=int, default=64)
    parser.add_argument("--steps", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    process = build_process(args.vocab, args.branching, args.device)
    loss = measure_loss(process, args.batch, args.length, args.repeats)
    sampler = [
        measure_sampler(process, args.batch, args.length, steps, max(1, args.repeats // 2))
        for steps in args.steps
    ]
    device = torch.device(args.device)
    results = {
        "tree": repr(process.tree),
        "batch": args.batch,
        "length": args.length,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "loss": loss,
        "sampler": sampler,
    }
    print(f"{results['tree']}, B = {args.batch}, L = {args.length}, {results['device']}\n")
    print("| measurement | seconds |")
    print("|---|---|")
    for estimator in ESTIMATORS:
        prefix = "" if estimator == ESTIMATORS[0] else f"{estimator}_"
        print(
            f"| noising + loss, {estimator} (given logits) | "
            f"{loss[f'{prefix}forward_sample_and_loss_s']:.4f} |"
        )
        print(f"| ... with backward to the logits | {loss[f'{prefix}with_backward_s']:.4f} |")
    for row in sampler:
        print(
            f"| sampler overhead, {row['steps']} steps ({row['network_calls']} network calls):"
            f" run | {row['run_s']:.3f} |"
        )
        print(f"| sampler overhead, {row['steps']} steps: per step | {row['per_step_s']:.5f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
