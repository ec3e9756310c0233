"""Downstream task data sets: one in-memory form (TaskData), their params, and a reader per real format.

Each task is stored on disk in the layout of the real benchmark it imitates, so that the sample task and the
real one load through the same reader:

    task      format    reader                           kind
    eurosat   GEO-Bench terrapipe.data.tasks.geobench    classification (10 EuroSAT land-use classes)
    so2sat    GEO-Bench terrapipe.data.tasks.geobench    classification (17 local climate zones)
    pastis    PASTIS    terrapipe.data.tasks.pastis      segmentation (crop type per pixel, S2 + S1 series)
    mados     MADOS     terrapipe.data.tasks.mados       segmentation (sea-surface classes per pixel)

Images come back in the modality registry's band order and the pretraining store's units (S2 reflectance x
10000, S1 sigma0 in dB), so the normalization statistics of pretraining apply to them unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from terrapipe.paths import TASKS

IGNORE_LABEL = -1                 # a pixel (or sample) without a label: losses and metrics skip it
PARTITIONS = ("train", "valid", "test")  # GEO-Bench's names; PASTIS folds and MADOS split files map onto them
FORMAT_OF = {"eurosat": "geobench", "so2sat": "geobench", "pastis": "pastis", "mados": "mados"}


@dataclass(frozen=True)
class TaskData:
    """One task in memory, whatever format it was read from.

    images: modality key -> float32 [N, C, H, W] (one acquisition) or [N, T, C, H, W] (a time series, NaN where
        a patch has fewer than T acquisitions); C in ``bands[key]`` order, which is the registry's.
    labels: int64 [N] (classification) or [N, H, W] (segmentation): an index into ``class_names``, or
        IGNORE_LABEL.
    partition: str [N], one of PARTITIONS.
    dates: modality key -> datetime64[D] [N, T] (T = 1 without a time axis; NaT pads a short series).
    centres: float64 [N, 2] (latitude, longitude) of each sample's centre, None where the format has no place.
    folds: int [N], PASTIS's cross-validation fold (1..5) of each patch; None for the other formats.
    """
    name: str
    kind: Literal["classification", "segmentation"]
    class_names: tuple[str, ...]
    images: dict[str, np.ndarray]
    bands: dict[str, tuple[str, ...]]
    labels: np.ndarray
    partition: np.ndarray
    sample_ids: tuple[str, ...]
    dates: dict[str, np.ndarray] = field(default_factory=dict)
    centres: np.ndarray | None = None
    folds: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.sample_ids)
        problems = []
        for key, image in self.images.items():
            if image.dtype != np.float32 or image.ndim not in (4, 5) or len(image) != n:
                problems.append(f"images[{key}] is {image.dtype} {image.shape}, expected float32 [N={n}, (T,) C, H, W]")
            elif image.shape[-3] != len(self.bands.get(key, ())):
                problems.append(f"images[{key}] has {image.shape[-3]} channels but bands[{key}] names "
                                f"{len(self.bands.get(key, ()))}")
        expected_ndim = 1 if self.kind == "classification" else 3
        if self.labels.ndim != expected_ndim or len(self.labels) != n:
            problems.append(f"labels {self.labels.shape} for {n} {self.kind} samples")
        if len(self.partition) != n or not set(self.partition.tolist()) <= set(PARTITIONS):
            problems.append(f"partition must hold {n} values among {PARTITIONS}")
        if problems:
            raise ValueError(f"task {self.name}: " + "; ".join(problems))

    def __len__(self) -> int:
        return len(self.sample_ids)

    def subset(self, partition: str) -> TaskData:
        """The samples of one partition (train, valid or test)."""
        rows = np.flatnonzero(self.partition == partition)
        return TaskData(self.name, self.kind, self.class_names, {k: v[rows] for k, v in self.images.items()},
                        self.bands, self.labels[rows], self.partition[rows],
                        tuple(self.sample_ids[i] for i in rows), {k: v[rows] for k, v in self.dates.items()},
                        None if self.centres is None else self.centres[rows],
                        None if self.folds is None else self.folds[rows])


# -- params -------------------------------------------------------------------------------------------
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TaskSourceParams(_Section):
    """Where one task comes from: generated from the sample world, or a folder holding the real benchmark."""
    source: Literal["sample", "local"] = "sample"
    path: str | None = Field(None, description="source: local: the folder holding the real benchmark's files")
    n_samples: int = Field(gt=0, description="sample: chips (classification) or patches (segmentation)")
    chip_size: int = Field(gt=0, description="sample: pixels per side on the 10 m grid")

    @model_validator(mode="after")
    def _local_has_path(self):
        if self.source == "local" and not self.path:
            raise ValueError("source: local needs path: the folder where the real benchmark lies")
        return self


class EurosatParams(TaskSourceParams):
    n_samples: int = Field(160, gt=0)
    chip_size: int = Field(64, gt=0)


class So2satParams(TaskSourceParams):
    n_samples: int = Field(68, gt=0)
    chip_size: int = Field(32, gt=0)


class MadosParams(TaskSourceParams):
    n_samples: int = Field(8, gt=0)
    chip_size: int = Field(80, gt=0)


class PastisParams(TaskSourceParams):
    n_samples: int = Field(16, gt=0)
    chip_size: int = Field(32, gt=0)
    months: int = Field(6, gt=0, description="sample: monthly acquisitions per patch")
    folds: dict[Literal["train", "valid", "test"], list[int]] = Field(
        {"train": [1, 2, 3], "valid": [4], "test": [5]},
        description="which of PASTIS's five folds make each partition (the official split by default)")

    @model_validator(mode="after")
    def _folds_disjoint(self):
        used = [f for folds in self.folds.values() for f in folds]
        if len(used) != len(set(used)) or not set(used) <= {1, 2, 3, 4, 5} or set(self.folds) != set(PARTITIONS):
            raise ValueError(f"folds {self.folds} must give each of {PARTITIONS} its own folds among 1..5")
        return self


class TasksParams(_Section):
    """The ``tasks`` section of params.yaml: the four downstream tasks and how the sample ones are drawn."""
    min_site_distance_km: float = Field(5.0, ge=1.0, description="sample: every chip centre at least this far "
                                        "from every pretraining site of data/inputs/sites.csv")
    block_km: float = Field(8.0, gt=0.0, description="sample: side of the blocks of space a partition is made of")
    valid_share: float = Field(0.2, gt=0.0, lt=0.5)
    test_share: float = Field(0.2, gt=0.0, lt=0.5)
    eurosat: EurosatParams = EurosatParams()
    so2sat: So2satParams = So2satParams()
    pastis: PastisParams = PastisParams()
    mados: MadosParams = MadosParams()

    def task(self, name: str) -> TaskSourceParams:
        """The params of task ``name``; ConfigError listing the tasks."""
        if name not in TASKS:
            from terrapipe.errors import ConfigError
            raise ConfigError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)} (params.yaml tasks)")
        return getattr(self, name)


def tasks_params(params) -> TasksParams:
    """The validated ``tasks`` section of loaded params (terrapipe.config.Params); ConfigError on problems."""
    from terrapipe.data.embedding_store import validated

    return validated(TasksParams, getattr(params, "tasks", {}), "tasks")


# -- reading ------------------------------------------------------------------------------------------
def _format_module(task: str):
    """The reader/writer module of ``task``'s format (imported here by name, so dvc.yaml's deps see them)."""
    from terrapipe.data.tasks import geobench, mados, pastis

    return {"geobench": geobench, "mados": mados, "pastis": pastis}[FORMAT_OF[task]]


def check_layout(task: str, root: str | Path) -> None:
    """InputDataError naming the first missing or malformed file of ``task``'s real layout under ``root``."""
    _format_module(task).check_layout(Path(root))


def read_task(task: str, root: str | Path, params: TasksParams | None = None) -> TaskData:
    """Task ``task`` (one of TASKS) from a folder in its real benchmark's layout (sample or real)."""
    module = _format_module(task)
    if task == "pastis":
        return module.read(Path(root), folds=(params or TasksParams()).pastis.folds)
    return module.read(Path(root))


# -- fetching -----------------------------------------------------------------------------------------------
def fetch_task(params, inputs_dir: str | Path, task: str, out_dir: Path) -> None:
    """Fill ``out_dir`` with task ``task``: generated from the sample world (source: sample), or the real
    benchmark's folder (source: local) checked against its layout and hard-linked (copied across disks)."""
    source = tasks_params(params).task(task)
    if source.source == "local":
        root = Path(source.path).expanduser()
        check_layout(task, root)
        link_tree(root, out_dir)
        return
    from terrapipe.parallel import process_pool
    from terrapipe.sources.sample_tasks import fetch_sample_task
    from terrapipe.study import load_study

    study = load_study(inputs_dir)                       # every candidate site: the tasks keep away from all
    with process_pool(getattr(params, "compute", None)) as pool:
        fetch_sample_task(params, study, task, out_dir, pool)


def link_tree(source: Path, target: Path) -> None:
    """Every file under ``source`` at the same place under ``target``: a hard link (no copy, and the real
    benchmark stays read-only to the pipeline's eyes), a copy where linking fails (another filesystem)."""
    import os
    import shutil

    for path in sorted(source.rglob("*")):
        if path.is_dir() or path.name.startswith("."):
            continue
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path.resolve(), dest)
        except OSError:
            shutil.copy2(path, dest)
