"""Every data path and pipeline stage name, once.

Stage scripts, the library's fix hints, the CLI and the tests take them from here; dvc.yaml cannot
import Python, so tests/test_dvc_contract.py checks that its stages, outputs and dependencies agree.
Paths are relative to the repository root, where DVC runs every stage.
"""
from __future__ import annotations

from pathlib import Path

INPUTS = Path("data/inputs")          # the study definition (data.dvc)
RAW = Path("data/raw")                # fetch_<dataset> outputs, one folder per dataset
PROCESSED = Path("data/processed")    # normalize_<dataset> outputs
SPLITS = PROCESSED / "splits"         # split_sites and split@<dataset> outputs
QUALITY = Path("data/quality")        # check_params and validate outputs (Data Docs under docs/)
FIGURES = PROCESSED / "figures"

DATASETS = ("era5", "sentinel", "alphaearth", "deepearth")
SPLIT_DATASETS = ("sites", "deepearth", "alphaearth")
VALIDATION_GROUPS = ("imagery", "points")  # sections of the validate report: sentinel + ERA5 + site split; the rest

# The pipeline's stages in dvc.yaml's order (foreach stages as DVC names them: split@deepearth).
STAGES = ("check_params",
          *(f"fetch_{d}" for d in DATASETS),
          "fetch_tasks",               # foreach over the downstream tasks: fetch_tasks@<task>
          "split_sites",
          *(f"normalize_{d}" for d in DATASETS),
          "split@deepearth", "split@alphaearth",
          "validate",
          "world_mosaic",
          "embedding_store",
          "pretrain",                  # foreach over params pretrain.run: pretrain@<experiment>
          "evaluate",                  # foreach over params pretrain.run: evaluate@<experiment>
          "earth4d_alphaearth",
          "deepearth_classify",
          "report")


CATALOG = Path("data/catalog.duckdb")   # the DuckDB catalog (terrapipe.catalog): sites, samples, splits, runs
REPORTS = Path("reports")              # the report stage: index.html, report.md and their figures


def raw(dataset: str) -> Path:
    """The raw folder of one dataset: what its fetch stage writes."""
    return RAW / dataset


TASKS = ("eurosat", "so2sat", "pastis", "mados")  # downstream tasks (terrapipe.data.tasks; dvc.yaml's foreach)


def task_dir(task: str) -> Path:
    """fetch_tasks@<task>: the task in its real benchmark's on-disk layout."""
    return RAW / "tasks" / task


def processed(dataset: str) -> Path:
    """The processed folder of one dataset: what its normalize stage writes."""
    return PROCESSED / dataset


def split_dir(dataset: str) -> Path:
    """The split@<dataset> output folder."""
    return SPLITS / dataset


def split_assignments(dataset: str) -> Path:
    """The per-point train/test table that downstream stages join on."""
    return split_dir(dataset) / "assignments.parquet"


PARAMS_CHECK = QUALITY / "params.json"  # check_params: the resolved, validated params.yaml
VALIDATION_REPORT = QUALITY / "report.json"  # validate: what training and evaluation stages depend on
DATA_DOCS = QUALITY / "docs"           # validate: the GX Data Docs site (not DVC-tracked: it holds run times)

MODELS = Path("models")                # pretrain@<experiment> outputs
PRETRAIN = MODELS / "pretrain"


def pretrain_dir(experiment: str) -> Path:
    """pretrain@<experiment>: checkpoint.pt (DVC output), metrics.json and curves.csv (metrics and plots)."""
    return PRETRAIN / experiment


EMBEDDING_STORE = PROCESSED / "embedding_store"  # embedding_store: DeepEarth vision/language memmaps + DuckDB index
EARTH4D = MODELS / "earth4d_alphaearth"          # earth4d_alphaearth: checkpoints, predictions, maps, metrics
DEEPEARTH = MODELS / "deepearth"                 # deepearth_classify: classifiers + cross-modal autoencoder
EMBEDDING_CACHE = Path("data/cache/embeddings")  # evals.embeddings: frozen task embeddings by checkpoint hash
TIMING = Path("data/cache/timing")    # machine speed of pretrain@ and evaluate@ runs: kept out of models/, whose
                                       # folders the report stage hashes, so that they stay byte-deterministic
EVALUATE = MODELS / "evaluate"                 # evaluate@<experiment>: downstream metrics, confusion matrices


def evaluate_dir(experiment: str) -> Path:
    """evaluate@<experiment>: metrics.json (DVC metrics) and confusion/<task>.csv (DVC confusion plots)."""
    return EVALUATE / experiment


def timing_file(kind: str, experiment: str, suffix: str) -> Path:
    """Untracked seconds and samples/s of one run (``kind`` pretrain or evaluate)."""
    return TIMING / kind / f"{experiment}{suffix}"
