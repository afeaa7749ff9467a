"""The diffusion process's share of a training step and of a sampling run (issue 3 targets).

Run: ``uv run benchmarks/diffusion_vs_model.py [--out results.json]``.

Same 50,257-token random tree with K = 64 as ``diffusion_overhead.py``; the network is tdlm-nn's
``tiny`` preset on that tree (deepened to the MDLM-tiny budget). Measured side by side, median
of repeats:

* the process's ``forward_sample`` + loss with the backward pass to the logits
  (``diffusion_overhead.measure_loss``) against one full training step of the tiny model
  (forward, backward, AdamW) on the same batch — target: at most 5%;
* the sampler's own work per step (``measure_sampler``, the network replaced by precomputed
  logits) against one network forward pass — target: at most 5% of a sampling run, whose cost
  is (network forward + sampler work) per step.

The tiny model at B = 64, L = 1024 would need more memory than this 24 GiB machine has for one
step, so the model is measured at ``--batch`` (default 8) and the process at that batch and at
B = 64. Both costs are linear in B, so the ratio at B = 8 is the ratio at B = 64.
"""

import argparse
import json
import platform
import time

import torch
from diffusion_overhead import _median_seconds, build_process, measure_loss, measure_sampler

from tdlm_diffusion import training_loss
from tdlm_nn import TreeShape, tiny


def measure_model(process, batch: int, length: int, repeats: int) -> dict[str, float]:
    model = tiny(TreeShape.of(process.tree)).build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, process.vocab_size, (batch, length))
    nodes, level, _ = process.forward_sample(x, torch.full((batch,), 0.5))

    def step() -> None:
        training_loss(process, model, x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad():
            model.eval()
            model(nodes, level)
            model.train()

    return {
        "train_step_s": _median_seconds(step, torch.device("cpu"), repeats),
        "forward_s": _median_seconds(forward, torch.device("cpu"), repeats),
        "parameters": sum(p.numel() for p in model.parameters()),
        "blocks": model.config.n_blocks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="batch for the model step")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    process = build_process()
    model = measure_model(process, args.batch, args.length, args.repeats)
    loss_small = measure_loss(process, batch=args.batch, length=args.length, repeats=5)
    loss_64 = measure_loss(process, batch=64, length=args.length, repeats=5)
    sampler = measure_sampler(process, batch=args.batch, length=args.length, steps=128, repeats=3)
    per_step = sampler["per_step_s"]
    rows = [
        ("tiny model training step", f"B={args.batch}", model["train_step_s"], ""),
        (
            "process: forward_sample + loss + backward to logits",
            f"B={args.batch}",
            loss_small["with_backward_s"],
            f"{100 * loss_small['with_backward_s'] / model['train_step_s']:.2f}% of the step",
        ),
        (
            "process: forward_sample + loss + backward to logits",
            "B=64",
            loss_64["with_backward_s"],
            "(for scale)",
        ),
        (
            "tiny model forward (one sampler step's network call)",
            f"B={args.batch}",
            model["forward_s"],
            "",
        ),
        (
            "sampler's own work per step",
            f"B={args.batch}",
            per_step,
            f"{100 * per_step / (per_step + model['forward_s']):.2f}% of a sampling run",
        ),
    ]
    print(
        f"tiny TDLM on N=50257, K=64: {model['blocks']} blocks, {model['parameters']:,} "
        f"parameters, L={args.length}, {torch.get_num_threads()} threads"
    )
    print("| measurement | batch | seconds | share |\n|---|---|---|---|")
    for name, batch, seconds, share in rows:
        print(f"| {name} | {batch} | {seconds:.4f} | {share} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "model": model,
                    "loss_b": loss_small,
                    "loss_64": loss_64,
                    "sampler": sampler,
                    "threads": torch.get_num_threads(),
                    "machine": platform.machine(),
                    "date": time.strftime("%Y-%m-%d"),
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
