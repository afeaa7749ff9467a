"""Multi-head attention behind one seam: ``xformers``, ``sdpa`` or ``math``.

The DiT of MDLM/SEDD attends over the whole sequence without a mask (docs/method.md §4: every
position sees every other); ``causal=True`` lets position i see positions <= i only (the
autoregressive baseline, the same network with a causal mask). ``xformers`` is
``xformers.ops.memory_efficient_attention`` (CUDA only); ``sdpa`` is
``torch.nn.functional.scaled_dot_product_attention``; ``math`` is the explicit
``softmax(q k^T / sqrt(d)) v`` in fp32, the reference the others are tested against. ``auto``
picks xformers where its compiled kernels work (they are built for one torch release: 0.0.35 for
torch 2.10.x, the workspace's ``xformers`` dependency group) and otherwise SDPA, and logs its
choice once per device type.
"""

import logging
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

__all__ = ["ATTENTION_BACKENDS", "attend", "resolve_attention"]

ATTENTION_BACKENDS = ("auto", "xformers", "sdpa", "math")
logger = logging.getLogger(__name__)
_resolved: dict[str, str] = {}  # device type -> what "auto" chose there (decided once)


def _xformers_failure(device: torch.device) -> str | None:
    """Why xformers cannot run on ``device`` (None when it can), found by one tiny call per dtype.

    Importing is not enough: with another torch release the package imports but its operators
    are missing, so only a real call shows whether the kernels load.
    """
    if device.type != "cuda":
        return f"xformers needs a CUDA device, not {device.type}"
    try:
        import xformers.ops as xops  # optional and lazily imported: absent on many GPU boxes

        for dtype in (torch.bfloat16, torch.float32):
            probe = torch.zeros(1, 8, 1, 64, device=device, dtype=dtype)
            xops.memory_efficient_attention(probe, probe, probe)
    except Exception as error:  # any failure (import, missing kernel, ABI) means "use SDPA"
        return f"{type(error).__name__}: {str(error).strip().partition(chr(10))[0][:200]}"
    return None


def resolve_attention(backend: str, device: torch.device) -> str:
    """The concrete backend ``backend`` means on ``device``: ``xformers``, ``sdpa`` or ``math``.

    ``auto`` is decided once per device type and logged; naming ``xformers`` where it cannot run
    is an error rather than a silent fallback.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if backend == "xformers":
        failure = _xformers_failure(device)
        if failure is not None:
            raise RuntimeError(
                f"attention backend 'xformers' cannot run here ({failure}); use 'auto' or 'sdpa'"
            )
    if backend != "auto":
        return backend
    if device.type not in _resolved:
        failure = _xformers_failure(device)
        _resolved[device.type] = "xformers" if failure is None else "sdpa"
        reason = "" if failure is None else f" (xformers unavailable: {failure})"
        logger.info("attention on %s: %s%s", device.type, _resolved[device.type], reason)
    return _resolved[device.type]


def _math_attention(
    q: Float[Tensor, "b l h d"],
    k: Float[Tensor, "b l h d"],
    v: Float[Tensor, "b l h d"],
    causal: bool,
) -> Float[Tensor, "b l h d"]:
    # The reference stays fp32 even under bf16 autocast.
    with torch.autocast(q.device.type, enabled=False):
        scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
        if causal:  # key j > query i is the future
            future = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device)
            scores = scores.masked_fill(future.triu(1), float("-inf"))
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v.float())
    return out.to(q.dtype)


def attend(
    q: Float[Tensor, "b l h d"],
    k: Float[Tensor, "b l h d"],
    v: Float[Tensor, "b l h d"],
    backend: str,
    causal: bool = False,
) -> Float[Tensor, "b l h d"]:
    """Attention of every position to every position (``causal``: to itself and the ones
    before it) with a concrete ``backend``."""
    if backend == "sdpa":
        q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return rearrange(out, "b h l d -> b l h d")
    if backend == "xformers":
        import xformers.ops as xops  # resolve_attention has checked it loads

        bias = xops.LowerTriangularMask() if causal else None
        return xops.memory_efficient_attention(q, k, v, attn_bias=bias)
    if backend == "math":
        return _math_attention(q, k, v, causal)
    raise ValueError(f"attend needs a concrete backend (xformers, sdpa, math), got {backend!r}")
