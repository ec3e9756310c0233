"""DVC stage evaluate@<experiment>: the pretrained encoder of models/pretrain/<experiment>/ on every downstream
task, beside the random-encoder, raw-pixel and majority baselines -> models/evaluate/<experiment>/.

    python stages/evaluate.py <experiment>

Writes metrics.json (per task: the metric, the encoder, each baseline, the gain over the random encoder),
confusion/<task>.csv (DVC confusion plots); seconds per task go to data/cache/timing/evaluate/ (not tracked). Embeddings are
cached in data/cache/embeddings, keyed by checkpoint hash, task data and split (terrapipe.evals.embeddings).
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe.stage import run_stage


def add_args(parser):
    parser.add_argument("experiment", help="a pretraining experiment that has a checkpoint (params.yaml pretrain)")


def main(args):
    from terrapipe import paths
    from terrapipe.evals.downstream import evaluate_params, run_evaluation

    settings = evaluate_params(args.params_obj)  # bad params fail before the encoder loads
    run_evaluation(args.params_obj, args.experiment, paths.pretrain_dir(args.experiment) / "checkpoint.pt",
                   paths.evaluate_dir(args.experiment), paths.EMBEDDING_CACHE,
                   {task: paths.task_dir(task) for task in settings.tasks})


if __name__ == "__main__":
    run_stage(main, __doc__, add_args)
