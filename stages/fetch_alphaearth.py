"""DVC stage fetch_alphaearth: AlphaEarth points -> data/raw/alphaearth/ (metadata CSV + [N,64] tensor)."""
from terrapipe.stage import run_stage

OUT = "data/raw/alphaearth"


def main(args):
    from terrapipe.atomic import atomic_path
    from terrapipe.sources import fetch
    from terrapipe.study import load_study

    study = load_study(args.inputs, args.params_obj.study.sites_per_aoi)
    with atomic_path(OUT, directory=True) as tmp:
        fetch("alphaearth", args.params_obj, study, tmp)


if __name__ == "__main__":
    run_stage(main, __doc__)
