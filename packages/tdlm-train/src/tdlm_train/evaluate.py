"""Validation NELBO (total and per level), perplexity, bits per byte, and decoded samples.

METHOD.md §4 "Reporting": NELBO in nats per token, perplexity ``exp(NELBO)``, bits per byte
(comparable across tokenizers) and each level's ``L_h``.

Bits per byte are the scored blocks' total NELBO in bits over the UTF-8 bytes of the text those
same blocks hold, counted token by token (``TextTokenizer.token_bytes``). The NELBO bounds the
whole block, framing BOS/EOS and document-separating EOS included (a bound on the text alone
would not exist without them); those tokens stand for no text, so they count 0 bytes. Each
split is scored against its own bytes.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

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

from .config import RunConfig
from .data import prepare_data
from .errors import UserError
from .genppl import GenPerplexity, generative_perplexity
from .packing import PackedBlocks
from .run import Run
from .tokenizer import TextTokenizer, TokenizerConfig

__all__ = ["Validation", "validate", "sample_texts", "Evaluation", "evaluate_run"]


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


@dataclass
class Evaluation:
    """A trained run scored on a corpus split (``apps/eval``)."""

    checkpoint: str
    step: int
    weights: str  # "EMA weights" or "raw weights"
    source: str  # the corpus
    split: str
    validation: Validation
    gen_ppl: GenPerplexity | None = None

    def table(self) -> str:
        v = self.validation
        lines = [
            f"checkpoint {self.checkpoint} (step {self.step}, {self.weights}), "
            f"{self.source} {self.split}: {v.tokens:,} tokens, {v.text_bytes:,} bytes",
            f"  NELBO  {v.nelbo:.4f} nats/token",
            *(f"    L_{h}  {x:.4f}" for h, x in enumerate(v.level_nelbo)),
            f"  PPL    {v.perplexity:.3f} (upper bound)",
            f"  BPB    {v.bits_per_byte:.4f}",
        ]
        if self.gen_ppl is not None:
            g = self.gen_ppl
            lines.append(f"  gen PPL {g.perplexity:.2f} ({g.model}, {g.tokens} tokens)")
        return "\n".join(lines)

    def figures(self) -> dict:
        """JSON-ready figures (``apps/eval --out``)."""
        out = dataclasses.asdict(self.validation) | {"weights": self.weights}
        if self.gen_ppl is not None:
            out["gen_ppl"] = dataclasses.asdict(self.gen_ppl)
        return out


def evaluate_run(
    run: Run,
    config: RunConfig,
    *,
    split: str = "val",
    batches: int = 0,
    samples_per_level: int = 4,
    weights: str = "EMA weights",
    gen_ppl_model: str | None = None,
) -> Evaluation:
    """``run``'s model scored on ``config``'s corpus (tokenized with the run's own tokenizer)
    and ``split``: ``batches`` batches of ``config.batch_size`` blocks of ``config.seq_len``
    (0: the whole split, at most 64 batches). ``gen_ppl_model`` also samples 8 sequences and
    scores them with that causal LM (:mod:`.genppl`)."""
    if split not in ("val", "train"):
        raise UserError(f"--split must be val or train, got {split!r}")
    tokenizer = TokenizerConfig(name=str(run.tokenizer_file()))
    data = prepare_data(config.data, tokenizer, Path(config.cache_dir))
    stream = data.val_tokens if split == "val" else data.train_tokens
    blocks = PackedBlocks(stream, config.seq_len, data.tokenizer.bos_id, data.tokenizer.eos_id)
    if len(blocks) == 0:
        raise UserError(f"the {split} split has fewer than {config.seq_len} tokens")
    batches = batches or min(64, -(-len(blocks) // config.batch_size))
    validation = validate(
        run.process,
        run.model,
        blocks,
        batches=batches,
        batch_size=config.batch_size,
        samples_per_level=samples_per_level,
        token_bytes=data.token_bytes,
        device=run.device,
        seed=config.seed,
    )
    scored = None
    if gen_ppl_model is not None:
        texts, _ = sample_texts(
            run.process,
            run.model,
            run.tokenizer,
            count=8,
            length=config.seq_len,
            config=run.sampler(),
            device=run.device,
            seed=config.seed,
        )
        scored = generative_perplexity(texts, gen_ppl_model, device=run.device)
    return Evaluation(
        str(run.checkpoint), run.state.step, weights, config.data.source, split, validation, scored
    )
