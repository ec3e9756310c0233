"""Models: tokenization, the FlexiViT-style encoder, the predictor, LatentMIM and its ERA5 heads."""
