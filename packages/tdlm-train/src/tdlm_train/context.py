"""The contexts tdlm-train conditions on (docs/method.md §8): text from the user, the clean context
drawn for training, and the known prefix of conditional evaluation.

**Text** (``apps/sample``). A layout is one block as training saw it, ``[BOS] ... [EOS]``, with
the positions the user fixed marked known: BOS, the prompt's tokens (or every piece around the
gaps) and the closing EOS; the sampler chooses the others.

* ``--prompt TEXT``: ``[BOS] TEXT <unknown up to the length> [EOS]``;
* ``--infill "PREFIX<gap:N>SUFFIX"``: each ``<gap:N>`` is N unknown tokens, the text around them
  is known; any number of gaps, and the layout's length is what it spells out.

Each piece of text is tokenized on its own, so a token never straddles a gap.

**Clean-context training** (``--condition.probability``, :func:`draw_clean_context`): each
training sequence keeps, with that probability, a prefix of up to ``max_fraction`` of the block
at its leaves, and a share of those (``--condition.suffix``) also a suffix; the network sees them
as leaves and they are left out of the loss. Drawn from the global torch generator, so a resumed
run draws the same contexts; with probability 0 nothing is drawn (the run is unconditional).

**Conditional evaluation** (``apps/eval --condition prefix:F``, :func:`prefix_context`): the
first ``⌊F·l⌋`` positions of every block known, the rest scored.
"""

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from tdlm_diffusion import Context

from .config import ConditionConfig
from .errors import UserError
from .tokenizer import TextTokenizer

__all__ = [
    "Layout",
    "prompt_layout",
    "infill_layout",
    "draw_clean_context",
    "prefix_context",
    "parse_condition",
]

_GAP = re.compile(r"<gap:(\d+)>")


@dataclass(frozen=True)
class Layout:
    tokens: np.ndarray  # [l] int64 token ids (0 where unknown)
    known: np.ndarray  # [l] bool: fixed by the user

    @property
    def unknown(self) -> int:
        return int((~self.known).sum())


def _encode(tokenizer: TextTokenizer, text: str) -> list[int]:
    return tokenizer.encode_batch([text])[0] if text else []


def prompt_layout(tokenizer: TextTokenizer, prompt: str, length: int) -> Layout:
    """``[BOS] prompt`` known, then unknown positions up to ``length - 1``, then a known EOS."""
    ids = [tokenizer.bos_id, *_encode(tokenizer, prompt)]
    if len(ids) + 2 > length:
        raise UserError(
            f"--prompt is {len(ids) - 1} tokens; with BOS and EOS it leaves nothing to generate "
            f"in --length {length} (raise --length)"
        )
    tokens = np.zeros(length, dtype=np.int64)
    known = np.zeros(length, dtype=bool)
    tokens[: len(ids)], known[: len(ids)] = ids, True
    tokens[-1], known[-1] = tokenizer.eos_id, True
    return Layout(tokens, known)


def infill_layout(tokenizer: TextTokenizer, text: str) -> Layout:
    """``[BOS] piece <gap> piece ... [EOS]`` from ``"PREFIX<gap:N>SUFFIX"``."""
    parts = _GAP.split(text)
    pieces, gaps = parts[0::2], [int(n) for n in parts[1::2]]
    if not gaps:
        raise UserError('--infill needs at least one gap, e.g. "def f(x):<gap:12>return y"')
    if min(gaps) < 1:
        raise UserError("--infill: every <gap:N> needs N >= 1")
    tokens, known = [tokenizer.bos_id], [True]
    for i, piece in enumerate(pieces):
        ids = _encode(tokenizer, piece)
        tokens += ids
        known += [True] * len(ids)
        if i < len(gaps):
            tokens += [0] * gaps[i]
            known += [False] * gaps[i]
    tokens.append(tokenizer.eos_id)
    known.append(True)
    return Layout(np.asarray(tokens, dtype=np.int64), np.asarray(known, dtype=bool))


def draw_clean_context(x: Int[Tensor, "b l"], config: ConditionConfig) -> Context | None:
    """A clean context for a training batch (module docstring); ``None`` when it is off."""
    if config.probability == 0:
        return None
    batch, length = x.shape
    draws = torch.rand(4, batch, device=x.device)
    chosen = draws[0] < config.probability
    with_suffix = chosen & (draws[1] < config.suffix)
    # Up to max_fraction (<= 0.5) each: prefix + suffix < l, so a position is always left.
    longest = config.max_fraction * (length - 1)
    prefix = torch.where(chosen, (draws[2] * longest).long(), 0)
    suffix = torch.where(with_suffix, (draws[3] * longest).long(), 0)
    position = torch.arange(length, device=x.device)
    known = (position < prefix[:, None]) | (position >= length - suffix[:, None])
    return Context(known, x, mode="clean")


def prefix_context(x: Int[Tensor, "b l"], fraction: float, mode: str) -> Context:
    """The first ``⌊fraction · l⌋`` positions of every sequence known."""
    known = torch.arange(x.shape[1], device=x.device) < int(fraction * x.shape[1])
    return Context(known.expand_as(x).contiguous(), x, mode=mode)


def parse_condition(text: str) -> float:
    """``prefix:F`` (``apps/eval --condition``) as the known fraction ``F`` in (0, 1)."""
    kind, _, value = text.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        fraction = math.nan
    if kind != "prefix" or not 0 < fraction < 1:
        raise UserError(f"--condition takes prefix:F with 0 < F < 1, e.g. prefix:0.5; got {text!r}")
    return fraction
