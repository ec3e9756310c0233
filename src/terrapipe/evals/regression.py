"""Embedding-regression metrics and the two baselines a location encoder must beat.

DeepEarth reports one number for Earth4D -> AlphaEarth, "MAPE" 3.61% (reference/deepearth-behaviour.md
2.6). It is not a percentage error: it is 100 * MAE / 2, the mean absolute error over the nominal
[-1, 1] range of AlphaEarth values. Here it is called ``mae_over_range_pct`` and reported beside the
usual metrics and beside two baselines computed by the same code, so a figure can be read:

- ``mean_embedding_baseline``: the training mean for every query (what R^2 = 0 means);
- ``knn_geodesic_baseline``: the uniform mean of the k training targets nearest by great-circle
  distance on a sphere (haversine; ellipsoidal geodesics would change the ranking by < 0.5%, which
  matters only for near-ties). It sees only latitude and longitude, never elevation or time.

Every sum runs in float64, whatever the input dtype.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

VALUE_RANGE = 2.0           # AlphaEarth values lie in [-1, 1]
QUERY_CHUNK = 8192          # kNN queries per block: bounds the (chunk, k, D) gather
METRIC_DEFINITIONS = {
    "mse": "mean over all N x D entries of (pred - target)^2 (the training loss)",
    "mae": "mean over all N x D entries of |pred - target|",
    "rmse": "sqrt(mse)",
    "mae_over_range_pct": "100 * mae / 2: mae over the [-1, 1] value range; what DeepEarth calls MAPE "
                          "(it never divides by the target)",
    "cosine_similarity_mean": "mean over rows of cos(pred_i, target_i); a row with a zero vector counts 0",
    "r2_uniform_average": "mean over the D dimensions of 1 - SSE_d / SST_d (SST_d about dimension d's own "
                          "mean); a constant dimension scores 1 if predicted exactly, else 0 (as scikit-learn)",
}

Predictor = Callable[[np.ndarray], np.ndarray]


def _pairs(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred, target = (np.asarray(a, dtype=np.float64) for a in (pred, target))
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must both be [N, D] of one shape")
    if len(pred) == 0:
        raise ValueError("no rows to score: pred and target are empty")
    for name, values in (("pred", pred), ("target", target)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{name} holds {int(bad.sum())} non-finite values (first in row "
                             f"{int(np.flatnonzero(bad.any(axis=1))[0])})")
    return pred, target


def r2_uniform_average(pred, target) -> float:
    """Uniform average over dimensions of the coefficient of determination (see METRIC_DEFINITIONS)."""
    pred, target = _pairs(pred, target)
    sse = ((pred - target) ** 2).sum(axis=0)                       # (D,)
    sst = ((target - target.mean(axis=0)) ** 2).sum(axis=0)        # (D,)
    constant = sst == 0
    per_dim = np.where(constant, np.where(sse == 0, 1.0, 0.0), 1.0 - sse / np.where(constant, 1.0, sst))
    return float(per_dim.mean())


def regression_metrics(pred, target) -> dict[str, float]:
    """Every metric of METRIC_DEFINITIONS for predictions against targets.

    Args: pred, target [N, D] arrays or tensors (any float dtype; accumulated in float64).
    Returns: {"rows": N, "mse", "mae", "rmse", "mae_over_range_pct", "cosine_similarity_mean",
    "r2_uniform_average"} as Python numbers.
    """
    pred, target = _pairs(pred, target)
    error = pred - target
    mse = float((error ** 2).mean())
    mae = float(np.abs(error).mean())
    norms = np.linalg.norm(pred, axis=1) * np.linalg.norm(target, axis=1)     # (N,)
    cosine = np.where(norms > 0, (pred * target).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    return {"rows": int(len(pred)), "mse": mse, "mae": mae, "rmse": float(np.sqrt(mse)),
            "mae_over_range_pct": 100.0 * mae / VALUE_RANGE, "cosine_similarity_mean": float(cosine.mean()),
            "r2_uniform_average": r2_uniform_average(pred, target)}


def per_row_mae_over_range_pct(pred, target) -> np.ndarray:
    """100 * mean_d |pred - target| / 2 per row, [N] (the per-sample figure of DeepEarth's prediction CSVs)."""
    pred, target = _pairs(pred, target)
    return 100.0 * np.abs(pred - target).mean(axis=1) / VALUE_RANGE


def _latlon(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(f"{name} must be [N, 2] (latitude, longitude) in degrees, got {values.shape}")
    if not (np.isfinite(values).all() and (np.abs(values[:, 0]) <= 90).all() and (np.abs(values[:, 1]) <= 180).all()):
        raise ValueError(f"{name} holds non-finite values or latitudes outside [-90, 90] / longitudes outside "
                         "[-180, 180]")
    return values


def mean_embedding_baseline(train_targets) -> Predictor:
    """Predict the training mean everywhere.

    Args: train_targets [M, D]. Returns: predict(query_latlon [Q, 2]) -> float64 [Q, D].
    """
    targets = np.asarray(train_targets, dtype=np.float64)
    if targets.ndim != 2 or len(targets) == 0:
        raise ValueError(f"train_targets must be a non-empty [M, D] array, got {targets.shape}")
    mean = targets.mean(axis=0)                                     # (D,)

    def predict(query_latlon) -> np.ndarray:
        return np.tile(mean, (len(query_latlon), 1))

    return predict


def knn_geodesic_baseline(train_latlon, train_targets, k: int = 20) -> Predictor:
    """Uniform mean of the ``k`` training targets nearest by great-circle (haversine) distance.

    Uses scikit-learn's BallTree with the haversine metric, so the antimeridian and the poles need no
    special case. Args: train_latlon [M, 2] degrees, train_targets [M, D], k <= M.
    Returns: predict(query_latlon [Q, 2] degrees) -> float64 [Q, D].
    """
    from sklearn.neighbors import BallTree

    latlon = _latlon(train_latlon, "train_latlon")
    targets = np.asarray(train_targets, dtype=np.float64)
    if targets.ndim != 2 or len(targets) != len(latlon):
        raise ValueError(f"train_targets {targets.shape} must be [M, D] with M = {len(latlon)} rows of train_latlon")
    if not 1 <= k <= len(latlon):
        raise ValueError(f"k = {k} must be between 1 and the {len(latlon)} training points")
    tree = BallTree(np.radians(latlon), metric="haversine")

    def predict(query_latlon) -> np.ndarray:
        query = np.radians(_latlon(query_latlon, "query_latlon"))
        out = np.empty((len(query), targets.shape[1]))
        for first in range(0, len(query), QUERY_CHUNK):
            block = slice(first, first + QUERY_CHUNK)
            neighbours = tree.query(query[block], k=k, return_distance=False)   # (chunk, k)
            out[block] = targets[neighbours].mean(axis=1)                    # (chunk, k, D) -> (chunk, D)
        return out

    return predict
