"""The run folder is the run's property: locked while a run writes it, checked before any work.

* **Lock**: an exclusive ``flock`` on ``<run>/.lock`` holding the writer's pid. A second run on
  the same folder is refused in one line naming that pid. The kernel drops the lock when its
  process ends, however it ends (kill -9 too), so a lock never outlives its run.
* **Room**: the folder must be writable (a probe file is written and removed) and its
  filesystem must have room for the checkpoints the run keeps, checked before any data work.
* **Leftovers**: temporary files and folders of a killed run (``.*.tmp``, ``*.old`` from
  :mod:`.atomic`) are removed when the next run takes the lock: no writer can own them then.
"""

import fcntl
import os
import shutil
from pathlib import Path

from .errors import UserError

__all__ = ["RunFolderLock", "check_room", "remove_leftovers"]

_MIB = 2**20


class RunFolderLock:
    """``with RunFolderLock(run_dir):`` — exclusive use of ``run_dir`` (created if missing)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
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
    probe = run_dir / ".write-probe"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as error:
        raise UserError(f"the run folder {run_dir} is not writable ({error.strerror})") from None
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise UserError(
            f"the run folder {run_dir} has {free / _MIB:,.0f} MiB free; {what} needs about "
            f"{need_bytes / _MIB:,.0f} MiB"
        )


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete what killed runs left half-written in ``run_dir`` (call only under the lock).

    An ``X.old`` whose ``X`` is missing is the one complete copy (a run killed between the two
    renames of :func:`.atomic.replace_dir`): it is moved back to ``X``, not deleted.
    """
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            name = path.name
            if name.endswith(".old") and not path.with_name(name.removesuffix(".old")).exists():
                os.replace(path, path.with_name(name.removesuffix(".old")))
            elif (name.startswith(".") and name.endswith(".tmp")) or name.endswith(".old"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed
