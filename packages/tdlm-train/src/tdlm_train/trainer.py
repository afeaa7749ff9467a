"""The training loop: AdamW, warmup + constant/cosine LR, clipping, accumulation, EMA, DDP or
FSDP2, periodic EMA validation with samples, atomic checkpoints, exact resume, and a summary.

Issue 5 "Training" and "Checkpoints". The loss is tdlm-diffusion's ``training_loss`` (METHOD.md
§4's Monte-Carlo NELBO with low-discrepancy times) on tdlm-nn's ``TreeDiT``; ``--model mdlm``
runs the same loop on the flat tree with the full-vocabulary head.
"""

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from tdlm_diffusion import training_loss
from tdlm_nn import param_breakdown

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .components import RunFiles, build_network, build_process, save_run_files
from .config import RunConfig
from .data import prepare_data, prepare_tree
from .errors import UserError
from .evaluate import Validation, sample_texts, validate
from .metrics import MetricsLog, plot_curves, summary_table
from .overrides import config_from_dict, config_to_dict
from .packing import BlockOrder, PackedBlocks
from .parallel import (
    gathered_model_state,
    gathered_optimizer_state,
    gathered_tensors,
    load_model_state,
    load_optimizer_state,
    local_state_bytes,
    shard,
)
from .run_folder import RunFolderLock, check_room, remove_leftovers
from .runtime import (
    Ema,
    gathered_rng_states,
    learning_rate,
    peak_memory_bytes,
    restore_rng_state,
    setup_distributed,
)

__all__ = ["train", "TrainResult"]

logger = logging.getLogger(__name__)


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


def _default_run_dir(config: RunConfig) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model.kind}"


def _check_resume(config: RunConfig, run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, its config checked before any data work."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        if resume:
            raise UserError(f"--resume: {run_dir} has no checkpoint to resume from")
        return None
    if not resume:
        raise UserError(
            f"{run_dir} already holds checkpoints; pass --resume to continue that "
            "run, or choose another --run_dir"
        )
    try:
        saved = json.loads((latest / "state.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"--resume: {latest}/state.json is unreadable ({error})") from None
    differing = config.differences(config_from_dict(RunConfig, saved, f"{latest}/state.json"))
    if differing:
        raise UserError(
            "--resume: this config differs from the checkpoint's: " + "; ".join(differing)
        )
    return latest


# Room asked of the run folder before any data work (logs, plots, run files); the checkpoints'
# own need is checked once the model's size is known.
_BASE_ROOM = 64 * 2**20


def train(config: RunConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train as ``config`` says; returns the run's summary (rank 0 also writes the run folder).

    Rank 0 holds the run folder's lock for the whole run (a second run on it is refused), and
    checks it is writable with room, and cleans a killed run's leftovers, before any data work.
    """
    ddp, device = setup_distributed(config.device)
    run_dir = Path(config.run_dir) if config.run_dir else _default_run_dir(config)
    config = dataclasses.replace(config, run_dir=str(run_dir))
    with RunFolderLock(run_dir) if ddp.is_main else contextlib.nullcontext():
        if ddp.is_main:
            check_room(run_dir, _BASE_ROOM, "a run")
            for path in remove_leftovers(run_dir):
                logger.info("removed %s, left by a run that was killed", path)
        latest = _check_resume(config, run_dir, resume)
        return _train(config, ddp, device, run_dir, latest, progress)


def _train(config: RunConfig, ddp, device, run_dir: Path, latest, progress: bool) -> TrainResult:
    torch.manual_seed(config.seed + ddp.rank)

    # Data, tokenizer and tree: rank 0 builds the caches, the others then read them.
    if not ddp.is_main:
        ddp.barrier()
    data = prepare_data(config.data, config.tokenizer, Path(config.cache_dir))
    tree = prepare_tree(config.tree, data, flat=config.model.kind == "mdlm")
    if ddp.is_main:
        ddp.barrier()
    counts = np.bincount(np.asarray(data.train_tokens), minlength=data.tokenizer.vocab_size)
    process = build_process(config, tree, counts).to(device)
    model = build_network(config, tree, device)
    breakdown = param_breakdown(model)
    if ddp.is_main:  # weights, EMA and AdamW: 16 bytes per parameter, per checkpoint kept
        kept = config.keep_last + 2  # the newest ones, the best one, the one being written
        check_room(run_dir, kept * 16 * breakdown.total, f"keeping {kept} checkpoints")
    # FSDP needs a process group (torchrun, even with one process); without one it has
    # nothing to shard and the run is a plain single-process one.
    sharded = config.parallel == "fsdp" and dist.is_initialized()
    if sharded:  # before the EMA and AdamW take their (then sharded) copies of the weights
        shard(model, device)
    elif config.parallel == "fsdp":
        logger.info("--parallel fsdp: a single process without torchrun; nothing to shard")
    ema = Ema(model, config.optim.ema_decay)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.optim.lr,
        betas=tuple(config.optim.betas),
        eps=1e-8,
        weight_decay=config.optim.weight_decay,
    )
    train_blocks = PackedBlocks(
        data.train_tokens, config.seq_len, data.tokenizer.bos_id, data.tokenizer.eos_id
    )
    val_blocks = PackedBlocks(
        data.val_tokens, config.seq_len, data.tokenizer.bos_id, data.tokenizer.eos_id
    )
    if len(val_blocks) == 0:
        raise UserError(
            f"the validation split has fewer than {config.seq_len} tokens; lower "
            "--seq_len or raise --data.val_fraction"
        )
    order = BlockOrder(
        len(train_blocks),
        config.batch_size,
        seed=config.seed,
        rank=ddp.rank,
        world_size=ddp.world_size,
    )

    step, tokens_seen, best, best_step = 0, 0, math.inf, None
    if latest is not None:
        ckpt = load_checkpoint(latest)
        try:
            load_model_state(model, ckpt.model)
        except (RuntimeError, KeyError, ValueError) as error:
            raise UserError(f"checkpoint {latest} does not fit this model ({error})") from None
        if "ema_updates" not in ckpt.state:
            raise UserError(f"checkpoint {latest} predates the EMA warm-up; it cannot be resumed")
        ema.load_state_dict({"shadow": ckpt.ema, "updates": ckpt.state["ema_updates"]})
        load_optimizer_state(model, optimizer, ckpt.optimizer)
        step, tokens_seen = ckpt.state["step"], ckpt.state["tokens"]
        # A rank the checkpoint did not have (resumed on more processes) gets fresh noise.
        fresh_seed = config.seed + ddp.rank + 1_000_003 * step
        if not restore_rng_state(ckpt.rng, ddp, device, fresh_seed):
            logger.info("rank %d: no saved RNG state; seeded afresh", ddp.rank)
        order.load_state_dict(ckpt.state["data_order"])
        best, best_step = ckpt.state.get("best_nelbo", math.inf), ckpt.state.get("best_step")
        logger.info("resumed from %s (step %d)", latest, step)

    # FSDP's sharded model is its own wrapper; DDP wraps replicas.
    wrapped = DistributedDataParallel(model) if ddp.world_size > 1 and not sharded else model
    # Under FSDP every forward pass is a collective: all ranks validate and sample together
    # (rank 0 alone logs); under DDP rank 0 does it alone. Every rank takes part in a
    # checkpoint (its RNG state, and under FSDP its shards); rank 0 alone writes it.
    collective = sharded
    log = MetricsLog(run_dir if ddp.is_main else None)
    if ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_files(run_dir, RunFiles(config, data.tokenizer, tree, counts))
    sampler = config.diffusion.sampler(tree.depth)
    level_weights = config.diffusion.level_weights or None
    tokens_per_step = config.batch_size * config.seq_len * config.optim.grad_accum * ddp.world_size

    last_validation: Validation | None = None
    samples: list[str] = []

    def evaluate_now() -> Validation:
        ema.swap(model)
        try:
            return validate(
                process,
                model,
                val_blocks,
                batches=config.eval_batches,
                batch_size=config.batch_size,
                samples_per_level=config.diffusion.eval_samples_per_level,
                token_bytes=data.token_bytes,
                device=device,
                seed=config.seed,
            )
        finally:
            ema.swap(model)

    def samples_now() -> list[str]:
        ema.swap(model)
        try:
            texts, _ = sample_texts(
                process,
                model,
                data.tokenizer,
                count=config.sample_count,
                length=config.seq_len,
                config=sampler,
                device=device,
                seed=config.seed + step,
            )
            return texts
        finally:
            ema.swap(model)

    def validate_and_log(elapsed: float) -> None:
        """EMA validation + samples: logged, printed, and tracked for the best checkpoint."""
        nonlocal last_validation, samples, best, best_step
        last_validation, samples = evaluate_now(), samples_now()
        if not ddp.is_main:
            return
        record = {
            "kind": "val",
            "step": step,
            "tokens": tokens_seen,
            "seconds": elapsed,
            "weights": ema.description,
        }
        figures = dataclasses.asdict(last_validation)
        figures["val_tokens"] = figures.pop("tokens")  # "tokens" means training tokens seen
        log.write(record | figures | {"sample": samples[0][:400]})
        levels = ", ".join(f"{v:.3f}" for v in last_validation.level_nelbo)
        bar.write(
            f"step {step}: val NELBO {last_validation.nelbo:.4f} (levels {levels}), "
            f"PPL {last_validation.perplexity:.2f}, BPB {last_validation.bits_per_byte:.4f}"
            f"\n  sample: {samples[0][:160]!r}"
        )
        if last_validation.nelbo < best:
            best, best_step = last_validation.nelbo, step

    def checkpoint_now() -> None:
        """Every rank calls it: the RNG states (and FSDP's shards) are gathered; rank 0 writes."""
        rng = gathered_rng_states(ddp, device)
        if not (ddp.is_main or sharded):
            return
        weights, averages = gathered_model_state(model), gathered_tensors(ema.shadow)
        moments = gathered_optimizer_state(model, optimizer)
        if not ddp.is_main:
            return
        state = {
            "config": config_to_dict(config),
            "tokens": tokens_seen,
            "best_nelbo": best,
            "best_step": best_step,
            "ema_updates": ema.updates,
            # Ranks advance in lockstep, so one position (epoch, step) serves them all.
            "data_order": order.state_dict(),
            "tokenizer_fingerprint": data.tokenizer.fingerprint,
            "tree": {"file": "tree.npz", "level_sizes": list(tree.level_sizes)},
            "versions": {"torch": torch.__version__},
        }
        save_checkpoint(
            run_dir,
            step=step,
            model=weights,
            ema=averages,
            optimizer=moments,
            rng=rng,
            state=state,
            keep_last=config.keep_last,
            best_step=best_step,
        )

    bar = _progress_bar(config, step, enabled=progress and ddp.is_main)
    start, start_tokens = time.perf_counter(), tokens_seen
    model.train()
    try:
        while not _should_stop(config, step, time.perf_counter() - start, ddp):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(
                    step,
                    lr=config.optim.lr,
                    warmup=config.optim.warmup_steps,
                    schedule=config.optim.schedule,
                    max_steps=config.max_steps,
                    min_ratio=config.optim.min_lr_ratio,
                )
            nelbo_sum = 0.0
            for _ in range(config.optim.grad_accum):
                x = torch.from_numpy(train_blocks.batch(order.next_indices())).to(device)
                result = training_loss(
                    process,
                    wrapped,
                    x,
                    estimator=config.diffusion.estimator,
                    cutoff=config.diffusion.cutoff,
                    level_weights=level_weights,
                )
                (result.loss / config.optim.grad_accum).backward()
                nelbo_sum += float(result.nelbo)
            nelbo = nelbo_sum / config.optim.grad_accum
            if not math.isfinite(nelbo):
                kept = latest_checkpoint(run_dir)
                raise UserError(
                    f"the loss became {nelbo} at step {step + 1}; training stopped. "
                    f"Last good checkpoint: {kept or 'none yet'}"
                )
            grad_norm = (
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
                if config.optim.grad_clip > 0
                else torch.tensor(0.0)
            )
            if isinstance(grad_norm, DTensor):  # FSDP: the norm over every shard, replicated
                grad_norm = grad_norm.full_tensor()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)
            step += 1
            tokens_seen += tokens_per_step
            elapsed = time.perf_counter() - start
            if step % config.log_every == 0:
                log.write(
                    {
                        "kind": "train",
                        "step": step,
                        "tokens": tokens_seen,
                        "nelbo": nelbo,
                        "lr": optimizer.param_groups[0]["lr"],
                        "grad_norm": float(grad_norm),
                        "seconds": elapsed,
                    }
                )
            trained = tokens_seen - start_tokens
            bar.set_postfix(
                step=step, loss=f"{nelbo:.3f}", tok_s=f"{trained / elapsed:,.0f}", refresh=False
            )
            bar.update(_bar_advance(config, bar, step, elapsed))
            # The checkpoint first: a failing validation must not lose the steps before it.
            if step % config.checkpoint_every == 0:
                checkpoint_now()
            if (ddp.is_main or collective) and step % config.eval_every == 0:
                validate_and_log(elapsed)
        seconds = time.perf_counter() - start
        if step % config.checkpoint_every:
            checkpoint_now()
        if (ddp.is_main or collective) and (last_validation is None or step % config.eval_every):
            validate_and_log(seconds)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as error:  # after training started: one line, and what is kept
        logger.debug("training stopped", exc_info=True)
        kept = latest_checkpoint(run_dir)
        raise UserError(
            f"training stopped at step {step} ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0][:300] if str(error).strip() else ''}); "
            f"the last checkpoint, {kept or 'none yet'}, is intact"
        ) from error
    finally:
        bar.close()
    state_bytes = local_state_bytes(model, optimizer, ema)
    if ddp.is_main:
        plot_curves(run_dir, f"{config.model.kind} ({tree.level_sizes}), {config.data.source}")
    log.close()
    rate = (tokens_seen - start_tokens) / max(seconds, 1e-9)
    result = TrainResult(run_dir, step, tokens_seen, seconds, rate, last_validation, samples)
    if ddp.is_main:
        result.summary = _summary(
            config, result, breakdown, tree, peak_memory_bytes(device), state_bytes, ddp, ema
        )
        (run_dir / "summary.txt").write_text(
            result.summary + "\n\nsample:\n" + "\n---\n".join(samples) + "\n"
        )
    ddp.barrier()
    return result


def _should_stop(config: RunConfig, step: int, elapsed: float, ddp) -> bool:
    stop = bool(config.max_steps and step >= config.max_steps) or bool(
        config.minutes and elapsed >= config.minutes * 60
    )
    if ddp.world_size > 1:  # ranks must agree, or one would wait forever in all-reduce
        flag = torch.tensor([float(stop)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item())
    return stop


def _progress_bar(config: RunConfig, step: int, *, enabled: bool):
    from tqdm.auto import tqdm

    if config.max_steps:
        return tqdm(
            total=config.max_steps,
            initial=step,
            unit="step",
            disable=not enabled,
            dynamic_ncols=True,
        )
    return tqdm(
        total=round(config.minutes * 60),
        unit="s",
        disable=not enabled,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total}s [{elapsed}<{remaining}{postfix}]",
    )


def _bar_advance(config: RunConfig, bar, step: int, elapsed: float) -> float:
    if config.max_steps:
        return 1.0
    return float(max(0.0, min(elapsed, bar.total) - bar.n))


def _summary(
    config, result: TrainResult, breakdown, tree, peak: int, state_bytes: int, ddp, ema: Ema
) -> str:
    v = result.validation
    rows = [
        (
            "model",
            f"{config.model.kind} / {config.model.preset} preset, tree levels "
            f"{list(tree.level_sizes)}",
        ),
        (
            "parameters",
            f"{breakdown.total:,} (head {breakdown.head:,} = {100 * breakdown.head_share:.2f}%)",
        ),
        ("steps", f"{result.steps:,}"),
        ("tokens", f"{result.tokens:,}"),
        ("tokens/s", f"{result.tokens_per_second:,.0f}"),
        ("peak memory", f"{peak / 2**20:,.0f} MiB"),
        (
            "weights+AdamW+EMA",
            f"{state_bytes / 2**20:,.1f} MiB per process ({ddp.world_size} x {config.parallel})",
        ),
    ]
    if v is not None:
        rows += [("validated on", ema.description), ("val NELBO", f"{v.nelbo:.4f} nats/token")]
        rows += [(f"  level {h}", f"{x:.4f}") for h, x in enumerate(v.level_nelbo)]
        rows += [("val PPL (bound)", f"{v.perplexity:.3f}"), ("val BPB", f"{v.bits_per_byte:.4f}")]
    rows.append(("run folder", str(result.run_dir)))
    return summary_table(rows)
