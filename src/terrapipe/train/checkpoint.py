"""A checkpoint is one dict, written atomically: model (online, predictor, target, ERA5 head), optimizer,
scheduler, RNG state, step, the per-step history, the resolved experiment, band order and
normalization statistics, so a checkpoint alone says what it is and how to feed it."""
from __future__ import annotations

from pathlib import Path

import torch

from terrapipe.errors import InputDataError

FORMAT = 1


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, document: dict, result,
                    extra: dict) -> None:
    from terrapipe.atomic import atomic_path

    state = {"format": FORMAT, "step": step, "experiment": document, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": {"torch": torch.get_rng_state()}, "history": list(result.history),
             "skipped_steps": result.skipped_steps, "evaluations": list(result.evaluations), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, document: dict, device) -> dict | None:
    """The checkpoint at ``path`` if it belongs to this exact experiment config, else None (start over)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # a truncated file cannot come from atomic writes, but a copied one can
        raise InputDataError(path, f"is not a readable checkpoint ({exc})", "Delete it to train from scratch") from exc
    if state.get("format") != FORMAT or state.get("experiment") != document:
        return None
    return state
