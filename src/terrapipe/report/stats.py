"""The spreads the report judges differences against, and the one rule it judges them by.

Each experiment is trained once, so the report cannot measure a seed-to-seed spread; it uses the noise
each input does carry, and says which:

- a pretraining loss: the final value is the mean of the last n steps (metrics.json), so its spread is
  the standard error of that mean (step-to-step std / sqrt(n)); a trend is an ordinary least-squares
  slope over the second half of training with its standard error;
- a downstream metric: a bootstrap over the test samples of confusion/<task>.csv (resampled together
  for two experiments scored on the same samples, so the spread is that of their difference);
- an accuracy over n observations (DeepEarth): the binomial standard error sqrt(p (1 - p) / n).

A difference counts when it exceeds ``Z`` times its spread; otherwise it is "within the spread".
Everything is pure (numpy only) and seeded, so the same inputs give the same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z = 2.0                     # a difference counts when |difference| > Z * spread (about 95% two-sided)
BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A value with its spread (None where the input carries no noise estimate)."""
    value: float
    spread: float | None


@dataclass(frozen=True)
class Comparison:
    """``a - b`` with the spread of the difference and the verdict of the rule."""
    difference: float
    spread: float | None

    @property
    def outcome(self) -> str:
        """'higher', 'lower' or 'within' (within the spread); 'no spread' when none is known."""
        if self.spread is None:
            return "no spread"
        if abs(self.difference) <= Z * self.spread:
            return "within"
        return "higher" if self.difference > 0 else "lower"


def compare(a: Estimate, b: Estimate) -> Comparison:
    """``a - b`` for two independent estimates: spreads add in quadrature."""
    spread = None if a.spread is None or b.spread is None else math.hypot(a.spread, b.spread)
    return Comparison(a.value - b.value, spread)


def window_mean(values, n: int) -> Estimate:
    """Mean of the last ``n`` values and its standard error (step-to-step std / sqrt(n))."""
    tail = np.asarray(values, dtype=np.float64)[-n:]
    spread = float(tail.std(ddof=1) / math.sqrt(len(tail))) if len(tail) > 1 else None
    return Estimate(float(tail.mean()), spread)


@dataclass(frozen=True)
class Trend:
    """OLS slope per step over steps [first_step, last_step] and its standard error."""
    slope: Estimate
    first_step: int
    last_step: int

    @property
    def change(self) -> Comparison:
        """The change the slope implies over the window (slope x steps), with its spread."""
        steps = self.last_step - self.first_step
        spread = None if self.slope.spread is None else self.slope.spread * steps
        return Comparison(self.slope.value * steps, spread)


def second_half_trend(steps, values) -> Trend | None:
    """The trend over the second half of training (after warm-up and the first drop); None below 4 points."""
    x, y = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    half = x >= x.min() + (x.max() - x.min()) / 2 if len(x) else keep[:0]
    x, y = x[half], y[half]
    if len(x) < 4:
        return None
    dx = x - x.mean()
    slope = float((dx * (y - y.mean())).sum() / (dx ** 2).sum())
    residual = y - (y.mean() + slope * dx)
    se = float(math.sqrt((residual ** 2).sum() / (len(x) - 2) / (dx ** 2).sum()))
    return Trend(Estimate(slope, se), int(x.min()), int(x.max()))


def binomial(p: float, n: int) -> Estimate:
    """An accuracy ``p`` over ``n`` observations with its binomial standard error."""
    return Estimate(p, math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else None)


# -------------------------------------------------------------------------------- downstream metrics

def metric_from_counts(counts: np.ndarray, metric: str) -> np.ndarray:
    """A downstream metric from confusion counts [..., C, C] (actual x predicted): accuracy-type metrics
    (kNN accuracy, micro-F1 of a single-label task) are the diagonal share; mIoU averages
    tp / (tp + fp + fn) over the classes that occur (actual or predicted)."""
    counts = np.asarray(counts, dtype=np.float64)
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    total = counts.sum(axis=(-2, -1))
    if "miou" not in metric:
        return tp.sum(-1) / np.maximum(total, 1)
    union = counts.sum(-1) + counts.sum(-2) - tp
    present = union > 0
    return np.where(present, tp / np.where(present, union, 1), 0).sum(-1) / np.maximum(present.sum(-1), 1)


def _joint_cells(actual: np.ndarray, *predictions: np.ndarray):
    """Unique (actual, pred...) rows and their counts: a bootstrap resamples these cells multinomially."""
    table = np.stack([actual, *predictions], axis=1)
    cells, counts = np.unique(table, axis=0, return_counts=True)
    return cells, counts


def _resampled(actual, predictions: list, metric: str) -> list[np.ndarray]:
    """The metric of each prediction vector on the same seeded bootstrap resamples of the test samples."""
    actual = np.asarray(actual)
    preds = [np.asarray(p) for p in predictions]
    classes = np.unique(np.concatenate([actual, *preds]))
    codes = [np.searchsorted(classes, v) for v in (actual, *preds)]               # labels -> 0..k-1
    cells, counts = np.unique(np.stack(codes, axis=1), axis=0, return_counts=True)  # joint (actual, pred...) cells
    draws = np.random.default_rng(BOOTSTRAP_SEED).multinomial(counts.sum(), counts / counts.sum(),
                                                              size=BOOTSTRAP_DRAWS)  # (draws, cells)
    k = len(classes)
    out = []
    for j in range(len(preds)):
        onehot = np.zeros((len(cells), k * k))
        onehot[np.arange(len(cells)), cells[:, 0] * k + cells[:, j + 1]] = 1        # cell -> (actual, pred j)
        out.append(metric_from_counts((draws @ onehot).reshape(-1, k, k), metric))   # (draws,)
    return out


def bootstrap_spread(actual, predicted, metric: str) -> float:
    """Std of ``metric`` over bootstrap resamples of the test samples."""
    (values,) = _resampled(actual, [predicted], metric)
    return float(values.std(ddof=1))


def paired_spread(actual, predicted_a, predicted_b, metric: str) -> float:
    """Std of metric(a) - metric(b) over resamples drawn once for both (same test samples)."""
    a, b = _resampled(actual, [predicted_a, predicted_b], metric)
    return float((a - b).std(ddof=1))
