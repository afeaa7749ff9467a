"""CPU efficiency of the ``tiny`` TDLM training step against this machine's fp32 matmul rate.

Run: ``uv run benchmarks/nn_flops.py [--out results.json]`` on an otherwise idle machine.

Two measurements, both fp32 on the CPU with ``torch.set_num_threads`` = the usable cores, taken
in alternating rounds (one matmul, one training step, repeat) so that both see the same machine
load; medians over rounds are reported:

* **matmul rate**: ``torch.mm`` of two ``n x n`` matrices, ``2 n^3`` FLOPs.
* **training step rate**: forward + weighted cross-entropy + backward of the ``tiny`` preset on
  a balanced K-ary tree (dropout on, train mode), with model FLOPs counted as

      FLOPs = 6 * P_token * B * L  +  12 * n_blocks * B * L^2 * D

  where ``P_token`` counts the weights every token goes through in a matmul (attention q/k/v/out
  ``4 D^2`` and MLP ``2 D * hidden`` per block, plus one level's head ``D * k``); the embedding
  lookup, the per-sample adaLN maps, norms and biases are not counted. ``6 = 2`` (forward
  multiply-add) ``+ 4`` (backward, input and weight gradients); the second term is bidirectional
  attention's ``Q K^T`` and ``A V`` (``4 B L^2 D`` per block forward, three times that with the
  backward).

The efficiency is the median over rounds of (step FLOP/s) / (matmul FLOP/s) in the same round;
the best round of each (least disturbed by other load) is printed beside it. The target (tdlm-nn
issue) is at least 40%.
"""

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from tdlm_bench.throughput import step_flops

from tdlm_nn import TreeShape, param_breakdown, tiny


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def tiny_training_step(
    shape: TreeShape, batch: int, length: int
) -> tuple[Callable[[], None], dict]:
    """A closure running forward + loss + backward of the ``tiny`` preset, and its FLOP count."""
    config = tiny(shape)
    torch.manual_seed(0)
    model = config.build().train()
    with torch.no_grad():  # off the zero initialisation, so no path is trivially skipped
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    level = torch.arange(batch) % shape.depth
    offsets = torch.tensor(shape.level_offsets)
    sizes = torch.tensor(shape.level_sizes)
    # Each sample's positions sit at level h+1 (nodes choosing children) as in training.
    local = (torch.rand(batch, length) * sizes[level + 1][:, None]).long()
    nodes = local + offsets[level + 1][:, None]
    targets = torch.randint(0, shape.num_slots, (batch, length))
    weights = torch.rand(batch, length)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits = rearrange(model(nodes, level), "b l k -> (b l) k")
        ce = F.cross_entropy(logits, rearrange(targets, "b l -> (b l)"), reduction="none")
        (ce * rearrange(weights, "b l -> (b l)")).sum().backward()

    flops = step_flops(config, batch, length)
    info = {
        "config": config.to_dict(),
        "parameters": param_breakdown(config).total,
        "batch": batch,
        "length": length,
        "step_flops": flops,
    }
    return step, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary size N (default 8192)")
    parser.add_argument("--branching", type=int, default=64, help="tree branching K (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (default 16)")
    parser.add_argument("--length", type=int, default=128, help="sequence length (default 128)")
    parser.add_argument("--matmul-size", type=int, default=4096, help="square matmul size")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (default 9)")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads (default: the usable cores)",
    )
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    size = args.matmul_size
    a, b = torch.randn(size, size), torch.randn(size, size)
    step, info = tiny_training_step(
        TreeShape.balanced(args.vocab, args.branching), args.batch, args.length
    )
    for _ in range(2):  # warm-up: allocator, oneDNN/MKL kernels
        torch.mm(a, b)
        step()
    mm_seconds, step_seconds = [], []
    for _ in range(args.rounds):
        mm_seconds.append(_seconds(lambda: torch.mm(a, b)))
        step_seconds.append(_seconds(step))
    mm_flops = 2 * size**3
    ratios = [
        (info["step_flops"] / s) / (mm_flops / m)
        for m, s in zip(mm_seconds, step_seconds, strict=True)
    ]
    mm_rate = mm_flops / statistics.median(mm_seconds)
    step_rate = info["step_flops"] / statistics.median(step_seconds)
    best_mm_rate, best_step_rate = (
        mm_flops / min(mm_seconds),
        info["step_flops"] / min(step_seconds),
    )
    ratio = statistics.median(ratios)
    tokens_per_second = args.batch * args.length / statistics.median(step_seconds)

    config = info["config"]
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {args.threads} threads, {cpu}, {args.rounds} rounds")
    print(
        f"tiny preset on an N={args.vocab:,} K={args.branching} tree: width {config['width']}, "
        f"{config['n_blocks']} blocks, {info['parameters']:,} parameters; "
        f"batch {args.batch} x length {args.length}, {info['step_flops'] / 1e9:.1f} GFLOP per step"
    )
    print()
    print(
        "| measurement | median time | GFLOP/s (median) | GFLOP/s (best) | share of matmul rate |"
    )
    print("|---|--:|--:|--:|--:|")
    print(
        f"| fp32 mm {size}x{size} | {statistics.median(mm_seconds) * 1e3:.0f} ms "
        f"| {mm_rate / 1e9:.1f} | {best_mm_rate / 1e9:.1f} | 100% |"
    )
    print(
        f"| tiny fwd+bwd ({tokens_per_second:,.0f} tokens/s) "
        f"| {statistics.median(step_seconds) * 1e3:.0f} ms | {step_rate / 1e9:.1f} "
        f"| {best_step_rate / 1e9:.1f} | {100 * ratio:.0f}% median of rounds "
        f"({100 * min(ratios):.0f}-{100 * max(ratios):.0f}%); "
        f"{100 * best_step_rate / best_mm_rate:.0f}% best vs best |"
    )
    if args.out:
        result = {
            "torch": torch.__version__,
            "threads": args.threads,
            "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "matmul_size": size,
            "matmul_seconds": mm_seconds,
            "matmul_flops_per_second": mm_rate,
            "matmul_flops_per_second_best": best_mm_rate,
            "training_step": info | {"step_seconds": step_seconds},
            "training_flops_per_second": step_rate,
            "training_flops_per_second_best": best_step_rate,
            "tokens_per_second": tokens_per_second,
            "ratio_per_round": ratios,
            "ratio": ratio,
            "ratio_best": best_step_rate / best_mm_rate,
            "target_ratio": 0.4,
        }
        with open(args.out, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
