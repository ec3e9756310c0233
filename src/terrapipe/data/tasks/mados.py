"""MADOS's layout (Kikaki et al. 2024, "Detecting marine pollutants and sea surface features with deep
learning in Sentinel-2 imagery"): reader and writer.

On disk (as far as the release is known here; the assumptions are marked)::

    Scene_<n>/10/Scene_<n>_L2R_rhorc_<nm>_<crop>.tif   one band per file: ACOLITE Rayleigh-corrected
                                                       reflectance (fraction), <nm> the band's centre
                                                       wavelength as ACOLITE names it (492, 559, 665, 833, ...)
    Scene_<n>/10/Scene_<n>_L2R_cl_<crop>.tif           the class mask: 0 not annotated, 1..15 CLASSES
    Scene_<n>/20/..., Scene_<n>/60/...                 (assumption) coarser bands beside 10/, read at the
                                                       mask's 10 m grid (nearest)
    splits/train_X.txt, val_X.txt, test_X.txt          one crop per line: Scene_<n>_<crop>

A band file is matched to the registry by wavelength (the nearest S2 band within WAVELENGTH_TOLERANCE_NM), so
S2A's and S2B's slightly different ACOLITE names (559/560, 864/865, 2186/2202) both read; MADOS has no B09.
The confidence masks (_conf_) are not read. The sample writes every band at 10 m in 10/, a DATETIME tag on
each file (real MADOS has none: dates are then NaT), and no confidence masks.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from terrapipe.data.tasks import IGNORE_LABEL, PARTITIONS, TaskData
from terrapipe.errors import InputDataError
from terrapipe.modalities import S2

SPLIT_FILES = {"train": "train_X.txt", "valid": "val_X.txt", "test": "test_X.txt"}
RESOLUTION_DIRS = ("10", "20", "60")
WAVELENGTH_TOLERANCE_NM = 25.0
_CROP = re.compile(r"^(Scene_\d+)_(\w+)$")
_FIX = ("Point tasks.mados.path at the MADOS folder holding splits/ and the Scene_<n>/ folders, or re-download "
        "it")

# MADOS's 15 classes (mask values 1..15; 0 = not annotated, ignored). Label index = mask value - 1.
CLASSES = ("Marine Debris", "Dense Sargassum", "Sparse Floating Algae", "Natural Organic Material", "Ship",
           "Oil Spill", "Marine Water", "Sediment-Laden Water", "Foam", "Turbid Water", "Shallow Water",
           "Waves & Wakes", "Oil Platform", "Jellyfish", "Sea snout")


def _land_use_table() -> np.ndarray:
    """Sample-world sea-surface code -> MADOS label index (land and lakes are not annotated)."""
    from terrapipe.sources.landscape import BY_NAME

    table = np.full(256, IGNORE_LABEL, np.int64)
    for name, label in {"marine_debris": "Marine Debris", "sargassum": "Dense Sargassum", "ship": "Ship",
                        "marine_water": "Marine Water", "sediment_laden_water": "Sediment-Laden Water",
                        "foam": "Foam", "turbid_water": "Turbid Water", "shallow_water": "Shallow Water"}.items():
        table[BY_NAME[name].code] = CLASSES.index(label)
    return table


LABEL_OF_LAND_USE = _land_use_table()


# -- layout -------------------------------------------------------------------------------------------------
def split_crops(root: Path) -> dict[str, list[str]]:
    """partition -> crop names (Scene_<n>_<crop>) from splits/*.txt."""
    out = {}
    for partition, name in SPLIT_FILES.items():
        path = root / "splits" / name
        if not path.is_file():
            raise InputDataError(path, "missing", _FIX)
        crops = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        bad = [c for c in crops if not _CROP.match(c)]
        if bad:
            raise InputDataError(path, f"lines {bad[:3]} are not Scene_<n>_<crop>", "Restore MADOS's split files")
        out[partition] = crops
    return out


def _parts(crop: str) -> tuple[str, str]:
    scene, index = _CROP.match(crop).groups()
    return scene, index


def mask_file(root: Path, crop: str) -> Path:
    scene, index = _parts(crop)
    return root / scene / "10" / f"{scene}_L2R_cl_{index}.tif"


def band_files(root: Path, crop: str) -> dict[str, Path]:
    """Registry band name -> its rhorc file for one crop (searched in 10/, 20/, 60/), matched by wavelength."""
    scene, index = _parts(crop)
    pattern = re.compile(rf"^{scene}_L2R_rhorc_(\d+)_{index}\.tif$")
    found: dict[str, tuple[float, Path]] = {}
    for folder in RESOLUTION_DIRS:
        directory = root / scene / folder
        for path in sorted(directory.glob(f"{scene}_L2R_rhorc_*_{index}.tif")) if directory.is_dir() else ():
            match = pattern.match(path.name)
            if not match:
                continue
            nm = float(match.group(1))
            band = min(S2.bands, key=lambda b: abs(b.wavelength_nm - nm))
            gap = abs(band.wavelength_nm - nm)
            if gap <= WAVELENGTH_TOLERANCE_NM and (band.name not in found or gap < found[band.name][0]):
                found[band.name] = (gap, path)
    return {b.name: found[b.name][1] for b in S2.bands if b.name in found}


def check_layout(root: Path) -> None:
    """InputDataError naming the first missing piece: a split file, a crop's mask or its bands."""
    if not root.is_dir():
        raise InputDataError(root, "no such folder", _FIX)
    expected = None
    for crops in split_crops(root).values():
        for crop in crops:
            if not mask_file(root, crop).is_file():
                raise InputDataError(mask_file(root, crop), f"missing (crop {crop} of the split files)", _FIX)
            bands = tuple(band_files(root, crop))
            if not bands:
                raise InputDataError(mask_file(root, crop).parent, f"has no {crop.split('_')[0]}_..._L2R_rhorc_<nm>_"
                                     f"{_parts(crop)[1]}.tif band files", _FIX)
            expected = expected or bands
            if bands != expected:
                missing = sorted(set(expected) - set(bands))
                raise InputDataError(mask_file(root, crop).parent, f"crop {crop} lacks bands {missing or bands} that "
                                     "other crops have", "Re-download this scene")


def _read_band(path: Path, shape: tuple[int, int]) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        data = src.read(1, out_shape=shape, resampling=Resampling.nearest).astype(np.float32)
        if src.nodata is not None and not np.isnan(src.nodata):
            data[data == src.nodata] = np.nan
    return data


def read(root: Path, name: str = "mados") -> TaskData:
    """A MADOS folder as TaskData: S2 [N, C, H, W] reflectance x 10000 in registry order (no B09), labels
    [N, H, W] = mask - 1 (not annotated -> IGNORE_LABEL), partition from the split files."""
    import rasterio
    from pyproj import Transformer

    check_layout(root)
    crops = sorted(((p, c) for p, cs in split_crops(root).items() for c in cs), key=lambda pc: pc[1])
    images, labels, dates, centres, bands = [], [], [], [], None
    for _, crop in crops:
        with rasterio.open(mask_file(root, crop)) as src:
            mask = src.read(1).astype(np.int64)                                 # [H, W]
            x, y = src.transform * (src.width / 2, src.height / 2)
            lon, lat = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(x, y) if src.crs else (np.nan,) * 2
            day = src.tags().get("DATETIME", "")[:10]
        if mask.min() < 0 or mask.max() > len(CLASSES):
            raise InputDataError(mask_file(root, crop), f"has values outside 0..{len(CLASSES)}", "Re-download this scene")
        files = band_files(root, crop)
        bands = tuple(files)
        images.append(np.stack([_read_band(files[b], mask.shape) for b in bands]) * np.float32(S2.unit_scale))
        labels.append(np.where(mask == 0, IGNORE_LABEL, mask - 1))
        dates.append([np.datetime64(day or "NaT", "D")])
        centres.append((lat, lon))
    return TaskData(name=name, kind="segmentation", class_names=CLASSES, images={"s2": np.stack(images)},
                    bands={"s2": bands}, labels=np.stack(labels), partition=np.array([p for p, _ in crops]),
                    sample_ids=tuple(c for _, c in crops), dates={"s2": np.array(dates, "datetime64[D]")},
                    centres=np.array(centres, np.float64))


# -- writing ------------------------------------------------------------------------------------------------
def write(task: TaskData, out: Path) -> None:
    """``task`` (segmentation, single-time S2, centres known) in MADOS's layout in ``out``: float32 rhorc
    reflectance per band and a uint8 class mask on the crop's 10 m UTM grid, and the split files."""
    from terrapipe.grid import site_grid
    from terrapipe.modalities import Band
    from terrapipe.sources.sample_imagery import write_tif

    if task.centres is None or task.images["s2"].ndim != 4:
        raise ValueError(f"MADOS's layout needs single-time S2 and centres ({task.name})")
    (out / "splits").mkdir()
    mask_band = Band("class", 10.0, "MADOS class (0 not annotated)")
    for n, crop in enumerate(task.sample_ids):
        scene, index = _parts(crop)
        grid = site_grid(*task.centres[n], task.labels.shape[-1])
        day = task.dates["s2"][n, 0]
        tags = {} if np.isnat(day) else {"DATETIME": f"{day}T10:30:00Z"}
        folder = out / scene / "10"
        for c, name in enumerate(task.bands["s2"]):
            band = S2.band(name)
            reflectance = (task.images["s2"][n, c] / S2.unit_scale).astype(np.float32)[None]   # [1, H, W]
            write_tif(folder / f"{scene}_L2R_rhorc_{round(band.wavelength_nm)}_{index}.tif", grid, reflectance,
                      [band], None, tags=tags)
        mask = np.where(task.labels[n] == IGNORE_LABEL, 0, task.labels[n] + 1).astype(np.uint8)[None]
        write_tif(mask_file(out, crop), grid, mask, [mask_band], None, tags=tags)
    for partition in PARTITIONS:
        crops = [c for c, p in zip(task.sample_ids, task.partition) if p == partition]
        (out / "splits" / SPLIT_FILES[partition]).write_text("".join(f"{c}\n" for c in crops))


def sample_id(index: int) -> str:
    """The crop name of the ``index``-th sample: one crop per scene (Scene_<index>_0)."""
    return f"Scene_{index}_0"
