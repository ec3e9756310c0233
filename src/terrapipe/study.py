"""The study definition in data/inputs/ (tracked by data.dvc): AOIs with dates, candidate sites,
the DeepEarth species list and the DeepEarth study box.

Users edit and version these files; params.yaml only says how much of them to use
(study.sites_per_aoi). Every reader validates what it loads and names the file and column at fault.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from terrapipe import paths
from terrapipe.errors import InputDataError
from terrapipe.sources.florida_species import DEFAULT_SPECIES

INPUTS_DIR = paths.INPUTS


@dataclass(frozen=True)
class Study:
    aois: pd.DataFrame       # aoi_id, name, west, south, east, north, start_date, end_date[, koppen, dominant_cover]
    sites: pd.DataFrame      # site_id, aoi_id, latitude, longitude, start_date, end_date (selected)
    species: pd.DataFrame    # taxon_id, taxon_name
    deepearth_bbox: tuple[float, float, float, float]  # west, south, east, north


def _read_csv(path: Path, required: dict[str, str]) -> pd.DataFrame:
    if not path.exists():
        raise InputDataError(path, "missing", "Run `dvc pull data.dvc` (or `terrapipe inputs` for the default one) to get the study definition")
    try:
        frame = pd.read_csv(path, dtype={c: "string" for c, kind in required.items() if kind == "str"})
    except Exception as exc:  # noqa: BLE001 - any parse failure is reported the same way
        raise InputDataError(path, f"not a readable CSV ({exc})", "Fix or restore the file") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputDataError(path, f"missing column(s) {missing}", f"The file needs columns {list(required)}")
    for column, kind in required.items():
        if kind == "float" and not pd.api.types.is_numeric_dtype(frame[column]):
            raise InputDataError(path, f"column '{column}' is not numeric", "Write plain decimal degrees")
        if kind in ("float", "str", "date") and frame[column].isna().any():
            row = int(np.flatnonzero(frame[column].isna().to_numpy())[0]) + 2
            raise InputDataError(path, f"column '{column}' is empty on line {row}", "Fill in the value")
    return frame


def _check_range(path: Path, frame: pd.DataFrame, column: str, low: float, high: float) -> None:
    bad = ~frame[column].between(low, high)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputDataError(path, f"column '{column}' = {frame[column].iloc[row]} on line {row + 2} is outside "
                             f"[{low}, {high}]", "Use decimal degrees (latitude first, longitude east-positive)")


def _parse_dates(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    parsed = pd.to_datetime(frame[column], format="%Y-%m-%d", errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise InputDataError(path, f"column '{column}' = {frame[column].iloc[row]!r} on line {row + 2} is not a date",
                             "Write dates as YYYY-MM-DD")
    return parsed


def _check_labels(path: Path, aois: pd.DataFrame) -> None:
    """The optional ground-truth columns: the place's real Köppen class and dominant WorldCover class."""
    from terrapipe.sources.koppen import is_koppen_code
    from terrapipe.sources.world import WORLDCOVER

    checks = {"koppen": (is_koppen_code, "Write the full Köppen-Geiger code of the place, e.g. Af, BSh, Cfb, Dfc, ET"),
              "dominant_cover": (lambda v: v in WORLDCOVER, f"Use one of the ESA WorldCover names {list(WORLDCOVER)}")}
    for column, (valid, fix) in checks.items():
        if column not in aois.columns:
            continue
        values = aois[column].astype("string")
        bad = values.isna() | ~values.fillna("").map(valid).astype(bool)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputDataError(path, f"column '{column}' = {aois[column].iloc[row]!r} on line {row + 2} is not valid", fix)


def load_study(inputs_dir: str | Path = INPUTS_DIR, sites_per_aoi: int | None = None) -> Study:
    """Load and validate the study definition; keep the first ``sites_per_aoi`` sites of each AOI."""
    import yaml

    inputs_dir = Path(inputs_dir)
    aois_path, sites_path, species_path = (inputs_dir / n for n in ("aois.csv", "sites.csv", "species.csv"))
    aois = _read_csv(aois_path, {"aoi_id": "str", "name": "str", "west": "float", "south": "float",
                                 "east": "float", "north": "float", "start_date": "date", "end_date": "date"})
    for column, (low, high) in {"west": (-180, 180), "east": (-180, 180), "south": (-90, 90), "north": (-90, 90)}.items():
        _check_range(aois_path, aois, column, low, high)
    aois["start_date"] = _parse_dates(aois_path, aois, "start_date")
    aois["end_date"] = _parse_dates(aois_path, aois, "end_date")
    if (aois["south"] >= aois["north"]).any() or (aois["west"] >= aois["east"]).any():
        raise InputDataError(aois_path, "an AOI has south >= north or west >= east", "Give bounds as west < east, south < north")
    if aois["aoi_id"].duplicated().any():
        raise InputDataError(aois_path, f"duplicated aoi_id {aois['aoi_id'][aois['aoi_id'].duplicated()].tolist()}", "Make ids unique")
    _check_labels(aois_path, aois)

    sites = _read_csv(sites_path, {"site_id": "str", "aoi_id": "str", "latitude": "float", "longitude": "float"})
    _check_range(sites_path, sites, "latitude", -90, 90)
    _check_range(sites_path, sites, "longitude", -180, 180)
    if sites["site_id"].duplicated().any():
        raise InputDataError(sites_path, f"duplicated site_id {sites['site_id'][sites['site_id'].duplicated()].tolist()[:5]}", "Make ids unique")
    unknown = sorted(set(sites["aoi_id"]) - set(aois["aoi_id"]))
    if unknown:
        raise InputDataError(sites_path, f"column 'aoi_id' names AOIs not in aois.csv: {unknown[:5]}", "Add them to aois.csv or fix the ids")
    sites = sites.merge(aois[["aoi_id", "west", "south", "east", "north", "start_date", "end_date"]], on="aoi_id")
    outside = ~(sites["longitude"].between(sites["west"], sites["east"]) & sites["latitude"].between(sites["south"], sites["north"]))
    if outside.any():
        raise InputDataError(sites_path, f"site {sites['site_id'][outside].iloc[0]} lies outside its AOI's bounds",
                             "Move the site or widen the AOI in aois.csv")
    sites = sites.drop(columns=["west", "south", "east", "north"])
    if sites_per_aoi is not None:
        sites = sites.groupby("aoi_id", sort=False, group_keys=False).head(sites_per_aoi)
    sites = sites.reset_index(drop=True)

    species = _read_csv(species_path, {"taxon_id": "str", "taxon_name": "str"})
    if species["taxon_id"].duplicated().any():
        raise InputDataError(species_path, "duplicated taxon_id", "Make ids unique")

    study_path = inputs_dir / "study.yaml"
    try:
        box = yaml.safe_load(study_path.read_text())["deepearth"]["bbox"]
        bbox = tuple(float(box[k]) for k in ("west", "south", "east", "north"))
    except FileNotFoundError:
        raise InputDataError(study_path, "missing", "Run `dvc pull data.dvc` to get the study definition") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputDataError(study_path, f"field deepearth.bbox is missing or malformed ({exc})",
                             "Give deepearth.bbox as {west, south, east, north} in degrees") from None
    return Study(aois=aois, sites=sites, species=species, deepearth_bbox=bbox)


def utm_epsg(lat: float, lon: float) -> int:
    """EPSG code of the WGS84 UTM zone containing (lat, lon)."""
    zone = int((lon + 180) // 6) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def site_months(start_date: pd.Timestamp, months: int) -> list[pd.Timestamp]:
    """The first day of each monthly timestep from a site's start date."""
    first = pd.Timestamp(start_date).to_period("M").to_timestamp()
    return [first + pd.DateOffset(months=i) for i in range(months)]


# -- the default study definition (what `terrapipe inputs init` writes) ----------------------------
# 1 x 1 degree boxes around real places spanning the Köppen groups A-E, with each place's real
# Köppen-Geiger class and dominant ESA WorldCover class (for checking what the sample world makes of
# them) and a start year: acquisitions span 2017-2024 across AOIs.
DEFAULT_AOIS = [  # aoi_id, name, west, south, koppen, dominant_cover, start year
    ("central-florida", "Central Florida, USA (DeepEarth area)", -81.9, 28.0, "Cfa", "tree", 2024),
    ("amazon-manaus", "Manaus, Brazil (equatorial rainforest)", -60.5, -3.6, "Af", "tree", 2017),
    ("congo-kisangani", "Kisangani, DR Congo (equatorial rainforest)", 24.7, 0.0, "Af", "tree", 2018),
    ("kerala-kochi", "Kochi, India (tropical monsoon coast)", 76.2, 9.5, "Am", "tree", 2019),
    ("india-nagpur", "Nagpur, India (tropical savanna, monsoon)", 78.6, 20.6, "Aw", "crop", 2020),
    ("thailand-khon-kaen", "Khon Kaen, Thailand (tropical savanna)", 102.3, 15.9, "Aw", "crop", 2021),
    ("sahel-niamey", "Niamey, Niger (hot semi-arid Sahel)", 1.6, 13.0, "BSh", "grass", 2022),
    ("sonora-hermosillo", "Hermosillo, Mexico (hot desert)", -111.4, 28.6, "BWh", "shrub", 2023),
    ("egypt-aswan", "Aswan, Egypt (hot desert)", 32.4, 23.6, "BWh", "bare", 2017),
    ("spain-zaragoza", "Zaragoza, Spain (cold semi-arid)", -1.4, 41.1, "BSk", "crop", 2018),
    ("gobi-dalanzadgad", "Dalanzadgad, Mongolia (cold desert)", 103.9, 43.1, "BWk", "bare", 2019),
    ("spain-seville", "Seville, Spain (hot-summer Mediterranean)", -6.5, 36.9, "Csa", "crop", 2020),
    ("oregon-portland", "Portland, Oregon, USA (warm-summer Mediterranean)", -123.2, 45.0, "Csb", "tree", 2021),
    ("pampas-buenos-aires", "Buenos Aires, Argentina (humid subtropical)", -59.8, -35.0, "Cfa", "crop", 2022),
    ("highveld-johannesburg", "Johannesburg, South Africa (subtropical highland)", 27.5, -26.7, "Cwb", "grass", 2023),
    ("kenya-nakuru", "Nakuru, Kenya (equatorial highlands, spans the equator)", 35.6, -0.8, "Cfb", "crop", 2017),
    ("bavaria-munich", "Munich, Germany (oceanic)", 11.1, 47.6, "Cfb", "tree", 2018),
    ("iowa-ames", "Ames, Iowa, USA (hot-summer continental cropland)", -94.1, 41.5, "Dfa", "crop", 2024),
    ("china-harbin", "Harbin, China (monsoon continental)", 126.1, 45.2, "Dwa", "crop", 2019),
    ("russia-moscow", "Moscow, Russia (warm-summer continental)", 37.1, 55.2, "Dfb", "tree", 2020),
    ("finland-tampere", "Tampere, Finland (boreal)", 23.3, 61.0, "Dfc", "tree", 2024),
    ("russia-yakutsk", "Yakutsk, Russia (extremely cold subarctic)", 129.2, 61.5, "Dfd", "tree", 2021),
    ("svalbard-longyearbyen", "Longyearbyen, Svalbard (polar tundra)", 15.1, 77.7, "ET", "bare", 2022),
    ("alaska-utqiagvik", "Utqiagvik (Barrow), Alaska, USA (polar tundra)", -157.3, 70.5, "ET", "moss", 2023),
    ("greenland-nuuk", "Nuuk, Greenland (polar tundra coast)", -51.8, 63.8, "ET", "bare", 2018),
    ("greenland-summit", "Summit, Greenland ice sheet (ice cap)", -39.0, 72.1, "EF", "snow", 2019),
    ("tibet-nagqu", "Nagqu, Tibet, China (high-plateau tundra)", 91.5, 31.0, "ET", "grass", 2020),
]
DEEPEARTH_BBOX = {"west": -81.934, "south": 28.033, "east": -80.902, "north": 28.978}


def write_default_inputs(inputs_dir: str | Path = INPUTS_DIR, sites_per_aoi: int = 50, seed: int = 7) -> None:
    """Write the default study definition: the DEFAULT_AOIS x ``sites_per_aoi`` candidate sites, the species."""
    import yaml

    from terrapipe.atomic import atomic_path
    from terrapipe.sources.streams import rng

    aois = pd.DataFrame([{"aoi_id": a, "name": n, "west": w, "south": s, "east": round(w + 1.0, 4),
                          "north": round(s + 1.0, 4), "start_date": f"{year}-01-01", "end_date": f"{year}-12-31",
                          "koppen": koppen, "dominant_cover": cover}
                         for a, n, w, s, koppen, cover, year in DEFAULT_AOIS])
    rows = []
    for aoi in aois.itertuples():
        draw = rng(seed, "default-sites", aoi.aoi_id)  # one stream per AOI: adding an AOI moves no other site
        lats = draw.uniform(aoi.south + 0.05, aoi.north - 0.05, sites_per_aoi)
        lons = draw.uniform(aoi.west + 0.05, aoi.east - 0.05, sites_per_aoi)
        rows += [{"site_id": f"{aoi.aoi_id}-{i:03d}", "aoi_id": aoi.aoi_id, "latitude": round(la, 5),
                  "longitude": round(lo, 5)} for i, (la, lo) in enumerate(zip(lats, lons))]
    species = pd.DataFrame([{"taxon_id": f"sample-{i + 1:04d}", "taxon_name": name, "habitat": habitat}
                            for i, (name, habitat) in enumerate(DEFAULT_SPECIES)])
    study = {"name": "terrapipe default study",
             "description": "AOIs in contrasting climates for pretraining chips; DeepEarth's central-Florida box",
             "deepearth": {"dataset": "deepearth/central-florida-native-plants", "bbox": DEEPEARTH_BBOX}}
    with atomic_path(inputs_dir, directory=True) as tmp:
        aois.to_csv(tmp / "aois.csv", index=False)
        pd.DataFrame(rows).to_csv(tmp / "sites.csv", index=False)
        species.to_csv(tmp / "species.csv", index=False)
        (tmp / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))


def _split_stage(path: Path) -> str:
    """The stage that writes a split folder (split_sites, or split@<dataset>)."""
    dataset = path.parent.name
    return "split_sites" if dataset == "sites" else f"split@{dataset}"


def read_split_assignments(path: str | Path) -> dict[str, str]:
    """id -> 'train' / 'test' from a split stage's assignments.parquet (e.g. the site split)."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path, columns=["id", "split"])
    except FileNotFoundError:
        raise InputDataError(path, "missing", f"Run the split stage that writes it first (`dvc repro {_split_stage(path)}`)") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputDataError(path, f"unreadable or lacks columns id/split ({exc})", f"Re-run `dvc repro {_split_stage(path)}`") from None
    return dict(zip(frame["id"].astype(str), frame["split"].astype(str)))
