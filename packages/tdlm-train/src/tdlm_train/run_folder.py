"""The run folder is the run's property: claimed, locked while a run writes it, checked first.

* **Ownership**: a run writes only into a folder it made or was given empty, marked by
  ``.tdlm-run.json``, and only under the names :data:`RUN_NAMES` (plus marked temporaries,
  :mod:`.atomic`). A non-empty folder without the mark is refused in one line, untouched;
  ``--adopt_run_dir`` trains there anyway beside the user's files, refused when any of them
  bears one of the run's names. A run folder of an older version (``config.json`` and
  checkpoints, no mark) is recognised and marked.
* **Lock**: an exclusive ``flock`` on ``<run>/.tdlm-lock`` holding the writer's pid. A second
  run on the same folder is refused in one line naming that pid. The kernel drops the lock when
  its process ends, however it ends (kill -9 too), so a lock never outlives its run.
* **Room**: the folder must be writable (a marked probe file is written and removed) and its
  filesystem must have room for the checkpoints the run keeps, checked before any data work.
* **Leftovers**: the marked temporaries of a killed run are removed when the next run takes the
  lock (:func:`.atomic.remove_stale`); nothing else is.
"""

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from tdlm_tree.io import temp_prefix

from .atomic import is_marked, remove_stale, write_json
from .errors import UserError

__all__ = ["RunFolderLock", "claim_run_folder", "check_room", "remove_leftovers", "RUN_NAMES"]

_MIB = 2**20
RUN_MARK = ".tdlm-run.json"
LOCK_NAME = ".tdlm-lock"
# Every name a run writes in its folder: it never writes, renames or deletes any other.
RUN_NAMES = (
    RUN_MARK,
    LOCK_NAME,
    "config.json",
    "tokenizer.json",
    "tree.npz",
    "counts.npy",
    "metrics.jsonl",
    "curves.png",
    "summary.txt",
    "tb",
    "checkpoints",
)


def _listing(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _older_run_folder(folder: Path) -> bool:
    """A run folder written before the mark existed: its config and a checkpoint."""
    checkpoints = folder / "checkpoints"
    return (folder / "config.json").is_file() and checkpoints.is_dir() and any(
        (p / "state.json").is_file() for p in checkpoints.glob("step_*")
    )


def claim_run_folder(folder: Path, *, adopt: bool = False) -> None:
    """Make ``folder`` this project's run folder, or refuse in one line, touching nothing.

    Missing or empty: created and marked. Marked (or an older version's run folder): used.
    Anything else is the user's: refused unless ``adopt``, and then only if none of the user's
    names is one a run writes.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--run_dir {folder} is a file; give a folder")
    if (folder / RUN_MARK).is_file():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # The lock and marked temporaries are the project's own, left by a run's first moments.
        names = sorted(
            p.name for p in folder.iterdir() if p.name != LOCK_NAME and not is_marked(p.name)
        )
    except OSError as error:
        raise UserError(f"cannot use {folder} as a run folder ({error.strerror})") from None
    if names and not _older_run_folder(folder):
        if not adopt:
            raise UserError(
                f"--run_dir {folder} holds files TDLM did not write ({_listing(names)}); give a "
                "new or empty folder, or pass --adopt_run_dir to train there beside them"
            )
        taken = [n for n in names if n in RUN_NAMES or n.startswith(".tdlm-")]
        if taken:
            raise UserError(
                f"--adopt_run_dir: {folder} already holds {_listing(taken)}, which a run writes; "
                "move them or choose another --run_dir"
            )
    try:
        write_json(folder / RUN_MARK, {"format": "tdlm-run-folder", "version": 1})
    except OSError as error:
        raise UserError(f"the run folder {folder} is not writable ({error.strerror})") from None


class RunFolderLock:
    """``with RunFolderLock(run_dir):`` — exclusive use of ``run_dir`` (created if missing)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._handle = None

    def __enter__(self) -> "RunFolderLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as error:
            raise UserError(f"cannot use {self.path.parent} as a run folder ({error})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(
                f"{self.path.parent} is in use by another run (pid {holder}); wait for it to "
                "finish or choose another --run_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def check_room(run_dir: Path, need_bytes: int, what: str) -> None:
    """Refuse, in one line, a folder that cannot be written or lacks ``need_bytes`` of room."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=temp_prefix("write-probe")) as f:
            f.write(b"0")
    except OSError as error:
        raise UserError(f"the run folder {run_dir} is not writable ({error.strerror})") from None
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise UserError(
            f"the run folder {run_dir} has {free / _MIB:,.0f} MiB free; {what} needs about "
            f"{need_bytes / _MIB:,.0f} MiB"
        )


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the marked temporaries killed runs left in ``run_dir`` and its checkpoints (call
    under the lock); an aside copy that is the one complete checkpoint is moved back."""
    run_dir = Path(run_dir)
    return remove_stale(run_dir) + remove_stale(run_dir / "checkpoints")
