"""DVC stage split@DATASET: spatiotemporal train/test split of one point dataset -> data/processed/splits/DATASET/.

python stages/split.py {sites,deepearth,alphaearth}; see terrapipe.data.split_io for the outputs.
"""
from terrapipe.stage import run_stage

DATASETS = ("alphaearth", "deepearth", "sites")


def main(args) -> None:
    from terrapipe.data.split_io import write_split

    write_split(args.dataset, args.params_obj, args.inputs)


if __name__ == "__main__":
    run_stage(main, __doc__, extra_args=lambda parser: parser.add_argument(
        "dataset", choices=DATASETS, help="which point dataset to split"))
