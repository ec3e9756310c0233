"""DVC stage normalize_alphaearth: data/raw/alphaearth/ -> data/processed/alphaearth/ (DeepEarth's filters, every drop counted)."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage

RAW, OUT = paths.raw("alphaearth"), paths.processed("alphaearth")


def main(args):
    from terrapipe.atomic import atomic_path
    from terrapipe.data.alphaearth import clean_alphaearth

    with atomic_path(OUT, directory=True) as tmp:
        clean_alphaearth(RAW, tmp, args.params_obj.normalize.alphaearth)


if __name__ == "__main__":
    run_stage(main, __doc__)
