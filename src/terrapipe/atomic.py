"""Atomic outputs: write to a temporary sibling, rename into place only on success.

A stage that fails (or is interrupted) therefore leaves the previous outputs untouched, and a reader
never sees a half-written file. The temporary path is a sibling so that the rename stays on one
filesystem (os.replace is atomic there).

A run killed with SIGKILL cannot clean up: its ``.<name>.tmp-*`` sibling stays behind (GB at scale).
The next ``atomic_path`` on the same target removes such leftovers first, and if the kill fell between
the two renames of a directory swap (target gone, ``.<name>.old-*`` present) it puts the old tree back.
A temporary's name carries its writer's pid, so one whose process still runs (a second run started
by hand, outside DVC's repository lock) is left alone.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

log = logging.getLogger("terrapipe")


def _tmp_sibling(path: Path, tag: str) -> Path:
    """``.<name>.<tag>-<pid>-<random>``: the pid tells a live writer's temporary from a killed one's."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _writer_alive(path: Path) -> bool:
    """Whether the process that made this temporary still runs (then it is not stale)."""
    try:
        pid = int(path.name.rsplit("-", 2)[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _size_mb(path: Path) -> float:
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink()) / 1e6


def remove_stale(target: Path) -> None:
    """Clean up after a killed run on ``target``: restore a swapped-out old tree, drop temporaries."""
    leftovers = sorted(target.parent.glob(f".{target.name}.tmp-*")) + sorted(target.parent.glob(f".{target.name}.old-*"))
    for path in leftovers:
        if _writer_alive(path):
            continue  # another run is writing this output right now (outside DVC, which would lock it)
        if path.name.startswith(f".{target.name}.old-") and not target.exists():
            os.replace(path, target)
            log.warning("restored %s from %s (an earlier run was killed between two renames)", target, path.name)
            continue
        size = _size_mb(path)
        _remove(path)
        log.info("removed %s (%.1f MB) left by an earlier killed run", path, size)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, directory: bool = False):
    """Yield a temporary path; on clean exit move it to ``target`` (file or whole directory).

    For a directory the old tree is first renamed aside, the new one renamed in, then the old one
    deleted: the window in which ``target`` is missing is two renames long, never a partial tree.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = _tmp_sibling(target, "tmp")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if directory and target.exists():
        old = _tmp_sibling(target, "old")
        os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)


def write_json(path: str | os.PathLike, obj, *, indent: int = 2) -> None:
    """Write JSON atomically (sorted keys off: the schema's order is part of its readability)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, allow_nan=False) + "\n")
