"""apps/bench at other vocabulary sizes (issue 15): the parameter budget when MDLM's head
outweighs its blocks (counted on the meta device at N = 256,000), the chunked loss's chunk at
large N, ``--vocab-sizes`` in the memory and throughput benches (skipping what does not fit),
and the one-command sweep with its reuse of finished parts. Tiny sizes: seconds each."""

import json

import pytest
import torch
from tdlm_bench import (
    MODELS,
    MemoryOptions,
    Scale,
    ThroughputOptions,
    VocabSweepOptions,
    build_contender,
    chunked,
    contender_config,
    contenders,
    memory,
    run_memory,
    run_throughput,
    run_vocab_sweep,
    throughput,
)
from tdlm_bench.chunked import chunk_positions
from tdlm_bench.contenders import bench_scales, synthetic_tokens

from tdlm_nn import param_breakdown
from tdlm_train.errors import UserError

SMALL = Scale(name="vocab-test", preset="tiny", vocab_size=512, seq_len=32, branching=8)


@pytest.fixture
def small_scale(monkeypatch):
    monkeypatch.setitem(contenders.SCALES, SMALL.name, SMALL)
    return SMALL


def test_bench_scales_put_each_scale_at_each_vocabulary():
    scales = bench_scales(("paper", "tiny"), (32_768, 256_000))
    assert [(s.name, s.vocab_size) for s in scales] == [
        ("paper", 32_768),
        ("paper", 256_000),
        ("tiny", 32_768),
        ("tiny", 256_000),
    ]
    assert scales[1].seq_len == 1024 and scales[1].preset == "small"
    assert bench_scales(("paper",)) == [contenders.SCALES["paper"]]
    with pytest.raises(ValueError, match="at least 2"):
        bench_scales(("paper",), (1,))


def test_budget_at_256k_where_the_head_outweighs_the_blocks():
    """MDLM's head (197M) outweighs its blocks (92M); TDLM gets the same total as blocks."""
    paper = contenders.SCALES["paper"].at_vocab(256_000)
    mdlm, tdlm = (contender_config(m, paper) for m in ("mdlm", "tdlm"))
    m, t = param_breakdown(mdlm), param_breakdown(tdlm)
    assert m.head == 768 * 256_000 + 256_000 and m.head > 2 * m.blocks
    assert m.embedding == 768 * (256_000 + 1)  # N leaves + the root ([MASK]), untied from the head
    assert tdlm.shape.widths == (64, 64, 63) and t.embedding > m.embedding
    assert t.total <= m.total < t.total + t.blocks // tdlm.n_blocks  # within one block
    assert tdlm.n_blocks == 37 and t.head < 200_000


def test_chunk_shrinks_beyond_gpt2_vocabulary():
    assert chunk_positions(4096) == chunk_positions(50_258) == 128
    assert chunk_positions(128_256) == 50 and chunk_positions(256_000) == 25
    assert chunk_positions(10**9) == 1
    # So the chunked loss's logits stay put as N grows (analytic, bf16, 16 x 1024 tokens).
    paper = contenders.SCALES["paper"]
    heads = [
        memory.analytic_peak("mdlm-chunked", paper.at_vocab(n), 16, "bf16")["head"]
        for n in (50_258, 128_256, 256_000)
    ]
    assert max(heads) <= heads[0] and min(heads) > 0.99 * heads[0]


def test_chunked_contender_uses_the_shrunk_chunk(small_scale, monkeypatch):
    """With the logits budget lowered to 4 positions of N = 512, the contender's loss runs in
    8 chunks and still equals MDLM's."""
    monkeypatch.setattr(chunked, "LOGITS_PER_CHUNK", 4 * small_scale.vocab_size)
    sizes = []
    plain = chunked.chunked_cross_entropy

    def spy(*args):
        sizes.append(args[-1])
        return plain(*args)

    monkeypatch.setattr(chunked, "chunked_cross_entropy", spy)
    x = synthetic_tokens(small_scale, 2, torch.device("cpu"))
    losses = []
    for name in ("mdlm", "mdlm-chunked"):
        contender = build_contender(name, small_scale, torch.device("cpu"), dropout=0.0)
        torch.manual_seed(3)
        losses.append(float(contender.loss(x).detach()))
    assert sizes == [4]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_memory_bench_at_vocabulary_sizes_and_skipping(small_scale, tmp_path, monkeypatch):
    options = MemoryOptions(
        scales=(small_scale.name,),
        vocab_sizes=(256, 8192),
        batches=(1, 2),
        checkpointing=("off",),
        out_dir=tmp_path,
    )
    # Room for the N = 256 cells only: N = 8,192 is skipped (and its batch 2 not tried).
    room = max(
        memory.analytic_peak(m, small_scale.at_vocab(256), 2, "fp32")["total"] for m in MODELS
    )
    monkeypatch.setattr(memory, "available_bytes", lambda: room + memory.HOST_BASELINE)
    figures = run_memory(options, log=lambda _: None)
    rows = figures["measurements"]
    assert [(r["vocab_size"], r["batch"]) for r in rows] == [(256, 1)] * 3 + [(256, 2)] * 3 + [
        (8192, 1)
    ] * 3
    assert all(r["peak_bytes"] > 0 for r in rows[:6])
    assert all(r["skipped"] and r["peak_bytes"] is None for r in rows[6:])
    blocks = {(r["vocab_size"], r["model"]): r["n_blocks"] for r in rows}
    assert blocks[(8192, "tdlm")] > blocks[(8192, "mdlm")] == 4  # its head's 2M: 2 more blocks
    text = (tmp_path / "memory.md").read_text()
    assert "| 8,192 | off | 1 | skipped | skipped | skipped |" in text and "Skipped" in text
    # The paper regime is given at the paper scale (the swept scale is not paper-like).
    assert {r["vocab_size"] for r in figures["paper_regime_analytic"]} == {50_258}


def test_throughput_one_model_at_a_time_without_sampling(small_scale, tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "available_bytes", lambda: 0)  # nothing fits together
    options = ThroughputOptions(
        scale=small_scale.name,
        vocab_sizes=(256, 1024),
        batch=1,
        rounds=2,
        train_steps=1,
        sample_steps=0,
        matmul_size=64,
        out_dir=tmp_path,
    )
    figures = run_throughput(options, log=lambda _: None)
    assert [run["vocab_size"] for run in figures["runs"]] == [256, 1024]
    for run in figures["runs"]:
        assert not run["interleaved"]
        for model in run["models"].values():
            assert len(model["train_tokens_per_s_rounds"]) == 2
            assert model["sample_tokens_per_s"] is None and model["sample_ratio_to_mdlm"] is None
        assert run["models"]["mdlm"]["train_ratio_to_mdlm"] == 1.0
    assert "one at a time" in (tmp_path / "throughput.md").read_text()


def test_vocab_sweep_writes_one_report_and_reuses_finished_parts(small_scale, tmp_path):
    options = VocabSweepOptions(
        scale=small_scale.name,
        vocab_sizes=(256, 1024),
        batches=(1,),
        rounds=2,
        train_steps=1,
        out_dir=tmp_path,
    )
    figures = run_vocab_sweep(options, log=lambda _: None)
    points = figures["points"]
    assert [p["vocab_size"] for p in points] == [256, 1024]
    for p in points:
        assert {r["model"] for r in p["budget"]} == {"mdlm", "tdlm"}
        ratio = p["speed_ratio"]["tdlm/mdlm"]
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
        modes = [r["checkpointing"] for r in p["analytic_memory"]]
        assert modes == ["off", "selective", "all"]
        tdlm = [r["totals"]["tdlm"] for r in p["analytic_memory"]]
        assert tdlm[0] > tdlm[1] > tdlm[2]
        assert p["flops"]["mdlm-chunked"] > p["flops"]["mdlm"]
    saved = json.loads((tmp_path / "vocab.json").read_text())
    assert saved["points"] == json.loads(json.dumps(points))
    text = (tmp_path / "vocab.md").read_text()
    assert "TDLM at MDLM's depth" in text and "| 1,024 |" in text
    assert (tmp_path / "vocab.png").stat().st_size > 0
    log = []
    again = run_vocab_sweep(options, log=log.append)  # everything is reused: no measuring
    assert sum(line.startswith("reusing") for line in log) == 4 and len(log) == 4
    assert again["points"] == figures["points"]
    # A part written before an option existed is reused when that option is at its default.
    part = tmp_path / "throughput-N256" / "throughput.json"
    older = json.loads(part.read_text())
    del older["options"]["checkpointing"]
    part.write_text(json.dumps(older))
    log = []
    run_vocab_sweep(options, log=log.append)
    assert sum(line.startswith("reusing") for line in log) == 4
    other = VocabSweepOptions(**{**vars(options), "rounds": 3})
    with pytest.raises(UserError, match="other options"):
        run_vocab_sweep(other, log=lambda _: None)
