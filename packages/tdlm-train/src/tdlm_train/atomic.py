"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Write to a temporary sibling, flush and fsync, then ``os.replace`` (atomic on POSIX within one
filesystem). A process killed mid-write (even by SIGKILL) leaves at most a ``.tmp`` sibling,
never a truncated file under the real name. Used for caches, checkpoints and run records.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json", "replace_dir", "temp_dir_beside"]


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any) -> Path:
    """``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def temp_dir_beside(path: Path) -> Path:
    """A fresh temporary folder next to ``path`` (same filesystem, so a rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the completed folder ``tmp`` to ``path``, replacing an older one there.

    The old folder is first renamed aside, so at every instant one complete version exists
    under ``path`` or its ``.old`` sibling; the aside copy is deleted last.
    """
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
