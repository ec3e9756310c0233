"""Downstream evaluation of one encoder on the registered tasks, with its baselines computed by the same code.

The task registry (issue 10; OlmoEarth's choices, reference/olmoearth-behaviour.md section 7):

    task      method               metric       (test partition)
    eurosat   kNN                  accuracy     10 land-use classes, 64 x 64 S2
    so2sat    kNN                  accuracy     17 local climate zones, 32 x 32 S2 + S1
    pastis    segmentation probe   mIoU         crop type per pixel, S2 + S1 time series
    mados     segmentation probe   micro F1     sea-surface classes per pixel

Every result stands beside its baselines, scored by the same method on the same partitions:
- random_encoder: the encoder's architecture freshly initialised (one per seed of
  ``random_encoder_seeds``; mean and standard deviation over them): what pretraining adds;
- raw_pixels: per-band mean and standard deviation over the chip and the time series (classification) or
  over each token's patch and the time series (segmentation), z-scored with training-partition statistics:
  what any encoder must beat to be worth running;
- majority: the most frequent training class everywhere.

kNN uses the train partition as its reference set and scores the test partition; probes train on the train
partition (its label fraction; features z-scored with its statistics, whichever method made them), follow
the valid partition in their curve, and score the test partition, which nothing is ever fitted or selected
on. Beside the scores, ``details.embedding_geometry`` says how much the encoder's and the random encoders'
training-partition embeddings vary (effective rank, mean cosine): cosine kNN cannot tell encoders apart
whose embeddings all point nearly the same way.

Shapes: N samples, C bands, T timesteps, H W pixels, p patch size, h w = H/p W/p tokens per side, D width.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from terrapipe.data.tasks import IGNORE_LABEL, TaskData
from terrapipe.evals.probes import ProbeConfig
from terrapipe.paths import TASKS

log = logging.getLogger("terrapipe")


@dataclass(frozen=True)
class TaskSpec:
    """How a task is scored: the method and its headline metric (a key of evals.metrics' reports)."""
    method: Literal["knn", "segmentation_probe"]
    metric: Literal["accuracy", "micro_f1", "miou"]

    @property
    def name(self) -> str:
        """The metric's name in metrics.json: what it computes, by what."""
        return f"{'knn' if self.method == 'knn' else 'probe'}_{self.metric}"


REGISTRY = {"eurosat": TaskSpec("knn", "accuracy"), "so2sat": TaskSpec("knn", "accuracy"),
            "pastis": TaskSpec("segmentation_probe", "miou"), "mados": TaskSpec("segmentation_probe", "micro_f1")}
assert set(REGISTRY) == set(TASKS)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Probe epochs for the sample tasks. OlmoEarth's 50 epochs are hundreds of steps on the real benchmarks,
# but the sample tasks' 5-10 training scenes fill one batch, and 50 steps left MADOS at the majority
# class. These counts were read off the valid partitions' curves: PASTIS val mIoU peaks at 60-110 epochs,
# and MADOS val accuracy is flat from 160-260.
SAMPLE_PROBE_EPOCHS = {"pastis": 100, "mados": 250}


class KnnParams(_Section):
    k: int = Field(20, ge=1)
    temperature: float = Field(0.07, gt=0)


class EvaluateParams(_Section):
    """params.yaml ``evaluate``: the evaluate@<experiment> stages (every pretrain.run experiment)."""
    tasks: list[Literal["eurosat", "so2sat", "pastis", "mados"]] = list(TASKS)
    knn: KnnParams = KnnParams()
    probes: dict[str, ProbeConfig] = Field(
        default_factory=lambda: {"pastis": ProbeConfig(lr=0.1, epochs=SAMPLE_PROBE_EPOCHS["pastis"]),
                                 "mados": ProbeConfig(lr=0.01, epochs=SAMPLE_PROBE_EPOCHS["mados"])},
        description="per segmentation task, OlmoEarth's probe learning rates (0.1 PASTIS, 0.01 MADOS)")
    random_encoder_seeds: list[int] = Field([0, 1, 2], min_length=1,
                                            description="random-encoder baseline: mean and std over these inits")
    batch_size: int = Field(64, ge=1, description="samples per encoder forward pass (memory, not results)")
    cpu_threads: int = Field(2, ge=1, description="torch threads, fixed rather than the core count: the same bits on any machine")

    @model_validator(mode="after")
    def _probes_for_probe_tasks(self):
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks {list(self.tasks)} name a task twice")
        missing = [t for t in self.tasks if REGISTRY[t].method != "knn" and t not in self.probes]
        unknown = [t for t in self.probes if REGISTRY.get(t, TaskSpec("knn", "accuracy")).method == "knn"]
        if missing:
            raise ValueError(f"probes has no settings for the probe task(s) {missing}; add probes.<task>: {{lr: ...}}")
        if unknown:
            raise ValueError(f"probes.{unknown[0]} is not a probe task; probe tasks: "
                             + ", ".join(t for t, s in REGISTRY.items() if s.method != "knn"))
        return self


def evaluate_params(params) -> EvaluateParams:
    """The validated ``evaluate`` section of a terrapipe.config.Params (errors name params.yaml keys)."""
    from terrapipe.data.embedding_store import validated

    return validated(EvaluateParams, getattr(params, "evaluate", {}), "evaluate")


# -- features that need no encoder ----------------------------------------------------------------------------
def raw_pixel_features(task: TaskData, patch_size: int | None = None) -> np.ndarray:
    """Per-band mean and standard deviation (NaN-aware) of every modality: over the chip and the time series,
    [N, 2 * sum C]; with ``patch_size`` over each p x p patch and the time series, [N, h, w, 2 * sum C].
    A band without any valid value there gives NaN (``standardize`` turns it into 0)."""
    parts = []
    for key in sorted(task.images):
        image = task.images[key]
        series = image if image.ndim == 5 else image[:, None]                  # (N, T, C, H, W)
        n, t, c, h, w = series.shape
        if patch_size is None:
            cells = series.transpose(0, 2, 1, 3, 4).reshape(n, c, -1)          # (N, C, T*H*W)
        else:
            p = patch_size
            grid = series.reshape(n, t, c, h // p, p, w // p, p)               # (N, T, C, h, p, w, p)
            cells = grid.transpose(0, 3, 5, 2, 1, 4, 6).reshape(n, h // p, w // p, c, t * p * p)
        with np.errstate(invalid="ignore"), _quiet_nan_warnings():
            parts += [np.nanmean(cells, axis=-1), np.nanstd(cells, axis=-1)]
    return np.concatenate(parts, axis=-1).astype(np.float32)


def _quiet_nan_warnings() -> warnings.catch_warnings:
    """nanmean of an all-NaN slice warns; here it is expected (a cloud-lost patch) and handled downstream."""
    return warnings.catch_warnings(action="ignore", category=RuntimeWarning)


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Z-score every feature (last axis) with the training rows' statistics; NaN -> 0 (the training mean)."""
    flat = train.reshape(-1, train.shape[-1])
    with _quiet_nan_warnings():
        mean, std = np.nanmean(flat, axis=0), np.nanstd(flat, axis=0)
    mean, std = np.nan_to_num(mean), np.where(np.nan_to_num(std) > 0, np.nan_to_num(std), 1.0)
    return [np.nan_to_num((x - mean) / std).astype(np.float32) for x in (train, *others)]


# -- scoring ----------------------------------------------------------------------------------------------------
@dataclass
class Scored:
    """One method's test result: the metrics report and the predictions it was computed from."""
    report: dict
    predictions: np.ndarray        # [M] (classification) or [M, H, W] (segmentation)


def _labelled(labels: np.ndarray) -> np.ndarray:
    return labels != IGNORE_LABEL


def _z_scored(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every split of a feature set z-scored with the train split's statistics (``standardize``)."""
    others = [s for s in features if s != "train"]
    return dict(zip(["train", *others], standardize(features["train"], *(features[s] for s in others))))


def score_features(spec: TaskSpec, task: TaskData, features: dict[str, np.ndarray], params: EvaluateParams,
                   key: str, *, z_score: bool = False) -> Scored:
    """Score one feature set ({"train", "valid", "test"} -> [N, D] or [N, h, w, D]) by the task's method.

    A segmentation probe sees every feature set z-scored with its training statistics: its per-patch Linear
    has no BatchNorm (the classification probe's), and an encoder's embedding dimensions vary ~0.03 across
    samples around offsets of ~1 (position embeddings), so AdamW's fixed budget would leave it at the
    majority class while the (z-scored) raw pixels train. kNN takes embeddings as they are (cosine), and
    z-scored features only with ``z_score`` (raw pixels: bands in different units).
    """
    from terrapipe.evals.knn import knn_classify
    from terrapipe.evals.metrics import classification_report
    from terrapipe.evals.probes import train_segmentation_probe

    labels = {split: task.labels[task.partition == split] for split in features}
    classes = len(task.class_names)
    if z_score or spec.method != "knn":
        features = _z_scored(features)
    if spec.method == "knn":
        keep = _labelled(labels["train"])
        pred = knn_classify(features["train"][keep], labels["train"][keep], features["test"], classes,
                            k=params.knn.k, temperature=params.knn.temperature)
        return Scored(classification_report(pred, labels["test"], classes, IGNORE_LABEL), pred)
    patch = task.labels.shape[-1] // features["train"].shape[2]
    config = params.probes[key].model_copy(update={"ignore_index": IGNORE_LABEL})
    result = train_segmentation_probe(features["train"], labels["train"], features["test"], labels["test"], patch,
                                      classes, config, val_emb=features.get("valid"),
                                      val_masks=labels.get("valid"))
    return Scored(result.metrics, result.predictions)


def majority(task: TaskData) -> Scored:
    """The most frequent labelled training class, predicted everywhere in the test partition."""
    from terrapipe.evals.metrics import classification_report

    train = task.labels[(task.partition == "train")]
    counts = np.bincount(train[_labelled(train)].ravel(), minlength=len(task.class_names))
    test = task.labels[task.partition == "test"]
    pred = np.full_like(test, int(np.argmax(counts)))
    return Scored(classification_report(pred, test, len(task.class_names), IGNORE_LABEL), pred)


def _headline(spec: TaskSpec, report: dict) -> float:
    return float(report[spec.metric])


def _brief(report: dict) -> dict:
    """The scalar figures of a metrics report (per-class tables stay out of metrics.json)."""
    return {k: report[k] for k in ("accuracy", "micro_f1", "macro_f1", "miou", "n")}


def _geometry(encoder_train: np.ndarray, random_trains: list[np.ndarray]) -> dict:
    """metrics.embedding_geometry of the training partition's embeddings (kNN's reference set, the probes'
    training rows): the encoder's, and the random encoders' mean over their initialisations."""
    from terrapipe.evals.metrics import embedding_geometry

    randoms = [embedding_geometry(r) for r in random_trains]
    return {"encoder": embedding_geometry(encoder_train),
            "random_encoder": {k: float(np.mean([r[k] for r in randoms])) for k in randoms[0]}}


@dataclass
class TaskResult:
    """Everything evaluate@<experiment> writes for one task."""
    summary: dict                  # the task's entry in metrics.json
    confusion: tuple[np.ndarray, np.ndarray]   # (actual, predicted) of the encoder on the labelled test samples
    timing: dict                   # seconds: extraction (encoder + random encoders), probing (every method)


def evaluate_task(handle, key: str, task: TaskData, params: EvaluateParams, cache_dir: Path) -> TaskResult:
    """The encoder of ``handle`` and every baseline on one task; see the module docstring.

    Args:
        handle: an evals.embeddings.EncoderHandle (load_encoder or any TokenEncoder wrapped likewise).
        key: the task's registry key (eurosat, so2sat, pastis, mados).
        task: the whole task (every partition), as read by terrapipe.data.tasks.read_task.
        cache_dir: the embedding cache (evals.embeddings.cached_embeddings).
    """
    from terrapipe.evals.embeddings import cached_embeddings, random_encoder_like

    spec = REGISTRY[key]
    kind = "classification" if spec.method == "knn" else "segmentation"
    splits = ("train", "valid", "test") if spec.method != "knn" else ("train", "test")
    splits = tuple(s for s in splits if (task.partition == s).any())
    lacking = [s for s in ("train", "test") if s not in splits]
    if lacking:
        from terrapipe.errors import InputDataError
        raise InputDataError(f"task {task.name}", f"has no {' and no '.join(lacking)} samples",
                             f"Raise tasks.{key}.n_samples (each class is split over train / valid / test by "
                             "tasks.valid_share and tasks.test_share) or fix the benchmark's partition files")

    def embed(encoder) -> dict[str, np.ndarray]:
        return {s: cached_embeddings(encoder, task, kind, s, cache_dir, batch_size=params.batch_size)
                for s in splits}

    started = time.perf_counter()
    encoded = embed(handle)
    randoms = [embed(random_encoder_like(handle, seed)) for seed in params.random_encoder_seeds]
    extraction_s = time.perf_counter() - started

    started = time.perf_counter()
    results = {"encoder": score_features(spec, task, encoded, params, key)}
    random_scores = [score_features(spec, task, r, params, key) for r in randoms]
    patch = None if kind == "classification" else task.labels.shape[-1] // encoded["train"].shape[2]
    raw = raw_pixel_features(task, patch)
    results["raw_pixels"] = score_features(spec, task, {s: raw[task.partition == s] for s in splits}, params, key,
                                           z_score=True)
    results["majority"] = majority(task)
    probing_s = time.perf_counter() - started

    random_values = np.array([_headline(spec, s.report) for s in random_scores])
    value = _headline(spec, results["encoder"].report)
    summary = {
        "metric": spec.name,
        "encoder": value,
        "random_encoder": float(random_values.mean()),
        "random_encoder_std": float(random_values.std(ddof=1)) if len(random_values) > 1 else 0.0,
        "raw_pixels": _headline(spec, results["raw_pixels"].report),
        "majority": _headline(spec, results["majority"].report),
        "gain_over_random": value - float(random_values.mean()),
        "details": {"encoder": _brief(results["encoder"].report),
                    "random_encoder_seeds": {str(seed): _brief(s.report)
                                             for seed, s in zip(params.random_encoder_seeds, random_scores)},
                    "raw_pixels": _brief(results["raw_pixels"].report),
                    "majority": _brief(results["majority"].report),
                    "embedding_geometry": _geometry(encoded["train"], [r["train"] for r in randoms]),
                    "test_samples": int((task.partition == "test").sum()),
                    "train_samples": int((task.partition == "train").sum()),
                    "classes": list(task.class_names)},
    }
    actual = task.labels[task.partition == "test"]
    predicted = results["encoder"].predictions
    keep = _labelled(actual)
    log.info("evaluate %s: %s %.3f (random encoder %.3f +- %.3f, raw pixels %.3f, majority %.3f); "
             "extraction %.1f s, probing %.1f s", task.name, spec.name, value, summary["random_encoder"],
             summary["random_encoder_std"], summary["raw_pixels"], summary["majority"], extraction_s, probing_s)
    return TaskResult(summary, (actual[keep].ravel(), predicted[keep].ravel()),
                      {"extraction_s": extraction_s, "probing_s": probing_s})


def write_confusion(path: Path, task: TaskData, actual: np.ndarray, predicted: np.ndarray) -> None:
    """A DVC confusion plot source: one row per labelled test sample (or pixel), class names as values."""
    import csv

    from terrapipe.atomic import atomic_path

    names = np.asarray(task.class_names, dtype=object)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(names[actual], names[predicted]))


def run_evaluation(params, experiment: str, checkpoint: Path, out_dir: Path, cache_dir: Path,
                   task_dirs: dict[str, Path]) -> dict:
    """evaluate@<experiment>: every task of ``evaluate.tasks`` -> ``out_dir``/metrics.json (DVC metrics),
    confusion/<task>.csv (DVC confusion plots), and the machine-dependent seconds (not tracked) in
    terrapipe.paths.timing_file("evaluate", experiment, ".json").

    Returns the metrics document.
    """
    import torch

    from terrapipe.atomic import write_json
    from terrapipe.data.tasks import read_task, tasks_params
    from terrapipe.evals.embeddings import load_encoder

    settings = evaluate_params(params)
    task_settings = tasks_params(params)
    handle = load_encoder(checkpoint)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.cpu_threads)
    try:
        results = {}
        for name in settings.tasks:
            task = read_task(name, task_dirs[name], task_settings)
            results[name] = (task, evaluate_task(handle, name, task, settings, cache_dir))
    finally:
        torch.set_num_threads(threads)
    metrics = {"experiment": experiment, "checkpoint_sha256": handle.identity,
               "tasks": {name: result.summary for name, (_, result) in results.items()}}
    for name, (task, result) in results.items():
        write_confusion(out_dir / "confusion" / f"{name}.csv", task, *result.confusion)
    from terrapipe.paths import timing_file

    timing = timing_file("evaluate", experiment, ".json")
    timing.parent.mkdir(parents=True, exist_ok=True)
    write_json(timing, {name: result.timing for name, (_, result) in results.items()})
    write_json(out_dir / "metrics.json", metrics)
    return metrics
