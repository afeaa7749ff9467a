"""Bits per byte (issue 9, item 4): the NELBO of the scored blocks in bits over the UTF-8 bytes of
the text in those same blocks; framing BOS/EOS count 0 bytes; each split uses its own bytes."""

import functools
import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tdlm_diffusion import TreeProcess
from tdlm_train.data import _check_token_bytes
from tdlm_train.evaluate import validate
from tdlm_train.packing import PackedBlocks
from tdlm_train.tokenizer import TextTokenizer, train_bpe
from tdlm_tree import flat_tree

TEXT = "héllo wörld"  # h é(2) l l o = 6 bytes, a space, w ö(2) r l d = 6 bytes: 13 bytes


@functools.cache
def _tokenizer() -> TextTokenizer:
    return train_bpe([TEXT, "naïve café — 日本語 ünïcode text", "plain ascii words"] * 20, 300)


@pytest.fixture
def tokenizer() -> TextTokenizer:
    return _tokenizer()


@given(st.text(max_size=60))
def test_token_bytes_add_up_to_the_utf8_length_of_any_text(text):
    """Byte-level BPE: any text's tokens stand for exactly its UTF-8 bytes (unseen characters
    included: they fall back to single bytes)."""
    ids = _tokenizer().encode_batch([text])[0]
    assert int(_tokenizer().token_bytes()[ids].sum()) == len(text.encode("utf-8"))


def test_framing_tokens_stand_for_no_bytes(tokenizer):
    lengths = tokenizer.token_bytes()
    assert lengths[tokenizer.bos_id] == lengths[tokenizer.eos_id] == 0
    assert lengths.shape == (tokenizer.vocab_size,) and (lengths[2:] >= 1).all()


def test_bits_per_byte_by_hand(tokenizer):
    """Blocks that each hold one copy of TEXT (13 bytes) plus its EOS, framed by BOS/EOS; a
    uniform model on the flat tree pays exactly log N at every masked position, and the count
    form of the NELBO has no variance left: every block's NELBO is L log N. So
    BPB = L log N / (13 ln 2) exactly, where dividing by the block's L tokens (framing
    included) with the stream's bytes per token would understate it by (L - 2) / L."""
    ids = tokenizer.encode_batch([TEXT])[0]
    doc = np.asarray(ids + [tokenizer.eos_id], dtype=np.int64)
    length = len(doc) + 2  # BOS, the document and its EOS, the block's EOS
    blocks = PackedBlocks(np.tile(doc, 6), length, tokenizer.bos_id, tokenizer.eos_id)
    assert len(blocks) == 6
    n = tokenizer.vocab_size
    process = TreeProcess(flat_tree(n))

    class Uniform(torch.nn.Module):
        def forward(self, nodes, level):
            return torch.zeros(*nodes.shape, n)

    result = validate(process, Uniform(), blocks, batches=2, batch_size=3, samples_per_level=2,
                      token_bytes=tokenizer.token_bytes(), device=torch.device("cpu"))
    assert result.text_bytes == 6 * 13
    assert result.tokens == 6 * length
    assert result.nelbo == pytest.approx(math.log(n), rel=1e-6)
    assert result.bits_per_byte == pytest.approx(length * math.log(n) / (13 * math.log(2)),
                                                 rel=1e-6)


def test_a_normalising_tokenizer_is_reported(tokenizer, caplog):
    """When token bytes do not add up to the text's bytes, the difference is logged."""
    ids = tokenizer.encode_batch([TEXT])[0] + [tokenizer.eos_id]
    with caplog.at_level(logging.WARNING):
        _check_token_bytes(tokenizer.token_bytes(), np.asarray(ids), 13)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        _check_token_bytes(tokenizer.token_bytes(), np.asarray(ids), 14)
    assert "stand for 13 bytes, its text has 14" in caplog.text
