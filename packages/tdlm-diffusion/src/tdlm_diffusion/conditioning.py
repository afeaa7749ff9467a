"""Conditioning on known positions: prompts and infilling (docs/method.md §8).

A :class:`Context` names the known positions ``K`` of a batch and their tokens. Known positions
never move: the sampler starts with them at their tokens and draws only the unknown positions
``U``; the conditional NELBO is docs/method.md §4's per-level sum with the indicator restricted to
``U``, an upper bound on ``-log p_θ(x_U | x_K)`` (known positions are never noised or scored).

What the network sees at a known position while level h is resolved (:meth:`Context.show`):

* ``projection``: ``a_h(x)``, its level-h ancestor — exactly a clean position of the training
  distribution, so an unconditionally trained network reads it in distribution; but at coarse
  levels it shows only the token's cluster, so even the exact posterior given the input draws
  level h from ``p(· | a_h(x_K), ...)``, not from the true conditional (on a tree deeper than
  one level; tests/test_conditioning.py shows it). A denoiser that knows ``x_K`` by other means
  is exact in both modes; one that reads it from its input needs ``clean``.
* ``clean``: the leaf ``x`` itself (leaves are level 0, so its global id is the token id); in
  distribution only for a network trained to see clean context (:func:`training_loss` with a
  ``clean`` context does that).

Either way a shown known position is never "masked" (at level h+1): its id is at level h or a
leaf, below ``offsets[h + 1]``, so :meth:`TreeProcess.is_masked`, the losses and the sampler
pass it over, and every loss piece that takes a state ``z`` works on the shown state unchanged.
On the flat tree ``a_0(x) = x``: both modes are MDLM's conditioning.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from .process import TreeProcess
from .validation import DiffusionInputError

__all__ = ["CONTEXT_MODES", "Context"]

CONTEXT_MODES: tuple[str, ...] = ("projection", "clean")


def _is_integer(tensor: Tensor) -> bool:
    return not (tensor.dtype == torch.bool or tensor.dtype.is_floating_point
                or tensor.dtype.is_complex)


@dataclass(frozen=True)
class Context:
    """Known positions (``known``) and their token ids (``tokens``) for a ``[b, l]`` batch.

    ``tokens`` at unknown positions are ignored (any value). ``mode`` says what the network is
    shown at a known position (module docstring). Different known sets per sequence are fine:
    e.g. prompts of lengths ``p`` ``[b]`` are ``known = arange(l) < p[:, None]``.
    """

    known: Bool[Tensor, "b l"]
    tokens: Int[Tensor, "b l"]
    mode: Literal["projection", "clean"] = "projection"

    def __post_init__(self) -> None:
        if self.mode not in CONTEXT_MODES:
            raise DiffusionInputError(f"unknown context mode {self.mode!r}; choose one of "
                                      f"{', '.join(CONTEXT_MODES)}")
        if self.known.dtype != torch.bool:
            raise DiffusionInputError(f"the context's known mask must be a bool tensor, got dtype "
                                      f"{self.known.dtype}")
        if not _is_integer(self.tokens):
            raise DiffusionInputError(f"the context's tokens must be an integer tensor, got dtype "
                                      f"{self.tokens.dtype}")
        if self.known.ndim != 2 or self.known.shape != self.tokens.shape:
            raise DiffusionInputError(
                f"the context's known mask {tuple(self.known.shape)} and tokens "
                f"{tuple(self.tokens.shape)} must both have shape [batch, length]"
            )
        if self.known.device != self.tokens.device:
            raise DiffusionInputError(f"the context's known mask is on {self.known.device} but "
                                      f"its tokens are on {self.tokens.device}")

    @classmethod
    def prefix(
        cls,
        prompt: Int[Tensor, "b p"],
        length: int,
        mode: Literal["projection", "clean"] = "projection",
    ) -> "Context":
        """The first ``p`` positions known (the prompt); the remaining ``length - p`` unknown."""
        if prompt.ndim != 2 or not 0 <= prompt.shape[1] <= length:
            raise DiffusionInputError(f"a prompt must have shape [batch, p] with p <= length = "
                                      f"{length}, got {tuple(prompt.shape)}")
        return cls.infill(prompt, length - prompt.shape[1], prompt[:, :0], mode)

    @classmethod
    def infill(
        cls,
        prefix: Int[Tensor, "b p"],
        gap: int,
        suffix: Int[Tensor, "b q"],
        mode: Literal["projection", "clean"] = "projection",
    ) -> "Context":
        """``prefix``, then ``gap`` unknown positions, then ``suffix`` (length ``p + gap + q``)."""
        if prefix.ndim != 2 or suffix.ndim != 2 or prefix.shape[0] != suffix.shape[0]:
            raise DiffusionInputError(f"prefix and suffix must have shapes [batch, p] and "
                                      f"[batch, q], got {tuple(prefix.shape)} and "
                                      f"{tuple(suffix.shape)}")
        if gap < 0:
            raise DiffusionInputError(f"the gap to infill must be >= 0 positions, got {gap}")
        batch, device = prefix.shape[0], prefix.device
        blank = torch.zeros(batch, gap, dtype=prefix.dtype, device=device)
        flags = [torch.ones_like(prefix, dtype=torch.bool), blank.bool(),
                 torch.ones_like(suffix, dtype=torch.bool)]
        return cls(torch.cat(flags, dim=1), torch.cat([prefix, blank, suffix], dim=1), mode)

    @property
    def unknown_count(self) -> Int[Tensor, " b"]:
        """``L_u``, the number of unknown positions of each sequence."""
        return (~self.known).sum(dim=-1)

    def show(
        self, process: TreeProcess, z: Int[Tensor, "b l"], level: Int[Tensor, " b"]
    ) -> Int[Tensor, "b l"]:
        """The network's input while ``level`` is resolved: ``z`` with every known position
        replaced by ``a_h(x)`` (``projection``) or the leaf ``x`` (``clean``)."""
        tokens = torch.where(self.known, self.tokens.long(), 0)  # unknown: any value, unused
        shown = process.ancestor(tokens, level) if self.mode == "projection" else tokens
        return torch.where(self.known, shown, z)


def check_context(
    context: Context, process: TreeProcess, batch: int, length: int, device: torch.device
) -> None:
    """The context covers a ``[batch, length]`` batch on ``device`` with known tokens in the
    tree's vocabulary."""
    if context.known.shape != (batch, length):
        raise DiffusionInputError(f"the context has shape {tuple(context.known.shape)} but the "
                                  f"batch is [{batch}, {length}]; they must match")
    if context.known.device != device:
        raise DiffusionInputError(f"the context is on {context.known.device} but the batch is on "
                                  f"{device}")
    tokens = torch.where(context.known, context.tokens.long(), 0)
    low, high = torch.stack([tokens.min(), tokens.max()]).tolist()
    if low < 0 or high >= process.vocab_size:
        bad = low if low < 0 else high
        raise DiffusionInputError(f"the context's known token {bad} is outside the tree's "
                                  f"vocabulary 0..{process.vocab_size - 1}")


def check_scored(context: Context, process: TreeProcess, x: Int[Tensor, "b l"]) -> None:
    """A context for scoring ``x`` (the conditional NELBO): it fits ``x``, and ``x`` holds the
    context's tokens at the known positions (the bound is on ``x_U`` given those)."""
    check_context(context, process, x.shape[0], x.shape[1], x.device)
    if bool(((x != context.tokens) & context.known).any()):
        raise DiffusionInputError("x differs from the context's tokens at a known position; the "
                                  "conditional NELBO scores x's unknown positions given its own "
                                  "known tokens")
