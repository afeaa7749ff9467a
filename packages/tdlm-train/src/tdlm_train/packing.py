"""Packing a token stream into fixed-length training blocks, and a resumable shuffled order.

MDLM's "wrap" packing (Sahoo et al. 2024, as in its data loader): documents are joined, each
followed by EOS, the stream is cut into chunks of ``L - 2`` tokens and every chunk is framed as
``[BOS] chunk [EOS]``. No padding, no attention mask; a block may start mid-document.

:class:`BlockOrder` visits the blocks in a seeded random order, a fresh permutation per epoch,
split across data-parallel ranks by striding. Its position (epoch, step) is part of a run's
resumable state, so a resumed run sees exactly the batches the uninterrupted run would have.

:class:`PaddedBlocks` is MDLM's other layout, for evaluation (``wrap=False``): one block per
document, ``[BOS] document [EOS]`` cut to ``L`` and padded; the padding is not scored.
"""

from dataclasses import dataclass

import numpy as np

from .errors import UserError

__all__ = ["PackedBlocks", "PaddedBlocks", "BlockOrder"]


class PackedBlocks:
    """Blocks of length ``seq_len`` over a 1-D token stream (e.g. a memory-mapped cache)."""

    def __init__(self, stream: np.ndarray, seq_len: int, bos_id: int, eos_id: int) -> None:
        if seq_len < 3:
            raise UserError(
                f"sequence length must be at least 3 (BOS, a token, EOS), got {seq_len}"
            )
        self.stream, self.seq_len, self.bos_id, self.eos_id = stream, seq_len, bos_id, eos_id
        self.chunk = seq_len - 2
        self.num_blocks = len(stream) // self.chunk

    def __len__(self) -> int:
        return self.num_blocks

    def batch(self, indices: np.ndarray) -> np.ndarray:
        """``[len(indices), seq_len]`` int64 blocks."""
        out = np.empty((len(indices), self.seq_len), dtype=np.int64)
        out[:, 0], out[:, -1] = self.bos_id, self.eos_id
        for row, i in enumerate(np.asarray(indices).tolist()):
            out[row, 1:-1] = self.stream[i * self.chunk : (i + 1) * self.chunk]
        return out


class PaddedBlocks:
    """One block per document: ``[BOS] tokens [EOS]``, the tokens cut to ``seq_len - 2`` (as
    MDLM's padded loader truncates), then padding up to ``seq_len``. The padding holds EOS ids
    (the vocabulary has no PAD token); :meth:`padding` marks it, and evaluation shows it to the
    network as known context and scores only the rest, as MDLM masks its loss by the attention
    mask."""

    def __init__(self, documents: list[np.ndarray], seq_len: int, bos_id: int, eos_id: int) -> None:
        if seq_len < 3:
            raise UserError(
                f"sequence length must be at least 3 (BOS, a token, EOS), got {seq_len}"
            )
        self.documents, self.seq_len, self.bos_id, self.eos_id = documents, seq_len, bos_id, eos_id
        self.lengths = np.array([min(len(d), seq_len - 2) + 2 for d in documents], dtype=np.int64)
        self.truncated = sum(len(d) > seq_len - 2 for d in documents)  # documents cut short

    def __len__(self) -> int:
        return len(self.documents)

    def batch(self, indices: np.ndarray) -> np.ndarray:
        """``[len(indices), seq_len]`` int64 blocks, padded with EOS."""
        out = np.full((len(indices), self.seq_len), self.eos_id, dtype=np.int64)
        for row, i in enumerate(np.asarray(indices).tolist()):
            tokens = self.documents[i][: self.seq_len - 2]
            out[row, 0] = self.bos_id
            out[row, 1 : 1 + len(tokens)] = tokens  # then the closing EOS (already there)
        return out

    def padding(self, indices: np.ndarray) -> np.ndarray:
        """``[len(indices), seq_len]`` bool: True after each block's closing EOS."""
        return np.arange(self.seq_len) >= self.lengths[np.asarray(indices)][:, None]


@dataclass
class BlockOrder:
    """A seeded, resumable, rank-strided order over ``num_blocks`` blocks.

    Each global step takes ``batch_size`` blocks per rank from the epoch's permutation; an epoch
    ends when fewer than ``batch_size * world_size`` remain (those are skipped, as a drop-last
    loader would).
    """

    num_blocks: int
    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    epoch: int = 0
    step_in_epoch: int = 0

    def __post_init__(self) -> None:
        if self.num_blocks < self.batch_size * self.world_size:
            raise UserError(
                f"the training split has {self.num_blocks} blocks, fewer than one global batch "
                f"({self.batch_size} x {self.world_size} ranks): use a larger corpus, a shorter "
                "sequence length or a smaller batch"
            )
        self._permutation: tuple[int, np.ndarray] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self.num_blocks // (self.batch_size * self.world_size)

    def _epoch_permutation(self) -> np.ndarray:
        if self._permutation is None or self._permutation[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._permutation = (self.epoch, rng.permutation(self.num_blocks))
        return self._permutation[1]

    def next_indices(self) -> np.ndarray:
        """This rank's block indices for the next step; advances the position."""
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        global_batch = self.batch_size * self.world_size
        start = self.step_in_epoch * global_batch
        chosen = self._epoch_permutation()[start : start + global_batch]
        self.step_in_epoch += 1
        return chosen[self.rank :: self.world_size]

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "seed": self.seed,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue where ``state`` stopped, on this order's number of ranks.

        The permutation does not depend on the ranks, so a run resumed on another number of
        processes continues at the same place in it: ``step_in_epoch`` counted global batches of
        ``batch_size x saved ranks`` blocks, and is recounted in ours (rounded down: up to one
        global batch of blocks is seen again rather than skipped).
        """
        if state.get("seed") != self.seed:
            raise UserError(
                f"the checkpoint's data order used seed {state.get('seed')}, this run {self.seed}"
            )
        # Checkpoints from before this field resumed on their own number of ranks.
        saved_world = int(state.get("world_size", self.world_size))
        blocks = int(state["step_in_epoch"]) * self.batch_size * saved_world
        self.epoch = int(state["epoch"])
        self.step_in_epoch = blocks // (self.batch_size * self.world_size)
