"""Conditional generation and likelihood from the apps and tdlm-train (issue 12, docs/method.md §8):
clean-context training, prompts and infills, conditional evaluation. The maths (oracle
conditionals, exact conditional NELBO) is proven in tdlm-diffusion's tests/test_conditioning.py.
"""

import json

import numpy as np
import pytest
import torch

from tdlm_train.cli import eval_main, sample_main, train_main
from tdlm_train.config import ConditionConfig
from tdlm_train.context import draw_clean_context, infill_layout, parse_condition, prompt_layout
from tdlm_train.errors import UserError
from tdlm_train.run import Run


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, small_args):
    """A short run trained with clean context on half of its sequences."""
    run = tmp_path_factory.mktemp("clean") / "run"
    assert train_main(small_args(run, max_steps=3, **{"condition.probability": "0.5"})) == 0
    return run


def test_clean_context_draws_are_prefixes_and_suffixes_that_leave_work():
    torch.manual_seed(0)
    x = torch.randint(0, 50, (4000, 40))
    config = ConditionConfig(probability=0.5, max_fraction=0.5, suffix=0.5)
    context = draw_clean_context(x, config)
    known = context.known
    assert context.mode == "clean" and torch.equal(context.tokens, x)
    assert bool((~known).any(dim=1).all())  # every sequence keeps positions to learn
    prefix = known.long().cumprod(dim=1).sum(dim=1)
    suffix = known.flip(1).long().cumprod(dim=1).sum(dim=1)
    assert torch.equal(known.sum(dim=1), prefix + suffix)  # a prefix and a suffix, no holes
    assert int(prefix.max()) <= 0.5 * 39 and int(suffix.max()) <= 0.5 * 39
    conditioned = (prefix + suffix) > 0
    # Share with any context: p(1 - P(prefix = 0 and no suffix)); 4000 draws, sd ~0.008.
    assert abs(conditioned.float().mean().item() - 0.5 * (1 - 1 / 19.5 * 0.5)) < 0.04
    assert draw_clean_context(x, ConditionConfig()) is None  # off: nothing drawn


def test_prompt_and_infill_layouts(clean_run):
    tokenizer = Run.from_checkpoint(clean_run, device=torch.device("cpu")).tokenizer
    layout = prompt_layout(tokenizer, "the cat", 16)
    assert layout.tokens[0] == tokenizer.bos_id and layout.tokens[-1] == tokenizer.eos_id
    assert layout.known[0] and layout.known[-1] and layout.unknown > 0
    filled = infill_layout(tokenizer, "the cat<gap:5> on a mat<gap:3>")
    assert filled.unknown == 8 and filled.known[-1] and filled.tokens[-1] == tokenizer.eos_id
    gaps = np.flatnonzero(~filled.known)
    assert np.array_equal(np.diff(gaps), [1, 1, 1, 1, gaps[5] - gaps[4], 1, 1])
    with pytest.raises(UserError, match="leaves nothing to generate"):
        prompt_layout(tokenizer, "the cat sat on a mat " * 5, 8)
    with pytest.raises(UserError, match="at least one gap"):
        infill_layout(tokenizer, "no gap here")
    for bad in ("prefix:1", "prefix:x", "suffix:0.5"):
        with pytest.raises(UserError, match="prefix:F"):
            parse_condition(bad)


def _samples(capsys) -> list[str]:
    """The decoded samples, without the framing BOS/EOS."""
    out = capsys.readouterr().out
    texts = [block.split("\n", 1)[1].strip() for block in out.split("=== sample ")[1:]]
    return [t.removeprefix("<|bos|>").removesuffix("<|eos|>") for t in texts]


@pytest.mark.parametrize("mode", ["clean", "projection"])
def test_sample_continues_a_prompt_and_fills_gaps(clean_run, capsys, mode):
    base = ["--checkpoint", str(clean_run), "--count", "2", "--steps", "8", "--context", mode]
    assert sample_main([*base, "--prompt", "the cat sat", "--length", "20"]) == 0
    assert all(text.startswith("the cat sat") for text in _samples(capsys))
    assert sample_main([*base, "--infill", "the cat<gap:4> a mat"]) == 0
    assert all(t.startswith("the cat") and t.endswith(" a mat") for t in _samples(capsys))
    assert sample_main([*base, "--prompt", "the dog", "--length", "12", "--show-levels"]) == 0
    out = capsys.readouterr().out
    levels = [line for line in out.splitlines() if line.startswith("--- level")]
    assert levels and "--- level 0:" in levels
    # Coarse to fine, the prompt is there from the first step (the root level) on.
    first = out.split("--- level 2:\n", 1)[1].splitlines()[0]
    assert first.startswith("<|bos|>the dog")


def test_sample_option_errors(clean_run, capsys):
    run = ["--checkpoint", str(clean_run)]
    for argv, message in [
        (["--prompt", "a", "--infill", "b<gap:2>"], "--prompt or --infill, not both"),
        (["--infill", "b<gap:2>", "--length", "9"], "spells out its own length"),
        (["--prompt", "a", "--context", "blurry"], "--context must be projection or clean"),
        (["--infill", "b<gap:0>"], "every <gap:N> needs N >= 1"),
    ]:
        assert sample_main([*run, *argv]) == 2
        assert message in capsys.readouterr().err


def test_conditional_eval_scores_the_rest_given_the_prefix(clean_run, capsys, tmp_path):
    out = tmp_path / "eval.json"
    argv = ["--checkpoint", str(clean_run), "--batches", "2", "--condition", "prefix:0.5"]
    assert eval_main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "given it (clean)" in text and "without the prefix (hidden)" in text
    figures = json.loads(out.read_text())
    blocks, seq_len = 2 * 4, 32
    assert figures["tokens"] == blocks * (seq_len - 16)  # the unknown half only
    assert figures["unconditional"]["tokens"] == figures["tokens"]
    assert figures["condition"] == {"fraction": 0.5, "mode": "clean"}
    assert eval_main([*argv, "--context", "projection"]) == 0
    assert "given it (projection)" in capsys.readouterr().out
    assert eval_main(["--checkpoint", str(clean_run), "--context", "clean"]) == 2
    assert "--context applies to --condition" in capsys.readouterr().err


def test_unconditional_runs_draw_nothing_and_record_the_option(clean_run):
    saved = json.loads((clean_run / "config.json").read_text())
    assert saved["condition"]["probability"] == 0.5


@pytest.mark.parametrize("hide_known", [False, True])
def test_conditional_bits_per_byte_count_the_unknown_tokens_bytes_only(clean_run, hide_known):
    """A quarter of each block known: the bytes are exactly the unknown tokens' (issue 27: a
    figure over every token's bytes would look ~4/3 better), and bits per byte are the NELBO's
    nats over them."""
    import math

    from tdlm_train.context import prefix_context
    from tdlm_train.evaluate import _split_blocks, validate

    run = Run.from_checkpoint(clean_run, device=torch.device("cpu"))
    blocks, token_bytes = _split_blocks(run, run.config, "val")  # as apps/eval reads them
    result = validate(
        run.process, run.model, blocks, batches=2, batch_size=4, samples_per_level=2,
        token_bytes=token_bytes, device=run.device, seed=0,
        context=lambda x, _: prefix_context(x, 0.25, "clean"), hide_known=hide_known,
    )  # fmt: skip
    tokens = blocks.batch(np.arange(8))  # the 8 blocks scored, 32 tokens each
    unknown = tokens[:, 8:]
    assert result.tokens == unknown.size
    assert result.text_bytes == int(token_bytes[unknown].sum())
    assert result.text_bytes < int(token_bytes[tokens].sum())  # the known quarter has bytes
    nats = result.nelbo * result.tokens
    assert result.bits_per_byte == pytest.approx(nats / (math.log(2) * result.text_bytes))
