"""The sample world's ground truth, stated as numbers: what makes each seed's experiment answerable.

Chips are rendered in memory by the same code the sample writer uses (terrapipe.sources.chips) for the
default study's AOIs (4 sites each); the first site of every AOI is held out. Each test prints its figures.
"""
import numpy as np
import pytest

from terrapipe.modalities import S2
from terrapipe.sources import chips
from terrapipe.sources.landscape import BY_CODE
from terrapipe.sources.world import World

CHIP = 32
PIXELS_PER_CHIP = 160
TEN_M = ("B02", "B03", "B04", "B08")


@pytest.fixture(scope="module")
def rendered(study):
    """S2 reflectance (N, T, 12, H, W) in registry band order, land use (N, H, W), test mask (N,)."""
    from terrapipe.grid import site_grid
    from terrapipe.study import site_months

    world = World(0)
    s2, land_use, lst, t2m = [], [], [], []
    for site in study.sites.itertuples():
        months = site_months(site.start_date, 12)
        surface = chips.site_surface(world, site_grid(site.latitude, site.longitude, CHIP), site.latitude,
                                     site.longitude, months)
        rng = np.random.default_rng(0)
        series = []
        for t in range(len(months)):
            refl = chips.s2_reflectance(surface, t, rng)
            series.append(np.stack([chips.native_resolution(refl[b.name], b.native_m) for b in S2.bands]))
            thermal = chips.landsat_physical(surface, t, rng)["B10"]
            lst.append(chips.native_resolution(thermal, 100).mean())
        t2m.append(surface.climate["t2m"])
        s2.append(np.stack(series))
        land_use.append(surface.land_use)
    site_in_aoi = study.sites.groupby("aoi_id", sort=False).cumcount().to_numpy()
    return {"s2": np.stack(s2), "land_use": np.stack(land_use), "test": site_in_aoi == 0, "site_in_aoi": site_in_aoi,
            "lst": np.array(lst), "t2m": np.concatenate(t2m)}


def _pixels(data, bands, mask, seed, degrade_to_m=None):
    """Per-pixel features: the 12 monthly values of each band (T * C), with the pixel's land-use label."""
    rng = np.random.default_rng(seed)
    index = [S2.band_order.index(b) for b in bands]
    features, labels = [], []
    for i in np.flatnonzero(mask):
        x = data["s2"][i][:, index]                                       # (T, C, H, W)
        if degrade_to_m:
            x = chips.native_resolution(x, degrade_to_m)
        flat = x.reshape(-1, CHIP * CHIP).T                               # (H * W, T * C)
        pick = rng.choice(CHIP * CHIP, PIXELS_PER_CHIP, replace=False)
        features.append(flat[pick])
        labels.append(data["land_use"][i].ravel()[pick])
    return np.concatenate(features), np.concatenate(labels)


def _pixel_accuracy(data, bands, degrade_to_m=None):
    from sklearn.ensemble import ExtraTreesClassifier

    x_train, y_train = _pixels(data, bands, ~data["test"], 0, degrade_to_m)
    x_test, y_test = _pixels(data, bands, data["test"], 1, degrade_to_m)
    model = ExtraTreesClassifier(n_estimators=60, min_samples_leaf=2, n_jobs=2, random_state=0).fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean())


def test_red_edge_swir_and_10m_detail_carry_information(rendered):
    """Seed 001's question needs it: the 20/60 m bands add classes, the 10 m grid adds structure."""
    ten = _pixel_accuracy(rendered, TEN_M)
    full = _pixel_accuracy(rendered, S2.band_order)
    coarse = _pixel_accuracy(rendered, S2.band_order, degrade_to_m=20)
    print(f"\nper-pixel land use, held-out sites: 10 m bands {ten:.3f}, all 12 bands {full:.3f}, "
          f"12 bands at 20 m {coarse:.3f}")
    assert full - ten >= 0.08
    assert coarse < full


def test_no_single_band_month_gives_the_answer(rendered):
    """Land use is not a function of one band in one month (a depth-3 tree stays at or below 0.65)."""
    from sklearn.tree import DecisionTreeClassifier

    x_train, y_train = _pixels(rendered, S2.band_order, ~rendered["test"], 0)
    x_test, y_test = _pixels(rendered, S2.band_order, rendered["test"], 1)
    scores = [float((DecisionTreeClassifier(max_depth=3, random_state=0).fit(x_train[:, [j]], y_train)
                     .predict(x_test[:, [j]]) == y_test).mean()) for j in range(x_train.shape[1])]
    best = int(np.argmax(scores))
    month, band = divmod(best, len(S2.band_order))
    print(f"\nbest depth-3 tree on one band in one month: {scores[best]:.3f} ({S2.band_order[band]}, month {month + 1})")
    assert max(scores) <= 0.65


def test_chip_means_leave_headroom(rendered):
    """A linear probe on per-band chip means (the raw-feature baseline) stays at or below 0.80 on the
    chips' majority EuroSAT-like class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def majority(codes):
        names = [BY_CODE[int(c)].eurosat or BY_CODE[int(c)].name for c in codes.ravel()]
        values, counts = np.unique(names, return_counts=True)
        return values[np.argmax(counts)]

    labels = np.array([majority(c) for c in rendered["land_use"]])
    means = rendered["s2"].mean(axis=(1, 3, 4))                               # (N, 12)
    fold = rendered["site_in_aoi"]                                            # 4 folds: one site of each AOI out
    accuracies, baselines = [], []
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        scaler = StandardScaler().fit(means[train])
        probe = LogisticRegression(max_iter=3000).fit(scaler.transform(means[train]), labels[train])
        accuracies.append(float((probe.predict(scaler.transform(means[test])) == labels[test]).mean()))
        values, counts = np.unique(labels[train], return_counts=True)
        baselines.append(float((labels[test] == values[np.argmax(counts)]).mean()))
    accuracy = float(np.mean(accuracies))
    print(f"\nlinear probe on chip means, 4-fold over sites: {accuracy:.3f} +- {np.std(accuracies):.3f} "
          f"(majority class {np.mean(baselines):.3f}, {len(np.unique(labels))} classes, {len(labels)} chips)")
    assert accuracy <= 0.80


def test_landsat_thermal_is_surface_temperature_not_air_temperature(rendered):
    """Landsat B10 chip means explain t2m with R^2 below 0.9 (surface and weather effects of their own)."""
    r2 = float(np.corrcoef(rendered["lst"], rendered["t2m"])[0, 1] ** 2)
    residual = float(np.std(rendered["lst"] - rendered["t2m"]))
    print(f"\nLandsat B10 chip mean vs site t2m: R^2 {r2:.3f}, std of LST - t2m {residual:.2f} K")
    assert r2 < 0.9
    assert 200 < rendered["lst"].min() and rendered["lst"].max() < 340


def test_dominant_cover_is_plausible_for_the_place():
    """Each default AOI's sample WorldCover against the real place's dominant class (aois.csv dominant_cover):
    the real class among the two most common sample classes for >= 75% of AOIs, and exactly right for
    boreal Finland (tree), Iowa (crop) and Sonora (shrub or bare)."""
    import tempfile

    from terrapipe.grid import site_grid
    from terrapipe.sources.landscape import land_use, worldcover
    from terrapipe.sources.world import WORLDCOVER
    from terrapipe.study import load_study, write_default_inputs

    inputs = tempfile.mkdtemp() + "/inputs"
    write_default_inputs(inputs)
    study = load_study(inputs, 12)
    world, name = World(0), {code: n for n, code in WORLDCOVER.items()}
    top2_hits, dominant = 0, {}
    for aoi in study.aois.itertuples():
        codes = []
        for site in study.sites[study.sites["aoi_id"] == aoi.aoi_id].itertuples():
            lat, lon = site_grid(site.latitude, site.longitude, 16).pixel_lonlat()
            codes.append(worldcover(land_use(world, lat, lon, site.start_date.year)).ravel())
        values, counts = np.unique(np.concatenate(codes), return_counts=True)
        ranked = [name[int(v)] for v in values[np.argsort(-counts, kind="stable")]]
        dominant[aoi.aoi_id] = ranked[0]
        top2_hits += aoi.dominant_cover in ranked[:2]
        print(f"\n{aoi.aoi_id:24s} {aoi.koppen:4s} real {aoi.dominant_cover:6s} sample {ranked[:3]}", end="")
    share = top2_hits / len(study.aois)
    print(f"\nreal dominant cover among the sample's top two: {top2_hits}/{len(study.aois)} ({share:.0%})")
    assert share >= 0.75
    assert dominant["finland-tampere"] == "tree" and dominant["iowa-ames"] == "crop"
    assert dominant["sonora-hermosillo"] in ("shrub", "bare")
