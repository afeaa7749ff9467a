"""apps/bench at other vocabulary sizes (issue 15): the parameter budget when MDLM's head
outweighs its blocks (counted on the meta device at N = 256,000), the lean heads' memory
against N, ``--vocab-sizes`` in the memory and throughput benches (skipping what does not fit),
and the one-command sweep with its reuse of finished parts. Tiny sizes: seconds each."""

import json

import pytest
from tdlm_bench import (
    MemoryOptions,
    Scale,
    ThroughputOptions,
    VocabSweepOptions,
    contender_config,
    contenders,
    memory,
    run_memory,
    run_throughput,
    run_vocab_sweep,
    throughput,
)
from tdlm_bench.contenders import bench_scales

from tdlm_diffusion import CHUNK_LOGITS
from tdlm_nn import param_breakdown
from tdlm_train.errors import UserError

SMALL = Scale(name="vocab-test", preset="tiny", vocab_size=512, seq_len=32, branching=8)
# Three contenders (the benches' defaults are measured in test_bench.py): fewer workers.
MODELS = ("mdlm", "mdlm-torch", "tdlm")


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


def test_lean_heads_stay_put_as_the_vocabulary_grows():
    """Analytic, bf16, 16 x 1024 tokens: MDLM's logits grow with N, the masked positions' at
    half the rate; one chunk of CHUNK_LOGITS and torch's aspect-ratio buffer do not grow."""
    paper = contenders.SCALES["paper"]
    sizes = (50_258, 128_256, 256_000)
    heads = {
        m: [memory.analytic_peak(m, paper.at_vocab(n), 16, "bf16")["head"] for n in sizes]
        for m in ("mdlm", "mdlm-masked", "mdlm-chunked", "mdlm-torch")
    }
    for full, masked, n in zip(heads["mdlm"], heads["mdlm-masked"], sizes, strict=True):
        assert full == 16 * 1024 * n * 18 and masked * 2 == full
    assert max(heads["mdlm-chunked"]) <= CHUNK_LOGITS * 18
    assert min(heads["mdlm-chunked"]) > 0.99 * CHUNK_LOGITS * 18
    # torch: a buffer about the size of the masked rows' input (8,192 x 768), twice at most.
    rows_input = 8192 * 768 * 6
    assert all(rows_input <= h <= 2 * rows_input for h in heads["mdlm-torch"])


def test_memory_bench_at_vocabulary_sizes_and_skipping(small_scale, tmp_path, monkeypatch):
    options = MemoryOptions(
        scales=(small_scale.name,),
        vocab_sizes=(256, 8192),
        models=MODELS,
        batches=(1, 2),
        checkpointing=("off",),
        out_dir=tmp_path,
    )
    # Room for the N = 256 cells only: N = 8,192 is skipped (and its batch 2 not tried).
    room = max(
        memory.analytic_peak(m, small_scale.at_vocab(256), 2, "fp32")["total"]
        for m in MODELS
    )
    monkeypatch.setattr(memory, "available_bytes", lambda: room + memory.HOST_BASELINE)
    figures = run_memory(options, log=lambda _: None)
    rows = figures["measurements"]
    count = len(MODELS)
    assert [(r["vocab_size"], r["batch"]) for r in rows] == (
        [(256, 1)] * count + [(256, 2)] * count + [(8192, 1)] * count
    )
    assert all(r["peak_bytes"] > 0 for r in rows[: 2 * count])
    assert all(r["skipped"] and r["peak_bytes"] is None for r in rows[2 * count :])
    blocks = {(r["vocab_size"], r["model"]): r["n_blocks"] for r in rows}
    assert blocks[(8192, "tdlm")] > blocks[(8192, "mdlm")] == 4  # its head's 2M: 2 more blocks
    assert blocks[(8192, "mdlm-torch")] == 4  # the head loss changes no parameter
    text = (tmp_path / "memory.md").read_text()
    assert "| 8,192 | off | 1 |" + " skipped |" * count + " — | — |" in text
    assert "Skipped" in text
    # The paper regime is given at the paper scale (the swept scale is not paper-like).
    assert {r["vocab_size"] for r in figures["paper_regime_analytic"]} == {50_258}


def test_throughput_one_model_at_a_time_without_sampling(small_scale, tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "available_bytes", lambda: 0)  # nothing fits together
    options = ThroughputOptions(
        scale=small_scale.name,
        models=MODELS,
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
        models=("mdlm", "mdlm-chunked", "tdlm"),
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
        assert set(p["speed_ratio"]) == {"tdlm/mdlm", "tdlm/mdlm-chunked"}
        for ratio in p["speed_ratio"].values():
            assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
        fastest = p["fastest"]["mdlm"]
        assert p["fastest"]["tdlm"] == "tdlm" and fastest == max(
            ("mdlm", "mdlm-chunked"), key=lambda m: p["train_tokens_per_s"][m]["median"]
        )
        modes = [r["checkpointing"] for r in p["analytic_memory"]]
        assert modes == ["off", "selective", "all"]
        tdlm = [r["totals"]["tdlm"] for r in p["analytic_memory"]]
        assert tdlm[0] > tdlm[1] > tdlm[2]
        assert set(p["analytic_memory"][0]["totals"]) == set(memory.COUNTED)
        # The lean heads run on the masked half (6 -> 3 x D N per position), plus the head
        # their backward recomputes (2 x D N per masked position): 4 / 6 of MDLM's head.
        head = p["flops"]["mdlm"] - p["flops"]["mdlm-chunked"]
        config = contender_config("mdlm", small_scale.at_vocab(p["vocab_size"]))
        assert head == 2 * config.width * p["vocab_size"] * small_scale.seq_len
    saved = json.loads((tmp_path / "vocab.json").read_text())
    assert saved["points"] == json.loads(json.dumps(points))
    text = (tmp_path / "vocab.md").read_text()
    assert "tdlm@none / MDLM" in text and "| 1,024 |" in text
    assert "TDLM / best MDLM" in text and "TDLM / fastest MDLM" in text
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
    # ... except --models: a part from before it measured other contenders.
    del older["options"]["models"]
    part.write_text(json.dumps(older))
    with pytest.raises(UserError, match="other options"):
        run_vocab_sweep(options, log=lambda _: None)
    other = VocabSweepOptions(**{**vars(options), "rounds": 3})
    with pytest.raises(UserError, match="other options"):
        run_vocab_sweep(other, log=lambda _: None)
