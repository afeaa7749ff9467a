"""Benchmark: build time and peak memory of every tree construction at modern vocabulary sizes.

Issue 15, item 1: ``flat``, ``random``, ``frequency``, ``embedding`` and ``cooccurrence`` trees
with K = 64 at each N of ``--vocab-sizes`` (default GPT-2's 50,257, Llama 3's 128,256 and 256,000)
on this machine within 5 minutes and 8 GiB each. Earlier target (issue 9): ``embedding`` and
``cooccurrence`` at N = 50,257 within 60 s each.

    uv run benchmarks/tree_build.py [--vocab-sizes 50257,128256,256000] [--out DIR] [--repeats 1]

Inputs, drawn from one seeded generator per N: ``embedding`` gets N x 768 standard normal float32
vectors (unweighted); ``frequency`` the token counts and ``cooccurrence`` the token stream, a
Zipf(1) sample of ``round(10,000,000 N / 50,257)`` tokens: 10M at N = 50,257 as before, and the
same ~199 tokens per vocabulary entry at every N, so that the Zipf tail is seen about as often
(the rarest token's expected count is ~199 / H_N: 17.5 at 50,257, 15.3 at 256,000) and the
counting work grows with N as a real corpus for a larger vocabulary would. Tokens the stream
never holds are reported: ``frequency`` ranks them last (count 0, ties by id), and
``cooccurrence`` gives them the zero vector and zero weight, so they are grouped together.

Each construction runs in a fresh process (so no peak hides another's), after its inputs are
made. Measured there: the wall time of the construction call alone, and the process's peak
resident set during it (``VmHWM`` reset through ``/proc/self/clear_refs`` just before the call):
everything the process held, i.e. the interpreter and numpy (the resident set just before the
call, ``before_gib``, which also holds the inputs), the inputs (``inputs_gib``, their own bytes,
also shown apart) and the construction's working memory. Default glibc malloc, nothing tuned.

Writes ``tree-build.json`` (every figure, the trees' SHA-256 digests of their parent arrays, to
compare across machines, and the environment), ``tree-build.md`` and ``tree-build.png`` (time and
peak memory against N) into ``--out``.
"""

import argparse
import hashlib
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# numpy and tdlm_tree only at the top: each construction runs in a fresh process that imports
# this module, and its peak must not hold torch (which tdlm_bench imports; the parent alone does).
from tdlm_tree import METHODS, build_tree

NAME = "tree-build"
DIM, K, SEED = 768, 64, 0
STREAM_PER_50257 = 10_000_000  # stream tokens at N = 50,257, scaled in proportion to N
TARGET_SECONDS, TARGET_GIB = 300, 8


def _stream_length(n: int) -> int:
    return round(STREAM_PER_50257 * n / 50_257)


def _inputs(method: str, n: int) -> dict[str, np.ndarray]:
    """The method's inputs at vocabulary size ``n``; the draws are those of the earlier, N =
    50,257 benchmark (vectors first, then the stream), so its digests stay comparable."""
    if method in ("flat", "random"):
        return {}
    rng = np.random.default_rng(SEED)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    if method == "embedding":
        return {"vectors": vectors}
    del vectors
    p = 1.0 / np.arange(1, n + 1)
    stream = rng.choice(n, size=_stream_length(n), p=p / p.sum())
    if method == "frequency":
        return {"counts": np.bincount(stream, minlength=n)}
    return {"tokens": stream}


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure(method: str, n: int) -> dict:
    """One construction in this (fresh) process: seconds, peak memory, the tree's shape."""
    inputs = _inputs(method, n)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current resident set
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    tree = build_tree(method, n, K, seed=SEED, **inputs)
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    digest = hashlib.sha256(b"".join(p.astype("<i8").tobytes() for p in tree.parents))
    stream = inputs.get("tokens", inputs.get("counts"))
    unseen = None
    if stream is not None:
        counts = inputs.get("counts", np.bincount(stream, minlength=n))
        unseen = int((counts == 0).sum())
    described = {
        "embedding": f"{n:,} x {DIM} float32",
        "frequency": f"counts of {_stream_length(n):,} tokens",
        "cooccurrence": f"{_stream_length(n):,} tokens",
    }
    return {
        "vocab_size": n,
        "method": method,
        "input": described.get(method, "-"),
        "level_sizes": list(tree.level_sizes),
        "seconds": seconds,
        "peak_gib": peak / 2**30,
        "before_gib": before / 2**30,
        "inputs_gib": sum(a.nbytes for a in inputs.values()) / 2**30,
        "stream_tokens": _stream_length(n) if stream is not None else None,
        "unseen_tokens": unseen,
        "parents_sha256": digest.hexdigest(),
    }


def _in_fresh_process(method: str, n: int) -> dict:
    spawn = multiprocessing.get_context("spawn")  # a new interpreter: nothing inherited
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(_measure, method, n).result()


def _markdown(rows: list[dict]) -> str:
    from tdlm_bench.report import markdown_table

    table = []
    for r in rows:
        inputs = r["input"]
        if r["unseen_tokens"]:
            inputs += f" ({r['unseen_tokens']:,} ids unseen)"
        ok = r["seconds"] <= TARGET_SECONDS and r["peak_gib"] <= TARGET_GIB
        table.append(
            [
                f"{r['vocab_size']:,}",
                r["method"],
                inputs,
                " → ".join(f"{s:,}" for s in r["level_sizes"]),
                f"{r['seconds']:.1f}",
                f"{r['peak_gib']:.2f}",
                f"{r['inputs_gib']:.2f}",
                "yes" if ok else "**no**",
            ]
        )
    headers = ["N", "construction", "input", "levels", "seconds", "peak GiB", "inputs GiB"]
    return markdown_table([*headers, f"<= {TARGET_SECONDS} s, <= {TARGET_GIB} GiB"], table)


def _plot(rows: list[dict], path: Path) -> None:
    from tdlm_bench.report import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        sizes = [r["vocab_size"] for r in mine]
        axes[0].plot(sizes, [r["seconds"] for r in mine], "o-", label=method)
        axes[1].plot(sizes, [r["peak_gib"] for r in mine], "o-", label=method)
    axes[0].axhline(TARGET_SECONDS, color="grey", ls="--", lw=0.8)
    axes[1].axhline(TARGET_GIB, color="grey", ls="--", lw=0.8)
    axes[0].set(title=f"build time, K = {K}", xlabel="vocabulary size N", ylabel="seconds")
    axes[1].set(title="peak resident memory (process)", xlabel="vocabulary size N", ylabel="GiB")
    for ax in axes:
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vocab-sizes", default="50257,128256,256000", help="comma-separated vocabulary sizes N"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench") / NAME)
    parser.add_argument(
        "--repeats", type=int, default=1, help="fresh processes per figure (median s, largest peak)"
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.vocab_sizes.split(",")]
    if min(sizes) < 2 or args.repeats < 1:
        parser.error("--vocab-sizes must be at least 2 each and --repeats at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes:
        for method in METHODS:
            runs = [_in_fresh_process(method, n) for _ in range(args.repeats)]
            row = runs[-1] | {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "peak_gib": max(r["peak_gib"] for r in runs),
            }
            print(
                f"N = {n:,} {method}: {row['level_sizes']} {row['seconds']:.1f} s, "
                f"peak {row['peak_gib']:.2f} GiB",
                flush=True,
            )
            rows.append(row)

    import torch
    from tdlm_bench.report import environment, write_report

    figures = {
        "bench": NAME,
        "environment": environment(torch.device("cpu"))
        | {"numpy": np.__version__, "cpus_allowed": sorted(os.sched_getaffinity(0))},
        "branching": K,
        "targets": {"seconds": TARGET_SECONDS, "peak_gib": TARGET_GIB},
        "repeats": args.repeats,
        "figures": rows,
    }
    _plot(rows, args.out / f"{NAME}.png")
    print(write_report(args.out, NAME, figures, _markdown(rows)).read_text())


if __name__ == "__main__":
    main()
