"""Figures for issue 10: one encoder on all four sample tasks, with every baseline, against the 60 s budget.

    python benchmarks/bench_evaluate.py [--experiment KEY] [--checkpoint PATH]

Runs what evaluate@<experiment> runs (terrapipe.evals.downstream.evaluate_task for each task of params.yaml
evaluate.tasks) with an empty embedding cache, and prints per task the seconds spent extracting embeddings
(the encoder and the random encoders of evaluate.random_encoder_seeds) and probing (kNN or the segmentation probe,
for the encoder and every baseline), beside the budget. A second pass over the now warm cache is the baseline of
the same run: what re-running a probe costs when no embedding is recomputed.
Reads the checkout's data/raw/tasks (run `dvc repro` first); writes only to a temporary folder.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

TARGET_S = 60.0


def main() -> None:
    import torch

    from terrapipe import paths
    from terrapipe.config import load_params
    from terrapipe.data.tasks import read_task, tasks_params
    from terrapipe.evals.downstream import evaluate_params, evaluate_task
    from terrapipe.evals.embeddings import load_encoder
    from terrapipe.portable import pin_cpu_kernels

    pin_cpu_kernels()   # the kernels the evaluate stage runs, before any tensor work
    params = load_params(REPO / "params.yaml")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default=params.pretrain["run"][0])
    parser.add_argument("--checkpoint", type=Path, help="default: models/pretrain/<experiment>/checkpoint.pt")
    args = parser.parse_args()
    checkpoint = args.checkpoint or REPO / paths.pretrain_dir(args.experiment) / "checkpoint.pt"
    settings, task_settings = evaluate_params(params), tasks_params(params)
    torch.set_num_threads(settings.cpu_threads)
    handle = load_encoder(checkpoint)
    tasks = {name: read_task(name, REPO / paths.task_dir(name), task_settings) for name in settings.tasks}
    print(f"encoder {args.experiment} ({checkpoint}), random-encoder seeds {settings.random_encoder_seeds}, "
          f"{settings.cpu_threads} torch thread(s)")
    with tempfile.TemporaryDirectory(prefix="terrapipe-bench-eval-") as cache:
        passes = []
        for label in ("cold cache", "warm cache"):
            rows, started = [], time.perf_counter()
            for name, task in tasks.items():
                result = evaluate_task(handle, name, task, settings, Path(cache))
                rows.append((name, len(task), result.timing["extraction_s"], result.timing["probing_s"],
                             result.summary["metric"], result.summary["encoder"]))
            passes.append((label, time.perf_counter() - started, rows))
    for label, total, rows in passes:
        print(f"\n{label}:  {'task':8s} {'samples':>7s} {'extract s':>9s} {'probe s':>8s}  metric")
        for name, n, extract_s, probe_s, metric, value in rows:
            print(f"{'':12s}{name:8s} {n:7d} {extract_s:9.1f} {probe_s:8.1f}  {metric} {value:.3f}")
        print(f"{'':12s}total {total:.1f} s")
    cold, warm = passes[0][1], passes[1][1]
    print(f"\none encoder on all {len(tasks)} tasks: {cold:.1f} s (target <= {TARGET_S:.0f} s: ratio {cold / TARGET_S:.2f}); "
          f"re-run from the embedding cache {warm:.1f} s ({cold / max(warm, 1e-9):.1f}x faster)")


if __name__ == "__main__":
    main()
