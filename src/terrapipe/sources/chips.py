"""One site's chips in memory: land use, maps and every acquisition of S2, S1 and Landsat in physical units.

Pure functions of (world, site grid, months, random stream): the sample writer (sample_imagery.py) turns
them into GeoTIFFs, and the ground-truth tests read them directly. Bands are rendered on the 10 m grid
and averaged over their native resolution (20 m, 60 m, 30 m, 100 m cells nested in the 60 m-aligned
grid), which is what resampling L2A's native bands to 10 m gives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terrapipe.grid import PIXEL_M, SiteGrid
from terrapipe.sources import streams as det
from terrapipe.sources import surface as sf
from terrapipe.sources.landscape import area_fraction, land_use, worldcover
from terrapipe.sources.world import World, lonlat_to_xyz

# Landsat reflective bands seen through the S2-like surface reflectance of the same place.
LANDSAT_FROM_S2 = {"B1": "B01", "B2": "B02", "B3": "B03", "B4": "B04", "B5": "B8A", "B6": "B11", "B7": "B12"}


def native_resolution(field: np.ndarray, native_m: float) -> np.ndarray:
    """Average (..., H, W) over native-resolution cells and spread back onto the 10 m grid."""
    factor = max(1, int(round(native_m / PIXEL_M)))
    if factor == 1:
        return field
    h, w = field.shape[-2:]
    ph, pw = -h % factor, -w % factor
    padded = np.pad(field, [(0, 0)] * (field.ndim - 2) + [(0, ph), (0, pw)], mode="edge")
    blocks = padded.reshape(padded.shape[:-2] + (padded.shape[-2] // factor, factor, padded.shape[-1] // factor, factor))
    coarse = blocks.mean(axis=(-3, -1))
    return np.repeat(np.repeat(coarse, factor, axis=-2), factor, axis=-1)[..., :h, :w]


@dataclass(frozen=True)
class SiteSurface:
    """Everything about one site's ground that its sensors share, over its months (T)."""
    land_use: np.ndarray      # uint8 (H, W), land-use class codes of the first month's year
    elevation: np.ndarray     # float (H, W) metres
    months: np.ndarray        # int (T,) month of year
    climate: dict             # ERA5 variable -> (T,) monthly means at the site
    green: np.ndarray         # (T, H, W) greenness in [0, 1]
    texture: np.ndarray       # (H, W) in [0, 1]: roofs, vine rows, crowns at 10 m
    brightness: np.ndarray    # (H, W) per-patch brightness factor
    moisture_db: np.ndarray   # (H, W) soil-moisture brightening of backscatter
    xyz: np.ndarray           # (H, W, 3) Earth-centred pixel centres (m)
    latitude: float
    dryness: float            # 0 humid .. 1 hyper-arid

    @property
    def worldcover(self) -> np.ndarray:
        return worldcover(self.land_use)


def site_surface(world: World, grid: SiteGrid, site_lat: float, site_lon: float, months) -> SiteSurface:
    """The site's land use and phenology for ``months`` (pandas Timestamps, possibly spanning two years)."""
    lat, lon = grid.pixel_lonlat()
    xyz = lonlat_to_xyz(lat, lon)
    elevation = world.elevation(lat, lon)
    codes = land_use(world, lat, lon, months[0].year, elevation)
    climate: dict[str, list] = {}
    for year in sorted({m.year for m in months}):  # the site's climate for exactly its months
        in_year = [m.month for m in months if m.year == year]
        for k, v in world.monthly_climate([site_lat], [site_lon], year, in_year).items():
            climate.setdefault(k, []).append(v[0])
    climate = {k: np.concatenate(v) for k, v in climate.items()}
    calendar = world.monthly_climate([site_lat], [site_lon], months[0].year, np.arange(1, 13))
    potential = sf.growing_potential(calendar["t2m"][0], calendar["tp"][0])
    normals = world.climate_normals([site_lat], [site_lon], months[0].year)
    humidity = float(normals["precip_mm"][0] / max(20.0 * normals["t_mean"][0] + 140.0, 100.0))
    month_of_year = np.array([m.month for m in months])
    phase = 0.6 * world.noise("crop-phase", xyz, [1.5e3])
    green = sf.greenness(codes, month_of_year, potential, phase, float(normals["t_cold"][0]))
    return SiteSurface(
        land_use=codes, elevation=elevation, months=month_of_year, climate=climate, green=green,
        texture=area_fraction(world.noise("texture", xyz, [42.0, 27.0], [1.0, 0.7])),
        brightness=1.0 + 0.08 * world.noise("brightness", xyz, [400.0, 120.0]),
        moisture_db=1.5 * world.noise("soil-moisture", xyz, [900.0, 250.0]),
        xyz=xyz, latitude=float(site_lat), dryness=float(np.clip(1.2 - humidity, 0.0, 1.0)))


def s2_reflectance(s: SiteSurface, t: int, rng: np.random.Generator) -> dict:
    """L2A surface reflectance of acquisition ``t``: band name -> (H, W), each at its native resolution.

    The scene's aerosol load (lognormal, higher where dry or built, a gentle gradient in space) goes into B01; the
    month's water vapour (from d2m, varying by scene) into B09.
    """
    snow = sf.snow_fraction(s.climate["t2m"][t:t + 1])
    refl = sf.reflectance(s.land_use, s.green[t:t + 1], s.texture, s.brightness, s.months[t:t + 1], snow, rng)
    built = np.isin(s.land_use, sf.BUILT_CODES).mean()
    aod = det.lognormal(rng, det.log(0.08 + 0.15 * s.dryness + 0.2 * built), 0.45)
    size = s.land_use.shape[0]
    gradient = rng.normal(0.0, 0.15, 2) / size                           # aerosol varies over kilometres:
    rows, cols = np.mgrid[0:size, 0:size] - size / 2.0                    # a gentle slope across a chip
    plume = aod * (1.0 + gradient[0] * rows + gradient[1] * cols)
    vapour = sf.precipitable_water_cm(s.climate["d2m"][t:t + 1]) * det.lognormal(rng, 0.0, 0.15)
    bands = dict(zip(sf.REFLECTANCE_BANDS, refl.swapaxes(0, 1)))            # band -> (1, H, W)
    bands.update(sf.atmosphere_bands(refl, plume[None], vapour))
    return {name: value[0] for name, value in bands.items()}


def s1_sigma0(s: SiteSurface, t: int, rng: np.random.Generator) -> np.ndarray:
    """Sentinel-1 sigma0 (2, H, W) in dB (VV, VH) of acquisition ``t``."""
    wind = np.sqrt(s.climate["u10"][t:t + 1] ** 2 + s.climate["v10"][t:t + 1] ** 2) + rng.gamma(2.0, 1.5, 1)
    rain = np.clip(s.climate["tp"][t] * 1000.0 - 1.5, -1.0, 2.0)
    return sf.backscatter(s.land_use, s.green[t:t + 1], s.moisture_db + rain, wind, rng)[0]


def landsat_physical(s: SiteSurface, t: int, rng: np.random.Generator) -> dict:
    """Landsat C2 L2 of acquisition ``t`` in physical units: reflectance (B1-B9) and surface temperature K
    (B10, B11), band name -> (H, W) before native-resolution averaging."""
    refl = s2_reflectance(s, t, rng)
    layers = {ls: refl[s2] for ls, s2 in LANDSAT_FROM_S2.items()}
    layers["B8"] = (0.3 * refl["B02"] + 0.4 * refl["B03"] + 0.3 * refl["B04"])
    layers["B9"] = 0.004 * det.lognormal(rng, 0.0, 0.3, s.land_use.shape)            # cirrus band: near-black
    weather = rng.normal(0.0, 4.5, 1)                                        # the overpass day vs the month
    sun = sf.solar_load(s.latitude, s.months[t:t + 1])
    lst = sf.surface_temperature(s.land_use, s.green[t:t + 1], s.climate["t2m"][t:t + 1], weather, sun,
                                 s.dryness, rng)[0]
    vapour = float(sf.precipitable_water_cm(s.climate["d2m"][t]))
    layers["B10"], layers["B11"] = lst, lst - (0.4 + 0.25 * vapour)          # split window: B11 sees more vapour
    return layers
