"""AlphaEarth: the sample backend's layout and dirt, the cleaning stage's filters and counts."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_stage, tree_digest

from terrapipe.config import parse_params
from terrapipe.data.alphaearth import DROP_REASONS, clean_alphaearth, fractional_year, parse_event_dates
from terrapipe.errors import ConfigError, InputDataError
from terrapipe.sources.sample_alphaearth import DIRT_KINDS, fetch_alphaearth, sample_alphaearth

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"sources": {"alphaearth": {"sample": {"n_points": 400, "dirty_fraction": 0.2}}}}
# The reason each planted fault must be counted under (the first filter it fails).
EXPECTED_REASON = {"nan_elevation": "missing_elevation", "elevation_9999": "elevation_sentinel",
                   "elevation_32767": "elevation_sentinel", "elevation_-32768": "elevation_out_of_bounds",
                   "elevation_out_of_limits": "elevation_out_of_limits", "unparseable_date": "unparseable_date",
                   "latitude_over_90": "latitude_out_of_bounds", "nonfinite_embedding": "nonfinite_embedding"}


def small_params(seed: int = 0, **cleaning):
    return parse_params({**SMALL, "seed": seed, "normalize": {"alphaearth": cleaning}})


@pytest.fixture(scope="module")
def raw(study, tmp_path_factory):
    """A fetched raw folder and the dirt planted in it."""
    out = tmp_path_factory.mktemp("raw")
    fetch_alphaearth(small_params(), study, out)
    return out, sample_alphaearth(small_params(), study)[2]


def test_sample_is_deterministic(study):
    frame_a, emb_a, _ = sample_alphaearth(small_params(0), study)
    frame_b, emb_b, _ = sample_alphaearth(small_params(0), study)
    frame_c, emb_c, _ = sample_alphaearth(small_params(1), study)
    pd.testing.assert_frame_equal(frame_a, frame_b)
    np.testing.assert_array_equal(emb_a, emb_b)
    assert not np.allclose(frame_a["latitude"], frame_c["latitude"])
    assert not np.array_equal(emb_a, emb_c)


def test_raw_layout(raw, study):
    out, dirt = raw
    frame = pd.read_csv(out / "alphaearth_metadata.csv", dtype={"event_date": "string"})
    emb = torch.load(out / "alphaearth_embeddings.pt", weights_only=True)
    assert list(frame.columns) == ["latitude", "longitude", "elevation_m", "event_date"]
    assert emb.dtype == torch.float32 and tuple(emb.shape) == (400, 64)

    clean = dirt == ""
    values = emb.numpy()[clean]
    np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, rtol=1e-5)
    assert np.abs(values).max() <= 1.0
    dates = pd.to_datetime(frame["event_date"][clean], format="%Y-%m-%dT%H:%M:%SZ", utc=True)
    assert dates.dt.year.between(2017, 2024).all() and dates.dt.hour.nunique() > 12
    boxes = [*study.aois[["west", "south", "east", "north"]].itertuples(index=False), study.deepearth_bbox]
    lat, lon = frame["latitude"][clean].to_numpy(), frame["longitude"][clean].to_numpy()
    in_box = np.stack([(lon >= w) & (lon <= e) & (lat >= s) & (lat <= n) for w, s, e, n in boxes], axis=1)
    assert in_box.any(axis=1).all()
    assert in_box.sum(axis=0).min() >= 0.4 * clean.sum() / len(boxes)  # an equal share per box
    assert set(Counter(dirt[~clean])) == set(DIRT_KINDS)


def test_every_planted_fault_is_dropped_under_its_reason(raw, tmp_path):
    out, dirt = raw
    report = clean_alphaearth(out, tmp_path, small_params().normalize.alphaearth)
    expected = Counter(EXPECTED_REASON[kind] for kind in dirt if kind)
    assert report["dropped"] == {reason: expected.get(reason, 0) for reason in DROP_REASONS}
    assert sum(report["dropped"].values()) == report["rows_in"] - report["rows_out"] == (dirt != "").sum()

    points = pd.read_parquet(tmp_path / "points.parquet")
    coords, kept = np.load(tmp_path / "coords.npy"), np.load(tmp_path / "embeddings.npy")
    np.testing.assert_array_equal(points["point_id"], np.flatnonzero(dirt == ""))
    assert coords.dtype == kept.dtype == np.float32 and coords.shape == (len(points), 4)
    assert kept.shape == (len(points), 64)
    raw_emb = torch.load(out / "alphaearth_embeddings.pt", weights_only=True).numpy()
    np.testing.assert_array_equal(kept, raw_emb[points["point_id"]])
    np.testing.assert_array_equal(coords, points[["latitude", "longitude", "elevation_m", "t_norm"]]
                                  .to_numpy(np.float32))
    assert str(points["event_date"].dtype).startswith("datetime64") and points["event_date"].dt.tz is not None
    assert report["unparseable_dates_policy"] == "drop"


def test_default_2000_keeps_unparseable_dates_as_2000(raw, tmp_path):
    out, dirt = raw
    report = clean_alphaearth(out, tmp_path, small_params(unparseable_dates="default_2000").normalize.alphaearth)
    bad = np.flatnonzero(dirt == "unparseable_date")
    assert report["dropped"]["unparseable_date"] == 0 and report["dates_defaulted_to_2000"] == len(bad)
    points = pd.read_parquet(tmp_path / "points.parquet").set_index("point_id")
    assert (points.loc[bad, "year"] == 2000).all()
    np.testing.assert_allclose(points.loc[bad, "t_norm"], 0.5)  # (2000 - 1900) / 200


def test_time_normalisation():
    stamps = parse_event_dates(["2020-01-01T00:00:00Z", "2021-07-02T23:30:00+02:00", "2024-12-31",
                                "July 4, 2021", "not-a-date", "2021-13-45", None])
    fy = fractional_year(stamps)
    np.testing.assert_allclose(fy[:4], [2020.0, 2021 + 182 / 365, 2024 + 365 / 366, 2021 + 184 / 365])
    assert np.isnan(fy[4:]).all()


def test_int8_embeddings_are_scaled(raw, tmp_path):
    out, dirt = raw
    int8_dir = tmp_path / "raw"
    int8_dir.mkdir()
    (int8_dir / "alphaearth_metadata.csv").write_bytes((out / "alphaearth_metadata.csv").read_bytes())
    values = torch.load(out / "alphaearth_embeddings.pt", weights_only=True).nan_to_num(0.0).clamp(-1, 1)
    quantised = (values * 127).round().to(torch.int8)
    torch.save(quantised, int8_dir / "alphaearth_embeddings.pt")
    clean_alphaearth(int8_dir, tmp_path, small_params().normalize.alphaearth)
    kept = np.load(tmp_path / "embeddings.npy")
    ids = pd.read_parquet(tmp_path / "points.parquet")["point_id"]
    assert kept.dtype == np.float32
    np.testing.assert_allclose(kept, quantised.numpy()[ids] / 127.0, rtol=1e-6)


def _copy_raw(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("alphaearth_metadata.csv", "alphaearth_embeddings.pt"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_row_count_mismatch_names_the_tensor_file(raw, tmp_path):
    bad = _copy_raw(raw[0], tmp_path / "raw")
    emb = torch.load(bad / "alphaearth_embeddings.pt", weights_only=True)
    torch.save(emb[:-3].clone(), bad / "alphaearth_embeddings.pt")
    with pytest.raises(InputDataError, match=r"alphaearth_embeddings\.pt.*397 rows.*400"):
        clean_alphaearth(bad, tmp_path, small_params().normalize.alphaearth)


def test_missing_column_names_file_and_column(raw, tmp_path):
    bad = _copy_raw(raw[0], tmp_path / "raw")
    frame = pd.read_csv(bad / "alphaearth_metadata.csv")
    frame.drop(columns="elevation_m").to_csv(bad / "alphaearth_metadata.csv", index=False)
    with pytest.raises(InputDataError, match=r"alphaearth_metadata\.csv.*elevation_m"):
        clean_alphaearth(bad, tmp_path, small_params().normalize.alphaearth)


def test_stages_end_to_end_and_a_corrupt_tensor_leaves_outputs_untouched(workdir):
    tmp_path = workdir
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL))
    for stage in ("fetch_alphaearth", "normalize_alphaearth"):
        run_stage(stage, cwd=tmp_path)
    processed = tmp_path / "data" / "processed" / "alphaearth"
    assert sorted(p.name for p in processed.iterdir()) == [
        "cleaning_report.json", "coords.npy", "embeddings.npy", "points.parquet"]
    before = {p.name: p.read_bytes() for p in processed.iterdir()}

    tensor = tmp_path / "data" / "raw" / "alphaearth" / "alphaearth_embeddings.pt"
    tensor.write_bytes(tensor.read_bytes()[: tensor.stat().st_size // 2])
    result = run_stage("normalize_alphaearth", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "alphaearth_embeddings.pt" in result.stderr and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in processed.iterdir()} == before
    assert [p.name for p in processed.parent.iterdir()] == ["alphaearth"]   # no temporary left behind


def test_elevation_limits_that_drop_every_point_stop_before_writing(raw, tmp_path):
    params = small_params(min_elevation_m=9950.0, max_elevation_m=9990.0).normalize.alphaearth
    with pytest.raises(ConfigError, match=r"normalize\.alphaearth\.min_elevation_m=9950 / max_elevation_m=9990 "
                                          r"drop all \d+ points \(their elevations range -?[\d.]+\.\.[\d.]+ m\)"):
        clean_alphaearth(raw[0], tmp_path, params)
    assert list(tmp_path.iterdir()) == []


def test_a_time_window_that_drops_every_point_names_its_parameters(raw, tmp_path):
    with pytest.raises(ConfigError, match=r"drop all 400 points.*time_out_of_bounds.*"
                                          r"normalize\.alphaearth\.time_origin_year=2050, normalize\.alphaearth\.time_span_years=200"):
        clean_alphaearth(raw[0], tmp_path, small_params(time_origin_year=2050).normalize.alphaearth)
    assert list(tmp_path.iterdir()) == []


def test_data_that_fails_every_filter_names_the_file(raw, tmp_path):
    bad = _copy_raw(raw[0], tmp_path / "raw")
    frame = pd.read_csv(bad / "alphaearth_metadata.csv")
    frame.assign(elevation_m=np.nan).to_csv(bad / "alphaearth_metadata.csv", index=False)
    (tmp_path / "out").mkdir()
    with pytest.raises(InputDataError, match=r"alphaearth_metadata\.csv: none of its 400 rows passes the filters "
                                             r"\(dropped: \{'missing_elevation': 400\}\)"):
        clean_alphaearth(bad, tmp_path / "out", small_params().normalize.alphaearth)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_filter_that_drops_every_point_leaves_the_old_outputs_untouched(workdir):
    """The stage raises before writing, so the atomic swap never replaces the good data set."""
    (workdir / "params.yaml").write_text(yaml.safe_dump(SMALL))
    for stage in ("fetch_alphaearth", "normalize_alphaearth"):
        run_stage(stage, cwd=workdir)
    processed = workdir / "data" / "processed" / "alphaearth"
    before = tree_digest(processed)

    (workdir / "empty.yaml").write_text(yaml.safe_dump(
        {**SMALL, "normalize": {"alphaearth": {"min_elevation_m": 9950.0, "max_elevation_m": 9990.0}}}))
    result = run_stage("normalize_alphaearth", "--params", "empty.yaml", cwd=workdir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "normalize.alphaearth.min_elevation_m=9950 / max_elevation_m=9990 drop all" in result.stderr
    assert tree_digest(processed) == before
    assert [p.name for p in processed.parent.iterdir()] == ["alphaearth"]   # no temporary left behind


def test_embeddings_follow_land_use_change_between_years():
    """Earth4D's time axis matters: where the cover changed the embedding turns (cosine < 0.9), elsewhere it
    stays close; and it is smooth in space."""
    from terrapipe.sources.landscape import land_use, worldcover
    from terrapipe.sources.sample_alphaearth import alphaearth_embedding
    from terrapipe.sources.world import World

    world, rng = World(0), np.random.default_rng(3)
    lat, lon = rng.uniform(-40, 65, 8000), rng.uniform(-120, 140, 8000)
    early, late = land_use(world, lat, lon, 2017), land_use(world, lat, lon, 2024)
    first = alphaearth_embedding(world, lat, lon, early, np.full(len(lat), 2017))
    last = alphaearth_embedding(world, lat, lon, late, np.full(len(lat), 2024))
    cosine = (first * last).sum(axis=1)
    changed = worldcover(early) != worldcover(late)
    same = early == late
    near = alphaearth_embedding(world, lat + 0.001, lon, early, np.full(len(lat), 2017))  # ~110 m north
    print(f"\ncosine 2017 vs 2024: cover changed ({changed.sum()} points) median {np.median(cosine[changed]):.3f}, "
          f"95th pct {np.percentile(cosine[changed], 95):.3f}; unchanged median {np.median(cosine[same]):.3f}")
    assert changed.sum() > 50
    assert np.percentile(cosine[changed], 95) < 0.9 < np.median(cosine[same])
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    assert np.median((first * near).sum(axis=1)[early == land_use(world, lat + 0.001, lon, 2017)]) > 0.95
