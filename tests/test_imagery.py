"""Sample imagery (GeoTIFF chips) and the normalized training store built from them."""
import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray
from conftest import run_stage, tree_digest

from terrapipe.data.imagery import build_store, read_chip
from terrapipe.data.normalize import MISSING_VALUE, band_stats
from terrapipe.data.store import TrainingStore
from terrapipe.modalities import LANDSAT, S1, S2
from terrapipe.sources import fetch
from terrapipe.study import load_study, utm_epsg

WORLDCOVER_CODES = {10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100}


@pytest.fixture
def raw(workdir, small_params):
    """Raw chips of the small study, and the study."""
    study = load_study("data/inputs", small_params.study.sites_per_aoi)
    out = workdir / "data" / "raw" / "sentinel"
    out.mkdir(parents=True)
    fetch("sentinel", small_params, study, out)
    return out, study


def _read_all(root):
    return {p.relative_to(root): rasterio.open(p).read() for p in sorted(root.rglob("*.tif"))}


def _split_of(study, test_sites):
    return {s: ("test" if s in test_sites else "train") for s in study.sites["site_id"]}


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


def test_geotiff_without_crs_fails_the_stage_and_keeps_old_outputs(workdir):
    import yaml
    sites = load_study("data/inputs", 1).sites
    split = workdir / "data" / "processed" / "splits" / "sites"
    split.mkdir(parents=True)
    pd.DataFrame({"id": sites.site_id, "split": "train"}).to_parquet(split / "assignments.parquet")
    run_stage("fetch_sentinel", cwd=workdir)
    run_stage("normalize_sentinel", cwd=workdir)
    before = tree_digest(workdir / "data" / "processed" / "sentinel")

    victim = next((workdir / "data" / "raw" / "sentinel").glob("*/s2/*.tif"))
    with rasterio.open(victim) as src:
        data, profile = src.read(), src.profile
        descriptions = src.descriptions
    profile.pop("crs")
    victim.unlink()
    with rasterio.open(victim, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions, 1):
            dst.set_band_description(i, name)
    result = run_stage("normalize_sentinel", cwd=workdir, check=False)
    assert result.returncode == 2
    assert str(victim.relative_to(workdir)) in result.stderr and "has no CRS" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digest(workdir / "data" / "processed" / "sentinel") == before
    assert yaml.safe_load((workdir / "params.yaml").read_text())  # nothing else disturbed


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
