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
def inputs(tmp_path_factory):
    """The default study definition (a fresh clone has no data/inputs before `dvc pull`)."""
    from terrapipe.study import write_default_inputs

    folder = tmp_path_factory.mktemp("tasks-inputs") / "inputs"
    write_default_inputs(folder)
    return folder


@pytest.fixture(scope="module")
def world_and_study(inputs):
    from terrapipe.sources.world import World
    from terrapipe.study import load_study

    return World(0), load_study(inputs, None)


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


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_geobench_writer_reader_round_trip_and_same_bytes(sample_eurosat, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        out.mkdir()
        geobench.write(sample_eurosat, out)
    digest = [_digests(out) for out in (first, second)]
    assert digest[0] == digest[1] and "band_stats.json" in digest[0]
    back = geobench.read(first)
    assert back.sample_ids == sample_eurosat.sample_ids and back.bands == sample_eurosat.bands
    np.testing.assert_array_equal(back.images["s2"], sample_eurosat.images["s2"])
    np.testing.assert_array_equal(back.labels, sample_eurosat.labels)
    np.testing.assert_array_equal(back.partition, sample_eurosat.partition)
    np.testing.assert_array_equal(back.dates["s2"], sample_eurosat.dates["s2"][:, :1])
    assert np.abs(back.centres - sample_eurosat.centres).max() < 0.001      # the chip grid snaps to 60 m
    assert back.class_names == sample_eurosat.class_names


def test_sample_task_is_deterministic(world_and_study, tiny_params):
    from terrapipe.sources.sample_tasks import sample_task

    first, again = (sample_task(*world_and_study, tiny_params, 0, "pastis") for _ in range(2))
    for key, image in first.images.items():
        np.testing.assert_array_equal(again.images[key], image)
    for field in ("labels", "centres", "folds", "partition"):
        np.testing.assert_array_equal(getattr(again, field), getattr(first, field))
    assert again.sample_ids == first.sample_ids


# -- PASTIS, written by hand in the release's layout ----------------------------------------------------------
def _write_pastis(root: Path, patches: dict[int, int], with_s1: bool = True) -> dict:
    """PASTIS-R files for patches {ID_PATCH: Fold}: 3 (S2) / 2 (S1A) dates, 10 S2 bands, 4 x 4 pixels."""
    rng = np.random.default_rng(1)
    for folder in ("DATA_S2", "ANNOTATIONS") + (("DATA_S1A",) if with_s1 else ()):
        (root / folder).mkdir(parents=True, exist_ok=True)
    arrays, features = {}, []
    for patch, fold in patches.items():
        s2 = rng.integers(0, 5000, (3, 10, 4, 4)).astype(np.int16)
        s1 = rng.normal(-12, 3, (2, 3, 4, 4)).astype(np.float32)
        target = np.stack([rng.integers(0, 20, (4, 4)), rng.integers(0, 9, (4, 4)), np.zeros((4, 4))]).astype(np.uint8)
        np.save(root / "DATA_S2" / f"S2_{patch}.npy", s2)
        np.save(root / "ANNOTATIONS" / f"TARGET_{patch}.npy", target)
        if with_s1:
            np.save(root / "DATA_S1A" / f"S1A_{patch}.npy", s1)
        arrays[patch] = (s2, s1, target)
        x0, y0 = 700000.0 + 1280 * patch % 7, 6600000.0
        features.append({"type": "Feature", "id": str(patch), "geometry": {"type": "Polygon", "coordinates": [[
            [x0, y0], [x0 + 1280, y0], [x0 + 1280, y0 - 1280], [x0, y0 - 1280], [x0, y0]]]},
            "properties": {"ID_PATCH": patch, "Fold": fold, "N_Parcel": 12, "Parcel_Cover": 0.8, "TILE": "t31tfm",
                           "dates-S2": {"0": 20180924, "1": 20181009, "2": 20181014},
                           "dates-S1A": {"0": 20181002, "1": 20181014}}})
    (root / "metadata.geojson").write_text(json.dumps({"type": "FeatureCollection", "crs": {
        "type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}}, "features": features}))
    return arrays


def test_real_pastis_layout_reads(tmp_path):
    from terrapipe.data.tasks import pastis

    arrays = _write_pastis(tmp_path, {20001: 5, 10001: 1, 30002: 4})
    task = pastis.read(tmp_path)
    assert task.sample_ids == ("10001", "20001", "30002") and task.partition.tolist() == ["train", "test", "valid"]
    assert task.bands == {"s2": ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"),
                          "s1": ("vv", "vh")}
    s2, s1, target = arrays[20001]
    image = task.images["s2"][1]                                              # [T, C, H, W]
    np.testing.assert_array_equal(image[:, 3], s2[:, 6])                      # B08 is PASTIS's channel 6
    np.testing.assert_array_equal(image[:, 4], s2[:, 3])                      # B05 its channel 3
    np.testing.assert_array_equal(task.images["s1"][1], s1[:, :2])            # ratio channel dropped
    expected = np.where(target[0] == 19, IGNORE_LABEL, target[0].astype(np.int64))
    np.testing.assert_array_equal(task.labels[1], expected)
    assert task.dates["s2"][1].tolist()[1] == datetime.date(2018, 10, 9) and task.folds.tolist() == [1, 5, 4]
    lat, lon = task.centres[0]                                                # Lambert-93 -> somewhere in France
    assert 42 < lat < 51 and -5 < lon < 9


def test_pastis_folds_map_partitions_and_unused_folds_are_left_out(tmp_path):
    from terrapipe.data.tasks import pastis

    _write_pastis(tmp_path, {1: 1, 2: 2, 3: 3})
    task = pastis.read(tmp_path, folds={"train": [1], "valid": [2], "test": [4]})
    assert task.sample_ids == ("1", "2") and task.partition.tolist() == ["train", "valid"]


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "DATA_S2" / "S2_7.npy").unlink(), r"S2_7\.npy: missing \(patch 7 of metadata\.geojson\)"),
    (lambda root: (root / "metadata.geojson").write_text("{}"), r"metadata\.geojson: not a GeoJSON FeatureCollection"),
    (lambda root: np.save(root / "DATA_S2" / "S2_7.npy", np.zeros((2, 10, 4, 4), np.int16)),
     r"S2_7\.npy: has shape \(2, 10, 4, 4\) but metadata\.geojson lists 3 dates"),
    (lambda root: np.save(root / "ANNOTATIONS" / "TARGET_7.npy", np.array([object()])),
     r"TARGET_7\.npy: not a readable \.npy array"),
])
def test_bad_pastis_layout_names_the_file(tmp_path, damage, message):
    from terrapipe.data.tasks import pastis

    _write_pastis(tmp_path, {7: 1})
    damage(tmp_path)
    with pytest.raises(InputDataError, match=message):
        pastis.read(tmp_path)


# -- MADOS, written by hand in the release's layout --------------------------------------------------------------
MADOS_NM = (442, 492, 559, 665, 704, 739, 780, 833, 864, 1610, 2186)  # S2B's ACOLITE names


def _write_mados(root: Path, crops: dict[str, str]) -> dict:
    """MADOS crops {"Scene_<n>_<crop>": partition}: 10 m bands in 10/, 20 m in 20/ (half size), 60 m in 60/."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(2)
    arrays = {}
    coarse = {704: 20, 739: 20, 780: 20, 864: 20, 1610: 20, 2186: 20, 442: 60}
    for crop in crops:
        scene, index = crop.rsplit("_", 1)
        bands = {}
        for nm in MADOS_NM:
            res = coarse.get(nm, 10)
            size = 12 * 10 // res
            data = rng.random((size, size)).astype(np.float32) * 0.1
            folder = root / scene / str(res)
            folder.mkdir(parents=True, exist_ok=True)
            with rasterio.open(folder / f"{scene}_L2R_rhorc_{nm}_{index}.tif", "w", driver="GTiff", height=size,
                               width=size, count=1, dtype="float32", crs="EPSG:32634",
                               transform=from_origin(600000, 4200000, res, res)) as dst:
                dst.write(data[None])
            bands[nm] = data
        mask = rng.integers(0, 16, (12, 12)).astype(np.uint8)
        with rasterio.open(root / scene / "10" / f"{scene}_L2R_cl_{index}.tif", "w", driver="GTiff", height=12,
                           width=12, count=1, dtype="uint8", crs="EPSG:32634",
                           transform=from_origin(600000, 4200000, 10, 10)) as dst:
            dst.write(mask[None])
        arrays[crop] = (bands, mask)
    (root / "splits").mkdir()
    for partition, name in (("train", "train_X.txt"), ("valid", "val_X.txt"), ("test", "test_X.txt")):
        (root / "splits" / name).write_text("".join(f"{c}\n" for c, p in crops.items() if p == partition))
    return arrays


def test_real_mados_layout_reads(tmp_path):
    from terrapipe.data.tasks import mados

    arrays = _write_mados(tmp_path, {"Scene_3_2": "train", "Scene_10_1": "test", "Scene_3_5": "valid"})
    task = mados.read(tmp_path)
    assert task.sample_ids == ("Scene_10_1", "Scene_3_2", "Scene_3_5")
    assert task.partition.tolist() == ["test", "train", "valid"]
    assert task.bands["s2"] == ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01")
    bands, mask = arrays["Scene_3_2"]
    image = task.images["s2"][1]                                              # [C, H, W] at 10 m
    np.testing.assert_allclose(image[3], bands[833] * 1e4, rtol=1e-6)         # B08 <- 833 nm
    np.testing.assert_allclose(image[7], np.repeat(np.repeat(bands[864], 2, 0), 2, 1) * 1e4, rtol=1e-6)  # 20 m
    np.testing.assert_allclose(image[10], np.repeat(np.repeat(bands[442], 6, 0), 6, 1) * 1e4, rtol=1e-6)
    np.testing.assert_array_equal(task.labels[1], np.where(mask == 0, IGNORE_LABEL, mask.astype(int) - 1))
    assert task.class_names[4] == "Ship" and np.isnat(task.dates["s2"]).all()


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "splits" / "val_X.txt").unlink(), r"val_X\.txt: missing\. Point tasks\.mados\.path"),
    (lambda root: (root / "Scene_1" / "10" / "Scene_1_L2R_cl_0.tif").unlink(),
     r"Scene_1_L2R_cl_0\.tif: missing \(crop Scene_1_0"),
    (lambda root: (root / "Scene_1" / "20" / "Scene_1_L2R_rhorc_1610_0.tif").unlink(),
     r"crop Scene_1_0 lacks bands \['B11'\]"),
    (lambda root: (root / "splits" / "train_X.txt").write_text("scene one\n"), r"are not Scene_<n>_<crop>"),
])
def test_bad_mados_layout_names_the_file(tmp_path, damage, message):
    from terrapipe.data.tasks import mados

    _write_mados(tmp_path, {"Scene_0_0": "train", "Scene_1_0": "test"})
    damage(tmp_path)
    with pytest.raises(InputDataError, match=message):
        mados.read(tmp_path)


# -- sample tasks in the other formats: round trips, disjointness ------------------------------------------------
@pytest.mark.parametrize("task, size", [("so2sat", 8), ("pastis", 8), ("mados", 12)])
def test_sample_task_round_trip_and_disjointness(task, size, world_and_study, tiny_params, tmp_path):
    import importlib

    from terrapipe.data.tasks import FORMAT_OF
    from terrapipe.sources.sample_tasks import sample_task

    data = sample_task(*world_and_study, tiny_params, 0, task)
    _check_disjoint(data, world_and_study[1], tiny_params, size)
    module = importlib.import_module(f"terrapipe.data.tasks.{FORMAT_OF[task]}")
    for out in (tmp_path / "a", tmp_path / "b"):
        out.mkdir()
        module.write(data, out)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")             # same bytes twice
    back = module.read(tmp_path / "a")
    assert back.sample_ids == data.sample_ids and back.bands == data.bands and back.class_names == data.class_names
    for key, image in data.images.items():
        np.testing.assert_allclose(back.images[key], image, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(back.labels, data.labels)
    np.testing.assert_array_equal(back.partition, data.partition)
    assert np.abs(back.centres - data.centres).max() < 0.001
    if task == "so2sat":
        assert data.bands == {"s2": ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"),
                              "s1": ("vv", "vh")}
        assert len(set(data.labels.tolist())) >= 12
    if task == "pastis":
        assert data.images["s2"].shape[1:3] == (2, 10) and (data.labels > 0).mean() >= 0.3
        np.testing.assert_array_equal(back.folds, data.folds)
        np.testing.assert_array_equal(back.dates["s1"], data.dates["s1"])
    if task == "mados":
        assert (data.labels >= 0).mean() >= 0.5                               # mostly sea
        np.testing.assert_array_equal(back.dates["s2"], data.dates["s2"])


# -- the stage ------------------------------------------------------------------------------------------------------
def _stage_main():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    try:
        import fetch_tasks
    finally:
        sys.path.pop(0)
    return fetch_tasks.main


def test_fetch_tasks_stage_sample_and_local(tmp_path, monkeypatch, m_eurosat, inputs):
    monkeypatch.chdir(tmp_path)
    main = _stage_main()
    params = types.SimpleNamespace(seed=0, tasks={**TINY, "eurosat": {"source": "local", "path": str(m_eurosat[0])}})
    main(types.SimpleNamespace(params_obj=params, inputs=inputs, task="mados"))
    out = tmp_path / "data" / "raw" / "tasks" / "mados"
    assert (out / "splits" / "train_X.txt").is_file() and not list(out.parent.glob(".mados.tmp-*"))
    main(types.SimpleNamespace(params_obj=params, inputs=inputs, task="eurosat"))
    linked = tmp_path / "data" / "raw" / "tasks" / "eurosat"
    assert sorted(p.name for p in linked.iterdir()) == sorted(p.name for p in m_eurosat[0].iterdir())
    assert geobench.read(linked).sample_ids == ("id_0", "id_1", "id_2")
    (m_eurosat[0] / "id_1.hdf5").unlink()
    with pytest.raises(InputDataError, match=r"id_1\.hdf5: listed in default_partition\.json but missing"):
        main(types.SimpleNamespace(params_obj=params, inputs=inputs, task="eurosat"))
    assert geobench.read(linked).sample_ids == ("id_0", "id_1", "id_2")     # the previous output is left in place
    with pytest.raises(ConfigError, match="unknown task 'landsat'"):
        main(types.SimpleNamespace(params_obj=params, inputs=inputs, task="landsat"))
