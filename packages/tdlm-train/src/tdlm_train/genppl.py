"""Generative perplexity: generated text scored by a pretrained causal language model, with the
samples' unigram entropy beside it (issues 6 and 13).

The field's sample-quality number (MDLM, SEDD: GPT-2 large), after MDLM's
``compute_generative_perplexity`` (kuleshov-group/mdlm, ``diffusion.py``): sample, decode the
samples to text, retokenize them with the scoring model's own tokenizer, and report
``exp(mean token NLL)`` of the text under that model. Any causal LM that ``transformers`` can load
works (a hub name such as ``gpt2-large`` — online only — or a local folder written by
``save_pretrained``). ``transformers`` is imported only here, when asked for.

What is scored is the samples' text, never the run's special tokens (issue 27): each sample is
cut at the run's special tokens (its BOS and EOS, and any other token its tokenizer marks
special) into documents (:func:`sample_documents`), each decoded without them, and the scorer
sees them framed by its *own* special tokens: its BOS, the documents with its EOS between them
(then its BOS again, where the two differ; GPT-2's ``<|endoftext|>`` is both, so one token), no
final EOS. That is MDLM's input with another run tokenizer: MDLM's run tokenizer is GPT-2's, so
its samples decode to ``<|endoftext|>``-framed text that GPT-2 Large's tokenizer reads back as
its own special token, one sequence per sample, a later document predicted after the earlier
ones. The framing tokens are context only, never scored: MDLM scores an ``<|endoftext|>``
target only at a chunk's first one, which in its GPT-2 protocol is the BOS at position 0, so it
scores none either (and a text that holds a scorer special token as text is treated alike).
Texts longer than the scorer's ``context`` are split (:class:`GenPPLConfig`): ``chunks`` (MDLM)
cuts each into non-overlapping chunks of ``context`` tokens scored on their own, so a chunk's
first token is context only (the BOS, or for later chunks a text token left unscored);
``sliding`` (Hugging Face's perplexity guide) scores every text token once, in windows of
``context`` tokens ``context // 2`` apart, so each token past the first window sees at least
``context - context // 2`` tokens before it.

Generative perplexity rewards low-entropy text (repetition scores well), and float32 sampling
lowers the samples' entropy (Zheng et al. 2024, arXiv:2409.02908); so the samples' unigram
entropy is always reported with it, and sampling is float64 unless asked otherwise.
"""

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from tdlm_tree import unigram_entropy

from .config import refuse
from .errors import UserError
from .inference import sample_texts
from .run import Run
from .tokenizer import TextTokenizer

__all__ = [
    "GenPPLConfig",
    "GenPerplexity",
    "TextPerplexity",
    "gen_ppl_of_run",
    "generative_perplexity",
    "sample_documents",
    "sample_entropy",
]


@dataclass(frozen=True, kw_only=True)
class GenPPLConfig:
    """How generative perplexity is measured (``apps/eval --gen-ppl.<field>``; module doc)."""

    samples: int = 8  # sequences sampled and scored
    steps: int = 0  # sampler steps over all levels (0: the run's sampler's)
    precision: str = "float64"  # the sampler's draws: float64 | float32
    temperature: float = 1.0  # on the child distributions (0: greedy)
    top_p: float = 1.0  # nucleus on the child distributions (1: off)
    context: int = 0  # the scorer's window, tokens (0: its n_positions/max_position_embeddings)
    split: str = "chunks"  # longer texts: chunks (MDLM) | sliding (stride context // 2)
    batch_size: int = 8  # sequences sampled, and windows scored, at once

    def __post_init__(self) -> None:
        problems = []
        for name in ("samples", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"--gen-ppl.{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0:
            problems.append(f"--gen-ppl.steps must be >= 0 (0: the run's), got {self.steps}")
        if self.precision not in ("float64", "float32"):
            problems.append(
                f"--gen-ppl.precision must be float64 or float32, got {self.precision!r}"
            )
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            problems.append(f"--gen-ppl.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"--gen-ppl.top_p must lie in (0, 1], got {self.top_p}")
        if self.context == 1 or self.context < 0:
            problems.append(f"--gen-ppl.context must be >= 2 (0: the scorer's), got {self.context}")
        if self.split not in ("chunks", "sliding"):
            problems.append(f"--gen-ppl.split must be chunks or sliding, got {self.split!r}")
        refuse(problems)


@dataclass(frozen=True)
class TextPerplexity:
    """Texts scored by a causal LM."""

    perplexity: float  # exp(mean NLL per scored token)
    nll: float  # mean NLL per scored token, nats
    tokens: int  # scored tokens (the scoring model's tokens)
    model: str
    context: int  # the scorer's window, tokens
    split: str  # chunks | sliding


@dataclass(frozen=True)
class GenPerplexity(TextPerplexity):
    """A run's samples scored, their unigram entropy, and how they were sampled."""

    entropy: float  # mean over samples of their own token ids' unigram entropy, nats
    samples: int
    steps: int  # sampler steps over all levels
    precision: str
    temperature: float
    top_p: float


def sample_entropy(tokens: Int[Tensor, "b l"]) -> float:
    """The entropy (nats) of each sample's empirical distribution of its own token ids (special
    tokens included, as sampled), averaged over the samples. Repetitive text scores low."""
    rows = tokens.cpu().numpy()
    return float(np.mean([unigram_entropy(np.bincount(row)) for row in rows]))


def _load(name: str, device: torch.device):
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise UserError("--gen-ppl-model needs the transformers package") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name).to(device).eval()
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"--gen-ppl-model {name}: cannot load a causal LM and its tokenizer (a hub name "
            f"needs network access; or give a local save_pretrained folder): {first}"
        ) from None
    return tokenizer, model


def _scorer_context(model, name: str, asked: int) -> int:
    config = model.config
    positions = getattr(config, "n_positions", None) or getattr(
        config, "max_position_embeddings", None
    )
    if asked and positions and asked > positions:
        raise UserError(f"--gen-ppl.context {asked}: {name} takes at most {positions} tokens")
    if not (asked or positions):
        raise UserError(f"--gen-ppl-model {name} states no context length: give --gen-ppl.context")
    return asked or positions


def _run_special_ids(tokenizer: TextTokenizer) -> set[int]:
    """The run's BOS and EOS, and every token its tokenizer marks special (a Hugging Face
    tokenizer's PAD, MASK, ...): ids that frame or fill blocks, not text."""
    added = tokenizer.backend.get_added_tokens_decoder()
    return {tokenizer.bos_id, tokenizer.eos_id} | {i for i, t in added.items() if t.special}


def sample_documents(tokenizer: TextTokenizer, tokens: Int[Tensor, "b l"]) -> list[list[str]]:
    """Each sample's documents: the text of each maximal run of its non-special tokens, decoded
    by the run's ``tokenizer``. Decoded with the special tokens, a scorer with another vocabulary
    would read ``<|bos|>`` as text and score its pieces (issue 27); split at them, a sample's
    document boundaries survive as the scorer's own EOS (:func:`generative_perplexity`)."""
    special = _run_special_ids(tokenizer)
    return [
        [
            tokenizer.decode(ids)
            for is_special, ids in itertools.groupby(row, special.__contains__)
            if not is_special
        ]
        for row in tokens.cpu().tolist()
    ]


def _framing(tokenizer, name: str) -> tuple[int, int]:
    """The scorer's ``(bos, eos)`` ids; a tokenizer with one of them uses it for both, as
    GPT-2's ``<|endoftext|>`` is both."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    bos, eos = (eos if bos is None else bos), (bos if eos is None else eos)
    if bos is None:
        raise UserError(f"--gen-ppl-model {name}: its tokenizer has no BOS or EOS token")
    return bos, eos


def _scorer_ids(tokenizer, sample: str | Sequence[str], bos: int, eos: int) -> list[int]:
    """One sample in the scorer's ids: BOS, then its documents (a ``str`` is one) with EOS
    between them, EOS BOS where the two differ (module doc). A document that already starts
    with the BOS, as MDLM's decoded samples do, gets no second one."""
    documents = [sample] if isinstance(sample, str) else sample
    between = [eos] if bos == eos else [eos, bos]
    ids = [bos]
    for document in documents:
        encoded = tokenizer(document, add_special_tokens=False)["input_ids"]
        encoded = encoded[1:] if encoded[:1] == [bos] else encoded
        if encoded:
            ids += (between if len(ids) > 1 else []) + encoded
    return ids


def _windows(n: int, context: int, split: str) -> list[tuple[int, int, int]]:
    """``(start, first, end)`` per window over ``n`` ids: ``ids[start:end]`` is fed and the ids
    at ``first..end-1`` are scored, each given those before it in the window."""
    if split == "chunks":
        return [(s, s + 1, min(s + context, n)) for s in range(0, n, context)]
    stride, scored_to, out = context // 2, 1, []
    for start in range(0, n, stride):
        end = min(start + context, n)
        out.append((start, max(scored_to, start + 1), end))
        scored_to = end
        if end == n:
            break
    return out


@torch.no_grad()
def generative_perplexity(
    samples: Sequence[str | Sequence[str]],
    model_name: str,
    *,
    device: torch.device,
    config: GenPPLConfig = GenPPLConfig(),
) -> TextPerplexity:
    """Score ``samples`` with the causal LM ``model_name``, split as ``config`` says: each a text
    (one document) or a sample's documents (:func:`sample_documents`), framed by the scorer's own
    special tokens, which are context only (module doc)."""
    tokenizer, model = _load(model_name, device)
    context = _scorer_context(model, model_name, config.context)
    bos, eos = _framing(tokenizer, model_name)
    windows = []  # (ids fed, targets: -100 where only context)
    for sample in samples:
        ids = _scorer_ids(tokenizer, sample, bos, eos)
        # Framing is never a target, by id as in MDLM, so a special token held as text is too.
        targets = [-100 if i in (bos, eos) else i for i in ids]
        for start, first, end in _windows(len(ids), context, config.split):
            if first < end:
                windows.append((ids[start:end], [-100] * (first - start - 1) + targets[first:end]))
    total, count = 0.0, 0
    for b in range(0, len(windows), config.batch_size):
        batch = windows[b : b + config.batch_size]
        width = max(len(fed) for fed, _ in batch)
        # Right padding needs no attention mask: a causal LM's real positions never see it.
        fed = torch.tensor([f + [0] * (width - len(f)) for f, _ in batch], device=device)
        targets = torch.tensor([t + [-100] * (width - 1 - len(t)) for _, t in batch], device=device)
        logits = model(fed).logits[:, :-1].float()
        total += float(F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum"))
        count += int((targets != -100).sum())
    if count == 0:
        raise UserError("generative perplexity: the samples decode to no scorable tokens")
    return TextPerplexity(
        math.exp(total / count), total / count, count, model_name, context, config.split
    )


def gen_ppl_of_run(
    run: Run, config: GenPPLConfig, model_name: str, *, length: int, seed: int
) -> GenPerplexity:
    """The whole protocol for a trained run: ``config.samples`` sequences of ``length`` tokens
    from the run's sampler as ``config`` changes it, ``config.batch_size`` at a time (batch ``i``
    seeded ``seed + i``; ``docs/method.md §6``), their documents scored by ``model_name``
    (:func:`sample_documents`), with their unigram entropy."""
    steps = {"steps": config.steps} if config.steps else {}
    sampler = run.sampler(
        precision=config.precision, temperature=config.temperature, top_p=config.top_p, **steps
    )
    documents, tokens = [], []
    for i, start in enumerate(range(0, config.samples, config.batch_size)):
        _, result = sample_texts(
            run.process,
            run.model,
            run.tokenizer,
            count=min(config.batch_size, config.samples - start),
            length=length,
            config=sampler,
            device=run.device,
            seed=seed + i,
        )
        # The tokens, not sample_texts' text: that keeps the run's special tokens (issue 27).
        documents += sample_documents(run.tokenizer, result.tokens)
        tokens.append(result.tokens)
    scored = generative_perplexity(documents, model_name, device=run.device, config=config)
    return GenPerplexity(
        **dataclasses.asdict(scored),
        entropy=sample_entropy(torch.cat(tokens)),
        samples=config.samples,
        steps=sampler.steps,
        precision=sampler.precision,
        temperature=sampler.temperature,
        top_p=sampler.top_p,
    )
