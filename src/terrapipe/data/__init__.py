"""Readers, normalization, stores, splits and data-quality gates: raw files -> training-ready data sets."""
