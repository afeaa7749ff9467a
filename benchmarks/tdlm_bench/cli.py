"""``apps/bench memory|throughput|quality|vocab|sampling [options]``: argument parsing for the
benches.

Flags map one to one onto :class:`MemoryOptions`, :class:`ThroughputOptions`,
:class:`QualityOptions`, :class:`VocabSweepOptions` and :class:`SamplingOptions` (their
comments are the help lines);
``quality`` also takes the training run's ``--section.key value`` overrides. Lists are
comma-separated. Outputs go to ``--out`` (default ``runs/bench/<bench>-<date>``).
"""

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from tdlm_train.cli import parse_options, run_app
from tdlm_train.errors import UserError

from .contenders import DEFAULT_MODELS, MODELS
from .report import default_out_dir

__all__ = ["bench_main"]

# The contenders, as each bench comparing them lists them in its --help.
_MODELS_HELP = (
    f"comma-separated contenders, of {','.join(MODELS)} (a kind, a head loss and a spend: "
    f"tdlm_bench.contenders) [{','.join(DEFAULT_MODELS)}, less those that cannot run on the "
    "device, with the reason]"
)

USAGE = (
    "usage: apps/bench memory|throughput|quality|vocab|sampling [--flag value ...] "
    "(--help per bench)"
)

FLAGS = {
    "memory": {
        "scales": "comma-separated: paper (width 768, L 1024, N 50,258) and/or tiny "
        "[paper,tiny; with --vocab-sizes, paper]",
        "vocab_sizes": "comma-separated N: measure the scales at these vocabularies instead",
        "models": _MODELS_HELP,
        "batches": "comma-separated batch sizes [CPU 1,2,4; CUDA doubling until out of memory]",
        "checkpointing": "activation checkpointing, comma-separated: off, selective (every "
        "block, elementwise ops recomputed) and/or all (every block, in full) [off,all]",
        "device": "cpu | cuda [cpu]",
        "dropout": "dropout of the measured models [0.1]",
        "out": "output folder [runs/bench/memory-<date>]",
    },
    "throughput": {
        "scale": "tiny | paper [tiny; with --vocab-sizes, paper]",
        "vocab_sizes": "comma-separated N: run the scale at each of these vocabularies instead",
        "models": _MODELS_HELP,
        "batch": "training batch (sequences) [16]",
        "rounds": "interleaved rounds [5]",
        "train_steps": "timed training steps per model per round [3]",
        "sample_steps": "sampler steps per sampling run, every model; 0: no sampling [64]",
        "sample_batch": "sequences per sampling run [4]",
        "matmul_size": "n of the n x n reference matmul (CPU fp32, CUDA bf16) [2048]",
        "device": "cpu | cuda [cpu]",
        "compile": "torch.compile every backbone: true | false [false]",
        "checkpointing": "comma-separated modes, each model timed in each, interleaved: off, "
        "selective and/or all; the first is the main result [off]",
        "out": "output folder [runs/bench/throughput-<date>]",
    },
    "vocab": {
        "scale": "the scale swept at each N [paper]",
        "vocab_sizes": "comma-separated N [32768,50258,128256,256000]",
        "models": _MODELS_HELP,
        "batches": "memory: comma-separated batches, skipped where they do not fit [1,2]",
        "rounds": "throughput: rounds per model at batch 1 [3]",
        "train_steps": "throughput: timed training steps per model per round [1]",
        "device": "cpu | cuda [cpu]",
        "out": "output folder; finished parts in it are reused [runs/bench/vocab-<date>]",
    },
    "sampling": {
        "scale": "the model scale at each N: paper | tiny [paper]",
        "models": "comma-separated: mdlm and TDLM networks, of tdlm,tdlm@width,tdlm@shallow,"
        "tdlm@none [mdlm,tdlm]",
        "vocab_sizes": "comma-separated N [32768,50258,128256,256000]",
        "batches": "comma-separated batches measured (CPU: where they fit) [1,4]",
        "analytic_batches": "comma-separated batches given by the analytic count only [16,64]",
        "seq_len": "sequence length L [1024]",
        "steps": "sampler steps per run, every model (TDLM spreads them over its levels) [8]",
        "rounds": "interleaved rounds per measured cell [3]",
        "precision": "dtype of the sampler's draws: float64 (the library's default) | float32 "
        "[float64]",
        "device": "cpu | cuda [cpu]",
        "out": "output folder [runs/bench/sampling-<date>]",
    },
    "quality": {
        "minutes": "MDLM's training minutes; TDLM gets its tokens, then its time [8]",
        "data": "corpus source, as --data.source of apps/train [the embedded corpus]",
        "trees": "ablation: comma-separated constructions (frequency,random,embedding)",
        "branchings": "ablation: comma-separated branching K (e.g. 4,16)",
        "leaf_cluster_sizes": "ablation: comma-separated children per level-1 node",
        "allocations": "ablation: comma-separated level time allocations (linear,exponential)",
        "level_weights": "ablation: comma-separated λ_h lists, leaf level first (1:2,2:1)",
        "spends": "ablation: comma-separated --model.spend besides depth (width,shallow,none)",
        "ar": "also train the autoregressive baseline: true | false [true]",
        "embedding_fraction": "trees=embedding: share of the steps for its stage-1 MDLM [0.1]",
        "seeds": "comma-separated seeds; every run is repeated per seed [0,1,2]",
        "eval_every": "steps between validations (learning-curve points) [100]",
        "samples": "generated sequences per model for the unigram entropy [8]",
        "gen_ppl_model": "score samples with this transformers causal LM (e.g. gpt2-large)",
        "merge": "comma-separated finished quality folders that differ only in their seeds: "
        "report them as one into --out (no training)",
        "out": "output folder [runs/bench/quality-<date>]",
    },
}

_LISTS = {
    "scales",
    "vocab_sizes",
    "models",
    "batches",
    "analytic_batches",
    "checkpointing",
    "trees",
    "branchings",
    "leaf_cluster_sizes",
    "allocations",
    "level_weights",
    "spends",
    "seeds",
    "merge",
}
_INT_LISTS = {
    "batches",
    "analytic_batches",
    "vocab_sizes",
    "branchings",
    "leaf_cluster_sizes",
    "seeds",
}


def _convert(name: str, text: str, kind: type):
    try:
        if name in _LISTS:
            item = int if name in _INT_LISTS else str
            return tuple(item(part) for part in text.split(",") if part)
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        return Path(text) if name == "out" else kind(text)
    except ValueError:
        raise UserError(f"--{name.replace('_', '-')}: cannot read {text!r}") from None


def _options(bench: str, argv: Sequence[str]):
    from .memory import MemoryOptions
    from .quality import QualityOptions
    from .sampling import SamplingOptions
    from .throughput import ThroughputOptions
    from .vocab_sweep import VocabSweepOptions

    cls = {
        "memory": MemoryOptions,
        "throughput": ThroughputOptions,
        "quality": QualityOptions,
        "vocab": VocabSweepOptions,
        "sampling": SamplingOptions,
    }[bench]
    values, _, overrides = parse_options(argv, set(FLAGS[bench]), set())
    if overrides and bench != "quality":
        raise UserError(f"unknown options {sorted(overrides)} for apps/bench {bench} (--help)")
    kinds = {f.name: type(f.default) for f in dataclasses.fields(cls) if f.name != "overrides"}
    fields = {
        ("out_dir" if k == "out" else k): _convert(k, v, kinds.get(k, str))
        for k, v in values.items()
    }
    fields.setdefault("out_dir", default_out_dir(bench))
    if bench == "quality":
        fields["overrides"] = overrides
    return cls(**fields)


def bench_main(argv: Sequence[str]) -> int:
    def body() -> int:
        if not argv or argv[0] not in FLAGS:
            if argv and argv[0] in ("-h", "--help"):
                print(USAGE)
                return 0
            raise UserError(USAGE)
        bench, rest = argv[0], list(argv[1:])
        if "-h" in rest or "--help" in rest:
            print(f"usage: apps/bench {bench} [options]\n")
            for name, meaning in FLAGS[bench].items():
                print(f"  --{name.replace('_', '-'):<22} {meaning}")
            if bench == "quality":
                print("  --section.key value      any apps/train option, for every run")
            return 0
        options = _options(bench, rest)
        if bench == "memory":
            from .memory import run_memory as run
        elif bench == "throughput":
            from .throughput import run_throughput as run
        elif bench == "vocab":
            from .vocab_sweep import run_vocab_sweep as run
        elif bench == "sampling":
            from .sampling import run_sampling as run
        else:
            from .quality import run_quality as run
        run(options)
        out = options.out_dir
        print((out / f"{bench}.md").read_text())
        print(
            f"written: {out}/{bench}.json, {bench}.md" + (", PNG" if bench != "throughput" else "")
        )
        return 0

    return run_app(body)


if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
