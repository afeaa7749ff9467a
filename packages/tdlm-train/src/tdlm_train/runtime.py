"""Process runtime: device choice, distributed setup, RNG state, EMA weights, LR schedule.

Distributed training follows torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``):
gloo on the CPU, nccl on CUDA; only rank 0 writes files. The RNG state saved with checkpoints is
the global torch generator's (it drives the diffusion noise and dropout), so a resumed CPU run
continues bit-identically.
"""

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import UserError
from .parallel import gathered_tensors, local, scatter_like, sharded_parameters

__all__ = [
    "Dist",
    "setup_distributed",
    "pick_device",
    "Ema",
    "learning_rate",
    "rng_state",
    "set_rng_state",
    "gathered_rng_states",
    "restore_rng_state",
    "peak_memory_bytes",
]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA, but torch sees no CUDA device")
    return device


def setup_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when launched by torchrun (even as its only process, so
    that FSDP can run on one device); else a single process without a group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ:
        return Dist(), pick_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank), device


class Ema:
    """Exponential moving average of a model's parameters, with MDLM's warm-up.

    Update ``n`` (counting from 1) uses the decay ``min(decay, (1 + n) / (10 + n))`` (MDLM's
    ``ExponentialMovingAverage``): early averages forget the random initialisation quickly
    (after ``n`` warm-up updates its share is ``10! (n + 1)! / (n + 10)!``, below 1e-6 at
    n = 45), and the configured decay takes over once the warm-up decay exceeds it (n ≈ 9,989
    for 0.999). ``decay = 0`` keeps the raw weights. Its state (averages and update count) is
    saved with every checkpoint, so a resumed run continues the same average.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"the EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters()}

    def current_decay(self) -> float:
        """The decay the next update uses (the warm-up's while it is below ``decay``)."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @property
    def description(self) -> str:
        """Which weights validation scores, in words (for summaries and logs)."""
        if self.decay == 0:
            return "raw weights (EMA off)"
        return f"EMA weights (decay {self.decay}, warm-up; {self.updates:,} updates)"

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        names = list(self.shadow)
        params = sharded_parameters(model)
        # Under FSDP both are sharded alike: each process averages its own shard.
        shadow = [local(self.shadow[k]) for k in names]
        current = [local(params[k].detach()) for k in names]
        if decay == 0:
            torch._foreach_copy_(shadow, current)
            return
        torch._foreach_lerp_(shadow, current, 1 - decay)

    @torch.no_grad()
    def swap(self, model: nn.Module) -> None:
        """Exchange the model's weights with the averages (call twice to restore)."""
        for k, p in sharded_parameters(model).items():
            mine, theirs = local(p.detach()), local(self.shadow[k])
            tmp = mine.clone()
            mine.copy_(theirs)
            theirs.copy_(tmp)

    def state_dict(self) -> dict[str, Any]:
        """Full averages on the CPU (a collective under FSDP: each process holds a shard)."""
        return {"shadow": gathered_tensors(self.shadow), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load full averages (as saved); under FSDP each process keeps its shard of them."""
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            missing, extra = set(self.shadow) - set(shadow), set(shadow) - set(self.shadow)
            raise UserError(
                f"the saved EMA does not fit this model (missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(extra)[:3]})"
            )
        for k, v in shadow.items():
            if v.shape != self.shadow[k].shape:
                raise UserError(
                    f"the saved EMA's {k} has shape {tuple(v.shape)}, the model's "
                    f"{tuple(self.shadow[k].shape)}"
                )
        for k, v in scatter_like(shadow, self.shadow).items():
            local(self.shadow[k]).copy_(local(v))
        self.updates = int(state["updates"])


def learning_rate(
    step: int, *, lr: float, warmup: int, schedule: str, max_steps: int, min_ratio: float
) -> float:
    """Linear warmup to ``lr``, then constant or cosine decay to ``min_ratio * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant" or max_steps <= warmup:
        return lr
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gathered_rng_states(dist_info: "Dist", device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's RNG states in one dict (a collective with several processes): rank 0's as
    ``cpu``/``cuda`` (the single-process layout), rank r's as ``cpu.rank{r}``/``cuda.rank{r}``."""
    mine = rng_state(device)
    if dist_info.world_size == 1:
        return mine
    states: list[dict[str, torch.Tensor]] = [{} for _ in range(dist_info.world_size)]
    dist.all_gather_object(states, mine)
    merged = dict(states[0])
    for rank, state in enumerate(states[1:], start=1):
        merged |= {f"{k}.rank{rank}": v for k, v in state.items()}
    return merged


def restore_rng_state(
    saved: dict[str, torch.Tensor], dist_info: "Dist", device: torch.device, fresh_seed: int
) -> bool:
    """This rank's saved RNG states; a rank the checkpoint did not have (a run resumed on more
    processes) is seeded with ``fresh_seed`` instead. Returns whether the saved state was used."""
    rank = dist_info.rank
    if rank == 0:
        set_rng_state(saved, device)
        return True
    suffix = f".rank{rank}"
    mine = {k.removesuffix(suffix): v for k, v in saved.items() if k.endswith(suffix)}
    if "cpu" in mine:
        set_rng_state(mine, device)
        return True
    torch.manual_seed(fresh_seed)
    return False


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: peak allocated by torch; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
