"""DVC stage world_mosaic: a figure of sample chips beside their land-use labels (README, 'The sample world')."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage

STORE, OUT = paths.processed("sentinel"), paths.FIGURES


def main(args):
    from terrapipe.atomic import atomic_path
    from terrapipe.report.world_mosaic import write_mosaic

    with atomic_path(OUT, directory=True) as tmp:
        write_mosaic(STORE, tmp / "sample_world.png")


if __name__ == "__main__":
    run_stage(main, __doc__)
