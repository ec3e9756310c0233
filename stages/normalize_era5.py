"""DVC stage normalize_era5: raw ERA5 files -> per-site monthly series [N, T, 6] with train-split stats."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage

RAW, OUT = paths.raw("era5"), paths.processed("era5")
SITE_SPLIT = paths.split_assignments("sites")


def main(args):
    from terrapipe.atomic import atomic_path
    from terrapipe.data.era5 import build_era5_dataset
    from terrapipe.study import load_study, read_split_assignments

    params = args.params_obj
    sites = load_study(args.inputs, params.study.sites_per_aoi).sites
    split_of = read_split_assignments(SITE_SPLIT)
    with atomic_path(OUT, directory=True) as tmp:
        build_era5_dataset(RAW, sites, split_of, params.sources.era5.variables, params.study.months,
                           params.normalize.std_multiplier, tmp)


if __name__ == "__main__":
    run_stage(main, __doc__)
