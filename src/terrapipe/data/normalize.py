"""OlmoEarth's per-band normalization: x' = (x - (mean - k*std)) / (2k*std), k = 2 by default.

Statistics come from the training split only and from valid values only: the missing value
(-99999) and non-finite values are excluded from the statistics and written back unchanged, so a
consumer can still tell a gap from data after normalization.
"""
from __future__ import annotations

import numpy as np

MISSING_VALUE = -99999.0


def valid_mask(x: np.ndarray) -> np.ndarray:
    return np.isfinite(x) & (x != MISSING_VALUE)


def band_stats(x: np.ndarray, band_axis: int = -1) -> dict[str, np.ndarray]:
    """Per-band mean, std and valid count over all other axes, ignoring missing values.

    Accumulates in float64 so that large stores give the same numbers however they are chunked.
    A band with no valid value gets NaN stats (callers must refuse to normalize with them).
    """
    x = np.moveaxis(np.asarray(x), band_axis, -1)
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64, copy=False)
    ok = valid_mask(flat)
    count = ok.sum(axis=0)
    total = np.where(ok, flat, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.where(ok, (flat - mean) ** 2, 0.0).sum(axis=0) / count
    return {"mean": mean, "std": np.sqrt(var), "count": count}


class RunningStats:
    """Band statistics accumulated chunk by chunk (Chan et al. parallel update), float64 throughout."""

    def __init__(self, n_bands: int):
        self.count = np.zeros(n_bands)
        self.mean = np.zeros(n_bands)
        self.m2 = np.zeros(n_bands)

    def update(self, x: np.ndarray, band_axis: int = -1) -> None:
        s = band_stats(x, band_axis)
        n_b = s["count"].astype(np.float64)
        mean_b = np.nan_to_num(s["mean"])
        m2_b = np.nan_to_num(s["std"] ** 2) * n_b
        n = self.count + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean_b - self.mean
            self.mean = np.where(n > 0, self.mean + delta * n_b / np.maximum(n, 1), 0.0)
            self.m2 = self.m2 + m2_b + delta ** 2 * self.count * n_b / np.maximum(n, 1)
        self.count = n

    def result(self) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.count > 0, self.mean, np.nan)
            std = np.where(self.count > 0, np.sqrt(self.m2 / self.count), np.nan)
        return {"mean": mean, "std": std, "count": self.count.astype(np.int64)}


def normalize(x: np.ndarray, mean, std, std_multiplier: float = 2.0, band_axis: int = -1,
              out: np.ndarray | None = None) -> np.ndarray:
    """Apply the rule per band (float32 result); missing and non-finite inputs become MISSING_VALUE."""
    x = np.asarray(x)
    shape = [1] * x.ndim
    shape[band_axis] = -1
    mean = np.asarray(mean, np.float64).reshape(shape)
    std = np.asarray(std, np.float64).reshape(shape)
    low = mean - std_multiplier * std
    span = np.where(std > 0, 2 * std_multiplier * std, 1.0)  # a constant band maps to 0.5, not inf
    result = ((x - low) / span).astype(np.float32, copy=False)
    result[~valid_mask(x)] = MISSING_VALUE
    if out is not None:
        out[...] = result
        return out
    return result


def stats_to_json(names, stats: dict[str, np.ndarray], **extra) -> dict:
    """Per-band stats keyed by band name, JSON-ready (the file saved beside the processed data)."""
    def number(value) -> float | None:  # a band without valid values has no statistics (JSON null)
        return float(value) if np.isfinite(value) else None

    bands = {name: {"mean": number(stats["mean"][i]), "std": number(stats["std"][i]), "count": int(stats["count"][i])}
             for i, name in enumerate(names)}
    return {"rule": "(x - (mean - k*std)) / (2*k*std)", "missing_value": MISSING_VALUE, **extra, "bands": bands}
