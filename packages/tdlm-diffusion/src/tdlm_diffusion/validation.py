"""Input checks shared by the process, the ELBO and the sampler: one clear sentence per mistake.

Shapes are also declared with jaxtyping (checked in the test suite); these checks are the ones
that hold at run time too: dtypes, value ranges and matching sizes. Checks that need a value from
the device are skipped while ``torch.compile`` traces, so they never break a compiled graph.
"""

import torch
from torch import Tensor

__all__ = ["DiffusionInputError"]


class DiffusionInputError(ValueError):
    """Input the tree diffusion process cannot take (ids, times, shapes, a denoiser's output)."""


def _tracing() -> bool:
    return torch.compiler.is_compiling()


def check_tokens(x: Tensor, vocab_size: int) -> None:
    """``x`` is an integer ``[b, l]`` tensor of token ids in ``0..N-1``."""
    if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
        raise DiffusionInputError(f"token ids must be an integer tensor, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] == 0:
        raise DiffusionInputError(f"token ids must have shape [batch, length], got "
                                  f"{tuple(x.shape)}")
    if _tracing() or x.numel() == 0:
        return
    low, high = torch.stack([x.min(), x.max()]).tolist()  # one device sync, not two
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise DiffusionInputError(
            f"token id {bad} is outside the tree's vocabulary 0..{vocab_size - 1} "
            f"(N = {vocab_size}); was the tree built for another tokenizer?"
        )


def check_times(t: Tensor, batch: int, what: str = "t") -> None:
    """``t`` is a floating ``[batch]`` tensor with every entry in ``[0, 1]``."""
    if not t.dtype.is_floating_point:
        raise DiffusionInputError(f"{what} must be a floating-point tensor, got dtype {t.dtype}")
    if t.shape != (batch,):
        raise DiffusionInputError(f"{what} must have shape [{batch}] (one per sequence), got "
                                  f"{tuple(t.shape)}")
    if _tracing() or t.numel() == 0:
        return
    if not bool(((t >= 0) & (t <= 1)).all()):
        raise DiffusionInputError(f"{what} must lie in [0, 1], got values from {float(t.min())} to "
                                  f"{float(t.max())} (NaN counts as outside)")


def check_levels(level: Tensor, batch: int, depth: int) -> None:
    """``level`` is an integer ``[batch]`` tensor of transitions ``0..H-1``."""
    if level.dtype == torch.bool or level.dtype.is_floating_point or level.dtype.is_complex:
        raise DiffusionInputError(f"levels must be an integer tensor, got dtype {level.dtype}")
    if level.shape != (batch,):
        raise DiffusionInputError(f"levels must have shape [{batch}] (one per sequence), got "
                                  f"{tuple(level.shape)}")
    if _tracing() or level.numel() == 0:
        return
    low, high = torch.stack([level.min(), level.max()]).tolist()
    if low < 0 or high >= depth:
        raise DiffusionInputError(f"levels must lie in 0..{depth - 1} for a tree of depth {depth}, "
                                  f"got {low}..{high}")


def check_counts(count: Tensor, batch: int, length: int | Tensor) -> None:
    """``count`` is an integer ``[batch]`` tensor of masked-position counts in ``1..length``;
    ``length`` may be per sequence (``L_u`` under a context, where ``L_u = 0`` takes 0)."""
    if count.dtype == torch.bool or count.dtype.is_floating_point or count.dtype.is_complex:
        raise DiffusionInputError(f"masked counts must be an integer tensor, got {count.dtype}")
    if count.shape != (batch,):
        raise DiffusionInputError(f"masked counts must have shape [{batch}] (one per sequence), "
                                  f"got {tuple(count.shape)}")
    if _tracing() or count.numel() == 0:
        return
    if isinstance(length, Tensor):
        if not bool(((count >= (length > 0).long()) & (count <= length)).all()):
            raise DiffusionInputError("masked counts must lie in 1..L_u, the number of unknown "
                                      "positions of each sequence (0 where there are none)")
        return
    low, high = torch.stack([count.min(), count.max()]).tolist()
    if low < 1 or high > length:
        raise DiffusionInputError(f"masked counts must lie in 1..{length} (the sequence length), "
                                  f"got {low}..{high}")


def check_level_weights(weights: Tensor, depth: int) -> None:
    """Per-level training weights ``λ_h``: one finite, non-negative weight per level."""
    if weights.shape != (depth,):
        raise DiffusionInputError(f"level_weights needs one weight per level ({depth}), got "
                                  f"shape {tuple(weights.shape)}")
    if _tracing():
        return
    if not bool(((weights >= 0) & weights.isfinite()).all()):
        raise DiffusionInputError("level_weights must be finite and non-negative")


def check_same_shape(a: Tensor, b: Tensor, what_a: str, what_b: str) -> None:
    """Two per-position tensors describe the same ``[b, l]`` batch."""
    if a.shape != b.shape:
        raise DiffusionInputError(f"{what_a} has shape {tuple(a.shape)} but {what_b} has shape "
                                  f"{tuple(b.shape)}; they must describe the same positions")


def check_logits(logits: Tensor, batch: int, length: int, width: int) -> None:
    """A denoiser's output is floating ``[b, l, k]`` with ``k = max(tree.branching)``."""
    if not logits.dtype.is_floating_point:
        raise DiffusionInputError(f"child logits must be floating point, got dtype {logits.dtype}")
    if logits.shape != (batch, length, width):
        raise DiffusionInputError(
            f"child logits have shape {tuple(logits.shape)}, expected ({batch}, {length}, {width}) "
            f"with k = {width} = max(tree.branching); was the network built for another tree?"
        )
