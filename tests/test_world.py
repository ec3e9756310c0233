"""The sample world's ground truth: the physical relations later experiments are meant to recover."""
import numpy as np
import pytest

from terrapipe.sources import surface
from terrapipe.sources.landscape import CLASSES, C, land_use, worldcover
from terrapipe.sources.world import WORLDCOVER, World


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


def test_same_seed_same_planet():
    lat, lon = np.array([10.0, -33.3]), np.array([20.0, 151.2])
    assert np.array_equal(World(5).elevation(lat, lon), World(5).elevation(lat, lon))
    assert not np.array_equal(World(5).elevation(lat, lon), World(6).elevation(lat, lon))


def test_climate_follows_latitude_season_and_altitude(world):
    months = np.arange(1, 13)
    lat = np.linspace(-60, 70, 400)
    lon = np.random.default_rng(0).uniform(-180, 180, 400)
    c = world.monthly_climate(lat, lon, 2024, months)
    annual = c["t2m"].mean(1)
    tropics, poles = annual[np.abs(lat) < 15].mean(), annual[np.abs(lat) > 55].mean()
    assert tropics - poles > 20                                    # K, equator to high latitudes
    north = lat > 30
    assert (c["t2m"][north][:, 6] > c["t2m"][north][:, 0]).mean() > 0.95   # July warmer than January in the north
    assert (c["d2m"] <= c["t2m"]).all()
    elevation = world.elevation(lat, lon)
    ratio = c["sp"].mean(1) / 101325.0
    km = elevation / 1000.0
    slope = np.polyfit(km, np.log(ratio), 1)[0]
    assert -0.14 < slope < -0.11                                   # about 12% less pressure per km
    assert (c["tp"] >= 0).all() and c["tp"].max() < 0.05           # m/day
    assert 225 < c["t2m"].min() and c["t2m"].max() < 320              # Yakutian January: -46 C, as at Verkhoyansk


def test_land_cover_follows_climate(world):
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(-55, 70, 20000), rng.uniform(-180, 180, 20000)
    normals = world.climate_normals(lat, lon)
    cover = world.land_cover(lat, lon)
    arid = normals["precip_mm"] < 0.35 * np.maximum(20 * normals["t_mean"] + 140, 100)
    dry_share = np.isin(cover[arid & (normals["t_mean"] > 0)], [WORLDCOVER["bare"], WORLDCOVER["shrub"]]).mean()
    humid_warm = (normals["precip_mm"] > 2 * (20 * normals["t_mean"] + 140)) & (normals["t_mean"] > 15)
    green_share = np.isin(cover[humid_warm], [WORLDCOVER[k] for k in ("tree", "crop", "grass")]).mean()
    cold = normals["t_warm"] < 8
    tundra_share = np.isin(cover[cold], [WORLDCOVER[k] for k in ("moss", "snow", "bare", "grass", "water")]).mean()
    print(f"\narid -> bare/shrub {dry_share:.2f}; humid warm -> tree/crop/grass {green_share:.2f}; "
          f"cold summers -> tundra/ice {tundra_share:.2f}")
    assert dry_share > 0.6 and green_share > 0.7 and tundra_share > 0.8
    assert set(np.unique(cover)) <= set(WORLDCOVER.values())


def test_reflectance_and_backscatter_follow_land_use_and_greenness():
    rng = np.random.default_rng(2)
    codes = np.array([[C["broadleaf_forest"], C["bare_soil"], C["lake"], C["maize"]]])
    green = np.ones((1,) + codes.shape)
    flat = np.ones(codes.shape)
    refl = surface.reflectance(codes, green, flat * 0.5, flat, np.array([7]), np.zeros(1), rng)[0]  # (10, 1, 4)
    band = {b: refl[i] for i, b in enumerate(surface.REFLECTANCE_BANDS)}
    ndvi = (band["B08"] - band["B04"]) / (band["B08"] + band["B04"])
    assert ndvi[0, 0] > 0.7 and ndvi[0, 3] > 0.7 and ndvi[0, 1] < 0.3 and ndvi[0, 2] < 0
    dry = surface.reflectance(codes, np.zeros_like(green), flat * 0.5, flat, np.array([1]), np.zeros(1), rng)[0]
    assert dry[surface.REFLECTANCE_BANDS.index("B08"), 0, 3] < band["B08"][0, 3]   # crops brown out off-season
    sar = surface.backscatter(np.repeat(codes, 200, axis=0), np.ones((1, 200, 4)), np.zeros((200, 4)),
                              np.array([5.0]), rng)[0]                              # (2, 200, 4)
    vv, vh = sar[0].mean(axis=0), sar[1].mean(axis=0)
    assert vv[2] < -15 and vv[0] > -10                             # calm water dark, forest bright
    assert (vh < vv).all()


def test_pairs_differ_only_beyond_the_10m_bands():
    """Seed 001's ingredient: grass/shrub, broadleaf/conifer, maize/soybean share B02-B04, B08."""
    ten = [surface.REFLECTANCE_BANDS.index(b) for b in ("B02", "B03", "B04", "B08")]
    rest = [i for i in range(len(surface.REFLECTANCE_BANDS)) if i not in ten]
    for a, b in (("grassland", "shrubland"), ("broadleaf_forest", "conifer_forest"), ("maize", "soybean"),
                 ("winter_wheat", "winter_barley")):
        ga, gb = surface.GREEN[C[a]], surface.GREEN[C[b]]
        assert np.abs(ga[ten] - gb[ten]).max() <= 0.006, (a, b)
        assert np.abs(ga[rest] - gb[rest]).max() >= 0.03, (a, b)


def test_greenness_follows_the_growing_season(world):
    climate = world.monthly_climate([48.0], [11.5], 2024, np.arange(1, 13))
    potential = surface.growing_potential(climate["t2m"][0], climate["tp"][0])
    codes = np.array([C["grassland"], C["conifer_forest"], C["bare_soil"], C["winter_wheat"], C["maize"]])
    g = surface.greenness(codes, np.arange(1, 13), potential, np.zeros(5), t_cold_c=-2.0)
    assert g[6, 0] > g[0, 0] + 0.3                                  # grass greens up in summer
    assert g[:, 1].min() >= 0.75 and (g[:, 2] == 0).all()           # evergreen floor; bare never green
    assert np.argmax(g[:, 3]) < np.argmax(g[:, 4])                  # winter wheat peaks before maize


def test_land_use_patterns_and_change(world):
    """Fields have margins, roads and rivers are thin, towns grow and forests are cleared over the years."""
    rng = np.random.default_rng(4)
    lat, lon = rng.uniform(-40, 65, 30000), rng.uniform(-120, 140, 30000)
    early, late = land_use(world, lat, lon, 2017), land_use(world, lat, lon, 2024)
    built = [c.code for c in CLASSES if c.group == "built"]
    assert np.isin(late, built).mean() > np.isin(early, built).mean()
    forest = [C["broadleaf_forest"], C["conifer_forest"]]
    assert np.isin(late, forest).mean() < np.isin(early, forest).mean()
    crops = [c.code for c in CLASSES if c.group == "crop"]
    rotated = np.isin(early, crops) & np.isin(late, crops) & (early != late)
    changed = (worldcover(early) != worldcover(late)).mean()
    print(f"\nWorldCover changed 2017 -> 2024 at {changed:.1%} of points; crops rotated at {rotated.mean():.1%}")
    assert 0.01 < changed < 0.2 and rotated.mean() > 0.02
    assert set(np.unique(late)) <= {c.code for c in CLASSES}
