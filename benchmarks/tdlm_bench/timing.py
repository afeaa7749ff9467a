"""The benches' one timing helper: wall time of a call, on the CPU or on a CUDA device.

:func:`timed` runs a function ``repeats`` times and returns a summary of the wall times (by
default the best, ``min``) with the last call's result. On a CUDA device, whose kernels run
asynchronously, it synchronises the device before each call (so queued work is not counted) and
after it (so the call's own work is). ``apps/bench throughput`` (:mod:`.throughput`) uses it.

Torch is imported only when a ``device`` is given, so CPU-only benches do not need it.
"""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

__all__ = ["timed"]

T = TypeVar("T")


def _synchronizer(device: "torch.device | str | None") -> Callable[[], None] | None:
    if device is None:
        return None
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    return lambda: torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], T],
    *,
    device: "torch.device | str | None" = None,
    repeats: int = 1,
    summary: Callable[[list[float]], float] = min,
) -> tuple[float, T]:
    """``(seconds, result)``: ``summary`` (default ``min``) of the wall times of ``repeats``
    calls of ``fn``, and the last call's result. With a CUDA ``device``, the device is
    synchronised before each call (untimed) and after it (timed)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    synchronize = _synchronizer(device)
    times = []
    for _ in range(repeats):
        if synchronize is not None:
            synchronize()
        start = time.perf_counter()
        result = fn()
        if synchronize is not None:
            synchronize()
        times.append(time.perf_counter() - start)
    return float(summary(times)), result
