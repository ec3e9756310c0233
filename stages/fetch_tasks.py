"""DVC stage fetch_tasks@<task>: one downstream task data set -> data/raw/tasks/<task>/, in the on-disk layout
of the real benchmark it imitates (eurosat, so2sat: GEO-Bench; pastis: PASTIS; mados: MADOS).

    python stages/fetch_tasks.py eurosat

params.yaml tasks.<task>.source: sample (drawn from the sample world, away from the pretraining sites) or
local (tasks.<task>.path: a folder holding the real benchmark, checked against its layout and linked in).
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe.stage import run_stage


def add_args(parser):
    parser.add_argument("task", help="one of eurosat, so2sat, pastis, mados (params.yaml tasks)")


def main(args):
    from terrapipe import paths
    from terrapipe.atomic import atomic_path
    from terrapipe.data.tasks import fetch_task, tasks_params

    tasks_params(args.params_obj).task(args.task)  # an unknown task or bad params fail before any work
    with atomic_path(paths.task_dir(args.task), directory=True) as tmp:
        fetch_task(args.params_obj, args.inputs, args.task, tmp)


if __name__ == "__main__":
    run_stage(main, __doc__, add_args)
