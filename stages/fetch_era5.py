"""DVC stage fetch_era5: ERA5 monthly means for each AOI with selected sites and each year -> data/raw/era5/*.nc."""
from terrapipe.stage import run_stage

OUT = "data/raw/era5"


def main(args):
    from terrapipe.atomic import atomic_path
    from terrapipe.sources import fetch
    from terrapipe.study import load_study

    study = load_study(args.inputs, args.params_obj.study.sites_per_aoi)
    with atomic_path(OUT, directory=True) as tmp:
        fetch("era5", args.params_obj, study, tmp)


if __name__ == "__main__":
    run_stage(main, __doc__)
