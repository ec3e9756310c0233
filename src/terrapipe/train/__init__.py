"""Pretraining: masks, losses, the training loop, checkpoints and tracking (OlmoEarth-style LatentMIM)."""
