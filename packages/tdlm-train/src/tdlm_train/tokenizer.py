"""Tokenizers: a byte-level BPE trained on the training split, or any Hugging Face tokenizer.

Built on ``tokenizers`` (imported lazily). Every tokenizer here exposes the vocabulary size, the
BOS and EOS ids used to frame packed blocks (MDLM's "wrap" packing), the UTF-8 bytes each token
stands for (bits per byte are counted from them), and a fingerprint (a hash of its serialised
form) that trees, token caches and checkpoints record, so that nothing built for one tokenizer is
silently used with another.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .errors import UserError

__all__ = ["TokenizerConfig", "TextTokenizer", "train_bpe", "load_tokenizer"]

BOS, EOS = "<|bos|>", "<|eos|>"
# Other tokenizers' document framing, first match wins: (BOS, EOS) pairs of the common families
# (ours; Llama 3; Llama 2, Mistral and most SentencePiece models; Gemma; BERT, as MDLM's LM1B),
# then a single end-of-text token serving as both, as GPT-2's (and MDLM on OpenWebText) and Qwen's.
_SPECIAL_PAIRS = (
    (BOS, EOS),
    ("<|begin_of_text|>", "<|end_of_text|>"),
    ("<s>", "</s>"),
    ("<bos>", "<eos>"),
    ("[CLS]", "[SEP]"),
)
_SPECIAL_SINGLES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "[SEP]")


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """``name`` is "bpe" (train one), a ``tokenizer.json`` path, or a Hugging Face name."""

    name: str = "bpe"  # bpe (train one) | path to tokenizer.json | Hugging Face name (e.g. gpt2)
    vocab_size: int = 4096  # vocabulary size of a trained BPE
    min_frequency: int = 2  # a trained BPE merges pairs seen at least this often

    def __post_init__(self) -> None:
        if self.name == "bpe" and not 260 <= self.vocab_size <= 2**20:
            raise UserError(
                f"tokenizer.vocab_size must be in 260..{2**20} for a byte-level BPE, "
                f"got {self.vocab_size}"
            )


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the ids and fingerprint the pipeline needs."""

    def __init__(self, tokenizer: Any) -> None:
        self.backend = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id = self._special_ids(tokenizer)
        serialised = tokenizer.to_str()
        self.fingerprint = hashlib.sha256(serialised.encode()).hexdigest()[:16]

    @staticmethod
    def _special_ids(tokenizer: Any) -> tuple[int, int]:
        for bos_token, eos_token in _SPECIAL_PAIRS:
            bos, eos = tokenizer.token_to_id(bos_token), tokenizer.token_to_id(eos_token)
            if bos is not None and eos is not None:
                return bos, eos
        for token in _SPECIAL_SINGLES:
            tid = tokenizer.token_to_id(token)
            if tid is not None:
                return tid, tid
        known = [f"{b}/{e}" for b, e in _SPECIAL_PAIRS] + list(_SPECIAL_SINGLES)
        raise UserError(
            "the tokenizer has no begin/end-of-text token to frame documents with (looked for "
            f"{', '.join(known)}); add one to its tokenizer.json"
        )

    def token_bytes(self) -> np.ndarray:
        """``[N]`` int64: the UTF-8 bytes of text each token id stands for (special tokens: 0).

        Exact for byte-level tokenizers (our BPE, GPT-2, Llama 3): each character of a
        byte-level token is one byte, so a token stream's sum is the UTF-8 length of the text
        it encodes. For other tokenizers each token is decoded alone, which can differ from its
        share of a decoded text by a byte (e.g. SentencePiece's word-initial space);
        :func:`tdlm_train.data.prepare_data` reports the difference on the validation split.
        """
        from tokenizers import decoders

        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        added = self.backend.get_added_tokens_decoder()
        byte_level = isinstance(self.backend.decoder, decoders.ByteLevel)
        for token, token_id in self.backend.get_vocab(with_added_tokens=True).items():
            if token_id in added:
                special = added[token_id].special
                lengths[token_id] = 0 if special else len(added[token_id].content.encode())
            elif byte_level:
                lengths[token_id] = len(token)
            else:
                lengths[token_id] = len(self.backend.decode([token_id]).encode())
        return lengths

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def save(self, path: Path) -> None:
        """Write ``tokenizer.json`` atomically."""
        atomic_write(path, lambda tmp: self.backend.save(str(tmp)))


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> TextTokenizer:
    """Train a byte-level BPE (GPT-2's pre-tokenisation) with BOS and EOS special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return TextTokenizer(tokenizer)


def load_tokenizer(name: str) -> TextTokenizer:
    """A ``tokenizer.json`` file (or a folder holding one), or a Hugging Face hub name."""
    from tokenizers import Tokenizer

    path = Path(name)
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise UserError(f"tokenizer.name {name!r}: no such tokenizer.json file")
        try:
            return TextTokenizer(Tokenizer.from_file(str(path)))
        except Exception as error:  # tokenizers raises a bare Exception on malformed files
            raise UserError(f"{path}: not a valid tokenizer.json ({error})") from None
    try:
        return TextTokenizer(Tokenizer.from_pretrained(name))
    except Exception as error:
        raise UserError(
            f"cannot load tokenizer {name!r} from the Hugging Face hub ({error}); offline, "
            "pass a local tokenizer.json path as tokenizer.name"
        ) from None
