"""Pretraining losses: patch discrimination (with optional masked negatives), InfoNCE and ERA5 regression.

Patch discrimination and its masked-negatives variant follow OlmoEarth (allenai/olmoearth_pretrain,
``train/loss.py``), re-implemented from a plain-words description of its behaviour, not from its code:
per modality and sample, the c DECODER tokens' L2-normalized predictions are scored against their
L2-normalized targets (S = P Tᵀ / τ), cross-entropy with the diagonal as labels, times 2τ, averaged over
the c tokens, then over the samples that contribute, summed over modalities. Negatives are only the other
decoded tokens of the same modality in the same sample.

InfoNCE is the contrastive objective of van den Oord et al. 2018 ("Representation Learning with Contrastive
Predictive Coding") in the L2-normalized, temperature-scaled form used by CLIP (Radford et al. 2021),
one-directional (a → b) as in OlmoEarth's contrastive LatentMIM.

The ERA5 regression losses follow the OlmoEarth ERA5 experiments (a linear head on the pooled encoding,
MSE on the time-mean or on the flattened series, missing entries excluded).

Every loss computes in fp32 with autocast disabled, whatever the caller's autocast context.
Inputs: ``pred`` / ``target`` map a modality key to (B, N_m, D) with all of that modality's tokens flattened
(positions × timesteps × band groups); ``masks`` maps the same keys to int (B, N_m) of
:class:`~terrapipe.train.roles.MaskValue`. Only DECODER tokens contribute.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from terrapipe.train.roles import MaskValue

__all__ = [
    "InfoNCEConfig",
    "PatchDiscrimination",
    "PatchDiscriminationMaskedNegatives",
    "PatchLossConfig",
    "era5_mean_regression",
    "era5_series_regression",
    "info_nce",
    "patch_loss",
    "patch_loss_per_modality",
]

# The loss configurations live in losses_config (pydantic only, so params validation never imports torch).
from terrapipe.train.losses_config import (  # noqa: E402
    InfoNCEConfig,
    PatchDiscrimination,
    PatchDiscriminationMaskedNegatives,
    PatchLossConfig,
)

# Fill for excluded score entries: finite, so rows with nothing left stay NaN-free in value and gradient;
# exp(_NEG - anything finite) is exactly 0 in fp32, so it acts as -inf for every row that has a real entry.
_NEG = torch.finfo(torch.float32).min


def _fp32(device: torch.device):
    """Disable autocast for ``device``'s type (a no-op context for a type autocast does not know)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # pragma: no cover - exotic device types
        return contextlib.nullcontext()


def _zero_like_graph(x: Tensor) -> Tensor:
    """A float32 scalar 0 that is part of ``x``'s graph (backward gives zero gradient), NaN-safe: an empty
    slice's sum, so a NaN anywhere in ``x`` does not leak into it."""
    return x.reshape(-1)[:0].float().sum()


def _check_patch_inputs(pred: dict[str, Tensor], target: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
    missing = [m for m in pred if m not in target or m not in masks]
    if missing:
        raise KeyError(f"modalities {missing} are in pred but not in both target and masks")
    for m, p in pred.items():
        t, k = target[m], masks[m]
        if p.ndim != 3 or t.shape != p.shape or k.shape != p.shape[:2]:
            raise ValueError(
                f"modality {m!r}: expected pred and target (B, N, D) and masks (B, N); got pred {tuple(p.shape)}, "
                f"target {tuple(t.shape)}, masks {tuple(k.shape)}"
            )


def _modality_patch_disc(
    pred: Tensor, target: Tensor, mask: Tensor, tau: float, threshold: float | None
) -> Tensor:
    """Patch discrimination of one modality, vectorized over the batch.

    Decoder tokens are gathered to the front of each sample (stable sort on "is not DECODER"), padded to the
    largest count c_max, scored as a batched (B, c_max, c_max) matrix with padded columns excluded; per-row
    cross-entropy is averaged over each sample's valid rows, then over the samples that contribute.
    ``threshold`` None: no negative masking; otherwise off-diagonal pairs with target cosine > threshold are
    excluded, and a sample (with c > 1) in which some row has no negative left is skipped.
    """
    is_dec = mask == int(MaskValue.DECODER)
    counts = is_dec.sum(dim=1)  # (B,)
    c_max = int(counts.max()) if counts.numel() else 0
    if c_max == 0:
        return _zero_like_graph(pred)
    order = torch.argsort((~is_dec).to(torch.int8), dim=1, stable=True)[:, :c_max]  # decoder tokens first
    idx = order.unsqueeze(-1).expand(-1, -1, pred.shape[-1])
    valid = torch.arange(c_max, device=pred.device).unsqueeze(0) < counts.unsqueeze(1)  # (B, c_max)
    # Padding slots hold some non-decoder token: zero them so a NaN/inf there reaches neither value nor gradient.
    pad = ~valid.unsqueeze(-1)
    p = F.normalize(torch.gather(pred.float(), 1, idx).masked_fill(pad, 0.0), dim=-1)
    t = F.normalize(torch.gather(target.float(), 1, idx).masked_fill(pad, 0.0), dim=-1)

    scores = torch.bmm(p, t.transpose(1, 2)) / tau  # (B, rows=pred, cols=target)
    keep = valid.unsqueeze(1).expand(-1, c_max, -1)  # column is a real token
    contributes = counts > 0
    if threshold is not None:
        eye = torch.eye(c_max, dtype=torch.bool, device=pred.device).unsqueeze(0)
        with torch.no_grad():
            same = torch.bmm(t, t.transpose(1, 2)) > threshold
        same = same & ~eye
        keep = keep & ~same
        has_negative = (keep & ~eye).any(dim=2)  # (B, rows)
        starved = (valid & ~has_negative).any(dim=1)
        contributes = contributes & ~((counts > 1) & starved)
    scores = scores.masked_fill(~keep, _NEG)

    row_loss = torch.logsumexp(scores, dim=2) - torch.diagonal(scores, dim1=1, dim2=2)  # (B, c_max)
    row_loss = torch.where(valid, row_loss, torch.zeros_like(row_loss))
    per_sample = row_loss.sum(dim=1) / counts.clamp(min=1).float() * (2.0 * tau)
    weights = contributes.float()
    return (per_sample * weights).sum() / weights.sum().clamp(min=1.0)


def patch_loss_per_modality(
    config: PatchLossConfig, pred: dict[str, Tensor], target: dict[str, Tensor], masks: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Unweighted patch-discrimination loss of each modality in ``pred`` (fp32 scalars, for metrics).

    These are the terms :func:`patch_loss` sums: ``patch_loss == config.weight * Σ_m
    config.modality_weights.get(m, 1.0) * patch_loss_per_modality(...)[m]``. Neither ``weight`` nor
    ``modality_weights`` is applied here. A modality without a contributing sample gives a 0 that is still
    part of ``pred``'s graph.
    """
    _check_patch_inputs(pred, target, masks)
    out: dict[str, Tensor] = {}
    for m, p in pred.items():
        threshold = None
        if isinstance(config, PatchDiscriminationMaskedNegatives) and (
            config.mask_negatives_for is None or m in config.mask_negatives_for
        ):
            threshold = config.same_target_threshold
        with _fp32(p.device):
            out[m] = _modality_patch_disc(p, target[m], masks[m], config.tau, threshold)
    return out


def patch_loss(
    config: PatchLossConfig, pred: dict[str, Tensor], target: dict[str, Tensor], masks: dict[str, Tensor]
) -> Tensor:
    """Patch-discrimination loss (fp32 scalar): Σ over modalities of modality_weights.get(m, 1) × the modality's
    loss, times ``weight``. No modality (empty ``pred``) raises ValueError: there is no graph to attach a 0 to."""
    if not pred:
        raise ValueError("patch_loss needs at least one modality")
    return combine_patch_terms(config, patch_loss_per_modality(config, pred, target, masks))


def combine_patch_terms(config: PatchLossConfig, terms: dict[str, Tensor]) -> Tensor:
    """:func:`patch_loss` from its per-modality terms (:func:`patch_loss_per_modality`), so a caller that also
    logs the terms computes them once."""
    return sum(config.modality_weights.get(m, 1.0) * v for m, v in terms.items()) * config.weight


def info_nce(a: Tensor, b: Tensor, tau: float = 0.1, weight: float = 0.1) -> Tensor:
    """One-directional InfoNCE a → b (fp32 scalar): both (B, D) L2-normalized, logits a·bᵀ/τ, cross-entropy
    with the diagonal as labels (the other samples of the batch are the negatives), times ``weight``."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"info_nce expects a and b of the same shape (B, D); got {tuple(a.shape)}, {tuple(b.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    with _fp32(a.device):
        an = F.normalize(a.float(), dim=-1)
        bn = F.normalize(b.float(), dim=-1)
        logits = an @ bn.T / tau
        labels = torch.arange(a.shape[0], device=a.device)
        return F.cross_entropy(logits, labels) * weight


def _masked_mse(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    diff = torch.where(valid, pred - target, torch.zeros_like(pred))
    n = valid.sum()
    if int(n) == 0:
        return _zero_like_graph(pred)
    return diff.square().sum() / n.float()


def era5_mean_regression(pred: Tensor, series: Tensor, valid: Tensor) -> Tensor:
    """MSE (fp32 scalar) of ``pred`` (B, V) against the mean of ``series`` (B, T, V) over its valid timesteps,
    per sample and variable; a (sample, variable) with no valid timestep is left out of the mean. Values at
    invalid entries never reach the result (NaN there is fine)."""
    if series.ndim != 3 or valid.shape != series.shape or pred.shape != (series.shape[0], series.shape[2]):
        raise ValueError(
            f"expected pred (B, V), series and valid (B, T, V); got {tuple(pred.shape)}, {tuple(series.shape)}, "
            f"{tuple(valid.shape)}"
        )
    with _fp32(pred.device):
        valid = valid.bool()
        s = torch.where(valid, series.float(), torch.zeros((), device=series.device))
        count = valid.sum(dim=1)  # (B, V)
        mean = s.sum(dim=1) / count.clamp(min=1).float()
        return _masked_mse(pred.float(), mean, count > 0)


def era5_series_regression(pred: Tensor, series: Tensor, valid: Tensor) -> Tensor:
    """MSE (fp32 scalar) of ``pred`` (B, T·V) against ``series`` (B, T, V) flattened time-major (as
    ``series.flatten(1)``), over the valid entries only; values at invalid entries never reach the result."""
    if series.ndim != 3 or valid.shape != series.shape or pred.shape != (series.shape[0], series.shape[1] * series.shape[2]):
        raise ValueError(
            f"expected pred (B, T*V), series and valid (B, T, V); got {tuple(pred.shape)}, {tuple(series.shape)}, "
            f"{tuple(valid.shape)}"
        )
    with _fp32(pred.device):
        return _masked_mse(pred.float(), series.float().flatten(1), valid.bool().flatten(1))
