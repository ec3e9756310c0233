"""DVC stage normalize_deepearth: data/raw/deepearth/ -> data/processed/deepearth/ (tidy tables + aligned embedding matrices)."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage

RAW, OUT = paths.raw("deepearth"), paths.processed("deepearth")


def main(args):
    from terrapipe.atomic import atomic_path
    from terrapipe.data.deepearth import tidy_deepearth

    with atomic_path(OUT, directory=True) as tmp:
        tidy_deepearth(RAW, tmp)


if __name__ == "__main__":
    run_stage(main, __doc__)
