"""Seed 000's question on the sample world: does InfoNCE rise over training with ERA5 as a per-token decode
target (exp 15) and not with the pooled regression (exp 3)? Short CPU runs, several seeds for the spread.

    python benchmarks/seed000_infonce.py [--steps 60] [--seeds 0 1] [--out /tmp/seed000]

Prints, per experiment and seed, InfoNCE over the first and last 10 steps and its least-squares slope per
100 steps, then the mean and spread over seeds. Needs the processed store (`make demo`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
EXPERIMENTS = ("single_bandset_all12_random_band_dropout_era5_random_decode_masked_neg", "era5_reg_mean")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path("/tmp/seed000"))
    args = parser.parse_args(argv)

    from terrapipe.train.experiments import PretrainParams, load_pretrain, merge
    from terrapipe.train.run import run_experiment

    params = load_pretrain(REPO / "params.yaml")
    rows = {}
    for key in EXPERIMENTS:
        for seed in args.seeds:
            variant = f"{key}__seed{seed}"
            experiments = dict(params.experiments)
            experiments[variant] = merge(params.experiments[key], {"extends": key, "train": {"seed": seed,
                                         "steps": args.steps}, "tracking": {"wandb": "disabled"}})
            experiments[variant]["extends"] = key
            run_params = PretrainParams(run=[], base=params.base, experiments=experiments)
            history = run_experiment(run_params, variant, args.out / variant, progress=False).history
            info = np.array([r["info_nce"] for r in history])
            slope = np.polyfit(np.arange(len(info)), info, 1)[0] * 100
            rows.setdefault(key, []).append((info[:10].mean(), info[-10:].mean(), slope))
            print(f"{key} seed {seed}: InfoNCE first 10 {info[:10].mean():.3f}, last 10 {info[-10:].mean():.3f}, "
                  f"slope {slope:+.3f} per 100 steps", flush=True)
    for key, values in rows.items():
        slopes = [v[2] for v in values]
        last = [v[1] for v in values]
        spread = statistics.stdev(slopes) if len(slopes) > 1 else float("nan")
        print(f"{key}: slope mean {statistics.mean(slopes):+.3f} (sd {spread:.3f} over {len(slopes)} seeds), "
              f"last-10 InfoNCE mean {statistics.mean(last):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
