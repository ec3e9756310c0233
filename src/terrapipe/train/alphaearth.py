"""The Earth4D -> AlphaEarth experiment: predict a place's 64-D AlphaEarth embedding from (lat, lon,
elevation, time) alone, and say honestly how good that is.

Re-implemented from the description of DeepEarth's earth4d_to_alphaearth.py (reference/deepearth-
behaviour.md section 2): the same predictor (Earth4D -> LayerNorm -> Linear -> 2 x [Linear, ReLU,
LayerNorm, Dropout] -> Linear -> Tanh), MSE, Adam with the encoder at a tenth of the learning rate,
ReduceLROnPlateau, clipping, the NaN guards and the NaN test. What differs, and why:

- the original reports one "MAPE" on an i.i.d. 95/5 split, which measures interpolation only. Here
  that random split is kept (of the rows split@alphaearth assigns to training) and every metric is
  also reported on each spatial holdout region, on all of them together and on the temporal holdout
  year (terrapipe.data.split), each beside the mean-embedding and geodesic-kNN baselines
  (terrapipe.evals.regression), and metrics.json says per holdout whether Earth4D beats kNN;
- "MAPE" is named for what it is, ``mae_over_range_pct`` = 100 * MAE / 2;
- the plateau scheduler steps on a validation set carved from the training rows, never on a test set
  (the original stepped on its test set's first 10,000 rows);
- a parameter that turned NaN is not re-initialised (the original's guard): a skipped non-finite batch
  or step leaves the parameters as they were, and both skips are counted in metrics.json.

Only pydantic and numpy are imported at module level (params validation runs this); torch, pandas and
matplotlib are imported where they are used.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from terrapipe import paths
from terrapipe.errors import ConfigError, InputDataError

log = logging.getLogger("terrapipe")

EMBEDDING_DIM = 64
HIDDEN_BLOCKS = 2            # [Linear, ReLU, LayerNorm, Dropout] repeats after the input projection
EVAL_CHUNK = 8192            # rows per no-grad forward when predicting
TRAIN_REASON = "temporal_train"
TEMPORAL_REASON = "temporal_test"
SPATIAL_PREFIX = "spatial_test_region_"
RANDOM_HOLDOUT = "random"    # i.i.d. rows of the training area and years: interpolation, as the original
SPATIAL_ALL = "spatial_all"
TEMPORAL_HOLDOUT = "temporal"
METRICS = "metrics.json"     # DVC metrics (deterministic)
CURVES = "curves.csv"        # DVC plots: one row per epoch (deterministic)
TIMING = "timing.json"       # wall time, epochs/s, samples/s: this machine's speed, not tracked by DVC
FINAL_MODEL = "final_model.pt"
PREDICTIONS, CHECKPOINTS, VISUALIZATIONS = "predictions", "checkpoints", "visualizations"
OUTPUT_NAMES = {METRICS, CURVES, TIMING, FINAL_MODEL, PREDICTIONS, CHECKPOINTS, VISUALIZATIONS,
                "training_curves.png", "final_roi_rgb.png", "final_roi_error.png"}
PROCESSED_FIX = "Regenerate it with `dvc repro normalize_alphaearth split@alphaearth`"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RegionOfInterest(_Section):
    """The window of the RGB and error maps (no antimeridian crossing). The default is the DeepEarth
    central-Florida box, where the sample world puts two point boxes (an AOI and the DeepEarth area)."""
    lat_min: float = Field(28.0, ge=-90, le=90)
    lat_max: float = Field(29.0, ge=-90, le=90)
    lon_min: float = Field(-81.95, ge=-180, le=180)
    lon_max: float = Field(-80.9, ge=-180, le=180)

    @model_validator(mode="after")
    def _ordered(self):
        if not (self.lat_min < self.lat_max and self.lon_min < self.lon_max):
            raise ValueError(f"roi needs lat_min < lat_max and lon_min < lon_max, got lat {self.lat_min}..{self.lat_max}, "
                             f"lon {self.lon_min}..{self.lon_max}")
        return self

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return (lat >= self.lat_min) & (lat <= self.lat_max) & (lon >= self.lon_min) & (lon <= self.lon_max)


class Earth4DExperimentParams(_Section):
    """params.yaml ``earth4d``: one Earth4D -> AlphaEarth run (the stage's CLI options override these)."""
    encoder: str = "cpu"                     # an Earth4DConfig.preset name
    # Earth4DConfig fields merged into the preset's. The default stops the xyz grid at 6.6 km cells (8 levels):
    # 20,000 points cannot fill the cpu preset's 390 m cells, whose 4 finest levels only memorise the
    # training rows (validation MSE rises after ~8 epochs) and lose 0.1 points of mae_over_range_pct.
    encoder_overrides: dict = {"spatial": {"levels": 8, "finest_resolution": 16 * 2 ** 7}}
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(256, ge=1)       # the original: 10,000 of 3M rows; here ~60 steps an epoch
    learning_rate: float = Field(1e-2, gt=0)  # the original: 1e-3 over ~30,000 steps; here ~700 steps in all
    encoder_lr_factor: float = Field(0.1, gt=0)   # the encoder's lr = learning_rate * this (the original's 0.1)
    adam_eps: float = Field(1e-6, gt=0)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    hidden: int = Field(256, ge=1)
    train_split: float = Field(0.95, gt=0, lt=1)  # of the training-assigned rows; the rest is the random holdout
    val_fraction: float = Field(0.05, gt=0, lt=1)  # of the rows kept for training: the plateau scheduler's signal
    max_samples: int | None = Field(None, ge=1)   # a seeded subsample of all rows (None: every row)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    cpu_threads: int | None = Field(1, ge=1)     # torch threads on CPU (None: torch's default). One: small batches
    #                                              gain little from a second core and lose several-fold on shared ones
    seed: int = 42
    skip_nan_test: bool = False
    nan_test_chunk: int = Field(4096, ge=1)     # rows per forward (the original: 1,000)
    knn_k: int = Field(20, ge=1)
    checkpoint_every: int = Field(10, ge=1)       # epochs between checkpoints, as the original (and the last epoch)
    tracked_rows: int = Field(10000, ge=1)        # holdout rows whose predictions are written every epoch
    roi: RegionOfInterest = RegionOfInterest()

    @model_validator(mode="after")
    def _encoder_resolves(self):
        self.encoder_config()
        return self

    def encoder_config(self):
        """The frozen Earth4DConfig: the preset with ``encoder_overrides`` merged in (mappings key by key)."""
        from terrapipe.models.earth4d_config import Earth4DConfig

        try:
            preset = Earth4DConfig.preset(self.encoder).model_dump()
        except ConfigError as exc:
            raise ValueError(f"encoder: {exc}") from None
        merged = {**preset, **{key: {**preset[key], **value} if isinstance(value, dict) and isinstance(preset.get(key), dict)
                               else value for key, value in self.encoder_overrides.items()}}   # grids merge field by field
        try:
            return Earth4DConfig.model_validate(merged)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"encoder_overrides: {problems}") from None


def earth4d_params(params, overrides: dict | None = None) -> Earth4DExperimentParams:
    """The validated ``earth4d`` section of loaded params with ``overrides`` (CLI options) on top.

    Raises ConfigError naming each bad key by its dotted path (and the option that set it)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return Earth4DExperimentParams.model_validate({**params.earth4d, **overrides})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
            if error["type"] == "float_type" and isinstance(error.get("input"), str):
                message += f" (got the text {error['input']!r}: YAML reads 1e-3 as text, write 1.0e-3)"
            where = ".".join(str(p) for p in error["loc"])
            origin = f" (set by --{where.replace('_', '-')})" if where in overrides else ""
            lines.append(f"earth4d.{where}{origin}: {message}" if where else f"earth4d.{message}")
        raise ConfigError("params.yaml: invalid earth4d section:\n  " + "\n  ".join(lines)) from None


# ----------------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class AlphaEarthData:
    """Aligned rows: coords float32 [N, 4] (lat deg, lon deg, elevation m, t_norm), targets float32
    [N, 64], the split@alphaearth reason of each row, and where they came from."""
    coords: np.ndarray
    targets: np.ndarray
    reasons: np.ndarray
    source: dict


PROCESSED_DIR = paths.processed("alphaearth")
ASSIGNMENTS = paths.split_assignments("alphaearth")


def load_processed(processed_dir: Path = PROCESSED_DIR, assignments: Path = ASSIGNMENTS) -> AlphaEarthData:
    """The normalize_alphaearth arrays joined to split@alphaearth's assignments by point id."""
    import pandas as pd

    processed_dir = Path(processed_dir)
    files = {name: processed_dir / name for name in ("points.parquet", "coords.npy", "embeddings.npy")}
    for path in [*files.values(), Path(assignments)]:
        if not path.exists():
            raise InputDataError(path, "missing", PROCESSED_FIX)
    points = pd.read_parquet(files["points.parquet"], columns=["point_id"])
    coords = np.load(files["coords.npy"])
    targets = np.load(files["embeddings.npy"])
    if coords.shape != (len(points), 4):
        raise InputDataError(files["coords.npy"], f"holds {coords.shape}, not [{len(points)}, 4] rows of points.parquet",
                             PROCESSED_FIX)
    if targets.shape != (len(points), EMBEDDING_DIM):
        raise InputDataError(files["embeddings.npy"], f"holds {targets.shape}, not [{len(points)}, {EMBEDDING_DIM}]",
                             PROCESSED_FIX)
    table = pd.read_parquet(assignments, columns=["id", "split_reason"])
    reason_of = dict(zip(table["id"].astype(str), table["split_reason"].astype(str)))
    ids = points["point_id"].astype(str)
    missing = [i for i in ids if i not in reason_of]
    if missing:
        raise InputDataError(assignments, f"has no row for {len(missing)} of the {len(ids)} points (first: id "
                             f"{missing[0]}); it was split from other data", PROCESSED_FIX)
    return AlphaEarthData(coords.astype(np.float32, copy=False), targets.astype(np.float32, copy=False),
                          np.array([reason_of[i] for i in ids], dtype=object),
                          {"processed": str(processed_dir), "assignments": str(assignments)})


def _read_user_files(metadata: Path, embeddings: Path):
    """read_raw's checks on a metadata CSV + [N, 64] .pt given by path (read_raw wants one folder)."""
    import tempfile

    from terrapipe.data.alphaearth import EMBEDDINGS_FILE, METADATA_FILE, read_raw

    with tempfile.TemporaryDirectory() as tmp:
        links = {str(Path(tmp) / METADATA_FILE): (Path(metadata), "--metadata"),
                 str(Path(tmp) / EMBEDDINGS_FILE): (Path(embeddings), "--embeddings")}
        for link, (target, _) in links.items():
            Path(link).symlink_to(target.absolute())
        try:
            return read_raw(tmp)
        except InputDataError as exc:
            target, option = links.get(exc.path, (exc.path, "--metadata / --embeddings"))
            raise InputDataError(target, exc.problem, f"Check the file given to {option}") from None


def load_user_files(metadata: Path, embeddings: Path, params) -> AlphaEarthData:
    """DeepEarth-style files (metadata CSV + [N, 64] .pt), cleaned by the data stage's own filters
    (params.normalize.alphaearth) and split by params.split.alphaearth, as the pipeline does."""
    from terrapipe.data.alphaearth import clean_points, refuse_empty
    from terrapipe.data.split import spatiotemporal_split

    frame, values = _read_user_files(metadata, embeddings)
    points, coords, keep, report = clean_points(frame, values, params.normalize.alphaearth)
    refuse_empty(frame, report, params.normalize.alphaearth, Path(metadata))
    split = spatiotemporal_split(points["latitude"].to_numpy(float), points["longitude"].to_numpy(float),
                                 points["year"].to_numpy(), params.split.alphaearth, where="split.alphaearth")
    for warning in split.warnings:
        log.warning(warning)
    return AlphaEarthData(coords, values[keep], np.asarray(split.split_reason, dtype=object),
                          {"metadata": str(metadata), "embeddings": str(embeddings), "cleaning": report})


def subsample(data: AlphaEarthData, max_samples: int | None, seed: int) -> AlphaEarthData:
    """A seeded uniform subsample of ``max_samples`` rows in their original order (all rows if None)."""
    if max_samples is None or max_samples >= len(data.coords):
        return data
    rows = np.sort(np.random.default_rng(seed).choice(len(data.coords), max_samples, replace=False))
    return AlphaEarthData(data.coords[rows], data.targets[rows], data.reasons[rows],
                          {**data.source, "max_samples": max_samples})


@dataclass(frozen=True)
class Partition:
    """Row indices: ``fit`` trains the model and the baselines, ``val`` (carved from the training rows)
    drives the plateau scheduler, ``holdouts`` are scored: random, spatial_region_k, spatial_all, temporal."""
    fit: np.ndarray
    val: np.ndarray
    holdouts: dict[str, np.ndarray]


def partition(reasons: np.ndarray, params: Earth4DExperimentParams) -> Partition:
    """The original's random split of the training-assigned rows, plus split@alphaearth's holdouts."""
    rng = np.random.default_rng(params.seed)
    train_rows = rng.permutation(np.flatnonzero(reasons == TRAIN_REASON))
    kept = int(round(params.train_split * len(train_rows)))
    n_val = int(round(params.val_fraction * kept))
    fit, val, random_rows = (np.sort(part) for part in np.split(train_rows, [kept - n_val, kept]))
    if len(fit) < params.knn_k or n_val == 0 or len(random_rows) == 0:
        raise ConfigError(f"earth4d: {len(train_rows)} training rows give {len(fit)} to fit, {n_val} to validate and "
                          f"{len(random_rows)} to test; each needs at least one (and fit at least earth4d.knn_k = "
                          f"{params.knn_k}): raise earth4d.max_samples or change train_split / val_fraction")
    holdouts = {RANDOM_HOLDOUT: random_rows}
    regions = sorted({r for r in reasons if r.startswith(SPATIAL_PREFIX)}, key=lambda r: int(r[len(SPATIAL_PREFIX):]))
    for reason in regions:
        holdouts[f"spatial_region_{reason[len(SPATIAL_PREFIX):]}"] = np.flatnonzero(reasons == reason)
    if regions:
        holdouts[SPATIAL_ALL] = np.flatnonzero(np.char.startswith(reasons.astype(str), SPATIAL_PREFIX))
    if (reasons == TEMPORAL_REASON).any():
        holdouts[TEMPORAL_HOLDOUT] = np.flatnonzero(reasons == TEMPORAL_REASON)
    return Partition(fit, val, holdouts)


# ---------------------------------------------------------------------------------------------- model

def build_predictor(encoder_config, params: Earth4DExperimentParams, seed: int):
    """DeepEarth's AlphaEarthPredictor (reference/deepearth-behaviour.md 2.4) around an Earth4D encoder
    (hash-grid encoding after Müller et al., "Instant Neural Graphics Primitives", SIGGRAPH 2022).

    Args: the Earth4DConfig, the experiment params (hidden, dropout), the seed of every initial weight.
    Returns: an nn.Sequential mapping coords [B, 4] (lat deg, lon deg, elevation m, t_norm) -> [B, 64]
    in (-1, 1); its ``encoder`` child holds the Earth4D parameters (the reduced-lr group).
    """
    import torch
    from torch import nn

    from terrapipe.models.earth4d import Earth4D

    torch.manual_seed(seed)
    encoder = Earth4D(encoder_config, seed=seed)
    width, hidden = encoder.output_dim, params.hidden
    layers = OrderedDict(encoder=encoder, input_norm=nn.LayerNorm(width), project=nn.Linear(width, hidden))
    for i in range(HIDDEN_BLOCKS):
        layers[f"block_{i + 1}"] = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden),
                                                 nn.Dropout(params.dropout))
    layers["head"] = nn.Linear(hidden, EMBEDDING_DIM)
    layers["squash"] = nn.Tanh()
    return nn.Sequential(layers)


def predict(model, coords, device) -> np.ndarray:
    """float32 [N, 64] predictions of ``model`` in eval mode for coords [N, 4], EVAL_CHUNK rows at a time."""
    import torch

    model.eval()
    out = np.empty((len(coords), EMBEDDING_DIM), np.float32)
    with torch.no_grad():
        for first in range(0, len(coords), EVAL_CHUNK):
            block = torch.as_tensor(coords[first:first + EVAL_CHUNK], device=device)
            out[first:first + EVAL_CHUNK] = model(block).float().cpu().numpy()
    return out


def nan_test(model, coords: np.ndarray, chunk: int, device) -> np.ndarray:
    """The original's NaN test on the freshly initialised model: forward every row in chunks; where a
    chunk gives a non-finite value (or fails), forward its rows one by one. Returns the keep mask [N]."""
    import torch

    model.eval()
    keep = np.ones(len(coords), bool)

    def finite(rows: np.ndarray) -> bool:
        try:
            return bool(torch.isfinite(model(torch.as_tensor(coords[rows], device=device))).all())
        except (RuntimeError, ValueError):   # a kernel failure, or Earth4D's CoordinateDomainError
            return False

    with torch.no_grad():
        for first in range(0, len(coords), chunk):
            rows = np.arange(first, min(first + chunk, len(coords)))
            if not finite(rows):
                for row in rows:
                    keep[row] = finite(np.array([row]))
    return keep


# ------------------------------------------------------------------------------------------- training

@dataclass
class Run:
    """What one training run leaves: per-epoch curves, final predictions per holdout and the counts."""
    curves: list[dict] = field(default_factory=list)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_batches: int = 0          # loss or predictions non-finite: no backward
    skipped_steps: int = 0            # gradient norm non-finite: no optimizer step
    samples_seen: int = 0
    train_s: float = 0.0


def _optimizer(model, params: Earth4DExperimentParams):
    import torch

    encoder = list(model.encoder.parameters())
    encoder_ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    optimizer = torch.optim.Adam([{"params": encoder, "lr": params.learning_rate * params.encoder_lr_factor},
                                  {"params": rest, "lr": params.learning_rate}], eps=params.adam_eps,
                                 foreach=True)   # one fused pass over the tables: 2-3x faster on CPU
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=params.plateau_factor,
                                                           patience=params.plateau_patience)
    return optimizer, scheduler


def _mse(model, coords, targets, device) -> float:
    return float(((predict(model, coords, device).astype(np.float64) - targets) ** 2).mean())


def train(model, data: AlphaEarthData, part: Partition, params: Earth4DExperimentParams, device,
          on_epoch=None) -> Run:
    """Train ``model`` on ``part.fit`` for params.epochs; after each epoch score every holdout and call
    ``on_epoch(epoch, model, optimizer, scheduler, predictions, row)`` (the outputs). Returns the Run."""
    import torch

    from terrapipe.evals.regression import regression_metrics

    optimizer, scheduler = _optimizer(model, params)
    coords = torch.as_tensor(data.coords[part.fit], device=device)        # (F, 4)
    targets = torch.as_tensor(data.targets[part.fit], device=device)      # (F, 64)
    batch = min(params.batch_size, len(part.fit))
    batches = len(part.fit) // batch                                      # drop_last, as the original
    order = torch.Generator().manual_seed(params.seed)
    run = Run()
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        model.train()
        permutation = torch.randperm(len(part.fit), generator=order).to(device)
        loss_sum, loss_rows = 0.0, 0
        for b in range(batches):
            rows = permutation[b * batch:(b + 1) * batch]
            pred = model(coords[rows])
            loss = torch.nn.functional.mse_loss(pred, targets[rows])
            if not bool(torch.isfinite(loss)):
                run.skipped_batches += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            if not bool(torch.isfinite(grad_norm)):
                run.skipped_steps += 1
                continue
            optimizer.step()
            loss_sum, loss_rows = loss_sum + loss.item() * len(rows), loss_rows + len(rows)
        run.samples_seen += batches * batch
        run.train_s += time.perf_counter() - started
        val_mse = _mse(model, data.coords[part.val], data.targets[part.val], device)
        lrs = [group["lr"] for group in optimizer.param_groups]
        scheduler.step(val_mse)
        predictions = {name: predict(model, data.coords[rows], device) for name, rows in part.holdouts.items()}
        row = {"epoch": epoch, "train_mse": loss_sum / loss_rows if loss_rows else float("nan"), "val_mse": val_mse,
               "lr": lrs[1], "encoder_lr": lrs[0], "skipped_batches": run.skipped_batches,
               "skipped_steps": run.skipped_steps}
        for name, rows in part.holdouts.items():
            scores = regression_metrics(predictions[name], data.targets[rows])
            row.update({f"{name}_{k}": scores[k] for k in ("mse", "mae_over_range_pct", "r2_uniform_average",
                                                             "cosine_similarity_mean")})
        run.curves.append(row)
        run.predictions = predictions
        log.info("earth4d epoch %d/%d: train mse %.5f, val mse %.5f, random-holdout mae/range %.2f%%, lr %.2g",
                 epoch, params.epochs, row["train_mse"], val_mse, row[f"{RANDOM_HOLDOUT}_mae_over_range_pct"], lrs[1])
        if on_epoch is not None:
            on_epoch(epoch, model, optimizer, scheduler, predictions, row)
    return run


# -------------------------------------------------------------------------------------------- results

def baseline_predictions(data: AlphaEarthData, part: Partition, k: int) -> tuple[dict, float]:
    """Mean-embedding and geodesic-kNN predictions for every holdout, and the kNN fit + predict seconds."""
    from terrapipe.evals.regression import knn_geodesic_baseline, mean_embedding_baseline

    fit_latlon, fit_targets = data.coords[part.fit, :2], data.targets[part.fit]
    mean = mean_embedding_baseline(fit_targets)
    started = time.perf_counter()
    knn = knn_geodesic_baseline(fit_latlon, fit_targets, k=k)
    knn_out = {name: knn(data.coords[rows, :2]) for name, rows in part.holdouts.items()}
    knn_s = time.perf_counter() - started
    return {name: {"mean_embedding": mean(data.coords[rows, :2]), "knn_geodesic": knn_out[name]}
            for name, rows in part.holdouts.items()}, knn_s


def holdout_metrics(data: AlphaEarthData, part: Partition, run: Run, baselines: dict) -> dict:
    """Per holdout: rows, every metric of Earth4D and both baselines, and who wins on MAE."""
    from terrapipe.evals.regression import regression_metrics

    out = {}
    for name, rows in part.holdouts.items():
        target = data.targets[rows]
        scores = {"earth4d": regression_metrics(run.predictions[name], target),
                  **{b: regression_metrics(pred, target) for b, pred in baselines[name].items()}}
        out[name] = {"rows": int(len(rows)), **{m: {k: v for k, v in s.items() if k != "rows"} for m, s in scores.items()},
                     "earth4d_beats_knn": scores["earth4d"]["mae"] < scores["knn_geodesic"]["mae"],
                     "earth4d_beats_mean_embedding": scores["earth4d"]["mae"] < scores["mean_embedding"]["mae"]}
    return out


def metrics_document(params: Earth4DExperimentParams, data: AlphaEarthData, part: Partition, run: Run,
                     baselines: dict, model, nan_dropped: int | None) -> dict:
    """metrics.json: deterministic (no times), every figure with its definition."""
    from terrapipe.evals.regression import METRIC_DEFINITIONS

    encoder = model.encoder
    total = sum(p.numel() for p in model.parameters())
    return {
        "holdouts": holdout_metrics(data, part, run, baselines),
        "final_epoch": {k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in run.curves[-1].items()},
        "data": {"rows": int(len(data.coords)), "fit_rows": int(len(part.fit)), "val_rows": int(len(part.val)),
                 "nan_test_dropped": nan_dropped, "nan_test": "skipped" if nan_dropped is None else "run",
                 "source": {k: v for k, v in data.source.items() if k != "cleaning"}},
        "training": {"epochs": params.epochs, "samples_seen": run.samples_seen, "skipped_batches": run.skipped_batches,
                     "skipped_steps": run.skipped_steps},
        "model": {"parameters": int(total), "encoder_parameters": int(encoder.parameter_count()),
                  "encoder_table_bytes": int(encoder.table_bytes()), "encoder_output_dim": int(encoder.output_dim),
                  "predictor_parameters": int(total - sum(p.numel() for p in encoder.parameters()))},
        "definitions": {**METRIC_DEFINITIONS,
                        "earth4d_beats_knn": "Earth4D's mae is lower than the geodesic kNN baseline's",
                        "random": "a seeded i.i.d. holdout of the training-assigned rows (interpolation; the "
                                  "original's only split)",
                        "spatial_region_k / spatial_all": "split@alphaearth's square regions (every year)",
                        "temporal": "split@alphaearth's held-out years outside the regions",
                        "mean_embedding": "the fit rows' mean embedding everywhere",
                        "knn_geodesic": f"uniform mean of the {params.knn_k} fit rows nearest by haversine distance"},
        "params": params.model_dump(),
    }


# -------------------------------------------------------------------------------------------- outputs

def tracked_rows(part: Partition, limit: int, seed: int) -> np.ndarray:
    """The holdout rows whose predictions are written every epoch (a seeded subset above ``limit``)."""
    rows = np.unique(np.concatenate(list(part.holdouts.values())))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    return rows


def _dims_frame(values: np.ndarray):
    import pandas as pd

    return pd.DataFrame(values, columns=[f"dim_{i}" for i in range(values.shape[1])])


def _holdout_names(part: Partition, rows: np.ndarray) -> np.ndarray:
    """The holdout of each tracked row (random, spatial_region_k or temporal)."""
    names = np.empty(len(rows), dtype=object)
    for name, members in part.holdouts.items():
        if name != SPATIAL_ALL:
            names[np.isin(rows, members)] = name
    return names


class Outputs:
    """Writes the seed's layout under one folder (checkpoints/, predictions/, visualizations/, curves)."""

    def __init__(self, out_dir: Path, data: AlphaEarthData, part: Partition, params: Earth4DExperimentParams,
                 baselines: dict):
        import pandas as pd

        from terrapipe.report.alphaearth_maps import RoiMaps

        self.out_dir, self.params, self.part = Path(out_dir), params, part
        for sub in (PREDICTIONS, CHECKPOINTS, VISUALIZATIONS):
            (self.out_dir / sub).mkdir(parents=True, exist_ok=True)
        self.tracked = tracked_rows(part, params.tracked_rows, params.seed)
        # Where each tracked row sits inside the holdout predictions of an epoch.
        self.lookup = {name: np.searchsorted(rows, self.tracked) for name, rows in part.holdouts.items()}
        self.owner = _holdout_names(part, self.tracked)
        self.truth = data.targets[self.tracked]
        coords = data.coords[self.tracked]
        _dims_frame(self.truth).to_csv(self.out_dir / PREDICTIONS / "ground_truth.csv", index=False, float_format="%.5f")
        pd.DataFrame({"latitude": coords[:, 0], "longitude": coords[:, 1], "elevation_m": coords[:, 2],
                      "time_norm": coords[:, 3], "holdout": self.owner}).to_csv(
            self.out_dir / PREDICTIONS / "test_coordinates.csv", index=False, float_format="%.6f")
        in_roi = params.roi.contains(coords[:, 0].astype(float), coords[:, 1].astype(float))
        if not in_roi.any():
            raise ConfigError(f"earth4d.roi {params.roi.model_dump()} holds none of the {len(coords)} tracked holdout "
                              f"points (they span latitude {coords[:, 0].min():.2f}..{coords[:, 0].max():.2f}, "
                              f"longitude {coords[:, 1].min():.2f}..{coords[:, 1].max():.2f}); set a window over some")
        self.in_roi = in_roi
        mean_tracked = self._gather({name: pred["mean_embedding"] for name, pred in baselines.items()})
        self.maps = RoiMaps(coords[in_roi, :2], self.truth[in_roi], mean_tracked[in_roi], params.roi)
        self.frames: list[Path] = []

    def _gather(self, predictions: dict[str, np.ndarray]) -> np.ndarray:
        """The tracked rows' predictions from per-holdout arrays, [T, 64]."""
        out = np.empty((len(self.tracked), EMBEDDING_DIM), np.float64)
        for name, index in self.lookup.items():
            if name == SPATIAL_ALL:
                continue
            mine = self.owner == name
            out[mine] = predictions[name][index[mine]]
        return out

    def epoch(self, epoch: int, model, optimizer, scheduler, predictions: dict, row: dict) -> None:
        import torch

        from terrapipe.evals.regression import per_row_mae_over_range_pct

        pred = self._gather(predictions)
        frame = _dims_frame(pred)
        frame["mae_over_range_pct"] = per_row_mae_over_range_pct(pred, self.truth)
        frame.to_csv(self.out_dir / PREDICTIONS / f"epoch_{epoch:03d}.csv", index=False, float_format="%.5f")
        self.frames.append(self.maps.draw(pred[self.in_roi], f"epoch {epoch}",
                                          self.out_dir / VISUALIZATIONS / f"roi_epoch_{epoch:03d}"))
        if epoch % self.params.checkpoint_every == 0 or epoch == self.params.epochs:
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "train_mse": row["train_mse"], "val_mse": row["val_mse"],
                        "params": self.params.model_dump()},
                       self.out_dir / CHECKPOINTS / f"checkpoint_epoch_{epoch:03d}.pt")

    def finish(self, model, encoder_config, run: Run, metrics: dict, timing: dict) -> None:
        import shutil

        import torch

        from terrapipe.atomic import write_json
        from terrapipe.report.alphaearth_maps import plot_training_curves, write_animation

        torch.save({"model": model.state_dict(), "encoder_config": encoder_config.model_dump(),
                    "params": self.params.model_dump()}, self.out_dir / FINAL_MODEL)
        write_curves(self.out_dir / CURVES, run.curves)
        plot_training_curves(run.curves, list(self.part.holdouts), self.out_dir / "training_curves.png")
        for kind in ("rgb", "error"):
            frames = [Path(f"{base}_{kind}.png") for base in self.frames]
            write_animation(frames, self.out_dir / VISUALIZATIONS / f"roi_{kind}_progression.gif")
            shutil.copyfile(frames[-1], self.out_dir / f"final_roi_{kind}.png")
        write_json(self.out_dir / METRICS, metrics)
        write_json(self.out_dir / TIMING, timing)


def write_curves(path: Path, rows: list[dict]) -> None:
    """curves.csv: one row per epoch, floats to 6 significant digits (DVC plots)."""
    import csv

    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


def _check_output_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that is not an earlier run's output (the whole folder is swapped)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output-dir {out_dir} is a file; give a folder")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUT_NAMES) if out_dir.is_dir() else []
    if foreign:
        raise ConfigError(f"--output-dir {out_dir} holds files this experiment did not write ({', '.join(foreign[:5])}); "
                          "the folder is replaced whole, so give an empty or new folder")


def _device(choice: str):
    """cuda when asked (or auto and one is visible), else cpu."""
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("earth4d.device is cuda but no CUDA device is visible; use auto or cpu")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def run_experiment(params: Earth4DExperimentParams, data: AlphaEarthData, out_dir: Path = paths.EARTH4D) -> dict:
    """Train and evaluate one Earth4D -> AlphaEarth run into ``out_dir`` (replaced whole on success, so a
    failed run leaves the previous outputs in place); return the metrics document.

    On CPU the run is bitwise repeatable without torch's deterministic mode: Earth4D's backward
    accumulates with bincount and the predictor's ops are deterministic (tests/test_alphaearth.py checks).
    """
    import torch

    from terrapipe.atomic import atomic_path

    out_dir = Path(out_dir)
    _check_output_dir(out_dir)
    started = time.perf_counter()
    device = _device(params.device)
    threads = torch.get_num_threads()
    if params.cpu_threads is not None:
        torch.set_num_threads(params.cpu_threads)
    try:
        encoder_config = params.encoder_config()
        data = subsample(data, params.max_samples, params.seed)
        model = build_predictor(encoder_config, params, params.seed).to(device)
        nan_dropped, nan_s = None, 0.0
        if not params.skip_nan_test:
            nan_started = time.perf_counter()
            keep = nan_test(model, data.coords, params.nan_test_chunk, device)
            nan_dropped, nan_s = int((~keep).sum()), time.perf_counter() - nan_started
            if nan_dropped:
                log.warning("earth4d NaN test: %d of %d rows give non-finite predictions and are dropped",
                            nan_dropped, len(keep))
                data = AlphaEarthData(data.coords[keep], data.targets[keep], data.reasons[keep], data.source)
        part = partition(data.reasons, params)
        baselines, knn_s = baseline_predictions(data, part, params.knn_k)
        with atomic_path(out_dir, directory=True) as tmp:
            outputs = Outputs(tmp, data, part, params, baselines)
            run = train(model, data, part, params, device, on_epoch=outputs.epoch)
            metrics = metrics_document(params, data, part, run, baselines, model, nan_dropped)
            timing = {"wall_s": time.perf_counter() - started, "train_s": run.train_s, "nan_test_s": nan_s,
                      "knn_fit_predict_s": knn_s, "epochs_per_s": params.epochs / run.train_s,
                      "samples_per_s": run.samples_seen / run.train_s, "device": str(device),
                      "torch_threads": torch.get_num_threads()}
            outputs.finish(model, encoder_config, run, metrics, timing)
    finally:
        torch.set_num_threads(threads)
    for name, scores in metrics["holdouts"].items():
        log.info("earth4d %s (%d rows): mae/range %.2f%% vs kNN %.2f%%, mean %.2f%%", name, scores["rows"],
                 scores["earth4d"]["mae_over_range_pct"], scores["knn_geodesic"]["mae_over_range_pct"],
                 scores["mean_embedding"]["mae_over_range_pct"])
    return metrics
