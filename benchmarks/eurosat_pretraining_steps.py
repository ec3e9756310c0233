"""Does longer pretraining make land-use features better? Cross-validated over every labelled sample-eurosat
chip, so that differences of a few chips are not read as results.

    python benchmarks/eurosat_pretraining_steps.py [--experiment KEY] [--steps 60 200 500] [--seed 0]
                                                   [--folds 5] [--task-dir DIR] [--set optim.lr=0.001 ...]

Trains the experiment as pretrain@KEY does (benchmarks/_common.pretrain_like_stage) once per --steps value,
embeds every labelled chip (all partitions: this is a diagnostic of the representation, not the benchmark's
test metric, which evaluate@KEY computes on the test partition alone), and scores it by seeded K-fold
cross-validation with the evaluation's two classifiers: kNN (evaluate.knn: k, temperature) and the
classification linear probe (BatchNorm + Linear). Beside them, the same folds score the random encoders of
evaluate.random_encoder_seeds and the z-scored raw-pixel features (per-band mean and std). Prints mean
accuracy over the folds and, for the random encoders, the spread over their initialisations.
Reads the checkout's store and data/raw/tasks/eurosat (run `dvc repro` first).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

PROBE_EPOCHS = 200      # ~125 training rows fill one batch: 200 epochs are 200 AdamW steps


def cross_validated(features, labels, folds: int, seed: int, knn, classes: int,
                    z_score_knn: bool = False) -> tuple[float, float]:
    """(kNN accuracy, linear-probe accuracy), each the mean over ``folds`` seeded folds; features [N, D].
    kNN sees the features as they are, or with ``z_score_knn`` z-scored by the training folds (raw pixels),
    as evaluate@KEY does."""
    import numpy as np

    from terrapipe.evals.downstream import standardize
    from terrapipe.evals.knn import knn_classify
    from terrapipe.evals.probes import ProbeConfig, train_linear_probe

    order = np.random.default_rng(seed).permutation(len(labels))
    knn_hits, probe_hits = 0, 0
    for fold in range(folds):
        test = order[fold::folds]
        train = np.setdiff1d(order, test)
        x_train, x_test = standardize(features[train], features[test])
        reference, query = (x_train, x_test) if z_score_knn else (features[train], features[test])
        predicted = knn_classify(reference, labels[train], query, classes, k=knn.k, temperature=knn.temperature)
        knn_hits += int((predicted == labels[test]).sum())
        probe = train_linear_probe(x_train, labels[train], x_test, labels[test], classes,
                                   ProbeConfig(epochs=PROBE_EPOCHS, seed=seed))
        probe_hits += int((probe.predictions == labels[test]).sum())
    return knn_hits / len(labels), probe_hits / len(labels)


def loss_drift(curves: Path) -> str:
    """The losses over the first and last steps, each patch loss over its chance level: did it learn at all?"""
    from _common import patch_losses

    return "  ".join(f"{name.removeprefix('patch_disc/')} {first:.3f}->{last:.3f}"
                     + (f" ({ratio:.2f} x chance)" if ratio is not None else "")
                     for name, (first, last, ratio) in patch_losses(curves).items())


def main() -> None:
    import numpy as np
    import torch
    from _common import parse_overrides, pretrain_like_stage

    from terrapipe import paths
    from terrapipe.config import load_params
    from terrapipe.data.tasks import IGNORE_LABEL, read_task
    from terrapipe.evals.downstream import evaluate_params, raw_pixel_features
    from terrapipe.evals.embeddings import extract, load_encoder, random_encoder_like
    from terrapipe.portable import pin_cpu_kernels
    from terrapipe.train.run import CURVES

    params = load_params(REPO / "params.yaml")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="default_bandsets_via_tokenconfig_cross_random_masked_neg",
                        help="default: the base experiment (what every other one varies)")
    parser.add_argument("--steps", type=int, nargs="+", default=[60, 200, 500])
    parser.add_argument("--seed", type=int, default=0, help="pretraining seed, and the folds'")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--task-dir", type=Path, default=REPO / paths.task_dir("eurosat"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="pretrain.base overrides, e.g. optim.lr=0.001 'sampling.hw_tokens=[2, 4]'")
    parser.add_argument("--no-baselines", action="store_true", help="skip the raw-pixel and random encoders")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    pin_cpu_kernels()
    evaluation = evaluate_params(params)
    task = read_task("eurosat", args.task_dir)
    labelled = task.labels != IGNORE_LABEL
    labels, classes = task.labels[labelled], len(task.class_names)

    def embed(handle):   # with evaluate@KEY's torch threads; training keeps the stage's
        threads = torch.get_num_threads()
        torch.set_num_threads(evaluation.cpu_threads)
        try:
            return extract(handle, task, "classification")
        finally:
            torch.set_num_threads(threads)

    def score(features, z_score_knn: bool = False) -> tuple[float, float]:
        return cross_validated(features[labelled], labels, args.folds, args.seed, evaluation.knn, classes,
                               z_score_knn)

    print(f"sample-eurosat: {len(labels)} labelled chips, {args.folds}-fold cross-validation (seed {args.seed}); "
          f"kNN k={evaluation.knn.k}, linear probe {PROBE_EPOCHS} epochs", flush=True)
    print(f"{'features':<34} {'knn acc':>8} {'probe acc':>9}")
    if overrides:
        print(f"pretrain.base overrides: {overrides}")
    if not args.no_baselines:
        raw = score(raw_pixel_features(task), z_score_knn=True)
        print(f"{'raw pixels (per-band mean, std)':<34} {raw[0]:>8.3f} {raw[1]:>9.3f}", flush=True)
    first = None
    with tempfile.TemporaryDirectory(prefix="terrapipe-steps-") as work:
        for steps in args.steps:
            out = Path(work) / f"steps{steps}"
            seconds = pretrain_like_stage(args.experiment, out, args.seed, steps, overrides)
            handle = load_encoder(out / "checkpoint.pt")
            first = first or handle
            knn, probe = score(embed(handle))
            print(f"{f'pretrained {steps} steps ({seconds:.0f} s)':<34} {knn:>8.3f} {probe:>9.3f}"
                  f"   {loss_drift(out / CURVES)}", flush=True)
    if args.no_baselines:
        return
    randoms = np.array([score(embed(random_encoder_like(first, s)))
                        for s in evaluation.random_encoder_seeds])
    mean, spread = randoms.mean(0), randoms.std(0, ddof=1)
    print(f"{f'random encoder ({len(randoms)} inits)':<34} {mean[0]:>8.3f} {mean[1]:>9.3f}"
          f"   (+- {spread[0]:.3f}, +- {spread[1]:.3f} over inits)")


if __name__ == "__main__":
    main()
