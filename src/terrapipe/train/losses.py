"""Pretraining losses, computed in fp32 whatever autocast is active outside.

Patch discrimination and its masked-negatives variant follow OlmoEarth (allenai/olmoearth_pretrain
train/loss.py, re-implemented from reference/olmoearth-behaviour.md section 3); InfoNCE is van den Oord
et al. (2018), one-directional as in OlmoEarth (CLIP, Radford et al. 2021, is its symmetric form); the
ERA5 regressions are seed 000's exps 3 and 5.

Inputs: ``pred`` and ``target`` per modality (B, N_m, D); ``masks`` per modality (B, N_m) MaskValue.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from terrapipe.train.losses_config import (  # noqa: F401 - re-exported
    InfoNCEConfig,
    PatchDiscrimination,
    PatchDiscriminationMaskedNegatives,
    PatchLossConfig,
)
from terrapipe.train.roles import MaskValue


def _fp32(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _modality_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, tau: float,
                   threshold: float | None) -> torch.Tensor:
    """Per-modality patch discrimination: mean over samples with decoded tokens (vectorized over B).

    Decoded tokens are sorted to the front of each sample and padded to c_max; padded columns get -inf.
    """
    decoded = mask == MaskValue.DECODER                                                   # (B, N)
    counts = decoded.sum(1)                                                               # (B,)
    c_max = int(counts.max()) if decoded.numel() else 0
    if c_max == 0:
        return pred.sum() * 0.0
    order = torch.sort((~decoded).to(torch.int8), dim=1, stable=True).indices[:, :c_max]  # (B, c)
    valid = torch.arange(c_max, device=pred.device)[None] < counts[:, None]               # (B, c)
    p = F.normalize(torch.gather(pred.float(), 1, order[..., None].expand(-1, -1, pred.shape[-1])), dim=-1)
    t = F.normalize(torch.gather(target.float(), 1, order[..., None].expand(-1, -1, target.shape[-1])), dim=-1)
    scores = p @ t.transpose(1, 2) / tau                                                  # (B, c, c)
    blocked = ~valid[:, None, :].expand(-1, c_max, -1)                                    # padded columns
    eye = torch.eye(c_max, dtype=torch.bool, device=pred.device)[None]
    contributing = counts > 0
    if threshold is not None:
        same = (t @ t.transpose(1, 2)) > threshold                                        # (B, c, c)
        same = same & ~eye & valid[:, None, :] & valid[:, :, None]
        blocked = blocked | same
        negatives_left = (valid[:, None, :] & ~eye & ~same).sum(-1)                        # (B, c)
        starved = ((negatives_left == 0) & valid).any(1) & (counts > 1)
        contributing = contributing & ~starved
    scores = scores.masked_fill(blocked, float("-inf"))
    labels = torch.arange(c_max, device=pred.device).expand(pred.shape[0], -1)
    rows = F.cross_entropy(scores.flatten(0, 1), labels.flatten(), reduction="none").view(-1, c_max)
    rows = torch.where(valid, rows, torch.zeros_like(rows)) * 2 * tau
    per_sample = rows.sum(1) / counts.clamp(min=1)                                        # (B,)
    n = contributing.sum()
    if int(n) == 0:
        return pred.sum() * 0.0
    return torch.where(contributing, per_sample, torch.zeros_like(per_sample)).sum() / n


def patch_loss_per_modality(config, pred: dict, target: dict, masks: dict) -> dict[str, torch.Tensor]:
    """Each modality's unweighted patch-discrimination term."""
    masked = isinstance(config, PatchDiscriminationMaskedNegatives)
    out = {}
    for key in pred:
        device = pred[key].device
        with _fp32(device):
            use = masked and (config.mask_negatives_for is None or key in config.mask_negatives_for)
            out[key] = _modality_loss(pred[key], target[key], masks[key], config.tau,
                                      config.same_target_threshold if use else None)
    return out


def patch_loss(config, pred: dict, target: dict, masks: dict) -> torch.Tensor:
    """Sum over modalities of modality_weights[m] x the modality's term, times ``weight``."""
    terms = patch_loss_per_modality(config, pred, target, masks)
    return config.weight * sum(config.modality_weights.get(k, 1.0) * v for k, v in terms.items())


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1, weight: float = 0.1) -> torch.Tensor:
    """One-directional InfoNCE a -> b on L2-normalized (B, D) vectors; the other rows are negatives."""
    with _fp32(a.device):
        logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / tau   # (B, B)
        return weight * F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def era5_mean_regression(pred: torch.Tensor, series: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """MSE of pred (B, C) against each sample's time-mean of its valid months; all-missing entries excluded."""
    with _fp32(pred.device):
        v = valid.float()
        counts = v.sum(1)                                                                  # (B, C)
        mean = (series.float() * v).sum(1) / counts.clamp(min=1)
        has = counts > 0
        return F.mse_loss(pred.float()[has], mean[has])


def era5_series_regression(pred: torch.Tensor, series: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """MSE of pred (B, T*C) against the flattened series (B, T, C), over valid entries only."""
    with _fp32(pred.device):
        flat_valid = valid.flatten(1)
        return F.mse_loss(pred.float()[flat_valid], series.float().flatten(1)[flat_valid])
