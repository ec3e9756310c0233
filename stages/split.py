"""DVC stage split@DATASET: spatiotemporal train/test split of one point dataset -> data/processed/splits/DATASET/.

python stages/split.py {sites,deepearth,alphaearth}; see terrapipe.data.split_io for the outputs.
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage


def main(args) -> None:
    from terrapipe.data.split_io import write_split

    write_split(args.dataset, args.params_obj, args.inputs)


if __name__ == "__main__":
    run_stage(main, __doc__, extra_args=lambda parser: parser.add_argument(
        "dataset", choices=paths.SPLIT_DATASETS, help="which point dataset to split"))
