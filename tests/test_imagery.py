"""Sample imagery (GeoTIFF chips) and the normalized training store built from them."""
import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray
import yaml
from conftest import SMALL_PARAMS, run_stage, tree_digest
from rasterio.transform import from_origin

from terrapipe.config import parse_params
from terrapipe.data.imagery import BAND_SCHEMA, FILE_SCHEMA, build_store, read_chip
from terrapipe.data.normalize import MISSING_VALUE, band_stats
from terrapipe.data.quality import value_summary
from terrapipe.data.store import TrainingStore
from terrapipe.errors import InputDataError
from terrapipe.grid import site_grid
from terrapipe.modalities import LANDSAT, S1, S2
from terrapipe.sources import fetch
from terrapipe.study import load_study, utm_epsg, write_default_inputs

WORLDCOVER_CODES = {10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Raw chips of the small study, fetched once per module: tests get a copy (``raw``)."""
    inputs = tmp_path_factory.mktemp("inputs") / "inputs"
    write_default_inputs(inputs)
    params = parse_params(SMALL_PARAMS)
    out = tmp_path_factory.mktemp("pristine")
    fetch("sentinel", params, load_study(inputs, params.study.sites_per_aoi), out)
    return out


@pytest.fixture
def raw(workdir, small_params, pristine):
    """Raw chips of the small study (a copy the test may change), and the study."""
    study = load_study("data/inputs", small_params.study.sites_per_aoi)
    out = workdir / "data" / "raw" / "sentinel"
    shutil.copytree(pristine, out)
    return out, study


def _read_all(root):
    return {p.relative_to(root): rasterio.open(p).read() for p in sorted(root.rglob("*.tif"))}


def _split_of(study, test_sites):
    return {s: ("test" if s in test_sites else "train") for s in study.sites["site_id"]}


def _build(out, study, store_dir, sensors=("s2",)):
    """The store of ``out`` with every site in train: its folder."""
    store_dir.mkdir()
    build_store(out, study.sites, _split_of(study, set()), list(sensors), S2.band_order, 18, 4, 2.0, store_dir)
    return store_dir


def _rewrite(path, **changes):
    """Rewrite a GeoTIFF with the same pixels, band names and scaling and ``changes`` to its profile."""
    with rasterio.open(path) as src:
        data, profile, names, scales, offsets = src.read(), src.profile, src.descriptions, src.scales, src.offsets
    path.unlink()
    with rasterio.open(path, "w", **{**profile, **changes}) as dst:
        dst.write(data)
        for i, name in enumerate(names, 1):
            dst.set_band_description(i, name)
        dst.scales, dst.offsets = scales, offsets


def _relabelled(src):
    return {"crs": "EPSG:4326"}  # UTM metres, called degrees


def _geographic(src):
    from pyproj import Transformer
    lon, lat = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(src.transform.c, src.transform.f)
    return {"crs": "EPSG:4326", "transform": from_origin(lon, lat, 1e-4, 1e-4)}  # a real 10 m-ish lat/lon grid


def _moved(src):
    return {"transform": from_origin(src.transform.c + 50_000, src.transform.f, 10, 10)}


def _coarse(src):
    return {"transform": from_origin(src.transform.c, src.transform.f, 20, 20)}


def _change_georeferencing(victim, change):
    """Rewrite ``victim``'s CRS or transform as ``change`` (a function of the open file) says."""
    with rasterio.open(victim) as src:
        changes = change(src)
    _rewrite(victim, **changes)


def test_generator_is_deterministic(raw, small_params, tmp_path):
    out, study = raw
    again = tmp_path / "again"
    again.mkdir()
    fetch("sentinel", small_params, study, again)
    first, second = _read_all(out), _read_all(again)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    other = tmp_path / "other-seed"
    other.mkdir()
    fetch("sentinel", small_params.model_copy(update={"seed": 99}), study, other)
    different = _read_all(other)
    common = [k for k in first if k in different and first[k].shape == different[k].shape]
    assert common and not any(np.array_equal(first[k], different[k]) for k in common if k.name not in ("worldcover.tif", "land_use.tif"))


def test_geotiffs_have_the_provider_layout(raw, small_params):
    out, study = raw
    site = study.sites.iloc[0]
    s2 = rioxarray.open_rasterio(next((out / site.site_id / "s2").glob("*.tif")))
    assert s2.dims == ("band", "y", "x") and s2.shape == (12, 18, 18)
    assert s2.rio.crs.to_epsg() == utm_epsg(site.latitude, site.longitude)
    assert s2.attrs["long_name"] == S2.band_order
    assert s2.rio.nodata == 0 and s2.dtype == np.uint16
    assert s2.rio.resolution() == (10.0, -10.0)
    assert s2.rio.transform().c % 60 == 0 and s2.rio.transform().f % 60 == 0
    valid = s2.values[s2.values > 0]
    reflectance = valid * 1e-4 - 0.1  # L2A baseline >= 04.00: DN = 10000 * reflectance + 1000
    assert 0.0 < np.median(reflectance) < 0.6
    s1 = rioxarray.open_rasterio(next((out / site.site_id / "s1").glob("*.tif")), masked=True)
    assert s1.attrs["long_name"] == ("vv", "vh") and s1.dtype == np.float32
    assert -35 < float(s1.sel(band=1).median()) < 5 and float(s1.sel(band=2).median()) < float(s1.sel(band=1).median())
    landsat = rioxarray.open_rasterio(next((out / site.site_id / "landsat").glob("*.tif")))
    assert landsat.shape[0] == 11 and landsat.attrs["long_name"][9] == "B10"
    thermal_k = landsat.sel(band=10).values[landsat.sel(band=10).values > 0] * 0.00341802 + 149.0
    assert 220 < thermal_k.mean() < 330
    worldcover = rioxarray.open_rasterio(out / site.site_id / "worldcover.tif")
    assert set(np.unique(worldcover.values)) <= WORLDCOVER_CODES
    srtm = rioxarray.open_rasterio(out / site.site_id / "srtm.tif")
    assert srtm.dtype == np.int16 and srtm.rio.nodata == -32768


def test_native_resolution_is_preserved(raw):
    out, study = raw
    s2 = rasterio.open(next((out / study.sites.site_id[0] / "s2").glob("*.tif"))).read()
    b05, b01 = s2[S2.band_order.index("B05")].astype(int), s2[S2.band_order.index("B01")].astype(int)
    assert np.all(b05[0:2, 0:2] == b05[0, 0]) and np.all(b01[0:6, 0:6] == b01[0, 0])   # 20 m and 60 m cells
    b02 = s2[S2.band_order.index("B02")]
    assert len(np.unique(b02[0:2, 0:2])) > 1  # 10 m band varies pixel to pixel


def test_scenes_csv_lists_every_file(raw):
    out, _ = raw
    scenes = pd.read_csv(out / "scenes.csv")
    assert {"site_id", "sensor", "date", "path", "scene_id", "source"} <= set(scenes.columns)
    assert sorted(scenes["path"]) == sorted(str(p.relative_to(out)) for p in out.glob("*/*/*.tif"))


def test_store_stats_use_train_sites_only_and_missing_survives(raw, small_params, tmp_path):
    out, study = raw
    sites = study.sites
    test_site = sites.site_id.iloc[0]
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    stats = build_store(out, sites, _split_of(study, {test_site}), ["s2", "s1", "landsat"], S2.band_order, 18, 4, 2.0,
                        store_dir)

    s2 = S2
    months = sorted(pd.read_csv(out / "scenes.csv").query("sensor == 's2'")["path"])
    train_chips = [read_chip(out / p, s2, 18) for p in months if not p.startswith(test_site)]
    expected = band_stats(np.stack(train_chips), band_axis=1)
    got = np.array([stats["s2"]["bands"][b]["mean"] for b in S2.band_order])
    np.testing.assert_allclose(got, expected["mean"], rtol=1e-9)
    all_chips = [read_chip(out / p, s2, 18) for p in months]
    assert not np.allclose(got, band_stats(np.stack(all_chips), band_axis=1)["mean"], rtol=1e-6)

    store = TrainingStore(store_dir, era5_dir=None)
    arr = store.arrays["s2"]
    scenes = pd.read_csv(out / "scenes.csv", parse_dates=["date"])
    for i, site in enumerate(sites.site_id):
        present = set(scenes[(scenes.site_id == site) & (scenes.sensor == "s2")]["date"].dt.month)
        for t, month in enumerate([1, 2, 3, 4]):
            chip = arr[i, :, :, t, :]
            if month in present:
                assert (chip != MISSING_VALUE).any()
            else:
                assert (chip == MISSING_VALUE).all()  # a cloud-lost month stays missing
    nodata_pixels = sum((rasterio.open(out / p).read(1) == 0).sum() for p in months)
    assert nodata_pixels > 0 and (arr == MISSING_VALUE).sum() >= nodata_pixels  # swath edges survive too
    train = arr[store.indices("train")]
    valid = train[train != MISSING_VALUE]
    assert abs(valid.mean() - 0.5) < 0.05 and 0.15 < valid.std() < 0.35  # (x - (m - 2s)) / 4s


def test_store_batch_reads_the_samples_asked_for(raw, small_params, tmp_path):
    out, study = raw
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    build_store(out, study.sites, _split_of(study, set()), ["s2", "s1"], S2.band_order, 18, 4, 2.0, store_dir)
    store = TrainingStore(store_dir, era5_dir=None)
    batch = store.batch([5, 1, 3])
    np.testing.assert_array_equal(batch["s2"], store.arrays["s2"][[5, 1, 3]])
    assert batch["timestamps"].shape == (3, 4, 3)
    first = [b["s1"].copy() for b in store.iter_batches("train", 2, seed=1)]
    second = [b["s1"].copy() for b in store.iter_batches("train", 2, seed=1)]
    assert len(first) == len(study.sites) // 2 and all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """A working directory where fetch_sentinel and normalize_sentinel have run, as DVC runs them."""
    root = tmp_path_factory.mktemp("staged")
    write_default_inputs(root / "data" / "inputs")
    (root / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS))
    sites = load_study(root / "data" / "inputs", 1).sites
    split = root / "data" / "processed" / "splits" / "sites"
    split.mkdir(parents=True)
    pd.DataFrame({"id": sites.site_id, "split": "train"}).to_parquet(split / "assignments.parquet")
    run_stage("fetch_sentinel", cwd=root)
    run_stage("normalize_sentinel", cwd=root)
    return root


@pytest.mark.parametrize("change, message", [
    (lambda src: {"crs": None}, "has no CRS"),
    (_relabelled, "is not on its site's grid: CRS EPSG:4326"),
    (_moved, "+50000 m east"),
], ids=["no-crs", "relabelled-4326", "moved-50km"])
def test_a_bad_geotiff_fails_the_stage_and_keeps_old_outputs(staged, change, message):
    out = staged / "data" / "processed" / "sentinel"
    before = tree_digest(out)
    victim = next((staged / "data" / "raw" / "sentinel").glob("*/s2/*.tif"))
    original = victim.read_bytes()
    try:
        _change_georeferencing(victim, change)
        result = run_stage("normalize_sentinel", cwd=staged, check=False)
    finally:
        victim.write_bytes(original)
    assert result.returncode == 2
    assert str(victim.relative_to(staged)) in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digest(out) == before and {"quality.json", "raw_files.parquet"} <= set(before)
    assert yaml.safe_load((staged / "params.yaml").read_text()) == SMALL_PARAMS  # nothing else disturbed


@pytest.mark.parametrize("pattern, change, message", [
    ("*/s2/*.tif", _relabelled, r"is not on its site's grid: CRS EPSG:4326, the site grid's is EPSG:326\d\d \(its UTM"),
    ("*/s1/*.tif", _geographic, r"is not on its site's grid: CRS EPSG:4326, the site grid's is EPSG:32\d\d\d"),
    ("*/landsat/*.tif", _moved, r"origin \([\d.]+, [\d.]+\), the site grid's is \([\d.]+, [\d.]+\), "
                                r"\+50000 m east and \+0 m north of it"),
    ("*/srtm.tif", _coarse, r"pixels 20 x 20 m \(rotation 0, 0\), the site grid's are north-up 10 x 10 m"),
    ("*/land_use.tif", _moved, r"\+50000 m east"),
], ids=["relabelled-4326", "real-4326-grid", "moved-50km", "20m-pixels", "labels-moved"])
def test_a_raster_off_its_site_grid_is_refused_naming_it(raw, tmp_path, pattern, change, message):
    out, study = raw
    victim = next(out.glob(pattern))
    _change_georeferencing(victim, change)
    with pytest.raises(InputDataError, match=message) as info:
        _build(out, study, tmp_path / "store", sensors=["s2", "s1", "landsat"])
    assert str(victim) in str(info.value) and "terrapipe.grid.site_grid" in str(info.value)
    site = study.sites.set_index("site_id").loc[victim.relative_to(out).parts[0]]
    grid = site_grid(site.latitude, site.longitude, 18)
    if pattern.startswith("*/s2"):  # the reader itself, given the site grid
        with pytest.raises(InputDataError, match=message):
            read_chip(victim, S2, grid)


def test_saturated_pixels_are_missing_counted_and_leave_the_stats_alone(raw, tmp_path, caplog):
    """L2A marks saturation with 65535: read as data it multiplied B01's train std by ten."""
    out, study = raw
    b01 = S2.band_order.index("B01")
    victims = sorted(out.glob("*/s2/*.tif"))[::3]

    def fill_b01(value):
        for path in victims:
            with rasterio.open(path, "r+") as dst:
                data = dst.read()
                data[b01] = value
                dst.write(data)

    clean = _build(out, study, tmp_path / "clean")
    fill_b01(0)  # nodata: what saturated pixels must amount to
    lost = _build(out, study, tmp_path / "lost")
    fill_b01(65535)
    with caplog.at_level(logging.WARNING, logger="terrapipe"):
        saturated = _build(out, study, tmp_path / "saturated")

    stats = {name: json.loads((folder / "stats.json").read_text())["s2"]["bands"]
             for name, folder in (("clean", clean), ("lost", lost), ("saturated", saturated))}
    assert stats["saturated"] == stats["lost"]
    assert stats["saturated"]["B01"]["std"] == pytest.approx(stats["clean"]["B01"]["std"], rel=0.2)
    assert stats["saturated"]["B02"] == stats["clean"]["B02"]
    n_pixels = len(victims) * 18 * 18
    quality = json.loads((saturated / "quality.json").read_text())["sections"]["s2"]
    assert quality["bands"]["B01"]["saturated_pixels"] == quality["saturated_pixels"] == n_pixels
    assert quality["bands"]["B02"]["saturated_pixels"] == 0
    warning = f"s2: saturated pixels (raw value 65535) read as missing: B01 {n_pixels}"
    assert warning in quality["warnings"] and warning in caplog.text
    files = pd.read_parquet(saturated / "raw_files.parquet").set_index(["file", "band"])
    victim = str(victims[0].relative_to(out))
    assert files.loc[(victim, "B01"), ["saturated_share", "missing_share"]].tolist() == [1.0, 1.0]
    assert np.isnan(files.loc[(victim, "B01"), "p50"]) and files.loc[(victim, "B02"), "saturated_share"] == 0.0
    assert np.load(saturated / "s2.npy")[..., b01].tobytes() == np.load(lost / "s2.npy")[..., b01].tobytes()


def test_raw_files_table_has_one_row_per_file_and_band(raw, tmp_path):
    out, study = raw
    sensors = ("s2", "s1", "landsat")
    store = _build(out, study, tmp_path / "store", sensors)
    table = pd.read_parquet(store / "raw_files.parquet")
    assert list(table.columns) == [*FILE_SCHEMA, *BAND_SCHEMA]
    assert all(pd.api.types.is_string_dtype(table[name]) if dtype == "str" else table[name].dtype == dtype
               for name, dtype in {**FILE_SCHEMA, **BAND_SCHEMA}.items())
    scenes = pd.read_csv(out / "scenes.csv")
    maps = [(f"{s}/{m}.tif", s, m, "") for s in study.sites["site_id"] for m in ("worldcover", "srtm")]
    files = pd.DataFrame([*scenes[["path", "site_id", "sensor", "date"]].itertuples(index=False, name=None), *maps],
                         columns=["file", "site_id", "sensor", "date"])
    per_file = table.groupby("file", sort=False).agg(n=("band", "size"), site_id=("site_id", "first"),
                                                      sensor=("sensor", "first"), date=("date", "first"))
    expected = files.set_index("file").assign(n=files["sensor"].map({"s2": 12, "s1": 2, "landsat": 11}).fillna(1)
                                              .astype(int).to_numpy())
    pd.testing.assert_frame_equal(per_file.sort_index(), expected[per_file.columns].sort_index(), check_dtype=False)
    assert not table.duplicated(["file", "band"]).any()
    assert (table["epsg"] == table["expected_epsg"]).all() and (table["x0"] == table["expected_x0"]).all()
    assert (table["y0"] == table["expected_y0"]).all() and set(table["pixel_size_x"]) == set(table["pixel_size_y"]) == {10.0}
    assert set(table["height"]) == set(table["width"]) == {18}
    assert (table["aoi_id"] == table["site_id"].map(study.sites.set_index("site_id")["aoi_id"])).all()

    edge = table.query("sensor == 's2' and band == 'B04' and 0 < missing_share < 1").iloc[0]  # a swath edge
    values = read_chip(out / edge["file"], S2, 18)[S2.band_order.index("B04")].astype(np.float64)
    valid = values[values != MISSING_VALUE]
    assert [edge["min"], edge["max"]] == [valid.min(), valid.max()]
    assert [edge["p01"], edge["p50"], edge["p99"]] == pytest.approx(np.percentile(valid, [1, 50, 99]), rel=1e-12)
    assert edge["missing_share"] == pytest.approx(1 - valid.size / values.size) and edge["units"] == "reflectance x 10000"
    quality = json.loads((store / "quality.json").read_text())
    assert sorted(quality["sections"]) == sorted([*sensors, "worldcover", "srtm"]) and quality["n_sites"] == len(study.sites)


def test_value_summary_matches_numpy_percentiles():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 257)).astype(np.float32)
    valid = rng.random((4, 257)) > 0.3
    valid[2] = False   # a band without a valid pixel
    valid[3] = False
    valid[3, 7] = True  # ... and one with a single one
    got = value_summary(values, valid)
    wide = np.where(valid, values.astype(np.float64), np.nan)
    for row in (0, 1, 3):
        expected = [np.nanmin(wide[row]), np.nanmax(wide[row]), *np.nanpercentile(wide[row], [1, 50, 99])]
        np.testing.assert_allclose(got[row], expected, rtol=1e-12)
    assert np.isnan(got[2]).all() and got.dtype == np.float64


def test_a_sensor_without_acquisitions_at_a_site_is_warned_about(raw, tmp_path, caplog):
    out, study = raw
    scenes = pd.read_csv(out / "scenes.csv")
    aoi = "iowa-ames"
    dropped = set(study.sites.query("aoi_id == @aoi")["site_id"])
    scenes[~(scenes["site_id"].isin(dropped) & (scenes["sensor"] == "s1"))].to_csv(out / "scenes.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="terrapipe"):
        store = _build(out, study, tmp_path / "store", sensors=["s2", "s1"])
    message = f"s1 is missing for every month of AOI {aoi}: sites {', '.join(sorted(dropped))} have no value"
    assert message in caplog.text
    s1 = json.loads((store / "quality.json").read_text())["sections"]["s1"]
    assert s1["aois_fully_missing"] == [aoi] and s1["sites_fully_missing"] == sorted(dropped) and message in s1["warnings"]


def test_truncated_geotiff_is_named(raw):
    out, _ = raw
    victim = next(out.glob("*/s1/*.tif"))
    victim.write_bytes(victim.read_bytes()[:200])
    from terrapipe.errors import InputDataError
    with pytest.raises(InputDataError, match="not a readable GeoTIFF") as info:
        read_chip(victim, S1, 18)
    assert str(victim) in str(info.value)


def test_a_band_missing_everywhere_stays_missing(raw, small_params, tmp_path):
    """Landsat Collection 2 Level-2 has no B8/B9/B11: such bands are kept as missing, not an error."""
    import json
    out, study = raw
    for path in out.glob("*/landsat/*.tif"):
        with rasterio.open(path, "r+") as dst:
            data = dst.read()
            data[LANDSAT.band_order.index("B8")] = 0  # B8 is nodata in every scene
            dst.write(data)
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    build_store(out, study.sites, _split_of(study, set()), ["landsat"], S2.band_order, 18, 4, 2.0, store_dir)
    landsat = np.load(store_dir / "landsat.npy")
    b8, b1 = LANDSAT.band_order.index("B8"), LANDSAT.band_order.index("B1")
    assert (landsat[..., b8] == MISSING_VALUE).all() and (landsat[..., b1] != MISSING_VALUE).any()
    stats = json.loads((store_dir / "stats.json").read_text())["landsat"]["bands"]
    assert stats["B8"] == {"mean": None, "std": None, "count": 0} and stats["B1"]["count"] > 0


def test_no_train_site_is_an_error(raw, tmp_path):
    from terrapipe.errors import InputDataError
    out, study = raw
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    with pytest.raises(InputDataError, match="has no train site"):
        build_store(out, study.sites, _split_of(study, set(study.sites.site_id)), ["s1"], S2.band_order, 18, 4, 2.0,
                    store_dir)
