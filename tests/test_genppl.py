"""Generative perplexity (issue 6, item 6) with a tiny causal LM the test builds and saves."""

import math

import pytest
import torch

from tdlm_train.cli import eval_main, train_main
from tdlm_train.errors import UserError
from tdlm_train.genppl import generative_perplexity
from tdlm_train.tokenizer import BOS, EOS

TEXTS = ["the cat sat on a mat.", "dogs ran past old trees near quiet rivers and birds sang"]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory, corpus, cache):
    """A 2-layer GPT-2 with the tokenizer of a trained run, saved by save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("scorer")
    run = folder / "run"
    options = {
        "run_dir": run,
        "cache_dir": cache,
        "data.source": corpus / "*.txt",
        "data.val_fraction": "0.1",
        "tokenizer.vocab_size": "300",
        "tree.branching": "8",
        "model.n_blocks": "1",
        "batch_size": "4",
        "seq_len": "32",
        "max_steps": "2",
        "minutes": "0",
        "eval_every": "2",
        "checkpoint_every": "2",
        "diffusion.sampler.steps": "8",
        "device": "cpu",
    }
    assert train_main([x for k, v in options.items() for x in (f"--{k}", str(v))]) == 0
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(run / "tokenizer.json"), bos_token=BOS, eos_token=EOS
    )
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model_dir = folder / "gpt"
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return run, model_dir, tokenizer


def test_scores_retokenized_text(scorer):
    _, model_dir, tokenizer = scorer
    result = generative_perplexity(TEXTS, str(model_dir), device=torch.device("cpu"))
    # Every token of every text is predicted once (after the prepended BOS).
    assert result.tokens == sum(
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS
    )
    assert result.perplexity == pytest.approx(math.exp(result.nll))
    # An untrained model is near uniform over its vocabulary.
    assert 0.5 * len(tokenizer) < result.perplexity < 2 * len(tokenizer)


def test_long_text_is_scored_in_windows(scorer):
    _, model_dir, tokenizer = scorer
    long = " ".join(TEXTS * 20)
    result = generative_perplexity([long], str(model_dir), device=torch.device("cpu"))
    assert result.tokens == len(tokenizer(long, add_special_tokens=False)["input_ids"]) > 64


def test_unloadable_model_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="--gen-ppl-model") as info:
        generative_perplexity(TEXTS, str(tmp_path / "missing"), device=torch.device("cpu"))
    assert "\n" not in str(info.value)


def test_eval_app_reports_gen_ppl(scorer, capsys, tmp_path):
    run, model_dir, _ = scorer
    out = tmp_path / "eval.json"
    argv = ["--checkpoint", str(run), "--batches", "1", "--gen-ppl-model", str(model_dir)]
    assert eval_main([*argv, "--out", str(out)]) == 0
    assert "gen PPL" in capsys.readouterr().out
    assert '"gen_ppl"' in out.read_text()
