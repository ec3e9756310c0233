"""Downstream task data: real-format fixtures written by hand, writer -> reader round trips, the restricted
unpickler, spatial disjointness of the sample tasks and determinism."""
from __future__ import annotations

import datetime
import hashlib
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from terrapipe.data.tasks import IGNORE_LABEL, PARTITIONS, TasksParams, geobench
from terrapipe.errors import ConfigError, InputDataError

M_EUROSAT_BANDS = ["01 - Coastal aerosol", "02 - Blue", "03 - Green", "04 - Red", "05 - Vegetation Red Edge",
                   "06 - Vegetation Red Edge", "07 - Vegetation Red Edge", "08 - NIR", "08A - Vegetation Red Edge",
                   "09 - Water vapour", "10 - SWIR - Cirrus", "11 - SWIR", "12 - SWIR"]
REGISTRY_S2 = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09")
TINY = {"eurosat": {"n_samples": 10, "chip_size": 16}, "so2sat": {"n_samples": 17, "chip_size": 8},
        "pastis": {"n_samples": 3, "chip_size": 8, "months": 2}, "mados": {"n_samples": 2, "chip_size": 12},
        "min_site_distance_km": 5.0, "block_km": 4.0}


# -- a GEO-Bench task written by hand, exactly as geobench 1.0.0 lays it out --------------------------------
@pytest.fixture
def geobench_classes():
    """geobench's classes as importable stand-ins, so pickles name geobench.dataset.* like real files do."""
    module = types.ModuleType("geobench.dataset")

    class SpectralBand:
        def __init__(self, name, alt_names, spatial_resolution, wavelength):
            self.name, self.alt_names = name, alt_names
            self.spatial_resolution, self.wavelength = spatial_resolution, wavelength

    class MultiClassification:
        def __init__(self, n_classes, class_names):
            self.n_classes, self.class_names = n_classes, class_names

    class TaskSpecifications:
        def __init__(self, dataset_name, label_type, patch_size):
            self.dataset_name, self.label_type, self.patch_size = dataset_name, label_type, patch_size

    for cls in (SpectralBand, MultiClassification, TaskSpecifications):
        cls.__module__, cls.__qualname__ = "geobench.dataset", cls.__name__
        setattr(module, cls.__name__, cls)
    package = types.ModuleType("geobench")
    package.dataset = module
    sys.modules.update({"geobench": package, "geobench.dataset": module})
    yield module
    for name in ("geobench", "geobench.dataset"):
        sys.modules.pop(name, None)


def _write_m_eurosat_sample(path: Path, gb, label: int, pixels: np.ndarray, band_names=M_EUROSAT_BANDS):
    import h5py
    from affine import Affine
    from rasterio.crs import CRS

    attrs = {"label": label, "bands_order": band_names}
    with h5py.File(path, "w") as fp:
        for name, band in zip(band_names, pixels):
            fp.create_dataset(name, data=band)
            attrs[name] = {"date": datetime.date(2017, 6, 1), "spatial_resolution": 10.0,
                           "band_info": gb.SpectralBand(name, (name[:3],), 10.0, 0.49),
                           "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0), "crs": CRS.from_epsg(32631)}
        fp.attrs["pickle"] = str(pickle.dumps(attrs))


@pytest.fixture
def m_eurosat(tmp_path, geobench_classes):
    """Three m-eurosat samples (13 int16 bands, 8 x 8) with task_specs.pkl, default_partition.json, band_stats.json."""
    gb = geobench_classes
    root = tmp_path / "m-eurosat"
    root.mkdir()
    rng = np.random.default_rng(0)
    pixels = {}
    for i, name in enumerate(["id_0", "id_1", "id_2"]):
        pixels[name] = rng.integers(0, 4000, (13, 8, 8)).astype(np.int16)
        _write_m_eurosat_sample(root / f"{name}.hdf5", gb, i + 4, pixels[name])
    names = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
             "Residential", "River", "SeaLake"]
    (root / "task_specs.pkl").write_bytes(pickle.dumps(
        gb.TaskSpecifications("m-eurosat", gb.MultiClassification(10, names), (8, 8))))
    (root / "default_partition.json").write_text(json.dumps({"train": ["id_1", "id_0"], "valid": ["id_2"], "test": []}))
    (root / "band_stats.json").write_text(json.dumps({n: {"mean": 1.0, "std": 1.0} for n in M_EUROSAT_BANDS}))
    return root, pixels


def test_real_m_eurosat_layout_reads_in_registry_order(m_eurosat):
    root, pixels = m_eurosat
    task = geobench.read(root)
    assert task.name == "m-eurosat" and task.kind == "classification" and task.class_names[4] == "Industrial"
    assert task.bands == {"s2": REGISTRY_S2}                              # B10 dropped, registry order
    assert task.sample_ids == ("id_0", "id_1", "id_2")
    assert task.partition.tolist() == ["train", "train", "valid"]
    assert task.labels.tolist() == [4, 5, 6]
    image = task.images["s2"]
    assert image.dtype == np.float32 and image.shape == (3, 12, 8, 8)
    file_index = {name[:3].strip().replace("08A", "8A"): i for i, name in enumerate(M_EUROSAT_BANDS)}
    for c, band in enumerate(REGISTRY_S2):
        number = band[1:] if band != "B8A" else "8A"
        np.testing.assert_array_equal(image[1, c], pixels["id_1"][file_index[number]])
    assert task.dates["s2"][0, 0] == np.datetime64("2017-06-01")
    lat, lon = task.centres[0]                                             # EPSG:32631 (500040, 5199960)
    assert abs(lon - 3.0) < 0.01 and 46.9 < lat < 47.0


class _RunsCode:
    def __reduce__(self):
        import os
        return os.system, ("touch " + str(_RunsCode.marker),)


def test_malicious_attribute_is_refused_not_run(m_eurosat, tmp_path):
    import h5py

    root, _ = m_eurosat
    _RunsCode.marker = tmp_path / "pwned"
    with h5py.File(root / "id_2.hdf5", "a") as fp:
        fp.attrs["pickle"] = str(pickle.dumps({"label": 1, "bands_order": M_EUROSAT_BANDS, "x": _RunsCode()}))
    with pytest.raises(InputDataError, match=r"id_2\.hdf5.*refused to load (posix|os)\.system"):
        geobench.read(root)
    assert not _RunsCode.marker.exists()


def test_malicious_task_specs_is_refused(m_eurosat, tmp_path):
    root, _ = m_eurosat
    _RunsCode.marker = tmp_path / "pwned"
    (root / "task_specs.pkl").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(InputDataError, match=r"task_specs\.pkl.*refused"):
        geobench.read(root)
    assert not _RunsCode.marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "task_specs.pkl").unlink(), r"task_specs\.pkl: missing\. Point tasks\.<task>\.path"),
    (lambda root: (root / "id_2.hdf5").unlink(), r"id_2\.hdf5: listed in default_partition\.json but missing"),
    (lambda root: (root / "default_partition.json").write_text('{"train": []}'), r"must map exactly"),
    (lambda root: (root / "id_0.hdf5").write_bytes(b"not hdf5"), r"id_0\.hdf5: not a readable HDF5 file"),
])
def test_bad_geobench_layout_names_the_file_and_the_fix(m_eurosat, damage, message):
    root, _ = m_eurosat
    damage(root)
    with pytest.raises(InputDataError, match=message):
        geobench.read(root)


def test_geobench_sample_missing_a_band_is_named(m_eurosat, geobench_classes):
    root, _ = m_eurosat
    _write_m_eurosat_sample(root / "id_2.hdf5", geobench_classes, 1, np.zeros((12, 8, 8), np.int16),
                            M_EUROSAT_BANDS[:-1])
    with pytest.raises(InputDataError, match=r"id_2\.hdf5: lacks s2 band\(s\) \['B12'\]"):
        geobench.read(root)


# -- params -----------------------------------------------------------------------------------------------
def test_tasks_params_unknown_key_names_the_dotted_path():
    from terrapipe.data.tasks import tasks_params

    with pytest.raises(ConfigError, match=r"tasks\.eurosat\.n_sample"):
        tasks_params(types.SimpleNamespace(tasks={"eurosat": {"n_sample": 3, "chip_size": 8}}))
    with pytest.raises(ConfigError, match=r"tasks\.mados: .*needs path"):
        tasks_params(types.SimpleNamespace(tasks={"mados": {"source": "local"}}))
    assert tasks_params(types.SimpleNamespace(tasks={"mados": {"n_samples": 3}})).mados.chip_size == 80
    with pytest.raises(ConfigError, match=r"tasks\.pastis: folds .* must give each"):
        tasks_params(types.SimpleNamespace(tasks={"pastis": {"n_samples": 1, "chip_size": 8,
                                                             "folds": {"train": [1], "valid": [1], "test": [5]}}}))


# -- the sample tasks -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world_and_study():
    from terrapipe import paths
    from terrapipe.sources.world import World
    from terrapipe.study import load_study

    return World(0), load_study(paths.INPUTS, None)


@pytest.fixture(scope="module")
def tiny_params():
    return TasksParams.model_validate(TINY)


@pytest.fixture(scope="module")
def sample_eurosat(world_and_study, tiny_params):
    from terrapipe.sources.sample_tasks import sample_task

    world, study = world_and_study
    return sample_task(world, study, tiny_params, 0, "eurosat")


def _km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from terrapipe.sources.sample_tasks import nearest_site_km

    return nearest_site_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])


def _check_disjoint(task, study, tp: TasksParams, chip_size: int):
    """Far from every pretraining site; chips of different partitions never in one block, never overlapping."""
    from terrapipe.sources.sample_tasks import EARTH_KM_PER_DEG

    sites = study.sites[["latitude", "longitude"]].to_numpy()
    assert (_km(task.centres, sites) >= tp.min_site_distance_km).all()
    block = np.floor(task.centres / (tp.block_km / EARTH_KM_PER_DEG)).astype(int)
    half_km = chip_size * 10 / 2 / 1000
    for i in range(len(task)):
        for j in range(i + 1, len(task)):
            if task.partition[i] != task.partition[j]:
                assert tuple(block[i]) != tuple(block[j])
            d = _km(task.centres[i:i + 1], task.centres[j:j + 1])[0]
            assert d > 2 * half_km                                           # never overlapping


def test_sample_eurosat_classes_partitions_and_places(sample_eurosat, world_and_study, tiny_params):
    from terrapipe.sources.sample_tasks import EUROSAT_CLASSES

    task = sample_eurosat
    assert task.class_names == EUROSAT_CLASSES and task.bands == {"s2": REGISTRY_S2}
    assert task.images["s2"].shape[1:] == (12, 16, 16) and 8 <= len(task) <= 10
    assert len(set(task.labels.tolist())) >= 7 and (task.labels != IGNORE_LABEL).all()
    assert set(task.partition.tolist()) <= set(PARTITIONS) and "train" in task.partition
    _check_disjoint(task, world_and_study[1], tiny_params, 16)
    # physical plausibility: water is dark in NIR, vegetation bright
    nir = task.images["s2"][:, REGISTRY_S2.index("B08")].mean(axis=(1, 2))
    for water in np.flatnonzero(task.labels == EUROSAT_CLASSES.index("SeaLake")):
        for forest in np.flatnonzero(task.labels == EUROSAT_CLASSES.index("Forest")):
            assert nir[water] < nir[forest]


def test_geobench_writer_reader_round_trip_and_same_bytes(sample_eurosat, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        out.mkdir()
        geobench.write(sample_eurosat, out)
    digest = [{p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())} for out in (first, second)]
    assert digest[0] == digest[1] and "band_stats.json" in digest[0]
    back = geobench.read(first)
    assert back.sample_ids == sample_eurosat.sample_ids and back.bands == sample_eurosat.bands
    np.testing.assert_array_equal(back.images["s2"], sample_eurosat.images["s2"])
    np.testing.assert_array_equal(back.labels, sample_eurosat.labels)
    np.testing.assert_array_equal(back.partition, sample_eurosat.partition)
    np.testing.assert_array_equal(back.dates["s2"], sample_eurosat.dates["s2"][:, :1])
    assert np.abs(back.centres - sample_eurosat.centres).max() < 0.001      # the chip grid snaps to 60 m
    assert back.class_names == sample_eurosat.class_names


def test_sample_eurosat_is_deterministic(sample_eurosat, world_and_study, tiny_params):
    from terrapipe.sources.sample_tasks import sample_task

    again = sample_task(*world_and_study, tiny_params, 0, "eurosat")
    np.testing.assert_array_equal(again.images["s2"], sample_eurosat.images["s2"])
    np.testing.assert_array_equal(again.labels, sample_eurosat.labels)
    other = sample_task(*world_and_study, tiny_params, 1, "eurosat")
    assert not np.array_equal(other.centres, sample_eurosat.centres)
