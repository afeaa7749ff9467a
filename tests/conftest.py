"""Fixtures for the end-to-end tests: a small local corpus and a shared cache folder."""

from pathlib import Path

import numpy as np
import pytest

WORDS = (
    "the cat sat on a mat while dogs ran past old trees near quiet rivers and birds sang "
    "songs about long summer days under bright blue skies"
).split()


def write_corpus(folder: Path) -> Path:
    """60 short text files of word salad with some structure (sentences of repeated phrases)."""
    rng = np.random.default_rng(0)
    for i in range(60):
        sentences = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(30)]
        (folder / f"doc{i:02d}.txt").write_text(". ".join(sentences) + ".\n")
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")  # a pure factory: safe to share with module-scoped fixtures
def small_args(corpus, cache):
    """Options for a seconds-long CPU run: 1-block tiny model, 300-token BPE, short blocks."""

    def make(run_dir, **extra) -> list[str]:
        options = {
            "run_dir": str(run_dir),
            "cache_dir": str(cache),
            "data.source": str(corpus / "*.txt"),
            "data.val_fraction": "0.1",
            "tokenizer.vocab_size": "300",
            "tree.branching": "8",
            "model.n_blocks": "1",
            "model.dropout": "0.1",
            "batch_size": "4",
            "seq_len": "32",
            "max_steps": "6",
            "minutes": "0",
            "log_every": "1",
            "eval_every": "3",
            "eval_batches": "8",
            "checkpoint_every": "3",
            "diffusion.sampler.steps": "8",
            "diffusion.eval_samples_per_level": "4",
            "optim.lr": "3e-3",
            "optim.warmup_steps": "5",
            "optim.ema_decay": "0.5",
            "device": "cpu",
        } | {k: str(v) for k, v in extra.items()}
        return [item for key, value in options.items() for item in (f"--{key}", value)]

    return make


@pytest.fixture
def no_data_work(monkeypatch):
    """Any data preparation fails the test: what it guards must be refused before it."""

    def no_data(*_args, **_kwargs):
        raise AssertionError("data preparation started")

    monkeypatch.setattr("tdlm_train.run.prepare_data", no_data)
