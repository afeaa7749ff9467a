"""tdlm-diffusion: the tree-structured discrete diffusion process (docs/method.md §3–§6, §8).

Tokens are the leaves of a vocabulary tree (``tdlm_tree.VocabTree``); noising moves each position
up the tree one level at a time, so a network only ever chooses among a node's ``k`` children.
This package holds the schedules, the forward process and its transition matrices, the ELBO
(training loss and per-level evaluation), the ancestral sampler, and the conditioning of both on
known positions (prompts, infilling: :mod:`.conditioning`), and the masked-only and fused
full-vocabulary training losses (:mod:`.head_loss`). It knows no network: any callable
``denoiser(nodes [b, l], level [b]) -> child logits [b, l, k]`` works (:mod:`.protocol`).
"""

from .conditioning import CONTEXT_MODES, Context
from .elbo import (
    child_nll,
    count_nelbo,
    diffusion_loss,
    harmonic_count,
    harmonic_number,
    in_level_nelbo,
    low_discrepancy_times,
    masked_count,
)
from .estimators import (
    COUNT_ESTIMATORS,
    ESTIMATORS,
    NoisedBatch,
    TrainingLoss,
    noised_batch,
    training_loss,
)
from .evaluation import NelboEstimate, bits_per_byte, evaluate_nelbo, perplexity
from .head_loss import (
    CHUNK_LOGITS,
    FUSED_HEAD_LOSSES,
    HEAD_LOSSES,
    check_head_loss,
    head_loss_unavailable,
    linear_nll,
    masked_nll_sum,
)
from .process import ForwardSample, TreeProcess
from .protocol import Denoiser, TimeConditionedDenoiser
from .sampler import (
    SamplerConfig,
    SampleResult,
    ancestral_sample,
    ancestral_sample_step,
    child_distribution,
    step_grid,
    steps_per_level,
)
from .schedules import (
    CosineSchedule,
    DiffusionSchedule,
    InLevelSchedule,
    LinearSchedule,
    PolynomialSchedule,
    ScheduleConfig,
    entropy_allocation,
    exponential_allocation,
    linear_allocation,
    uniform_allocation,
)
from .transitions import MAX_DENSE_NODES, transition_matrix
from .validation import DiffusionInputError

__version__ = "0.1.0"

__all__ = [
    "CHUNK_LOGITS",
    "FUSED_HEAD_LOSSES",
    "HEAD_LOSSES",
    "check_head_loss",
    "head_loss_unavailable",
    "linear_nll",
    "masked_nll_sum",
    "CONTEXT_MODES",
    "COUNT_ESTIMATORS",
    "ESTIMATORS",
    "MAX_DENSE_NODES",
    "Context",
    "CosineSchedule",
    "Denoiser",
    "DiffusionInputError",
    "DiffusionSchedule",
    "ForwardSample",
    "InLevelSchedule",
    "LinearSchedule",
    "NelboEstimate",
    "NoisedBatch",
    "PolynomialSchedule",
    "SampleResult",
    "SamplerConfig",
    "ScheduleConfig",
    "TimeConditionedDenoiser",
    "TrainingLoss",
    "TreeProcess",
    "ancestral_sample",
    "ancestral_sample_step",
    "bits_per_byte",
    "child_distribution",
    "child_nll",
    "count_nelbo",
    "diffusion_loss",
    "entropy_allocation",
    "evaluate_nelbo",
    "exponential_allocation",
    "harmonic_count",
    "harmonic_number",
    "in_level_nelbo",
    "linear_allocation",
    "low_discrepancy_times",
    "noised_batch",
    "masked_count",
    "perplexity",
    "step_grid",
    "steps_per_level",
    "training_loss",
    "transition_matrix",
    "uniform_allocation",
]
