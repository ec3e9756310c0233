"""Loss configurations (pydantic only, so params validation never imports torch); the losses: train/losses.py."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PatchDiscrimination(_LossConfig):
    """OlmoEarth's modality patch discrimination: negatives are the other decoded tokens of the same
    modality in the same sample."""
    kind: Literal["patch_discrimination"] = "patch_discrimination"
    tau: float = Field(0.1, gt=0)
    weight: float = Field(1.0, ge=0)
    modality_weights: dict[str, float] = {}


class PatchDiscriminationMaskedNegatives(PatchDiscrimination):
    """Patch discrimination that drops negatives whose target is (nearly) the same as the positive's."""
    kind: Literal["patch_discrimination_masked_negatives"] = "patch_discrimination_masked_negatives"
    same_target_threshold: float = Field(0.999, gt=-1.0, le=2.0)
    mask_negatives_for: list[str] | None = None  # None: every modality


PatchLossConfig = Annotated[PatchDiscrimination | PatchDiscriminationMaskedNegatives, Field(discriminator="kind")]


class InfoNCEConfig(_LossConfig):
    """One-directional InfoNCE between the two masked views' pooled vectors (negatives: the microbatch)."""
    tau: float = Field(0.1, gt=0)
    weight: float = Field(0.1, ge=0)
