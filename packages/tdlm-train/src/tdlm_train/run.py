"""One training run as one object (docs/architecture.md "tdlm-train: the Run").

:meth:`Run.from_config` prepares the data and tree and builds the parts from a
:class:`~tdlm_train.config.RunConfig`: the diffusion process (tdlm-diffusion), the network
(tdlm-nn, sharded under FSDP), its EMA, AdamW, the data order and a
:class:`~tdlm_train.states.TrainState`. Every stateful part has ``state_dict()`` /
``load_state_dict()``; :meth:`Run.parts` names them, so :meth:`Run.state_dict` and
:meth:`Run.load_state_dict` (resume) are one loop each, and a checkpoint is those state dicts.

:meth:`Run.from_checkpoint` rebuilds a trained run from its folder: for inference (eval,
sample, export) only the weights and ``state.json`` are read; with ``training=True`` the run
continues, every part restored. The train, eval and sample apps and the benches start from here.
"""

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tdlm_diffusion import DiffusionInputError, SamplerConfig, TreeProcess, check_head_loss
from tdlm_nn import TreeDiT, TreeShape
from tdlm_tree import VocabTree

from .checkpoint import load_checkpoint, load_weights, resolve_checkpoint
from .config import RunConfig
from .corpus import pin_changes
from .data import PreparedData, prepare_data, prepare_tree
from .errors import UserError
from .overrides import config_to_dict
from .packing import BlockOrder, PackedBlocks
from .parallel import shard
from .pretrained import is_export, load_export, local_folder
from .run_files import RunFiles, check_pins, load_run_files, save_run_files, tree_fingerprint
from .runtime import Dist, Ema, pick_device
from .states import ModelState, OptimizerState, RngState, Stateful, TrainState
from .tokenizer import TextTokenizer

__all__ = ["Run", "RunData", "build_process", "build_network"]

logger = logging.getLogger(__name__)


def _check_corpus(then: dict | None, now: dict, checkpoint: Path, allow_changed: bool) -> None:
    """Refuse (or, with ``allow_changed``, report) a corpus that is not the one ``checkpoint``
    was trained on; a checkpoint from before corpus pins cannot be checked, and says so."""
    if then is None:
        logger.info("%s records no corpus fingerprint: the corpus is not checked", checkpoint)
        return
    changes = pin_changes(then, now)
    if not changes:
        return
    shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
    if not allow_changed:
        raise UserError(
            f"--resume: the corpus changed since {checkpoint.name} was trained ({shown}); restore "
            "it, or pass --allow_changed_data to continue on it with the run's own tokenizer "
            "and tree"
        )
    logger.warning(
        "warning: the corpus changed since %s (%s); continuing on it with the run's own "
        "tokenizer and tree (--allow_changed_data)",
        checkpoint.name,
        shown,
    )


def build_process(config: RunConfig, tree: VocabTree, counts: np.ndarray | None) -> TreeProcess:
    """tdlm-diffusion's process on ``tree`` with the config's schedule (``counts`` feed the
    entropy allocation)."""
    schedule = config.diffusion.schedule
    try:
        built = schedule.build(tree, counts if schedule.allocation == "entropy" else None)
    except ValueError as error:
        raise UserError(f"--diffusion.schedule: {error}") from None
    return TreeProcess(tree, built, pass_time=config.model.time_conditioning)


def build_network(config: RunConfig, tree: VocabTree, device: torch.device) -> TreeDiT:
    """tdlm-nn's network on ``tree``'s shape, on ``device`` (a backend that cannot run there,
    xformers on the CPU, is the user's choice to fix)."""
    try:
        return config.model.build(TreeShape.of(tree), device, causal=config.kind == "ar")
    except (RuntimeError, ValueError) as error:
        raise UserError(f"--model: {error}") from None


@dataclass
class RunData:
    """The training side of the data: token streams packed into blocks."""

    prepared: PreparedData
    train_blocks: PackedBlocks
    val_blocks: PackedBlocks

    @classmethod
    def pack(cls, prepared: PreparedData, seq_len: int) -> "RunData":
        def blocks(stream: np.ndarray) -> PackedBlocks:
            tokenizer = prepared.tokenizer
            return PackedBlocks(stream, seq_len, tokenizer.bos_id, tokenizer.eos_id)

        data = cls(prepared, blocks(prepared.train_tokens), blocks(prepared.val_tokens))
        if len(data.val_blocks) == 0:
            raise UserError(
                f"the validation split has fewer than {seq_len} tokens; lower --seq_len or "
                "raise --data.val_fraction"
            )
        return data


@dataclass(eq=False)
class Run:
    config: RunConfig
    folder: Path
    tokenizer: TextTokenizer
    tree: VocabTree
    counts: np.ndarray  # [N] training-token counts
    process: TreeProcess
    model: TreeDiT
    state: TrainState
    dist: Dist
    device: torch.device
    sharded: bool = False  # FSDP2 shards the model, EMA and AdamW state
    # Training parts (None in a run rebuilt for inference):
    ema: Ema | None = None
    optimizer: torch.optim.Optimizer | None = None
    data: RunData | None = None
    order: BlockOrder | None = None
    checkpoint: Path | None = None  # the checkpoint it was rebuilt from

    # --- building ------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: RunConfig,
        *,
        dist_info: Dist | None = None,
        device: torch.device | None = None,
        files: RunFiles | None = None,
        check_corpus: Callable[[dict], None] | None = None,
    ) -> "Run":
        """A fresh run: data and tree prepared (rank 0 builds the caches, the others then read
        them), every part built, nothing written to the run folder yet. ``files``: a resumed
        run's own tokenizer, tree and counts, used as they are (the corpus is tokenized with
        that tokenizer, nothing is retrained); ``check_corpus`` sees the corpus's pins before
        any tokenizing."""
        config, dist_info = config.with_run_dir(), dist_info or Dist()
        device = device or pick_device(config.device, dist_info.local_rank)
        torch.manual_seed(config.seed + dist_info.rank)
        if not dist_info.is_main:
            dist_info.barrier()
        prepared = prepare_data(
            config.data,
            config.tokenizer,
            Path(config.cache_dir),
            tokenizer=files.tokenizer if files else None,
            check_corpus=check_corpus,
        )
        if files is None:
            tree = prepare_tree(config.tree, prepared, flat=config.kind in ("mdlm", "ar"))
        else:
            tree = files.tree
        if dist_info.is_main:
            dist_info.barrier()
        if files is None:
            counts = np.bincount(np.asarray(prepared.train_tokens), minlength=tree.vocab_size)
        else:
            counts = files.counts  # the schedule's entropy allocation was built on these
        data = RunData.pack(prepared, config.seq_len)
        order = BlockOrder(
            len(data.train_blocks),
            config.batch_size,
            seed=config.seed,
            rank=dist_info.rank,
            world_size=dist_info.world_size,
        )
        run = cls._assemble(
            RunFiles(config, prepared.tokenizer, tree, counts), dist_info, device, training=True
        )
        run.data, run.order = data, order
        return run

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: torch.device | None = None,
        weights: str = "ema",
        training: bool = False,
        config: RunConfig | None = None,
        dist_info: Dist | None = None,
        allow_changed_data: bool = False,
    ) -> "Run":
        """A checkpoint (or a run folder's latest) rebuilt from its run folder, or an exported
        model: a folder :func:`~tdlm_train.hub.export_run` wrote, or a hub repo id
        ``owner/name[@revision]`` of one (fetched with huggingface_hub, :mod:`.pretrained`).

        For inference (the default) it reads ``state.json`` and one weights file only, so a
        checkpoint shared without its optimizer and RNG files loads: ``weights="ema"`` (the
        averaged weights, as validation scores them) or ``"raw"`` (an export holds one set,
        which ``weights`` must name); the model is in eval mode.
        With ``training=True`` it is the run continued: :meth:`from_config` with ``config``
        (default: the saved one), the run folder's own tokenizer, tree and counts, and every
        part's state loaded from the checkpoint. A corpus that changed since the checkpoint
        is refused, naming what changed, unless ``allow_changed_data`` (then it is tokenized
        with the run's tokenizer, and no file an existing checkpoint depends on changes).
        Either way the run folder's tokenizer and tree must be the checkpoint's own.
        """
        if weights not in ("ema", "raw"):
            raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
        path = local_folder(path)
        if is_export(path):
            if training:
                raise UserError(
                    f"{path} is an exported model: it holds no optimizer or data state to "
                    "continue training from (resume its run folder instead)"
                )
            files, tensors, state = load_export(path, weights)
            return cls._inference(files, path, tensors, state, path, device, dist_info)
        path = resolve_checkpoint(path)
        folder = path.parent.parent  # where the run folder is now (it may have moved)
        files = load_run_files(folder)
        if training:
            checkpoint = load_checkpoint(path)
            check_pins(checkpoint.state, files, path)
            if config is None:
                config = dataclasses.replace(files.config, run_dir=str(folder))

            def check_corpus(pins: dict) -> None:
                _check_corpus(checkpoint.state.get("data"), pins, path, allow_changed_data)

            run = cls.from_config(
                config, dist_info=dist_info, device=device, files=files, check_corpus=check_corpus
            )
            run.load_state_dict(checkpoint.states())
            run.checkpoint = path
            logger.info("resumed from %s (step %d)", path, run.state.step)
            return run
        tensors, state = load_weights(path, ema=weights == "ema")
        check_pins(state, files, path)
        return cls._inference(files, folder, tensors, state, path, device, dist_info)

    @classmethod
    def _inference(
        cls,
        files: RunFiles,
        folder: Path,
        tensors: dict[str, torch.Tensor],
        state: dict[str, Any],
        checkpoint: Path,
        device: torch.device | None,
        dist_info: Dist | None,
    ) -> "Run":
        """The model of ``folder``'s ``files`` with ``tensors`` loaded, in eval mode."""
        files.config = dataclasses.replace(files.config, run_dir=str(folder))
        device = device or pick_device("auto")
        run = cls._assemble(files, dist_info or Dist(), device, training=False)
        try:
            run.model.load_state_dict(tensors)
        except RuntimeError as error:
            raise UserError(
                f"checkpoint {checkpoint} does not fit its run's config ({error})"
            ) from None
        run.state.load_state_dict(state)
        run.model.eval()
        run.checkpoint = checkpoint
        return run

    @classmethod
    def _assemble(cls, files: RunFiles, dist_info: Dist, device: torch.device, *, training: bool):
        config = files.config
        folder = Path(config.run_dir)
        process = build_process(config, files.tree, files.counts).to(device)
        model = build_network(config, files.tree, device)
        # FSDP needs a process group (torchrun, even with one process); without one there is
        # nothing to shard and the run is a plain single-process one.
        sharded = training and config.parallel == "fsdp" and dist.is_initialized()
        if sharded:  # before the EMA and AdamW take their (then sharded) copies of the weights
            shard(model, device)
        elif training and config.parallel == "fsdp":
            logger.info("--parallel fsdp: a single process without torchrun; nothing to shard")
        run = cls(
            config, folder, files.tokenizer, files.tree, files.counts, process, model,
            TrainState(), dist_info, device, sharded,
        )  # fmt: skip
        if training:
            try:
                check_head_loss(config.diffusion.head_loss, process, device)
            except DiffusionInputError as error:
                raise UserError(f"--diffusion.head_loss: {error}") from None
            run.ema = Ema(model, config.optim.ema_decay)
            run.optimizer = torch.optim.AdamW(
                model.parameters(),
                lr=config.optim.lr,
                betas=tuple(config.optim.betas),
                eps=1e-8,
                weight_decay=config.optim.weight_decay,
            )
        return run

    # --- state ---------------------------------------------------------------------------
    def parts(self) -> dict[str, Stateful]:
        """The stateful parts, by the name their state is saved under. ``train`` comes first:
        restoring the RNG states reads the step."""
        if self.ema is None or self.optimizer is None or self.order is None:
            raise UserError("this run was rebuilt for inference; it has no training state")
        return {
            "train": self.state,
            "model": ModelState(self.model),
            "ema": self.ema,
            "optimizer": OptimizerState(self.model, self.optimizer),
            "rng": RngState(self.dist, self.device, self.config.seed, self.state),
            "data_order": self.order,
        }

    def state_dict(self) -> dict[str, Any]:
        """Every part's state in the single-process layout. A collective with several
        processes (every rank calls it); rank 0 gets the states, the others an empty dict."""
        parts = self.parts()
        rng = parts.pop("rng").state_dict()  # gathered from every rank
        if not (self.dist.is_main or self.sharded):
            return {}
        # Under FSDP gathering the weights, EMA and moments are collectives too.
        states = {name: part.state_dict() for name, part in parts.items()}
        return states | {"rng": rng} if self.dist.is_main else {}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        """Restore every part (every rank, each taking its shard under FSDP)."""
        for name, part in self.parts().items():
            part.load_state_dict(states[name])

    def meta(self) -> dict[str, Any]:
        """What a checkpoint records besides the states: the config, and the fingerprints of
        the tokenizer, tree and corpus it was trained with (a resume checks them)."""
        tree = {
            "file": "tree.npz",
            "level_sizes": list(self.tree.level_sizes),
            "fingerprint": tree_fingerprint(self.tree),
        }
        return {
            "config": config_to_dict(self.config),
            "tokenizer_fingerprint": self.tokenizer.fingerprint,
            "tree": tree,
            "data": self.data.prepared.pins if self.data is not None else None,
            "versions": {"torch": torch.__version__},
        }

    def save_files(self) -> None:
        """The run folder's own files (rank 0): config, tokenizer, tree and token counts; a
        resumed run rewrites only config.json (its checkpoints depend on the others)."""
        if self.dist.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_run_files(
                self.folder,
                RunFiles(self.config, self.tokenizer, self.tree, self.counts),
                config_only=self.checkpoint is not None,
            )

    # --- use -----------------------------------------------------------------------------
    def sampler(self, **changes: Any) -> SamplerConfig:
        """The run's sampler with ``changes``, at least one step per tree level."""
        try:
            config = dataclasses.replace(self.config.diffusion.sampler, **changes)
        except ValueError as error:
            raise UserError(f"sampler: {error}") from None
        return dataclasses.replace(config, steps=max(config.steps, self.tree.depth))

    def tokenizer_file(self) -> Path:
        """The tokenizer the run was trained with (a run folder's or an export's own copy)."""
        return self.folder / "tokenizer.json"
