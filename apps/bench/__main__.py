"""Compare TDLM with MDLM at one parameter budget: ``uv run apps/bench BENCH``, four benches.

``memory``: peak training-step memory (MDLM, chunked-CE MDLM, TDLM; fresh process each) with an
analytic estimate beside it; ``throughput``: training and sampling tokens/s, interleaved, with
MFU; ``quality``: both trained on the embedded corpus at equal tokens and equal wall-clock;
``vocab``: memory and training speed against the vocabulary size N (32K to 256K), one report.
``uv run apps/bench BENCH --help`` lists a bench's flags. Results: docs/benchmarks.md.
"""

import sys
from pathlib import Path

# The benches live in benchmarks/tdlm_bench, outside the libraries (no wheel ships them).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from tdlm_bench.cli import bench_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
