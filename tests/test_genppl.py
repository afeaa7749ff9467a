"""Generative perplexity (issue 6, item 6; issue 13, item 2) with a tiny causal LM the test
builds and saves: how texts are split and scored, the samples' unigram entropy, the settings'
errors, and apps/eval's report; and (issue 27) that a scorer whose tokenizer is not the run's
scores the samples' text, framed by its own special tokens, never the run's as text."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tdlm_diffusion.sampler import SampleResult
from tdlm_train import genppl
from tdlm_train.cli import eval_main, train_main
from tdlm_train.errors import UserError
from tdlm_train.genppl import (
    GenPPLConfig,
    gen_ppl_of_run,
    generative_perplexity,
    sample_documents,
    sample_entropy,
)
from tdlm_train.run import Run
from tdlm_train.tokenizer import BOS, EOS, load_tokenizer

CPU = torch.device("cpu")

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


def test_a_text_starting_with_the_bos_gets_no_second_one(scorer):
    _, model_dir, tokenizer = scorer
    plain = generative_perplexity(TEXTS[:1], str(model_dir), device=CPU)
    framed = generative_perplexity([BOS + TEXTS[0]], str(model_dir), device=CPU)
    assert (framed.tokens, framed.nll) == (plain.tokens, pytest.approx(plain.nll, rel=1e-6))


def _reference_nll(model_dir, ids: list[int], windows) -> tuple[float, int]:
    """Summed NLL and count over ``(start, end, first)`` windows, each scored on its own."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start, end, first in windows:
            logits = model(torch.tensor([ids[start:end]])).logits[0, first - start - 1 : -1]
            total += float(F.cross_entropy(logits, torch.tensor(ids[first:end]), reduction="sum"))
            count += end - first
    return total, count


def test_chunks_and_sliding_score_exactly_what_their_rules_say(scorer):
    """n = 1 + N ids (BOS, then the text's N tokens), window C = 16. chunks (MDLM): ids cut into
    ceil(n / C) chunks, each scored on its own, its first id context only: n - ceil(n / C)
    scored, every text token of the first chunk and all but the first of each later one.
    sliding (HF's guide, stride C/2): every text token scored once, with at least C/2 before it
    once past the first window. Each figure is also recomputed window by window."""
    _, model_dir, tokenizer = scorer
    long = " ".join(TEXTS * 6)
    ids = [tokenizer.bos_token_id, *tokenizer(long, add_special_tokens=False)["input_ids"]]
    n, c = len(ids), 16
    assert n > 4 * c and n % c != 1  # several windows, and a last chunk with a scored token

    chunks = generative_perplexity(
        [long], str(model_dir), device=CPU, config=GenPPLConfig(context=c, batch_size=3)
    )
    assert (chunks.tokens, chunks.context, chunks.split) == (n - math.ceil(n / c), c, "chunks")
    windows = [(s, min(s + c, n), s + 1) for s in range(0, n, c)]
    total, count = _reference_nll(model_dir, ids, windows)
    assert count == chunks.tokens and chunks.nll == pytest.approx(total / count, rel=1e-5)

    config = GenPPLConfig(context=c, split="sliding", batch_size=3)
    sliding = generative_perplexity([long], str(model_dir), device=CPU, config=config)
    assert sliding.tokens == n - 1
    windows = [(0, c, 1)] + [
        (s, min(s + c, n), s + c // 2) for s in range(c // 2, n - c // 2, c // 2)
    ]
    assert windows[-1][1] == n and all(first - start >= c // 2 for start, _, first in windows[1:])
    total, count = _reference_nll(model_dir, ids, windows)
    assert count == n - 1 and sliding.nll == pytest.approx(total / count, rel=1e-5)


def test_context_is_the_scorers_unless_given_and_at_most_it(scorer):
    _, model_dir, _ = scorer
    assert generative_perplexity(TEXTS, str(model_dir), device=CPU).context == 64
    with pytest.raises(UserError, match="--gen-ppl.context 65: .* at most 64") as info:
        generative_perplexity(TEXTS, str(model_dir), device=CPU, config=GenPPLConfig(context=65))
    assert "\n" not in str(info.value)


def test_entropy_is_each_samples_unigram_entropy_averaged():
    tokens = torch.tensor([[5, 5, 7, 7], [3, 3, 3, 3], [0, 1, 2, 3]])
    # ln 2 (two ids, equally often), 0 (one id), ln 4 (four ids): mean ln 2.
    assert sample_entropy(tokens) == pytest.approx((math.log(2) + 0 + math.log(4)) / 3)


def test_bad_settings_are_one_line_each_naming_the_flag():
    with pytest.raises(UserError) as info:
        GenPPLConfig(samples=0, precision="float16", top_p=0.0, context=1, split="window")
    lines = str(info.value).splitlines()
    assert len(lines) == 5 and all(line.startswith("--gen-ppl.") for line in lines)
    for flag in ("samples", "precision", "top_p", "context", "split"):
        assert sum(f"--gen-ppl.{flag} " in line for line in lines) == 1


def test_gen_ppl_settings_need_the_model(scorer, capsys):
    run, _, _ = scorer
    assert eval_main(["--checkpoint", str(run), "--gen-ppl.samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gen-ppl-model" in err


def test_unloadable_model_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="--gen-ppl-model") as info:
        generative_perplexity(TEXTS, str(tmp_path / "missing"), device=torch.device("cpu"))
    assert "\n" not in str(info.value)


def test_eval_app_reports_gen_ppl_with_entropy_and_settings(scorer, capsys, tmp_path):
    run, model_dir, _ = scorer
    out = tmp_path / "eval.json"
    argv = ["--checkpoint", str(run), "--batches", "1", "--gen-ppl-model", str(model_dir)]
    settings = ["--gen-ppl.samples", "3", "--gen-ppl.batch-size", "2"]
    settings += ["--gen-ppl.precision", "float32", "--gen-ppl.split", "sliding"]
    assert eval_main([*argv, *settings, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gen PPL" in printed and "unigram entropy" in printed and "float32" in printed
    figures = json.loads(out.read_text())["gen_ppl"]
    assert figures["samples"] == 3 and figures["precision"] == "float32"
    assert (figures["split"], figures["context"], figures["steps"]) == ("sliding", 64, 8)
    # 32-token samples over a 300-token vocabulary: between one distinct id and 32.
    assert 0 < figures["entropy"] <= math.log(32)
    assert figures["perplexity"] == pytest.approx(math.exp(figures["nll"]))


def test_eval_app_names_a_bad_setting(scorer, capsys):
    run, model_dir, _ = scorer
    argv = ["--checkpoint", str(run), "--batches", "1", "--gen-ppl-model", str(model_dir)]
    assert eval_main([*argv, "--gen-ppl.samples", "many", "--gen-ppl.split", "halves"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --gen-ppl.samples expects int, got 'many'",
        "error: --gen-ppl.split must be chunks or sliding, got 'halves'",
    ]


# --- a scorer whose tokenizer is not the run's (issue 27) -------------------------------------
@pytest.fixture(
    scope="module", params=[("<|endoftext|>",) * 2, ("<s>", "</s>")], ids=["gpt2", "pair"]
)
def foreign(request, tmp_path_factory, corpus):
    """A 2-layer GPT-2 over a word-level vocabulary of the corpus (any other word ``[UNK]``),
    with either one framing token (GPT-2's ``<|endoftext|>`` is its BOS and EOS) or two. It
    has never seen ``<|bos|>``: read as text, ``<|bos|><|eos|>`` is five words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bos, eos = request.param
    split = pre_tokenizers.Whitespace()
    words = sorted(
        {w for f in sorted(corpus.glob("*.txt")) for w, _ in split.pre_tokenize_str(f.read_text())}
    )
    specials = ["[UNK]", *dict.fromkeys([bos, eos])]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + words)}, "[UNK]"))
    backend.pre_tokenizer = split
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token="[UNK]"
    )
    assert [w for w, _ in split.pre_tokenize_str(BOS + EOS)] == ["<|", "bos", "|><|", "eos", "|>"]
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("foreign")
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


def _words(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _nll_of(model_dir, ids: list[int], scored: list[bool]) -> tuple[float, int]:
    """Summed NLL over the targets ``ids[i]`` with ``scored[i]``, one forward pass."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    keep = torch.tensor(scored[1:])
    return float(nll[keep].sum()), int(keep.sum())


def test_documents_are_the_text_between_the_runs_special_tokens(scorer):
    """A sample ``<|bos|> A <|eos|> <|bos|> B`` is the documents ``[A, B]``, specials dropped
    wherever they are (leading, repeated, trailing); a sample of specials only has none."""
    run, _, _ = scorer
    tokenizer = load_tokenizer(str(run / "tokenizer.json"))
    a, b = tokenizer.encode_batch(TEXTS)
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    rows = [
        [bos, *a, eos, bos, *b],
        [*a, eos, eos, *b, eos],
        [bos, eos, bos, eos, bos, eos, bos, eos] + [bos] * (len(a) + len(b) - 1),
    ]
    width = max(map(len, rows))
    rows = [row + [eos] * (width - len(row)) for row in rows]
    documents = sample_documents(tokenizer, torch.tensor(rows))
    assert documents == [TEXTS, TEXTS, []]


def test_a_foreign_scorer_scores_the_words_framed_by_its_own_tokens(foreign):
    """Documents ``[A, B]`` are fed as ``BOS A EOS B`` (``EOS BOS`` between them where the two
    differ); exactly the words of A and B are targets, each given all before it."""
    folder, tokenizer = foreign
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    a, b = (_words(tokenizer, t) for t in TEXTS)
    assert len(a) == 7  # the cat sat on a mat .
    between = [eos] if bos == eos else [eos, bos]
    ids = [bos, *a, *between, *b]
    scored = [i not in (bos, eos) for i in ids]
    total, count = _nll_of(folder, ids, scored)
    result = generative_perplexity([TEXTS], str(folder), device=CPU)
    assert result.tokens == count == len(a) + len(b)
    assert result.nll == pytest.approx(total / count, rel=1e-5)
    # One document, one text: the same framing as a str.
    single = generative_perplexity(TEXTS[:1], str(folder), device=CPU)
    assert single.tokens == len(a)
    # The old way, the run's special tokens decoded as text: their pieces are scored too.
    text = f"{BOS}{TEXTS[0]}{EOS}"  # <| bos |> the cat sat on a mat .<| eos |>
    literal = generative_perplexity([text], str(folder), device=CPU)
    assert literal.tokens == len(_words(tokenizer, text)) == len(a) + 5


def test_gen_ppl_of_run_scores_the_documents_of_the_sampled_tokens(scorer, foreign, monkeypatch):
    """The sampler's tokens hold the run's specials (planted here, an untrained model rarely
    draws them): what is scored is the words between them, never ``<|bos|>`` as text."""
    run_dir, _, _ = scorer
    folder, tokenizer = foreign
    run = Run.from_checkpoint(run_dir, device=CPU)
    a, b = run.tokenizer.encode_batch(TEXTS)
    bos, eos = run.tokenizer.bos_id, run.tokenizer.eos_id
    row = [bos, *a, eos, bos, *b, eos]
    tokens = torch.tensor([row, row[::-1]])

    def sampled(*args, count, **kwargs):
        assert count == 2
        texts = [run.tokenizer.decode(r) for r in tokens.tolist()]  # specials kept, as before
        return texts, SampleResult(tokens, 1, (1,), None)

    monkeypatch.setattr(genppl, "sample_texts", sampled)
    config = GenPPLConfig(samples=2, batch_size=2)
    result = gen_ppl_of_run(run, config, str(folder), length=len(row), seed=0)
    reversed_documents = sample_documents(run.tokenizer, tokens[1:])[0]
    words = len(_words(tokenizer, TEXTS[0])) + len(_words(tokenizer, TEXTS[1]))
    words += sum(len(_words(tokenizer, d)) for d in reversed_documents)
    assert result.tokens == words
