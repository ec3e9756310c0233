"""Shared test fixtures: a small study in a temporary working directory, and a stage runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# Small enough that every stage runs in about a second; the same code paths as the default run.
SMALL_PARAMS = {
    "seed": 3,
    "study": {"sites_per_aoi": 1, "months": 4},
    "sources": {
        "sentinel": {"chip_size": 18, "sample": {"s2_gap_prob": 0.3, "swath_edge_prob": 0.5}},
        "alphaearth": {"sample": {"n_points": 600}},
        "deepearth": {"sample": {"n_observations": 300, "language_dim": 24, "vision_dim": 16}},
    },
    "split": {
        "sites": {"num_regions": 2, "region_size_km": 10.0, "min_distance_km": 50.0},
        "deepearth": {"test_years": [2025], "num_regions": 2, "region_size_km": 10.0, "min_distance_km": 15.0},
        "alphaearth": {"num_regions": 2, "region_size_km": 50.0, "min_distance_km": 200.0},
    },
    "pretrain": {  # two steps at the smallest size (test_pipeline trains one experiment): code paths, not science
        "base": {"model": {"size": "pico"}, "sampling": {"patch_sizes": [4], "hw_tokens": [2], "token_budget": 64},
                 "train": {"steps": 2, "global_batch": 4, "microbatch": 2, "checkpoint_every": 1},
                 "optim": {"warmup_steps": 1}, "tracking": {"wandb": "disabled"}},
    },
    "earth4d": {"epochs": 1, "batch_size": 64, "hidden": 32, "tracked_rows": 200,  # one epoch of a tiny encoder
                "encoder_overrides": {"spatial": {"levels": 4, "log2_table_size": 10, "finest_resolution": 128},
                                      "temporal": {"levels": 2, "log2_table_size": 10, "finest_resolution": 16}}},
    "deepearth": {"classifier": {"epochs": 1}, "autoencoder": {"epochs": 1}},
    "tasks": {"eurosat": {"n_samples": 50, "chip_size": 16}, "so2sat": {"n_samples": 85, "chip_size": 16},  # 5 per class: 3/1/1
              "pastis": {"n_samples": 10, "chip_size": 16, "months": 2}, "mados": {"n_samples": 5, "chip_size": 16}},
}


def deep_update(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in, section by section."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_update(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


@pytest.fixture
def small_params():
    from terrapipe.config import parse_params
    return parse_params(SMALL_PARAMS)


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """The default study definition with 4 sites per AOI (read-only: tests must not modify it)."""
    from terrapipe.study import load_study, write_default_inputs

    inputs = tmp_path_factory.mktemp("inputs") / "inputs"
    write_default_inputs(inputs)
    return load_study(inputs, 4)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with the default study in data/inputs and SMALL_PARAMS in params.yaml."""
    from terrapipe.study import write_default_inputs

    write_default_inputs(tmp_path / "data" / "inputs")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_stage(name: str, *args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run stages/<name>.py as DVC would, in ``cwd`` (``env`` added to this environment); on an unexpected
    failure show its stderr."""
    result = subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py"), *args], cwd=cwd,
                            env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"stage {name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def tree_digest(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: to assert that a failed stage changed nothing."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
