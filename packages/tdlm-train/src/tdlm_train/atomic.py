"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Write to a temporary sibling, flush and fsync, then ``os.replace`` (atomic on POSIX within one
filesystem). A process killed mid-write (even by SIGKILL) leaves at most a temporary sibling,
never a truncated file under the real name. Used for caches, checkpoints, exports and run files.

Every temporary carries the project's mark and its writer's pid (``.tdlm-tmp-<pid>-<name>-…``,
and ``.tdlm-old-<pid>-<name>`` for a folder set aside while it is replaced), so
:func:`remove_stale` deletes only what a TDLM process that no longer runs left half-written:
a name without the mark is never deleted, renamed or overwritten, whatever it looks like
(``thesis.old``, ``.notes.tmp``). A folder being replaced that is a symlink stays a link: the
folder it points to is replaced.
"""

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tdlm_tree.io import TEMP_MARK, temp_prefix

__all__ = [
    "atomic_write",
    "write_json",
    "replace_dir",
    "temp_dir_beside",
    "remove_stale",
    "is_marked",
]

ASIDE_MARK = ".tdlm-old-"
_MARKED = re.compile(rf"^({re.escape(TEMP_MARK)}|{re.escape(ASIDE_MARK)})(\d+)-(.+)$")


def _target(path: Path) -> Path:
    """``path``, or the folder it links to: a link the user made stays a link."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically (to the file a
    link at ``path`` points to: the link stays)."""
    path = _target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name))
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
    """A fresh temporary folder next to ``path`` (same filesystem, so a rename is atomic; next
    to the folder it links to, for a link)."""
    path = _target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path.name)))


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the completed folder ``tmp`` to ``path``, replacing an older one there.

    The old folder is first renamed aside (``.tdlm-old-<pid>-<name>``), so at every instant one
    complete version exists under ``path`` or its aside name; the aside copy is deleted last.
    A link at ``path`` is kept: the folder it points to is replaced.
    """
    path = _target(path)
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
    old = path.with_name(f"{ASIDE_MARK}{os.getpid()}-{path.name}")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def is_marked(name: str) -> bool:
    """Whether ``name`` is one of the project's temporary names."""
    return _MARKED.match(name) is not None


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(folder: Path) -> list[Path]:
    """Delete the marked temporaries in ``folder`` whose writer no longer runs; returns them.

    An aside copy ``.tdlm-old-<pid>-X`` whose ``X`` is missing is the one complete version (its
    writer was killed between :func:`replace_dir`'s two renames): it is moved back to ``X``.
    Names without the mark are left alone, whatever they are.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        match = _MARKED.match(path.name)
        if match is None or _running(int(match.group(2))):
            continue
        if match.group(1) == ASIDE_MARK:
            original = path.with_name(match.group(3))
            if not original.exists() and not original.is_symlink():
                os.replace(path, original)
                continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
