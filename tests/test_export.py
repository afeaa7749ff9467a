"""Hugging Face Hub folders (issue 13): ``apps/export`` writes a folder that loads back, from
Python, the apps and a (mocked, offline) hub id, to the same logits and the same seeded samples;
damaged folders and foreign output folders are refused in one line."""

import hashlib
import json
import shutil

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from tdlm_diffusion import ancestral_sample, noised_batch
from tdlm_train.cli import eval_main, export_main, sample_main, train_main
from tdlm_train.errors import UserError
from tdlm_train.hub import export_run, model_card
from tdlm_train.pretrained import EXPORT_FILES
from tdlm_train.run import Run

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_args):
    """A 6-step run (validated at its last step) and its export through the app."""
    root = tmp_path_factory.mktemp("export")
    run_dir, out = root / "run", root / "exported"
    assert train_main(small_args(run_dir)) == 0
    assert export_main(["--checkpoint", str(run_dir), "--out", str(out), "--device", "cpu"]) == 0
    return run_dir, out


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_the_folder_holds_exactly_the_promised_files(trained, capsys):
    run_dir, out = trained
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    meta = json.loads((out / "config.json").read_text())
    assert meta["model_type"] == "tdlm" and meta["format_version"] == 1
    assert meta["kind"] == "tdlm" and meta["weights"] == "ema" and meta["step"] == 6
    assert meta["library"]["torch"] == torch.__version__
    val = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    recorded = [r for r in val if r["kind"] == "val" and r["step"] == 6][-1]
    v = meta["validation"]  # the trainer's measurement of these EMA weights, not a new one
    assert v["nelbo"] == recorded["nelbo"] and v["level_nelbo"] == recorded["level_nelbo"]
    assert v["tokens"] == recorded["val_tokens"] and v["split"] == "val"
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: tdlm\n")
    for text in (
        "step 6",
        f"{meta['tokens']:,} training tokens",
        f"| NELBO (nats/token) | {v['nelbo']:.4f} |",
        'Run.from_checkpoint("OWNER/NAME")',
        "apps/sample --checkpoint OWNER/NAME",
        "hf upload OWNER/NAME",
        f"{meta['parameters']:,} parameters",
    ):
        assert text in card


def test_an_ar_card_reports_an_exact_nll_not_a_bound(trained):
    """The AR baseline's card: an exact NLL, no level rows or bound, autoregressive tags."""
    meta = json.loads((trained[1] / "config.json").read_text()) | {"kind": "ar"}
    card = model_card(meta)
    nll = meta["validation"]["nelbo"]
    assert f"| NLL (nats/token, exact) | {nll:.4f} |" in card and "## Measured NLL" in card
    assert "NELBO" not in card and "upper bound" not in card and "| L_0" not in card
    assert "- autoregressive" in card and "- discrete-diffusion" not in card


def test_an_export_gives_the_same_logits_and_samples(trained):
    run_dir, out = trained
    original = Run.from_checkpoint(run_dir, device=CPU)
    exported = Run.from_checkpoint(str(out), device=CPU)
    assert exported.folder == out and exported.checkpoint == out
    assert exported.tokenizer_file() == out / "tokenizer.json"
    assert exported.state.step == original.state.step == 6
    assert exported.state.tokens == original.state.tokens
    assert not exported.model.training

    x = torch.randint(
        0, original.tree.vocab_size, (3, 32), generator=torch.Generator().manual_seed(1)
    )
    batches = [
        noised_batch(r.process, x, generator=torch.Generator().manual_seed(2))
        for r in (original, exported)
    ]
    assert torch.equal(batches[0].z, batches[1].z) and torch.equal(
        batches[0].level, batches[1].level
    )
    with torch.no_grad():
        logits = [r.model(b.z, b.level) for r, b in zip((original, exported), batches, strict=True)]
    assert torch.equal(logits[0], logits[1])

    samples = [
        ancestral_sample(
            r.process, r.model, batch_size=2, length=32, config=r.sampler(),
            generator=torch.Generator().manual_seed(3),
        ).tokens
        for r in (original, exported)
    ]  # fmt: skip
    assert torch.equal(samples[0], samples[1])


def test_the_apps_read_an_export(trained, corpus, cache, capsys):
    _, out = trained
    assert sample_main(["--checkpoint", str(out), "--count", "1", "--device", "cpu"]) == 0
    assert "checkpoint step 6" in capsys.readouterr().out
    argv = ["--checkpoint", str(out), "--batches", "1", "--device", "cpu"]
    data = ["--data.source", str(corpus / "*.txt"), "--cache_dir", str(cache)]
    assert eval_main([*argv, *data]) == 0
    assert f"checkpoint {out} (step 6, EMA weights)" in capsys.readouterr().out


def test_a_hub_id_goes_through_snapshot_download(trained, monkeypatch, capsys):
    _, out = trained
    calls = []

    def snapshot_download(repo_id, **options):
        calls.append((repo_id, options))
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    run = Run.from_checkpoint("someone/tiny-tdlm@v1", device=CPU)
    assert run.state.step == 6 and run.folder == out
    ((repo, options),) = calls
    assert repo == "someone/tiny-tdlm" and options["revision"] == "v1"
    assert set(options["allow_patterns"]) == set(EXPORT_FILES)

    def offline(repo_id, **options):
        raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot.\nMore text.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError) as error:
        Run.from_checkpoint("someone/tiny-tdlm", device=CPU)
    text = _one_line(error)
    assert "someone/tiny-tdlm" in text and "HF_HUB_OFFLINE" in text
    assert sample_main(["--checkpoint", "someone/missing", "--device", "cpu"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "someone/missing" in errors[0]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **_: str(out.parent))
    with pytest.raises(UserError, match="not a TDLM export"):
        Run.from_checkpoint("someone/a-run-folder", device=CPU)


def test_a_cached_hub_copy_loads_offline(trained, tmp_path, monkeypatch):
    """The real snapshot_download, offline (HF_HUB_OFFLINE): the hub cache's copy, in the
    cache's documented layout (refs/main -> snapshots/<commit>/), or one line without one."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-tdlm"
    shutil.copytree(trained[1], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    run = Run.from_checkpoint("someone/tiny-tdlm", device=CPU)
    assert run.folder == repo / "snapshots" / commit and run.state.step == 6
    with pytest.raises(UserError) as error:
        Run.from_checkpoint("someone/not-cached", device=CPU)
    assert "someone/not-cached" in _one_line(error)


def test_an_export_cannot_be_trained(trained):
    with pytest.raises(UserError, match="exported model"):
        Run.from_checkpoint(trained[1], training=True)


def _set_config(folder, **changes):
    meta = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(meta | changes))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "tree.npz").unlink(), "missing tree.npz"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\x10\x00\x00"), "corrupt or truncated"),
        (lambda f: _set_config(f, model_type="gpt2"), "not a TDLM export"),
        (lambda f: _set_config(f, tokenizer_fingerprint="0" * 16), "another tokenizer.json"),
        (lambda f: _set_config(f, tree_fingerprint="0" * 16), "another tree.npz"),
        (lambda f: _set_config(f, format_version=2), "format_version 2"),
        (lambda f: _set_config(f, weights="raw"), "holds the raw weights"),
        (lambda f: (f / "counts.npy").write_bytes(b"junk"), "counts.npy"),
    ],
)
def test_a_damaged_export_is_refused_in_one_line(trained, tmp_path, damage, expected):
    folder = tmp_path / "copy"
    shutil.copytree(trained[1], folder)
    damage(folder)
    with pytest.raises(UserError) as error:
        Run.from_checkpoint(folder, device=CPU)
    assert expected in _one_line(error)


def test_exports_replace_only_earlier_exports(trained, tmp_path, capsys):
    run_dir, out = trained
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert export_main(["--checkpoint", str(run_dir), "--out", str(foreign)]) == 2
    assert "not a previous export" in capsys.readouterr().err
    run = Run.from_checkpoint(run_dir, device=CPU)
    with pytest.raises(UserError):
        export_run(run, foreign)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary folder left beside
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "keep me"

    again = tmp_path / "again"
    shutil.copytree(out, again)
    (again / "model.safetensors").write_bytes(b"stale")  # so the replacement is seen
    meta = json.loads((again / "config.json").read_text())
    meta["files"]["model.safetensors"] = hashlib.sha256(b"stale").hexdigest()
    (again / "config.json").write_text(json.dumps(meta))
    export_run(run, again)  # an earlier export, as it was written, is replaced whole
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()

    (again / "README.md").write_text("my edited card")  # edited since: the user's now
    with pytest.raises(UserError, match="README.md changed since that export was written"):
        export_run(run, again)
    assert (again / "README.md").read_text() == "my edited card"


def test_raw_weights_scored_at_export(trained, tmp_path, capsys):
    run_dir, _ = trained
    out = tmp_path / "raw"
    argv = ["--checkpoint", str(run_dir), "--out", str(out), "--device", "cpu"]
    assert export_main([*argv, "--raw_weights", "--score"]) == 0
    printed = capsys.readouterr().out
    assert "model.safetensors" in printed and 'weights="raw"' in printed
    meta = json.loads((out / "config.json").read_text())
    assert meta["weights"] == "raw" and meta["validation"]["weights"] == "raw weights"
    card = (out / "README.md").read_text()
    assert "the raw weights (not their EMA)" in card and 'weights="raw"' in card
    with pytest.raises(UserError, match="holds the raw weights"):
        Run.from_checkpoint(out, device=CPU)
    raw = Run.from_checkpoint(run_dir, device=CPU, weights="raw").model.state_dict()
    loaded = Run.from_checkpoint(out, device=CPU, weights="raw").model.state_dict()
    assert raw.keys() == loaded.keys() and all(torch.equal(raw[k], loaded[k]) for k in raw)
    capsys.readouterr()
    sample = ["--checkpoint", str(out), "--count", "1", "--device", "cpu"]
    assert sample_main(sample) == 2 and "--raw_weights" in capsys.readouterr().err
    assert sample_main([*sample, "--raw_weights"]) == 0
