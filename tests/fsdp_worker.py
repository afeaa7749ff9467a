"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): FSDP2 on halves of
a global batch equals one unsharded process on the whole batch — gradients, then weights after
an AdamW step. Exits 0 on success, 1 (with the worst differences) on failure."""

import copy
import os
import sys

import torch
import torch.distributed as dist

from tdlm_diffusion import TreeProcess, child_nll, noised_batch
from tdlm_nn import DiTConfig, TreeShape
from tdlm_train.parallel import shard, sharded_parameters
from tdlm_tree import random_tree


def loss_on(process, model, x, draw, rows) -> torch.Tensor:
    """The training loss (mean over these rows' tokens) of one shared noise draw."""
    z, level, s = draw.z[rows], draw.level[rows], draw.s[rows]
    logits = process.child_logits(model, z, level, s)
    nll = child_nll(process, logits, x[rows], level)
    masked = process.is_masked(z, level)
    return (draw.weight[rows, None] * torch.where(masked, nll, 0)).sum() / x[rows].numel()


def main() -> int:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same model, batch and draw on every rank
    tree = random_tree(300, 8, seed=0)
    process = TreeProcess(tree)
    config = DiTConfig(
        shape=TreeShape.of(tree), width=32, n_heads=4, n_blocks=2, cond_dim=16, dropout=0.0
    )
    model = config.build()
    with torch.no_grad():  # leave adaLN-Zero's all-zero start, where most gradients vanish
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=0.05)
    reference = copy.deepcopy(model)
    x = torch.randint(0, 300, (4 * world, 24))
    draw = noised_batch(process, x)

    loss_on(process, reference, x, draw, slice(None)).backward()
    shard(model, torch.device("cpu"))
    loss_on(process, model, x, draw, slice(rank, None, world)).backward()

    failures = []
    params = sharded_parameters(model)
    for name, expected in reference.named_parameters():
        got = params[name].grad.full_tensor()
        error = (got - expected.grad).abs().max().item()
        if error > 1e-6 * (1 + expected.grad.abs().max().item()):
            failures.append(f"grad {name}: {error:.2e}")
    for net in (reference, model):
        torch.optim.AdamW(net.parameters(), lr=1e-2).step()
    params = sharded_parameters(model)
    for name, expected in reference.named_parameters():
        error = (params[name].detach().full_tensor() - expected.detach()).abs().max().item()
        if error > 1e-6:
            failures.append(f"weight {name}: {error:.2e}")
    if rank == 0:
        print("\n".join(failures) or f"FSDP x {world} == one process on the global batch")
    dist.barrier()
    return 1 if failures else 0


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's teardown: in this seconds-long process gloo's threads
    # now and then abort it after all the work is done and reported ("terminate called without
    # an active exception", about 1 run in 8 on 2 cores, with or without
    # destroy_process_group), which would fail the test for a reason outside the code tested.
    sys.stdout.flush()
    os._exit(code)
