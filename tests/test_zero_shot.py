"""The zero-shot suite (issue 13, item 1; its detokenisers: tests/test_detokenize.py): each
set's local format, wrap and pad blocks, and ``apps/eval --suite zero-shot`` on local fixtures
that mimic the seven sets; and (issue 27) each set's source, split and field pinned to MDLM's,
PTB's rows stripped as MDLM reads them, wrapped blocks grouped per 1,000 rows as MDLM's
``datasets.map`` batches them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tdlm_train.cli import eval_main, train_main
from tdlm_train.evaluate import padding_context, validate
from tdlm_train.packing import PaddedBlocks
from tdlm_train.run import Run
from tdlm_train.tokenizer import train_bpe
from tdlm_train.zero_shot import (
    MDLM_GROUP_ROWS,
    ZERO_SHOT_SETS,
    load_rows,
    pick_sets,
    set_blocks,
)

FIXTURES = Path(__file__).parent / "fixtures" / "zero_shot"
SETS = {s.name: s for s in ZERO_SHOT_SETS}


# --- each set as MDLM reads it ------------------------------------------------------------------
# Written from MDLM's loader (kuleshov-group/mdlm, dataloader.py, get_dataset and
# get_dataloaders): its dataset name and config, the split get_dataloaders scores ("test" for
# lm1b and ag_news, "validation" otherwise; LAMBADA is OpenAI's test file), the field
# preprocess_and_tokenize reads, and the detokeniser it applies. Where datasets >= 4 needs
# another hub name for the same data, the name we load is beside MDLM's.
MDLM = {  # name: (MDLM's dataset[:config], our hub source, split, field, detokeniser)
    "ptb": ("ptb_text_only", "hf:ptb-text-only/ptb_text_only:penn_treebank", "validation",
            "sentence", "ptb"),
    "wikitext": ("wikitext:wikitext-103-raw-v1", "hf:Salesforce/wikitext:wikitext-103-raw-v1",
                 "validation", "text", "wikitext"),
    "lm1b": ("lm1b", "hf:lm1b", "test", "text", "lm1b"),
    "lambada": ("lambada_test.jsonl", "hf:EleutherAI/lambada_openai:default", "test", "text",
                "lambada"),
    "ag_news": ("ag_news", "hf:fancyzhx/ag_news", "test", "text", None),
    "pubmed": ("scientific_papers:pubmed", "hf:armanc/scientific_papers:pubmed", "validation",
               "article", "scientific_papers"),
    "arxiv": ("scientific_papers:arxiv", "hf:armanc/scientific_papers:arxiv", "validation",
              "article", "scientific_papers"),
}  # fmt: skip


def test_each_set_is_pinned_to_mdlms_source_split_and_field():
    assert [s.name for s in ZERO_SHOT_SETS] == list(MDLM)
    for spec in ZERO_SHOT_SETS:
        _, hub, split, field, detokenizer = MDLM[spec.name]
        assert (spec.hub, spec.split, spec.field, spec.detokenizer) == (
            hub, split, field, detokenizer
        ), spec.name  # fmt: skip
        assert spec.strip == (spec.name == "ptb")  # only PTB's hub loader strips its lines


def test_each_set_loads_the_pinned_split_and_field_from_the_hub(monkeypatch, tmp_path):
    """Through ``datasets.load_dataset`` itself: the name, config and split asked for, and the
    column read, are the pinned ones (a set read from the wrong split or field fails here)."""
    import datasets

    asked = {}

    def load_dataset(name, config=None, *, split, data_files=None):
        asked[name, config] = split
        columns = {"text": ["x"], "sentence": ["x"], "article": ["x"], "abstract": ["y"]}
        return datasets.Dataset.from_dict(columns)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    for spec in ZERO_SHOT_SETS:
        asked.clear()
        _, hub, split, field, _ = MDLM[spec.name]
        name, _, config = hub.removeprefix("hf:").partition(":")
        rows, source = load_rows(spec, tmp_path)  # an empty folder: every set from the hub
        assert asked == {(name, config or None): split}, spec.name
        assert source == f"{hub} {split}" and len(rows) == 1


def test_ptb_rows_are_stripped_then_detokenised_as_mdlm_reads_them(tmp_path):
    """The upstream file's lines start (and end) with a space; the hub loader MDLM reads strips
    them, so a row's first word is tokenized without its leading space, and a last ``N`` has no
    space after it for the detokeniser's `` N `` rule, in MDLM's rows as here."""
    (tmp_path / "ptb.valid.txt").write_text(
        " the company 's N shares did n't rise N \n a $ N stake <unk> \n"
    )
    rows, _ = load_rows(SETS["ptb"], tmp_path)
    assert rows == ["the company's 1 shares didn't rise N", "a $1 stake ?"]


# --- each set's local format ---------------------------------------------------------------------
def _ag_news(folder: Path) -> None:
    """AG News as the hub stores it: parquet with ``text`` and ``label``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"Stocks rise as bank {i} reports quarter profit (Reuters)" for i in range(30)]
    pq.write_table(pa.table({"text": texts, "label": [i % 4 for i in range(30)]}),
                   folder / "ag_news.parquet")  # fmt: skip


@pytest.fixture
def suite_dir(tmp_path):
    folder = tmp_path / "sets"
    shutil.copytree(FIXTURES, folder)
    _ag_news(folder)
    return folder


def test_every_set_reads_its_local_format(suite_dir):
    expected_rows = {"ptb": 40, "lm1b": 60, "lambada": 20, "ag_news": 30, "pubmed": 15,
                     "arxiv": 15}  # fmt: skip
    for spec in ZERO_SHOT_SETS:
        rows, source = load_rows(spec, suite_dir)
        assert Path(source).parent == suite_dir
        if spec.name in expected_rows:
            assert len(rows) == expected_rows[spec.name], spec.name
    wiki, _ = load_rows(SETS["wikitext"], suite_dir)
    # WikiText rows as the hub gives them: a blank line is "", every other keeps its newline.
    raw_lines = (suite_dir / "wiki.valid.raw").read_text().splitlines()
    assert len(wiki) == len(raw_lines)
    assert all(row == "" or row.endswith("\n") for row in wiki) and "" in wiki
    assert not any("@-@" in row or "@,@" in row for row in wiki)
    ptb, _ = load_rows(SETS["ptb"], suite_dir)
    assert not any("<unk>" in row or " N " in row or " n't" in row for row in ptb)
    lambada, _ = load_rows(SETS["lambada"], suite_dir)
    assert all(row.startswith('\n"') for row in lambada)
    pubmed, _ = load_rows(SETS["pubmed"], suite_dir)  # the article, not the abstract
    assert all(row.startswith("we study") and "<S>" not in row for row in pubmed)


def test_bad_local_files_are_one_line_errors(tmp_path):
    from tdlm_train.errors import UserError

    (tmp_path / "lambada.jsonl").write_text('{"passage": "no text field"}\n')
    with pytest.raises(UserError, match="line 1: expected a JSON object with a 'text' field"):
        load_rows(SETS["lambada"], tmp_path)
    (tmp_path / "ag_news.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="not a readable parquet file") as info:
        load_rows(SETS["ag_news"], tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="unknown set"):
        pick_sets("ptb,wikitext2")


# --- blocks --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bytes_tokenizer():
    """A byte-level BPE with no merges: one token per character of ASCII text."""
    return train_bpe(["unused"], vocab_size=258)


def test_wrap_blocks_join_rows_with_eos_and_drop_the_remainder(bytes_tokenizer):
    rows = ["abc", "", "defgh"]  # an empty row still adds its EOS (MDLM's stream)
    blocks = set_blocks(rows, bytes_tokenizer, seq_len=5, layout="wrap")
    stream_length = 3 + 1 + 0 + 1 + 5 + 1
    assert len(blocks) == stream_length // 3
    a, b, c, d = bytes_tokenizer.encode_batch(["abcd"])[0]
    bos, eos = bytes_tokenizer.bos_id, bytes_tokenizer.eos_id
    first, second = blocks.batch(np.array([0, 1]))
    assert list(first) == [bos, a, b, c, eos]  # [BOS] chunk [EOS]
    assert list(second) == [bos, eos, eos, d, eos]  # "abc" EOS | "" EOS | "d"...


def test_wrap_blocks_are_cut_within_each_group_of_rows(bytes_tokenizer):
    """MDLM's ``_group_texts`` runs per ``datasets.map`` batch: each group's rows joined, cut
    into ``L - 2`` = 3 tokens, each group's remainder dropped. Two rows at a time: "abcd" E
    "ef" E keeps "abc", "dEe" and drops "fE"; "g" E "hijkl" E keeps "gEh", "ijk" and drops
    "lE". The whole split at once (0) keeps "fEg" and "Ehi", "jkl" instead."""
    rows = ["abcd", "ef", "g", "hijkl"]
    tokens = dict(
        zip("abcdefghijkl", bytes_tokenizer.encode_batch(["abcdefghijkl"])[0], strict=True)
    )
    bos, eos = bytes_tokenizer.bos_id, bytes_tokenizer.eos_id
    tokens["E"] = eos

    def chunks(blocks) -> list[list[int]]:
        batch = blocks.batch(np.arange(len(blocks)))
        assert (batch[:, 0] == bos).all() and (batch[:, -1] == eos).all()
        return batch[:, 1:-1].tolist()

    def ids(*pieces: str) -> list[list[int]]:
        return [[tokens[c] for c in piece] for piece in pieces]

    grouped = set_blocks(rows, bytes_tokenizer, seq_len=5, layout="wrap", group_rows=2)
    assert chunks(grouped) == ids("abc", "dEe", "gEh", "ijk")
    whole = set_blocks(rows, bytes_tokenizer, seq_len=5, layout="wrap", group_rows=0)
    assert chunks(whole) == ids("abc", "dEe", "fEg", "Ehi", "jkl")


def test_wrap_groups_1000_rows_by_default_as_mdlm(bytes_tokenizer):
    """2,500 one-character rows, 2 tokens each with their EOS, 3 per block: MDLM's batches of
    1,000, 1,000 and 500 rows give 666 + 666 + 333 blocks, the whole split 5,000 // 3 = 1,666."""
    assert MDLM_GROUP_ROWS == 1000
    rows = ["a"] * 2500
    assert len(set_blocks(rows, bytes_tokenizer, seq_len=5, layout="wrap")) == 1665
    assert len(set_blocks(rows, bytes_tokenizer, seq_len=5, layout="wrap", group_rows=0)) == 1666


def test_pad_blocks_frame_each_row_and_mark_only_the_padding(bytes_tokenizer):
    blocks = set_blocks(["ab", "abcdefgh"], bytes_tokenizer, seq_len=6, layout="pad")
    bos, eos = bytes_tokenizer.bos_id, bytes_tokenizer.eos_id
    assert isinstance(blocks, PaddedBlocks) and len(blocks) == 2 and blocks.truncated == 1
    batch = blocks.batch(np.array([0, 1]))
    padding = blocks.padding(np.array([0, 1]))
    assert batch[0, 0] == bos and batch[0, 3] == eos
    assert not padding[0, :4].any() and padding[0, 4:].all()
    assert batch[1, -1] == eos and not padding[1].any()  # cut to 4 tokens, framed, no padding


# --- scoring on a trained run --------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_args):
    folder = tmp_path_factory.mktemp("zs") / "run"
    assert train_main(small_args(folder, max_steps=3)) == 0
    return folder


def test_padding_is_shown_but_never_scored(run_dir):
    run = Run.from_checkpoint(run_dir, device=torch.device("cpu"))
    docs = [np.arange(3, 3 + n) % 200 + 3 for n in (5, 11, 40)]
    blocks = PaddedBlocks(docs, 32, run.tokenizer.bos_id, run.tokenizer.eos_id)
    result = validate(
        run.process, run.model, blocks, batches=1, batch_size=3, samples_per_level=2,
        token_bytes=run.tokenizer.token_bytes(), device=run.device,
        context=padding_context(blocks),
    )  # fmt: skip
    assert result.tokens == (5 + 2) + (11 + 2) + 32  # each row's [BOS] tokens [EOS]; a cut row: L


def test_eval_app_prints_the_suite_table(run_dir, suite_dir, tmp_path, capsys, cache, monkeypatch):
    (suite_dir / "lm1b.txt").unlink()  # LM1B from the hub, which is unreachable here

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'lm1b' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr("datasets.load_dataset", offline)
    out = tmp_path / "suite.json"
    argv = ["--checkpoint", str(run_dir), "--suite", "zero-shot", "--suite-data", str(suite_dir),
            "--batches", "2", "--samples_per_level", "2", "--out", str(out)]  # fmt: skip
    assert eval_main(argv) == 1  # one set failed; every other one was scored
    captured = capsys.readouterr()
    table = captured.out
    for title in ("PTB", "WikiText", "LAMBADA", "AG News", "PubMed", "arXiv"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {title} |"))
        assert "—" not in row, row
    lm1b = next(line for line in table.splitlines() if line.startswith("| LM1B |"))
    assert "cannot load Hugging Face dataset 'hf:lm1b'" in lm1b
    assert "L_0" in table and "L_1" in table  # per-level NELBO for a TDLM
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [next(e for e in errors if e.startswith("error: lm1b:"))]
    figures = json.loads(out.read_text())
    assert figures["layout"] == "wrap" and figures["sets"]["lm1b"]["error"]
    assert figures["group_rows"] == 1000 and "(joined 1,000 rows at a time)" in table
    ptb = figures["sets"]["ptb"]
    assert ptb["blocks"] <= 2 * 4 and ptb["validation"]["tokens"] == ptb["blocks"] * 32
    assert out.with_suffix(".md").read_text().strip() == table.strip()


def test_suite_pad_layout_and_flag_errors(run_dir, suite_dir, capsys):
    argv = ["--checkpoint", str(run_dir), "--suite", "zero-shot", "--suite-data", str(suite_dir),
            "--suite-sets", "lambada,ptb", "--blocks", "pad", "--batches", "1"]  # fmt: skip
    assert eval_main(argv) == 0
    table = capsys.readouterr().out
    assert "pad blocks of 32 tokens" in table and "| LAMBADA |" in table and "| PTB |" in table
    assert "| WikiText |" not in table
    for bad, message in (
        (["--suite", "zero-shot", "--split", "train"], "--split cannot be used"),
        (["--suite", "zero-shot", "--data.source", "x"], "--data.source cannot be used"),
        (["--suite", "few-shot"], "--suite must be zero-shot"),
        (["--blocks", "pad"], "--blocks apply to --suite zero-shot only"),
        (["--group-rows", "0"], "--group-rows apply to --suite zero-shot only"),
        (["--suite", "zero-shot", "--group-rows", "-1"], "--group_rows must be >= 0"),
    ):
        assert eval_main(["--checkpoint", str(run_dir), *bad]) == 2
        assert message in capsys.readouterr().err
