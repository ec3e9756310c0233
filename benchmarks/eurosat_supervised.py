"""How much land use does the encoder's architecture learn from sample-eurosat's own labels, at a CPU budget?
Supervised end-to-end training beside the frozen features, on the cross-validation of eurosat_pretraining_steps.py.

    python benchmarks/eurosat_supervised.py [--experiment KEY] [--steps 150] [--lr 0.001]
                                          [--patch-size 8] [--folds 5] [--seed 0]

Per fold, a freshly initialised encoder of the experiment's architecture (its pretraining checkpoint gives
the architecture and the normalization, not the weights) and a LayerNorm + Linear head are trained end to
end on the training folds' labels (AdamW, batches of 32, the evaluation's unmasked inputs and mean pooling),
then scored on the held-out fold. Beside it, on the same folds: the raw-pixel features and the frozen random
encoder, with the evaluation's kNN and linear probe. If labels and backpropagation through the whole encoder
reach no more than the raw features at this budget, the task at this size gives pretraining little room to
show a margin over the random initialisation. A diagnostic over all partitions, not the test metric.
About 9 minutes on 2 cores at the defaults (150 steps x 5 folds at patch 8).
Reads the checkout's checkpoint and data/raw/tasks/eurosat (run `dvc repro` first).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

BATCH = 32


def supervised_fold(handle, task, train_rows, test_rows, classes: int, steps: int, lr: float, patch: int,
                    seed: int) -> int:
    """Correct test predictions of the encoder + head trained from ``handle``'s random init on ``train_rows``."""
    import numpy as np
    import torch

    from terrapipe.evals.embeddings import encoder_input, pool, random_encoder_like

    encoder = random_encoder_like(handle, seed).model
    encoder.requires_grad_(True).train()
    with torch.no_grad():
        batch, masks, keys = encoder_input(handle, task, train_rows[:2], patch)
        width = pool(encoder(batch, masks), "classification", keys)[0].shape[1]
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, classes))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=lr, weight_decay=0.05)
    draw = np.random.default_rng(seed)
    labels = torch.as_tensor(task.labels)
    for _ in range(steps):
        rows = np.sort(draw.choice(train_rows, min(BATCH, len(train_rows)), replace=False))
        batch, masks, keys = encoder_input(handle, task, rows, patch)
        pooled = pool(encoder(batch, masks), "classification", keys)[0]            # (B, D)
        loss = torch.nn.functional.cross_entropy(head(pooled), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()
    with torch.no_grad():
        batch, masks, keys = encoder_input(handle, task, test_rows, patch)
        predicted = head(pool(encoder(batch, masks), "classification", keys)[0]).argmax(1)
    return int((predicted == labels[test_rows]).sum())


def main() -> None:
    import numpy as np
    from eurosat_pretraining_steps import cross_validated

    from terrapipe import paths
    from terrapipe.config import load_params
    from terrapipe.data.tasks import IGNORE_LABEL, read_task
    from terrapipe.evals.downstream import evaluate_params, raw_pixel_features
    from terrapipe.evals.embeddings import extract, load_encoder, random_encoder_like
    from terrapipe.portable import pin_cpu_kernels

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="default_bandsets_via_tokenconfig_cross_random_masked_neg")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per fold")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patch-size", type=int, default=8, help="pixels per token side (8: 64 tokens per band "
                        "group on 64 px chips, a pretraining patch size; 4 is the evaluation's, 4x the cost)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="the folds', the initialisation's and the batches'")
    args = parser.parse_args()
    pin_cpu_kernels()
    params = load_params(REPO / "params.yaml")
    evaluation = evaluate_params(params)
    task = read_task("eurosat", REPO / paths.task_dir("eurosat"))
    labelled = np.flatnonzero(task.labels != IGNORE_LABEL)
    labels, classes = task.labels[labelled], len(task.class_names)
    handle = load_encoder(REPO / paths.pretrain_dir(args.experiment) / "checkpoint.pt")
    print(f"sample-eurosat: {len(labelled)} labelled chips, {args.folds}-fold cross-validation (seed {args.seed})")
    print(f"{'features':<44} {'knn acc':>8} {'probe acc':>9}")
    raw = cross_validated(raw_pixel_features(task)[labelled], labels, args.folds, args.seed, evaluation.knn,
                          classes, z_score_knn=True)
    print(f"{'raw pixels (per-band mean, std)':<44} {raw[0]:>8.3f} {raw[1]:>9.3f}", flush=True)
    frozen = cross_validated(extract(random_encoder_like(handle, args.seed), task, "classification")[labelled],
                             labels, args.folds, args.seed, evaluation.knn, classes)
    print(f"{'random encoder, frozen (init ' + str(args.seed) + ')':<44} {frozen[0]:>8.3f} {frozen[1]:>9.3f}",
          flush=True)
    order = labelled[np.random.default_rng(args.seed).permutation(len(labelled))]   # the folds of cross_validated
    hits, started = 0, time.perf_counter()
    for fold in range(args.folds):
        test = np.sort(order[fold::args.folds])
        train = np.setdiff1d(order, test)
        hits += supervised_fold(handle, task, train, test, classes, args.steps, args.lr, args.patch_size, args.seed)
    name = f"supervised end to end ({args.steps} steps, patch {args.patch_size})"
    print(f"{name:<44} {'':>8} {hits / len(labelled):>9.3f}   ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
