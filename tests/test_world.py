"""The sample world's ground truth: the physical relations later experiments are meant to recover."""
import numpy as np
import pytest

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
    cover = world.land_cover(lat, lon, normals)
    arid = normals["precip_mm"] < 0.5 * np.maximum(20 * normals["t_mean"] + 140, 100)
    assert (cover[arid & (normals["t_mean"] > 0)] == WORLDCOVER["bare"]).mean() > 0.5
    humid_warm = (normals["precip_mm"] > 2 * (20 * normals["t_mean"] + 140)) & (normals["t_mean"] > 15)
    assert np.isin(cover[humid_warm], [WORLDCOVER["tree"], WORLDCOVER["crop"], WORLDCOVER["grass"]]).mean() > 0.7
    assert set(np.unique(cover)) <= set(WORLDCOVER.values())


def test_reflectance_and_backscatter_follow_cover_and_greenness():
    rng = np.random.default_rng(2)
    cover = np.array([[WORLDCOVER["tree"], WORLDCOVER["bare"], WORLDCOVER["water"], WORLDCOVER["crop"]]])
    green = np.ones((1,) + cover.shape)
    refl = World.s2_reflectance(cover, green, rng)
    ndvi = (refl["B08"] - refl["B04"]) / (refl["B08"] + refl["B04"])
    assert ndvi[0, 0, 0] > 0.7 and ndvi[0, 0, 3] > 0.7 and ndvi[0, 0, 1] < 0.3 and ndvi[0, 0, 2] < 0
    dry = World.s2_reflectance(cover, np.zeros_like(green), rng)
    assert dry["B08"][0, 0, 3] < refl["B08"][0, 0, 3]              # crops brown out off-season
    sar = World.s1_backscatter(np.repeat(cover, 200, axis=0), np.ones((1, 200, 4)), rng)
    vv = sar["vv"][0].mean(axis=0)
    assert vv[2] < -15 and vv[0] > -10                             # calm water dark, forest bright
    assert (sar["vh"][0].mean(axis=0) < vv).all()


def test_greenness_follows_the_growing_season(world):
    climate = world.monthly_climate([48.0], [11.5], 2024, np.arange(1, 13))
    site = {k: v[0] for k, v in climate.items()}
    cover = np.array([WORLDCOVER["grass"], WORLDCOVER["tree"], WORLDCOVER["bare"]])
    g = world.greenness(cover, site, np.zeros(3, int))
    assert g[6, 0] > g[0, 0] + 0.3                                  # grass greens up in summer
    assert g[:, 1].min() >= 0.55 and (g[:, 2] == 0).all()           # evergreen floor; bare never green


def test_alphaearth_embeddings_are_smooth_unit_vectors_shaped_by_cover(world):
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(-50, 60, 500), rng.uniform(-180, 180, 500)
    year = np.full(500, 2020)
    grass = np.full(500, WORLDCOVER["grass"])
    base = world.alphaearth_embedding(lat, lon, grass, year)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-6)
    near = world.alphaearth_embedding(lat + 0.001, lon, grass, year)      # ~100 m away
    far = base[rng.permutation(500)]
    assert (base * near).sum(1).mean() > 0.95 > (base * far).sum(1).mean()
    trees = world.alphaearth_embedding(lat, lon, np.full(500, WORLDCOVER["tree"]), year)
    assert (base * trees).sum(1).mean() < 0.95                            # cover moves the embedding
