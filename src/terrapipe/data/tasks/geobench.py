"""GEO-Bench's classification layout (m-eurosat, m-so2sat): reader and writer, without the geobench package.

On disk (geobench 1.0.0's ``classification_v1.0/<task>/``)::

    <sample>.hdf5            one 2-D dataset per band, named like "02 - Blue"; the root attribute "pickle"
                             holds str(pickle.dumps(dict)): label, bands_order, and per band name a dict of
                             date, spatial_resolution, band_info, transform (affine.Affine), crs
    task_specs.pkl           the task specification (a pickled geobench TaskSpecifications)
    default_partition.json   {"train": [sample, ...], "valid": [...], "test": [...]}
    band_stats.json          per band: mean, std, min, max, median, percentiles

geobench's own loader runs ``pickle.loads`` on the attribute, which executes whatever a downloaded file asks
for. Here band pixels are read with h5py alone and every pickle goes through ``SafeUnpickler``, which builds
only plain data, numpy arrays, dates, affine transforms and CRSs, and turns geobench's own classes into
inert ``PickledRecord`` attribute holders (so a real task reads without geobench installed).

Band names map onto the modality registry: "<nn>[A] - <description>" is Sentinel-2 band B<nn>[A] (m-eurosat,
L1C digital numbers = reflectance x 10000, the store's unit, no offset), "VV"/"VH" are Sentinel-1 sigma0 in dB.
Bands the registry lacks are dropped and logged: "10 - SWIR - Cirrus" (L2A has no B10) and m-so2sat's eight
Sentinel-1 covariance channels, whose names and units this module does not know (assumption: they are not
named VV or VH; a real m-so2sat therefore loads as S2 only).
"""
from __future__ import annotations

import ast
import io
import json
import logging
import pickle
import re
from pathlib import Path

import numpy as np

from terrapipe.data.tasks import PARTITIONS, TaskData
from terrapipe.errors import InputDataError
from terrapipe.modalities import S1, S2

log = logging.getLogger("terrapipe")

TASK_SPECS, PARTITION_FILE, BAND_STATS = "task_specs.pkl", "default_partition.json", "band_stats.json"
SAMPLE_SUFFIX = ".hdf5"
PICKLE_ATTR = "pickle"
# GEO-Bench's descriptions of the Sentinel-2 bands (the part after "<nn> - " of a dataset name).
S2_DESCRIPTION = {"B01": "Coastal aerosol", "B02": "Blue", "B03": "Green", "B04": "Red", "B05": "Vegetation Red Edge",
                  "B06": "Vegetation Red Edge", "B07": "Vegetation Red Edge", "B08": "NIR",
                  "B8A": "Vegetation Red Edge", "B09": "Water vapour", "B11": "SWIR", "B12": "SWIR"}
_S2_NAME = re.compile(r"^(\d{2})(A?) - ")
_LAYOUT_FIX = ("Point tasks.<task>.path at one GEO-Bench task folder (e.g. classification_v1.0/m-eurosat) holding "
               "the .hdf5 samples, task_specs.pkl and default_partition.json, or re-download the task")


# -- safe unpickling ----------------------------------------------------------------------------------
class PickledRecord:
    """An inert stand-in for a geobench class: keeps the pickled attributes, runs nothing."""
    geobench_class = "?"

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})

    def __repr__(self):
        return f"<pickled geobench {self.geobench_class} {sorted(self.__dict__)}>"


_SAFE_CLASSES = {
    "builtins": {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
                 "bool", "object"},
    "collections": {"OrderedDict"},
    "copyreg": {"_reconstructor"},
    "datetime": {"date", "datetime", "time", "timedelta", "timezone"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "affine": {"Affine"},
    "rasterio.crs": {"CRS"},
}
_records: dict[str, type] = {}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles data only: a class outside ``_SAFE_CLASSES`` (os.system, builtins.eval, ...) is refused;
    geobench.* classes become PickledRecord subclasses. ``pickle.UnpicklingError`` names a refused class."""

    def find_class(self, module: str, name: str):
        if name in _SAFE_CLASSES.get(module, ()):
            return super().find_class(module, name)
        if module.split(".")[0] == "geobench" and name.isidentifier():
            qualified = f"{module}.{name}"
            if qualified not in _records:
                _records[qualified] = type(name, (PickledRecord,), {"geobench_class": qualified})
            return _records[qualified]
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain data, numpy arrays, dates, "
                                     "affine transforms, CRSs and geobench records are allowed")


def safe_loads(data: bytes, path: Path, what: str):
    """``data`` unpickled by SafeUnpickler; InputDataError naming ``path`` if it is refused or broken."""
    try:
        return SafeUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - a refused class, a truncated stream: the same answer
        raise InputDataError(path, f"{what} cannot be read safely ({exc})",
                             "The file may be corrupt or crafted to run code: do not open it with geobench's own "
                             "loader; re-download the task from the GEO-Bench release") from None


def _field(obj, name: str, default=None):
    """An attribute of a PickledRecord or a key of a dict (the sample writes plain dicts)."""
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


# -- band names -----------------------------------------------------------------------------------------
def registry_band(dataset_name: str) -> tuple[str, str] | None:
    """(modality key, registry band name) of a GEO-Bench band dataset, or None when the registry lacks it."""
    match = _S2_NAME.match(dataset_name)
    if match:
        number, narrow = match.groups()
        band = f"B{number[-1]}A" if narrow else f"B{number}"
        return ("s2", band) if band in S2.band_order else None
    lower = dataset_name.strip().lower()
    return ("s1", lower) if lower in S1.band_order else None


def dataset_name(modality: str, band: str) -> str:
    """The GEO-Bench dataset name of a registry band (inverse of ``registry_band``)."""
    if modality == "s2":
        number = f"0{band[1]}A" if band.endswith("A") else band[1:]
        return f"{number} - {S2_DESCRIPTION[band]}"
    return band.upper()


# -- layout -----------------------------------------------------------------------------------------------
def read_partition(root: Path) -> dict[str, list[str]]:
    path = root / PARTITION_FILE
    if not path.is_file():
        raise InputDataError(path, "missing", _LAYOUT_FIX)
    try:
        partition = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputDataError(path, f"not valid JSON ({exc})", _LAYOUT_FIX) from None
    if not isinstance(partition, dict) or set(partition) != set(PARTITIONS) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in partition.values()):
        raise InputDataError(path, f"must map exactly {list(PARTITIONS)} to lists of sample names",
                             "Restore the task's default_partition.json")
    return partition


def check_layout(root: Path) -> None:
    """InputDataError naming the first missing piece of the layout (task folder, specs, partition, samples)."""
    if not root.is_dir():
        raise InputDataError(root, "no such folder", _LAYOUT_FIX)
    if not (root / TASK_SPECS).is_file():
        raise InputDataError(root / TASK_SPECS, "missing", _LAYOUT_FIX)
    for names in read_partition(root).values():
        for name in names:
            if not (root / f"{name}{SAMPLE_SUFFIX}").is_file():
                raise InputDataError(root / f"{name}{SAMPLE_SUFFIX}", f"listed in {PARTITION_FILE} but missing",
                                     "Re-download the task (a partial copy?) or fix the partition file")


def read_task_specs(root: Path):
    path = root / TASK_SPECS
    return safe_loads(path.read_bytes(), path, "the task specification")


def class_names(specs, path: Path) -> tuple[str, ...]:
    """Class names from the task specification's label type (n_classes of them; generic names if unnamed)."""
    label_type = _field(specs, "label_type")
    names = _field(label_type, "class_names") if label_type is not None else None
    if names:
        return tuple(str(n) for n in names)
    n_classes = _field(label_type, "n_classes") if label_type is not None else None
    if not n_classes:
        raise InputDataError(path, "the task specification has no label_type with class_names or n_classes",
                             "Restore the task's task_specs.pkl")
    return tuple(f"class_{i}" for i in range(int(n_classes)))


# -- one sample ---------------------------------------------------------------------------------------------
def read_sample(path: Path) -> tuple[dict[str, np.ndarray], int, dict]:
    """One sample: band dataset name -> 2-D array, the label, and the unpickled attribute dict."""
    import h5py

    try:
        with h5py.File(path, "r") as fp:
            if PICKLE_ATTR not in fp.attrs:
                raise InputDataError(path, f"no root attribute {PICKLE_ATTR!r}", "Re-download this sample")
            raw = fp.attrs[PICKLE_ATTR]
            attrs = safe_loads(_pickle_bytes(raw, path), path, f"attribute {PICKLE_ATTR!r}")
            if not isinstance(attrs, dict) or "label" not in attrs:
                raise InputDataError(path, f"attribute {PICKLE_ATTR!r} has no label", "Re-download this sample")
            names = list(attrs.get("bands_order") or fp.keys())
            missing = [n for n in names if n not in fp]
            if missing:
                raise InputDataError(path, f"bands_order names {missing} but the file has no such dataset "
                                     f"(it has {sorted(fp.keys())})", "Re-download this sample")
            bands = {n: np.asarray(fp[n]) for n in names}
    except OSError as exc:
        raise InputDataError(path, f"not a readable HDF5 file ({exc})", "Re-download this sample") from None
    return bands, int(attrs["label"]), attrs


def _pickle_bytes(raw, path: Path) -> bytes:
    """The attribute as geobench writes it (str of a bytes literal) or as raw bytes."""
    if isinstance(raw, (bytes, np.bytes_, np.void)):
        return bytes(raw)
    try:
        value = ast.literal_eval(str(raw))  # literals only: evaluates no code
    except (ValueError, SyntaxError) as exc:
        raise InputDataError(path, f"attribute {PICKLE_ATTR!r} is not a bytes literal ({exc})",
                             "Re-download this sample") from None
    if not isinstance(value, bytes):
        raise InputDataError(path, f"attribute {PICKLE_ATTR!r} is a {type(value).__name__}, not bytes",
                             "Re-download this sample")
    return value


def _centre(attrs: dict, name: str, shape: tuple[int, int]) -> tuple[float, float] | None:
    """(lat, lon) of the chip centre from a band's transform and CRS, None where either is absent."""
    meta = attrs.get(name) or {}
    transform, crs = _field(meta, "transform"), _field(meta, "crs")
    if transform is None or crs is None:
        return None
    from pyproj import Transformer

    x, y = transform * (shape[1] / 2, shape[0] / 2)
    lon, lat = Transformer.from_crs(str(crs), 4326, always_xy=True).transform(x, y)
    return float(lat), float(lon)


def _date(attrs: dict, name: str) -> np.datetime64:
    value = _field(attrs.get(name) or {}, "date")
    return np.datetime64(value, "D") if value is not None else np.datetime64("NaT", "D")


# -- the task -------------------------------------------------------------------------------------------------
def read(root: Path, name: str | None = None) -> TaskData:
    """A GEO-Bench classification task folder as TaskData (images [N, C, H, W], registry band order)."""
    check_layout(root)
    specs = read_task_specs(root)
    names = class_names(specs, root / TASK_SPECS)
    partition = read_partition(root)
    samples = sorted(((part, s) for part in PARTITIONS for s in partition[part]), key=lambda ps: ps[1])
    stacks: dict[str, list[np.ndarray]] = {}             # modality -> per sample [C, H, W]
    labels, dates, centres, kept = [], {}, [], None
    for _, sample in samples:
        path = root / f"{sample}{SAMPLE_SUFFIX}"
        bands, label, attrs = read_sample(path)
        present = {registry_band(n): n for n in bands if registry_band(n)}  # (modality, band) -> dataset name
        if kept is None:  # the first sample decides which registry bands the task has
            found: dict[str, set[str]] = {}
            for mod, band in present:
                found.setdefault(mod, set()).add(band)
            kept = {mod: _registry_order(mod, found[mod]) for mod in ("s2", "s1") if mod in found}
            dropped = sorted(n for n in bands if registry_band(n) is None)
            if dropped:
                log.info("%s: bands %s are not in the modality registry; dropped", root, dropped)
        if not kept:
            raise InputDataError(path, f"none of its bands {sorted(bands)} is a Sentinel-2 or Sentinel-1 band of the "
                                 "modality registry", _LAYOUT_FIX)
        for mod, order in kept.items():
            missing = [b for b in order if (mod, b) not in present]
            if missing:
                raise InputDataError(path, f"lacks {mod} band(s) {missing} that other samples of the task have",
                                     "Re-download this sample")
            stacks.setdefault(mod, []).append(np.stack([bands[present[(mod, b)]] for b in order]).astype(np.float32))
            dates.setdefault(mod, []).append([_date(attrs, present[(mod, order[0])])])
        if not 0 <= label < len(names):
            raise InputDataError(path, f"label {label} is outside 0..{len(names) - 1} ({len(names)} classes)",
                                 "Re-download this sample or restore task_specs.pkl")
        labels.append(label)
        first = next(iter(bands))
        centres.append(_centre(attrs, first, bands[first].shape))
    _check_shapes(root, samples, stacks)
    return TaskData(
        name=name or str(_field(specs, "dataset_name", root.name)), kind="classification",
        class_names=names, images={m: np.stack(v) for m, v in stacks.items()},
        bands={m: tuple(order) for m, order in kept.items()}, labels=np.array(labels, np.int64),
        partition=np.array([p for p, _ in samples]), sample_ids=tuple(s for _, s in samples),
        dates={m: np.array(v, "datetime64[D]") for m, v in dates.items()},
        centres=None if any(c is None for c in centres) else np.array(centres, np.float64))


def _registry_order(modality: str, found: set[str]) -> tuple[str, ...]:
    return tuple(b.name for b in (S2 if modality == "s2" else S1).select(found))


def _check_shapes(root: Path, samples, stacks: dict[str, list[np.ndarray]]) -> None:
    for mod, arrays in stacks.items():
        first = arrays[0].shape
        for (_, sample), array in zip(samples, arrays):
            if array.shape != first:
                raise InputDataError(root / f"{sample}{SAMPLE_SUFFIX}", f"{mod} bands are {array.shape[1:]} "
                                     f"pixels, other samples {first[1:]}", "Re-download this sample")


# -- writing ---------------------------------------------------------------------------------------------------
STAT_PERCENTILES = (0.1, 1, 99, 99.9)


def write(task: TaskData, out: Path, pixel_m: float = 10.0) -> None:
    """``task`` (classification, images [N, C, H, W], centres known) in GEO-Bench's layout in folder ``out``.

    S2 is written as int16 reflectance x 10000 (m-eurosat's digital numbers), S1 as float32 dB; each band's
    transform and CRS are the chip's 10 m UTM grid around its centre (terrapipe.grid.site_grid). The task
    specification is pickled as a plain dict (geobench pickles its TaskSpecifications class; ``read`` takes both).
    """
    import datetime

    import h5py
    from rasterio.crs import CRS

    from terrapipe.grid import site_grid

    if task.kind != "classification" or task.centres is None or any(v.ndim != 4 for v in task.images.values()):
        raise ValueError(f"GEO-Bench's classification layout needs single-time images and centres ({task.name})")
    columns = sorted(((dataset_name(m, b), m, i) for m, names in task.bands.items() for i, b in enumerate(names)),
                     key=lambda c: (c[1] != "s2", c[0]))  # m-eurosat's numeric order, S1 after
    size = next(iter(task.images.values())).shape[-1]
    for n, sample in enumerate(task.sample_ids):
        grid = site_grid(*task.centres[n], size)
        attrs = {"label": int(task.labels[n]), "bands_order": [c[0] for c in columns]}
        with h5py.File(out / f"{sample}{SAMPLE_SUFFIX}", "w", track_order=True) as fp:
            for name, mod, channel in columns:
                pixels = task.images[mod][n, channel]                          # [H, W]
                data = np.round(pixels).astype(np.int16) if mod == "s2" else pixels.astype(np.float32)
                fp.create_dataset(name, data=data, track_times=False)
                band = (S2 if mod == "s2" else S1).band(task.bands[mod][channel])
                day = task.dates[mod][n, 0].astype(datetime.date) if mod in task.dates else None
                attrs[name] = {"date": day, "spatial_resolution": pixel_m, "transform": grid.transform,
                               "crs": CRS.from_epsg(grid.epsg),
                               "band_info": {"name": name, "alt_names": (band.name,), "spatial_resolution":
                                             band.native_m, "wavelength": (band.wavelength_nm or 0) / 1000}}
            fp.attrs[PICKLE_ATTR] = str(pickle.dumps(attrs, protocol=4))
    (out / TASK_SPECS).write_bytes(pickle.dumps({
        "dataset_name": task.name, "patch_size": (size, size), "n_time_steps": 1, "spatial_resolution": pixel_m,
        "bands_info": [c[0] for c in columns], "eval_loss": "accuracy",
        "label_type": {"n_classes": len(task.class_names), "class_names": list(task.class_names)}}, protocol=4))
    partition = {p: [s for s, q in zip(task.sample_ids, task.partition) if q == p] for p in PARTITIONS}
    (out / PARTITION_FILE).write_text(json.dumps(partition, indent=1) + "\n")
    (out / BAND_STATS).write_text(json.dumps(band_stats(task, columns), indent=1) + "\n")


def band_stats(task: TaskData, columns) -> dict[str, dict[str, float]]:
    """GEO-Bench's band_stats.json over the training partition: mean, std, min, max, median, percentiles."""
    train = task.partition == "train"
    stats = {}
    for name, mod, channel in columns:
        values = task.images[mod][train, channel].astype(np.float64).ravel()
        entry = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max(),
                 "median": np.median(values)}
        entry.update({f"percentile_{p}": np.percentile(values, p) for p in STAT_PERCENTILES})
        stats[name] = {k: round(float(v), 6) for k, v in entry.items()}
    return stats
