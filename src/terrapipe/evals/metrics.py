"""Classification and segmentation metrics, all read off one confusion matrix (OlmoEarth's downstream
metrics: accuracy for kNN classification, mIoU and micro/macro F1 for segmentation; reference/
olmoearth-behaviour.md 7).

One report serves every task kind: a classification label is one "pixel", a segmentation mask is
flattened. Conventions (the ones that change a figure, so they are fixed here once):

- the confusion matrix is [C, C] int64, rows = target class, columns = predicted class;
- pixels whose target equals ``ignore_index`` are dropped before counting, so they change nothing
  whatever was predicted there;
- a class absent from both target and prediction has no defined precision, recall, F1 or IoU: it is
  reported as None and left out of the macro F1 and mIoU means (so adding an unused class to
  ``num_classes`` changes no figure). A class that occurs on one side only scores F1 = IoU = 0 and
  counts in both means; its undefined side (precision of a never-predicted class, recall of a class
  absent from the target) is 0, as scikit-learn's zero_division=0;
- micro F1 pools tp, fp and fn over classes; for single-label data every error is one fp and one fn,
  so micro F1 equals accuracy (kept because it is the figure OlmoEarth reports for MADOS);
- every ratio is float64.
"""
from __future__ import annotations

import numpy as np


def to_numpy(values) -> np.ndarray:
    """A numpy view of an array-like or a torch tensor (detached and moved to the CPU)."""
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def _as_labels(values, name: str) -> np.ndarray:
    """Integer labels as a flat int64 numpy array."""
    values = to_numpy(values)
    if values.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class indices, got dtype {values.dtype}; "
                         "pass argmax predictions, not scores")
    return values.reshape(-1).astype(np.int64)


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Count (target, prediction) pairs.

    Args:
        pred, target: integer class indices of one shape (any: [N], [N, H, W]); numpy or torch.
        num_classes: C; every prediction and every non-ignored target must lie in [0, C).
        ignore_index: target value whose pixels are dropped (their prediction is not checked).
    Returns: int64 [C, C], entry [t, p] = number of pixels of target class t predicted as p.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    pred_shape = tuple(getattr(pred, "shape", np.shape(pred)))
    target_shape = tuple(getattr(target, "shape", np.shape(target)))
    if pred_shape != target_shape:
        raise ValueError(f"pred {pred_shape} and target {target_shape} must have one shape")
    pred, target = _as_labels(pred, "pred"), _as_labels(target, "target")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, values in (("target", target), ("pred", pred)):
        outside = (values < 0) | (values >= num_classes)
        if outside.any():
            hint = "" if ignore_index is None else f" (ignore_index is {ignore_index})"
            raise ValueError(f"{name} holds {int(outside.sum())} labels outside [0, {num_classes}), e.g. "
                             f"{int(values[outside][0])}{hint}; fix num_classes or the label encoding")
    flat = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)   # (C*C,)
    return flat.reshape(num_classes, num_classes).astype(np.int64)                       # (C, C): [t, p]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (float64)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _mean_present(values: np.ndarray, present: np.ndarray) -> float | None:
    return float(values[present].mean()) if present.any() else None


def scores_from_counts(tp, fp, fn) -> dict:
    """Per-class precision/recall/F1/IoU and their means from per-class counts (float64).

    Args: tp, fp, fn [C] counts. Returns: {"micro_f1", "macro_f1", "miou"} (None when no class occurs)
    and "per_class": [C] dicts with tp, fp, fn, support (tp + fn), precision, recall, f1, iou (None for a
    class absent from both sides; see the module docstring).
    """
    tp, fp, fn = (np.asarray(a, np.int64) for a in (tp, fp, fn))
    present = (tp + fp + fn) > 0                              # occurs in the target or in the prediction
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1, iou = _ratio(2 * tp, 2 * tp + fp + fn), _ratio(tp, tp + fp + fn)
    per_class = []
    for c in range(len(tp)):
        scored = {"precision": precision[c], "recall": recall[c], "f1": f1[c], "iou": iou[c]}
        per_class.append({"class": c, "tp": int(tp[c]), "fp": int(fp[c]), "fn": int(fn[c]),
                          "support": int(tp[c] + fn[c]),
                          **{k: (float(v) if present[c] else None) for k, v in scored.items()}})
    pooled = 2 * int(tp.sum()) + int(fp.sum()) + int(fn.sum())
    return {"micro_f1": 2 * int(tp.sum()) / pooled if pooled else None,
            "macro_f1": _mean_present(f1, present), "miou": _mean_present(iou, present),
            "per_class": per_class}


def report_from_confusion(matrix: np.ndarray) -> dict:
    """Every figure of ``classification_report`` from a [C, C] confusion matrix (rows target)."""
    matrix = np.asarray(matrix, np.int64)
    n = int(matrix.sum())
    if n == 0:
        raise ValueError("no labelled pixels to score: every target is ignore_index (or the input is empty)")
    tp = np.diag(matrix)
    scores = scores_from_counts(tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp)
    return {"accuracy": float(tp.sum() / n), "micro_f1": scores["micro_f1"], "macro_f1": scores["macro_f1"],
            "miou": scores["miou"], "per_class": scores["per_class"], "n": n}


def classification_report(pred, target, num_classes: int, ignore_index: int | None = None) -> dict:
    """Accuracy, micro F1, macro F1, mIoU and per-class scores of single-label predictions.

    Args: as ``confusion_matrix`` (classification [N] or segmentation [N, H, W] labels).
    Returns: {"accuracy", "micro_f1", "macro_f1", "miou": float, "per_class": [C] dicts, "n": labelled
    pixels counted}; JSON-ready Python numbers.
    """
    return report_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def multilabel_report(pred, target) -> dict:
    """Micro/macro F1, mIoU and exact-match accuracy of multi-hot predictions (one binary task per class).

    Args: pred, target [N, C] multi-hot (0/1 or bool; numpy or torch).
    Returns: {"accuracy": share of rows with every class right (subset accuracy), "micro_f1", "macro_f1",
    "miou", "per_class", "n": rows}; per-class conventions as ``scores_from_counts``.
    """
    pred, target = to_numpy(pred), to_numpy(target)
    if pred.ndim != 2 or pred.shape != target.shape or len(pred) == 0:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must both be non-empty [N, C] multi-hot")
    for name, values in (("pred", pred), ("target", target)):
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"{name} must be multi-hot (only 0 and 1); threshold scores first")
    pred, target = pred.astype(bool), target.astype(bool)
    tp, fp, fn = ((pred & target).sum(0), (pred & ~target).sum(0), (~pred & target).sum(0))    # (C,) each
    scores = scores_from_counts(tp, fp, fn)
    return {"accuracy": float((pred == target).all(axis=1).mean()), **scores, "n": int(len(pred))}


GEOMETRY_ROWS = 4096     # rows an embedding diagnostic uses at most (a seeded subsample beyond)


def embedding_geometry(embeddings, max_rows: int = GEOMETRY_ROWS) -> dict:
    """How much of a set of embeddings varies from one row to another: what a cosine kNN can tell apart.

    Args: embeddings [N, D] (or [N, h, w, D]: each position a row).
    Returns: {"effective_rank": exp of the entropy of the centred rows' normalized squared singular values
    (Roy & Vetterli 2007; 1 = a single direction, D = isotropic), "top_direction_share": the first
    principal component's share of the centred variance, "mean_cosine": the mean cosine similarity of two
    distinct rows (near 1: every row points the same way, and cosine kNN ranks by small differences),
    "rows": rows used}.
    """
    x = to_numpy(embeddings).astype(np.float64)
    x = x.reshape(-1, x.shape[-1])
    if len(x) > max_rows:
        x = x[np.sort(np.random.default_rng(0).choice(len(x), max_rows, replace=False))]
    if len(x) < 2:
        raise ValueError(f"embedding_geometry needs at least 2 rows, got {len(x)}")
    energy = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    share = energy / energy.sum() if energy.sum() > 0 else np.eye(1, len(energy))[0]
    entropy = -(share[share > 0] * np.log(share[share > 0])).sum()
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(unit)
    pair_sum = (np.square(unit.sum(0)).sum() - n) / (n * (n - 1))     # mean over i != j of <u_i, u_j>
    return {"effective_rank": float(np.exp(entropy)), "top_direction_share": float(share[0]),
            "mean_cosine": float(pair_sum), "rows": int(n)}
