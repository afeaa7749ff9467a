"""apps/bench sampling: the analytic count's terms, its TDLM / MDLM trend in N, and a tiny
measured run end to end (fresh worker processes, parts against the whole run). About a minute."""

import json
from itertools import pairwise

import pytest
from tdlm_bench import sampling
from tdlm_bench.cli import bench_main
from tdlm_bench.contenders import SCALES, Scale
from tdlm_bench.sampling import SamplingOptions, analytic_sampling, run_sampling, sampling_scale

PAPER = SCALES["paper"]
# Logit-heavy at the tiny preset: MDLM's 16,384-wide logits (33 MB per copy at 2 x 256
# positions) are most of its peak, TDLM's 64-wide ones nothing.
TINY = Scale(name="paper", preset="tiny", vocab_size=16_384, seq_len=256)


@pytest.mark.parametrize("precision, p", [("float64", 8), ("float32", 4)])
def test_probability_term_is_movers_times_slots(precision, p):
    """Logits are B·L·k fp32 and probabilities m·k in the draws' dtype, k = N for MDLM and K for
    TDLM; m = B·L when every level has one step, B·L/n for n steps (linear schedule)."""
    scale = sampling_scale(50_258, 1024)
    batch, tokens = 4, 4 * 1024
    mdlm = analytic_sampling("mdlm", scale, batch, 1, precision)
    assert mdlm["logits"] == tokens * 50_258 * 4
    assert mdlm["movers"] == tokens
    assert mdlm["probabilities"] == tokens * 50_258 * p
    tdlm = analytic_sampling("tdlm", scale, batch, 3, precision)  # depth 3: one step a level
    assert (tdlm["slots"], tdlm["depth"]) == (64, 3)
    assert tdlm["logits"] == tokens * 64 * 4
    assert tdlm["probabilities"] == tokens * 64 * p
    mdlm8 = analytic_sampling("mdlm", scale, batch, 8, precision)
    assert mdlm8["probabilities"] == tokens // 8 * 50_258 * p
    assert mdlm8["total"] >= mdlm8["weights"] + mdlm8["logits"] + mdlm8["sampler_working"]


def test_tdlm_memory_share_falls_with_vocabulary():
    """At the paper scale, batch 4, L 1024, 8 float64 steps: TDLM's share of MDLM's peak falls
    as N grows and is under the issue's 0.3 at N = 256,000; the FLOPs stay within 25%."""
    ratios, flops = [], []
    for n in (32_768, 50_258, 128_256, 256_000):
        mdlm, tdlm = (
            analytic_sampling(m, sampling_scale(n, 1024), 4, 8, "float64") for m in ("mdlm", "tdlm")
        )
        ratios.append(tdlm["total"] / mdlm["total"])
        flops.append(tdlm["run_flops"] / mdlm["run_flops"])
    assert all(a > b for a, b in pairwise(ratios)), ratios
    assert ratios[-1] < 0.3
    assert all(0.8 < f < 1.25 for f in flops), flops


def test_sampling_bench_end_to_end(tmp_path, monkeypatch):
    """Measured cells are labelled measured, analytic ones analytic; each measured part takes
    time and the parts' sum is within 1.5 x of the whole run; the parts draw the whole run's
    tokens; the peaks are within 1.3 x of the analytic count, and TDLM's is below MDLM's."""
    monkeypatch.setitem(sampling.SCALES, "paper", TINY)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' timing, robust to a busy host
    lines = []
    options = SamplingOptions(
        vocab_sizes=(TINY.vocab_size,),
        batches=(2,),
        analytic_batches=(64,),
        seq_len=TINY.seq_len,
        rounds=2,
        out_dir=tmp_path,
    )
    figures = run_sampling(options, log=lines.append)
    cells = {(c["model"], c["batch"]): c for c in figures["cells"]}
    assert {k: c["source"] for k, c in cells.items()} == {
        ("mdlm", 2): "measured",
        ("tdlm", 2): "measured",
        ("mdlm", 64): "analytic",
        ("tdlm", 64): "analytic",
    }
    for model in ("mdlm", "tdlm"):
        cell = cells[(model, 2)]
        assert cell["same_tokens"]
        assert 1 <= cell["network_calls"] <= cell["steps"] == 8
        assert all(cell["parts_s"][p]["min"] > 0 for p in sampling.PARTS)
        assert 1 / 1.5 < cell["parts_sum_over_whole"]["median"] < 1.5, cell
        assert 1 / 1.3 < cell["peak_bytes"]["median"] / cell["analytic"]["total"] < 1.3, cell
        assert "tokens_per_s" not in cells[(model, 64)]
    assert cells[("tdlm", 2)]["memory_ratio"] < 0.7
    assert len([line for line in lines if "round" in line]) == 2
    markdown = (tmp_path / "sampling.md").read_text()
    for batch, source in ((2, "measured"), (64, "analytic")):
        rows = [r for r in markdown.splitlines() if r.startswith(f"| 16,384 | {batch} | ")]
        assert rows and all(f"| {source} |" in r for r in rows[:2]), rows
    saved = json.loads((tmp_path / "sampling.json").read_text())
    assert saved["target"]["measured"] is False
    assert (tmp_path / "sampling.png").stat().st_size > 0


def test_sampling_cli_errors_and_help(capsys):
    assert bench_main(["sampling", "--precision", "float16"]) == 2
    assert "--precision" in capsys.readouterr().err
    assert bench_main(["sampling", "--steps", "2", "--vocab-sizes", "256000"]) == 2
    assert "3 levels" in capsys.readouterr().err
    assert bench_main(["sampling", "--help"]) == 0
    assert "--analytic-batches" in capsys.readouterr().out


def test_tdlm_at_mdlm_depth_samples_in_less_memory_and_fewer_flops():
    """tdlm@none (MDLM's 12 blocks on the tree) and tdlm@width (MDLM's depth, wider) at N =
    256,000: the same K-wide logits as TDLM, and MDLM's depth, so fewer FLOPs than the 37-block
    TDLM; tdlm@none also less memory, tdlm@width (width 1,104: wider activations) less than
    MDLM's."""
    scale = sampling_scale(256_000, 1024)
    got = {
        m: analytic_sampling(m, scale, 4, 8, "float64")
        for m in ("mdlm", "tdlm", "tdlm@width", "tdlm@none")
    }
    assert got["tdlm@none"]["n_blocks"] == got["tdlm@width"]["n_blocks"] == got["mdlm"]["n_blocks"]
    assert got["tdlm@none"]["logits"] == got["tdlm"]["logits"] == got["tdlm@width"]["logits"]
    assert got["tdlm@none"]["total"] < got["tdlm"]["total"] < got["mdlm"]["total"]
    assert got["tdlm@width"]["total"] < 0.3 * got["mdlm"]["total"]
    for m in ("tdlm@none", "tdlm@width"):
        assert got[m]["run_flops"] < got["tdlm"]["run_flops"]
    assert got["tdlm@none"]["run_flops"] < 0.5 * got["mdlm"]["run_flops"]  # no 256K-wide head


def test_sampling_models_must_be_mdlm_and_tdlm_networks(capsys):
    for models in ("tdlm", "mdlm,mdlm-torch", "mdlm,tdlm@fast", "mdlm,ar"):
        assert bench_main(["sampling", "--models", models]) == 2
        assert "--models" in capsys.readouterr().err
