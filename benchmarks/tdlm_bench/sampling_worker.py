"""One sampling measurement in a fresh process: ``python -m tdlm_bench.sampling_worker JSON``.

Prints one JSON line with one contender's sampling run at one batch (:mod:`.sampling`). The
worker builds the contender (eval mode), warms up on 16 positions, then

1. times one whole ``ancestral_sample`` run and takes its peak memory. CPU: the resident set's
   high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) above the idle
   baseline, plus the weights and tree tables, as :mod:`.memory_worker` measures (the parent
   fixes glibc's mmap threshold low, so every sizeable tensor is its own mapping and the
   resident set follows the live tensors; the time then includes faulting in fresh pages, as
   it does for every tensor above glibc's default 32 MiB threshold). CUDA:
   ``max_memory_allocated`` the same way;
2. runs ``ancestral_sample``'s loop again with the same seed through its public parts, timing
   each and measuring the most memory it adds above what was live when it started: **network**
   (``TreeDiT.hidden``: embedding, blocks, final norm), **head** (``TreeDiT.head``) and
   **sampler** (``ancestral_sample_step``: the movers' child distributions, the categorical
   draws, the state update). The network and head run only after a step that moved something,
   as the sampler's output reuse does; the run must draw the whole run's tokens.
"""

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from jaxtyping import Int
from torch import Tensor

from tdlm_diffusion import (
    SamplerConfig,
    TreeProcess,
    ancestral_sample,
    ancestral_sample_step,
    step_grid,
    steps_per_level,
)
from tdlm_nn import TreeDiT

from .contenders import Scale, build_contender
from .timing import timed

__all__ = ["PARTS", "measure_sampling"]

PARTS = ("network", "head", "sampler")
T = TypeVar("T")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class _Meter:
    """Memory now and its peak since :meth:`reset`: the resident set (CPU) or the CUDA allocator."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def now(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _status_bytes("VmRSS")

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return _status_bytes("VmHWM")

    def run(self, fn: Callable[[], T]) -> tuple[float, int, T]:
        """``(seconds, bytes added at the peak above the start, result)`` of one call."""
        start = self.now()
        self.reset()
        seconds, result = timed(fn, device=self.device)
        return seconds, self.peak() - start, result


def _parts_run(
    process: TreeProcess,
    model: TreeDiT,
    batch: int,
    length: int,
    config: SamplerConfig,
    generator: torch.Generator,
    meter: _Meter,
) -> tuple[Int[Tensor, "b l"], int, dict[str, float], dict[str, int]]:
    """``ancestral_sample``'s loop through its public parts, each timed and metered: the tokens,
    the network calls, each part's total seconds and largest memory rise."""
    seconds = dict.fromkeys(PARTS, 0.0)
    rise = dict.fromkeys(PARTS, 0)

    def part(name: str, fn: Callable[..., T], *args, **kwargs) -> T:
        took, added, result = meter.run(lambda: fn(*args, **kwargs))
        seconds[name] += took
        rise[name] = max(rise[name], added)
        return result

    budget = steps_per_level(process.schedule, config.steps, config.step_allocation)
    z = torch.full((batch, length), process.root, dtype=torch.long, device=process.offsets.device)
    calls = 0
    with torch.no_grad():
        for h in reversed(range(process.depth)):
            level = torch.full_like(z[:, 0], h)
            grid = step_grid(budget[h]).tolist()
            logits, moved = None, True
            for s_from, s_to in zip(grid[:-1], grid[1:], strict=True):
                if logits is None or moved:  # the output reuse of ancestral_sample
                    hidden = part("network", model.hidden, z, level)
                    logits = part("head", model.head, hidden, level)
                    del hidden  # freed as the forward returns, in ancestral_sample
                    calls += 1
                step = part(
                    "sampler",
                    ancestral_sample_step,
                    process,
                    logits,
                    z,
                    h,
                    s_from,
                    s_to,
                    precision=config.precision,
                    generator=generator,
                )
                moved, z = not torch.equal(step, z), step  # a mover always changes its node id
    return z, calls, seconds, rise


def measure_sampling(
    model: str, scale: Scale, batch: int, steps: int, precision: str, device: str, seed: int = 0
) -> dict:
    """One whole sampling run and its parts (module doc), in this process."""
    dev = torch.device(device)
    contender = build_contender(model, scale, dev)
    network, process = contender.model.eval(), contender.process
    resident = sum(
        t.numel() * t.element_size() for t in [*network.parameters(), *process.buffers()]
    )
    config = SamplerConfig(steps=steps, precision=precision)
    with torch.no_grad():  # warm-up: kernels, thread pools
        z = torch.full((batch, min(16, scale.seq_len)), process.root, device=dev)
        level = torch.full((batch,), process.depth - 1, device=dev)
        logits = network.head(network.hidden(z, level), level)
        ancestral_sample_step(process, logits, z, process.depth - 1, 1.0, 0.5, precision=precision)
        del z, level, logits
    gc.collect()
    meter = _Meter(dev)

    def whole():
        generator = torch.Generator(dev).manual_seed(seed)
        return ancestral_sample(
            process,
            network,
            batch_size=batch,
            length=scale.seq_len,
            config=config,
            generator=generator,
        )

    whole_s, added, result = meter.run(whole)
    tokens, calls, seconds, rise = _parts_run(
        process,
        network,
        batch,
        scale.seq_len,
        config,
        torch.Generator(dev).manual_seed(seed),
        meter,
    )
    return {
        "model": model,
        "vocab_size": scale.vocab_size,
        "batch": batch,
        "device": device,
        "parameters": contender.parameters,
        "n_blocks": network.config.n_blocks,
        "steps": steps,
        "network_calls": result.network_calls,
        "parts_network_calls": calls,
        "same_tokens": bool(torch.equal(tokens, result.tokens)),  # the same draws, part by part
        "whole_s": whole_s,
        "tokens_per_s": batch * scale.seq_len / whole_s,
        "peak_bytes": int(added + resident),
        "parts_s": seconds,
        "parts_bytes": rise,
        "method": "torch.cuda.max_memory_allocated"
        if dev.type == "cuda"
        else "peak RSS above the idle baseline + weights and tree tables",
    }


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    args["scale"] = Scale(**args["scale"])
    try:
        result = measure_sampling(**args)
    except torch.OutOfMemoryError:
        result = {"model": args["model"], "batch": args["batch"], "out_of_memory": True}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
