"""ERA5: the sample CDS backend, reading both CDS NetCDF layouts, per-site series and their stats, the stages."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from conftest import run_stage

from terrapipe.config import parse_params
from terrapipe.data.era5 import (
    FILE_SCHEMA,
    VARIABLE_SCHEMA,
    build_era5_dataset,
    normalize_series,
    open_era5,
    site_series,
)
from terrapipe.data.normalize import MISSING_VALUE, band_stats
from terrapipe.errors import InputDataError
from terrapipe.modalities import ERA5_VARIABLES
from terrapipe.sources.sample_era5 import era5_requests, fetch_era5
from terrapipe.study import load_study, write_default_inputs

STAGES = Path(__file__).parents[1] / "stages"
SHORT = [v.short for v in ERA5_VARIABLES]
UNITS = {"t2m": "K", "d2m": "K", "sp": "Pa", "u10": "m s**-1", "v10": "m s**-1", "tp": "m"}
RAW_PARAMS = {"study": {"sites_per_aoi": 2}, "sources": {"era5": {"sample": {"missing_month_prob": 0.25}}}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    inputs = tmp_path_factory.mktemp("inputs")
    write_default_inputs(inputs, sites_per_aoi=3)
    return load_study(inputs, 2)


@pytest.fixture(scope="module")
def params():
    return parse_params(RAW_PARAMS)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory, params, study):
    out = tmp_path_factory.mktemp("era5")
    fetch_era5(params, study, out)
    return out


def florida(raw_dir: Path) -> Path:
    return raw_dir / "era5_central-florida_2024.nc"


def rewrite(ds: xr.Dataset, path: Path) -> Path:
    ds.to_netcdf(path, engine="netcdf4")
    return path


def all_train(study) -> dict[str, str]:
    return {s: "train" for s in study.sites["site_id"]}


def build(raw: Path, study, out: Path) -> Path:
    out.mkdir()
    build_era5_dataset(raw, study.sites, all_train(study), [v.cds for v in ERA5_VARIABLES], 12, 2.0, out)
    return out


# -- the sample backend -----------------------------------------------------------------------------
def test_sample_files_are_deterministic(tmp_path, params, study, raw_dir):
    again = tmp_path / "again"
    again.mkdir()
    fetch_era5(params, study, again)
    names = sorted(p.name for p in raw_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert all((raw_dir / n).read_bytes() == (again / n).read_bytes() for n in names)
    other = tmp_path / "other-seed"
    other.mkdir()
    fetch_era5(parse_params({**RAW_PARAMS, "seed": 1}), study, other)
    with xr.open_dataset(florida(raw_dir)) as a, xr.open_dataset(florida(other)) as b:
        assert not np.allclose(a["t2m"].fillna(0), b["t2m"].fillna(0))


def test_sample_file_has_the_new_cds_layout_units_and_plausible_values(raw_dir, study):
    files = sorted(raw_dir.glob("*.nc"))
    years = study.sites.groupby("aoi_id")["start_date"].first().dt.year
    assert [f.name for f in files] == sorted(f"era5_{a}_{y}.nc" for a, y in years.items())
    with xr.open_dataset(florida(raw_dir), decode_times=False) as raw:
        assert raw["valid_time"].dtype == np.int64
        assert raw["valid_time"].attrs["units"] == "seconds since 1970-01-01"
    gaps = 0
    for path in files:
        with xr.open_dataset(path) as ds:
            assert dict(ds.sizes) == {"valid_time": 12, "latitude": 13, "longitude": 13}  # 1 deg AOI + 1 cell, 0.1 deg
            first = f"{path.stem.rsplit('_', 1)[1]}-01-01"
            assert (pd.DatetimeIndex(ds["valid_time"].values) == pd.date_range(first, periods=12, freq="MS")).all()
            assert (np.diff(ds["latitude"]) < 0).all() and (np.diff(ds["longitude"]) > 0).all()
            assert np.allclose(np.diff(ds["latitude"]), -0.1) and np.abs(ds["longitude"]).max() <= 180
            assert int(ds["number"]) == 0 and ds["number"].ndim == 0
            assert ds["expver"].dims == ("valid_time",) and set(ds["expver"].values) == {"0001"}
            assert ds.attrs["GRIB_centre"] == "ecmf" and ds.attrs["Conventions"] == "CF-1.7"
            assert list(ds.data_vars) == SHORT
            for name in SHORT:
                assert ds[name].dtype == np.float32 and ds[name].attrs["units"] == UNITS[name]
                assert ds[name].attrs["long_name"] and ds[name].attrs["GRIB_shortName"]
            ok = np.isfinite(ds["t2m"])
            assert ok.any()
            assert ds["t2m"].where(ok).min() > 200 and ds["t2m"].where(ok).max() < 330
            assert (ds["d2m"].where(ok) <= ds["t2m"].where(ok)).sum() == ok.sum()
            assert ds["sp"].where(ok).min() > 50_000 and ds["sp"].where(ok).max() < 105_000
            assert abs(ds["u10"]).max() < 25 and abs(ds["v10"]).max() < 25
            assert ds["tp"].where(ok).min() >= 0 and ds["tp"].where(ok).max() < 0.05
            gap = ~ok.any(["latitude", "longitude"])  # a missing month is a NaN field for every variable
            assert all(bool(ds[n].isnull().all(["latitude", "longitude"])[gap].all()) for n in SHORT)
            gaps += int(gap.sum())
    assert 0 < gaps < 12 * len(files)  # missing_month_prob 0.25


def test_requests_one_per_aoi_and_year_with_area_snapped_outward(params, study, raw_dir):
    requests = era5_requests(params, study)
    assert len(requests) == len(study.aois)
    by_target = {r["target"]: r for r in requests}
    florida_request = by_target["era5_central-florida_2024.nc"]
    assert florida_request["dataset"] == "reanalysis-era5-land-monthly-means"
    assert florida_request["request"] == {
        "product_type": ["monthly_averaged_reanalysis"],
        "variable": ["2m_temperature", "2m_dewpoint_temperature", "surface_pressure", "10m_u_component_of_wind",
                     "10m_v_component_of_wind", "total_precipitation"],
        "year": ["2024"], "month": [f"{m:02d}" for m in range(1, 13)], "time": ["00:00"],
        "area": [29.1, -82.0, 27.9, -80.8],  # AOI 28.0-29.0 N, 81.9-80.9 W, plus one 0.1 deg cell
        "data_format": "netcdf", "download_format": "unarchived"}
    assert json.loads((raw_dir / "era5_central-florida_2024.request.json").read_text()) == florida_request
    with xr.open_dataset(florida(raw_dir)) as ds:  # the file covers exactly the requested area
        n, w, s, e = florida_request["request"]["area"]
        corners = ds.latitude[0], ds.longitude[0], ds.latitude[-1], ds.longitude[-1]
        assert tuple(map(float, corners)) == (n, w, s, e)

    coarse = parse_params({"sources": {"era5": {"dataset": "reanalysis-era5-single-levels-monthly-means",
                                                "variables": ["total_precipitation", "2m_temperature"]}}})
    july = dataclasses.replace(study, sites=study.sites.assign(start_date=pd.Timestamp("2024-07-15")))
    requests = era5_requests(coarse, july)
    assert len(requests) == 2 * len(study.aois) and {r["request"]["year"][0] for r in requests} == {"2024", "2025"}
    request = next(r["request"] for r in requests if r["target"] == "era5_central-florida_2025.nc")
    assert request["area"] == [29.25, -82.25, 27.75, -80.5]
    assert request["variable"] == ["2m_temperature", "total_precipitation"]


def test_unrequested_variables_are_not_written(tmp_path, study):
    fetch_era5(parse_params({"sources": {"era5": {"variables": ["surface_pressure"]}}}), study, tmp_path)
    with xr.open_dataset(florida(tmp_path)) as ds:
        assert list(ds.data_vars) == ["sp"]


# -- reading: both CDS layouts, and what is rejected ----------------------------------------------------
def test_open_era5_normalises_the_new_layout(raw_dir):
    ds = open_era5(florida(raw_dir))
    assert ds["t2m"].dims == ("time", "latitude", "longitude") and list(ds.data_vars) == SHORT
    assert "number" not in ds.variables and "expver" not in ds.variables


def test_open_era5_accepts_the_legacy_layout_and_merges_expver(raw_dir, tmp_path):
    new = open_era5(florida(raw_dir))
    final, recent = new.copy(deep=True), new.copy(deep=True)
    final[SHORT] = final[SHORT].where(new["time"] < np.datetime64("2024-11-01"))   # ERA5: to October
    recent[SHORT] = recent[SHORT].where(new["time"] >= np.datetime64("2024-11-01"))  # ERA5T: the rest
    legacy = xr.concat([final, recent], dim=pd.Index([1, 5], name="expver")).transpose("time", "expver", ...)
    legacy = legacy.assign_coords(longitude=legacy["longitude"] % 360)  # old 0..360 longitudes
    for name in SHORT:
        legacy[name].attrs["units"] = UNITS[name]
    legacy["time"].encoding.update(units="hours since 1900-01-01 00:00:00.0", calendar="gregorian", dtype="int32")
    path = rewrite(legacy, tmp_path / "legacy.nc")
    with xr.open_dataset(path) as check:
        assert dict(check.sizes) == {"time": 12, "expver": 2, "latitude": 13, "longitude": 13}
    merged = open_era5(path)
    assert merged["t2m"].dims == ("time", "latitude", "longitude") and "expver" not in merged.variables
    xr.testing.assert_allclose(merged.drop_attrs(), new.drop_attrs())


@pytest.mark.parametrize("change, message", [
    (lambda ds: ds.rename({"latitude": "lat"}), "no latitude dimension"),
    (lambda ds: ds.rename({"valid_time": "date"}), "no time dimension"),
    (lambda ds: ds.drop_vars("t2m"), "variable t2m missing"),
    (lambda ds: ds.assign(t2m=(ds["t2m"] - 273.15).assign_attrs(units="degC")), "'degC', expected 'K'"),
    (lambda ds: ds.assign(sp=(ds["sp"] / 100).assign_attrs(units="hPa")), "variable sp is in 'hPa', expected 'Pa'"),
])
def test_open_era5_rejects_other_schemas_naming_file_and_field(raw_dir, tmp_path, change, message):
    with xr.open_dataset(florida(raw_dir)) as ds:
        path = rewrite(change(ds.load()), tmp_path / "changed.nc")
    with pytest.raises(InputDataError, match=message) as info:
        open_era5(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name, change, message", [
    ("t2m", lambda v: v - 273.15, r"variable t2m values range [-\d.]+\.\.[-\d.]+, outside the plausible 170\.\.340 K: "
                                  r"they look like degrees C labelled K"),
    ("sp", lambda v: v / 100, r"variable sp values range .*: they look like hPa labelled Pa"),
    ("tp", lambda v: v * 1000, r"variable tp values range .*: they look like mm labelled m"),
    ("u10", lambda v: v * 100, r"variable u10 values range .*, outside the plausible -60\.\.60 m s\*\*-1\. Re-download"),
])
def test_values_implausible_for_their_units_fail_naming_file_and_variable(raw_dir, study, tmp_path, name, change,
                                                                         message):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    with xr.open_dataset(florida(raw_dir)) as ds:
        ds = ds.load()
    ds[name] = change(ds[name]).assign_attrs(ds[name].attrs)  # the units attribute still says K, Pa, m, m s**-1
    path = rewrite(ds, florida(raw))
    with pytest.raises(InputDataError, match=message) as info:
        open_era5(path)
    assert str(path) in str(info.value) and "dvc repro -f fetch_era5" in str(info.value)
    out = tmp_path / "out"
    with pytest.raises(InputDataError, match=message):
        build(raw, study, out)
    assert list(out.iterdir()) == []  # refused before anything was written


def test_truncated_file_is_an_input_error_naming_it(raw_dir, tmp_path):
    path = tmp_path / "era5_central-florida_2024.nc"
    data = florida(raw_dir).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match="truncated or corrupt") as info:
        open_era5(path)
    assert str(path) in str(info.value)


# -- per-site series and statistics ------------------------------------------------------------------------
def test_site_series_takes_the_nearest_cell_and_keeps_missing_months(raw_dir, study):
    read = site_series(study.sites, raw_dir, 12)
    raw, grid_lat, grid_lon = read.values, read.grid_lat, read.grid_lon
    assert raw.shape == (len(study.sites), 12, 6) and raw.dtype == np.float32
    assert np.all(np.abs(grid_lat - study.sites["latitude"]) <= 0.05 + 1e-9)
    assert np.all(np.abs(grid_lon - study.sites["longitude"]) <= 0.05 + 1e-9)
    site = study.sites.iloc[0]
    ds = open_era5(raw_dir / f"era5_{site.aoi_id}_2024.nc")
    cell = ds.sel(latitude=grid_lat[0], longitude=grid_lon[0])
    expected = np.stack([cell[n].values for n in SHORT], axis=-1)
    assert np.array_equal(raw[0], np.where(np.isnan(expected), MISSING_VALUE, expected))
    missing = raw == MISSING_VALUE
    assert missing.any() and (missing.all(axis=2) == missing.any(axis=2)).all()  # whole months, all variables

    late = study.sites.assign(start_date=study.sites["start_date"] + pd.DateOffset(months=6))  # next year not fetched
    raw_late = site_series(late, raw_dir, 12).values
    assert (raw_late[:, 6:] == MISSING_VALUE).all() and np.array_equal(raw_late[:, :6], raw[:, 6:])


def test_site_off_the_grid_or_without_a_file_is_an_input_error(raw_dir, study):
    moved = study.sites.iloc[:1].assign(latitude=study.sites["latitude"].iloc[0] + 2.0)
    with pytest.raises(InputDataError, match="outside the file's grid") as info:
        site_series(moved, raw_dir, 12)
    assert "era5_central-florida_2024.nc" in str(info.value)
    with pytest.raises(InputDataError, match="no ERA5 file for AOI elsewhere"):
        site_series(study.sites.iloc[:1].assign(aoi_id="elsewhere"), raw_dir, 12)


def test_normalization_uses_train_sites_only_and_keeps_missing(raw_dir, study):
    raw = site_series(study.sites, raw_dir, 12).values
    is_train = np.arange(len(raw)) % 2 == 0
    series, stats = normalize_series(raw, is_train)
    expected = band_stats(raw[is_train])
    assert [stats["bands"][v.band]["mean"] for v in ERA5_VARIABLES] == pytest.approx(expected["mean"])
    assert stats["bands"]["2m-temperature"]["units"] == "K" and stats["bands"]["surface-pressure"]["units"] == "Pa"
    assert stats["bands"]["total-precipitation"]["count"] == int(expected["count"][5])
    assert np.array_equal(series == MISSING_VALUE, raw == MISSING_VALUE)

    perturbed = raw.copy()
    test_site = np.flatnonzero(~is_train)[0]
    perturbed[test_site] = np.where(raw[test_site] == MISSING_VALUE, MISSING_VALUE, raw[test_site] * 3 + 1000)
    series2, stats2 = normalize_series(perturbed, is_train)
    assert stats2 == stats
    assert np.array_equal(series2[is_train], series[is_train])
    assert not np.array_equal(series2[test_site], series[test_site])

    changed = raw.copy()
    changed[np.flatnonzero(is_train)[0], :, 0] += 5.0  # a train site does move the stats
    moved = normalize_series(changed, is_train)[1]
    assert moved["bands"]["2m-temperature"]["mean"] != stats["bands"]["2m-temperature"]["mean"]


def test_build_refuses_sites_without_a_split(raw_dir, study, tmp_path):
    split_of = {s: "train" for s in study.sites["site_id"][1:]}
    with pytest.raises(InputDataError, match="no split for site"):
        build_era5_dataset(raw_dir, study.sites, split_of, [v.cds for v in ERA5_VARIABLES], 12, 2.0, tmp_path)


def test_quality_and_raw_files_tables(raw_dir, study, tmp_path):
    out = build(raw_dir, study, tmp_path / "out")
    table = pd.read_parquet(out / "raw_files.parquet")
    assert list(table.columns) == [*FILE_SCHEMA, *VARIABLE_SCHEMA]
    assert all(pd.api.types.is_string_dtype(table[name]) if dtype == "str" else table[name].dtype == dtype
               for name, dtype in {**FILE_SCHEMA, **VARIABLE_SCHEMA}.items())
    files = sorted(p.name for p in raw_dir.glob("*.nc"))
    assert len(table) == len(files) * len(SHORT) and not table.duplicated(["file", "variable"]).any()
    assert sorted(set(table["file"])) == files and (table["units"] == table["variable"].map(UNITS)).all()
    row = table.set_index(["file", "variable"]).loc[(florida(raw_dir).name, "t2m")]
    values = open_era5(florida(raw_dir))["t2m"].to_numpy().astype(np.float64)
    assert [row["min"], row["max"]] == [np.nanmin(values), np.nanmax(values)]
    assert [row["p01"], row["p50"], row["p99"]] == pytest.approx(np.nanpercentile(values, [1, 50, 99]), rel=1e-12)
    assert row["missing_share"] == pytest.approx(np.isnan(values).mean()) and row["n_times"] == 12
    assert (row["aoi_id"], row["year"], row["grid_step_deg"]) == ("central-florida", 2024, 0.1)
    assert (row["lat_min"], row["lat_max"], row["lon_min"], row["lon_max"]) == pytest.approx((27.9, 29.1, -82.0, -80.8))

    quality = json.loads((out / "quality.json").read_text())
    raw = np.load(out / "series_raw.npy")
    assert sorted(quality["sections"]) == sorted(SHORT) and quality["n_sites"] == len(study.sites)
    t2m = quality["sections"]["t2m"]
    assert t2m["missing_share"] == pytest.approx((raw[:, :, 0] == MISSING_VALUE).mean())
    assert t2m["max_site_missing_share"] == pytest.approx((raw[:, :, 0] == MISSING_VALUE).mean(axis=1).max())
    again = build(raw_dir, study, tmp_path / "again")  # deterministic bytes: no timestamps, sorted keys
    assert all((out / n).read_bytes() == (again / n).read_bytes() for n in ("raw_files.parquet", "quality.json"))


def test_an_aoi_without_t2m_is_warned_about_and_reported(raw_dir, study, tmp_path, caplog):
    aoi = "central-florida"
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    for path in raw.glob(f"era5_{aoi}_*.nc"):
        with xr.open_dataset(path) as ds:
            ds = ds.load()
        rewrite(ds.assign(t2m=xr.full_like(ds["t2m"], np.nan)), path)
    with caplog.at_level(logging.WARNING, logger="terrapipe"):
        out = build(raw, study, tmp_path / "out")
    sites = study.sites.query("aoi_id == @aoi")["site_id"].tolist()
    message = f"ERA5 t2m is missing for every month of AOI {aoi}: sites {', '.join(sites)} have no value"
    assert message in caplog.text
    quality = json.loads((out / "quality.json").read_text())
    t2m = quality["sections"]["t2m"]
    assert t2m["aois_fully_missing"] == [aoi] and t2m["sites_fully_missing"] == sorted(sites)
    assert t2m["warnings"] == [message] and t2m["max_site_missing_share"] == 1.0 and quality["n_warnings"] >= 1
    assert quality["sections"]["d2m"]["aois_fully_missing"] == []
    raw_series = np.load(out / "series_raw.npy")
    assert (raw_series[(study.sites["aoi_id"] == aoi).to_numpy(), :, 0] == MISSING_VALUE).all()
    table = pd.read_parquet(out / "raw_files.parquet").query("aoi_id == @aoi and variable == 't2m'")
    assert (table["missing_share"] == 1.0).all() and table["p50"].isna().all()


# -- the stages, end to end --------------------------------------------------------------------------------
def test_stages_end_to_end_and_a_corrupt_file_leaves_outputs_untouched(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(RAW_PARAMS))
    write_default_inputs(tmp_path / "data/inputs", sites_per_aoi=3)
    sites = load_study(tmp_path / "data/inputs", 2).sites
    splits = tmp_path / "data/processed/splits/sites/assignments.parquet"
    splits.parent.mkdir(parents=True)
    split = np.where(np.arange(len(sites)) % 4 == 3, "test", "train")
    pd.DataFrame({"id": sites["site_id"], "split": split}).to_parquet(splits, index=False)

    fetched = run_stage("fetch_era5", cwd=tmp_path, check=False)
    assert fetched.returncode == 0, fetched.stderr
    raw_dir = tmp_path / "data/raw/era5"
    n_aois = sites["aoi_id"].nunique()
    assert len(list(raw_dir.glob("*.nc"))) == n_aois and len(list(raw_dir.glob("*.request.json"))) == n_aois
    done = run_stage("normalize_era5", cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "data/processed/era5"
    series, raw = np.load(out / "series.npy"), np.load(out / "series_raw.npy")
    assert series.shape == raw.shape == (len(sites), 12, 6) and series.dtype == raw.dtype == np.float32
    assert np.array_equal(series == MISSING_VALUE, raw == MISSING_VALUE) and (raw == MISSING_VALUE).any()
    table = pd.read_parquet(out / "sites.parquet")
    assert list(table.columns) == ["row", "site_id", "aoi_id", "latitude", "longitude", "split", "grid_latitude",
                                   "grid_longitude"]
    assert table["row"].tolist() == list(range(len(sites))) and table["split"].tolist() == split.tolist()
    stats = json.loads((out / "stats.json").read_text())
    assert list(stats["bands"]) == [v.band for v in ERA5_VARIABLES] and stats["train_sites"] == (split == "train").sum()
    assert stats["bands"]["2m-temperature"]["mean"] == pytest.approx(float(band_stats(raw[split == "train"])["mean"][0]))
    mean = np.array([b["mean"] for b in stats["bands"].values()])
    std = np.array([b["std"] for b in stats["bands"].values()])
    ok = raw != MISSING_VALUE
    assert np.allclose(series[ok], ((raw - (mean - 2 * std)) / (4 * std))[ok], atol=1e-5)

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    victim = raw_dir / "era5_iowa-ames_2024.nc"
    victim.write_bytes(victim.read_bytes()[:1000])
    failed = run_stage("normalize_era5", cwd=tmp_path, check=False)
    assert failed.returncode != 0
    assert "era5_iowa-ames_2024.nc" in failed.stderr and "Traceback" not in failed.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["era5", "splits"]  # no temporary left behind
