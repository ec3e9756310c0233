"""The sample world's climate at the default study's real places: Köppen classes, distinct climates,
site-to-site variation inside AOIs and physical ranges (run with -s to see the figures)."""
from collections import Counter

import numpy as np
import pytest

from terrapipe.sources.koppen import classify, is_koppen_code
from terrapipe.sources.world import DAYS_PER_MONTH, World
from terrapipe.study import load_study, write_default_inputs

VARIABLES = ("t2m", "d2m", "sp", "u10", "v10", "tp")
NORMAL_YEARS = range(2017, 2025)
SITES_PER_AOI = 16


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    inputs = tmp_path_factory.mktemp("climate") / "inputs"
    write_default_inputs(inputs)
    return load_study(inputs, SITES_PER_AOI)


@pytest.fixture(scope="module")
def cells(study):
    """Each site's ERA5-Land cell (0.1 degree grid), as the sample ERA5 files deliver it."""
    return np.round(study.sites["latitude"].to_numpy(), 1), np.round(study.sites["longitude"].to_numpy(), 1)


@pytest.fixture(scope="module")
def normals(world, cells):
    """Monthly normals over 2017-2024 per site: temperature [deg C] and precipitation [mm/month]."""
    runs = [world.monthly_climate(*cells, year, np.arange(1, 13)) for year in NORMAL_YEARS]
    temp = np.mean([c["t2m"] for c in runs], axis=0) - 273.15
    precip = np.mean([c["tp"] for c in runs], axis=0) * 1000.0 * DAYS_PER_MONTH
    return temp, precip


@pytest.fixture(scope="module")
def series(world, study, cells):
    """The 12 x 6 ERA5 series of each site over its AOI's year, shape (sites, 12, 6)."""
    out = np.zeros((len(study.sites), 12, len(VARIABLES)))
    years = study.sites["start_date"].dt.year.to_numpy()
    for year in np.unique(years):
        rows = years == year
        c = world.monthly_climate(cells[0][rows], cells[1][rows], int(year), np.arange(1, 13))
        out[rows] = np.stack([c[v] for v in VARIABLES], axis=-1)
    return out


def aoi_index(study) -> np.ndarray:
    return study.sites["aoi_id"].map({a: i for i, a in enumerate(study.aois["aoi_id"])}).to_numpy()


def distinct_climates(series: np.ndarray, aoi: np.ndarray) -> tuple[int, float, np.ndarray, float]:
    """How many AOIs have a climate of their own among the others.

    Each of the six variables is standardized over all sites and months; a site is then a 72-D
    vector. The typical within-AOI spread is the median over AOIs of the RMS distance of its sites
    to their AOI mean. An AOI is distinct when its mean is farther than that spread from every other
    AOI's mean (a typical site lies nearer its own AOI's climate than any other). Also returned: the
    share of the site-to-site variance left within AOIs (1 - the share the AOI explains).
    """
    z = (series - series.mean((0, 1))) / series.std((0, 1))
    x = z.reshape(len(z), -1)
    means = np.stack([x[aoi == a].mean(0) for a in range(aoi.max() + 1)])
    spread = np.median([np.sqrt(((x[aoi == a] - means[a]) ** 2).sum(1).mean()) for a in range(len(means))])
    gaps = np.sqrt(((means[:, None] - means[None]) ** 2).sum(-1))
    np.fill_diagonal(gaps, np.inf)
    within = ((x - means[aoi]) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    return int((gaps.min(1) > spread).sum()), float(spread), gaps.min(1), float(within)


# -- the classifier on textbook stations (monthly normals, Jan..Dec) ----------------------------------
STATIONS = {
    "Singapore Af": ([26.5, 27.1, 27.5, 28.0, 28.3, 28.3, 27.9, 27.9, 27.6, 27.6, 27.0, 26.4],
                     [234, 115, 170, 154, 171, 130, 158, 176, 163, 159, 250, 274], "Af"),
    "Miami Am": ([20.1, 21.0, 22.6, 24.4, 26.7, 28.2, 28.9, 29.0, 28.3, 26.6, 23.7, 21.3],
                 [47, 54, 76, 79, 156, 247, 166, 213, 249, 158, 87, 56], "Am"),
    "Darwin Aw": ([28.5, 28.3, 28.4, 28.2, 26.9, 25.2, 24.8, 25.6, 27.6, 29.1, 29.4, 29.1],
                  [424, 374, 317, 100, 21, 2, 1, 5, 15, 70, 143, 251], "Aw"),
    "Cairo BWh": ([14.0, 15.2, 17.8, 21.5, 25.0, 27.4, 28.3, 28.3, 26.5, 23.9, 19.4, 15.6],
                  [5, 4, 3, 1, 0, 0, 0, 0, 0, 1, 3, 6], "BWh"),
    "Denver BSk": ([-1.0, 0.0, 4.0, 8.0, 13.0, 19.0, 22.5, 21.5, 16.5, 10.0, 3.5, -1.0],
                   [11, 15, 30, 45, 55, 45, 55, 45, 30, 25, 20, 15], "BSk"),
    "London Cfb": ([5.2, 5.3, 7.6, 9.9, 13.3, 16.5, 18.7, 18.5, 15.7, 12.0, 8.0, 5.5],
                   [55, 41, 42, 44, 49, 45, 45, 50, 49, 69, 59, 55], "Cfb"),
    "Rome Csa": ([7.5, 8.3, 10.6, 13.2, 17.2, 21.1, 24.0, 24.0, 20.9, 16.7, 11.8, 8.5],
                 [67, 73, 58, 81, 53, 34, 19, 37, 73, 113, 115, 81], "Csa"),
    "Hong Kong Cwa": ([16.3, 17.0, 19.2, 22.8, 26.0, 28.0, 28.8, 28.6, 27.7, 25.4, 21.8, 17.9],
                      [33, 45, 74, 138, 300, 457, 377, 432, 327, 101, 38, 27], "Cwa"),
    "Moscow Dfb": ([-6.5, -6.7, -1.0, 6.7, 13.2, 17.0, 19.2, 17.0, 11.3, 5.6, -1.2, -5.2],
                   [53, 44, 39, 37, 61, 78, 84, 82, 68, 71, 55, 52], "Dfb"),
    "Harbin Dwa": ([-17.6, -12.6, -3.3, 7.6, 15.4, 21.2, 23.6, 22.1, 15.6, 6.2, -4.5, -14.4],
                   [4, 6, 12, 23, 51, 94, 155, 115, 55, 24, 11, 7], "Dwa"),
    "Yakutsk Dfd": ([-38.6, -33.8, -20.1, -4.8, 7.5, 16.4, 19.5, 15.2, 6.1, -7.8, -27.0, -37.6],
                    [9, 8, 7, 11, 24, 37, 42, 39, 25, 18, 14, 10], "Dfd"),
    "Utqiagvik ET": ([-25.6, -27.3, -25.8, -17.9, -6.3, 1.6, 4.7, 3.4, -0.8, -8.9, -17.9, -23.2],
                     [4, 3, 3, 3, 3, 8, 25, 26, 17, 11, 6, 4], "ET"),
    "Vostok EF": ([-32.0, -44.3, -57.9, -64.9, -65.9, -65.6, -66.9, -67.6, -66.1, -57.3, -43.3, -32.4],
                  [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], "EF"),
    "Buenos Aires Cfa (south)": ([24.9, 23.6, 21.8, 17.9, 14.5, 11.7, 11.0, 12.8, 14.6, 17.9, 20.7, 23.2],
                                 [122, 123, 154, 107, 92, 58, 66, 70, 73, 122, 124, 118], "Cfa"),
}


def test_koppen_classifier_on_textbook_stations():
    for name, (temp, precip, code) in STATIONS.items():
        got = classify(temp, precip)
        print(f"{name:28s} -> {got}")
        assert got == code, name
    assert is_koppen_code("Dwd") and is_koppen_code("BWk") and not is_koppen_code("Cx") and not is_koppen_code("E")


# -- the sample world at the default study's real places ---------------------------------------------
def test_sample_climate_gives_the_real_koppen_group(study, normals):
    """Ground truth: the real places' Köppen groups (aois.csv `koppen`); >= 80% of AOIs must match
    by the majority class of their sites' 2017-2024 normals."""
    temp, precip = normals
    codes = np.array([classify(t, p) for t, p in zip(temp, precip)])
    aoi = aoi_index(study)
    group_hits = full_hits = 0
    print(f"\n{'aoi':24s} {'real':5s} {'sample':6s} {'t_cold':>6s} {'t_warm':>6s} {'mm/yr':>6s}  sites")
    for i, row in enumerate(study.aois.itertuples()):
        mine = codes[aoi == i]
        code = Counter(mine).most_common(1)[0][0]
        group = Counter(c[0] for c in mine).most_common(1)[0][0]
        group_hits += group == row.koppen[0]
        full_hits += code == row.koppen
        t, p = temp[aoi == i], precip[aoi == i]
        print(f"{row.aoi_id:24s} {row.koppen:5s} {code:6s} {t.min(1).mean():6.1f} {t.max(1).mean():6.1f} "
              f"{p.sum(1).mean():6.0f}  {dict(Counter(map(str, mine)))}")
    n = len(study.aois)
    print(f"Köppen group agrees for {group_hits}/{n} AOIs; full code for {full_hits}/{n}")
    assert n >= 24 and set(study.aois["koppen"].str[0]) == set("ABCDE")
    assert group_hits >= 0.8 * n


def test_distinct_climates_and_site_to_site_variation(study, series):
    """Ground truth: >= 24 distinct climates over the default AOIs x 16 sites, and sites inside an
    AOI differ (the AOI explains well under the ~96% of the site-to-site variance it used to)."""
    aoi = aoi_index(study)
    count, spread, nearest, within = distinct_climates(series, aoi)
    print(f"\ndistinct climates {count}/{aoi.max() + 1}; typical within-AOI spread {spread:.2f} (standardized 72-D); "
          f"nearest other AOI: min {nearest.min():.2f}, median {np.median(nearest):.2f}")
    z = (series - series.mean((0, 1))) / series.std((0, 1))
    for v, name in enumerate(VARIABLES):
        _, _, _, share = distinct_climates(z[..., v:v + 1], aoi)
        print(f"  within-AOI share of {name}: {share:.3f}")
    print(f"within-AOI share of the site-to-site variance {within:.3f} (AOI explains {1 - within:.3f})")
    assert count >= 24
    assert within >= 0.1


def test_physical_ranges_at_the_default_sites(world, study, series, cells):
    """Ground truth: reference/earth-observation-facts.md ranges, d2m <= t2m, pressure ~12%/km."""
    lo = series.min((0, 1))
    hi = series.max((0, 1))
    for v, name in enumerate(VARIABLES):
        print(f"{name}: {lo[v]:.4g} .. {hi[v]:.4g}")
    t2m, d2m, sp, u10, v10, tp = np.moveaxis(series, -1, 0)
    assert 228 < t2m.min() and t2m.max() < 318
    assert (d2m <= t2m).all() and 215 < d2m.min() and d2m.max() < 303
    assert 50_000 < sp.min() and sp.max() < 105_000
    assert np.abs(u10).max() < 12 and np.abs(v10).max() < 12
    assert tp.min() >= 0 and tp.max() < 0.04
    km = world.elevation(*cells) / 1000.0
    slope = np.polyfit(km, np.log(sp.mean(1) / 101325.0), 1)[0]
    lapse = np.polyfit(km, t2m.mean(1), 1)[0]
    print(f"pressure {100 * (np.exp(slope) - 1):.1f}% per km; temperature {lapse:.1f} K per km (across places)")
    assert -0.14 < slope < -0.11
    nakuru, munich = (world.elevation(*cells)[study.sites["aoi_id"].to_numpy() == a].mean()
                      for a in ("kenya-nakuru", "bavaria-munich"))
    print(f"mean elevation: Nakuru sites {nakuru:.0f} m (real ~1850), Munich sites {munich:.0f} m (real ~520)")
    assert 1500 < nakuru < 2200 and 400 < munich < 700


def test_climate_normals_keys_and_aridity(world):
    """Ground truth: deserts are arid (aridity < 0.5), rainforests humid; the keys others use exist."""
    n = world.climate_normals(np.array([24.1, -3.1, 48.1]), np.array([32.9, -60.0, 11.6]))
    print({k: np.round(v, 2).tolist() for k, v in n.items()})
    assert {"t_mean", "t_cold", "t_warm", "precip_mm", "precip_driest", "precip_wettest", "aridity"} <= set(n)
    assert n["aridity"][0] < 0.5 < 1.0 < n["aridity"][1] and n["aridity"][2] > 1.0
    assert (n["t_cold"] <= n["t_mean"]).all() and (n["t_mean"] <= n["t_warm"]).all()
