"""apps/bench (issue 6): the contenders (a model kind and a head loss), the memory measure and
its analytic estimate, the throughput and quality benches' outputs, and the app's errors. Tiny
sizes: seconds each."""

import json
import math
from pathlib import Path

import paired_ablations as paired  # benchmarks/paired_ablations.py (pytest's pythonpath)
import pytest
import torch
from tdlm_bench import (
    DEFAULT_MODELS,
    MODELS,
    MemoryOptions,
    QualityOptions,
    Scale,
    ThroughputOptions,
    build_contender,
    contender_config,
    contenders,
    memory,
    run_memory,
    run_quality,
    run_throughput,
    throughput,
)
from tdlm_bench.cli import bench_main
from tdlm_bench.contenders import parse_contender, synthetic_tokens
from tdlm_bench.quality import merge_quality

from tdlm_diffusion import CHUNK_LOGITS, HEAD_LOSSES, head_loss_unavailable
from tdlm_nn import SPENDS, param_breakdown
from tdlm_train.errors import UserError

SMALL = Scale(name="small-test", preset="tiny", vocab_size=512, seq_len=32, branching=8)
# A vocabulary large enough that the logits dominate the step (the masked positions' logits,
# 2^22 at batch 2, fit in one chunk of CHUNK_LOGITS: chunked holds what masked does).
LOGIT_HEAVY = Scale(name="logit-test", preset="tiny", vocab_size=16_384, seq_len=256)
CPU = torch.device("cpu")


def test_contender_names_are_a_kind_a_head_loss_and_a_spend():
    assert parse_contender("mdlm") == ("mdlm", "full", "depth")
    assert parse_contender("mdlm-torch") == ("mdlm", "torch", "depth")
    assert parse_contender("tdlm-masked") == ("tdlm", "masked", "depth")
    assert parse_contender("tdlm@none") == ("tdlm", "full", "none")
    assert {parse_contender(m).head_loss for m in MODELS} == set(HEAD_LOSSES)
    assert {parse_contender(m).spend for m in MODELS} == set(SPENDS)
    assert {parse_contender(m).kind for m in MODELS} == {"mdlm", "tdlm", "ar"}
    assert set(DEFAULT_MODELS) <= set(MODELS)
    with pytest.raises(ValueError, match="unknown bench model"):
        parse_contender("mdlm-fast")


@pytest.mark.parametrize("name", [m for m in MODELS if parse_contender(m).head_loss != "full"])
def test_every_contender_computes_its_kinds_full_loss_and_gradients(name, monkeypatch):
    """The same network and draw: every head loss gives the full-logits loss and gradients,
    and the library is asked for that head loss (not the plain one, which gives them too)."""
    kind, head_loss, _ = parse_contender(name)
    reason = head_loss_unavailable(head_loss, CPU)
    if reason is not None:
        pytest.skip(reason)
    asked = []

    def spy(plain):
        def asking(*args, **kwargs):
            asked.append(kwargs["head_loss"])
            return plain(*args, **kwargs)

        return asking

    for loss in ("training_loss", "next_token_nll"):  # the diffusion and the AR contenders'
        monkeypatch.setattr(contenders, loss, spy(getattr(contenders, loss)))
    x = synthetic_tokens(SMALL, 3, CPU)
    results = []
    for model in (kind, name):
        contender = build_contender(model, SMALL, CPU, dropout=0.0, seed=1)
        with torch.no_grad():  # off the zero initialisation, which would make every logit 0
            for parameter in contender.model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        torch.rand(len(results) + 1)  # the global RNG differs: the draw is the generator's
        loss = contender.loss(x, torch.Generator().manual_seed(7))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in contender.model.parameters()])
        results.append((float(loss.detach()), grads))
    (full, full_grads), (loss, grads) = results
    assert asked == ["full", head_loss]
    assert loss == pytest.approx(full, rel=1e-5)
    assert ((grads - full_grads).norm() / full_grads.norm()).item() < 1e-5


def test_a_contender_that_cannot_run_here_is_refused_with_the_librarys_reason(monkeypatch):
    """As on a GPU machine with torch 2.11: mdlm-torch is left out of the defaults (the reason
    logged), refused when asked for, and build_contender refuses it."""
    reason = "head loss 'torch' needs torch.nn.functional.linear_cross_entropy"
    unavailable = {"torch": reason}
    monkeypatch.setattr(
        contenders, "head_loss_unavailable", lambda head_loss, device: unavailable.get(head_loss)
    )
    log = []
    models, left_out = contenders.bench_models((), CPU, log.append)
    assert models == tuple(m for m in DEFAULT_MODELS if m != "mdlm-torch")
    assert left_out == {"mdlm-torch": reason} and log == [f"mdlm-torch left out: {reason}"]
    with pytest.raises(UserError, match="--models: mdlm-torch cannot run on cpu: head loss"):
        contenders.bench_models(("mdlm", "mdlm-torch"), CPU)
    with pytest.raises(ValueError, match=f"mdlm-torch: {reason}"):
        build_contender("mdlm-torch", SMALL, CPU)
    assert contenders.bench_models(("mdlm-chunked",), CPU) == (("mdlm-chunked",), {})


def test_spend_contenders_are_mdlm_depth_at_or_under_its_budget():
    """tdlm@width: MDLM's 12 blocks, wider, within 1% of MDLM's parameters; tdlm@none: MDLM's
    depth and width and fewer parameters (its head's saving unspent). best_of, which picks the
    best MDLM and TDLM at the budget, never picks tdlm@none however low its value."""
    paper = contenders.SCALES["paper"]
    mdlm, width, none = (contender_config(m, paper) for m in ("mdlm", "tdlm@width", "tdlm@none"))
    budget = param_breakdown(mdlm).total
    assert width.n_blocks == none.n_blocks == mdlm.n_blocks
    assert width.width > mdlm.width == none.width
    assert abs(param_breakdown(width).total / budget - 1) < 0.01
    assert param_breakdown(none).blocks == param_breakdown(mdlm).blocks
    assert param_breakdown(none).total < 0.8 * budget  # MDLM's 38.6M-parameter head is 23%
    assert contenders.best_of({"tdlm": 3.0, "tdlm@none": 1.0, "tdlm@width": 2.0}, "tdlm") == (
        "tdlm@width"
    )


def test_tdlm_contender_has_mdlm_budget_and_more_blocks():
    mdlm, tdlm = (contender_config(m, contenders.SCALES["paper"]) for m in ("mdlm", "tdlm"))
    assert tdlm.n_blocks > mdlm.n_blocks
    total = param_breakdown(mdlm).total
    assert abs(param_breakdown(tdlm).total - total) <= 0.02 * total


def test_memory_bench(tmp_path, monkeypatch):
    """Fresh-process CPU measurements of the default contenders: the lean MDLMs and TDLM hold
    less than MDLM as published at the same batch, torch's fused loss (no ``[m, N]`` logits)
    less than the chunked one (here one chunk: the masked positions' logits), recomputing
    every block less than none, and the analytic estimate is within a factor 1.5 of each
    measurement (selective recomputation's count: the analytic tests below)."""
    monkeypatch.setitem(memory.SCALES, LOGIT_HEAVY.name, LOGIT_HEAVY)
    options = MemoryOptions(
        scales=(LOGIT_HEAVY.name,),
        batches=(2,),
        checkpointing=("off", "all"),
        out_dir=tmp_path,
    )
    figures = run_memory(options, log=lambda _: None)
    rows = figures["measurements"]
    peaks = {(r["model"], r["checkpointing"]): r["peak_bytes"] for r in rows}
    assert {m for m, _ in peaks} == set(DEFAULT_MODELS)
    for mode in ("off", "all"):
        for lean in ("mdlm-chunked", "mdlm-torch", "tdlm"):
            assert peaks[(lean, mode)] < peaks[("mdlm", mode)], (lean, mode, peaks)
    # Only with activations saved do the two lean losses differ: recomputing every block, both
    # peak at the optimizer step (20 bytes per parameter, the same model), equal to within the
    # allocator's noise (0.5% in one CI run, either way), so they are not ranked there.
    assert peaks[("mdlm-torch", "off")] < peaks[("mdlm-chunked", "off")], peaks
    # Recomputing blocks holds less than saving their activations (the lean MDLMs' steps peak
    # at the optimizer step here, 20 bytes per parameter, whatever the activations).
    for model in ("mdlm", "tdlm"):
        assert peaks[(model, "all")] < peaks[(model, "off")]
    for row in rows:
        assert 1 / 1.5 < row["peak_bytes"] / row["analytic"]["total"] < 1.5, row
    saved = json.loads((tmp_path / "memory.json").read_text())
    assert {"torch", "device", "threads", "date", "git_commit"} <= set(saved["environment"])
    regime = saved["paper_regime_analytic"]
    assert {(r["model"], r["checkpointing"], r["gpus"]) for r in regime} == {
        (m, c, g) for m in memory.COUNTED for c in ("off", "selective", "all") for g in (1, 8)
    }
    text = (tmp_path / "memory.md").read_text()
    # The table sets TDLM against the lowest-memory MDLM measured, named.
    lowest = min(DEFAULT_MODELS[:3], key=lambda m: peaks[(m, "off")])
    ratio = peaks[("tdlm", "off")] / peaks[(lowest, "off")]
    assert f"| {ratio:.2f} ({lowest}) |" in text
    assert (tmp_path / "memory.png").stat().st_size > 0


def test_memory_workers_run_side_by_side_in_model_order(monkeypatch):
    """The CUDA sweep's concurrent workers (here on the CPU): one result per model, in order."""
    monkeypatch.setitem(memory.SCALES, SMALL.name, SMALL)
    options = MemoryOptions(scales=(SMALL.name,), batches=(1,))
    rows = memory._workers(DEFAULT_MODELS, SMALL, 1, "all", options, at_once=len(DEFAULT_MODELS))
    assert [r["model"] for r in rows] == list(DEFAULT_MODELS)
    assert all(r["checkpointing"] == "all" and r["peak_bytes"] > 0 for r in rows)


def test_analytic_head_term_scales_with_the_logits_each_head_loss_keeps():
    paper = contenders.SCALES["paper"]
    one, two = (memory.analytic_peak("mdlm", paper, b, "bf16") for b in (1, 2))
    assert two["head"] == 2 * one["head"] and two["states"] == one["states"]
    peak = {m: memory.analytic_peak(m, paper, 16, "bf16") for m in memory.COUNTED}
    # Masked-only: the logits of the expected half of the positions.
    assert peak["mdlm-masked"]["head"] == pytest.approx(peak["mdlm"]["head"] / 2, rel=1e-12)
    assert peak["tdlm-masked"]["head"] == pytest.approx(peak["tdlm"]["head"] / 2, rel=1e-12)
    # Chunked: one chunk of CHUNK_LOGITS logits (18 bytes each in bf16), 2^24 // N rows.
    assert peak["mdlm-chunked"]["head"] == (CHUNK_LOGITS // 50_258) * 50_258 * 18
    # torch: a [c, N] fp32 buffer and its bf16 copy, c = 128 rows for 8,192 masked rows
    # (next_pow2(8192 / ceil(50258 / 768))): far below one chunk.
    assert peak["mdlm-torch"]["head"] == 128 * 50_258 * 6
    heads = [peak[m]["head"] for m in ("mdlm", "mdlm-masked", "mdlm-chunked", "mdlm-torch")]
    assert heads == sorted(heads, reverse=True)
    for m in memory.COUNTED:  # the head loss changes no parameter and no activation
        name = parse_contender(m)
        plain = name.kind + ("" if name.spend == "depth" else f"@{name.spend}")
        assert peak[m]["states"] == peak[plain]["states"]
        assert peak[m]["activations"] == peak[plain]["activations"]
    with pytest.raises(ValueError, match="no analytic count"):
        memory.analytic_peak("mdlm-liger", paper, 16, "bf16")


def test_analytic_checkpointing_and_sharding_shrink_their_terms_only():
    paper = contenders.SCALES["paper"]
    plain = memory.analytic_peak("tdlm", paper, 16, "bf16")
    recomputed = memory.analytic_peak("tdlm", paper, 16, "bf16", checkpointing="all")
    selective = memory.analytic_peak("tdlm", paper, 16, "bf16", checkpointing="selective")
    sharded = memory.analytic_peak("tdlm", paper, 16, "bf16", world_size=8)
    assert recomputed["activations"] < plain["activations"] / 4
    assert recomputed["activations"] < selective["activations"] < plain["activations"] / 2
    for checkpointed in (recomputed, selective):
        assert checkpointed["states"] == plain["states"] and checkpointed["head"] == plain["head"]
    assert plain["states"] / 8 < sharded["states"] < plain["states"] / 4
    assert sharded["activations"] == plain["activations"]


def _small_throughput(tmp_path, monkeypatch, **options) -> dict:
    """The throughput bench at SMALL: batch 2, one training step and a 4-step sampling run of one
    sequence per round."""
    monkeypatch.setitem(contenders.SCALES, SMALL.name, SMALL)
    fixed = dict(scale=SMALL.name, batch=2, train_steps=1, sample_steps=4, sample_batch=1)
    options = ThroughputOptions(**fixed, matmul_size=64, out_dir=tmp_path, **options)
    return run_throughput(options, log=lambda _: None)


def test_throughput_bench(tmp_path, monkeypatch):
    figures = _small_throughput(tmp_path, monkeypatch, rounds=2, checkpointing=("off", "selective"))
    models = figures["runs"][0]["models"]
    assert list(models) == list(DEFAULT_MODELS) and models["mdlm"]["train_ratio_to_mdlm"] == 1.0
    for m in models.values():
        assert m["train_tokens_per_s"]["min"] <= m["train_tokens_per_s"]["median"] > 0
        assert m["mfu"]["median"] > 0 and m["sample_tokens_per_s"]["median"] > 0
    # The best MDLM is the fastest MDLM variant; its ratio to itself is 1.
    best = models["tdlm"]["best_mdlm"]
    assert best == max(
        (m for m in models if m.startswith("mdlm")),
        key=lambda m: models[m]["train_tokens_per_s"]["median"],
    )
    assert models[best]["train_ratio_to_best_mdlm"] == 1.0
    # The sampler reads no head loss: MDLM is sampled once, for all its variants.
    assert models["mdlm-chunked"]["sample_tokens_per_s"] == models["mdlm"]["sample_tokens_per_s"]
    # Model FLOPs: the masked-only head runs on half the positions.
    assert models["mdlm-chunked"]["step_flops"] < models["mdlm"]["step_flops"]
    selective = figures["runs"][0]["other_checkpointing"]["selective"]
    assert set(selective) == set(DEFAULT_MODELS) and selective["mdlm"]["train_ratio_to_mdlm"] == 1.0
    for m in DEFAULT_MODELS:
        assert len(selective[m]["train_tokens_per_s_rounds"]) == 2
        assert selective[m]["ratio_to_main_mode"] > 0
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["environment"]["torch"] == torch.__version__
    text = (tmp_path / "throughput.md").read_text()
    assert "MFU" in text and "| selective | tdlm |" in text and f"({best}) |" in text


def test_step_flops_count_the_head_on_the_positions_it_scores():
    config = contender_config("mdlm", contenders.SCALES["paper"])
    full, masked = (throughput.step_flops(config, 2, 1024, h) for h in ("full", "chunked"))
    assert full - masked == 6 * config.width * 50_258 * 1024  # half of 2 x 1024 positions
    ar = contender_config("ar", contenders.SCALES["paper"])  # AR scores every position
    assert ar.causal and not config.causal
    assert throughput.step_flops(ar, 2, 1024, "torch") == full


def test_ar_contenders_are_mdlm_causal_scoring_every_position(tmp_path, monkeypatch):
    """ar: MDLM's parameters, causal; its fused head holds every position's rows (a diffusion
    model's, the masked half), exactly the full head's at ``masked``; the throughput bench
    trains it and samples it left to right, once for both AR head losses, and tdlm@none apart
    from tdlm (another network)."""
    paper = contenders.SCALES["paper"]
    assert param_breakdown(contender_config("ar", paper)) == param_breakdown(
        contender_config("mdlm", paper)
    )
    assert [contenders.scored_share(m) for m in ("ar-torch", "mdlm-torch", "mdlm")] == [1, 0.5, 1]
    assert memory.head_bytes("masked", 4096, 50_258, 768, "bf16", share=1.0) == memory.head_bytes(
        "full", 4096, 50_258, 768, "bf16"
    )
    ar, mdlm = (memory.analytic_peak(m, paper, 16, "bf16") for m in ("ar-torch", "mdlm-torch"))
    assert ar["head"] == 2 * mdlm["head"] and ar["states"] == mdlm["states"]
    assert (
        throughput._network("ar-torch") == throughput._network("ar") != throughput._network("mdlm")
    )
    assert throughput._network("tdlm@none") != throughput._network("tdlm")
    models = ("mdlm", "ar", "ar-torch", "tdlm@none")
    figures = _small_throughput(tmp_path, monkeypatch, models=models, rounds=1)
    models = figures["runs"][0]["models"]
    assert models["ar"]["sample_tokens_per_s"] == models["ar-torch"]["sample_tokens_per_s"]
    for m in models.values():
        assert m["train_tokens_per_s"]["median"] > 0 and m["sample_tokens_per_s"]["median"] > 0


def test_quality_bench(tmp_path, corpus, cache):
    overrides = {
        "cache_dir": str(cache),
        "data.val_fraction": "0.1",
        "tokenizer.vocab_size": "300",
        "tree.branching": "8",
        "model.n_blocks": "1",
        "batch_size": "4",
        "seq_len": "32",
        "eval_batches": "2",
        "diffusion.sampler.steps": "8",
        "sample_count": "1",
        "device": "cpu",
    }
    options = QualityOptions(
        minutes=0.05,  # 3 s of MDLM training per seed; TDLM then to the same time
        data=str(corpus / "*.txt"),
        allocations=("linear",),
        trees=("embedding",),
        level_weights=("1:1:2",),  # 300 tokens, K = 8: three levels
        spends=("width",),
        seeds=(0, 1),
        eval_every=2,
        samples=2,
        overrides=overrides,
        out_dir=tmp_path / "q",
    )
    figures = run_quality(options, log=lambda _: None)
    labels = [(run["seed"], run["label"]) for run in figures["runs"]]
    variants = (
        "mdlm",
        "tdlm",
        "ar",
        "tdlm tree=embedding",
        "tdlm alloc=linear",
        "tdlm λ=1:1:2",
        "tdlm spend=width",
    )
    assert labels == [(s, m) for s in (0, 1) for m in variants]
    for run in figures["runs"]:
        budget = run["budget"]
        assert run["steps"] == budget["steps"] and run["tokens"] == budget["tokens"]
        v = run["validation"]
        assert sum(v["level_nelbo"]) == pytest.approx(v["nelbo"])
        assert run["curve"] and run["curve"][-1]["step"] >= budget["steps"]
        # At most log(32) nats for 32 tokens (all distinct), up to the rounding of its sum.
        entropies = run["unigram_entropy"]["per_sample"]
        assert all(0 <= e <= math.log(32) + 1e-12 for e in entropies), entropies
        # Chain rule: every tree splits the same unigram entropy (same seed, same counts).
        assert sum(run["tree_entropy"]) == pytest.approx(figures["runs"][0]["tree_entropy"][0])
    # The two-stage embedding tree: a stage-1 MDLM's tokens count, its embeddings made the tree.
    embedded = figures["runs"][3]
    stage2 = tmp_path / "q" / "runs" / "seed0" / "ablation-0" / "stage2"
    assert 0 < embedded["stage1"]["steps"] < embedded["steps"]
    assert json.loads((stage2 / "config.json").read_text())["tree"]["method"] == "embedding"
    assert len(figures["runs"][0]["validation"]["level_nelbo"]) == 1
    assert len(figures["runs"][1]["validation"]["level_nelbo"]) > 1
    assert "equal_time" in figures["runs"][1]
    # The AR baseline: one "level", an exact NLL, and its equal wall-clock phase too.
    ar = figures["runs"][2]
    assert len(ar["validation"]["level_nelbo"]) == 1 and "equal_time" in ar
    assert (
        json.loads((tmp_path / "q" / "runs" / "seed0" / "ar" / "config.json").read_text())["kind"]
        == "ar"
    )
    wide = tmp_path / "q" / "runs" / "seed0" / "ablation-3" / "config.json"
    assert json.loads(wide.read_text())["model"]["spend"] == "width"
    # The verdict: ratios to the same seed's MDLM, their mean and sd over the two seeds.
    verdict = figures["verdict"]
    assert verdict["mdlm"]["ratio_equal_tokens"]["values"] == [1.0, 1.0]
    ratios = [
        run["validation"]["nelbo"] / mdlm["validation"]["nelbo"]
        for run, mdlm in ((figures["runs"][i + 1], figures["runs"][i]) for i in (0, 7))
    ]
    tdlm = verdict["tdlm"]["ratio_equal_tokens"]
    assert tdlm["values"] == pytest.approx(ratios)
    assert tdlm["mean"] == pytest.approx(sum(ratios) / 2)
    assert tdlm["sd"] == pytest.approx(abs(ratios[0] - ratios[1]) / math.sqrt(2))
    assert (tmp_path / "q" / "quality.png").stat().st_size > 0
    markdown = (tmp_path / "q" / "quality.md").read_text()
    assert "val NELBO" in markdown and "±" in markdown and "Per seed" in markdown
    _check_paired_ablations(tmp_path / "q", figures)
    _check_merge(tmp_path, figures)


def _check_merge(tmp_path: Path, figures: dict) -> None:
    """``--merge``: the bench's two seeds, written as two one-seed folders, report as one with
    the same verdict; folders with other options or a shared seed are refused."""
    for seed in (0, 1):
        part = {
            **figures,
            "options": {**figures["options"], "seeds": f"({seed},)", "out_dir": f"s{seed}"},
            "runs": [run for run in figures["runs"] if run["seed"] == seed],
        }
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "quality.json").write_text(json.dumps(part))
    parts = f"{tmp_path / 's1'},{tmp_path / 's0'}"
    assert bench_main(["quality", "--merge", parts, "--out", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "quality.json").read_text())
    assert merged["verdict"] == json.loads(json.dumps(figures["verdict"]))
    assert sorted(json.dumps(r) for r in merged["runs"]) == sorted(
        json.dumps(r) for r in json.loads(json.dumps(figures["runs"]))
    )
    assert merged["options"]["seeds"] == "(0, 1)"
    assert "Seed(s) 1 from" in (tmp_path / "m" / "quality.md").read_text()
    with pytest.raises(UserError, match="is one of the merged folders"):
        merge_quality((str(tmp_path / "s0"), str(tmp_path / "s1")), tmp_path / "s1")
    with pytest.raises(UserError, match="seed 0 is in both"):
        merge_quality((str(tmp_path / "s0"), str(tmp_path / "s0")), tmp_path / "m2")
    other = json.loads((tmp_path / "s1" / "quality.json").read_text())
    other["options"]["minutes"] = "9.0"
    (tmp_path / "s1" / "quality.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match=r"differ from .* in \['minutes'\]"):
        merge_quality((str(tmp_path / "s0"), str(tmp_path / "s1")), tmp_path / "m2")


def _check_paired_ablations(bench: Path, figures: dict) -> None:
    """benchmarks/paired_ablations.py finds the bench's runs in its folders, pairs each TDLM
    with its seed's MDLM at equal steps (the two-stage run's stage 1 counted) and reproduces
    the bench's own ratios and per-level references; the paired differences are exact."""
    table = paired.summarise(paired.pair(paired.find_runs([bench], {})))
    ((group, variants),) = table.items()
    assert "branching=8" in group  # every TDLM's setting: the group's, not a variant's
    labels = {
        "default": "tdlm",
        "allocation=linear": "tdlm alloc=linear",
        "two-stage embedding": "tdlm tree=embedding",
        "λ=1:1:2": "tdlm λ=1:1:2",
        "spend=width": "tdlm spend=width",
    }
    assert list(variants)[0] == "default" and set(variants) == set(labels)
    runs = {(r["seed"], r["label"]): r for r in figures["runs"]}
    for variant, entry in variants.items():
        assert sorted(entry["seeds"]) == [0, 1]
        for seed, got in entry["seeds"].items():
            run, mdlm = runs[(seed, labels[variant])], runs[(seed, "mdlm")]
            ratio = run["validation"]["nelbo"] / mdlm["validation"]["nelbo"]
            assert got["ratio"] == pytest.approx(ratio, rel=1e-12)
            base = variants["default"]["seeds"][seed]["ratio"]
            assert got["vs_default"] == got["ratio"] - base
            learned = [
                u - v
                for u, v in zip(
                    run["unigram_val_nll"], run["validation"]["level_nelbo"], strict=True
                )
            ]
            assert got["learned"] == pytest.approx(learned, rel=1e-9)
            assert len(got["neighbour_gain"]) == len(learned)
            assert all(math.isfinite(g) for g in got["neighbour_gain"])
        assert entry["ratio"]["n"] == 2
    assert variants["default"]["vs_default"]["mean"] == 0.0
    assert "paired Δ" in paired.markdown(table)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "usage"),
        (["speed"], "usage"),
        (["memory", "--batches", "one"], "--batches"),
        (["throughput", "--model.kind", "mdlm"], "unknown options"),
        (["memory", "--scales", "huge"], "unknown"),
        (["memory", "--vocab-sizes", "32k"], "--vocab-sizes"),
        (["throughput", "--vocab-sizes", "1"], "at least 2"),
        (["vocab", "--scale", "huge"], "unknown"),
        (["memory", "--models", "mdlm,mdlm-fast"], "unknown bench model 'mdlm-fast'"),
        (["throughput", "--models", "mdlm-cce"], "mdlm-cce cannot run on cpu: head loss 'cce'"),
    ],
)
def test_bench_app_errors(argv, message, capsys):
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
