"""``train(config)``: a guarded run folder, a :class:`~tdlm_train.run.Run`, a
:class:`~tdlm_train.trainer.Trainer` to the budget, then the plot and the summary table.

The run folder is the run's property: rank 0 claims it (a folder of the user's files is refused
unless ``adopt``, :mod:`.run_folder`), holds its lock for the whole run (a second run on it is
refused, naming the holder's pid), checks it is writable with room and removes a killed run's
marked leftovers, and checks that a ``--resume`` is compatible (naming each differing field)
before any data work; the resume then checks its tokenizer, tree and corpus (:mod:`.run`).
"""

import contextlib
import json
import logging
from pathlib import Path

from tdlm_nn import param_breakdown

from .atomic import atomic_write
from .checkpoint import latest_checkpoint
from .config import RunConfig, run_config_from_dict
from .errors import UserError
from .metrics import MetricsLog, plot_curves, summary_table
from .parallel import local_state_bytes
from .run import Run
from .run_folder import RunFolderLock, check_room, claim_run_folder, remove_leftovers
from .runtime import peak_memory_bytes, setup_distributed
from .trainer import Trainer, TrainResult
from .watchers import MetricsRecorder, ProgressBar

__all__ = ["train", "run_summary"]

logger = logging.getLogger(__name__)

# Room asked of the run folder before any data work (logs, plots, run files); the checkpoints'
# own need is checked once the model's size is known.
_BASE_ROOM = 64 * 2**20


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    adopt: bool = False,
    allow_changed_data: bool = False,
) -> TrainResult:
    """Train as ``config`` says; returns the run's summary (rank 0 also writes the run folder).

    ``adopt``: train in a non-empty folder TDLM did not make, beside its files (none may bear a
    name the run writes). ``allow_changed_data``: resume on a corpus that changed since the
    checkpoint, with the run's own tokenizer and tree.
    """
    dist_info, device = setup_distributed(config.device)
    config = config.with_run_dir()
    folder = Path(config.run_dir)
    if dist_info.is_main:
        claim_run_folder(folder, adopt=adopt)
    with RunFolderLock(folder) if dist_info.is_main else contextlib.nullcontext():
        if dist_info.is_main:
            check_room(folder, _BASE_ROOM, "a run")
            for path in remove_leftovers(folder):
                logger.info("removed %s, left by a run that was killed", path)
        latest = _check_resume(config, folder, resume)
        if latest is None:
            run = Run.from_config(config, dist_info=dist_info, device=device)
        else:
            run = Run.from_checkpoint(
                latest,
                training=True,
                config=config,
                dist_info=dist_info,
                device=device,
                allow_changed_data=allow_changed_data,
            )
        if dist_info.is_main:  # weights, EMA and AdamW: 16 bytes per parameter, per checkpoint
            kept = config.keep_last + 2  # the newest ones, the best one, the one being written
            total = param_breakdown(run.model).total
            check_room(folder, kept * 16 * total, f"keeping {kept} checkpoints")
        return _fit(run, progress)


def _fit(run: Run, progress: bool) -> TrainResult:
    main = run.dist.is_main
    run.save_files()
    watchers = []
    if main:
        watchers = [
            ProgressBar(run.config, run.state.step, enabled=progress),
            MetricsRecorder(MetricsLog(run.folder), run.config.log_every),
        ]
    result = Trainer(run, watchers).fit()
    if main:
        title = f"{run.config.kind} ({run.tree.level_sizes}), {run.config.data.source}"
        plot_curves(run.folder, title)
        result.summary = run_summary(run, result)
        text = result.summary + "\n\nsample:\n" + "\n---\n".join(result.samples) + "\n"
        atomic_write(run.folder / "summary.txt", lambda tmp: tmp.write_text(text))
    run.dist.barrier()
    return result


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
    differing = config.differences(run_config_from_dict(saved, f"{latest}/state.json"))
    if differing:
        raise UserError(
            "--resume: this config differs from the checkpoint's: " + "; ".join(differing)
        )
    return latest


def run_summary(run: Run, result: TrainResult) -> str:
    """The end-of-run table: model, size, budget, speed, memory and the EMA validation."""
    config, breakdown = run.config, param_breakdown(run.model)
    state_bytes = local_state_bytes(run.model, run.optimizer, run.ema)
    rows = [
        ("model", f"{config.kind} / {config.model.preset} preset, tree levels "
                  f"{list(run.tree.level_sizes)}"),
        ("parameters",
         f"{breakdown.total:,} (head {breakdown.head:,} = {100 * breakdown.head_share:.2f}%)"),
        ("steps", f"{result.steps:,}"),
        ("tokens", f"{result.tokens:,}"),
        ("tokens/s", f"{result.tokens_per_second:,.0f}"),
        ("peak memory", f"{peak_memory_bytes(run.device) / 2**20:,.0f} MiB"),
        ("weights+AdamW+EMA", f"{state_bytes / 2**20:,.1f} MiB per process "
                              f"({run.dist.world_size} x {config.parallel})"),
    ]  # fmt: skip
    v = result.validation
    if v is not None:
        exact = config.kind == "ar"  # the AR NLL is exact, the diffusion figures are bounds
        rows += [("validated on", run.ema.description),
                 ("val NLL (exact)" if exact else "val NELBO", f"{v.nelbo:.4f} nats/token")]
        if not exact:
            rows += [(f"  level {h}", f"{x:.4f}") for h, x in enumerate(v.level_nelbo)]
        rows += [("val PPL" if exact else "val PPL (bound)", f"{v.perplexity:.3f}"),
                 ("val BPB", f"{v.bits_per_byte:.4f}")]
    rows.append(("run folder", str(result.run_dir)))
    return summary_table(rows)
