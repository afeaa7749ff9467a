"""The OpenWebText recipe offline (issue 13, item 4): the ``owt-small`` preset's data path on a
local OpenWebText-format fixture through ``datasets``' JSON and text loaders, with a GPT-2-format
``tokenizer.json`` (one special token, ``<|endoftext|>``, last in the vocabulary, serving as BOS
and EOS as in MDLM). Only the model is shrunk, so the run takes seconds on the CPU."""

import json

import pytest

from tdlm_train.cli import eval_main, train_main
from tdlm_train.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def owt(tmp_path_factory, corpus):
    """``owt.jsonl`` as the hub's OpenWebText rows (``{"text": document}``), the same documents
    as ``owt.txt`` lines, and a GPT-2-format tokenizer trained on them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder = tmp_path_factory.mktemp("owt")
    documents = [path.read_text().strip() for path in sorted(corpus.glob("*.txt"))]
    with open(folder / "owt.jsonl", "w") as f:
        for document in documents:
            f.write(json.dumps({"text": document}) + "\n")
    (folder / "owt.txt").write_text("\n".join(documents) + "\n")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    tokenizer.add_special_tokens(["<|endoftext|>"])  # GPT-2: id 50256, the last one
    (folder / "gpt2").mkdir()
    tokenizer.save(str(folder / "gpt2" / "tokenizer.json"))
    return folder


def _owt_small(run_dir, cache, *data: str) -> list[str]:
    """``--preset owt-small`` with its data and tokenizer kept, the model and budget shrunk."""
    return [
        "--preset", "owt-small", *data, "--run_dir", str(run_dir), "--cache_dir", str(cache),
        "--data.val_fraction", "0.1", "--model.n_blocks", "1", "--model.preset", "tiny",
        "--seq_len", "64", "--batch_size", "2", "--max_steps", "2", "--eval_every", "2",
        "--eval_batches", "2", "--checkpoint_every", "2", "--optim.warmup_steps", "1",
        "--optim.ema_decay", "0", "--device", "cpu",
    ]  # fmt: skip


def test_gpt2_format_tokenizer_frames_blocks_with_endoftext(owt):
    tokenizer = load_tokenizer(str(owt / "gpt2" / "tokenizer.json"))
    endoftext = tokenizer.backend.token_to_id("<|endoftext|>")
    assert tokenizer.bos_id == tokenizer.eos_id == endoftext == tokenizer.vocab_size - 1


@pytest.mark.parametrize(("loader", "file"), [("hf:json", "owt.jsonl"), ("hf:text", "owt.txt")])
def test_owt_small_data_path_trains_and_evaluates_offline(owt, tmp_path, cache, loader, file):
    data = ["--data.source", loader, "--data.data_files", str(owt / file),
            "--tokenizer.name", str(owt / "gpt2" / "tokenizer.json")]  # fmt: skip
    run_dir = tmp_path / "run"
    assert train_main(_owt_small(run_dir, cache, *data)) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["source"] == loader and config["seq_len"] == 64
    assert config["data"]["hf_split"] == "train" and config["optim"]["lr"] == 3e-4  # the preset's
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(m["kind"] == "val" and m["nelbo"] > 0 for m in metrics)
    eval_argv = ["--checkpoint", str(run_dir), "--batches", "1", *data[:4], "--cache_dir",
                 str(cache), "--data.val_fraction", "0.1"]  # fmt: skip
    assert eval_main(eval_argv) == 0
