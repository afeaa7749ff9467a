"""The benches of issue 6 (and 15): memory, throughput and quality of TDLM against MDLM at one
budget, and memory and speed against the vocabulary size.

``apps/bench`` runs them (:mod:`.cli`); each writes JSON, Markdown and (memory, quality, vocab) PNG
into its output folder. Results on this project's machines are in ``docs/benchmarks.md``.
"""

from .contenders import (
    DEFAULT_MODELS,
    MODELS,
    SCALES,
    Contender,
    Scale,
    bench_models,
    build_contender,
    contender_config,
    parse_contender,
)
from .memory import MemoryOptions, analytic_peak, run_memory
from .quality import QualityOptions, run_quality
from .throughput import ThroughputOptions, run_throughput, step_flops
from .vocab_sweep import VocabSweepOptions, run_vocab_sweep

__all__ = [
    "DEFAULT_MODELS",
    "MODELS",
    "SCALES",
    "Contender",
    "MemoryOptions",
    "QualityOptions",
    "Scale",
    "ThroughputOptions",
    "VocabSweepOptions",
    "analytic_peak",
    "bench_models",
    "build_contender",
    "contender_config",
    "parse_contender",
    "run_memory",
    "run_quality",
    "run_throughput",
    "run_vocab_sweep",
    "step_flops",
]
