"""Data side: sources, split, tokenizer, token cache, tree cache, packing and resumable order."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdlm_train.corpus import CorpusConfig, load_documents, split_documents
from tdlm_train.data import TreeConfig, prepare_data, prepare_tree
from tdlm_train.errors import UserError
from tdlm_train.packing import BlockOrder, PackedBlocks
from tdlm_train.tokenizer import TokenizerConfig, load_tokenizer

WORDS = "the cat sat on a mat while dogs ran past old trees near quiet rivers".split()


@pytest.fixture
def corpus_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(40):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(50, 200))))
        (folder / f"doc{i:02d}.txt").write_text(text + "\n")
    return folder


def test_stdlib_source_is_real_text_without_tests():
    docs = load_documents(CorpusConfig(max_documents=50))
    assert len(docs) == 50
    assert all(doc_id.startswith("stdlib/") and doc_id.endswith(".py") for doc_id, _ in docs)
    assert not any("/test/" in d or "/tests/" in d for d, _ in load_documents(CorpusConfig()))
    assert docs == sorted(docs)


def test_local_globs_and_jsonl(tmp_path, corpus_dir):
    assert len(load_documents(CorpusConfig(source=str(corpus_dir / "*.txt")))) == 40
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    both = f"{corpus_dir / 'doc0*.txt'},{tmp_path / 'a.jsonl'}"
    assert len(load_documents(CorpusConfig(source=both))) == 12
    (tmp_path / "b.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(UserError, match="line 1: expected a JSON object with a 'text' field"):
        load_documents(CorpusConfig(source=str(tmp_path / "b.jsonl")))


def test_json_arrays_json_lines_and_compressed_files(tmp_path):
    import bz2
    import gzip
    import lzma

    records = [{"text": f"document {i}", "meta": i} for i in range(6)] + [{"text": " "}]
    lines = "\n".join(json.dumps(r) for r in records) + "\n"
    (tmp_path / "array.json").write_text(json.dumps(records))
    (tmp_path / "c4.json.gz").write_bytes(gzip.compress(lines.encode()))  # C4's shard format
    (tmp_path / "lines.jsonl.xz").write_bytes(lzma.compress(lines.encode()))
    (tmp_path / "book.txt.bz2").write_bytes(bz2.compress(b"Chapter 1\n"))
    for name in ("array.json", "c4.json.gz", "lines.jsonl.xz"):
        docs = load_documents(CorpusConfig(source=str(tmp_path / name)))
        assert [text for _, text in docs] == [f"document {i}" for i in range(6)], name
        assert docs[0][0] == f"{name}:0"  # blank records are left out, ids keep their index
    assert load_documents(CorpusConfig(source=str(tmp_path / "book.txt.bz2"))) == [
        ("book.txt.bz2", "Chapter 1\n")
    ]
    (tmp_path / "bad.json").write_text('[{"text": "a"}, ["b"]]')
    with pytest.raises(UserError, match="item 2: expected a JSON object with a 'text' field"):
        load_documents(CorpusConfig(source=str(tmp_path / "bad.json")))
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(UserError, match="cannot read .*broken.txt.gz as UTF-8 text"):
        load_documents(CorpusConfig(source=str(tmp_path / "broken.txt.gz")))


def test_hub_loader_path_works_on_local_files(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "alpha beta"}\n{"text": "gamma"}\n')
    docs = load_documents(CorpusConfig(source="hf:json", data_files=str(tmp_path / "d.jsonl")))
    assert [text for _, text in docs] == ["alpha beta", "gamma"]


def test_hub_dataset_offline_is_one_clear_error():
    code = (
        "from tdlm_train.corpus import CorpusConfig, load_documents\n"
        "from tdlm_train.errors import UserError\n"
        "try:\n    load_documents(CorpusConfig(source='hf:openwebtext'))\n"
        "except UserError as e:\n    print(e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,  # a hang guard, not a verdict (an import and one error: seconds)
        check=True,
    ).stdout
    assert "cannot load Hugging Face dataset 'hf:openwebtext'" in out and "offline" in out


@pytest.mark.parametrize(
    ("source", "message"),
    [("/nonexistent/*.txt", "no such file"), ("EMPTY", "no non-empty documents")],
)
def test_missing_or_empty_corpus(tmp_path, source, message):
    if source == "EMPTY":
        (tmp_path / "e.txt").write_text("   \n")
        source = str(tmp_path / "e.txt")
    with pytest.raises(UserError, match=message):
        load_documents(CorpusConfig(source=source))


def test_unreadable_file(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="cannot read .* as UTF-8"):
        load_documents(CorpusConfig(source=str(tmp_path / "bin.txt")))


def test_split_is_by_document_id_and_stable_under_additions():
    docs = [(f"d{i}", "x") for i in range(2000)]
    train, val = split_documents(docs, 0.1)
    assert not {d for d, _ in train} & {d for d, _ in val}
    assert 150 < len(val) < 250  # binomial(2000, 0.1): mean 200, sd 13.4; bounds are 3.7 sd
    more_train, more_val = split_documents(docs + [(f"e{i}", "x") for i in range(500)], 0.1)
    assert set(val) <= set(more_val) and set(train) <= set(more_train)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="ab \u00e9\u732b", max_size=30), min_size=1, max_size=60),
    val_fraction=st.floats(0.01, 0.99),
)
def test_one_document_is_split_into_a_head_and_its_tail(lines, val_fraction):
    text = "\n".join(lines)
    valid = [c for c in range(len(text) + 1) if text[:c].strip() and text[c:].strip()]
    if not valid:
        with pytest.raises(UserError, match="too short"):
            split_documents([("book.txt", text)], val_fraction)
        return
    (train,), (val,) = split_documents([("book.txt", text)], val_fraction)
    assert (train[0], val[0]) == ("book.txt#train", "book.txt#val")
    assert train[1] + val[1] == text and train[1].strip() and val[1].strip()
    cut, target = len(train[1]), round(len(text) * (1 - val_fraction))
    slack = (len(text) - target) // 2
    window = [c for c in valid if abs(c - target) <= slack]
    if window:  # the tail is val_fraction of the text, give or take half of it
        assert cut in window
    else:  # too short for that: the valid cut nearest the target
        assert cut == min(valid, key=lambda c: abs(c - target))
    if not train[1].endswith("\n"):  # mid-line only when no line break in the window
        assert not any(text[c - 1] == "\n" for c in window)


def test_one_big_file_trains_with_its_tail_as_validation(tmp_path):
    rng = np.random.default_rng(1)
    lines = [" ".join(rng.choice(WORDS, size=12)) for _ in range(400)]
    (tmp_path / "input.txt").write_text("\n".join(lines) + "\n")
    corpus = CorpusConfig(source=str(tmp_path / "input.txt"), val_fraction=0.1)
    data = prepare_data(corpus, TokenizerConfig(vocab_size=300), tmp_path / "cache")
    *val_ids, eos = np.asarray(data.val_tokens).tolist()
    val_text = data.tokenizer.decode(val_ids)
    assert eos == data.tokenizer.eos_id
    whole_lines = val_text.count("\n")
    assert val_text == "\n".join(lines[-whole_lines:]) + "\n"  # the file's last lines, whole
    assert abs(len(val_text) / len((tmp_path / "input.txt").read_text()) - 0.1) < 0.005
    assert len(data.train_tokens) > 8 * len(data.val_tokens)


def test_prepare_data_caches_and_reuses(tmp_path, corpus_dir):
    corpus = CorpusConfig(source=str(corpus_dir / "*.txt"), val_fraction=0.2)
    tok = TokenizerConfig(vocab_size=300)
    first = prepare_data(corpus, tok, tmp_path / "cache")
    assert first.tokenizer.vocab_size == 300
    stream = np.asarray(first.train_tokens)
    eos = first.tokenizer.eos_id
    train_docs, val_docs = split_documents(load_documents(corpus), 0.2)
    assert (stream == eos).sum() == len(train_docs)  # each document followed by one EOS
    decoded = first.tokenizer.decode(stream[: np.flatnonzero(stream == eos)[0]].tolist())
    assert decoded == train_docs[0][1]  # byte-level BPE round-trips the text exactly
    # Each split's tokens stand for exactly its text's bytes (what bits per byte divide by).
    for stream, docs in ((first.train_tokens, train_docs), (first.val_tokens, val_docs)):
        assert first.token_bytes[np.asarray(stream)].sum() == sum(len(t.encode()) for _, t in docs)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    second = prepare_data(corpus, tok, tmp_path / "cache")
    assert second.tokenizer.fingerprint == first.tokenizer.fingerprint
    np.testing.assert_array_equal(second.train_tokens, first.train_tokens)
    assert mtimes == {
        p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()
    }
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_a_bpe_larger_than_the_corpus_supports_is_reported(tmp_path, corpus_dir, caplog):
    corpus = CorpusConfig(source=str(corpus_dir / "*.txt"))
    with caplog.at_level("WARNING", logger="tdlm_train.data"):
        data = prepare_data(corpus, TokenizerConfig(vocab_size=100_000), tmp_path)
    assert 258 < data.tokenizer.vocab_size < 1000  # 15 words: a few hundred merges at most
    assert f"supports only a {data.tokenizer.vocab_size}-token BPE (asked for 100000" in caplog.text


def test_damaged_token_cache_is_rebuilt(tmp_path, corpus_dir):
    corpus = CorpusConfig(source=str(corpus_dir / "*.txt"))
    tok = TokenizerConfig(vocab_size=300)
    first = prepare_data(corpus, tok, tmp_path)
    (bin_path,) = [p for p in tmp_path.rglob("train.bin")]
    reference = np.asarray(first.train_tokens).copy()
    del first
    with open(bin_path, "r+b") as f:
        f.truncate(10)
    again = prepare_data(corpus, tok, tmp_path)
    np.testing.assert_array_equal(again.train_tokens, reference)


def test_tree_is_cached_and_matches_the_tokenizer(tmp_path, corpus_dir):
    data = prepare_data(
        CorpusConfig(source=str(corpus_dir / "*.txt")), TokenizerConfig(vocab_size=300), tmp_path
    )
    tree = prepare_tree(TreeConfig(branching=8), data)
    assert tree.vocab_size == 300 and tree.tokenizer_fingerprint == data.tokenizer.fingerprint
    assert prepare_tree(TreeConfig(branching=8), data) == tree
    assert prepare_tree(TreeConfig(), data, flat=True).is_flat
    from tdlm_tree import random_tree, save_tree

    save_tree(random_tree(299, 8), tmp_path / "wrong.npz")
    with pytest.raises(UserError, match="299 leaves but the vocabulary has 300"):
        prepare_tree(TreeConfig(path=str(tmp_path / "wrong.npz")), data)


def test_tokenizer_files(tmp_path):
    with pytest.raises(UserError, match="no such tokenizer.json"):
        load_tokenizer(str(tmp_path / "tokenizer.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        load_tokenizer(str(tmp_path / "bad.json"))
    with pytest.raises(UserError, match="vocab_size"):
        TokenizerConfig(vocab_size=10)


@pytest.mark.parametrize(
    ("specials", "framing"),
    [
        (["<|begin_of_text|>", "<|end_of_text|>"], ("<|begin_of_text|>", "<|end_of_text|>")),
        (["<unk>", "<s>", "</s>"], ("<s>", "</s>")),  # Llama 2, Mistral
        (["<pad>", "<eos>", "<bos>"], ("<bos>", "<eos>")),  # Gemma
        (["[PAD]", "[CLS]", "[SEP]", "[MASK]"], ("[CLS]", "[SEP]")),  # BERT (MDLM's LM1B)
        (["<|endoftext|>", "<|im_end|>"], ("<|endoftext|>", "<|endoftext|>")),  # GPT-2, Qwen
    ],
)
def test_external_tokenizers_frame_documents_with_their_own_tokens(tmp_path, specials, framing):
    from tokenizers import Tokenizer, models

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    backend.add_special_tokens(specials)
    backend.save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert (tokenizer.bos_id, tokenizer.eos_id) == tuple(map(backend.token_to_id, framing))
    bare = Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    bare.save(str(tmp_path / "bare.json"))
    with pytest.raises(UserError, match="no begin/end-of-text token .*<s>/</s>"):
        load_tokenizer(str(tmp_path / "bare.json"))


def test_packing_frames_blocks_like_mdlm():
    stream = np.arange(100) + 10
    blocks = PackedBlocks(stream, seq_len=12, bos_id=1, eos_id=2)
    assert len(blocks) == 10
    batch = blocks.batch(np.array([0, 3]))
    np.testing.assert_array_equal(batch[:, 0], 1)
    np.testing.assert_array_equal(batch[:, -1], 2)
    np.testing.assert_array_equal(batch[1, 1:-1], stream[30:40])


def test_block_order_is_a_permutation_per_epoch_and_resumes_exactly():
    order = BlockOrder(num_blocks=50, batch_size=4, seed=7)
    seen = np.concatenate([order.next_indices() for _ in range(order.steps_per_epoch)])
    assert len(set(seen.tolist())) == 48  # 12 steps x 4 blocks, no repeats within an epoch
    full = BlockOrder(num_blocks=50, batch_size=4, seed=7)
    reference = [full.next_indices() for _ in range(30)]
    head = BlockOrder(num_blocks=50, batch_size=4, seed=7)
    for _ in range(17):
        head.next_indices()
    resumed = BlockOrder(num_blocks=50, batch_size=4, seed=7)
    resumed.load_state_dict(json.loads(json.dumps(head.state_dict())))
    for expected in reference[17:]:
        np.testing.assert_array_equal(resumed.next_indices(), expected)


def test_block_order_splits_ranks_disjointly():
    ranks = [
        BlockOrder(num_blocks=64, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)
    ]
    for _ in range(5):
        a, b = (r.next_indices() for r in ranks)
        assert len(a) == len(b) == 4 and not set(a.tolist()) & set(b.tolist())
    with pytest.raises(UserError, match="fewer than one global batch"):
        BlockOrder(num_blocks=3, batch_size=4)
