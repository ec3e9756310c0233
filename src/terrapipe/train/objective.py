"""The contrastive LatentMIM objective of one microbatch (OlmoEarth's contrastive_latentmim train_batch):

    loss = 1/2 (L_patch(view a) + L_patch(view b)) + 1/2 (L_era5(a) + L_era5(b)) + InfoNCE(pooled a, pooled b)

L_patch is the configured patch discrimination against the target encoder's tokens; L_era5 is the
experiment's pooled ERA5 objective (regression MSE or CLIP alignment; 0 when ERA5 is unused or a
decode-target token, which L_patch then covers). Every loss is computed in fp32 (train/losses.py).
The metrics report each term unweighted, under the name of what it computes, and beside the patch loss its
chance level (``patch_disc_chance``: the same loss for predictions that cannot tell the decoded tokens apart).
"""
from __future__ import annotations

import torch
from torch import nn

from terrapipe.models.latent_mim import LatentMIM
from terrapipe.train.losses import (
    combine_patch_terms,
    era5_mean_regression,
    era5_series_regression,
    info_nce,
    patch_loss_per_modality,
)
from terrapipe.train.roles import MaskValue


class Objective(nn.Module):
    """Wraps the model so one forward computes the whole microbatch loss (one DDP forward per backward)."""

    def __init__(self, model: LatentMIM):
        super().__init__()
        self.model = model

    def forward(self, batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model, config = self.model, self.model.config
        targets = model.targets(batch)                                           # per modality (B, N_m, D)
        patch, era5, pooled, metrics = [], [], [], {}
        for view in batch.views:
            pred, encoded = model(batch, view, generator)
            masks = {k: view[k].flatten(1) for k in pred}                        # (B, N_m)
            terms = patch_loss_per_modality(config.losses.patch, pred, targets, masks)
            patch.append(combine_patch_terms(config.losses.patch, terms))
            for key, value in terms.items():
                metrics[f"patch_disc/{key}"] = metrics.get(f"patch_disc/{key}", 0) + value.detach() / 2
            for key, value in self._chance(pred, targets, masks).items():
                metrics[key] = metrics.get(key, 0) + value / 2
            pooled.append(encoded.pooled)
            era5.append(self._era5(encoded.pooled, batch, metrics))
        contrast = info_nce(pooled[0], pooled[1], tau=config.losses.info_nce.tau, weight=1.0)
        total = (patch[0] + patch[1]) / 2 + (era5[0] + era5[1]) / 2 + config.losses.info_nce.weight * contrast
        metrics.update({"total": total.detach(), "patch_disc": ((patch[0] + patch[1]) / 2).detach(),
                        "info_nce": contrast.detach()})
        return total, metrics

    def _chance(self, pred: dict, targets: dict, masks: dict) -> dict[str, torch.Tensor]:
        """The patch loss of predictions that cannot tell one decoded token from another (zeros: every kept
        score is 0, so a row costs 2 tau log of its kept columns, under the same negative masking and sample
        skipping), in total and per modality: a ``patch_disc`` near it means the objective taught nothing."""
        config = self.model.config.losses.patch
        with torch.no_grad():
            terms = patch_loss_per_modality(config, {k: torch.zeros_like(v) for k, v in pred.items()}, targets, masks)
            return {"patch_disc_chance": combine_patch_terms(config, terms),
                    **{f"patch_disc_chance/{k}": v for k, v in terms.items()}}

    def _era5(self, pooled: torch.Tensor, batch, metrics: dict) -> torch.Tensor:
        """The weighted pooled ERA5 term of one view; its unweighted value is added (averaged) to metrics."""
        era5, head = self.model.config.era5, self.model.era5_head
        if head is None:
            return pooled.new_zeros(())
        series, valid = batch.era5_series, batch.era5_valid                   # (B, 12, 6)
        if era5.kind == "regression":
            fn = era5_mean_regression if era5.target == "mean" else era5_series_regression
            value, name = fn(head(pooled), series, valid), "era5_regression_mse"
        else:
            value = info_nce(pooled, head(series, valid.to(series)), tau=era5.tau, weight=1.0)
            name = "era5_alignment_info_nce"
        metrics[name] = metrics.get(name, 0) + value.detach() / 2
        return era5.weight * value


def token_counts(batch) -> tuple[int, int]:
    """(encoded, decoded) tokens over both views: the tokens the encoder and the predictor process."""
    encoded = sum(int((m == MaskValue.ONLINE_ENCODER).sum()) for v in batch.views for m in v.values())
    decoded = sum(int((m == MaskValue.DECODER).sum()) for v in batch.views for m in v.values())
    return encoded, decoded
