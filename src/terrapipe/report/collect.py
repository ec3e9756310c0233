"""Every result file the report shows, read once into typed summaries (the report's only I/O on inputs).

What is absent or unreadable becomes a ``Missing`` entry naming the file and the stage that writes it,
so a section can say what to run instead of the report failing. Everything after ``collect`` is pure.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from terrapipe import paths

PRETRAIN_METRICS, PRETRAIN_CURVES = "metrics.json", "curves.csv"
EVALUATE_METRICS, CONFUSION = "metrics.json", "confusion"
EARTH4D_METRICS = "metrics.json"
EARTH4D_IMAGES = {  # name in the report -> file under models/earth4d_alphaearth/
    "roi_rgb": "final_roi_rgb.png", "roi_error": "final_roi_error.png", "training_curves": "training_curves.png",
    "roi_rgb_progression": "visualizations/roi_rgb_progression.gif",
    "roi_error_progression": "visualizations/roi_error_progression.gif"}
DEEPEARTH_METRICS = "metrics.json"
SPLIT_DOC, SPLIT_MAP = "split.json", "split_map.png"
REPORT_SPLITS = paths.SPLIT_DATASETS
TASK_METRIC_FIELDS = ("encoder", "random_encoder", "raw_pixels", "majority")


@dataclass(frozen=True)
class Missing:
    """An input the report could not use: the file, why, and the stage whose run writes it."""
    path: str
    stage: str
    problem: str = "missing"



# What reading a result file of another format raises (a field renamed, a number where a mapping was).
FORMAT_ERRORS = (KeyError, TypeError, IndexError, ValueError, AttributeError)


def format_problem(exc: Exception) -> str:
    """A format error as one phrase for the report."""
    if isinstance(exc, KeyError):
        return f"the field {exc.args[0]!r} is missing"
    return f"{type(exc).__name__}: {exc}"


def describe_missing(missing) -> list[str]:
    """One sentence per stage: which of its files are missing or unusable, and the command that writes them."""
    by_stage: dict[str, list[str]] = {}
    for m in missing:
        by_stage.setdefault(m.stage, []).append(f"`{m.path}`" + ("" if m.problem == "missing" else f" ({m.problem})"))
    return [f"{', '.join(dict.fromkeys(items))} {'is' if len(set(items)) == 1 else 'are'} missing or unusable: "
            f"`dvc repro {stage}` writes {'it' if len(set(items)) == 1 else 'them'}" for stage, items in by_stage.items()]


@dataclass(frozen=True, eq=False)
class PretrainRun:
    """One pretraining experiment: what it is (from params) and what it logged (None where missing)."""
    key: str
    about: str
    s2_bandsets: int
    era5_kind: str
    metrics: dict | None
    curves: dict[str, np.ndarray] | None     # column -> values, "step" included
    missing: tuple[Missing, ...] = ()

    @property
    def seed(self) -> str | None:
        """The seed document the experiment comes from ("000", "001"), from its ``about``."""
        words = self.about.split()
        return words[1].rstrip(":") if len(words) > 1 and words[0] == "seed" else None

    @property
    def window(self) -> int:
        return int((self.metrics or {}).get("final_averages_last_steps", 10))


@dataclass(frozen=True, eq=False)
class TaskResult:
    """One downstream task of one experiment (contracts.md) and its per-sample predictions if present."""
    task: str
    metric: str
    values: dict[str, float]                 # encoder, random_encoder, raw_pixels, majority
    random_encoder_std: float | None         # std over the random encoder's seeds (a run-to-run spread)
    gain_over_random: float | None
    details: dict
    confusion: tuple[np.ndarray, np.ndarray] | None   # (actual, predicted) per test sample

    @cached_property
    def encoder_spread(self) -> float | None:
        """Bootstrap std of the encoder's metric over the test samples (None without confusion rows)."""
        from terrapipe.report.stats import bootstrap_spread

        return None if self.confusion is None else bootstrap_spread(*self.confusion, self.metric)


@dataclass(frozen=True, eq=False)
class EvaluateRun:
    key: str
    tasks: dict[str, TaskResult]
    missing: tuple[Missing, ...] = ()


@dataclass(frozen=True)
class ModelResult:
    """A single-folder model family (Earth4D, DeepEarth): its metrics and the images it drew."""
    metrics: dict | None
    images: dict[str, Path] = field(default_factory=dict)
    missing: tuple[Missing, ...] = ()


@dataclass(frozen=True)
class SplitResult:
    dataset: str
    document: dict | None                    # split.json without its per-point mappings
    map_png: Path | None
    missing: tuple[Missing, ...] = ()


@dataclass(frozen=True)
class QualityResult:
    report: dict | None
    docs_index: Path | None
    missing: tuple[Missing, ...] = ()


@dataclass(frozen=True, eq=False)
class ReportInputs:
    run: tuple[str, ...]                     # params.yaml pretrain.run, in order
    pretrain: tuple[PretrainRun, ...]
    evaluate: tuple[EvaluateRun, ...]
    earth4d: ModelResult
    deepearth: ModelResult
    splits: tuple[SplitResult, ...]
    quality: QualityResult


# ------------------------------------------------------------------------------------------ readers

def _json(path: Path, stage: str) -> tuple[dict | None, tuple[Missing, ...]]:
    if not path.is_file():
        return None, (Missing(str(path), stage),)
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, (Missing(str(path), stage, f"unreadable ({exc})"),)
    if not isinstance(document, dict):
        return None, (Missing(str(path), stage, "not a JSON object"),)
    return document, ()


def _csv_columns(path: Path, stage: str, numeric: bool = True):
    """A CSV as column -> array (floats where ``numeric``; empty cells NaN)."""
    if not path.is_file():
        return None, (Missing(str(path), stage),)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            return None, (Missing(str(path), stage, "empty"),)
        columns = {name: [row[name] for row in rows] for name in rows[0]}
        if numeric:
            return {k: np.array([float(v) if v not in ("", None) else np.nan for v in vs]) for k, vs in columns.items()}, ()
        return {k: np.array(vs) for k, vs in columns.items()}, ()
    except (OSError, ValueError, KeyError, csv.Error) as exc:
        return None, (Missing(str(path), stage, f"unreadable ({exc})"),)


def read_pretrain(root: Path, key: str, about: str, s2_bandsets: int, era5_kind: str) -> PretrainRun:
    folder = root / paths.pretrain_dir(key)
    stage = f"pretrain@{key}"
    metrics, missing = _json(folder / PRETRAIN_METRICS, stage)
    if metrics is not None and not isinstance(metrics.get("final"), dict):
        metrics, missing = None, (Missing(str(folder / PRETRAIN_METRICS), stage, "without its 'final' losses"),)
    curves, more = _csv_columns(folder / PRETRAIN_CURVES, stage)
    if curves is not None and "step" not in curves:
        curves, more = None, (Missing(str(folder / PRETRAIN_CURVES), stage, "without a 'step' column"),)
    return PretrainRun(key, about, s2_bandsets, era5_kind, metrics, curves, missing + more)


def _task(path: Path, stage: str, task: str, entry, confusion_dir: Path) -> tuple[TaskResult | None, tuple]:
    if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str) or not all(
            isinstance(entry.get(f), (int, float)) for f in TASK_METRIC_FIELDS):
        return None, (Missing(f"{path} (tasks.{task})", stage, f"incomplete (needs metric and {', '.join(TASK_METRIC_FIELDS)})"),)
    confusion, missing = None, ()
    columns, problem = _csv_columns(confusion_dir / f"{task}.csv", stage, numeric=False)
    if columns is not None and {"actual", "predicted"} <= set(columns):
        confusion = (columns["actual"], columns["predicted"])
    elif columns is not None:
        missing = (Missing(str(confusion_dir / f"{task}.csv"), stage, "without actual/predicted columns"),)
    else:
        missing = problem
    gain, std = entry.get("gain_over_random"), entry.get("random_encoder_std")
    return TaskResult(task, entry["metric"], {f: float(entry[f]) for f in TASK_METRIC_FIELDS},
                      float(std) if isinstance(std, (int, float)) else None,
                      float(gain) if isinstance(gain, (int, float)) else None,
                      entry.get("details") if isinstance(entry.get("details"), dict) else {}, confusion), missing


def read_evaluate(root: Path, key: str) -> EvaluateRun:
    folder = root / paths.evaluate_dir(key)
    stage = f"evaluate@{key}"
    document, missing = _json(folder / EVALUATE_METRICS, stage)
    tasks = {}
    if document is not None:
        entries = document.get("tasks")
        if not isinstance(entries, dict):
            return EvaluateRun(key, {}, (Missing(str(folder / EVALUATE_METRICS), stage, "without 'tasks'"),))
        for task in sorted(entries, key=lambda t: (paths.TASKS.index(t) if t in paths.TASKS else len(paths.TASKS), t)):
            result, problems = _task(folder / EVALUATE_METRICS, stage, task, entries[task], folder / CONFUSION)
            missing += problems
            if result is not None:
                tasks[task] = result
    return EvaluateRun(key, tasks, missing)


def read_model_folder(folder: Path, metrics_name: str, stage: str, images: dict[str, str]) -> ModelResult:
    metrics, missing = _json(folder / metrics_name, stage)
    found = {}
    for name, relative in images.items():
        if (folder / relative).is_file():
            found[name] = folder / relative
        else:
            missing += (Missing(str(folder / relative), stage),)
    return ModelResult(metrics, found, missing)


def read_split(root: Path, dataset: str) -> SplitResult:
    folder = root / paths.split_dir(dataset)
    stage = "split_sites" if dataset == "sites" else f"split@{dataset}"
    document, missing = _json(folder / SPLIT_DOC, stage)
    if document is not None:
        document = {k: v for k, v in document.items() if k != "observation_mappings"}
    map_png = folder / SPLIT_MAP
    if not map_png.is_file():
        missing += (Missing(str(map_png), stage),)
    return SplitResult(dataset, document, map_png if map_png.is_file() else None, missing)


def read_quality(root: Path) -> QualityResult:
    report, missing = _json(root / paths.VALIDATION_REPORT, "validate")
    docs = root / paths.DATA_DOCS / "index.html"
    return QualityResult(report, docs if docs.is_file() else None, missing)


def collect(root: Path, params) -> ReportInputs:
    """Read every input under ``root`` for the experiments of ``params`` (terrapipe.config.Params)."""
    from terrapipe.train.experiments import pretrain_params, resolve

    pretrain = pretrain_params(params)
    runs = []
    for key in pretrain.run:
        config = resolve(pretrain, key)
        runs.append(read_pretrain(root, key, pretrain.experiments[key].get("about", ""),
                                  len(config.groups("s2").names) if "s2" in config.token_modalities else 0,
                                  config.era5.kind))
    def shown(part):
        """``part`` with its missing paths relative to ``root`` (the report names repository paths)."""
        prefix = f"{Path(root)}{os.sep}"
        return replace(part, missing=tuple(replace(m, path=m.path.removeprefix(prefix)) for m in part.missing))

    return ReportInputs(
        run=tuple(pretrain.run),
        pretrain=tuple(map(shown, runs)),
        evaluate=tuple(shown(read_evaluate(root, key)) for key in pretrain.run),
        earth4d=shown(read_model_folder(root / paths.EARTH4D, EARTH4D_METRICS, "earth4d_alphaearth", EARTH4D_IMAGES)),
        deepearth=shown(read_model_folder(root / paths.DEEPEARTH, DEEPEARTH_METRICS, "deepearth_classify", {})),
        splits=tuple(shown(read_split(root, d)) for d in REPORT_SPLITS),
        quality=shown(read_quality(root)),
    )
