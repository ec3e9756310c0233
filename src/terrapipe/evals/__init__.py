"""Evaluation: metrics and the baselines every model is reported beside (pure functions of arrays)."""
