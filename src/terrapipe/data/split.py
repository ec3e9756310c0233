"""DeepEarth's spatiotemporal train/test split (reference/deepearth-behaviour.md section 3), made strict.

Test = every point of a held-out year, plus every point of any year inside one of k square regions
that a greedy farthest-point search spreads over the data. What differs from the original, and why:
- distances and box edges are geodesic on the WGS84 ellipsoid (pyproj), not 111 km per degree, so
  a "10 km" box really is 10 x 10 km and "15 km apart" really is 15 km at any latitude;
- the minimum distance is never relaxed: if no candidate is far enough, fewer regions are placed and
  a warning says so (the original multiplied the distance by 0.8 and silently broke its own rule);
- where boxes overlap, the lowest region id wins (the original let the last loop iteration win);
- the training bounds come from the final training points (the original read a stale column).
Everything here is a pure function of arrays; reading and writing files is the stage's job.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from terrapipe.config import SplitParams
from terrapipe.errors import ConfigError, TerrapipeError

ASSIGNMENT_COLUMNS = ["id", "split", "split_reason", "latitude", "longitude"]
COLOURS = {"train": "#2E86AB", "temporal_test": "#A23B72", "spatial_test": "#F18F01", "both": "#34495E"}
BOX_DEFINITION = ("north/south edges s/2 km from the centre along its meridian (geodesic); east/west edges "
                  "s/2 km from the centre along the parallel through it (arc length on the WGS84 ellipsoid)")


@dataclass(frozen=True)
class Region:
    """One square spatial test region; ``center_index`` indexes the input arrays."""
    region_id: int
    center_index: int
    center_lat: float
    center_lng: float
    north: float
    south: float
    east: float
    west: float
    size_km: float

    @property
    def width_deg(self) -> float:
        """Longitude span, correct also when the box crosses the antimeridian (east < west)."""
        return (self.east - self.west) % 360.0

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Points inside or on the box edges (inclusive, as in the original)."""
        return (lat >= self.south) & (lat <= self.north) & ((lon - self.west) % 360.0 <= self.width_deg)

    def bounds(self) -> dict[str, float]:
        return {"north": self.north, "south": self.south, "east": self.east, "west": self.west}


@dataclass(frozen=True)
class SplitResult:
    split: np.ndarray          # "train" / "test" per point
    split_reason: np.ndarray   # temporal_train / temporal_test / spatial_test_region_{k}
    region_of: np.ndarray      # 1-based region id per point, 0 outside every region
    regions: tuple[Region, ...]
    params: SplitParams
    statistics: dict
    train_spatial_bounds: dict[str, float]
    warnings: tuple[str, ...]
    has_time: bool

    @property
    def num_regions_found(self) -> int:
        return len(self.regions)


def _geod():
    from pyproj import Geod

    return Geod(ellps="WGS84")


def _wrap180(lon):
    return (np.asarray(lon, dtype=float) + 180.0) % 360.0 - 180.0


def geodesic_km(lat, lon, lat0: float, lon0: float) -> np.ndarray:
    """Geodesic distance (km, WGS84) from every (lat, lon) to one point, vectorised."""
    lat = np.atleast_1d(np.asarray(lat, dtype=float))
    lon = np.atleast_1d(np.asarray(lon, dtype=float))
    _, _, metres = _geod().inv(lon, lat, np.full_like(lon, lon0), np.full_like(lat, lat0))
    return np.asarray(metres) / 1000.0


def square_region(region_id: int, center_index: int, lat: float, lon: float, size_km: float) -> Region:
    """An s x s km box centred on (lat, lon); see BOX_DEFINITION. Undefined within s/2 km of a pole."""
    geod = _geod()
    half_m = size_km * 500.0
    _, north, _ = geod.fwd(lon, lat, 0.0, half_m)
    _, south, _ = geod.fwd(lon, lat, 180.0, half_m)
    # A parallel is not a geodesic: its length per radian of longitude is N(lat) * cos(lat).
    phi = np.radians(lat)
    parallel_radius_m = geod.a * np.cos(phi) / np.sqrt(1.0 - geod.es * np.sin(phi) ** 2)
    half_dlon = np.degrees(half_m / parallel_radius_m)
    return Region(region_id=region_id, center_index=int(center_index), center_lat=float(lat),
                  center_lng=float(lon), north=float(north), south=float(south),
                  east=float(_wrap180(lon + half_dlon)), west=float(_wrap180(lon - half_dlon)),
                  size_km=float(size_km))


def farthest_point_centres(lat: np.ndarray, lon: np.ndarray, params: SplitParams) -> list[int]:
    """Indices of up to ``num_regions`` centres, each >= min_distance_km from all earlier ones.

    Greedy farthest-point over ``candidates`` points drawn with a seeded RNG: the first candidate is
    region 1, each next one maximises its distance to the nearest chosen centre. The constraint is
    never relaxed, so the list is shorter than asked for when no candidate qualifies.
    """
    rng = np.random.default_rng(params.seed)
    candidates = rng.choice(len(lat), size=min(params.candidates, len(lat)), replace=False)
    nearest_km = np.full(len(candidates), np.inf)
    chosen: list[int] = []
    for _ in range(params.num_regions):
        # > 0 as well: a second box on the same spot adds nothing (and d = 0 must not pick it).
        eligible = (nearest_km >= params.min_distance_km) & (nearest_km > 0)
        if not eligible.any():
            break
        best = int(candidates[np.argmax(np.where(eligible, nearest_km, -1.0))])
        chosen.append(best)
        nearest_km = np.minimum(nearest_km, geodesic_km(lat[candidates], lon[candidates], lat[best], lon[best]))
    return chosen


def split_statistics(split: np.ndarray, split_reason: np.ndarray, region_of: np.ndarray, num_regions: int,
                     species: np.ndarray | None = None, year: np.ndarray | None = None) -> dict:
    """The original's ``split_statistics`` keys (same order), then all-species, per-region and per-year counts."""
    total = len(split)
    train = split == "train"
    stats = {
        "total_observations": total,
        "train_count": int(train.sum()),
        "test_count": int((~train).sum()),
        "train_percentage": float(train.sum() / total * 100),
        "test_percentage": float((~train).sum() / total * 100),
        "temporal_test_count": int((split_reason == "temporal_test").sum()),
        "spatial_test_count": int((region_of > 0).sum()),
    }
    if species is not None:
        stats["unique_species_train"] = len(np.unique(species[train]))
        stats["unique_species_test"] = len(np.unique(species[~train]))
        stats["unique_species_total"] = len(np.unique(species))
    by_region = np.bincount(region_of, minlength=num_regions + 1)[1:]
    stats["spatial_test_count_by_region"] = {str(k): int(c) for k, c in enumerate(by_region, 1)}
    if year is not None:
        years, counts = np.unique(year, return_counts=True)
        stats["year_counts"] = {str(int(y)): int(c) for y, c in zip(years, counts)}
    return stats


def spatiotemporal_split(lat, lon, year, params: SplitParams, *, species=None, where: str = "split") -> SplitResult:
    """Assign every point to train or test (temporal holdout + geodesic square regions).

    ``year`` is None for datasets without time; ``species`` (optional) feeds the statistics;
    ``where`` is the params path used in messages (e.g. "split.deepearth").
    """
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    year = None if year is None else np.asarray(year)
    species = None if species is None else np.asarray(species)
    if any(a is not None and a.shape != lat.shape for a in (lon, year, species)):
        raise ValueError("lat, lon, year and species must be 1-D arrays of the same length")
    if year is None and params.test_years:
        raise ConfigError(f"{where}.test_years = {params.test_years} but this dataset has no time axis; "
                          f"set {where}.test_years: []")
    if len(lat) == 0:
        raise TerrapipeError(f"{where}: the dataset has no points, so none of the {params.num_regions} regions "
                             f"could be placed. Check the input data, or set {where}.num_regions: 0")

    regions = tuple(square_region(k, i, lat[i], lon[i], params.region_size_km)
                    for k, i in enumerate(farthest_point_centres(lat, lon, params), 1))
    warnings = ()
    if len(regions) < params.num_regions:
        warnings = (f"{where}: placed {len(regions)} of {params.num_regions} regions: no candidate lies "
                    f">= {params.min_distance_km} km from the regions already chosen (the distance is not "
                    f"relaxed). Lower {where}.min_distance_km or {where}.num_regions to silence this.",)

    region_of = np.zeros(len(lat), dtype=np.int64)
    for region in regions:  # ascending ids: the lowest id keeps a point that lies in overlapping boxes
        region_of[(region_of == 0) & region.contains(lat, lon)] = region.region_id
    temporal = np.isin(year, params.test_years) if year is not None else np.zeros(len(lat), dtype=bool)
    split = np.where((region_of > 0) | temporal, "test", "train")
    reason = np.where(region_of > 0, np.char.add("spatial_test_region_", region_of.astype(str)),
                      np.where(temporal, "temporal_test", "temporal_train"))
    train = split == "train"
    if not train.any():
        raise TerrapipeError(f"{where}: all {len(lat)} points fell in the test set. Lower {where}.region_size_km "
                             f"or {where}.num_regions, or hold out fewer {where}.test_years")
    # From the final assignment: the original computed these from the dataset's old split column.
    bounds = {"north": float(lat[train].max()), "south": float(lat[train].min()),
              "east": float(lon[train].max()), "west": float(lon[train].min())}
    return SplitResult(split=split, split_reason=reason, region_of=region_of, regions=regions, params=params,
                       statistics=split_statistics(split, reason, region_of, len(regions), species, year),
                       train_spatial_bounds=bounds, warnings=warnings, has_time=year is not None)


def observation_table(result: SplitResult, points: pd.DataFrame) -> pd.DataFrame:
    """One row per point: id (string), split, split_reason, latitude, longitude, then points' other columns.

    ``points`` holds ``id``, ``latitude``, ``longitude`` and any extra per-point fields, in the order
    given to spatiotemporal_split. The first five columns are ASSIGNMENT_COLUMNS (assignments.parquet).
    """
    points = points.reset_index(drop=True)
    head = pd.DataFrame({"id": points["id"].astype(str), "split": result.split, "split_reason": result.split_reason,
                         "latitude": points["latitude"], "longitude": points["longitude"]})
    return pd.concat([head, points.drop(columns=["id", "latitude", "longitude"])], axis=1)


def _native(value):
    return value.item() if isinstance(value, np.generic) else value


def _strategy(result: SplitResult) -> dict:
    p = result.params
    temporal = {"train_years": f"all except {p.test_years}" if p.test_years else "all",
                "test_years": list(p.test_years),
                "description": "Hold out whole years to test temporal generalization"
                if result.has_time else "The dataset has no time axis: no temporal holdout"}
    spatial = {"num_test_regions": result.num_regions_found, "num_regions_requested": p.num_regions,
               "region_size_km": p.region_size_km, "min_distance_km": p.min_distance_km,
               "candidates": p.candidates, "seed": p.seed,
               "distance": "geodesic on the WGS84 ellipsoid; never relaxed", "box": BOX_DEFINITION,
               "warnings": list(result.warnings),
               "description": "Spatial carve-outs (all years) for testing geographic generalization"}
    return {"temporal_split": temporal, "spatial_split": spatial}


def split_to_json(result: SplitResult, table: pd.DataFrame, meta: dict, *, center_column: str = "id",
                  species_column: str | None = None, mappings_file: str | None = None) -> dict:
    """The original split JSON: dataset_info (= meta), split_strategy, train_spatial_bounds,
    test_spatial_regions, split_statistics and observation_mappings.

    ``table`` comes from observation_table. A region's centre is named by ``table[center_column]``
    under the key ``center_{center_column}`` (DeepEarth: center_gbif_id) and, with ``species_column``,
    ``center_species``. With ``mappings_file`` the mappings are left to that file (written by the
    caller from the same table) and the JSON names it under ``observation_mappings_file``.
    """
    regions = []
    for region in result.regions:
        centre = table.iloc[region.center_index]
        entry = {"region_id": region.region_id, f"center_{center_column}": _native(centre[center_column])}
        if species_column:
            entry["center_species"] = _native(centre[species_column])
        entry.update(center_lat=region.center_lat, center_lng=region.center_lng, bounds=region.bounds(),
                     size_km=region.size_km)
        regions.append(entry)
    doc = {"dataset_info": dict(meta), "split_strategy": _strategy(result),
           "train_spatial_bounds": result.train_spatial_bounds, "test_spatial_regions": regions,
           "split_statistics": result.statistics}
    if mappings_file:
        doc["observation_mappings_file"] = mappings_file
    else:
        records = table.set_index("id").astype(object)
        doc["observation_mappings"] = records.where(records.notna(), None).to_dict(orient="index")
    return doc


def plot_split(result: SplitResult, lat, lon, year, path: str | Path, *, species=None,
               title: str = "Spatiotemporal train/test split") -> None:
    """PNG like the original's figure: map with region boxes, per-year bars, species coverage."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    panels = 1 + (year is not None) + (species is not None)
    fig = Figure(figsize=(7 + 4.5 * (panels - 1), 6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False, width_ratios=[1.6] + [1] * (panels - 1))[0]
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.2, top=0.86, wspace=0.3)  # constrained layout: +0.3 s
    fig.suptitle(title, fontweight="bold")
    groups = (("train", "train", result.split == "train"),
              ("temporal_test", "temporal test", result.split_reason == "temporal_test"),
              ("spatial_test", "spatial test", result.region_of > 0))

    ax = axes[0]
    size = float(np.clip(30_000 / len(lat), 1.0, 12.0))  # visible for a few dozen sites, no blot at 50k
    for key, label, mask in groups:
        if mask.any():
            ax.scatter(lon[mask], lat[mask], s=size if key == "train" else 2 * size, c=COLOURS[key],
                       linewidths=0, label=f"{label} ({int(mask.sum()):,})")
    for region in result.regions:
        ax.add_patch(Rectangle((region.west, region.south), region.width_deg, region.north - region.south,
                               fill=False, edgecolor=COLOURS["spatial_test"], linewidth=1.5))
        ax.annotate(f"R{region.region_id}", (region.center_lng, region.north), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom",
                    fontsize=8, fontweight="bold", color=COLOURS["spatial_test"],
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set_aspect(1.0 / max(np.cos(np.radians(np.mean(lat))), 0.1))  # degrees of lon vs lat on the ground
    ax.set(xlabel="Longitude", ylabel="Latitude",
           title=f"{result.num_regions_found} test regions, {result.params.region_size_km:g} x "
                 f"{result.params.region_size_km:g} km, >= {result.params.min_distance_km:g} km apart")
    # Below the map, not loc="best": that search costs ~1 s at 50k points and may still cover a box.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8, markerscale=2, frameon=False)
    ax.grid(alpha=0.3, linestyle="--")

    rest = iter(axes[1:])
    if year is not None:
        ax = next(rest)
        year = np.asarray(year)
        years = np.unique(year)
        x = np.arange(len(years))
        bottom = np.zeros(len(years))
        for key, label, mask in groups:
            counts = np.array([np.sum(mask & (year == y)) for y in years])
            ax.bar(x, counts, bottom=bottom, color=COLOURS[key], label=label)
            bottom += counts
        ax.set_xticks(x, [str(int(y)) for y in years], rotation=60, fontsize=7)
        ax.set(ylabel="Points", title=f"Per year (held out: {result.params.test_years or 'none'})")
        ax.legend(fontsize=8)
    if species is not None:
        ax = next(rest)
        species = np.asarray(species)
        train_species = set(species[result.split == "train"])
        test_species = set(species[result.split == "test"])
        counts = [len(train_species - test_species), len(test_species - train_species),
                  len(train_species & test_species)]
        bars = ax.bar(["train only", "test only", "both"], counts,
                      color=[COLOURS["train"], COLOURS["temporal_test"], COLOURS["both"]])
        ax.bar_label(bars)
        ax.set(ylabel="Species", title="Species coverage")
    fig.savefig(path, dpi=150)
