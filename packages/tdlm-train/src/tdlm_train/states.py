"""The run's stateful parts, each with ``state_dict()`` / ``load_state_dict()`` (torchtitan's
``Stateful``), so that saving and resuming are one loop over a dict of them.

The EMA (:class:`~tdlm_train.runtime.Ema`) and the data order
(:class:`~tdlm_train.packing.BlockOrder`) are stateful themselves; this module adds the progress
counters (:class:`TrainState`) and adapters for the parts whose state torch keeps elsewhere:
the network's weights and AdamW's moments (gathered to the single-process layout under FSDP, see
:mod:`.parallel`) and the RNG states of every process (:mod:`.runtime`).
"""

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .errors import UserError
from .parallel import (
    gathered_model_state,
    gathered_optimizer_state,
    load_model_state,
    load_optimizer_state,
)
from .runtime import Dist, gathered_rng_states, restore_rng_state

__all__ = ["Stateful", "TrainState", "ModelState", "OptimizerState", "RngState"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    """Progress: optimizer steps, training tokens seen, and the best validation so far."""

    step: int = 0
    tokens: int = 0
    best_nelbo: float = math.inf
    best_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "best_nelbo": self.best_nelbo,
            "best_step": self.best_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.best_nelbo = float(state.get("best_nelbo", math.inf))
        self.best_step = state.get("best_step")

    def record_validation(self, nelbo: float) -> None:
        if nelbo < self.best_nelbo:
            self.best_nelbo, self.best_step = nelbo, self.step


@dataclass
class ModelState:
    """The network's full weights (a collective under FSDP; rank 0 gets them)."""

    model: nn.Module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return gathered_model_state(self.model)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        try:
            load_model_state(self.model, state)
        except (RuntimeError, KeyError, ValueError) as error:
            raise UserError(f"the saved weights do not fit this model ({error})") from None


@dataclass
class OptimizerState:
    """AdamW's state in torch's single-process layout (a collective under FSDP)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def state_dict(self) -> dict[str, Any]:
        return gathered_optimizer_state(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.model, self.optimizer, state)


@dataclass
class RngState:
    """Every process's torch RNG states (they drive the noise and dropout): rank 0's under
    ``cpu``/``cuda``, rank r's under ``cpu.rank{r}`` (a collective with several processes).

    A process the checkpoint did not have (a run resumed on more processes) is seeded afresh
    from the run's seed, its rank and the step, so no two ranks share noise.
    """

    dist: Dist
    device: torch.device
    seed: int
    progress: TrainState

    def state_dict(self) -> dict[str, torch.Tensor]:
        return gathered_rng_states(self.dist, self.device)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        fresh_seed = self.seed + self.dist.rank + 1_000_003 * self.progress.step
        if not restore_rng_state(state, self.dist, self.device, fresh_seed):
            logger.info("rank %d: no saved RNG state; seeded afresh", self.dist.rank)
