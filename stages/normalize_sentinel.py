"""DVC stage normalize_sentinel: raw chips -> memory-mapped training store with train-split stats."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage

RAW, OUT = paths.raw("sentinel"), paths.processed("sentinel")
SITE_SPLIT = paths.split_assignments("sites")


def main(args):
    from terrapipe.atomic import atomic_path
    from terrapipe.data.imagery import build_store
    from terrapipe.study import load_study, read_split_assignments

    params = args.params_obj
    sentinel = params.sources.sentinel
    sites = load_study(args.inputs, params.study.sites_per_aoi).sites
    split_of = read_split_assignments(SITE_SPLIT)
    with atomic_path(OUT, directory=True) as tmp:
        build_store(RAW, sites, split_of, sentinel.sensors, sentinel.s2_bands, sentinel.chip_size,
                    params.study.months, params.normalize.std_multiplier, tmp, params.compute)


if __name__ == "__main__":
    run_stage(main, __doc__)
