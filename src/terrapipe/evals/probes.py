"""Linear probes on frozen embeddings: OlmoEarth's linear-probe evaluation (reference/
olmoearth-behaviour.md 7, re-implemented from its description).

- Classification: BatchNorm1d(D) then Linear(D, C) on pooled embeddings [N, D].
- Segmentation: Linear(D, C * ps^2) on each patch embedding of [N, H', W', D], rearranged into the
  full-resolution logit map [N, C, H' * ps, W' * ps] and bilinearly resized to the mask's [H, W] when the
  two differ.

Both train with AdamW, a linear warmup over ``warmup_fraction`` of the steps then a cosine decay to
``final_lr`` (the pretraining schedule, train/loop.lr_factor), and cross-entropy that skips
``ignore_index``. What differs from OlmoEarth, and why: float32 instead of bf16 autocast, because on the
CPU bf16 gains nothing here and float32 with one thread and deterministic algorithms repeats bit for bit.

Label fraction: a seeded, class-stratified subset of the training rows (``label_subset``). Rows with no
labelled value (every label ``ignore_index``) are never trained on: they carry no loss, and in the
classification probe they would still move BatchNorm's statistics.

Shapes: N rows, D embedding width, C classes, H' W' patches per side, ps patch size, H W mask pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from terrapipe.evals.metrics import classification_report, to_numpy

EVAL_ROWS = 256            # rows per inference batch (bounds the [rows, C, H, W] logit map)
SUBSET_STREAM = 1          # the label-fraction draw's random stream, apart from the batch order's
VAL_POINTS = 50            # val reports per probe run, evenly spaced, the last epoch always one


class ProbeConfig(BaseModel):
    """Everything one probe run depends on (OlmoEarth's defaults: 50 epochs, 10% warmup, final lr 1e-5)."""
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    lr: float = Field(0.01, gt=0)                 # OlmoEarth: 0.01 for MADOS, 0.1 for PASTIS
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(128, ge=2)            # >= 2: BatchNorm needs two rows to normalise a batch
    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    final_lr: float = Field(1e-5, ge=0)
    seed: int = 0
    label_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0   # OlmoEarth sweeps 0.01, 0.1, 1.0
    ignore_index: int = -1

    @model_validator(mode="after")
    def _final_below_peak(self):
        if self.final_lr > self.lr:
            raise ValueError(f"final_lr {self.final_lr} must not exceed lr {self.lr}")
        return self


@dataclass
class ProbeResult:
    metrics: dict                      # classification_report of the test predictions
    curve: list[dict]                  # per epoch: epoch, train_loss, lr; val_* (a val set given) at VAL_POINTS epochs
    train_rows: np.ndarray             # the training rows used (the label-fraction subset), ascending
    val_metrics: dict | None = None    # classification_report of the final val predictions
    predictions: np.ndarray | None = field(default=None, repr=False)   # the test predictions the metrics score
    model: object = field(default=None, repr=False)


def label_subset(labels, num_classes: int, fraction: float, seed: int, ignore_index: int = -1) -> np.ndarray:
    """A seeded, class-stratified subset of the rows that hold at least one labelled value.

    Each row's stratum is its most frequent labelled class (the label itself for classification; ties
    to the lowest class); each stratum keeps max(1, round-half-up(fraction * size)) rows drawn without
    replacement. Then every class present in the pool but missing from the subset (a segmentation class
    that is never a row's majority) adds the first row holding it in a seeded order, so every class
    present keeps at least one sample. ``fraction`` 1 keeps the whole pool.

    Args: labels [N] or [N, H, W] integer classes (``ignore_index`` = unlabelled).
    Returns: int64 [M] row indices, ascending.
    """
    labels = to_numpy(labels)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction}")
    flat = labels.reshape(len(labels), -1).astype(np.int64)                # (N, pixels per row)
    labelled = flat != ignore_index
    if ((flat < 0) | (flat >= num_classes))[labelled].any():
        raise ValueError(f"labels must lie in [0, {num_classes}) or equal ignore_index {ignore_index}")
    counts = np.zeros((len(flat), num_classes), dtype=np.int64)             # (N, C) labelled pixels per class
    rows, _ = np.nonzero(labelled)
    np.add.at(counts, (rows, flat[labelled]), 1)
    pool = np.flatnonzero(labelled.any(axis=1))
    if fraction == 1.0:
        return pool
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    stratum = counts.argmax(axis=1)                                          # (N,) majority class per row
    chosen = []
    for c in range(num_classes):
        members = pool[stratum[pool] == c]
        if len(members):
            keep = max(1, int(math.floor(fraction * len(members) + 0.5)))
            chosen.append(rng.permutation(members)[:keep])
    subset = np.concatenate(chosen)
    order = rng.permutation(pool)
    for c in np.flatnonzero(counts[pool].any(axis=0)):
        if not counts[subset, c].any():
            subset = np.append(subset, order[counts[order, c] > 0][0])
    return np.sort(subset)


def pixel_logits(linear, x, patch_size: int, out_size: tuple[int, int]):
    """OlmoEarth's segmentation probe: per-patch class logits of every pixel, rearranged to the image.

    Args: linear: Linear(D, C * ps^2); x [B, H', W', D] patch embeddings; patch_size ps; out_size (H, W).
    Returns: logits [B, C, H, W]: the [B, C, H' * ps, W' * ps] map, bilinearly resized (align_corners
    False) when (H, W) differs from (H' * ps, W' * ps).
    """
    import torch.nn.functional as F

    B, h, w, _ = x.shape
    ps, C = patch_size, linear.out_features // (patch_size * patch_size)
    logits = linear(x).reshape(B, h, w, C, ps, ps)                     # (B, H', W', C, ps, ps)
    logits = logits.permute(0, 3, 1, 4, 2, 5)                          # (B, C, H', ps, W', ps)
    logits = logits.reshape(B, C, h * ps, w * ps)                      # (B, C, H'*ps, W'*ps)
    if tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)  # (B, C, H, W)
    return logits


def patch_cross_entropy(linear, x, masks, patch_size: int, ignore_index: int):
    """The cross-entropy of ``pixel_logits`` where no resize is needed (masks [B, H' * ps, W' * ps]), computed in
    the per-patch layout: the same mean over labelled pixels without building the image-shaped logit map
    (a quarter of a probe step's time on MADOS)."""
    import torch.nn.functional as F

    B, h, w, _ = x.shape
    ps, C = patch_size, linear.out_features // (patch_size * patch_size)
    logits = linear(x).reshape(B * h * w, C, ps * ps)                              # (B*H'*W', C, ps*ps)
    target = masks.reshape(B, h, ps, w, ps).permute(0, 1, 3, 2, 4)                 # (B, H', W', ps, ps)
    return F.cross_entropy(logits, target.reshape(B * h * w, ps * ps), ignore_index=ignore_index)


def _tensor(values, name: str, ndim: int, dtype):
    import torch

    array = to_numpy(values)
    if dtype == torch.int64 and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices (ignore_index for unlabelled), got dtype "
                         f"{array.dtype}")
    tensor = torch.as_tensor(array).to(dtype)
    if tensor.ndim != ndim or len(tensor) == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise ValueError(f"{name} holds non-finite values; clean the embeddings first")
    return tensor


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled row batches, the order a function of (seed, epoch) only; a last batch of one row joins
    the one before (BatchNorm cannot normalise a single row)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    parts = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [np.concatenate(parts[-2:])]
    return parts


def _predict(model, forward, x) -> np.ndarray:
    """Argmax class per row (or pixel) of ``x``, in eval mode, EVAL_ROWS rows at a time."""
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([forward(x[i:i + EVAL_ROWS]).argmax(dim=1).numpy()
                               for i in range(0, len(x), EVAL_ROWS)]).astype(np.int64)


def _fit(model, forward, kind: str, train: tuple, evaluate: dict, num_classes: int,
         config: ProbeConfig, loss=None) -> ProbeResult:
    """Train ``model`` (logits = forward(x)) on the label-fraction subset of ``train``; score ``evaluate``.

    Args: train = (embeddings, labels) tensors; evaluate = {"test": (x, y), "val": (x, y) or None};
        loss(x, y): the training loss, by default the cross-entropy of forward(x) (ignore_index skipped).
    """
    import torch
    import torch.nn.functional as F

    from terrapipe.train.loop import lr_factor

    x, y = train
    if len(x) != len(y):
        raise ValueError(f"{kind} train embeddings have {len(x)} rows but the labels have {len(y)}")
    rows = label_subset(y, num_classes, config.label_fraction, config.seed, config.ignore_index)
    if len(rows) < 2:
        raise ValueError(f"only {len(rows)} labelled training row(s) after the label fraction "
                         f"{config.label_fraction}; a probe needs at least 2: raise label_fraction")
    x, y = x[torch.from_numpy(rows)], y[torch.from_numpy(rows)]
    if loss is None:
        def loss(x, y):
            return F.cross_entropy(forward(x), y, ignore_index=config.ignore_index)
    steps_per_epoch = len(_batches(len(rows), config.batch_size, config.seed, 0))
    steps = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_fraction * steps))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps, warmup, config.final_lr / config.lr))

    def predict(split: str) -> np.ndarray | None:
        return None if evaluate.get(split) is None else _predict(model, forward, evaluate[split][0])

    def report(split: str, pred: np.ndarray | None = None) -> dict | None:
        pred = predict(split) if pred is None else pred
        return None if pred is None else classification_report(pred, evaluate[split][1], num_classes,
                                                               config.ignore_index)

    curve = []
    val_every = max(1, config.epochs // VAL_POINTS)   # a val report costs as much as a training epoch
    for epoch in range(config.epochs):
        model.train()
        loss_sum, labelled_sum, lr = 0.0, 0, optimizer.param_groups[0]["lr"]
        for batch in _batches(len(rows), config.batch_size, config.seed, epoch):
            index = torch.from_numpy(batch)
            target = y[index]
            value = loss(x[index], target)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            scheduler.step()
            labelled = int((target != config.ignore_index).sum())
            loss_sum, labelled_sum = loss_sum + value.item() * labelled, labelled_sum + labelled
        point = {"epoch": epoch + 1, "train_loss": loss_sum / labelled_sum, "lr": lr}
        val = report("val") if (epoch + 1) % val_every == 0 or epoch + 1 == config.epochs else None
        if val is not None:
            point.update({f"val_{k}": val[k] for k in ("accuracy", "macro_f1", "miou")})
        curve.append(point)
    test_pred = predict("test")
    return ProbeResult(metrics=report("test", test_pred), curve=curve, train_rows=rows, val_metrics=report("val"),
                       model=model, predictions=test_pred)


def _evaluation_sets(test, val, x_ndim: int, y_ndim: int, num_classes: int, ignore_index: int) -> dict:
    """{"test": (x, y), "val": (x, y) or None} as tensors, checked before any training starts."""
    import torch

    sets = {}
    for split, pair in (("test", test), ("val", val)):
        if pair is None:
            sets[split] = None
            continue
        x, y = _tensor(pair[0], f"{split}_emb", x_ndim, torch.float32), _tensor(pair[1], f"{split} labels",
                                                                                 y_ndim, torch.int64)
        if len(x) != len(y):
            raise ValueError(f"{split}_emb has {len(x)} rows but its labels have {len(y)}")
        if (((y < 0) | (y >= num_classes)) & (y != ignore_index)).any():
            raise ValueError(f"{split} labels must lie in [0, {num_classes}) or equal ignore_index {ignore_index}")
        sets[split] = (x, y)
    return sets


def train_linear_probe(train_emb, train_labels, test_emb, test_labels, num_classes: int, config: ProbeConfig,
                       *, val_emb=None, val_labels=None) -> ProbeResult:
    """Train BatchNorm1d(D) + Linear(D, C) on pooled embeddings; report the test predictions.

    Args: train_emb [N, D], train_labels [N]; test_emb [M, D], test_labels [M]; optional val_emb [V, D],
        val_labels [V] (scored every epoch into the curve); labels in [0, C) or config.ignore_index.
    Returns: ProbeResult (metrics = classification_report of the test predictions).
    """
    import torch
    from torch import nn

    from terrapipe.train.deepearth import deterministic

    x = _tensor(train_emb, "train_emb", 2, torch.float32)
    y = _tensor(train_labels, "train_labels", 1, torch.int64)
    val = None if val_emb is None else (val_emb, val_labels)
    evaluate = _evaluation_sets((test_emb, test_labels), val, 2, 1, num_classes, config.ignore_index)
    with deterministic(config.seed):
        model = nn.Sequential(nn.BatchNorm1d(x.shape[1]), nn.Linear(x.shape[1], num_classes))
        return _fit(model, model, "classification", (x, y), evaluate, num_classes, config)


def train_segmentation_probe(train_emb, train_masks, test_emb, test_masks, patch_size: int, num_classes: int,
                             config: ProbeConfig, *, val_emb=None, val_masks=None) -> ProbeResult:
    """Train a per-patch Linear(D, C * ps^2) (``pixel_logits``) against pixel masks; report the test masks.

    Args: train_emb [N, H', W', D], train_masks [N, H, W]; test_emb [M, H', W', D], test_masks [M, H, W];
        optional val_emb, val_masks likewise; patch_size ps (pixels per patch side before any resize);
        masks in [0, C) or config.ignore_index.
    Returns: ProbeResult (metrics = classification_report over the test pixels: mIoU, micro F1, ...).
    """
    import functools

    import torch
    from torch import nn

    from terrapipe.train.deepearth import deterministic

    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    x = _tensor(train_emb, "train_emb", 4, torch.float32)
    y = _tensor(train_masks, "train_masks", 3, torch.int64)
    val = None if val_emb is None else (val_emb, val_masks)
    evaluate = _evaluation_sets((test_emb, test_masks), val, 4, 3, num_classes, config.ignore_index)
    out_size = tuple(y.shape[-2:])
    for split, pair in evaluate.items():
        if pair is not None and (tuple(pair[1].shape[-2:]) != out_size or pair[0].shape[1:] != x.shape[1:]):
            raise ValueError(f"{split} embeddings {tuple(pair[0].shape)} / masks {tuple(pair[1].shape)} must match "
                             f"the training ones' [*, H', W', D] {tuple(x.shape[1:])} and [*, H, W] {out_size}")
    with deterministic(config.seed):
        linear = nn.Linear(x.shape[-1], num_classes * patch_size * patch_size)
        forward = functools.partial(pixel_logits, linear, patch_size=patch_size, out_size=out_size)
        loss = None
        if out_size == (x.shape[1] * patch_size, x.shape[2] * patch_size):
            loss = functools.partial(patch_cross_entropy, linear, patch_size=patch_size,
                                     ignore_index=config.ignore_index)
        return _fit(linear, forward, "segmentation", (x, y), evaluate, num_classes, config, loss)
