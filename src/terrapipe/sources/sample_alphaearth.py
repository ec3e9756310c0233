"""Sample backend of fetch_alphaearth: AlphaEarth-like points drawn from the sample world.

Raw layout (the http backend writes exactly the same files):

    alphaearth_metadata.csv    latitude, longitude, elevation_m, event_date (ISO 8601)
    alphaearth_embeddings.pt   torch float32 [N, 64], rows aligned with the CSV

It carries the dirt the cleaning stage must catch (sentinel elevations, bad dates, ...).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from terrapipe.sources.streams import rng as stream
from terrapipe.sources.world import World

ALPHAEARTH_YEARS = (2017, 2024)
# Planted faults, one per dirty row, in turn; the cleaning stage must drop every one of them.
DIRT_KINDS = ("nan_elevation", "elevation_9999", "elevation_32767", "elevation_-32768",
              "elevation_out_of_limits", "unparseable_date", "latitude_over_90", "nonfinite_embedding")
SENTINEL_DIRT = {"elevation_9999": 9999.0, "elevation_32767": 32767.0, "elevation_-32768": -32768.0}
BAD_DATES = ("not-a-date", "2021-13-45")
POINTS_PER_CHUNK = 20_000      # AlphaEarth points evaluated at a time (bounded memory)


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


def sample_alphaearth(params, study):
    """(metadata DataFrame, float32 [N, 64] embeddings, planted dirt kind per row) for the AOIs and DeepEarth box."""
    import pandas as pd

    sample = params.sources.alphaearth.sample
    rng, world, n = stream(params.seed, "alphaearth"), World(params.seed), sample.n_points
    boxes = [tuple(box) for box in study.aois[["west", "south", "east", "north"]].itertuples(index=False)]
    lat, lon = _uniform_in_boxes(rng, boxes + [study.deepearth_bbox], n)
    elev = world.elevation(lat, lon) + rng.normal(0.0, 2.0, n)
    years, dates = _iso_dates(rng, n, *ALPHAEARTH_YEARS)
    emb = np.empty((n, 64), np.float32)
    for start in range(0, n, POINTS_PER_CHUNK):  # the world's fields need ~1 kB per point: bound it
        rows = slice(start, start + POINTS_PER_CHUNK)
        emb[rows] = world.alphaearth_embedding(lat[rows], lon[rows], world.land_cover(lat[rows], lon[rows]), years[rows])
    dirt = plant_dirt(rng, lat, elev, dates, emb, sample.dirty_fraction)
    return pd.DataFrame({"latitude": lat, "longitude": lon, "elevation_m": elev, "event_date": dates}), emb, dirt


def fetch_alphaearth(params, study, out_dir: Path) -> None:
    """Write alphaearth_metadata.csv and alphaearth_embeddings.pt (the layout DeepEarth publishes)."""
    import torch

    frame, embeddings, _ = sample_alphaearth(params, study)
    frame.to_csv(Path(out_dir) / "alphaearth_metadata.csv", index=False)
    torch.save(torch.from_numpy(embeddings), Path(out_dir) / "alphaearth_embeddings.pt")
