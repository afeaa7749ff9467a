"""tdlm-train: data, the training run and its loop, checkpoints and evaluation for TDLM/MDLM.

One :class:`Run` owns a training run (process, network, EMA, AdamW, data order, progress, each
with ``state_dict()``); a :class:`Trainer` steps, validates and saves it; :func:`train` runs one
in a guarded run folder; :func:`export_run` writes a trained model as a Hugging Face Hub
folder, which ``Run.from_checkpoint`` loads (as it does hub ids). The apps are parse -> ``Run``
-> print (:mod:`.cli`).
"""

from .config import PRESETS, DiffusionConfig, OptimConfig, RunConfig, preset
from .errors import UserError
from .evaluate import Evaluation, Validation, evaluate_run, validate
from .hub import export_run
from .run import Run, RunData
from .states import TrainState
from .train import train
from .trainer import StepReport, Trainer, TrainResult, ValidationReport, Watcher

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "DiffusionConfig",
    "Evaluation",
    "OptimConfig",
    "Run",
    "RunConfig",
    "RunData",
    "StepReport",
    "TrainResult",
    "TrainState",
    "Trainer",
    "UserError",
    "Validation",
    "ValidationReport",
    "Watcher",
    "evaluate_run",
    "export_run",
    "preset",
    "train",
    "validate",
]
