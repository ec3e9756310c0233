"""Run-to-run spread of the seed 002 and 004 results: the default Earth4D -> AlphaEarth run and the
DeepEarth classifiers and autoencoder, retrained with several seeds, beside their baselines.

    python benchmarks/seed_spread_002_004.py [--earth4d-seeds 42 43 44] [--deepearth-seeds 0 1 2]

Needs the processed data (`make demo`). Prints per holdout Earth4D's mae_over_range_pct as mean and
standard deviation over seeds next to the kNN and mean-embedding baselines (deterministic: no seed), and
per split reason the vision classifier's top-1 beside the majority and nearest-centroid baselines, then
the autoencoder's zero-shot top-1 beside chance. A gap smaller than the spread is no result.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def _spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3f} +- {sd:.3f}"


def earth4d_spread(seeds: list[int]) -> None:
    from terrapipe.config import load_params
    from terrapipe.train.alphaearth import earth4d_params, load_processed, run_experiment

    params, data = earth4d_params(load_params(REPO / "params.yaml")), load_processed()
    runs = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_experiment(params.model_copy(update={"seed": seed}), data, Path(tmp) / "run")["holdouts"])
    print(f"Earth4D -> AlphaEarth, mae_over_range_pct (lower is better), seeds {seeds}:")
    for holdout, first in runs[0].items():
        earth4d = [run[holdout]["earth4d"]["mae_over_range_pct"] for run in runs]
        print(f"  {holdout:<18} {first['rows']:>5} rows  Earth4D {_spread(earth4d)}  "
              f"kNN {first['knn_geodesic']['mae_over_range_pct']:.3f}  "
              f"mean {first['mean_embedding']['mae_over_range_pct']:.3f}  "
              f"Earth4D beats kNN in {sum(run[holdout]['earth4d_beats_knn'] for run in runs)}/{len(runs)} runs")


def deepearth_spread(seeds: list[int]) -> None:
    from terrapipe import paths
    from terrapipe.config import load_params
    from terrapipe.data.embedding_store import EmbeddingStore
    from terrapipe.train.deepearth import deepearth_params, train_autoencoder, train_classifier

    params, store = deepearth_params(load_params(REPO / "params.yaml")), EmbeddingStore.open(paths.EMBEDDING_STORE)
    vision, zero_shot = [], []
    for seed in seeds:
        seeded = params.model_copy(update={"classifier": params.classifier.model_copy(update={"seed": seed}),
                                           "autoencoder": params.autoencoder.model_copy(update={"seed": seed})})
        vision.append(train_classifier(store, "vision", seeded).metrics)
        zero_shot.append(train_autoencoder(store, seeded).metrics["zero_shot"]["shared"]["all_species"])
    print(f"DeepEarth vision classifier, top-1 over seen species (higher is better), seeds {seeds}:")
    for group, first in vision[0]["model"].items():
        baselines = vision[0]["baselines"]
        print(f"  {group:<22} {first['n']:>4} obs  model {_spread([run['model'][group]['top1'] for run in vision])}  "
              f"majority {baselines['majority'][group]['top1']:.3f}  "
              f"nearest centroid {baselines['nearest_centroid'][group]['top1']:.3f}")
    print("  (the held-out species differ per seed: the zero-shot set is drawn with the autoencoder's seed)")
    print(f"Autoencoder zero-shot top-1 among all species' language embeddings: "
          f"{_spread([z['top1'] for z in zero_shot])}  chance {zero_shot[0]['chance_top1']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--earth4d-seeds", type=int, nargs="*", default=[42, 43, 44])
    parser.add_argument("--deepearth-seeds", type=int, nargs="*", default=[0, 1, 2])
    args = parser.parse_args(argv)
    if args.deepearth_seeds:
        deepearth_spread(args.deepearth_seeds)
    if args.earth4d_seeds:
        earth4d_spread(args.earth4d_seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
