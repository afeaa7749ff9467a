"""Generative perplexity: generated text scored by a pretrained causal language model (issue 6).

The field's sample-quality number (MDLM, SEDD: GPT-2 large): decode the samples to text,
retokenize them with the scoring model's own tokenizer, and report
``exp(mean token NLL)`` of the text under that model. Any causal LM that ``transformers`` can
load works (a hub name such as ``gpt2-large`` — online only — or a local folder written by
``save_pretrained``). ``transformers`` is imported only here, when asked for.

Each text is scored on its own, prefixed with the tokenizer's BOS token when it has one (GPT-2:
``<|endoftext|>``), in windows of the model's context length.
"""

import math
from dataclasses import dataclass

import torch

from .errors import UserError

__all__ = ["GenPerplexity", "generative_perplexity"]


@dataclass(frozen=True)
class GenPerplexity:
    perplexity: float  # exp(mean NLL per scored token)
    nll: float  # mean NLL per scored token, nats
    tokens: int  # scored tokens (the scoring model's tokens)
    model: str


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


@torch.no_grad()
def generative_perplexity(
    texts: list[str], model_name: str, *, device: torch.device
) -> GenPerplexity:
    """Score ``texts`` with the causal LM ``model_name`` (see the module doc)."""
    tokenizer, model = _load(model_name, device)
    context = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", 1024
    )
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id, *ids]
        for start in range(0, max(len(ids) - 1, 0), context - 1):
            window = torch.tensor([ids[start : start + context]], device=device)
            if window.shape[1] < 2:
                break
            logits = model(window).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
            total += float(nll)
            count += window.shape[1] - 1
    if count == 0:
        raise UserError("generative perplexity: the samples decode to no scorable tokens")
    return GenPerplexity(math.exp(total / count), total / count, count, model_name)
