"""The ``tdlm-tree`` command: ``build`` a vocabulary tree from data, ``info`` on a saved one.

Also run as ``uv run apps/build-tree`` (the ``build`` subcommand). Errors print one line and
exit with status 2; an existing ``--out`` file is never overwritten without ``--force``.
"""

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .io import load_tree, save_tree
from .methods import METHODS, build_tree
from .stats import format_stats
from .tree import TreeError, VocabTree

__all__ = ["main"]

class UsageError(Exception):
    """A command-line mistake: reported as one line, exit status 2."""


def _load_npy(path: str, flag: str, ndim: int) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except (OSError, ValueError, EOFError) as error:
        raise UsageError(f"{flag} {path}: not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray) or array.ndim != ndim:
        shape = getattr(array, "shape", "an .npz archive")
        raise UsageError(f"{flag} {path}: expected a {ndim}-D .npy array, got {shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise UsageError(f"{flag} {path}: expected numbers, got dtype {array.dtype}")
    return array


def _branching(text: str) -> int | list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected K or a comma-separated bottom-up list like 16,64, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdlm-tree", description="Build and inspect TDLM vocabulary trees."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build a tree from token counts, ids or vectors")
    build.add_argument(
        "--method",
        choices=METHODS,
        default="cooccurrence",
        help="construction (docs/method.md §2); default: cooccurrence",
    )
    build.add_argument(
        "--counts",
        metavar="NPY",
        help="token counts [N] (frequency; weights for embedding; statistics)",
    )
    build.add_argument(
        "--tokens",
        metavar="NPY",
        help="token-id stream [T] (cooccurrence; counts are derived from it)",
    )
    build.add_argument("--vectors", metavar="NPY", help="one vector per token [N, d] (embedding)")
    build.add_argument(
        "--vocab-size", type=int, metavar="N", help="vocabulary size (default: from the inputs)"
    )
    build.add_argument(
        "--branching",
        type=_branching,
        default=64,
        metavar="K|K1,K2,..",
        help="one K for all levels, or an explicit bottom-up list; default 64",
    )
    build.add_argument(
        "--leaf-cluster-size",
        type=int,
        metavar="C",
        help="children per level-1 node (k_1), with K above it",
    )
    build.add_argument("--seed", type=int, default=0, help="random seed; default 0")
    build.add_argument(
        "--iterations",
        type=int,
        default=8,
        help="balanced k-means refinement passes per level; default 8",
    )
    build.add_argument(
        "--dim", type=int, default=64, help="cooccurrence vector dimension; default 64"
    )
    build.add_argument(
        "--window", type=int, default=2, help="cooccurrence context window each side; default 2"
    )
    build.add_argument(
        "--context-size",
        type=int,
        default=1024,
        help="cooccurrence: number of most frequent tokens used as contexts",
    )
    build.add_argument(
        "--tokenizer-fingerprint", metavar="TEXT", help="record the tokenizer this tree belongs to"
    )
    build.add_argument("--out", required=True, metavar="NPZ", help="where to save the tree")
    build.add_argument("--force", action="store_true", help="overwrite an existing --out file")

    info = commands.add_parser("info", help="validate a saved tree and print its statistics")
    info.add_argument("tree", metavar="NPZ", help="a tree saved by `tdlm-tree build`")
    info.add_argument("--counts", metavar="NPY", help="token counts [N] for the entropy columns")
    info.add_argument("--tokens", metavar="NPY", help="token-id stream [T] to count instead")
    return parser


def _counts_and_tokens(args: argparse.Namespace) -> tuple[np.ndarray | None, np.ndarray | None]:
    if args.counts and args.tokens:
        raise UsageError("give --counts or --tokens, not both")
    tokens = _load_npy(args.tokens, "--tokens", 1) if args.tokens else None
    if tokens is not None and not np.issubdtype(tokens.dtype, np.integer):
        raise UsageError(f"--tokens {args.tokens}: token ids must be integers, got {tokens.dtype}")
    counts = _load_npy(args.counts, "--counts", 1) if args.counts else None
    return counts, tokens


def _vocab_size(args: argparse.Namespace, counts, tokens, vectors) -> int:
    sizes = {
        "--vocab-size": args.vocab_size,
        "--counts": None if counts is None else len(counts),
        "--vectors": None if vectors is None else len(vectors),
    }
    known = {flag: n for flag, n in sizes.items() if n is not None}
    if len(set(known.values())) > 1:
        raise UsageError(f"inconsistent vocabulary sizes: {known}")
    if known:
        return next(iter(known.values()))
    if tokens is not None and tokens.size:
        return int(tokens.max()) + 1
    raise UsageError("give --vocab-size (or an input it can be read from)")


def _build(args: argparse.Namespace) -> tuple[VocabTree, np.ndarray | None]:
    """The tree, and the token counts (given or derived) for its statistics."""
    counts, tokens = _counts_and_tokens(args)
    vectors = _load_npy(args.vectors, "--vectors", 2) if args.vectors else None
    n = _vocab_size(args, counts, tokens, vectors)
    if tokens is not None and tokens.size and (tokens.min() < 0 or tokens.max() >= n):
        raise UsageError(f"--tokens holds ids outside 0..{n - 1}")
    if counts is None and tokens is not None:
        counts = np.bincount(tokens.astype(np.int64), minlength=n)
    return _construct(args, n, counts, tokens, vectors), counts


def _construct(args: argparse.Namespace, n: int, counts, tokens, vectors) -> VocabTree:
    needs = {"frequency": (counts, "--counts or --tokens"), "embedding": (vectors, "--vectors")}
    needs["cooccurrence"] = (tokens, "--tokens")
    given, flags = needs.get(args.method, (True, ""))
    if given is None:
        raise UsageError(f"--method {args.method} needs {flags}")
    options = {
        "embedding": {"iterations": args.iterations},
        "cooccurrence": {
            "dim": args.dim,
            "window": args.window,
            "context_size": args.context_size,
            "iterations": args.iterations,
        },
    }.get(args.method, {})
    return build_tree(
        args.method,
        n,
        args.branching,
        tokens=tokens,
        counts=counts,
        vectors=vectors,
        seed=args.seed,
        leaf_cluster_size=args.leaf_cluster_size,
        tokenizer_fingerprint=args.tokenizer_fingerprint,
        **options,
    )


def _run(args: argparse.Namespace) -> None:
    if args.command == "info":
        tree = load_tree(args.tree)
        counts, tokens = _counts_and_tokens(args)
        if counts is None and tokens is not None:
            counts = np.bincount(tokens.astype(np.int64), minlength=tree.vocab_size)
        print(format_stats(tree, counts))
        return
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"--out {out} exists; pass --force to overwrite it")
    start = time.perf_counter()
    tree, counts = _build(args)
    elapsed = time.perf_counter() - start
    save_tree(tree, out)
    print(format_stats(tree, counts))
    print(f"built in {elapsed:.1f} s; saved to {out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tdlm-tree`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        _run(args)
    except (UsageError, TreeError) as error:
        print(f"tdlm-tree: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
