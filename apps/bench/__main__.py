"""Compare TDLM with MDLM at one parameter budget: ``uv run apps/bench memory|throughput|quality``.

``memory``: peak training-step memory (MDLM, chunked-CE MDLM, TDLM; fresh process each) with an
analytic estimate beside it; ``throughput``: training and sampling tokens/s, interleaved, with
MFU; ``quality``: both trained on the embedded corpus at equal tokens and equal wall-clock.
``uv run apps/bench BENCH --help`` lists a bench's flags. Results: docs/benchmarks.md.
"""

import sys

from tdlm_train.bench.cli import bench_main

if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
