"""Land use beneath WorldCover: the fine classes of the sample world and where they lie, year by year.

Every place gets one land-use class per year, a pure function of (seed, place, year), so a 10 m pixel
of a chip, an AlphaEarth point and a DeepEarth observation at the same place agree. The classes are
those of the downstream benchmarks (EuroSAT land use, So2Sat local climate zones, PASTIS crop types,
MADOS sea-surface classes) and each maps to its ESA WorldCover code. The spatial patterns are what
makes each class what it is:

- fields are parcels (Voronoi cells of a jittered 3-D lattice, ~260 m, ~120 m where farms are small) with
  1-pixel margins between them,
  one crop per parcel and year (rotation), pasture and permanent crops among them;
- roads are 1-2 pixel lines (the edges of a coarser lattice), rivers 1-3 pixel meanders (a noise
  isoline), both only resolved by the 10 m bands;
- towns are blocks (~150 m cells) whose morphology (local climate zone) follows urban intensity, with
  roof texture at 10 m;
- nature follows climate: forest (broadleaf or conifer) where it is humid and warm enough, shrub and
  bare ground where it is arid, tundra and ice where summers are cold; wetlands in wet lowlands;
- water: lakes, and sea with its surface classes near the shore (shallow, turbid, sediment-laden at
  river mouths, foam), ships and floating matter (debris, sargassum) offshore.

Land changes between years: towns grow, frontier forests are cleared for pasture and crops (about 2%
of them a year), crops rotate. All randomness is hashed from lattice cells or drawn from the world's
noise fields; nothing depends on the order in which places are asked for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terrapipe.modalities import Band
from terrapipe.sources import streams as det
from terrapipe.sources.world import World, lonlat_to_xyz

REFERENCE_YEAR = 2020  # the year whose land use counts as "the" cover where a product has no date
LAND_USE_FILE = "land_use.tif"   # per site in data/raw/sentinel: the label raster (sample world only)
LAND_USE_BAND = Band("land_use", 10.0, "land-use class code (terrapipe.sources.landscape.CLASSES)")


@dataclass(frozen=True)
class LandUseClass:
    code: int
    name: str
    worldcover: int          # ESA WorldCover code
    eurosat: str | None      # EuroSAT class, None where EuroSAT has none (bare, snow, ...)
    lcz: int | None          # So2Sat LCZ 1..17 (1-10 built types, 11-17 = A..G), None for snow
    group: str               # forest, natural, crop, permanent_crop, pasture, built, road, water, sea


# One row per class; codes are stable (they are written into label rasters).
CLASSES = tuple(LandUseClass(*row) for row in [
    (1, "broadleaf_forest", 10, "Forest", 11, "forest"),
    (2, "conifer_forest", 10, "Forest", 11, "forest"),
    (3, "open_woodland", 10, "HerbaceousVegetation", 12, "natural"),
    (4, "shrubland", 20, "HerbaceousVegetation", 13, "natural"),
    (5, "grassland", 30, "HerbaceousVegetation", 14, "natural"),
    (6, "wetland", 90, "HerbaceousVegetation", 14, "natural"),
    (7, "moss_lichen", 100, None, 14, "natural"),
    (8, "bare_soil", 60, None, 16, "natural"),
    (9, "bare_rock", 60, None, 15, "natural"),
    (10, "snow_ice", 70, None, None, "natural"),
    (11, "pasture", 30, "Pasture", 14, "pasture"),
    (12, "field_margin", 40, "HerbaceousVegetation", 14, "natural"),  # WorldCover maps margins as cropland
    (20, "winter_wheat", 40, "AnnualCrop", 14, "crop"),
    (21, "winter_barley", 40, "AnnualCrop", 14, "crop"),
    (22, "maize", 40, "AnnualCrop", 14, "crop"),
    (23, "soybean", 40, "AnnualCrop", 14, "crop"),
    (24, "rapeseed", 40, "AnnualCrop", 14, "crop"),
    (25, "sunflower", 40, "AnnualCrop", 14, "crop"),
    (26, "sugar_beet", 40, "AnnualCrop", 14, "crop"),
    (27, "rice", 40, "AnnualCrop", 14, "crop"),
    (30, "vineyard", 40, "PermanentCrop", 14, "permanent_crop"),
    (31, "orchard", 40, "PermanentCrop", 12, "permanent_crop"),
    (40, "highway", 50, "Highway", 15, "road"),
    (41, "compact_highrise", 50, "Residential", 1, "built"),
    (42, "compact_midrise", 50, "Residential", 2, "built"),
    (43, "compact_lowrise", 50, "Residential", 3, "built"),
    (44, "open_highrise", 50, "Residential", 4, "built"),
    (45, "open_midrise", 50, "Residential", 5, "built"),
    (46, "open_lowrise", 50, "Residential", 6, "built"),
    (47, "lightweight_lowrise", 50, "Residential", 7, "built"),
    (48, "large_lowrise", 50, "Industrial", 8, "built"),
    (49, "sparsely_built", 50, "Residential", 9, "built"),
    (50, "heavy_industry", 50, "Industrial", 10, "built"),
    (60, "river", 80, "River", 17, "water"),
    (61, "lake", 80, "SeaLake", 17, "water"),
    (62, "marine_water", 80, "SeaLake", 17, "sea"),
    (63, "turbid_water", 80, "SeaLake", 17, "sea"),
    (64, "sediment_laden_water", 80, "SeaLake", 17, "sea"),
    (65, "shallow_water", 80, "SeaLake", 17, "sea"),
    (66, "foam", 80, "SeaLake", 17, "sea"),
    (67, "ship", 80, "SeaLake", 17, "sea"),
    (68, "marine_debris", 80, "SeaLake", 17, "sea"),
    (69, "sargassum", 80, "SeaLake", 17, "sea"),
])
BY_NAME = {c.name: c for c in CLASSES}
BY_CODE = {c.code: c for c in CLASSES}
C = {c.name: np.uint8(c.code) for c in CLASSES}  # name -> code, for np.where/np.select
CODES = np.array([c.code for c in CLASSES], np.uint8)
CROPS = tuple(c.name for c in CLASSES if c.group == "crop")
_LOOKUP_SIZE = 256


def _lookup(attribute: str, missing) -> np.ndarray:
    """code -> attribute as a 256-entry array, so a label raster converts with one fancy index."""
    values = [getattr(c, attribute) for c in CLASSES]
    table = np.full(_LOOKUP_SIZE, missing, dtype=np.asarray(values[0] if values[0] is not None else missing).dtype)
    for c, v in zip(CLASSES, values):
        table[c.code] = missing if v is None else v
    return table


WORLDCOVER_OF = _lookup("worldcover", 0).astype(np.uint8)


def worldcover(codes: np.ndarray) -> np.ndarray:
    """ESA WorldCover codes (uint8) of land-use codes (any shape)."""
    return WORLDCOVER_OF[np.asarray(codes, np.uint8)]


# -- hashing and lattices ---------------------------------------------------------------------------
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-mixed uint64 from any uint64 (wrapping arithmetic, exact everywhere)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def cell_hash(*keys) -> np.ndarray:
    """One uint64 per element from integer keys (arrays broadcast together)."""
    with np.errstate(over="ignore"):
        h = np.uint64(0x9E3779B97F4A7C15)
        for k in keys:
            h = _mix(np.asarray(k).astype(np.int64).astype(np.uint64) ^ (h * np.uint64(0x100000001B3)))
    return h


def unit_float(h: np.ndarray) -> np.ndarray:
    """uint64 hash -> float64 in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


@dataclass(frozen=True)
class Cells:
    """Nearest jittered-lattice seed of each point: the cell id, the seed and the distance to the cell edge."""
    ids: np.ndarray        # uint64 (N,)
    seeds: np.ndarray      # float64 (N, 3) metres
    edge_m: np.ndarray     # float64 (N,) distance to the nearest other cell (half the gap d2 - d1)


def voronoi(xyz: np.ndarray, cell_m: float, salt: int) -> Cells:
    """Voronoi cells of a 3-D lattice with one jittered seed per cube of side ``cell_m`` (the sphere cuts them
    into irregular polygons); 27 neighbouring cubes are searched."""
    grid = np.floor(xyz / cell_m).astype(np.int64)                     # (N, 3)
    n = len(xyz)
    best_d = np.full(n, np.inf)
    second_d = np.full(n, np.inf)
    best_id = np.zeros(n, np.uint64)
    best_seed = np.zeros((n, 3))
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                c = grid + np.array([dx, dy, dz])
                h = cell_hash(salt, c[:, 0], c[:, 1], c[:, 2])
                jitter = np.stack([unit_float(cell_hash(h, axis)) for axis in range(3)], axis=1)
                seed = (c + jitter) * cell_m
                d = np.sqrt(((xyz - seed) ** 2).sum(axis=1))
                closer = d < best_d
                second_d = np.where(closer, best_d, np.minimum(second_d, d))
                best_d = np.where(closer, d, best_d)
                best_id = np.where(closer, h, best_id)
                best_seed[closer] = seed[closer]
    return Cells(best_id, best_seed, (second_d - best_d) / 2)


def _sigmoid(x):
    return 1.0 / (1.0 + det.exp(-x))


def area_fraction(noise: np.ndarray) -> np.ndarray:
    """Approximate normal CDF of a unit-variance noise field: thresholds become area fractions."""
    return _sigmoid(1.702 * noise)


# -- sizes of the patterns (metres) -----------------------------------------------------------------
PARCEL_M, SMALL_PARCEL_M, MARGIN_M = 260.0, 120.0, 5.0  # field parcels (large, smallholder), 1-pixel margins
ROAD_CELL_M, ROAD_HALF_WIDTH_M = 2200.0, 7.0
BLOCK_M, STREET_HALF_WIDTH_M = 160.0, 5.0
RIVER_HALF_WIDTH = 0.011               # of the river noise field (~1-3 pixels where its gradient is typical)
FOREST_PATCH_M = 420.0                 # the unit in which frontier forest is cleared
URBAN_THRESHOLD, URBAN_GROWTH = 1.55, 0.012   # urban noise above this is built (threshold falls per year)
CLEARING_START, CLEARING_SPAN = 2005.0, 80.0  # a frontier patch is cleared in a year uniform over the span
SHIP_CELL_M, SHIP_RADIUS_M, SHIP_PROB = 700.0, 14.0, 0.25
SEA_MAX_ELEVATION_M = 150.0
_SALT = {"parcel": 11, "road": 12, "block": 13, "forest": 14, "ship": 15, "crop": 16}


def crop_weights(t_mean, t_warm, humidity) -> np.ndarray:
    """Share of each crop of CROPS by climate (N, len(CROPS)): half a base mix, half by climate (winter cereals
    and beet where summers are mild, maize and soybean where hot and wet, sunflower where dry, rice where
    hot and very wet)."""
    mild = _sigmoid((24.0 - t_warm) / 2.0)
    hot = 1 - mild
    wet = _sigmoid((humidity - 1.2) * 3.0)
    very_wet_hot = _sigmoid((humidity - 2.0) * 3.0) * _sigmoid((t_mean - 20.0) / 2.0)
    weights = {
        "winter_wheat": 1.2 * mild + 0.4 * hot * (1 - wet), "winter_barley": 0.8 * mild,
        "maize": 0.4 * mild + 1.3 * hot * wet, "soybean": 0.1 * mild + 1.0 * hot * wet,
        "rapeseed": 0.6 * mild, "sunflower": 0.2 * mild + 0.8 * hot * (1 - wet),
        "sugar_beet": 0.5 * mild, "rice": 2.5 * very_wet_hot + 0.05,
    }
    w = np.stack([np.broadcast_to(weights[name], np.shape(t_mean)) for name in CROPS], axis=-1)
    w = w / w.sum(axis=-1, keepdims=True)
    return 0.5 * w + 0.5 * CROP_MIX                                     # every region grows a bit of everything


CROP_MIX = np.array([0.16, 0.12, 0.16, 0.14, 0.08, 0.12, 0.14, 0.08])  # CROPS order: a farming region's base mix


def _choose(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from each row of ``weights`` by the uniform ``u`` (inverse CDF)."""
    cdf = np.cumsum(weights, axis=-1)
    return np.minimum((u[:, None] >= cdf).sum(axis=-1), weights.shape[-1] - 1)


CLIMATE_NODE_DEG = 0.1   # land use sees the climate normals interpolated from an ERA5-Land-like grid
LAPSE_K_PER_M = 0.0065


def land_climate(world: World, lat: np.ndarray, lon: np.ndarray, elevation: np.ndarray) -> dict[str, np.ndarray]:
    """Climate normals at points, bilinear between 0.1-degree nodes, temperatures moved to the point's height.

    A function of place only (so pixels, AlphaEarth points and DeepEarth observations agree), and cheap:
    a chip needs four nodes instead of twelve months of climate per pixel.
    """
    fy, fx = lat / CLIMATE_NODE_DEG, lon / CLIMATE_NODE_DEG
    iy, ix = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    wy, wx = fy - iy, fx - ix
    corners = np.stack([np.stack([iy + dy, ix + dx], axis=-1) for dy in (0, 1) for dx in (0, 1)], axis=1)  # (N, 4, 2)
    nodes, inverse = np.unique(corners.reshape(-1, 2), axis=0, return_inverse=True)
    node_lat, node_lon = nodes[:, 0] * CLIMATE_NODE_DEG, nodes[:, 1] * CLIMATE_NODE_DEG
    at_nodes = world.climate_normals(node_lat, node_lon)
    at_nodes["elevation"] = world.elevation(node_lat, node_lon)
    weights = np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], axis=1)     # (N, 4)
    inverse = inverse.reshape(-1, 4)
    out = {k: (v[inverse] * weights).sum(axis=1) for k, v in at_nodes.items()}
    lapse = LAPSE_K_PER_M * (elevation - out.pop("elevation"))
    for key in ("t_mean", "t_cold", "t_warm"):
        out[key] = out[key] - lapse
    return out


def land_use(world: World, lat, lon, year: int = REFERENCE_YEAR, elevation: np.ndarray | None = None) -> np.ndarray:
    """Land-use class code (uint8, CLASSES) at points in ``year``; ``lat``/``lon`` any matching shape
    (``elevation``, if given, is World.elevation at the points: saves computing it twice)."""
    lat = np.asarray(lat, float)
    shape = lat.shape
    lat, lon = lat.ravel(), np.asarray(lon, float).ravel()
    xyz = lonlat_to_xyz(lat, lon)
    elev = world.elevation(lat, lon) if elevation is None else np.asarray(elevation, float).ravel()
    normals = land_climate(world, lat, lon, elev)
    t_mean, t_warm = normals["t_mean"], normals["t_warm"]
    humidity = normals["precip_mm"] / np.maximum(20.0 * t_mean + 140.0, 100.0)  # > 1: humid (Koppen B limit)
    code = np.zeros(len(lat), np.uint8)

    def put(mask, name_or_codes):
        value = C[name_or_codes] if isinstance(name_or_codes, str) else name_or_codes
        np.copyto(code, np.asarray(value, np.uint8), where=mask & (code == 0))

    # water first: sea, lakes, rivers
    ocean = world.noise("ocean", xyz, [1.2e5, 4e4, 1.2e4], [1.0, 0.5, 0.25]) - 1.5
    sea = (ocean > 0) & (elev < SEA_MAX_ELEVATION_M)                  # no sea on plateaus
    if sea.any():
        put(sea, _sea_surface(world, xyz, ocean, normals, sea))
    lake = world.noise("water", xyz, [5e3, 1.5e3, 4e2], [1.0, 0.7, 0.4])
    put((lake > 1.65) & (humidity > 0.35) & (t_warm > 0), "lake")
    river = world.noise("river", xyz, [6e3, 1.8e3], [1.0, 0.35])
    river_gate = world.noise("river-gate", xyz, [4e4]) > -0.4
    put((np.abs(river) < RIVER_HALF_WIDTH) & river_gate & (humidity > 0.4) & (t_warm > 5), "river")

    # roads, denser where people are
    urban = world.noise("urban", xyz, [2.5e4, 6e3, 1.5e3], [1.0, 0.7, 0.35])
    threshold = URBAN_THRESHOLD - URBAN_GROWTH * (year - REFERENCE_YEAR)
    agri_field = world.noise("agri", xyz, [3e4, 8e3, 2.5e3], [1.0, 0.6, 0.3])
    wet_tropics = _sigmoid((humidity - 1.8) * 3.0) * _sigmoid((t_mean - 18.0) / 2.0)   # rainforest stays forest
    highest_fields_m = 1500.0 + 1200.0 * _sigmoid((15.0 - np.abs(lat)) / 3.0)         # tropical highlands are farmed
    suitability = (_sigmoid((t_warm - 17.0) / 1.5) * _sigmoid((t_mean - 2.0) / 2.0) * _sigmoid((humidity - 0.65) * 6.0)
                   * (1.0 - 0.8 * wet_tropics) * _sigmoid((highest_fields_m - elev) / 200.0))
    agricultural = area_fraction(agri_field) < 0.75 * suitability
    roads = voronoi(xyz, ROAD_CELL_M, _SALT["road"])
    road_density = area_fraction(world.noise("road-gate", xyz, [3e4])) < np.where(agricultural | (urban > threshold - 0.5), 0.9, 0.25)
    put((roads.edge_m < ROAD_HALF_WIDTH_M) & road_density & (t_warm > 3), "highway")

    # towns: blocks whose morphology follows the urban intensity at the block's seed
    built = (urban > threshold) & (t_warm > 8.0) & (elev < 3500.0)   # nobody builds towns on ice sheets
    if built.any():
        put(built, _urban_blocks(world, xyz, year, normals, built))

    # fields: parcels with margins; crop per parcel and year
    patch = area_fraction(world.noise("patch", xyz, [1.5e3, 5e2, 1.5e2], [1.0, 0.6, 0.3]))
    cleared = _cleared_forest(world, xyz, year, normals, humidity, patch)
    farmed = agricultural | cleared
    if farmed.any():
        put(farmed, _parcels(world, xyz, year, normals, humidity, farmed, cleared))

    # nature from climate
    put(np.ones(len(lat), bool), _natural(world, xyz, normals, humidity, elev, lake, patch))
    return code.reshape(shape)


def _sea_surface(world, xyz, ocean, normals, sea):
    """Sea-surface class of sea points: shore bands, plumes at river mouths, ships, floating matter."""
    rows = np.flatnonzero(sea)
    p, o = xyz[rows], ocean[rows]
    out = np.full(len(rows), C["marine_water"], np.uint8)
    turbid = world.noise("turbidity", p, [6e3, 1.5e3]) > 0.2
    plume = np.abs(world.noise("river", p, [6e3, 1.8e3], [1.0, 0.35])) < 0.25
    out[(o < 0.25) & turbid] = C["turbid_water"]
    out[(o < 0.18) & plume] = C["sediment_laden_water"]
    out[o < 0.06] = C["shallow_water"]
    out[o < 0.012] = C["foam"]
    filaments = np.abs(world.noise("floating", p, [900.0, 300.0], [1.0, 0.5]))
    gate = world.noise("floating-gate", p, [1.2e4])
    warm = normals["t_mean"][rows] > 20.0
    out[(filaments < 0.03) & (gate > 0.6) & (o > 0.05) & ~warm] = C["marine_debris"]
    out[(filaments < 0.06) & (gate > 0.3) & (o > 0.05) & warm] = C["sargassum"]
    ships = voronoi(p, SHIP_CELL_M, _SALT["ship"])
    near = np.sqrt(((p - ships.seeds) ** 2).sum(axis=1)) < SHIP_RADIUS_M
    has_ship = unit_float(cell_hash(ships.ids, 1)) < SHIP_PROB
    out[near & has_ship & (o > 0.05)] = C["ship"]
    codes = np.zeros(len(xyz), np.uint8)
    codes[rows] = out
    return codes


def _urban_blocks(world, xyz, year, normals, built):
    """Local climate zone of each built point, decided per block at the block's seed."""
    rows = np.flatnonzero(built)
    blocks = voronoi(xyz[rows], BLOCK_M, _SALT["block"])
    intensity = world.noise("urban", blocks.seeds, [2.5e4, 6e3, 1.5e3], [1.0, 0.7, 0.35]) - (
        URBAN_THRESHOLD - URBAN_GROWTH * (year - REFERENCE_YEAR))
    industry = world.noise("industry", blocks.seeds, [5e3, 1.5e3]) > 1.0
    u = unit_float(cell_hash(blocks.ids, 2))
    warm_informal = (normals["t_mean"][rows] > 18.0) & (u < 0.35)
    chosen = np.select(
        [industry & (u < 0.5), industry, intensity > 1.1, (intensity > 0.8) & (u < 0.5), intensity > 0.8,
         (intensity > 0.5) & (u < 0.5), intensity > 0.5, warm_informal, intensity > 0.2],
        [C[n] for n in ("heavy_industry", "large_lowrise", "compact_highrise", "open_highrise", "compact_midrise",
                        "open_midrise", "compact_lowrise", "lightweight_lowrise", "open_lowrise")], C["sparsely_built"])
    codes = np.zeros(len(xyz), np.uint8)
    codes[rows] = chosen
    return codes


def _cleared_forest(world, xyz, year, normals, humidity, patch) -> np.ndarray:
    """Points of frontier forest cleared by ``year`` (each 420 m patch in a year uniform over the span)."""
    frontier = world.noise("frontier", xyz, [6e4, 1.5e4]) > 0.0
    patches = voronoi(xyz, FOREST_PATCH_M, _SALT["forest"])
    clearing_year = CLEARING_START + CLEARING_SPAN * unit_float(cell_hash(patches.ids, 3))
    natural_forest = patch < _tree_fraction(normals, humidity)
    return frontier & (year >= clearing_year) & natural_forest


def _tree_fraction(normals, humidity):
    """Share of natural land under closed forest: humid, a warm enough summer (tree line ~10-12 C) and no long
    warm dry season (savanna and highveld grassland are burnt and grazed open)."""
    dry_season = (1.0 - _sigmoid((normals["precip_driest"] - 15.0) / 6.0)) * _sigmoid((normals["t_cold"] - 5.0) / 2.0)
    return (0.92 * _sigmoid((humidity - 0.95) * 5.0) * _sigmoid((normals["t_warm"] - 12.0) / 1.0)
            * (1.0 - 0.75 * dry_season))


def _parcels(world, xyz, year, normals, humidity, farmed, cleared):
    """Fields: pasture, permanent or annual crops per parcel (crops rotate by year), margins between them."""
    rows = np.flatnonzero(farmed)
    large, small = voronoi(xyz[rows], PARCEL_M, _SALT["parcel"]), voronoi(xyz[rows], SMALL_PARCEL_M, _SALT["parcel"] + 1)
    smallholder = world.noise("field-size", xyz[rows], [2e5, 5e4]) > 0.0
    cells = Cells(np.where(smallholder, small.ids, large.ids), np.where(smallholder[:, None], small.seeds, large.seeds),
                  np.where(smallholder, small.edge_m, large.edge_m))
    u_use = unit_float(cell_hash(cells.ids, 4))
    t_mean, t_warm, hum = normals["t_mean"][rows], normals["t_warm"][rows], humidity[rows]
    mediterranean = _sigmoid((t_mean - 13.0) / 2.0) * _sigmoid((1.6 - hum) * 3.0)
    p_pasture = np.where(cleared[rows], 0.6, 0.12 + 0.15 * _sigmoid((hum - 1.5) * 3.0))
    p_permanent = 0.02 + 0.25 * mediterranean
    crop = np.array([BY_NAME[c].code for c in CROPS], np.uint8)[
        _choose(crop_weights(t_mean, t_warm, hum), unit_float(cell_hash(cells.ids, year, _SALT["crop"])))]
    permanent = np.where(unit_float(cell_hash(cells.ids, 5)) < 0.5, C["vineyard"], C["orchard"])
    out = np.where(u_use < p_pasture, C["pasture"],
                   np.where(u_use < p_pasture + p_permanent, permanent, crop)).astype(np.uint8)
    out[cells.edge_m < MARGIN_M] = C["field_margin"]
    codes = np.zeros(len(xyz), np.uint8)
    codes[rows] = out
    return codes


def _natural(world, xyz, normals, humidity, elev, lake, patch):
    """Natural cover from climate: forest, woodland edges, shrub/grass/bare by aridity, tundra, ice, wetland."""
    t_mean, t_warm = normals["t_mean"], normals["t_warm"]
    mosaic = area_fraction(world.noise("mosaic", xyz, [2e3, 6e2, 2e2], [1.0, 0.6, 0.3]))
    trees = _tree_fraction(normals, humidity)
    conifer = _sigmoid((3.0 - t_mean) / 2.5) * 0.9 + 0.45 * _sigmoid((t_mean - 3.0) / 2.5) * _sigmoid((18.0 - t_mean) / 2.0)
    conifer_patch = area_fraction(world.noise("conifer", xyz, [3e3, 8e2])) < conifer
    bare_share = _sigmoid((0.35 - humidity) * 12.0)
    shrub_share = (1 - bare_share) * (0.25 + 0.5 * _sigmoid((0.9 - humidity) * 5.0))  # heath and scrub everywhere
    return np.select(
        [t_warm < 1.0,
         t_warm < 10.0,
         (lake > 1.15) & (humidity > 0.8) & (elev < 400),
         patch < trees - 0.06,
         patch < trees + 0.04,
         (elev > 2500) & (mosaic < 0.5),
         mosaic < bare_share,
         mosaic < bare_share + shrub_share],
        [np.where(mosaic < 0.2, C["bare_rock"], C["snow_ice"]),
         np.select([elev > 2500, elev > 150], [np.where(mosaic < 0.7, C["grassland"], C["moss_lichen"]),  # alpine
                                               np.where(mosaic < 0.6, C["bare_rock"], C["moss_lichen"])],  # fjell
                   np.where(mosaic < 0.65, C["moss_lichen"], np.where(mosaic < 0.85, C["grassland"], C["bare_rock"]))),
         C["wetland"],
         np.where(conifer_patch, C["conifer_forest"], C["broadleaf_forest"]),
         C["open_woodland"],
         C["bare_rock"],
         np.where(humidity < 0.2, C["bare_soil"], np.where(mosaic < 0.6 * bare_share, C["bare_soil"], C["bare_rock"])),
         C["shrubland"]],
        C["grassland"]).astype(np.uint8)
