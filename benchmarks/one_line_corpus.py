"""Peak memory of data preparation on a corpus that is one file of one line (issue 28).

    uv run benchmarks/one_line_corpus.py [--sizes 50,500] [--whole 5,10] [--vocab 4096]
                                         [--out runs/bench/one-line]

For each size in MB a file is written of real text on a single line: the Python standard
library's sources (what the default corpus reads), every line break turned into a space,
repeated to the size. Each file is then prepared as training does it (``prepare_data``: reading,
the BPE trained on the training split, both splits tokenized into the cache; the split falls
inside the one document) in a fresh process, whose peak resident memory (``ru_maxrss``) is the
figure, with the size of the text as one Python string beside it (1, 2 or 4 bytes per character,
by the widest character it holds): what grows with the document beyond its text is the point.
The one document is split in two copies (training and validation), so two strings of the text
are held at the split's peak. ``--whole`` sizes are run a second time with pieces as large as
the document, as before issue 28 (one tokenizer call per document): the blow-up it fixed.

Writes ``one_line.json`` and ``one_line.md`` under ``--out``.
"""

import argparse
import json
import platform
import re
import resource
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

_MB = 10**6

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from tdlm_train import corpus, data
from tdlm_train.corpus import CorpusConfig
from tdlm_train.tokenizer import TokenizerConfig

path, cache, vocab, whole = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if whole:  # before issue 28: a document went to the tokenizer whole
    corpus.PIECE_CHARS = data._BATCH_CHARS = 2**40
start = time.perf_counter()
prepared = data.prepare_data(
    CorpusConfig(source=path, val_fraction=0.05), TokenizerConfig(vocab_size=vocab), cache
)
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "vocab_size": prepared.tokenizer.vocab_size,
    "train_tokens": len(prepared.train_tokens),
    "val_tokens": len(prepared.val_tokens),
}))
"""

_BASELINE = """
import resource
from tdlm_train import data  # noqa: F401  (the imports every preparation pays for)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def write_one_line(path: Path, size_mb: int) -> int:
    """``size_mb`` MB of standard-library source on one line; returns the byte count."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    text = " ".join(
        p.read_text(encoding="utf-8", errors="replace").replace("\n", " ")
        for p in sorted(root.glob("*.py"))
    )
    block = text.encode()
    target = size_mb * _MB
    with open(path, "wb") as f:
        written = 0
        while written < target:
            piece = block[: target - written]
            piece = piece.decode("utf-8", errors="ignore").encode()  # whole characters only
            f.write(piece)
            written += len(piece)
    return written


def str_bytes(path: Path) -> int:
    """The size of the file's text as one Python string: characters times the width CPython
    stores them at (the widest character decides), read in chunks."""
    chars, width = 0, 1
    with open(path, encoding="utf-8", newline="") as f:
        for chunk in iter(lambda: f.read(2**24), ""):
            chars += len(chunk)
            if width < 4 and re.search("[^\\x00-\\uffff]", chunk):
                width = 4
            elif width < 2 and re.search("[^\\x00-\\xff]", chunk):
                width = 2
    return chars * width


def measure(path: Path, vocab: int, whole: bool, limit_bytes: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        cmd = [sys.executable, "-c", _CHILD, str(path), cache, str(vocab), "1" if whole else "0"]

        def cap() -> None:  # a runaway preparation is stopped, not left to take the machine
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

        done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"failed": f"exit {done.returncode}: {tail[0][:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,500", help="MB, comma-separated (pieces)")
    parser.add_argument("--whole", default="5,10", help="MB run whole as before ('' for none)")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--limit_gb", type=float, default=16.0, help="address-space cap per run")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/one-line"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    whole = [int(s) for s in args.whole.split(",") if s]
    baseline = int(subprocess.run(
        [sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True
    ).stdout)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for mode, mbs in (("pieces", sizes), ("whole", whole)):
            for mb in mbs:
                path = Path(folder) / f"one-line-{mb}mb.txt"
                text_bytes = path.stat().st_size if path.exists() else write_one_line(path, mb)
                print(f"{mode} {mb} MB ...", file=sys.stderr, flush=True)
                result = measure(path, args.vocab, mode == "whole", int(args.limit_gb * 2**30))
                row = {"mode": mode, "megabytes": mb, "text_bytes": text_bytes}
                rows.append(row | {"text_str_bytes": str_bytes(path)} | result)
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    environment = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "import_rss_bytes": baseline,
        "vocab": args.vocab,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {"environment": environment, "rows": rows}
    (args.out / "one_line.json").write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        "| mode | file (MB) | text as a str (MiB) | peak RSS (MiB) | beyond imports (MiB) | "
        "beyond imports and 2 strs (MiB) | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['mode']} | {r['megabytes']} | | {r['failed']} | | | |")
            continue
        beyond = r["peak_rss_bytes"] - baseline
        text = r["text_str_bytes"]
        lines.append(
            f"| {r['mode']} | {r['megabytes']} | {text / 2**20:,.0f} | "
            f"{r['peak_rss_bytes'] / 2**20:,.0f} | {beyond / 2**20:,.0f} | "
            f"{(beyond - 2 * text) / 2**20:,.0f} | {r['seconds']:,.0f} |"
        )
    table = "\n".join(lines)
    (args.out / "one_line.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
