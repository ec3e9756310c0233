"""Is there a signal for pretraining to learn? Two measurements that explain why a CPU-scale encoder ends
where its random initialisation started (README, "Downstream evaluation"):

    python benchmarks/pretraining_signal.py [--experiment KEY] [--steps 10] [--curves models/pretrain/KEY/curves.csv]

1. Input spread: OlmoEarth's rule (x - (mean - 2 std)) / (4 std) gives a band a standard deviation of 0.25
   over the statistics' own data. Printed per modality (median over its bands): the normalised store's
   overall, within-chip and across-chip standard deviations, and their ratio to 0.25. Heavy tails (snow and
   water in S2) inflate std, so ordinary land fills a sliver of the range: the patch embeddings then differ
   little from chip to chip, for a random encoder and a trained one alike.
2. Patch-discrimination chance level: the loss of a predictor that cannot tell one decoded token from the
   other is 2 tau log(n) per row, n the target columns the row is scored against (the decoded tokens of the
   same modality and sample, less the masked "same target" negatives). Measured on the experiment's own
   training batches (first --steps steps, seed of the experiment, model at initialisation), beside the share
   of samples the masked-negatives rule skips and the loss the run reached (first and last 10 steps of its
   curves.csv, if the run exists), over the chance level it logged for its own batches (patch_disc_chance):
   near 1, the modality taught the encoder nothing.
Reads the checkout's store (data/processed/sentinel, era5): run `dvc repro` first.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

RULE_STD = 0.25          # the std (x - (mean - 2 std)) / (4 std) gives the statistics' own data
SITES_SAMPLED = 64       # store rows read for the spread (enough for stable medians, fast on memory maps)


def input_spread(arrays: dict, keys, missing: float) -> None:
    """Per modality: median over bands of the overall, within-chip and across-chip std of normalised values."""
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore", category=RuntimeWarning)   # an all-missing chip or band gives NaN: skipped
    print(f"{'input spread':<12} {'overall':>8} {'within':>8} {'across':>8}   (std of normalised values, "
          f"median over bands; ratio to the rule's {RULE_STD})")
    for key in keys:
        x = np.asarray(arrays[key][:SITES_SAMPLED], np.float64)                 # [N, H, W, T, C]
        x = np.where(x == missing, np.nan, x)
        overall = np.nanstd(x, axis=(0, 1, 2, 3))                              # per band
        within = np.nanmean(np.nanstd(x, axis=(1, 2)), axis=(0, 1))             # per chip and timestep, then mean
        across = np.nanstd(np.nanmean(x, axis=(1, 2)), axis=(0, 1))             # of chip means
        cells = [np.nanmedian(v) for v in (overall, within, across)]
        print(f"{key:<12} " + " ".join(f"{v:>8.3f}" for v in cells) + "   ratio "
              + " / ".join(f"{v / RULE_STD:.2f}" for v in cells))


def chance_per_sample(loss, key: str, mask, target) -> list[tuple[int, float]]:
    """Per sample: (decoded tokens, the loss of uninformative predictions), or loss None where the loss skips the
    sample. The training loss itself scores zero predictions: every kept column then scores 0, so each row
    costs 2 tau log(its kept columns), with the masked-negatives rule applied as in training."""
    import torch

    from terrapipe.train.losses import patch_loss_per_modality
    from terrapipe.train.roles import MaskValue

    out = []
    for b in range(mask.shape[0]):
        c = int((mask[b] == int(MaskValue.DECODER)).sum())
        if c == 0:
            continue
        t, m = target[b:b + 1], mask[b:b + 1]
        value = float(patch_loss_per_modality(loss, {key: torch.zeros_like(t)}, {key: t}, {key: m})[key])
        out.append((c, None if c > 1 and value == 0.0 else value))   # c > 1 scoring 0: no negative left, skipped
    return out


def main() -> None:
    import numpy as np
    import torch
    import yaml
    from _common import patch_losses

    from terrapipe import paths
    from terrapipe.data.store import TrainingStore
    from terrapipe.models.latent_mim import LatentMIM
    from terrapipe.train.batch import MISSING_VALUE, assemble, global_rows, step_shape
    from terrapipe.train.experiments import PretrainParams, resolve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="default_bandsets_via_tokenconfig_cross_random_masked_neg")
    parser.add_argument("--steps", type=int, default=10, help="training steps whose batches are measured")
    parser.add_argument("--curves", type=Path, help="default: models/pretrain/KEY/curves.csv")
    args = parser.parse_args()
    config = resolve(PretrainParams.model_validate(yaml.safe_load((REPO / "params.yaml").read_text())["pretrain"]),
                     args.experiment)
    curves = args.curves or REPO / paths.pretrain_dir(args.experiment) / "curves.csv"
    store = TrainingStore(REPO / paths.processed("sentinel"), REPO / paths.processed("era5"))
    arrays, train_rows = store.arrays, store.indices("train")
    input_spread(arrays, [k for k in config.token_modalities if k in store.modalities], MISSING_VALUE)

    loss = config.losses.patch
    months, chip = arrays["timestamps"].shape[1], arrays[config.mix.encode[0]].shape[1]
    torch.manual_seed(config.train.seed)
    model = LatentMIM(config, months).eval()
    per_modality: dict[str, list] = {}
    for step in range(args.steps):
        rows = global_rows(config, train_rows, step)
        batch = assemble(config, arrays, rows, step * config.train.global_batch + np.arange(len(rows)), step,
                         step_shape(config, step, months, chip))
        with torch.no_grad():
            targets = model.targets(batch)
        for view in batch.views:
            for key, target in targets.items():
                per_modality.setdefault(key, []).extend(
                    chance_per_sample(loss, key, view[key].flatten(1), target.flatten(1, -2)))
    print(f"\npatch discrimination ({args.experiment}, tau {loss.tau}; {args.steps} steps' batches at init; "
          f"reached: {curves.relative_to(REPO) if curves.is_relative_to(REPO) else curves})")
    print(f"{'modality':<12} {'decoded':>8} {'skipped':>8} {'chance':>7}   {'reached (first -> last 10 steps)':>32}"
          f"  {'last / chance':>13}")
    losses = patch_losses(curves) if curves.is_file() else {}
    for key, samples in per_modality.items():
        kept = [value for _, value in samples if value is not None]
        chance = sum(kept) / len(kept) if kept else math.nan
        first, last, ratio = losses.get(f"patch_disc/{key}", (math.nan, math.nan, None))
        got = "-" if math.isnan(first) else f"{first:.3f} -> {last:.3f}"
        ratio = math.nan if ratio is None else ratio
        print(f"{key:<12} {np.mean([s[0] for s in samples]):>8.1f} {1 - len(kept) / len(samples):>8.2f} "
              f"{chance:>7.3f}   {got:>32}  {ratio:>13.2f}")


if __name__ == "__main__":
    main()
