"""The benches of issue 6 (and 15): memory, throughput and quality of TDLM against MDLM at one
budget, and memory and speed against the vocabulary size.

``apps/bench`` runs them (:mod:`.cli`); each writes JSON, Markdown and (memory, quality, vocab) PNG
into its output folder. Results on this project's machines are in ``docs/benchmarks.md``.
"""

from .contenders import MODELS, SCALES, Contender, Scale, build_contender, contender_config
from .memory import MemoryOptions, analytic_peak, run_memory
from .quality import QualityOptions, run_quality
from .throughput import ThroughputOptions, run_throughput, step_flops
from .vocab_sweep import VocabSweepOptions, run_vocab_sweep

__all__ = [
    "MODELS",
    "SCALES",
    "Contender",
    "MemoryOptions",
    "QualityOptions",
    "Scale",
    "ThroughputOptions",
    "VocabSweepOptions",
    "analytic_peak",
    "build_contender",
    "contender_config",
    "run_memory",
    "run_quality",
    "run_throughput",
    "run_vocab_sweep",
    "step_flops",
]
