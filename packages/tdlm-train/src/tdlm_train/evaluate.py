"""Validation NELBO (total and per level), perplexity, bits per byte, and decoded samples.

METHOD.md §4 "Reporting": NELBO in nats per token, perplexity ``exp(NELBO)``, bits per byte
(comparable across tokenizers) and each level's ``L_h``.

Bits per byte are the scored blocks' total NELBO in bits over the UTF-8 bytes of the text those
same blocks hold, counted token by token (``TextTokenizer.token_bytes``). The NELBO bounds the
whole block, framing BOS/EOS and document-separating EOS included (a bound on the text alone
would not exist without them); those tokens stand for no text, so they count 0 bytes. Each
split is scored against its own bytes.
"""

from dataclasses import dataclass

import numpy as np
import torch

from tdlm_diffusion import (
    SamplerConfig,
    TreeProcess,
    ancestral_sample,
    bits_per_byte,
    evaluate_nelbo,
    perplexity,
)

from .packing import PackedBlocks
from .tokenizer import TextTokenizer

__all__ = ["Validation", "validate", "sample_texts"]


@dataclass(frozen=True)
class Validation:
    nelbo: float  # nats per token
    level_nelbo: list[float]  # L_h, nats per token, h = 0 (leaves) first
    perplexity: float
    bits_per_byte: float
    tokens: int  # scored positions, framing tokens included
    text_bytes: int  # UTF-8 bytes of the text in the scored blocks


@torch.no_grad()
def validate(
    process: TreeProcess,
    model: torch.nn.Module,
    blocks: PackedBlocks,
    *,
    batches: int,
    batch_size: int,
    samples_per_level: int,
    token_bytes: np.ndarray,
    device: torch.device,
    seed: int = 0,
) -> Validation:
    """The NELBO on the first ``batches * batch_size`` validation blocks (a fixed set).

    Uses its own generator, so validating never changes the training run's random stream.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    count = min(len(blocks), batches * batch_size)
    level_sums = torch.zeros(process.depth, dtype=torch.float64)
    text_bytes = 0
    for start in range(0, count, batch_size):
        indices = np.arange(start, min(start + batch_size, count))
        tokens = blocks.batch(indices)
        text_bytes += int(token_bytes[tokens].sum())
        x = torch.from_numpy(tokens).to(device)
        estimate = evaluate_nelbo(
            process, model, x, samples_per_level=samples_per_level, generator=generator
        )
        level_sums += estimate.level_nelbo.sum(dim=0).cpu()
    model.train(was_training)
    tokens = count * blocks.seq_len
    total = float(level_sums.sum())
    return Validation(
        nelbo=total / tokens,
        level_nelbo=(level_sums / tokens).tolist(),
        perplexity=perplexity(total, tokens),
        bits_per_byte=bits_per_byte(total, text_bytes),
        tokens=tokens,
        text_bytes=text_bytes,
    )


@torch.no_grad()
def sample_texts(
    process: TreeProcess,
    model: torch.nn.Module,
    tokenizer: TextTokenizer,
    *,
    count: int,
    length: int,
    config: SamplerConfig,
    device: torch.device,
    seed: int = 0,
):
    """``(texts, result)``: decoded samples and the sampler's result (calls, trajectory)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    result = ancestral_sample(
        process, model, batch_size=count, length=length, config=config, generator=generator
    )
    model.train(was_training)
    texts = [tokenizer.decode(row.tolist()) for row in result.tokens.cpu()]
    return texts, result
