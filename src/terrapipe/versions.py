"""What a run was made from: the code (git revision) and the data (dvc.lock's data outputs), plus the
Prefect flow run that launched it.

Both ids are cheap (one ``git`` call, one YAML read) so every run can carry them: the catalog's
``runs`` rows, W&B config and tags. Only the standard library and PyYAML are imported here, because
the pretrain stage imports this module.

- ``code_version``: ``git rev-parse HEAD``, with ``-dirty`` when a tracked file differs from HEAD.
  The files DVC and ``dvc exp run -S`` rewrite during a run (dvc.lock, *.dvc, params.yaml) do not
  count: params are recorded in full beside the code version, and dvc.lock changes after every stage.
- ``data_version``: sha256 over the sorted ``path hash`` lines of every dvc.lock output under
  data/raw and data/processed (the data the fetch, normalize and split stages make). Model
  outputs and data/quality (params.json is the resolved params.yaml) are not data.
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from pathlib import Path, PurePosixPath

from terrapipe import paths

FLOW_RUN_ID_ENV = "TERRAPIPE_FLOW_RUN_ID"   # set by the Prefect flows for the `dvc repro` they launch
LOCK_FILE = "dvc.lock"
DATA_ROOTS = (paths.RAW, paths.PROCESSED)   # outputs under these define the data version
NOT_CODE = (":(exclude)dvc.lock", ":(exclude)params.yaml", ":(exclude,glob)**/*.dvc")


def flow_run_id() -> str | None:
    """The Prefect flow-run id of the flow that launched this process, None outside a flow."""
    return os.environ.get(FLOW_RUN_ID_ENV) or None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(root: str | Path = ".") -> str | None:
    """HEAD's full revision, ``-dirty`` appended when tracked code differs; None outside a git work tree."""
    root = Path(root)
    revision = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    if not revision:
        return None
    changes = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE)
    return revision.strip() + ("-dirty" if changes is None or changes.strip() else "")


def _is_data(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return any(parts[:len(r.parts)] == r.parts for r in DATA_ROOTS)


def data_outputs(root: str | Path = ".") -> list[dict]:
    """dvc.lock's data outputs (stage, path, hash_name, hash, size, nfiles), sorted by path; [] without dvc.lock."""
    lock = Path(root) / LOCK_FILE
    try:
        text = lock.read_text()
    except FileNotFoundError:
        return []
    return [dict(row) for row in _parse_lock(str(lock), text)]


@functools.lru_cache(maxsize=4)
def _parse_lock(lock: str, text: str) -> tuple[dict, ...]:
    """Parsing a 5,000-line dvc.lock costs about 0.3 s, so a process parses each content of it once."""
    import yaml

    from terrapipe.errors import InputDataError

    try:
        document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise InputDataError(lock, f"not valid YAML ({exc})", "Restore it from git (`git checkout dvc.lock`)") from None
    stages = document.get("stages") if isinstance(document, dict) else None
    if not isinstance(stages, dict):
        raise InputDataError(lock, "has no `stages` mapping", "Restore it from git or rerun `dvc repro`")
    rows = []
    for stage, entry in stages.items():
        for out in (entry or {}).get("outs") or []:
            if not isinstance(out, dict) or "path" not in out:
                raise InputDataError(lock, f"stage {stage}: an output without `path`", "Restore it from git")
            if not _is_data(out["path"]):
                continue
            hash_name = out.get("hash", "md5")
            rows.append({"stage": stage, "path": out["path"], "hash_name": hash_name,
                         "hash": out.get(hash_name) or out.get("md5"), "size": out.get("size"),
                         "nfiles": out.get("nfiles")})
    return tuple(sorted(rows, key=lambda r: r["path"]))


def version_of(outputs: list[dict]) -> str | None:
    """The data version of a list of data outputs (order-free), None for no outputs."""
    if not outputs:
        return None
    lines = sorted(f"{o['path']} {o['hash']}" for o in outputs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def data_version(root: str | Path = ".") -> str | None:
    """sha256 of dvc.lock's data outputs (see the module docstring); None before the first `dvc repro`."""
    return version_of(data_outputs(root))
