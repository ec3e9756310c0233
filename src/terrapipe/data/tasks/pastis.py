"""PASTIS's layout (Sainte Fare Garnot & Landrieu 2021; PASTIS-R adds Sentinel-1): reader and writer.

On disk::

    metadata.geojson          a FeatureCollection, one feature per patch: properties ID_PATCH, Fold (1..5),
                              dates-S2 / dates-S1A ({"0": 20180924, ...}: yyyymmdd per time step), TILE,
                              Parcel_Cover; geometry the patch's footprint (real PASTIS: EPSG:2154, named in
                              the collection's "crs" member; no member: lon/lat)
    DATA_S2/S2_<id>.npy       int16 [T, 10, H, W], bands B2 B3 B4 B5 B6 B7 B8 B8A B11 B12 (reflectance x 10000)
    DATA_S1A/S1A_<id>.npy     float32 [T, 3, H, W]: VV, VH, VV/VH ratio in dB (ascending orbit; optional)
    ANNOTATIONS/TARGET_<id>.npy  [3, H, W]: the semantic class (0 background, 1-18 crops, 19 void) in channel 0

Assumptions: S1A channels are VV, VH and their ratio in dB (the ratio is dropped: the registry has VV and VH);
TARGET channels 1 and 2 (instance information in the release) are not read, and the sample writes them as
zeros. The five folds are PASTIS's official cross-validation split, mapped onto train/valid/test by
``tasks.pastis.folds``; patches of a fold in no partition are left out. DATA_S1D (descending) is not read.
A real PASTIS (2433 patches of 128 x 128, 33-61 dates) needs ~10 GB as float32 in memory.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from terrapipe.data.tasks import IGNORE_LABEL, TaskData
from terrapipe.errors import InputDataError
from terrapipe.modalities import S1, S2

# PASTIS's nomenclature: 0 background, 1-18 crop types; 19 (void: parcel borders, unlabelled) is ignored.
CLASSES = ("Background", "Meadow", "Soft winter wheat", "Corn", "Winter barley", "Winter rapeseed", "Spring barley",
           "Sunflower", "Grapevine", "Beet", "Winter triticale", "Winter durum wheat", "Fruits, vegetables, flowers",
           "Potatoes", "Leguminous fodder", "Soybeans", "Orchard", "Mixed cereal", "Sorghum")
VOID = 19


def _land_use_table() -> np.ndarray:
    """Sample-world land-use code -> PASTIS class (background where PASTIS has none, e.g. rice; void margins)."""
    from terrapipe.sources.landscape import BY_NAME

    table = np.zeros(256, np.int64)
    for name, label in {"pasture": "Meadow", "winter_wheat": "Soft winter wheat", "maize": "Corn",
                        "winter_barley": "Winter barley", "rapeseed": "Winter rapeseed", "sunflower": "Sunflower",
                        "vineyard": "Grapevine", "sugar_beet": "Beet", "soybean": "Soybeans",
                        "orchard": "Orchard"}.items():
        table[BY_NAME[name].code] = CLASSES.index(label)
    table[BY_NAME["field_margin"].code] = IGNORE_LABEL
    return table


LABEL_OF_LAND_USE = _land_use_table()


# -- layout -------------------------------------------------------------------------------------------------
METADATA = "metadata.geojson"
S2_DIR, S1_DIR, TARGET_DIR = "DATA_S2", "DATA_S1A", "ANNOTATIONS"
S2_ORDER = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")  # PASTIS's channel order
S1_CHANNELS = ("vv", "vh")  # of DATA_S1A's three (VV, VH, VV/VH ratio, dB); the ratio is dropped
_FIX = ("Point tasks.pastis.path at the PASTIS (or PASTIS-R) folder holding metadata.geojson, DATA_S2/, "
        "ANNOTATIONS/ (and DATA_S1A/), or re-download it")
_REQUIRED = ("ID_PATCH", "Fold", "dates-S2")


def s2_file(root: Path, patch: str) -> Path:
    return root / S2_DIR / f"S2_{patch}.npy"


def s1_file(root: Path, patch: str) -> Path:
    return root / S1_DIR / f"S1A_{patch}.npy"


def target_file(root: Path, patch: str) -> Path:
    return root / TARGET_DIR / f"TARGET_{patch}.npy"


def read_metadata(root: Path) -> list[dict]:
    """The features' properties (with each feature's geometry under "geometry"); InputDataError if malformed."""
    path = root / METADATA
    if not path.is_file():
        raise InputDataError(path, "missing", _FIX)
    try:
        collection = json.loads(path.read_text())
        features = collection["features"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InputDataError(path, f"not a GeoJSON FeatureCollection ({exc!r})", _FIX) from None
    out = []
    for n, feature in enumerate(features):
        props = dict(feature.get("properties") or {})
        missing = [k for k in _REQUIRED if k not in props]
        if missing:
            raise InputDataError(path, f"feature {n} lacks {missing}", "Restore PASTIS's metadata.geojson")
        if int(props["Fold"]) not in (1, 2, 3, 4, 5):
            raise InputDataError(path, f"feature {n} (ID_PATCH {props['ID_PATCH']}) has Fold {props['Fold']}, "
                                 "not 1..5", "Restore PASTIS's metadata.geojson")
        props["geometry"] = feature.get("geometry")
        out.append(props)
    props_crs = (collection.get("crs") or {}).get("properties", {}).get("name")
    for props in out:
        props["crs"] = props_crs
    return out


def check_layout(root: Path) -> None:
    """InputDataError naming the first missing piece: metadata.geojson, a patch's S2, S1A or TARGET file."""
    if not root.is_dir():
        raise InputDataError(root, "no such folder", _FIX)
    with_s1 = (root / S1_DIR).is_dir()
    for props in read_metadata(root):
        patch = str(props["ID_PATCH"])
        for path in (s2_file(root, patch), target_file(root, patch)) + ((s1_file(root, patch),) if with_s1 else ()):
            if not path.is_file():
                raise InputDataError(path, f"missing (patch {patch} of {METADATA})", _FIX)
        if with_s1 and "dates-S1A" not in props:
            raise InputDataError(root / METADATA, f"patch {patch} has no dates-S1A", "Restore PASTIS's metadata.geojson")


def _dates(props: dict, key: str) -> np.ndarray:
    """A dates-* dict {"0": 20180924, ...} as datetime64[D] in index order."""
    entries = props[key]
    values = [str(entries[k]) for k in sorted(entries, key=int)]
    return np.array([f"{v[:4]}-{v[4:6]}-{v[6:8]}" for v in values], "datetime64[D]")


def _load(path: Path, ndim: int) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)  # a .npy with objects would unpickle: refused
    except (ValueError, OSError) as exc:
        raise InputDataError(path, f"not a readable .npy array ({exc})", "Re-download this patch") from None
    if array.ndim != ndim:
        raise InputDataError(path, f"has shape {array.shape}, expected {ndim} dimensions", "Re-download this patch")
    return array


def _series(path: Path, dates: np.ndarray, channels: int) -> np.ndarray:
    array = _load(path, 4)                                                    # [T, C, H, W]
    if array.shape[0] != len(dates) or array.shape[1] < channels:
        raise InputDataError(path, f"has shape {array.shape} but metadata.geojson lists {len(dates)} dates and "
                             f"the layout has >= {channels} channels", "Re-download this patch or its metadata")
    return array


def _centre(props: dict) -> tuple[float, float] | None:
    """(lat, lon) of a patch's footprint centre, its CRS taken from the collection (GeoJSON default: lon/lat)."""
    geometry = props.get("geometry") or {}
    if geometry.get("type") != "Polygon":
        return None
    ring = np.asarray(geometry["coordinates"][0], float)[:-1]                # [K, 2] x, y (closing point dropped)
    x, y = ring.mean(axis=0)
    crs = props.get("crs")
    if crs and "CRS84" not in crs and not crs.endswith(":4326"):
        from pyproj import Transformer
        x, y = Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y)
    return float(y), float(x)


def _pad(arrays: list[np.ndarray]) -> np.ndarray:
    """Series of different lengths [T_i, C, H, W] -> [N, T_max, C, H, W], NaN after each one's end."""
    longest = max(len(a) for a in arrays)
    out = np.full((len(arrays), longest, *arrays[0].shape[1:]), np.nan, np.float32)
    for n, a in enumerate(arrays):
        out[n, : len(a)] = a
    return out


def _pad_dates(dates: list[np.ndarray]) -> np.ndarray:
    longest = max(len(d) for d in dates)
    out = np.full((len(dates), longest), np.datetime64("NaT"), "datetime64[D]")
    for n, d in enumerate(dates):
        out[n, : len(d)] = d
    return out


def read(root: Path, folds: dict[str, list[int]] | None = None, name: str = "pastis") -> TaskData:
    """A PASTIS folder as TaskData: S2 (and S1) series [N, T, C, H, W] in registry band order (NaN after a
    patch's last date), labels [N, H, W] (void -> IGNORE_LABEL), partition from the patches' folds."""
    check_layout(root)
    folds = folds or {"train": [1, 2, 3], "valid": [4], "test": [5]}
    partition_of = {f: p for p, fs in folds.items() for f in fs}
    with_s1 = (root / S1_DIR).is_dir()
    registry_s2 = tuple(b.name for b in S2.select(S2_ORDER))
    s2_index = [S2_ORDER.index(b) for b in registry_s2]                       # PASTIS channel of each registry band
    s1_index = [S1_CHANNELS.index(b) for b in S1.band_order]
    records = sorted((p for p in read_metadata(root) if int(p["Fold"]) in partition_of), key=lambda p: int(p["ID_PATCH"]))
    if not records:
        raise InputDataError(root / METADATA, f"no patch lies in folds {sorted(partition_of)}",
                             "Check tasks.pastis.folds against the Fold values of metadata.geojson")
    s2, s1, labels, s2_dates, s1_dates, centres = [], [], [], [], [], []
    for props in records:
        patch = str(props["ID_PATCH"])
        dates = _dates(props, "dates-S2")
        s2.append(_series(s2_file(root, patch), dates, len(S2_ORDER))[:, s2_index].astype(np.float32))
        s2_dates.append(dates)
        if with_s1:
            dates = _dates(props, "dates-S1A")
            s1.append(_series(s1_file(root, patch), dates, 3)[:, s1_index].astype(np.float32))
            s1_dates.append(dates)
        target = _load(target_file(root, patch), 3)                            # [3, H, W], semantic in channel 0
        if target.shape[1:] != s2[-1].shape[2:]:
            raise InputDataError(target_file(root, patch), f"is {target.shape[1:]} pixels, its S2 "
                                 f"{s2[-1].shape[2:]}", "Re-download this patch")
        semantic = target[0].astype(np.int64)
        if semantic.min() < 0 or semantic.max() > VOID:
            raise InputDataError(target_file(root, patch), f"has classes outside 0..{VOID}", "Re-download this patch")
        labels.append(np.where(semantic == VOID, IGNORE_LABEL, semantic))
        centres.append(_centre(props))
    images, dates = {"s2": _pad(s2)}, {"s2": _pad_dates(s2_dates)}
    bands = {"s2": registry_s2}
    if with_s1:
        images["s1"], dates["s1"], bands["s1"] = _pad(s1), _pad_dates(s1_dates), S1.band_order
    fold = np.array([int(p["Fold"]) for p in records])
    return TaskData(
        name=name, kind="segmentation", class_names=CLASSES, images=images, bands=bands, labels=np.stack(labels),
        partition=np.array([partition_of[int(f)] for f in fold]), sample_ids=tuple(
            str(p["ID_PATCH"]) for p in records), dates=dates,
        centres=None if any(c is None for c in centres) else np.array(centres, np.float64), folds=fold)


# -- writing ------------------------------------------------------------------------------------------------
def write(task: TaskData, out: Path) -> None:
    """``task`` (segmentation series, integer sample ids, folds and centres known) in PASTIS's layout in ``out``."""
    from pyproj import Transformer

    from terrapipe.grid import PIXEL_M, site_grid

    if task.folds is None or task.centres is None or task.images["s2"].ndim != 5:
        raise ValueError(f"PASTIS's layout needs S2 series, folds and centres ({task.name})")
    for folder in (S2_DIR, TARGET_DIR) + ((S1_DIR,) if "s1" in task.images else ()):
        (out / folder).mkdir()
    to_file = [task.bands["s2"].index(b) for b in S2_ORDER]                   # registry channel of each PASTIS one
    features = []
    for n, patch in enumerate(task.sample_ids):
        s2_steps = ~np.isnat(task.dates["s2"][n])
        s2 = task.images["s2"][n][s2_steps][:, to_file]                       # [T, 10, H, W]
        np.save(s2_file(out, patch), np.round(s2).astype(np.int16))
        properties = {"ID_PATCH": int(patch), "Fold": int(task.folds[n]), "TILE": "sample",
                      "Parcel_Cover": round(float((task.labels[n] > 0).mean()), 4),
                      "dates-S2": _date_dict(task.dates["s2"][n][s2_steps])}
        if "s1" in task.images:
            s1_steps = ~np.isnat(task.dates["s1"][n])
            vv, vh = (task.images["s1"][n][s1_steps][:, task.bands["s1"].index(b)] for b in S1_CHANNELS)
            np.save(s1_file(out, patch), np.stack([vv, vh, vv - vh], axis=1).astype(np.float32))  # [T, 3, H, W]
            properties["dates-S1A"] = _date_dict(task.dates["s1"][n][s1_steps])
        semantic = np.where(task.labels[n] == IGNORE_LABEL, VOID, task.labels[n])
        np.save(target_file(out, patch), np.stack([semantic, np.zeros_like(semantic), np.zeros_like(semantic)]).astype(np.uint8))
        size = task.labels.shape[-1]
        grid = site_grid(*task.centres[n], size)
        corners_x = [grid.x0, grid.x0 + size * PIXEL_M, grid.x0 + size * PIXEL_M, grid.x0, grid.x0]
        corners_y = [grid.y0, grid.y0, grid.y0 - size * PIXEL_M, grid.y0 - size * PIXEL_M, grid.y0]
        lon, lat = Transformer.from_crs(grid.epsg, 4326, always_xy=True).transform(corners_x, corners_y)
        features.append({"type": "Feature", "id": patch, "properties": properties, "geometry": {
            "type": "Polygon", "coordinates": [[[round(x, 7), round(y, 7)] for x, y in zip(lon, lat)]]}})
    collection = {"type": "FeatureCollection", "name": task.name,
                  "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}, "features": features}
    (out / METADATA).write_text(json.dumps(collection) + "\n")


def _date_dict(dates: np.ndarray) -> dict[str, int]:
    """datetime64[D] [T] -> PASTIS's {"0": yyyymmdd, ...}."""
    return {str(t): int(str(d).replace("-", "")) for t, d in enumerate(dates)}


def sample_id(index: int) -> str:
    """The ID_PATCH of the ``index``-th sample patch (PASTIS's ids are integers from 10000)."""
    return str(10000 + index)
