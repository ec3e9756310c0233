"""Sample backend of fetch_alphaearth: AlphaEarth-like points drawn from the sample world.

Raw layout (the http backend writes exactly the same files):

    alphaearth_metadata.csv    latitude, longitude, elevation_m, event_date (ISO 8601)
    alphaearth_embeddings.pt   torch float32 [N, 64], rows aligned with the CSV

It carries the dirt the cleaning stage must catch (sentinel elevations, bad dates, ...).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from terrapipe.sources.landscape import land_use, worldcover
from terrapipe.sources.streams import matmul, unit_vectors
from terrapipe.sources.streams import rng as stream
from terrapipe.sources.world import World, lonlat_to_xyz

ALPHAEARTH_YEARS = (2017, 2024)
# Planted faults, one per dirty row, in turn; the cleaning stage must drop every one of them.
DIRT_KINDS = ("nan_elevation", "elevation_9999", "elevation_32767", "elevation_-32768",
              "elevation_out_of_limits", "unparseable_date", "latitude_over_90", "nonfinite_embedding")
SENTINEL_DIRT = {"elevation_9999": 9999.0, "elevation_32767": 32767.0, "elevation_-32768": -32768.0}
BAD_DATES = ("not-a-date", "2021-13-45")
POINTS_PER_CHUNK = 20_000      # AlphaEarth points evaluated at a time (bounded memory)
EMBEDDING_DIM, LAND_DIM, WOBBLE_DIM = 64, 16, 8
PLACE_WAVELENGTHS_M = [3e6, 1e6, 3e5, 1e5, 3e4, 1e4, 3e3, 1e3] * 4
CLASS_WEIGHT, GROUP_WEIGHT, WOBBLE_WEIGHT = 3.0, 4.0, 0.6


def _uniform_in_boxes(rng: np.random.Generator, boxes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points shared equally among (west, south, east, north) boxes."""
    sizes = [len(part) for part in np.array_split(np.arange(n), len(boxes))]
    west, south, east, north = (np.repeat([b[i] for b in boxes], sizes) for i in range(4))
    return rng.uniform(south, north), rng.uniform(west, east)


def plant_dirt(rng: np.random.Generator, lat, elev, dates, emb, fraction: float) -> np.ndarray:
    """Corrupt ``fraction`` of the rows in place, DIRT_KINDS in turn; return each row's kind ('' if clean)."""
    n = len(lat)
    rows = rng.choice(n, int(round(fraction * n)), replace=False)
    kinds = np.array([DIRT_KINDS[i % len(DIRT_KINDS)] for i in range(len(rows))], dtype=object)
    for kind in DIRT_KINDS:
        hit = rows[kinds == kind]
        k = len(hit)
        if kind == "nan_elevation":
            elev[hit] = np.nan
        elif kind in SENTINEL_DIRT:
            elev[hit] = SENTINEL_DIRT[kind]
        elif kind == "elevation_out_of_limits":   # inside |elev| <= 10000, outside [-500, 9000]
            elev[hit] = np.where(rng.random(k) < 0.5, rng.uniform(-3000, -600, k), rng.uniform(9100, 9900, k))
        elif kind == "unparseable_date":
            dates[hit] = rng.choice(BAD_DATES, k)
        elif kind == "latitude_over_90":
            lat[hit] = rng.uniform(90.5, 135.0, k)
        else:
            emb[hit, rng.integers(0, emb.shape[1], k)] = rng.choice([np.nan, np.inf, -np.inf], k)
    labels = np.full(n, "", dtype=object)
    labels[rows] = kinds
    return labels


def _iso_dates(rng: np.random.Generator, n: int, first_year: int, last_year: int) -> tuple[np.ndarray, np.ndarray]:
    """Years and ISO 8601 UTC timestamps spread uniformly over the years, any time of day."""
    import pandas as pd

    start = pd.Timestamp(f"{first_year}-01-01", tz="UTC").value // 10**9
    end = pd.Timestamp(f"{last_year + 1}-01-01", tz="UTC").value // 10**9
    stamps = pd.to_datetime(rng.integers(start, end, n), unit="s", utc=True)
    return stamps.year.to_numpy(), stamps.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy(dtype=object)


def alphaearth_embedding(world: World, lat, lon, land_use_codes, year) -> np.ndarray:
    """AlphaEarth-like unit vectors (N, 64) of points in their year: smooth in place, moved by land use.

    A design vector of 32 place features (noise fields from 1,000 to 3,000 km), the land-use class's own
    direction (weight CLASS_WEIGHT) and its WorldCover group's (GROUP_WEIGHT), and a small year-to-year
    wobble, randomly projected to 64-D. Where the cover changes between years (clearing, new buildings)
    the embedding turns (cosine about 0.6); where only the crop rotates, less (about 0.85); where nothing
    changes it stays near 0.95, as annual AlphaEarth embeddings do.
    """
    xyz = lonlat_to_xyz(lat, lon)
    year = np.asarray(year, np.int64)
    place = np.stack([world.noise(f"ae-{i}", xyz, [w]) for i, w in enumerate(PLACE_WAVELENGTHS_M)], axis=1)
    codes = np.asarray(land_use_codes, np.uint8)
    classes = unit_vectors(world.seed, "ae-class", range(256), LAND_DIM)[codes]            # (N, 16)
    groups = unit_vectors(world.seed, "ae-group", range(256), LAND_DIM)[worldcover(codes)]
    wobble = np.zeros((len(codes), WOBBLE_DIM))
    for y in np.unique(year):                                                             # (N, 8)
        same = year == y
        wobble[same] = np.stack([world.noise(f"ae-year-{i}", xyz[same], [3e4], extra=int(y))
                                 for i in range(WOBBLE_DIM)], axis=1)
    drift = ((year - 2020.0) / 10.0)[:, None]
    design = np.concatenate([place, CLASS_WEIGHT * classes, GROUP_WEIGHT * groups, WOBBLE_WEIGHT * wobble, drift],
                            axis=1)                                                       # (N, 73)
    projection = stream(world.seed, "ae-projection").normal(size=(design.shape[1], EMBEDDING_DIM))
    emb = matmul(design, projection / np.sqrt(design.shape[1]))
    return emb / np.sqrt((emb ** 2).sum(axis=1, keepdims=True))


def sample_alphaearth(params, study):
    """(metadata DataFrame, float32 [N, 64] embeddings, planted dirt kind per row) for the AOIs and DeepEarth box."""
    import pandas as pd

    sample = params.sources.alphaearth.sample
    rng, world, n = stream(params.seed, "alphaearth"), World(params.seed), sample.n_points
    boxes = [tuple(box) for box in study.aois[["west", "south", "east", "north"]].itertuples(index=False)]
    lat, lon = _uniform_in_boxes(rng, boxes + [study.deepearth_bbox], n)
    elev = rng.normal(0.0, 2.0, n)                 # DEM noise; the terrain is added chunk by chunk below
    years, dates = _iso_dates(rng, n, *ALPHAEARTH_YEARS)
    emb = np.empty((n, EMBEDDING_DIM), np.float32)
    for start in range(0, n, POINTS_PER_CHUNK):  # the world's fields need ~1 kB per point: bound it
        rows = np.arange(start, min(start + POINTS_PER_CHUNK, n))
        elev[rows] += world.elevation(lat[rows], lon[rows])
        codes = np.empty(len(rows), np.uint8)
        for year in np.unique(years[rows]):       # the land use of each point's own year
            same = years[rows] == year
            codes[same] = land_use(world, lat[rows][same], lon[rows][same], int(year))
        emb[rows] = alphaearth_embedding(world, lat[rows], lon[rows], codes, years[rows])
    dirt = plant_dirt(rng, lat, elev, dates, emb, sample.dirty_fraction)
    return pd.DataFrame({"latitude": lat, "longitude": lon, "elevation_m": elev, "event_date": dates}), emb, dirt


def fetch_alphaearth(params, study, out_dir: Path) -> None:
    """Write alphaearth_metadata.csv and alphaearth_embeddings.pt (the layout DeepEarth publishes)."""
    import torch

    frame, embeddings, _ = sample_alphaearth(params, study)
    frame.to_csv(Path(out_dir) / "alphaearth_metadata.csv", index=False, chunksize=10_000)  # bounded text buffers
    torch.save(torch.from_numpy(embeddings), Path(out_dir) / "alphaearth_embeddings.pt")
