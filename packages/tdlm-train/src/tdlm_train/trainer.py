"""The training loop over a :class:`~tdlm_train.run.Run`: ``step()``, ``validate()``, ``save()``.

Issue 5 "Training" and "Checkpoints". A step is AdamW on tdlm-diffusion's ``training_loss``
(docs/method.md §4's Monte-Carlo NELBO with low-discrepancy times; with ``--condition.probability``
a share of the sequences keep a clean context, §8) with warmup + constant/cosine LR,
clipping, gradient accumulation and the EMA update; ``--kind mdlm`` runs the same loop on the
flat tree with the full-vocabulary head, and ``--kind ar`` trains the causal network on the
next-token NLL (:mod:`.autoregressive`). Validation scores the EMA weights and samples from
them; a checkpoint is the run's state dicts, written atomically by rank 0. :meth:`Trainer.fit`
runs the loop to the budget, checkpoint before validation, and reports to its watchers (progress
bar, metrics log: :mod:`.watchers`), which see the loop from outside it.
"""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from tdlm_diffusion import training_loss

from .autoregressive import next_token_nll
from .checkpoint import latest_checkpoint, save_checkpoint
from .context import draw_clean_context
from .errors import UserError
from .evaluate import Validation, validate
from .inference import sample_texts
from .run import Run
from .runtime import learning_rate

__all__ = ["Trainer", "StepReport", "ValidationReport", "TrainResult", "Watcher"]


@dataclass(frozen=True)
class StepReport:
    step: int
    tokens: int
    nelbo: float  # the step's training NELBO estimate, nats/token
    lr: float
    grad_norm: float
    seconds: float  # since this fit started
    tokens_per_second: float  # this fit's (a resumed run counts from its resume point)


@dataclass(frozen=True)
class ValidationReport:
    step: int
    tokens: int
    seconds: float
    weights: str  # which weights were scored, in words
    validation: Validation
    samples: list[str]


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float  # this invocation's (a resumed run counts from its resume point)
    validation: Validation | None
    samples: list[str] = field(default_factory=list)
    summary: str = ""


@runtime_checkable
class Watcher(Protocol):
    """Sees the loop from outside: every step, every validation, and the end."""

    def on_step(self, report: StepReport) -> None: ...

    def on_validation(self, report: ValidationReport) -> None: ...

    def close(self) -> None: ...


class Trainer:
    def __init__(self, run: Run, watchers: list[Watcher] | None = None) -> None:
        if run.optimizer is None or run.data is None or run.order is None:
            raise ValueError("a run rebuilt for inference cannot be trained")
        self.run, self.watchers = run, list(watchers or [])
        world = run.dist.world_size
        # FSDP's sharded model is its own wrapper; DDP wraps replicas.
        replicas = world > 1 and not run.sharded
        self.network = DistributedDataParallel(run.model) if replicas else run.model
        config = run.config
        self.tokens_per_step = config.batch_size * config.seq_len * config.optim.grad_accum * world
        # Under FSDP every forward pass is a collective: all ranks validate and sample together
        # (rank 0 alone reports); under DDP rank 0 does it alone.
        self.validates = run.dist.is_main or run.sharded
        self.validation: Validation | None = None
        self.samples: list[str] = []
        self._start = time.perf_counter()
        self._start_tokens = run.state.tokens

    # --- one step ------------------------------------------------------------------------
    def step(self) -> StepReport:
        """One optimizer step: ``grad_accum`` micro-batches, clipping, AdamW, the EMA."""
        run, optim = self.run, self.run.config.optim
        lr = self._set_learning_rate()
        nelbo = sum(self._micro_step() for _ in range(optim.grad_accum)) / optim.grad_accum
        if not math.isfinite(nelbo):
            kept = latest_checkpoint(run.folder)
            raise UserError(
                f"the loss became {nelbo} at step {run.state.step + 1}; training stopped. "
                f"Last good checkpoint: {kept or 'none yet'}"
            )
        grad_norm = self._clip_gradients()
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.ema.update(run.model)
        run.state.step += 1
        run.state.tokens += self.tokens_per_step
        seconds = time.perf_counter() - self._start
        trained = run.state.tokens - self._start_tokens
        return StepReport(
            run.state.step, run.state.tokens, nelbo, lr, grad_norm, seconds, trained / seconds
        )

    def _set_learning_rate(self) -> float:
        config = self.run.config
        lr = learning_rate(
            self.run.state.step,
            lr=config.optim.lr,
            warmup=config.optim.warmup_steps,
            schedule=config.optim.schedule,
            max_steps=config.max_steps,
            min_ratio=config.optim.min_lr_ratio,
        )
        for group in self.run.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _micro_step(self) -> float:
        """Forward and backward on the next micro-batch; returns its NELBO."""
        run, diffusion = self.run, self.run.config.diffusion
        indices = run.order.next_indices()
        x = torch.from_numpy(run.data.train_blocks.batch(indices)).to(run.device)
        if run.config.kind == "ar":  # the exact NLL, per token over every position
            nll = next_token_nll(self.network, x, head_loss=diffusion.head_loss).sum() / x.numel()
            (nll / run.config.optim.grad_accum).backward()
            return float(nll.detach())
        result = training_loss(
            run.process,
            self.network,
            x,
            estimator=diffusion.estimator,
            cutoff=diffusion.cutoff,
            level_weights=diffusion.level_weights or None,
            context=draw_clean_context(x, run.config.condition),
            head_loss=diffusion.head_loss,
        )
        (result.loss / run.config.optim.grad_accum).backward()
        return float(result.nelbo)

    def _clip_gradients(self) -> float:
        clip = self.run.config.optim.grad_clip
        if clip <= 0:
            return 0.0
        norm = torch.nn.utils.clip_grad_norm_(self.run.model.parameters(), clip)
        if isinstance(norm, DTensor):  # FSDP: the norm over every shard, replicated
            norm = norm.full_tensor()
        return float(norm)

    # --- validation and checkpoints --------------------------------------------------------
    def validate(self) -> Validation | None:
        """The EMA weights' validation NELBO and samples; tracks the best. ``None`` on a rank
        that does not take part (DDP: rank 0 alone validates)."""
        if not self.validates:
            return None
        run, config = self.run, self.run.config
        run.ema.swap(run.model)
        try:
            self.validation = validate(
                run.process,
                run.model,
                run.data.val_blocks,
                batches=config.eval_batches,
                batch_size=config.batch_size,
                samples_per_level=config.diffusion.eval_samples_per_level,
                token_bytes=run.data.prepared.token_bytes,
                device=run.device,
                seed=config.seed,
            )
            self.samples, _ = sample_texts(
                run.process,
                run.model,
                run.tokenizer,
                count=config.sample_count,
                length=config.seq_len,
                config=run.sampler(),
                device=run.device,
                seed=config.seed + run.state.step,
            )
        finally:
            run.ema.swap(run.model)
        run.state.record_validation(self.validation.nelbo)
        if run.dist.is_main:
            report = ValidationReport(
                run.state.step,
                run.state.tokens,
                time.perf_counter() - self._start,
                run.ema.description,
                self.validation,
                self.samples,
            )
            for watcher in self.watchers:
                watcher.on_validation(report)
        return self.validation

    def save(self) -> Path | None:
        """A checkpoint of every part. Every rank calls it (the RNG states, and FSDP's shards,
        are gathered); rank 0 writes it and gets its path. The run folder's own files are
        written first if it lacks them: a checkpoint is rebuilt from them."""
        states = self.run.state_dict()
        if not self.run.dist.is_main:
            return None
        if not (self.run.folder / "tokenizer.json").is_file():
            self.run.save_files()
        return save_checkpoint(
            self.run.folder, states, self.run.meta(), keep_last=self.run.config.keep_last
        )

    # --- the loop --------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Steps until the budget (``max_steps`` or ``minutes``) is spent; checkpoints and
        validates at their cadence and at the end (the checkpoint first: a failing validation
        must not lose the steps before it). A failure after the first step is one line that
        names the last, intact checkpoint."""
        run, config = self.run, self.run.config
        self._start, self._start_tokens = time.perf_counter(), run.state.tokens
        run.model.train()
        try:
            while not self._should_stop():
                report = self.step()
                for watcher in self.watchers:
                    watcher.on_step(report)
                if report.step % config.checkpoint_every == 0:
                    self.save()
                if report.step % config.eval_every == 0:
                    self.validate()
            step = run.state.step
            if step % config.checkpoint_every:
                self.save()
            if self.validation is None or step % config.eval_every:
                self.validate()
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as error:  # after training started: one line, and what is kept
            raise self._stopped(error) from error
        finally:
            for watcher in self.watchers:
                watcher.close()
        seconds = time.perf_counter() - self._start
        rate = (run.state.tokens - self._start_tokens) / max(seconds, 1e-9)
        return TrainResult(
            run.folder, run.state.step, run.state.tokens, seconds, rate, self.validation,
            self.samples,
        )  # fmt: skip

    def _should_stop(self) -> bool:
        config, step = self.run.config, self.run.state.step
        elapsed = time.perf_counter() - self._start
        stop = bool(config.max_steps and step >= config.max_steps) or bool(
            config.minutes and elapsed >= config.minutes * 60
        )
        if self.run.dist.world_size > 1:  # ranks must agree, or one would wait in all-reduce
            flag = torch.tensor([float(stop)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _stopped(self, error: Exception) -> UserError:
        text = str(error).strip()
        first = text.splitlines()[0][:300] if text else ""
        kept = latest_checkpoint(self.run.folder)
        return UserError(
            f"training stopped at step {self.run.state.step} ({type(error).__name__}: {first}); "
            f"the last checkpoint, {kept or 'none yet'}, is intact"
        )
