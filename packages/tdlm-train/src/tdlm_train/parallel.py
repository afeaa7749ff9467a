"""Data parallelism across processes: DDP (the default) or FSDP2 (``--parallel fsdp``).

**DDP** keeps a full copy of the weights, gradients, AdamW moments and EMA on every process and
all-reduces gradients: the fastest choice for models whose states fit one device.

**FSDP2** (``torch.distributed.fsdp.fully_shard``) shards them instead: every DiT block is one
unit and the root (node embedding, conditioning, final norm, head) another, so each process holds
``1 / world`` of every parameter, gradient, AdamW moment and EMA average, and gathers one block's
weights at a time for its forward and backward passes. On CUDA a block's weights are gathered in
bf16 (``param_dtype``) and its gradients reduce-scattered in fp32 (``reduce_dtype``), the field's
standard (TorchTitan, Llama recipes); inputs are not cast (``cast_forward_inputs=False``), so the
residual stream stays fp32 as under plain autocast, and the root keeps fp32 weights. On the CPU
(gloo) everything is fp32.

**Checkpoints are gathered**, whatever the strategy: the full weights, EMA and AdamW state, in
the single-process layout (safetensors + torch's own optimizer state dict), written by rank 0.
So a run resumes on any number of processes and under either strategy, and every tool (eval,
sample, export) reads an FSDP run's checkpoints unchanged. The price is one full copy of the
states in rank 0's CPU memory at save time (16 bytes per parameter), which suits the models
this library trains (up to ~1B parameters on a node); ``torch.distributed.checkpoint``'s
sharded files would avoid it at the cost of a second checkpoint format.
"""

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from tdlm_nn import TreeDiT

__all__ = [
    "PARALLEL",
    "shard",
    "is_sharded",
    "sharded_parameters",
    "local",
    "local_state_bytes",
    "gathered_model_state",
    "gathered_tensors",
    "gathered_optimizer_state",
    "load_model_state",
    "load_optimizer_state",
    "scatter_like",
]

PARALLEL = ("ddp", "fsdp")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(model: TreeDiT, device: torch.device) -> TreeDiT:
    """Apply FSDP2 in place: each block, then the root (see the module doc); returns ``model``.

    Ranks initialise their weights from different seeds (their noise differs too); as DDP does,
    every rank first takes rank 0's weights, so the shards are of one model.
    """
    if dist.is_initialized() and dist.get_world_size() > 1:
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor, src=0)
    on_gpu = device.type == "cuda" and model.config.mixed_precision
    blocks = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if on_gpu else None,
        reduce_dtype=torch.float32 if on_gpu else None,
        cast_forward_inputs=False,
    )
    for block in model.backbone.blocks:
        fully_shard(block, mp_policy=blocks)
    fully_shard(model, mp_policy=MixedPrecisionPolicy(cast_forward_inputs=False))
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def sharded_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``model``'s parameters by name, as its optimizer and EMA hold them (sharded under FSDP).

    FSDP keeps the root's weights gathered after a forward pass until the backward pass; after a
    forward pass without one (validation, sampling) they stay gathered, so reshard first.
    """
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return dict(model.named_parameters())


def local(tensor: Tensor) -> Tensor:
    """This process's part of a (possibly sharded) tensor; the tensor itself when not sharded."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _tensors(value: Any) -> Iterator[Tensor]:
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def local_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, ema) -> int:
    """Bytes this process holds of the weights, AdamW moments and EMA averages (not gradients,
    which are freed between steps)."""
    tensors = [*model.parameters(), *_tensors(optimizer.state), *ema.shadow.values()]
    return sum(local(t).numel() * local(t).element_size() for t in tensors)


def gathered_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The full weights on the CPU (a collective under FSDP: every rank calls it; rank 0 gets
    them, the others an empty dict)."""
    if is_sharded(model):
        return get_model_state_dict(model, options=_FULL)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def gathered_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Full CPU copies of possibly sharded tensors (a collective when any is sharded)."""
    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu()
        for k, v in tensors.items()
    }


def scatter_like(full: dict[str, Tensor], like: dict[str, Tensor]) -> dict[str, Tensor]:
    """``full`` tensors laid out as ``like``'s (this rank's shard where ``like`` is sharded)."""
    out = {}
    for k, v in full.items():
        target = like[k]
        if isinstance(target, DTensor):
            v = distribute_tensor(
                v.to(target.device, target.dtype), target.device_mesh, target.placements
            )
        out[k] = v
    return out


def gathered_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The full AdamW state in torch's single-process layout (parameters by index), on the CPU.

    A collective under FSDP (rank 0 gets it, the others an empty dict).
    """
    if not is_sharded(model):
        return optimizer.state_dict()
    by_name = get_optimizer_state_dict(model, optimizer, options=_FULL)
    if not by_name:
        return {}
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    return {
        "state": {index[name]: state for name, state in by_name["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]}
            for group in by_name["param_groups"]
        ],
    }


def load_model_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load full weights (every rank holds them) into a plain or sharded model."""
    if is_sharded(model):
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(state)


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a single-process-layout AdamW state (every rank holds it) into either strategy."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    names = [name for name, _ in model.named_parameters()]
    by_name = {
        "state": {names[int(i)]: s for i, s in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[int(i)] for i in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(
        model, optimizer, by_name, options=StateDictOptions(full_state_dict=True)
    )
