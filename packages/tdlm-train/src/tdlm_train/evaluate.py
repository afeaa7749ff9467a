"""Validation NELBO (total and per level), perplexity, bits per byte, and a run's evaluation.

docs/method.md §4 "Reporting": NELBO in nats per token, perplexity ``exp(NELBO)``, bits per byte
(comparable across tokenizers) and each level's ``L_h``.

Bits per byte are the scored blocks' total NELBO in bits over the UTF-8 bytes of the text those
same blocks hold, counted token by token (``TextTokenizer.token_bytes``). The NELBO bounds the
whole block, framing BOS/EOS and document-separating EOS included (a bound on the text alone
would not exist without them); those tokens stand for no text, so they count 0 bytes. Each
split is scored against its own bytes.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tdlm_diffusion import (
    Context,
    TreeProcess,
    bits_per_byte,
    evaluate_nelbo,
    perplexity,
)

from .autoregressive import is_causal, next_token_nll
from .config import RunConfig
from .context import prefix_context
from .data import prepare_data
from .errors import UserError
from .genppl import GenPerplexity, GenPPLConfig, gen_ppl_of_run
from .packing import PackedBlocks, PaddedBlocks
from .run import Run

__all__ = [
    "Validation",
    "validate",
    "padding_context",
    "Condition",
    "Evaluation",
    "evaluate_run",
]


@dataclass(frozen=True)
class Validation:
    nelbo: float  # nats per token
    level_nelbo: list[float]  # L_h, nats per token, h = 0 (leaves) first
    perplexity: float
    bits_per_byte: float
    tokens: int  # scored positions, framing tokens included (conditional: the unknown ones)
    text_bytes: int  # UTF-8 bytes of the text in the scored blocks


# What validation scores: every position, or the positions a context leaves unknown. Called
# with a batch and the indices of its blocks (padded blocks know their padding by index).
ContextOf = Callable[[Tensor, np.ndarray], Context]


@torch.no_grad()
def validate(
    process: TreeProcess,
    model: torch.nn.Module,
    blocks: PackedBlocks | PaddedBlocks,
    *,
    batches: int,
    batch_size: int,
    samples_per_level: int,
    token_bytes: np.ndarray,
    device: torch.device,
    seed: int = 0,
    context: ContextOf | None = None,
    hide_known: bool = False,
    progress: str = "",
) -> Validation:
    """The NELBO on the first ``batches * batch_size`` validation blocks (a fixed set).

    With ``context`` (a batch's known positions, e.g. :func:`~tdlm_train.context.prefix_context`)
    it is the conditional NELBO of the unknown positions given the known ones (docs/method.md §8):
    every figure is per unknown token, and bits per byte count the unknown tokens' bytes. (Padded
    blocks are scored with their padding as the context: :func:`padding_context`.)
    ``hide_known`` shows the network the root at the known positions instead: the same tokens'
    bound on their own ``-log p(x_U)``, what conditioning is to beat.
    Uses its own generator, so validating never changes the training run's random stream.
    ``progress`` names a progress bar over the batches (none by default).

    A causal model (``--kind ar``) is scored by its exact NLL instead of a bound
    (:func:`~tdlm_train.autoregressive.next_token_nll`; one "level", its ``nelbo`` an exact
    NLL); its context must precede the scored positions.
    """
    causal = is_causal(model)
    if causal and hide_known:
        raise UserError(
            "an autoregressive model cannot hide the known positions: it reads every earlier "
            "token; score it with its context shown"
        )
    was_training = model.training
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    count = min(len(blocks), batches * batch_size)
    level_sums = torch.zeros(process.depth, dtype=torch.float64)
    tokens = text_bytes = 0
    starts = range(0, count, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", leave=False)
    for start in starts:
        indices = np.arange(start, min(start + batch_size, count))
        tokens_np = blocks.batch(indices)
        x = torch.from_numpy(tokens_np).to(device)
        shown = None if context is None else context(x, indices)
        scored = tokens_np if shown is None else tokens_np[~shown.known.cpu().numpy()]
        text_bytes += int(token_bytes[scored].sum())
        if causal:
            terms = None if shown is None else ~shown.known
            level_sums += next_token_nll(model, x, scored=terms).sum().double().cpu()
            tokens += x.numel() if terms is None else int(terms.sum())
            continue
        denoiser = model if not hide_known else _hiding(model, shown.known, process.root)
        estimate = evaluate_nelbo(
            process,
            denoiser,
            x,
            samples_per_level=samples_per_level,
            generator=generator,
            context=shown,
        )
        level_sums += estimate.level_nelbo.sum(dim=0).cpu()
        tokens += estimate.num_tokens
    model.train(was_training)
    total = float(level_sums.sum())
    return Validation(
        nelbo=total / tokens,
        level_nelbo=(level_sums / tokens).tolist(),
        perplexity=perplexity(total, tokens),
        bits_per_byte=bits_per_byte(total, text_bytes),
        tokens=tokens,
        text_bytes=text_bytes,
    )


def _hiding(model: torch.nn.Module, known: Tensor, root: int) -> Callable[..., Tensor]:
    """``model`` shown the root (no information) wherever ``known``: scored with a context, the
    known positions are then neither scored nor seen."""

    def denoiser(nodes: Tensor, level: Tensor, *time: Tensor) -> Tensor:
        return model(torch.where(known, root, nodes), level, *time)

    return denoiser


@dataclass(frozen=True)
class Condition:
    """Conditional scoring (``apps/eval --condition prefix:F``): the first ``F`` of every block
    known and shown as ``mode`` says; the rest scored."""

    fraction: float
    mode: str = "projection"

    def context(self, x: Tensor, indices: np.ndarray) -> Context:
        return prefix_context(x, self.fraction, self.mode)


def padding_context(blocks: PaddedBlocks, mode: str = "projection") -> ContextOf:
    """Padded blocks' padding as known context: shown to the network (as ``mode`` says), never
    scored, so the NELBO covers each document's ``[BOS] tokens [EOS]`` only."""

    def context(x: Tensor, indices: np.ndarray) -> Context:
        known = torch.from_numpy(blocks.padding(indices)).to(x.device)
        return Context(known, x, mode)

    return context


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
    condition: Condition | None = None
    unconditional: Validation | None = None  # conditional runs: the same tokens, prefix hidden
    exact: bool = False  # an autoregressive run's NLL, not a diffusion bound

    def table(self) -> str:
        v = self.validation
        figure = "NLL  " if self.exact else "NELBO"
        scored = "" if self.condition is None else (
            f", tokens after the first {self.condition.fraction:g} of each block given it "
            f"({self.condition.mode})"
        )  # fmt: skip
        lines = [
            f"checkpoint {self.checkpoint} (step {self.step}, {self.weights}), "
            f"{self.source} {self.split}{scored}: {v.tokens:,} tokens, {v.text_bytes:,} bytes",
            f"  {figure}  {v.nelbo:.4f} nats/token" + (" (exact)" if self.exact else ""),
            *([] if self.exact else (f"    L_{h}  {x:.4f}" for h, x in enumerate(v.level_nelbo))),
            f"  PPL    {v.perplexity:.3f}" + ("" if self.exact else " (upper bound)"),
            f"  BPB    {v.bits_per_byte:.4f}",
        ]
        if self.unconditional is not None:
            u = self.unconditional
            lines.append(
                f"  without the prefix (hidden): NELBO {u.nelbo:.4f}, so conditioning gains "
                f"{u.nelbo - v.nelbo:.4f} nats/token"
            )
        if self.gen_ppl is not None:
            g = self.gen_ppl
            lines += [
                f"  gen PPL {g.perplexity:.2f} ({g.model}, {g.samples} samples, {g.tokens:,} "
                f"tokens), unigram entropy {g.entropy:.3f} nats",
                f"    sampled with {g.steps} steps, {g.precision}, temperature {g.temperature:g}, "
                f"top-p {g.top_p:g}; scored in {g.context}-token "
                + ("chunks" if g.split == "chunks" else "sliding windows"),
            ]
        return "\n".join(lines)

    def figures(self) -> dict:
        """JSON-ready figures (``apps/eval --out``)."""
        out = dataclasses.asdict(self.validation) | {"weights": self.weights}
        for name in ("gen_ppl", "condition", "unconditional"):
            if getattr(self, name) is not None:
                out[name] = dataclasses.asdict(getattr(self, name))
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
    gen_ppl_config: GenPPLConfig | None = None,
    condition: Condition | None = None,
) -> Evaluation:
    """``run``'s model scored on ``config``'s corpus (tokenized with the run's own tokenizer)
    and ``split``: ``batches`` batches of ``config.batch_size`` blocks of ``config.seq_len``
    (0: the whole split, at most 64 batches). ``condition`` scores the rest of each block given
    its prefix, and the same tokens with the prefix hidden. ``gen_ppl_model`` also measures
    generative perplexity under that causal LM as ``gen_ppl_config`` (default: its defaults)
    says, on samples of ``config.seq_len`` tokens (:func:`~tdlm_train.genppl.gen_ppl_of_run`)."""
    blocks, token_bytes = _split_blocks(run, config, split)
    batches = batches or min(64, -(-len(blocks) // config.batch_size))

    def score(context: ContextOf | None, hide_known: bool = False) -> Validation:
        return validate(
            run.process,
            run.model,
            blocks,
            batches=batches,
            batch_size=config.batch_size,
            samples_per_level=samples_per_level,
            token_bytes=token_bytes,
            device=run.device,
            seed=config.seed,
            context=context,
            hide_known=hide_known,
        )

    exact = run.config.kind == "ar"
    validation = score(None if condition is None else condition.context)
    # An AR model cannot be shown a hidden prefix (it reads every earlier token): no such row.
    hidden = condition is not None and not exact
    unconditional = score(condition.context, hide_known=True) if hidden else None
    scored = None
    if gen_ppl_model is not None:
        scored = gen_ppl_of_run(
            run, gen_ppl_config or GenPPLConfig(), gen_ppl_model, length=config.seq_len,
            seed=config.seed,
        )  # fmt: skip
    return Evaluation(
        str(run.checkpoint), run.state.step, weights, config.data.source, split, validation,
        scored, condition, unconditional, exact,
    )  # fmt: skip


def _split_blocks(run: Run, config: RunConfig, split: str) -> tuple[PackedBlocks, np.ndarray]:
    if split not in ("val", "train"):
        raise UserError(f"--split must be val or train, got {split!r}")
    cache = Path(config.cache_dir)
    data = prepare_data(config.data, config.tokenizer, cache, tokenizer=run.tokenizer)
    stream = data.val_tokens if split == "val" else data.train_tokens
    blocks = PackedBlocks(stream, config.seq_len, data.tokenizer.bos_id, data.tokenizer.eos_id)
    if len(blocks) == 0:
        raise UserError(f"the {split} split has fewer than {config.seq_len} tokens")
    return blocks, data.token_bytes
