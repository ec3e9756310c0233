"""DVC stage earth4d_alphaearth: train Earth4D -> AlphaEarth and score it on random, spatial and temporal
holdouts beside the mean-embedding and geodesic-kNN baselines.

Every option below also lives in params.yaml under earth4d (same name, underscores); an option given
here overrides params.yaml for this run. By default the inputs are normalize_alphaearth's
data/processed/alphaearth/ and split@alphaearth's assignments; --metadata with --embeddings trains on
DeepEarth-style files instead (cleaned by normalize.alphaearth's filters, split by split.alphaearth).
The output folder is replaced whole when the run succeeds; a failed run leaves the previous one.
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from pathlib import Path

from terrapipe import paths
from terrapipe.stage import run_stage

OPTIONS = ("epochs", "batch_size", "learning_rate", "train_split", "max_samples", "device", "seed", "skip_nan_test")


def add_args(parser):
    parser.add_argument("--metadata", type=Path, help="a metadata CSV (latitude, longitude, elevation_m, event_date) "
                        "instead of the processed points; needs --embeddings")
    parser.add_argument("--embeddings", type=Path, help="a torch [N, 64] float or int8 tensor (.pt), rows aligned "
                        "with --metadata")
    parser.add_argument("--epochs", type=int, help="training epochs (overrides earth4d.epochs)")
    parser.add_argument("--batch-size", type=int, help="rows per step (overrides earth4d.batch_size)")
    parser.add_argument("--learning-rate", type=float, help="predictor lr; the encoder gets lr * earth4d."
                        "encoder_lr_factor (overrides earth4d.learning_rate)")
    parser.add_argument("--train-split", type=float, help="share of the training-assigned rows trained on; the rest "
                        "is the random holdout (overrides earth4d.train_split)")
    parser.add_argument("--max-samples", type=int, help="a seeded subsample of all rows (overrides earth4d.max_samples)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides earth4d.device")
    parser.add_argument("--seed", type=int, help="every random draw of the run (overrides earth4d.seed)")
    parser.add_argument("--skip-nan-test", action="store_true", default=None,
                        help="skip the fresh model's NaN test over every row (overrides earth4d.skip_nan_test)")
    parser.add_argument("--output-dir", type=Path, default=paths.EARTH4D, help=f"default: {paths.EARTH4D}")


def main(args):
    from terrapipe.errors import ConfigError
    from terrapipe.train.alphaearth import earth4d_params, load_processed, load_user_files, run_experiment

    params = earth4d_params(args.params_obj, {name: getattr(args, name) for name in OPTIONS})
    if (args.metadata is None) != (args.embeddings is None):
        raise ConfigError("--metadata and --embeddings go together: give both files, or neither to use "
                          f"{paths.processed('alphaearth')}")
    if args.metadata is not None:
        data = load_user_files(args.metadata, args.embeddings, args.params_obj)
    else:
        data = load_processed()
    run_experiment(params, data, args.output_dir)


if __name__ == "__main__":
    run_stage(main, __doc__, add_args)
