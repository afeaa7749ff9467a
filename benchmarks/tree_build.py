"""Benchmark: build time of the two data-driven tree constructions at GPT-2 scale.

Issue targets (2-core CPU): an ``embedding`` tree for N = 50,257 random 768-d vectors with K = 64
in at most 60 s, and a ``cooccurrence`` tree from a 10M-token stream in at most 60 s.

    uv run benchmarks/tree_build.py [--out results.json] [--repeats 1]

The token stream is drawn from a Zipf(1) unigram distribution over N = 50,257 tokens: build time
depends on N, the stream length and the dimensions, not on the stream's content. The JSON also
records each tree's SHA-256 (of its parent arrays), to compare across machines: the same on every
BLAS, thread count and CPU (for ``cooccurrence`` but for the rare SVD rounding that
``tdlm_tree.cooccurrence`` estimates).
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import subprocess

import numpy as np
from tdlm_bench.timing import timed

from tdlm_tree import cooccurrence_tree, embedding_tree

N, DIM, K, STREAM = 50_257, 768, 64, 10_000_000


def _digest(tree) -> str:
    return hashlib.sha256(b"".join(p.astype("<i8").tobytes() for p in tree.parents)).hexdigest()


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the figures and environment as JSON here")
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure (median)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, DIM), dtype=np.float32)
    p = 1.0 / np.arange(1, N + 1)
    stream = rng.choice(N, size=STREAM, p=p / p.sum())

    rows = []
    repeats, median = args.repeats, statistics.median
    seconds, tree = timed(
        lambda: embedding_tree(vectors, None, K, seed=0), repeats=repeats, summary=median
    )
    rows.append(("embedding", f"{N} x {DIM} random vectors", tree, seconds))
    seconds, tree = timed(
        lambda: cooccurrence_tree(stream, N, K, seed=0), repeats=repeats, summary=median
    )
    rows.append(("cooccurrence", f"{STREAM:,} Zipf tokens, N = {N}", tree, seconds))

    print("| construction | input | level sizes | seconds | target |")
    print("|---|---|---|---|---|")
    for method, what, tree, seconds in rows:
        print(f"| {method} | {what} | {list(tree.level_sizes)} | {seconds:.1f} | <= 60 |")
    result = {
        "figures": [
            {
                "method": m,
                "input": w,
                "level_sizes": list(t.level_sizes),
                "seconds": s,
                "parents_sha256": _digest(t),
            }
            for m, w, t, s in rows
        ],
        "environment": {
            "numpy": np.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "repeats": args.repeats,
        },
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
