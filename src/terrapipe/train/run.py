"""One pretraining run from params.yaml: store in, checkpoint + metrics + curves out (the pretrain stage).

Runs the same on one process and under torchrun (`torchrun --nproc_per_node N stages/pretrain.py KEY`):
every rank trains its share of the global batch, rank 0 writes the outputs. W&B tracking is optional:
``tracking.wandb`` (offline by default, WANDB_MODE overrides it; tests run with disabled), project
``tracking.project`` (YYYY_MM_DD_<family>, seed 003), run name = the experiment key. The run's config
is the resolved experiment document plus what makes the run findable and reproducible (flow-run id,
code and data version: terrapipe.versions), also as tags (``tracking_metadata``).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from terrapipe import paths
from terrapipe.train.experiments import PretrainParams, resolve, resolved_document

CURVES = "curves.csv"      # DVC plots: deterministic per-step metrics (same bytes on a rerun)
METRICS = "metrics.json"   # DVC metrics
DOWNSTREAM = "downstream.csv"  # DVC plots: the in-training kNN curve (train/callbacks.py)
SUMMARY_STEPS = 10  # the final metrics average the last steps, so one noisy batch does not decide a comparison
TAG_LIMIT = 64      # W&B refuses a longer tag (and the run with it)


def _tag(text: str) -> str:
    """``text`` as a W&B tag: cut to the limit, with a hash suffix so that two long keys stay distinct."""
    import hashlib

    if len(text) <= TAG_LIMIT:
        return text
    return text[:TAG_LIMIT - 9] + "~" + hashlib.sha256(text.encode()).hexdigest()[:8]


def tracking_metadata(document: dict, key: str, *, code_version: str | None, data_version: str | None,
                      flow_run_id: str | None) -> tuple[dict, list[str]]:
    """W&B config and tags of a run: the resolved document plus flow run, code and data version."""
    config = {**document, "experiment": key, "flow_run_id": flow_run_id, "code_version": code_version,
              "data_version": data_version}
    tags = [_tag(key)]
    if code_version:
        revision, dirty, _ = code_version.partition("-dirty")
        tags.append(f"code:{revision[:12]}{'-dirty' if dirty else ''}")
    if data_version:
        tags.append(f"data:{data_version[:12]}")
    return config, tags


def _tracker(config, document: dict, key: str, out_dir: Path):
    mode = os.environ.get("WANDB_MODE", config.tracking.wandb)
    if mode == "disabled":
        return None, None
    import wandb

    from terrapipe.versions import code_version, data_version, flow_run_id

    run_config, tags = tracking_metadata(document, key, code_version=code_version(), data_version=data_version(),
                                         flow_run_id=flow_run_id())
    run = wandb.init(project=config.tracking.project, name=key, config=run_config, tags=tags, mode=mode,
                     dir=str(out_dir), reinit="finish_previous")
    return (lambda row: run.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])), run


def summarize(history: list[dict], skipped: int) -> dict:
    """metrics.json: first and final (mean of the last steps) value of every tracked curve."""
    last = history[-SUMMARY_STEPS:]
    keys = [k for k in history[0] if k not in ("step",)]
    return {"steps": history[-1]["step"], "skipped_steps": skipped,
            "final": {k: sum(r.get(k, 0.0) for r in last) / len(last) for k in keys},
            "first": {k: history[0][k] for k in keys},
            "final_averages_last_steps": len(last)}


def _write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    from terrapipe.atomic import atomic_path

    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


def write_outputs(out_dir: Path, result, downstream_metric: str) -> None:
    """curves.csv, downstream.csv (the callback's curve: a header alone when it is off, so DVC always finds
    the plot), metrics.json (+ the callback's last value), and the untracked speed per step in
    paths.timing_file("pretrain", <out_dir name>, ".csv")."""
    from terrapipe.atomic import write_json

    _write_csv(out_dir / CURVES, result.history)
    _write_csv(out_dir / DOWNSTREAM, result.evaluations, columns=["step", downstream_metric])
    if result.timing:
        timing = paths.timing_file("pretrain", Path(out_dir).name, ".csv")
        timing.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(timing, result.timing)
    metrics = summarize(result.history, result.skipped_steps)
    if result.evaluations:
        metrics["downstream"] = {downstream_metric: result.evaluations[-1][downstream_metric],
                                 "step": result.evaluations[-1]["step"]}
    write_json(out_dir / METRICS, metrics)


def run_experiment(pretrain: PretrainParams, key: str, out_dir: Path | None = None, *,
                   stop_at: int | None = None, progress: bool = True,
                   store_dirs: tuple[Path, Path] = (paths.processed("sentinel"), paths.processed("era5"))):
    """Train experiment ``key`` on the store's train sites (held-out sites never enter) into ``out_dir``."""
    from terrapipe.data.store import TrainingStore
    from terrapipe.train.loop import train

    if key not in pretrain.experiments:
        from terrapipe.errors import ConfigError
        raise ConfigError(f"unknown experiment {key!r}; accepted (params.yaml pretrain.experiments): "
                          + ", ".join(pretrain.experiments))
    config = resolve(pretrain, key)
    document = resolved_document(pretrain, key)
    out_dir = Path(out_dir or paths.pretrain_dir(key))
    out_dir.mkdir(parents=True, exist_ok=True)
    store = TrainingStore(*store_dirs)
    stats = json.loads((Path(store_dirs[0]) / "stats.json").read_text())
    era5_stats = json.loads((Path(store_dirs[1]) / "stats.json").read_text())
    extra = {"band_order": {m: list(store.modalities[m].band_order) for m in config.token_modalities},
             "normalization": {"imagery": stats, "era5": era5_stats}}
    main = int(os.environ.get("RANK", "0")) == 0
    tracker, wandb_run = _tracker(config, document, key, out_dir) if main else (None, None)
    try:
        result = train(config, document, store.arrays, store.indices("train"), out_dir, extra_state=extra,
                       stop_at=stop_at, progress=progress, tracker=tracker)
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    if main:
        from terrapipe.train.callbacks import metric_name
        write_outputs(out_dir, result, metric_name(config.downstream.task))
    return result
