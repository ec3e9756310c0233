"""Helpers shared by the benchmark scripts: a throwaway copy of the repository, timing, peak memory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def repo_copy(params_override: dict | None = None) -> Path:
    """A git-initialised copy of the tracked files, with params.yaml overridden section by section."""
    root = Path(tempfile.mkdtemp(prefix="terrapipe-bench-")) / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    if params_override:
        params = yaml.safe_load((root / "params.yaml").read_text())
        (root / "params.yaml").write_text(yaml.safe_dump(_merge(params, params_override), sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=root, check=True, env=env)
    return root


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def parse_overrides(assignments: list[str]) -> dict:
    """``["optim.lr=0.001", "sampling.hw_tokens=[2, 4]"]`` -> a nested dict (values read as YAML)."""
    nested: dict = {}
    for assignment in assignments:
        dotted, sep, value = assignment.partition("=")
        if not sep:
            raise SystemExit(f"--set {assignment!r}: write KEY.PATH=VALUE")
        *parents, leaf = dotted.split(".")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)
    return nested


def patch_losses(curves_csv: Path, window: int = 10) -> dict[str, tuple[float, float, float | None]]:
    """A run's losses from its curves.csv: per column ``info_nce``, ``patch_disc`` and ``patch_disc/<modality>``,
    (mean of the first ``window`` steps, of the last, the last over the chance level the run logged for those
    batches: None where it logged none or every sample was skipped)."""
    import csv

    import numpy as np

    from terrapipe.report.hypotheses import patch_chance_ratio

    with open(curves_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    curves = {name: np.array([float(r[name]) for r in rows]) for name in rows[0]}
    out = {}
    for name, values in curves.items():
        if name == "info_nce" or (name.startswith("patch_disc") and "chance" not in name):
            modality = name.partition("/")[2] or None
            ratio = patch_chance_ratio(curves, window, modality) if name != "info_nce" else None
            out[name] = (float(values[:window].mean()), float(values[-window:].mean()), ratio)
    return out


def env_with_venv() -> dict:
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS of the child in MiB). Raises on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env_with_venv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output.decode()[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024


def report(name: str, value: float, unit: str, baseline: float, better: str) -> str:
    """One figure, its baseline (target) and the ratio; better = 'lower' or 'higher'."""
    ratio = value / baseline
    ok = ratio <= 1 if better == "lower" else ratio >= 1
    line = f"{name}: {value:.3g} {unit} | baseline {baseline:.3g} {unit} | ratio {ratio:.2f} ({better} is better) [{'meets' if ok else 'MISSES'} target]"
    print(line, flush=True)
    return line


def pretrain_like_stage(experiment: str, out: Path, seed: int, steps: int | None = None,
                        overrides: dict | None = None) -> float:
    """Train ``experiment`` as pretrain@KEY does (params.yaml's pretrain section, the checkout's store) into
    ``out`` with train.seed = ``seed`` (and train.steps = ``steps`` if given, ``overrides`` merged into the
    base section, see ``parse_overrides``); no W&B, no in-training callback (it changes no weight). Returns
    the training seconds."""
    import copy

    from terrapipe import paths
    from terrapipe.train.experiments import PretrainParams
    from terrapipe.train.run import run_experiment

    document = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text())["pretrain"])
    base = document["base"] = _merge(document["base"], overrides or {})
    base["train"]["seed"] = seed
    base["downstream"]["every"] = 0
    base["tracking"]["wandb"] = "disabled"
    if steps:
        base["train"]["steps"] = steps
    started = time.perf_counter()
    run_experiment(PretrainParams.model_validate(document), experiment, out, progress=False,
                   store_dirs=(REPO / paths.processed("sentinel"), REPO / paths.processed("era5")))
    return time.perf_counter() - started
