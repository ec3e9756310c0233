"""Atomic outputs: write to a temporary sibling, rename into place only on success.

A stage that fails (or is interrupted) therefore leaves the previous outputs untouched, and a reader
never sees a half-written file. The temporary path is a sibling so that the rename stays on one
filesystem (os.replace is atomic there).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path


def _tmp_sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, directory: bool = False):
    """Yield a temporary path; on clean exit move it to ``target`` (file or whole directory).

    For a directory the old tree is first renamed aside, the new one renamed in, then the old one
    deleted: the window in which ``target`` is missing is two renames long, never a partial tree.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
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
