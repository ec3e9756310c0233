"""DVC stage normalize_era5: raw ERA5 files -> per-site monthly series [N, T, 6] with train-split stats."""
from pathlib import Path

from terrapipe.stage import run_stage

RAW = Path("data/raw/era5")
SITE_SPLIT = Path("data/processed/splits/sites/assignments.parquet")
OUT = Path("data/processed/era5")


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
