"""DVC stage pretrain@<experiment>: OlmoEarth-style LatentMIM pretraining of one named experiment.

    python stages/pretrain.py KEY                                   # one process (CPU or one GPU)
    torchrun --standalone --nproc_per_node 2 stages/pretrain.py KEY # DDP: the global batch split over ranks
    TERRAPIPE_NPROC_PER_NODE=2 python stages/pretrain.py KEY        # the same: it re-executes under torchrun
                                                                    # (how `dvc repro` trains on N GPUs)

An interrupted run resumes from models/pretrain/KEY/checkpoint.pt when its experiment config is unchanged.
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe.stage import run_stage


def add_args(parser):
    parser.add_argument("experiment", help="a key of params.yaml pretrain.experiments (terrapipe experiments list)")


def main(args):
    from terrapipe.train.experiments import pretrain_params
    from terrapipe.train.run import run_experiment

    run_experiment(pretrain_params(args.params_obj), args.experiment)


if __name__ == "__main__":
    from terrapipe.orchestration.torchrun import reexec_under_torchrun

    reexec_under_torchrun(__file__)  # TERRAPIPE_NPROC_PER_NODE > 1 (the Kubernetes pool's GPU count)
    run_stage(main, __doc__, add_args)
