"""Figure for issue 2: generator and normalize stages at 1x and 10x the default size.

    python benchmarks/bench_scaling.py [--scale 10] [--stages fetch_sentinel normalize_sentinel ...]

Runs each stage script as its own process (so peak RSS is that stage's alone) on a throwaway copy of
the repository, once with the default params and once with the sizes multiplied by --scale (sites per
AOI, AlphaEarth points, DeepEarth observations). Targets: time grows at most linearly (time ratio <=
scale) and peak memory stays within 1.5x of the default run.
"""
from __future__ import annotations

import argparse

import yaml
from _common import repo_copy, report, run_measured

ORDER = ["fetch_era5", "fetch_sentinel", "fetch_alphaearth", "fetch_deepearth", "split_sites", "normalize_era5",
         "normalize_sentinel", "normalize_alphaearth", "normalize_deepearth"]


def _command(stage: str) -> list[str]:
    return ["python", "stages/split.py", "sites"] if stage == "split_sites" else ["python", f"stages/{stage}.py"]


def _enough_candidate_sites(repo, per_aoi: int) -> None:
    """The shipped study lists 50 candidate sites per AOI; a larger run writes a study with enough of them
    (same AOIs and species, so the scaled run really has per_aoi sites in each AOI)."""
    import pandas as pd

    from terrapipe.study import write_default_inputs

    inputs = repo / "data" / "inputs"
    if pd.read_csv(inputs / "sites.csv").groupby("aoi_id").size().min() < per_aoi:
        write_default_inputs(inputs, sites_per_aoi=per_aoi)
        print(f"   (wrote a study with {per_aoi} candidate sites per AOI)", flush=True)


def run_all(override: dict | None, stages: list[str]) -> dict[str, tuple[float, float]]:
    repo = repo_copy(override)
    run_measured(["dvc", "pull", "-q", "data.dvc"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    _enough_candidate_sites(repo, params["study"]["sites_per_aoi"])
    print(f"-- {repo}: sites_per_aoi={params['study']['sites_per_aoi']}, "
          f"alphaearth points={params['sources']['alphaearth']['sample']['n_points']}, "
          f"deepearth observations={params['sources']['deepearth']['sample']['n_observations']}", flush=True)
    results = {}
    for stage in ORDER:  # every stage runs (later ones need earlier outputs); only `stages` are reported
        results[stage] = run_measured(_command(stage), repo)
        print(f"   {stage:<22} {results[stage][0]:7.2f} s  peak {results[stage][1]:7.0f} MiB", flush=True)
    return {s: results[s] for s in stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--stages", nargs="*", default=ORDER)
    args = parser.parse_args()

    from terrapipe.config import Params
    defaults = Params()
    scaled = {"study": {"sites_per_aoi": defaults.study.sites_per_aoi * args.scale},
              "sources": {"alphaearth": {"sample": {"n_points": defaults.sources.alphaearth.sample.n_points * args.scale}},
                          "deepearth": {"sample": {"n_observations":
                                                   defaults.sources.deepearth.sample.n_observations * args.scale}}}}
    base = run_all(None, args.stages)
    big = run_all(scaled, args.stages)
    for stage in args.stages:
        (t1, m1), (t10, m10) = base[stage], big[stage]
        report(f"{stage}: time ratio {args.scale}x/1x ({t1:.2f} s -> {t10:.2f} s)", t10 / t1, "x", float(args.scale), "lower")
        report(f"{stage}: peak memory ratio {args.scale}x/1x ({m1:.0f} -> {m10:.0f} MiB)", m10 / m1, "x", 1.5, "lower")


if __name__ == "__main__":
    main()
