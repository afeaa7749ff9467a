"""Compare TDLM with MDLM at one parameter budget: ``uv run apps/bench BENCH``, five benches.

``memory``: peak training-step memory (fresh process each) with an analytic estimate beside it;
``throughput``: training and sampling tokens/s, interleaved, with MFU. Both, and ``vocab``,
compare MDLM as published (``mdlm``), MDLM at its strongest (``mdlm-chunked``, ``mdlm-torch``:
the library's chunked and fused masked-only head losses) and TDLM, set against MDLM and the
best MDLM (``--models`` adds ``mdlm-masked``, ``mdlm-liger``, ``mdlm-cce``, ``tdlm-masked``).
``quality``: MDLM and TDLM trained on the embedded corpus at equal tokens and equal wall-clock;
``vocab``: memory and training speed against the vocabulary size N (32K to 256K), one report;
``sampling``: sampling tokens/s and peak memory against N at equal sampler steps, each step split
into network, head and sampler, measured where it fits and counted analytically everywhere.
``uv run apps/bench BENCH --help`` lists a bench's flags. Results: docs/benchmarks.md.
"""

import sys
from pathlib import Path

# The benches live in benchmarks/tdlm_bench, outside the libraries (no wheel ships them).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from tdlm_bench.cli import bench_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
