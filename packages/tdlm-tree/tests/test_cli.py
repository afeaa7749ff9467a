"""The ``tdlm-tree`` command and the ``apps/build-tree`` wrapper, end to end."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tdlm_tree import load_tree
from tdlm_tree.cli import main

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 300, 20_000)
    np.save(tmp_path / "tokens.npy", tokens)
    np.save(tmp_path / "counts.npy", np.bincount(tokens, minlength=300))
    np.save(tmp_path / "vectors.npy", rng.standard_normal((300, 8)).astype(np.float32))
    return tmp_path


@pytest.mark.parametrize(
    ("method", "inputs"),
    [
        ("flat", ["--vocab-size", "300"]),
        ("random", ["--vocab-size", "300", "--seed", "4"]),
        ("frequency", ["--counts", "counts.npy"]),
        ("embedding", ["--vectors", "vectors.npy", "--counts", "counts.npy"]),
        ("cooccurrence", ["--tokens", "tokens.npy", "--dim", "8"]),
    ],
)
def test_build_then_info(data, capsys, method, inputs):
    inputs = [str(data / a) if a.endswith(".npy") else a for a in inputs]
    out = data / f"{method}.npz"
    assert main(["build", "--method", method, *inputs, "--branching", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    tree = load_tree(out, vocab_size=300)
    assert tree.method == method
    assert f"saved to {out}" in printed
    if method != "flat":
        assert tree.level_sizes == (300, 38, 5, 1)
    if method in ("frequency", "embedding", "cooccurrence"):
        assert "= unigram entropy" in printed
    assert main(["info", str(out), "--tokens", str(data / "tokens.npy")]) == 0
    assert "H(A_h|A_h+1)" in capsys.readouterr().out


def test_branching_list_and_leaf_cluster_size(data):
    out = data / "t.npz"
    assert (
        main(
            [
                "build",
                "--method",
                "random",
                "--vocab-size",
                "300",
                "--branching",
                "10,30",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert load_tree(out).branching == (10, 30)
    assert (
        main(
            [
                "build",
                "--method",
                "random",
                "--vocab-size",
                "300",
                "--branching",
                "4",
                "--leaf-cluster-size",
                "50",
                "--out",
                str(out),
                "--force",
            ]
        )
        == 0
    )
    assert load_tree(out).level_sizes == (300, 6, 2, 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "frequency", "--vocab-size", "300"], "needs --counts or --tokens"),
        (["--method", "embedding", "--counts", "counts.npy"], "needs --vectors"),
        (["--method", "cooccurrence", "--vocab-size", "10"], "needs --tokens"),
        (["--method", "flat"], "give --vocab-size"),
        (["--method", "random", "--vocab-size", "5", "--counts", "counts.npy"], "inconsistent"),
        (["--method", "cooccurrence", "--tokens", "missing.npy"], "no such file"),
        (["--method", "cooccurrence", "--tokens", "vectors.npy"], "1-D"),
        (["--method", "random", "--vocab-size", "300", "--branching", "1"], "at least 2"),
        (
            ["--method", "cooccurrence", "--tokens", "tokens.npy", "--vocab-size", "100"],
            "outside 0..99",
        ),
    ],
)
def test_bad_input_is_one_line_and_status_2(data, capsys, argv, message):
    argv = [str(data / a) if a.endswith(".npy") else a for a in argv]
    assert main(["build", *argv, "--out", str(data / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tdlm-tree: error:") and message in err and "\n" not in err
    assert not (data / "x.npz").exists()


def test_existing_output_is_never_overwritten_without_force(data, capsys):
    out = data / "keep.npz"
    out.write_bytes(b"precious")
    assert main(["build", "--method", "flat", "--vocab-size", "10", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_info_rejects_a_corrupt_tree(data, capsys):
    (data / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    assert main(["info", str(data / "bad.npz")]) == 2
    assert "not a readable tdlm-tree file" in capsys.readouterr().err


def test_build_tree_app_runs_as_a_script(data):
    out = data / "app.npz"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "apps" / "build-tree"),
            "--method",
            "frequency",
            "--tokens",
            str(data / "tokens.npy"),
            "--branching",
            "16",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert load_tree(out).level_sizes == (300, 19, 2, 1)
