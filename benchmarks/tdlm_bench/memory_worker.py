"""One memory measurement in a fresh process: ``python -m tdlm_bench.memory_worker JSON``.

Prints one JSON line with the peak bytes of one full training step (forward, backward, AdamW
step) of one contender, its head loss included, at one batch size (issue 6, item 1). A fresh
process per configuration keeps one measurement's allocator caches and high-water marks out of
the next; a contender whose head loss cannot run on the device fails with the library's reason
(the parent leaves such contenders out before it starts a worker).

* CUDA: ``torch.cuda.max_memory_allocated`` over the measured step — every live tensor,
  parameters and optimizer states included.
* CPU: the process's resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs``) over the measured step, minus the resident set just after the
  model and optimizer were built (the idle baseline: interpreter, libraries, parameters), plus
  the parameters' bytes. The parent runs this with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed low,
  so every sizeable tensor is its own mapping that returns to the system when freed and the
  resident set follows the live tensors.

In both cases the AdamW states exist before the measured step, as they do in a long run.
"""

import json
import sys
from pathlib import Path

import torch

from .contenders import Scale, build_contender, synthetic_tokens

__all__ = ["measure_step_memory"]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_step_memory(
    model: str, scale: Scale, batch: int, device: str, dropout: float, checkpointing: str
) -> dict:
    """Peak bytes of one training step (see the module doc for the method)."""
    dev = torch.device(device)
    contender = build_contender(model, scale, dev, dropout=dropout, checkpointing=checkpointing)
    param_bytes = sum(p.numel() * p.element_size() for p in contender.model.parameters())
    # AdamW's moments as in a long run: one step on zero gradients (moments 0, weights kept).
    for parameter in contender.model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    contender.optimizer.step()
    contender.optimizer.zero_grad(set_to_none=True)
    x = synthetic_tokens(scale, batch, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        contender.train_step(x)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        method = "torch.cuda.max_memory_allocated"
    else:
        # The idle baseline holds the AdamW states; count them back in.
        state_bytes = sum(
            t.numel() * t.element_size()
            for state in contender.optimizer.state.values()
            for t in state.values()
            if torch.is_tensor(t)
        )
        baseline = _status_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        contender.train_step(x)
        peak = _status_kib("VmHWM") * 1024 - baseline + param_bytes + state_bytes
        method = "peak RSS above the idle baseline + parameters + AdamW states"
    return {
        "model": model,
        "scale": scale.name,
        "batch": batch,
        "device": device,
        "checkpointing": checkpointing,
        "parameters": contender.parameters,
        "n_blocks": contender.model.config.n_blocks,
        "peak_bytes": int(peak),
        "method": method,
    }


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    args["scale"] = Scale(**args["scale"])
    try:
        result = measure_step_memory(**args)
    except torch.OutOfMemoryError:
        result = {**args, "scale": args["scale"].name, "peak_bytes": None, "out_of_memory": True}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
