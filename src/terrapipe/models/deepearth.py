"""DeepEarth models: the reference species classifiers and a cross-modal masked autoencoder.

References: legel/deepearth ``training/train_classifier.py`` (LanguageClassifier, VisionClassifier) and
the training README's ``MultimodalMaskedAutoencoder`` sketch (seed 004), re-implemented from the
descriptions in reference/deepearth-behaviour.md 4 and seeds/004.

Shapes: B batch, V vision width (1408, pooled V-JEPA-2), L language width (7168, DeepSeek-V3),
H hidden width, C training species, D shared width.
"""
from __future__ import annotations

import torch
from torch import nn

VISION_DIM = 1408
LANGUAGE_DIM = 7168
LANGUAGE_DROPOUT = 0.2   # the reference's values
VISION_DROPOUT = 0.3


class SpeciesClassifier(nn.Module):
    """An MLP from one embedding to species logits: in -> H -> H -> C with ReLU and dropout.

    Args: x (B, in_dim). Returns logits (B, num_classes).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def language_classifier(num_classes: int, hidden_dim: int = 128, in_dim: int = LANGUAGE_DIM) -> SpeciesClassifier:
    """The reference LanguageClassifier: 7168 -> 128 -> 128 -> C, dropout 0.2. Its input is constant per
    species, so it can only learn a lookup table (near 100% on seen species, by construction)."""
    return SpeciesClassifier(in_dim, num_classes, hidden_dim, LANGUAGE_DROPOUT)


def vision_classifier(num_classes: int, hidden_dim: int = 128, in_dim: int = VISION_DIM) -> SpeciesClassifier:
    """The reference VisionClassifier on pooled embeddings: 1408 -> 128 -> 128 -> C, dropout 0.3 (the
    reference mean-pools its 8 x 24 x 24 token grid first; the store holds that pooled vector)."""
    return SpeciesClassifier(in_dim, num_classes, hidden_dim, VISION_DROPOUT)


CLASSIFIERS = {"language": language_classifier, "vision": vision_classifier}


class CrossModalAutoencoder(nn.Module):
    """Vision and language through one shared space, each reconstructing the other (and itself).

    Each modality has an encoder into the shared D-dim space (Linear -> LayerNorm -> ReLU, as seed 004's
    sketch) and a decoder out of it. The decoders are shared by both encoders, so training a code from
    either modality to decode into both pulls the two encoders into one space: a vision code lands where
    its species' language code does, which is what zero-shot identification by language relies on.

    Args (forward): vision (B, V), language (B, L), standardized. Returns the four reconstructions
    (B, V) / (B, L) keyed "vision_from_language", "language_from_vision", "vision_from_vision",
    "language_from_language", and the codes "shared_vision", "shared_language" (B, D).
    """

    def __init__(self, vision_dim: int = VISION_DIM, language_dim: int = LANGUAGE_DIM, shared_dim: int = 128):
        super().__init__()
        self.vision_encoder = _encoder(vision_dim, shared_dim)
        self.language_encoder = _encoder(language_dim, shared_dim)
        self.vision_decoder = nn.Linear(shared_dim, vision_dim)
        self.language_decoder = nn.Linear(shared_dim, language_dim)

    def encode_vision(self, vision: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(vision)

    def encode_language(self, language: torch.Tensor) -> torch.Tensor:
        return self.language_encoder(language)

    def forward(self, vision: torch.Tensor, language: torch.Tensor) -> dict[str, torch.Tensor]:
        shared_vision, shared_language = self.encode_vision(vision), self.encode_language(language)
        return {
            "vision_from_language": self.vision_decoder(shared_language),
            "language_from_vision": self.language_decoder(shared_vision),
            "vision_from_vision": self.vision_decoder(shared_vision),
            "language_from_language": self.language_decoder(shared_language),
            "shared_vision": shared_vision, "shared_language": shared_language,
        }


def _encoder(in_dim: int, shared_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, shared_dim), nn.LayerNorm(shared_dim), nn.ReLU())
