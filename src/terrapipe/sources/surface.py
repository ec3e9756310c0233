"""What the sensors see of each land-use class: phenology, reflectance, backscatter and surface temperature.

Designed so that every band carries information of its own (reference/earth-observation-facts.md for
the typical values):
- class groups share their 10 m spectra (B02, B03, B04, B08) and calendar and differ only in red edge
  and SWIR: grass vs shrub, broadleaf vs conifer, maize vs soybean vs sunflower vs sugar beet, wheat vs
  barley, pasture vs grass, sand vs rock, tiled vs metal roofs, turbid vs sediment-laden water;
- B01 carries the scene's aerosol load and B09 the water vapour of the month (from d2m), as in L2A;
- crops follow their own calendars relative to the local growing season (winter cereals peak in
  spring, maize and soybean in late summer, rapeseed flowers yellow, rice starts flooded);
- towns, vineyards and orchards have texture at 10 m (roofs, rows, crowns);
- Landsat thermal is land-surface temperature: air temperature plus the weather of the overpass day
  plus a surface term (sun, dryness, cover), not air temperature plus noise.
"""
from __future__ import annotations

import numpy as np

from terrapipe.sources import streams as det
from terrapipe.sources.landscape import CLASSES, C

# Surface reflectance (fraction) of endmembers; columns are REFLECTANCE_BANDS (10 m bands, then 20 m).
REFLECTANCE_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
_ENDMEMBERS = {
    #                  B02    B03    B04    B08    B05    B06    B07    B8A    B11    B12
    "broadleaf":     (0.030, 0.060, 0.030, 0.360, 0.075, 0.265, 0.335, 0.370, 0.175, 0.080),
    "conifer":       (0.030, 0.059, 0.031, 0.355, 0.105, 0.215, 0.265, 0.300, 0.110, 0.050),
    "leafless":      (0.050, 0.070, 0.080, 0.190, 0.110, 0.140, 0.160, 0.190, 0.220, 0.150),
    "grass":         (0.045, 0.080, 0.060, 0.300, 0.105, 0.225, 0.270, 0.300, 0.250, 0.140),
    "shrub":         (0.046, 0.081, 0.061, 0.300, 0.145, 0.190, 0.230, 0.260, 0.310, 0.225),
    "pasture":       (0.045, 0.080, 0.059, 0.305, 0.090, 0.245, 0.295, 0.320, 0.215, 0.110),
    "dry_grass":     (0.080, 0.110, 0.140, 0.250, 0.180, 0.210, 0.230, 0.260, 0.350, 0.280),
    "dry_shrub":     (0.081, 0.111, 0.139, 0.250, 0.200, 0.220, 0.235, 0.255, 0.390, 0.330),
    "soil":          (0.090, 0.120, 0.150, 0.230, 0.180, 0.200, 0.215, 0.235, 0.320, 0.260),
    "sand":          (0.140, 0.190, 0.250, 0.330, 0.280, 0.300, 0.315, 0.335, 0.420, 0.370),
    "rock":          (0.141, 0.191, 0.251, 0.331, 0.250, 0.280, 0.300, 0.320, 0.360, 0.250),
    "moss":          (0.045, 0.070, 0.065, 0.200, 0.100, 0.150, 0.180, 0.200, 0.220, 0.150),
    "snow":          (0.850, 0.850, 0.830, 0.740, 0.800, 0.780, 0.760, 0.740, 0.100, 0.050),
    "wheat":         (0.040, 0.085, 0.045, 0.380, 0.120, 0.280, 0.350, 0.385, 0.245, 0.130),
    "barley":        (0.040, 0.085, 0.045, 0.380, 0.095, 0.245, 0.305, 0.340, 0.200, 0.100),
    "maize":         (0.035, 0.075, 0.035, 0.420, 0.115, 0.300, 0.380, 0.420, 0.225, 0.110),
    "soybean":       (0.035, 0.075, 0.035, 0.420, 0.080, 0.335, 0.425, 0.455, 0.265, 0.145),
    "rapeseed":      (0.045, 0.090, 0.050, 0.400, 0.130, 0.290, 0.360, 0.400, 0.230, 0.120),
    "flowers":       (0.050, 0.160, 0.130, 0.380, 0.200, 0.300, 0.340, 0.380, 0.240, 0.130),
    "sunflower":     (0.035, 0.076, 0.036, 0.418, 0.130, 0.290, 0.355, 0.395, 0.285, 0.160),
    "beet":          (0.036, 0.075, 0.035, 0.421, 0.100, 0.320, 0.410, 0.450, 0.195, 0.085),
    "rice":          (0.040, 0.080, 0.045, 0.360, 0.110, 0.270, 0.330, 0.360, 0.200, 0.100),
    "vine":          (0.040, 0.075, 0.050, 0.330, 0.110, 0.250, 0.300, 0.330, 0.230, 0.120),
    "roof":          (0.100, 0.110, 0.120, 0.170, 0.130, 0.150, 0.160, 0.170, 0.210, 0.190),
    "metal_roof":    (0.100, 0.110, 0.121, 0.170, 0.160, 0.165, 0.170, 0.175, 0.120, 0.090),
    "asphalt":       (0.060, 0.065, 0.070, 0.090, 0.080, 0.085, 0.090, 0.090, 0.110, 0.100),
    "concrete":      (0.180, 0.200, 0.220, 0.250, 0.230, 0.240, 0.245, 0.250, 0.280, 0.260),
    "water":         (0.050, 0.040, 0.020, 0.005, 0.015, 0.010, 0.008, 0.005, 0.002, 0.001),
    "turbid":        (0.070, 0.080, 0.060, 0.020, 0.040, 0.020, 0.015, 0.015, 0.004, 0.002),
    "sediment":      (0.070, 0.080, 0.061, 0.020, 0.075, 0.035, 0.025, 0.022, 0.006, 0.003),
    "shallow":       (0.085, 0.095, 0.050, 0.010, 0.025, 0.012, 0.010, 0.008, 0.002, 0.001),
    "foam":          (0.260, 0.260, 0.240, 0.200, 0.210, 0.190, 0.170, 0.160, 0.060, 0.030),
    "ship":          (0.200, 0.200, 0.200, 0.220, 0.200, 0.200, 0.200, 0.200, 0.180, 0.150),
    "debris":        (0.070, 0.072, 0.065, 0.080, 0.070, 0.078, 0.080, 0.080, 0.040, 0.030),
    "sargassum":     (0.040, 0.052, 0.040, 0.120, 0.080, 0.110, 0.120, 0.120, 0.020, 0.010),
}
# Per class: (dry endmember, green endmember, phenology kind). Built and water classes are mixed below.
_VEGETATION = {
    "broadleaf_forest": ("leafless", "broadleaf", "broadleaf"), "conifer_forest": ("conifer", "conifer", "evergreen"),
    "open_woodland": ("dry_grass", "broadleaf", "herbaceous"), "shrubland": ("dry_shrub", "shrub", "shrub"),
    "grassland": ("dry_grass", "grass", "herbaceous"), "moss_lichen": ("rock", "moss", "herbaceous"),
    "pasture": ("dry_grass", "pasture", "herbaceous"), "field_margin": ("dry_grass", "grass", "herbaceous"),
    "winter_wheat": ("soil", "wheat", "winter_cereal"), "winter_barley": ("soil", "barley", "winter_cereal"),
    "maize": ("soil", "maize", "summer_crop"), "soybean": ("soil", "soybean", "summer_crop"),
    "rapeseed": ("soil", "rapeseed", "rapeseed"), "sunflower": ("soil", "sunflower", "summer_crop"),
    "sugar_beet": ("soil", "beet", "summer_crop"), "rice": ("water", "rice", "rice"),
    "vineyard": ("soil", "vine", "herbaceous"), "orchard": ("grass", "broadleaf", "broadleaf"),
    "wetland": ("water", "grass", "herbaceous"),
}
_CONSTANT = {"bare_soil": "sand", "bare_rock": "rock", "snow_ice": "snow", "river": "sediment", "lake": "water",
             "marine_water": "water", "turbid_water": "turbid", "sediment_laden_water": "sediment",
             "shallow_water": "shallow", "foam": "foam", "ship": "ship", "marine_debris": "debris",
             "sargassum": "sargassum", "highway": "asphalt"}
# Built classes: fractions of (roof, asphalt/paving, vegetation) and whether roofs are metal (industry).
_BUILT = {"compact_highrise": (0.55, 0.40, 0.05, False), "compact_midrise": (0.60, 0.32, 0.08, False),
          "compact_lowrise": (0.65, 0.25, 0.10, False), "open_highrise": (0.30, 0.30, 0.40, False),
          "open_midrise": (0.32, 0.28, 0.40, False), "open_lowrise": (0.35, 0.20, 0.45, False),
          "lightweight_lowrise": (0.75, 0.20, 0.05, True), "large_lowrise": (0.65, 0.30, 0.05, True),
          "sparsely_built": (0.15, 0.10, 0.75, False), "heavy_industry": (0.45, 0.45, 0.10, True)}
# Crop calendars: peak month relative to the local growing-season peak, and width (months).
_CALENDARS = {"winter_cereal": (-2.0, 1.6), "summer_crop": (0.5, 1.5), "rapeseed": (-3.0, 1.4), "rice": (0.0, 1.3)}
# Sentinel-1 sigma0 (dB) at full greenness (VV, VH); vegetation loses volume scattering as it browns.
_S1_DB = {"forest": (-7.0, -13.0), "natural": (-10.5, -18.0), "crop": (-10.0, -16.5), "pasture": (-10.0, -18.5),
          "permanent_crop": (-9.0, -15.5), "built": (1.0, -8.0), "road": (-14.0, -23.0), "water": (-21.0, -29.0),
          "sea": (-21.0, -29.0)}
_S1_OVERRIDES = {"shrubland": (-11.5, -19.5), "bare_soil": (-13.0, -21.0), "bare_rock": (-9.0, -17.0),
                 "snow_ice": (-14.0, -23.0), "wetland": (-12.0, -19.0), "maize": (-9.0, -15.0),
                 "soybean": (-11.0, -17.5), "rice": (-12.0, -17.0), "foam": (-12.0, -21.0), "ship": (6.0, -3.0),
                 "marine_debris": (-17.0, -25.0), "sargassum": (-18.0, -26.0), "sparsely_built": (-6.0, -13.0),
                 "open_lowrise": (-3.0, -11.0), "heavy_industry": (3.0, -6.0)}
# Land-surface temperature excess over air temperature at full sun (K): hot dry surfaces, cool vegetation.
_HEAT = {"forest": 1.5, "natural": 5.0, "crop": 3.0, "pasture": 3.5, "permanent_crop": 4.0, "built": 9.0,
         "road": 11.0, "water": -1.0, "sea": -1.5}
_HEAT_OVERRIDES = {"bare_soil": 13.0, "bare_rock": 11.0, "shrubland": 8.0, "wetland": 0.5, "snow_ice": -2.0}
_TABLE = 256


def _class_table(fn, width: int) -> np.ndarray:
    table = np.zeros((_TABLE, width))
    for c in CLASSES:
        table[c.code] = fn(c)
    return table


def _spectrum(name: str) -> np.ndarray:
    return np.array(_ENDMEMBERS[name])


DRY = _class_table(lambda c: _spectrum(_VEGETATION[c.name][0]) if c.name in _VEGETATION
                   else _spectrum(_CONSTANT.get(c.name, "roof")), len(REFLECTANCE_BANDS))
GREEN = _class_table(lambda c: _spectrum(_VEGETATION[c.name][1]) if c.name in _VEGETATION
                     else _spectrum(_CONSTANT.get(c.name, "roof")), len(REFLECTANCE_BANDS))
S1_DB = _class_table(lambda c: _S1_OVERRIDES.get(c.name, _S1_DB[c.group]), 2)
HEAT = _class_table(lambda c: _HEAT_OVERRIDES.get(c.name, _HEAT[c.group]), 1)[:, 0]
BUILT_CODES = np.array([C[name] for name in _BUILT], np.uint8)
IS_VEGETATION = _class_table(lambda c: c.name in _VEGETATION or c.group == "built", 1)[:, 0] > 0


def growing_potential(t2m_k: np.ndarray, tp_m_day: np.ndarray) -> np.ndarray:
    """How green the month's climate lets vegetation be, in [0, 1], one value per month (M,), lagged a month."""
    t_c, rain_mm = t2m_k - 273.15, tp_m_day * 1000.0
    potential = 1 / (1 + det.exp(-(t_c - 6.0) / 3.0)) * 1 / (1 + det.exp(-(rain_mm - 0.8) / 0.4))
    return 0.6 * potential + 0.4 * np.roll(potential, 1)


def greenness(codes: np.ndarray, months: np.ndarray, potential: np.ndarray, phase: np.ndarray,
              t_cold_c: float) -> np.ndarray:
    """Greenness (T, H, W) in [0, 1] of each pixel's class at each month of year ``months`` (T,).

    ``potential`` is the site's monthly growing potential over the calendar year (12,), ``phase`` a per-pixel
    shift of crop calendars in months (fields are not sown on one day).
    """
    t = len(months)
    g_year = potential[np.asarray(months) - 1]                            # (T,)
    peak = int(np.argmax(potential)) + 1                                  # month of the season's peak
    out = np.zeros((t,) + codes.shape)
    kinds = {name: kind for name, (_, _, kind) in _VEGETATION.items()}
    evergreen_broadleaf = t_cold_c > 15.0
    for name, kind in kinds.items():
        where = codes == C[name]
        if not where.any():
            continue
        if kind in _CALENDARS:
            offset, width = _CALENDARS[kind]
            month_of_peak = peak + offset + phase[where]                   # (P,)
            distance = (months[:, None] - month_of_peak[None, :] + 6.0) % 12.0 - 6.0
            g = det.exp(-(distance / width) ** 2) * (0.35 + 0.65 * potential.max())
        elif kind == "evergreen" or (kind == "broadleaf" and evergreen_broadleaf):
            g = np.broadcast_to((0.8 + 0.2 * g_year)[:, None], (t, where.sum()))
        elif kind == "shrub":
            g = np.broadcast_to((0.25 + 0.6 * g_year)[:, None], (t, where.sum()))
        else:
            g = np.broadcast_to(g_year[:, None], (t, where.sum()))
        out[:, where] = g
    return np.clip(out, 0.0, 1.0)


def reflectance(codes: np.ndarray, green: np.ndarray, texture: np.ndarray, brightness: np.ndarray,
                months: np.ndarray, snow: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Surface reflectance (T, 10, H, W) in REFLECTANCE_BANDS order.

    ``texture`` (H, W) in [0, 1] is the 10 m roof/row/crown pattern, ``brightness`` (H, W) a per-patch soil
    and canopy brightness factor, ``snow`` (T,) the month's snow-cover fraction of open ground.
    """
    dry, grn = DRY[codes], GREEN[codes]                                   # (H, W, 10)
    g = green[..., None]                                                  # (T, H, W, 1)
    refl = dry[None] * (1 - g) + grn[None] * g                            # (T, H, W, 10)
    veg_of = {"grass": _spectrum("grass"), "dry": _spectrum("dry_grass")}
    for name, (roof, paved, _vegetation, metal) in _BUILT.items():
        where = codes == C[name]
        if not where.any():
            continue
        roofs = texture[where] < roof                                     # roof pixels by the 10 m pattern
        paved_px = ~roofs & (texture[where] < roof + paved)
        roof_spec = _spectrum("metal_roof" if metal else "roof")
        gv = green[:, where][..., None]
        vegetation = veg_of["dry"] * (1 - gv) + veg_of["grass"] * gv       # (T, P, 10)
        mix = np.where(roofs[None, :, None], roof_spec, np.where(paved_px[None, :, None], _spectrum("asphalt"), vegetation))
        refl[:, where] = mix
    for name, fraction in (("vineyard", 0.5), ("orchard", 0.6)):           # rows of vines, crowns of trees
        where = codes == C[name]
        if where.any():
            plant = (texture[where] < fraction)[None, :, None]
            refl[:, where] = np.where(plant, refl[:, where], _spectrum("grass" if name == "orchard" else "soil"))
    rape = codes == C["rapeseed"]
    if rape.any():                                                        # yellow flowering at the peak
        flowering = np.clip((green[:, rape] - 0.75) / 0.25, 0, 1)[..., None]
        refl[:, rape] = refl[:, rape] * (1 - flowering) + _spectrum("flowers") * flowering
    rice = codes == C["rice"]
    if rice.any():                                                        # paddies are flooded before the crop
        flooded = ((green[:, rice] > 0.05) & (green[:, rice] < 0.35))[..., None]
        refl[:, rice] = np.where(flooded, 0.6 * _spectrum("water") + 0.4 * refl[:, rice], refl[:, rice])
    refl *= brightness[None, :, :, None]
    open_ground = np.where(np.isin(codes, [C[n] for n in ("broadleaf_forest", "conifer_forest")]), 0.35, 1.0)
    open_ground = np.where(IS_VEGETATION[codes] | np.isin(codes, [C["bare_soil"], C["bare_rock"], C["highway"]]),
                           open_ground, 0.0)
    cover = snow[:, None, None] * open_ground[None]                       # (T, H, W)
    refl = refl * (1 - cover[..., None]) + _spectrum("snow") * cover[..., None]
    refl *= det.lognormal(rng, 0.0, 0.025, refl.shape)
    return np.moveaxis(refl, -1, 1)                                       # (T, 10, H, W)


def atmosphere_bands(refl: np.ndarray, aerosol: np.ndarray, water_vapour_cm: np.ndarray) -> dict[str, np.ndarray]:
    """B01 and B09 (T, H, W) of L2A: B01 tracks the aerosol optical depth left in the coastal band (T, H, W),
    B09 the month's precipitable water (T,) absorbing at 945 nm."""
    b02, b8a = refl[:, REFLECTANCE_BANDS.index("B02")], refl[:, REFLECTANCE_BANDS.index("B8A")]
    b01 = 0.85 * b02 + 0.01 + 0.30 * aerosol
    b09 = b8a * det.exp(-0.45 * water_vapour_cm - 0.5)[:, None, None]
    return {"B01": b01, "B09": np.clip(b09, 0.003, None)}


def precipitable_water_cm(d2m_k: np.ndarray) -> np.ndarray:
    """Column water vapour from the dewpoint (an empirical exponential fit: ~0.3 cm at -20 C, ~5 cm at 25 C)."""
    return 1.45 * det.exp(0.0615 * (d2m_k - 273.15)) + 0.05


def snow_fraction(t2m_k: np.ndarray) -> np.ndarray:
    """Snow cover of open ground by the month's mean temperature (none above +2 C, full below -6 C)."""
    return np.clip((2.0 - (t2m_k - 273.15)) / 8.0, 0.0, 1.0)


def backscatter(codes: np.ndarray, green: np.ndarray, moisture: np.ndarray, wind: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Sentinel-1 sigma0 in dB (T, 2, H, W) with gamma speckle (ENL 4.4, IW GRD).

    Vegetation adds volume scattering as it greens (strongest in VH); soil ``moisture`` (H, W) in dB
    brightens bare and sparse surfaces; the scene's ``wind`` (T,) roughens water.
    """
    base = S1_DB[codes]                                                   # (H, W, 2)
    veg = IS_VEGETATION[codes] & ~np.isin(codes, [C[n] for n in _BUILT])
    loss = np.array([3.0, 5.0])
    db = base[None] - veg[None, :, :, None] * loss * (1 - green[..., None])   # (T, H, W, 2)
    db = db + np.where(veg | np.isin(codes, [C["bare_soil"]]), 1.0, 0.0)[None, :, :, None] * moisture[None, :, :, None]
    water = np.isin(codes, [c.code for c in CLASSES if c.group in ("water", "sea") and c.name not in ("ship", "foam")])
    db = db + water[None, :, :, None] * (1.5 * (wind[:, None, None, None] - 5.0)).clip(-3, 6)
    rice = codes == C["rice"]
    if rice.any():
        flooded = (green[:, rice] > 0.05) & (green[:, rice] < 0.35)
        db[:, rice] = np.where(flooded[..., None], np.array([-19.0, -27.0]), db[:, rice])
    speckle = rng.gamma(4.4, 1 / 4.4, db.shape)
    return np.moveaxis(10 * det.log10(det.exp10(db / 10) * speckle), -1, 1)


def solar_load(lat: float, months: np.ndarray) -> np.ndarray:
    """Relative midday insolation (T,) at a latitude by month: what heats surfaces above the air."""
    declination = 23.44 * det.sin(2 * np.pi * (np.asarray(months) * 30.44 - 15.0 - 81.0) / 365.0)
    return np.clip(det.cos(np.radians(lat - declination)), 0.1, 1.0)


def surface_temperature(codes: np.ndarray, green: np.ndarray, t2m_k: np.ndarray, weather_k: np.ndarray,
                        sun: np.ndarray, dryness: float, rng: np.random.Generator) -> np.ndarray:
    """Land-surface temperature (T, H, W) in K at the morning overpass.

    Air temperature of the month plus the overpass day's weather departure (T,), plus a surface excess that
    grows with sun and dryness and falls with greenness; water lags and damps; snow stays at or below 0 C.
    """
    heat = HEAT[codes][None]                                              # (1, H, W)
    excess = sun[:, None, None] * (heat * (0.6 + 1.4 * dryness) - 5.0 * green * (1.0 - dryness))
    lst = t2m_k[:, None, None] + weather_k[:, None, None] + excess
    water = np.isin(codes, [c.code for c in CLASSES if c.group in ("water", "sea")])[None]
    lagged = 0.5 * t2m_k + 0.5 * np.roll(t2m_k, 1) + 1.0
    lst = np.where(water, np.maximum(lagged[:, None, None], 272.0) + 0.3 * weather_k[:, None, None], lst)
    lst = np.where(codes[None] == C["snow_ice"], np.minimum(lst, 271.0), lst)
    return lst + rng.normal(0.0, 0.6, lst.shape)
