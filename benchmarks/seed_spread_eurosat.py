"""Issue 10's check: does the default pretrained encoder beat the random-encoder baseline on the land-use task
(sample-eurosat, kNN accuracy on the test partition) by more than the run-to-run spread over 3 seeds?

    python benchmarks/seed_spread_eurosat.py [--experiment KEY] [--seeds 0 1 2] [--steps N] [--task-dir DIR]

For each seed: trains the experiment exactly as pretrain@KEY does (params.yaml, train.seed replaced; the
in-training callback off, which changes no weight) into a temporary folder, then scores its encoder and the
random encoder that seed initialises (the run's own starting point) by evaluate@KEY's code. Prints each run,
mean and sample standard deviation of both, the margin and whether it exceeds the larger spread.
Reads data/processed (the store) and data/raw/tasks/eurosat of the checkout (run `dvc repro` first), or the
sample-eurosat folder given by --task-dir (e.g. one made with a larger tasks.eurosat.n_samples).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    import numpy as np
    from _common import pretrain_like_stage

    from terrapipe import paths
    from terrapipe.data.tasks import read_task
    from terrapipe.evals.downstream import EvaluateParams, evaluate_task
    from terrapipe.evals.embeddings import load_encoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="default_bandsets_via_tokenconfig_cross_random_masked_neg",
                        help="default: the base experiment (what every other one varies)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="override train.steps (default: params.yaml)")
    parser.add_argument("--task-dir", type=Path, default=REPO / paths.task_dir("eurosat"),
                        help="a sample-eurosat folder in GEO-Bench's layout (default: the checkout's)")
    args = parser.parse_args()
    task = read_task("eurosat", args.task_dir)
    settings = EvaluateParams()
    trained, random = [], []
    with tempfile.TemporaryDirectory(prefix="terrapipe-seeds-") as work:
        for seed in args.seeds:
            out = Path(work) / f"seed{seed}"
            train_s = pretrain_like_stage(args.experiment, out, seed, args.steps)
            handle = load_encoder(out / "checkpoint.pt")
            one = EvaluateParams(random_encoder_seeds=[seed], knn=settings.knn)
            result = evaluate_task(handle, "eurosat", task, one, Path(work) / "cache")
            trained.append(result.summary["encoder"])
            random.append(result.summary["random_encoder"])
            print(f"seed {seed}: pretrained {trained[-1]:.3f}  random init {random[-1]:.3f}  "
                  f"(trained {train_s:.0f} s; test chips {result.summary['details']['test_samples']})", flush=True)
    t, r = np.array(trained), np.array(random)
    spread = max(t.std(ddof=1), r.std(ddof=1)) if len(t) > 1 else float("nan")
    margin = t.mean() - r.mean()
    print(f"\n{args.experiment}, sample-eurosat kNN accuracy (test), {len(t)} seeds:")
    print(f"  pretrained     {t.mean():.3f} +- {t.std(ddof=1):.3f}")
    print(f"  random encoder {r.mean():.3f} +- {r.std(ddof=1):.3f}")
    n_test = int((task.partition == "test").sum())
    p = r.mean()
    print(f"  one accuracy on {n_test} test chips has a binomial sampling error of about {np.sqrt(p * (1 - p) / n_test):.3f}"
          " (sqrt(p (1 - p) / n)): the test set cannot resolve differences much smaller")
    print(f"  margin {margin:+.3f} vs run-to-run spread {spread:.3f}: "
          f"{'beats the random encoder by more than the spread' if margin > spread else 'NOT larger than the spread'}")


if __name__ == "__main__":
    main()
