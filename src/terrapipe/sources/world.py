"""The sample world: a deterministic planet whose every field is a smooth function of place and time.

All fields are sums of random plane waves over Earth-centred coordinates (metres), so any two
queries of the same place (an ERA5 grid cell, a 10 m pixel, an AlphaEarth point) agree, at any
scale and without seams. The causal chain is the one experiments should be able to recover:

    terrain + latitude + a prior of real climate regions -> monthly climate (ERA5 variables, real units)
    climate normals + local noise + year -> land use -> WorldCover      (landscape.py)
    climate of the month + land use -> greenness -> reflectance, backscatter, surface temperature
                                                                        (surface.py, chips.py)
    place + land use of the year -> AlphaEarth-like 64-D unit embedding (sample_alphaearth.py)

Transcendental functions come from terrapipe.sources.streams (the same bits on every CPU).

Typical values follow reference/earth-observation-facts.md.
"""
from __future__ import annotations

import numpy as np

from terrapipe.sources import koppen
from terrapipe.sources import streams as det
from terrapipe.sources.streams import matmul

EARTH_RADIUS_M = 6_371_000.0
WORLDCOVER = {"tree": 10, "shrub": 20, "grass": 30, "crop": 40, "built": 50, "bare": 60,
              "snow": 70, "water": 80, "wetland": 90, "moss": 100}
COVER_CODES = np.array(sorted(WORLDCOVER.values()))

def lonlat_to_xyz(lat, lon) -> np.ndarray:
    """Points on the sphere in metres, shape (..., 3): the coordinates every noise field is a function of."""
    lat_r, lon_r = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
    cos_lat = det.cos(lat_r)
    return EARTH_RADIUS_M * np.stack([cos_lat * det.cos(lon_r), cos_lat * det.sin(lon_r), det.sin(lat_r)], axis=-1)


# -- climate prior -----------------------------------------------------------------------------------
LAPSE_K_PER_M = 0.0065      # standard-atmosphere temperature lapse rate
SCALE_HEIGHT_M = 8000.0     # surface pressure falls by 1 - exp(-1/8) = 11.8% per km
DAYS_PER_MONTH = 30.44

# The noise planet knows no geography, so real climate regions are laid over it: a coarse prior of
# well-known deserts, rainforests, monsoon lands, Mediterranean coasts, continental interiors, boreal
# and polar areas and highlands. Each is a disc (centre, radius) whose offsets fade smoothly to zero
# at its edge, averaged where discs overlap. Offsets: dt [K] to the annual mean beyond the zonal
# sea-level mean and the lapse rate; amp [K] to the half yearly range; wet: log factor on yearly rain;
# rain_season: + rain in summer (monsoon), - rain in winter (Mediterranean); elev: typical height [m]
# (nan: keep the noise terrain). Values are rounded from station normals of the places named.
_REGION_FIELDS = ("lat", "lon", "radius_km", "dt", "amp", "wet", "rain_season", "elev")
CLIMATE_REGIONS = {
    # humid tropics and monsoon lands
    "Amazon basin (Manaus)":                  (-3.0, -61.0, 1500, -0.5, -0.5, 0.35, 0.0, 60),
    "Congo basin (Kisangani)":                (0.5, 24.0, 1100, 1.0, -0.5, -0.3, -0.3, 430),
    "Malabar coast and Western Ghats":        (10.5, 76.3, 350, 1.0, -0.5, 1.0, 1.4, 150),
    "Indian monsoon, Deccan (Nagpur)":        (21.0, 79.0, 900, 2.0, 1.5, 1.4, 1.3, 320),
    "Indochina monsoon (Khon Kaen)":          (16.0, 103.0, 800, 1.3, -1.0, 1.1, 1.2, 180),
    # deserts and steppes
    "Sahara":                                 (24.0, 11.0, 1700, 1.5, 3.0, -3.5, 0.0, np.nan),
    "Eastern Sahara and Nile valley (Aswan)": (24.5, 31.0, 900, 1.0, 3.5, -4.5, 0.0, 200),
    "West African Sahel (Niamey)":            (14.0, 2.0, 900, 2.5, 0.0, 0.5, 1.2, 230),
    "Sonoran desert (Hermosillo)":            (29.5, -111.5, 500, 1.0, 2.5, -0.5, 1.5, 250),
    "Gobi (Dalanzadgad)":                     (43.5, 104.5, 800, -3.0, 7.0, -1.6, 1.3, 1450),
    "Ebro valley (Zaragoza)":                 (41.6, -0.9, 250, -0.5, 0.5, -0.7, -0.3, 300),
    # temperate
    "Florida peninsula":                      (28.0, -81.5, 450, -1.9, 0.0, 0.9, 0.3, 30),
    "Southern Iberia, Mediterranean (Seville)": (37.4, -5.8, 350, -1.7, 0.5, 0.2, -2.4, 80),
    "Pacific Northwest coast (Portland)":     (45.5, -122.7, 400, -2.0, -1.0, -0.1, -2.3, 120),
    "Pampas (Buenos Aires)":                  (-34.6, -59.5, 500, -3.5, -0.5, 1.2, 0.0, 30),
    "South African Highveld (Johannesburg)":  (-26.2, 28.0, 500, 1.0, 0.0, 0.15, 1.5, 1650),
    "East African highlands (Nakuru)":        (-0.3, 36.0, 350, 1.0, 0.0, -0.8, 0.0, 1900),
    "Bavarian Alpine foreland (Munich)":      (48.1, 11.6, 250, -2.6, 0.0, -0.1, 0.3, 540),
    # continental and boreal
    "North American Corn Belt (Ames)":        (42.0, -93.6, 900, -8.0, 6.0, 0.1, 0.5, 320),
    "Manchuria (Harbin)":                     (45.7, 126.6, 700, -11.0, 11.0, -0.9, 1.3, 150),
    "Russian plain (Moscow)":                 (55.7, 37.6, 800, 1.5, -0.5, 0.0, 0.3, 170),
    "Fennoscandia, North Atlantic Drift (Tampere)": (61.5, 23.8, 600, 3.0, 0.0, 0.2, 0.3, 120),
    "Yakutia (Yakutsk)":                      (62.0, 129.7, 1200, -9.7, 16.0, -0.8, 1.0, 200),
    # polar and high plateaus
    "Svalbard, West Spitsbergen Current":     (78.2, 15.6, 400, 15.0, -6.0, -0.3, 0.0, 250),
    "Alaskan North Slope (Utqiagvik)":        (70.8, -156.8, 500, 0.0, 0.0, -1.0, 0.5, 20),
    "West Greenland coast (Nuuk)":            (64.2, -51.3, 300, 0.5, -6.0, 0.6, 0.0, 300),
    "Greenland ice sheet (Summit)":           (72.6, -38.5, 600, 5.0, -5.0, -1.0, 0.0, 3200),
    "Tibetan Plateau (Nagqu)":                (31.5, 92.0, 700, 1.5, 4.0, -0.3, 1.5, 4500),
}


def _region_table() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rows = np.array(list(CLIMATE_REGIONS.values()), float)
    columns = dict(zip(_REGION_FIELDS, rows.T))
    return lonlat_to_xyz(columns["lat"], columns["lon"]), columns


_REGION_XYZ, _REGION_COLUMNS = _region_table()


def _region_weights(xyz: np.ndarray) -> np.ndarray:
    """Weight (..., regions) of each prior region at points: 1 within half its radius, falling
    smoothly (smoothstep of the chord distance) to 0 at the radius."""
    distance_km = np.sqrt(((xyz[..., None, :] - _REGION_XYZ) ** 2).sum(-1)) / 1000.0
    radius = _REGION_COLUMNS["radius_km"]
    x = np.clip((radius - distance_km) / (0.5 * radius), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _region_mean(weight: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Strength in [0, 1] of the prior's ``key`` at points and its weighted mean over the regions
    that give it (overlapping regions are averaged; strength is 0 outside every region)."""
    column = _REGION_COLUMNS[key]
    known = np.isfinite(column)
    w = weight * known
    total = w.sum(-1)
    return np.minimum(total, 1.0), (w * np.where(known, column, 0.0)).sum(-1) / np.maximum(total, 1e-12)


def _mean_over_year(rain_season: np.ndarray) -> np.ndarray:
    """Mean over the twelve months of exp(rain_season * season): keeps the yearly rain total."""
    cycle = det.cos(2 * np.pi * np.arange(12) / 12.0)
    return det.exp(rain_season[..., None] * cycle).mean(-1)


class World:
    """A planet drawn from ``seed``: same seed, same planet, bit for bit."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    # -- noise ------------------------------------------------------------------------------------
    def noise(self, name: str, xyz: np.ndarray, wavelengths_m, weights=None, *, extra: int = 0) -> np.ndarray:
        """Zero-mean, unit-variance smooth field named ``name`` (``extra`` gives e.g. one field per year)."""
        weights = np.ones(len(wavelengths_m)) if weights is None else np.asarray(weights, float)
        key = [self.seed, extra] + [ord(c) for c in name]
        rng = np.random.default_rng(key)
        waves_per_octave = 6
        total = np.zeros(xyz.shape[:-1])
        for wavelength, weight in zip(wavelengths_m, weights):
            directions = rng.normal(size=(waves_per_octave, 3))
            directions /= np.linalg.norm(directions, axis=1, keepdims=True)
            phases = rng.uniform(0, 2 * np.pi, waves_per_octave)
            k = 2 * np.pi / wavelength
            total += weight * det.cos(k * matmul(xyz, directions.T) + phases).sum(axis=-1)
        return total / np.sqrt(waves_per_octave * (weights ** 2).sum() / 2)

    # -- terrain ----------------------------------------------------------------------------------
    def elevation(self, lat, lon) -> np.ndarray:
        """Terrain height in metres: noise relief (median ~270 m), pulled to the real height of the prior's regions."""
        xyz = lonlat_to_xyz(lat, lon)
        n = self.noise("elevation", xyz, [4e6, 1.2e6, 3e5, 6e4, 1e4, 2e3], [1.0, 0.6, 0.4, 0.2, 0.08, 0.03])
        free = 300.0 * det.exp(0.8 * n) - 50.0
        strength, height = _region_mean(_region_weights(xyz), "elev")
        local = height + (60.0 + 0.1 * height) * self.noise("relief", xyz, [6e4, 2e4, 6e3, 2e3])  # hillier highlands
        return np.clip((1.0 - strength) * free + strength * local, -50.0, 6000.0)

    # -- climate ----------------------------------------------------------------------------------
    def monthly_climate(self, lat, lon, year: int, months) -> dict[str, np.ndarray]:
        """Monthly means of the six OlmoEarth ERA5 variables at points, shape (P, M), in ERA5 units.

        t2m, d2m [K]; sp [Pa]; u10, v10 [m/s]; tp [m per day, as in ERA5 monthly means]. A zonal
        climate (sea-level temperature, seasonal range, rain belts) is shifted by ``CLIMATE_REGIONS``
        and varied by noise at scales down to ~10 km, so ERA5-Land cells of one AOI differ.
        """
        lat = np.atleast_1d(np.asarray(lat, float))
        lon = np.atleast_1d(np.asarray(lon, float))
        months = np.atleast_1d(np.asarray(months, float))
        xyz = lonlat_to_xyz(lat, lon)
        elev = self.elevation(lat, lon)[:, None]
        alat = np.abs(lat)[:, None]
        hemi = np.where(lat >= 0, 1.0, -1.0)[:, None]
        season = det.cos(2 * np.pi * (months[None, :] - 7.0) / 12.0) * hemi  # +1 in local summer
        weight = _region_weights(xyz)
        prior = {k: np.prod(_region_mean(weight, k), axis=0)[:, None] for k in ("dt", "amp", "wet", "rain_season")}

        t_sea = 300.15 - 0.011 * np.maximum(alat - 13.0, 0.0) ** 2                 # zonal sea-level mean [K]
        t_anom = self.noise("t-anom", xyz, [3e6, 8e5, 1.5e5])[:, None]
        t_year = 0.6 * self.noise("t-year", xyz, [3e6], extra=year)[:, None] + 0.02 * (year - 2000)
        t_annual = t_sea + prior["dt"] - LAPSE_K_PER_M * elev + t_anom + t_year
        continental = det.exp(0.12 * self.noise("continental", xyz, [3e6, 1e6])[:, None])
        amplitude = np.maximum((0.5 + 0.2 * alat) * continental + prior["amp"], 0.3)  # half the yearly range
        t2m = t_annual + amplitude * season

        precip_year = (250.0 + 1750.0 * det.exp(-(alat / 10.0) ** 2)                 # zonal rain belts [mm/yr]
                       + 500.0 * det.exp(-((alat - 45.0) / 18.0) ** 2))
        wet = 0.4 * self.noise("wetness", xyz, [2.5e6, 6e5, 1.5e5, 4e4, 1.5e4], [1.0, 0.8, 0.6, 1.0, 0.6])[:, None]
        precip_year = precip_year * det.exp(prior["wet"] + wet)
        rain_season = (1.6 * det.exp(-((alat - 14.0) / 7.0) ** 2) + 0.3 + prior["rain_season"]
                       + 0.2 * self.noise("rain-season", xyz, [1e6, 1e5])[:, None])
        peak = 2.2 * det.tanh(rain_season / 2.2)  # the wettest month holds at most ~3x the monthly mean
        shape = det.exp(peak * season) / _mean_over_year(peak)
        month_noise = np.stack([self.noise("tp-month", xyz, [1e6], extra=year * 12 + int(m)) for m in months], axis=1)
        phase = 2 * np.pi * months[None, :] / 12.0  # local storms shift the season of rain between nearby cells
        month_noise = month_noise + 0.6 * (self.noise("tp-local-a", xyz, [5e4], extra=year)[:, None] * det.cos(phase)
                                           + self.noise("tp-local-b", xyz, [5e4], extra=year)[:, None] * det.sin(phase))
        raw_mm_day = precip_year / 365.25 * shape * det.exp(0.28 * month_noise - 0.05)
        rain_mm_day = -5.0 * det.logaddexp(-raw_mm_day / 5.0, -45.0 / 5.0)  # soft ceiling: no monthly mean > 45 mm/day
        tp = rain_mm_day / 1000.0

        # dry air (large dew-point depression) where it rarely rains and it is warm enough to evaporate;
        # a soft ceiling keeps monthly dew points below ~298 K, as over real land
        warmth = 1.0 / (1.0 + det.exp(-(t2m - 273.15) / 8.0))
        d2m = -3.0 * det.logaddexp(-(t2m - 1.5 - 16.0 * det.exp(-rain_mm_day / 2.5) * warmth) / 3.0, -298.0 / 3.0)

        sp = (101325.0 * det.exp(-elev / SCALE_HEIGHT_M) + 300.0 * season
              + 150.0 * self.noise("sp", xyz, [2e6])[:, None])

        # trades, westerlies and polar easterlies; monsoons turn the wind onshore (westerly, poleward)
        # in summer; local terrain (5-15 km) makes neighbouring ERA5-Land cells differ
        lat2 = lat[:, None]
        monsoon = 1.5 * np.maximum(rain_season - 1.0, 0.0) * season
        u10 = (-4.0 * det.exp(-(lat2 / 15.0) ** 2) + 5.0 * det.exp(-((alat - 45.0) / 10.0) ** 2)
               - 2.0 * det.exp(-((alat - 75.0) / 8.0) ** 2) + 1.0 * self.noise("u10", xyz, [1.5e6, 4e5])[:, None]
               + 1.5 * self.noise("u10-local", xyz, [5e4, 1.5e4])[:, None] + 0.5 * season + monsoon)
        v10 = (-np.sign(lat2) * 1.5 * det.exp(-(lat2 / 15.0) ** 2) + 0.8 * self.noise("v10", xyz, [1.5e6, 4e5])[:, None]
               + 0.8 * self.noise("v10-local", xyz, [5e4, 1.5e4])[:, None]
               + 0.3 * det.sin(2 * np.pi * months[None, :] / 12.0) + monsoon * hemi)
        return {"t2m": t2m, "d2m": d2m, "sp": sp, "u10": u10, "v10": v10, "tp": tp}

    def climate_normals(self, lat, lon, year: int = 2020) -> dict[str, np.ndarray]:
        """Annual summaries used to decide land cover.

        t_mean, t_cold, t_warm [deg C]; precip_mm [mm/yr]; precip_driest, precip_wettest [mm/month];
        aridity: precipitation over the Köppen B threshold (< 1 arid, < 0.5 desert; the threshold is
        floored at 50 mm/yr, as it nears zero in polar cold).
        """
        c = self.monthly_climate(lat, lon, year, np.arange(1, 13))
        t_c = c["t2m"] - 273.15
        p_month = c["tp"] * 1000.0 * DAYS_PER_MONTH
        precip = p_month.sum(1)
        return {"t_mean": t_c.mean(1), "t_cold": t_c.min(1), "t_warm": t_c.max(1), "precip_mm": precip,
                "precip_driest": p_month.min(1), "precip_wettest": p_month.max(1),
                "aridity": precip / np.maximum(koppen.arid_threshold(t_c, p_month), 50.0)}

    # -- land cover -------------------------------------------------------------------------------
    def land_cover(self, lat, lon, year: int | None = None) -> np.ndarray:
        """ESA WorldCover class code at points in ``year``: the land use beneath it decides (landscape.py)."""
        from terrapipe.sources.landscape import REFERENCE_YEAR, land_use, worldcover

        return worldcover(land_use(self, lat, lon, REFERENCE_YEAR if year is None else year))
