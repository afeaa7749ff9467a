"""The training run's configuration: nested keyword-only dataclasses, and the presets.

Every field can be set from the command line as ``--section.field value`` (see
:mod:`.overrides`); the trailing comment on each field is its ``--help`` line. The resolved
config is saved with every run (``config.json``) and every checkpoint. Presets are plain
functions in :data:`PRESETS`: ``tiny`` (the out-of-the-box CPU run on the standard library's
sources) and ``owt-small`` (the paper's OpenWebText setting on GPUs).
"""

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tdlm_diffusion import (
    COUNT_ESTIMATORS,
    ESTIMATORS,
    HEAD_LOSSES,
    SamplerConfig,
    ScheduleConfig,
)
from tdlm_nn import NetworkConfig

from .corpus import CorpusConfig
from .data import TreeConfig
from .errors import UserError
from .overrides import config_from_dict
from .tokenizer import TokenizerConfig

__all__ = [
    "KINDS",
    "run_config_from_dict",
    "ConditionConfig",
    "DiffusionConfig",
    "OptimConfig",
    "RunConfig",
    "PRESETS",
    "preset",
]


# tdlm: the vocabulary tree; mdlm: the flat tree (a full-vocabulary head); ar: MDLM's network
# with causal attention, trained on the next token (the autoregressive baseline).
KINDS = ("tdlm", "mdlm", "ar")


@dataclass(frozen=True, kw_only=True)
class DiffusionConfig:
    """The process (tdlm-diffusion's own ``ScheduleConfig``), the training estimator, and the
    sampler (tdlm-diffusion's ``SamplerConfig``) of the samples shown during training."""

    estimator: str = "cutoff"  # training NELBO estimator: cutoff | count | harmonic | continuous
    cutoff: float = 1e-3  # the cutoff estimator's epsilon: in-level times s drawn in [eps, 1]
    level_weights: tuple[float, ...] = ()  # training-only per-level loss weights (empty: all 1)
    # How the training loss's masked cross-entropy is computed; memory and time, not the loss:
    head_loss: str = "full"  # full | masked | chunked | torch | liger | cce (docs/method.md)
    eval_samples_per_level: int = 1  # noise draws per level in validation NELBO estimates
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise UserError(
                f"unknown --diffusion.estimator {self.estimator!r} ({', '.join(ESTIMATORS)})"
            )
        if not 0 < self.cutoff < 1:
            raise UserError(f"--diffusion.cutoff must lie in (0, 1), got {self.cutoff}")
        if self.head_loss not in HEAD_LOSSES:
            raise UserError(
                f"unknown --diffusion.head_loss {self.head_loss!r} ({', '.join(HEAD_LOSSES)})"
            )
        if self.eval_samples_per_level < 1:
            raise UserError(
                "--diffusion.eval_samples_per_level must be >= 1, got "
                f"{self.eval_samples_per_level}"
            )


@dataclass(frozen=True, kw_only=True)
class ConditionConfig:
    """Clean-context training (docs/method.md §8), off by default: a share of the training sequences
    keep a random prefix (and some also a suffix) at their leaves, shown to the network as
    leaves and left out of the loss, so that it learns to read exact context at every level
    (``apps/sample --prompt/--infill`` and ``apps/eval --condition`` then use ``clean``)."""

    probability: float = 0.0  # share of training sequences given a clean context (0: off)
    max_fraction: float = 0.5  # a kept prefix or suffix covers up to this share of the block
    suffix: float = 0.5  # share of those sequences that also keep a suffix (for infilling)

    def __post_init__(self) -> None:
        for name in ("probability", "suffix"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"--condition.{name} must lie in [0, 1], got {value}")
        if not 0 < self.max_fraction <= 0.5:  # prefix + suffix must leave a position to learn
            raise UserError(
                f"--condition.max_fraction must lie in (0, 0.5], got {self.max_fraction}"
            )


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = 1e-3  # AdamW peak learning rate
    betas: tuple[float, ...] = (0.9, 0.999)  # AdamW betas
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # linear warmup steps
    schedule: str = "constant"  # after warmup: constant | cosine (to min_lr_ratio at max_steps)
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    grad_clip: float = 1.0  # global gradient-norm clip (0: off)
    grad_accum: int = 1  # micro-batches per optimizer step
    ema_decay: float = 0.999  # EMA of weights, used for validation and sampling (0: off)

    def __post_init__(self) -> None:
        problems = []
        if self.schedule not in ("constant", "cosine"):
            problems.append(f"--optim.schedule must be constant or cosine, got {self.schedule!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"--optim.lr must be a positive number, got {self.lr}")
        if self.grad_accum < 1 or not 0 <= self.ema_decay < 1:
            problems.append("need --optim.grad_accum >= 1 and 0 <= --optim.ema_decay < 1")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(f"--optim.betas takes two numbers in [0, 1), got {self.betas}")
        for name in ("weight_decay", "grad_clip", "min_lr_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"--optim.{name} must be a number >= 0, got {value}")
        if self.warmup_steps < 0:
            problems.append(f"--optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        refuse(problems)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One training run. Its sections are the libraries' own configs where one exists
    (``model``: tdlm-nn's ``NetworkConfig``; ``diffusion.schedule`` / ``diffusion.sampler``:
    tdlm-diffusion's ``ScheduleConfig`` / ``SamplerConfig``), each building its component."""

    kind: str = "tdlm"  # tdlm (vocabulary tree) | mdlm (flat tree) | ar (causal, next token)
    run_dir: str = ""  # output folder (default: runs/<date>-<time>-<model>)
    cache_dir: str = ".cache/tdlm"  # tokenizer, token and tree caches
    seed: int = 0  # seeds weights, noise and data order
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    parallel: str = "ddp"  # across torchrun processes: ddp (replicas) | fsdp (FSDP2 shards)
    batch_size: int = 16  # sequences per micro-batch per process
    seq_len: int = 128  # tokens per packed block (BOS + L-2 tokens + EOS)
    max_steps: int = 0  # optimizer steps (0: until --minutes runs out)
    minutes: float = 7.0  # wall-clock budget of the training loop (0: none; needs max_steps)
    log_every: int = 10  # steps between metric lines
    eval_every: int = 250  # steps between validations (and samples)
    eval_batches: int = 8  # validation batches per validation
    checkpoint_every: int = 250  # steps between checkpoints
    keep_last: int = 2  # checkpoints kept besides the best
    sample_count: int = 2  # sequences sampled at each validation
    data: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tree: TreeConfig = field(default_factory=TreeConfig)
    model: NetworkConfig = field(default_factory=NetworkConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"--kind (--model) must be tdlm, mdlm or ar, got {self.kind!r}")
        if self.kind == "ar" and (self.condition.probability or self.model.time_conditioning):
            problems.append(
                "--kind ar reads every earlier token and no diffusion time: it takes neither "
                "--condition.probability nor --model.time_conditioning"
            )
        if self.parallel not in ("ddp", "fsdp"):
            problems.append(f"--parallel must be ddp or fsdp, got {self.parallel!r}")
        if self.parallel == "fsdp" and self.model.compile:
            problems.append(
                "--model.compile with --parallel fsdp is not supported yet (compile per block "
                "before sharding is future work); drop one of them"
            )
        if self.batch_size < 1 or self.seq_len < 3:
            problems.append("need --batch_size >= 1 and --seq_len >= 3")
        if self.seed < 0:
            problems.append(f"--seed must be >= 0, got {self.seed}")
        problems += self._budget_problems()
        if self.diffusion.estimator in COUNT_ESTIMATORS and self.model.time_conditioning:
            problems.append(
                f"--diffusion.estimator {self.diffusion.estimator} needs a network that does not "
                "see s; with --model.time_conditioning use continuous or cutoff"
            )
        refuse(problems)

    def _budget_problems(self) -> list[str]:
        if not math.isfinite(self.minutes) or self.minutes < 0 or self.max_steps < 0:
            return [
                f"--minutes and --max_steps must be >= 0, got {self.minutes} and {self.max_steps}"
            ]
        problems = []
        if self.max_steps == 0 and self.minutes == 0:
            problems.append("give a budget: --max_steps > 0 or --minutes > 0")
        cadences = ("log_every", "eval_every", "checkpoint_every", "keep_last", "eval_batches")
        low = [f"--{name} {getattr(self, name)}" for name in cadences if getattr(self, name) < 1]
        low += [f"--sample_count {self.sample_count}"] if self.sample_count < 1 else []
        if low:
            problems.append(f"must be >= 1: {', '.join(low)}")
        return problems

    def with_run_dir(self) -> "RunConfig":
        """This config with its run folder named (default: ``runs/<date>-<time>-<kind>``)."""
        if self.run_dir:
            return self
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return dataclasses.replace(self, run_dir=str(Path("runs") / f"{stamp}-{self.kind}"))

    def differences(self, saved: "RunConfig") -> list[str]:
        """What stops resuming ``saved``'s run with this config: ``field: checkpoint X, now Y``
        per differing field. Budgets, cadences, device, folders, the parallel strategy and
        activation checkpointing may change; everything that shapes the run may not."""
        free = {
            "run_dir",
            "cache_dir",
            "device",
            "parallel",  # checkpoints are gathered: either strategy resumes either's run
            "max_steps",
            "minutes",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_last",
            "sample_count",
            # Recomputing activations changes memory and time, never the function or the state.
            "model.checkpoint_blocks",
            "model.recompute",
            # So does computing the masked cross-entropy from fewer logits, or fused.
            "diffusion.head_loss",
        }
        mine, theirs = _flat(dataclasses.asdict(self)), _flat(dataclasses.asdict(saved))
        return [
            f"{key}: checkpoint {theirs.get(key)!r}, now {mine.get(key)!r}"
            for key in sorted(set(mine) | set(theirs))
            if key not in free and mine.get(key) != theirs.get(key)
        ]


def refuse(problems: list[str]) -> None:
    """One ``UserError`` naming every problem found, a line each (none: nothing happens)."""
    if problems:
        raise UserError("\n".join(problems))


# Where fields of configs saved before the run nested the libraries' configs went.
_MOVED = {
    ("model", "kind"): ("kind",),
    ("diffusion", "alpha"): ("diffusion", "schedule", "alpha"),
    ("diffusion", "allocation"): ("diffusion", "schedule", "allocation"),
    ("diffusion", "gamma"): ("diffusion", "schedule", "gamma"),
    ("diffusion", "sample_steps"): ("diffusion", "sampler", "steps"),
    ("diffusion", "temperature"): ("diffusion", "sampler", "temperature"),
    ("diffusion", "top_p"): ("diffusion", "sampler", "top_p"),
}


def run_config_from_dict(data: dict, where: str) -> RunConfig:
    """A saved run config (``config.json``, a checkpoint's ``state.json``), run folders written
    before the libraries' configs were nested included."""
    if isinstance(data, dict):
        data = copy.deepcopy(data)
        for (section, name), target in _MOVED.items():
            if isinstance(data.get(section), dict) and name in data[section]:
                value = data[section].pop(name)
                parent = data
                for key in target[:-1]:
                    parent = parent.setdefault(key, {})
                parent[target[-1]] = value
    return config_from_dict(RunConfig, data, where)


def _flat(values: dict, prefix: str = "") -> dict:
    """``{"model": {"n_blocks": 4}}`` as ``{"model.n_blocks": 4}``."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def tiny() -> RunConfig:
    """The out-of-the-box run: tiny TDLM on the standard library's sources, CPU, minutes.

    No alternative to its tree and schedule (co-occurrence, K = 64, uniform allocation, λ = 1)
    beat them on both code and prose (docs/benchmarks.md, issue 10).
    """
    return RunConfig()


def owt_small() -> RunConfig:
    """The paper's setting: OpenWebText, GPT-2 tokenizer, L = 1024, small model, on GPUs."""
    return RunConfig(
        batch_size=16,
        seq_len=1024,
        max_steps=1_000_000,
        minutes=0.0,
        log_every=100,
        eval_every=10_000,
        checkpoint_every=10_000,
        data=CorpusConfig(source="hf:openwebtext", val_fraction=0.0005),
        tokenizer=TokenizerConfig(name="gpt2"),
        model=NetworkConfig(preset="small"),
        optim=OptimConfig(lr=3e-4, warmup_steps=2500, ema_decay=0.9999),
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {"tiny": tiny, "owt-small": owt_small}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise UserError(f"unknown --preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
