"""The STAC backend of fetch_sentinel against a fake STAC API + COG server made from the sample world."""
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from conftest import run_stage, tree_digest

from terrapipe.config import parse_params
from terrapipe.data.imagery import build_store, read_chip
from terrapipe.errors import TerrapipeError
from terrapipe.grid import site_grid
from terrapipe.modalities import store_modalities
from terrapipe.sources.sample_imagery import SENSOR_TAGS
from terrapipe.sources.sentinel import MAPS, asset_key_of, fetch_stac, pick_monthly
from terrapipe.sources.transfer import PermanentError
from terrapipe.study import load_study, utm_epsg, write_default_inputs
from terrapipe.testing.fake_stac import FakeSTAC

STAGES = Path(__file__).resolve().parents[1] / "stages"
AOIS = ["central-florida", "kenya-nakuru"]  # two UTM zones, both hemispheres' conventions
SENSORS = ["s2", "s1", "landsat"]
RAW = {"seed": 3, "study": {"sites_per_aoi": 1, "months": 3},
       "sources": {"sentinel": {"source": "stac", "chip_size": 16,
                                "sample": {"s2_gap_prob": 0.0, "s1_gap_prob": 0.0, "landsat_gap_prob": 0.0,
                                           "swath_edge_prob": 0.3},
                                "stac": {"max_cloud_cover": 30.0,
                                         "retry": {"attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05}}}}}
# Physical-unit tolerance of a resampled band (read_chip units): S2 reflectance x 1e4, S1 dB, Landsat fraction / K.
TOLERANCE = {"s2": 50.0, "s1": 0.01, "landsat": 0.01, "B10": 0.5, "B11": 0.5}


def stac_params(url: str, **collections):
    raw = yaml.safe_load(yaml.safe_dump(RAW))
    raw["sources"]["sentinel"]["stac"].update(api_url=url, collections=collections)
    return parse_params(raw)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The default study definition cut to two AOIs, and its study (one site each)."""
    folder = tmp_path_factory.mktemp("study") / "data" / "inputs"
    write_default_inputs(folder)
    for name in ("aois.csv", "sites.csv"):
        table = pd.read_csv(folder / name)
        table[table["aoi_id"].isin(AOIS)].to_csv(folder / name, index=False)
    return folder, load_study(folder, 1)


@pytest.fixture(scope="module")
def fake(inputs, tmp_path_factory):
    with FakeSTAC(tmp_path_factory.mktemp("fake"), parse_params(RAW), inputs[1]) as server:
        yield server


@pytest.fixture(autouse=True)
def clean_faults(fake):
    fake.reset_faults()
    fake.extensions = ("query", "filter")
    yield
    fake.reset_faults()


@pytest.fixture(scope="module")
def fetched(fake, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("fetched")
    fake.searches.clear()
    fetch_stac(stac_params(fake.url), inputs[1], out)
    return out, list(fake.searches)


def _window(big: Path, chip: Path):
    """Where ``chip`` lies inside the larger sample chip: (row, col) offsets and the two sizes."""
    with rasterio.open(big) as b, rasterio.open(chip) as c:
        return (round((b.transform.f - c.transform.f) / 10), round((c.transform.c - b.transform.c) / 10),
                b.height, c.height)


def _compare(truth_path: Path, got_path: Path, modality):
    r, c, big, size = _window(truth_path, got_path)
    truth = read_chip(truth_path, modality, big)[:, r:r + size, c:c + size]
    got = read_chip(got_path, modality, size)
    with rasterio.open(got_path) as src:
        native = [float(src.tags(b)["native_resolution_m"]) for b in src.indexes]
    return truth, got, native


def test_fetch_writes_the_sample_layout_with_the_sample_values(fetched, fake, inputs):
    out, _ = fetched
    study = inputs[1]
    params = stac_params(fake.url)
    scenes = pd.read_csv(out / "scenes.csv")
    mods = {m.key: m for m in store_modalities(SENSORS, params.sources.sentinel.s2_bands)}
    for row in scenes.itertuples():
        site = study.sites.set_index("site_id").loc[row.site_id]
        grid = site_grid(site.latitude, site.longitude, 16)
        sample = fake.source_of[row.scene_id]
        with rasterio.open(out / row.path) as got, rasterio.open(sample) as ref:
            assert got.crs.to_epsg() == grid.epsg == utm_epsg(site.latitude, site.longitude)
            assert got.transform == grid.transform and (got.height, got.width) == (16, 16)
            assert got.descriptions == ref.descriptions and got.dtypes == ref.dtypes and got.nodata == ref.nodata
            assert got.scales == ref.scales
            assert set(ref.tags()) <= set(got.tags()) and got.tags()["STAC_ITEM"] == row.scene_id
            assert [got.tags(b) for b in got.indexes] == [ref.tags(b) for b in ref.indexes]
            if row.sensor == "s2":  # DN offset recorded per item: +1000 unless the baseline or provider says not
                item = fake.items[row.scene_id]["properties"]
                in_dn = item["s2:processing_baseline"] >= "04.00" and not item["earthsearch:boa_offset_applied"]
                assert set(got.offsets) == {-0.1 if in_dn else 0.0}
                assert got.tags()["BOA_ADD_OFFSET"] == ("-1000" if in_dn else "0")
            else:
                assert got.offsets == ref.offsets and got.tags()["SENSOR"] == SENSOR_TAGS[row.sensor]["SENSOR"]
        truth, values, native = _compare(sample, out / row.path, mods[row.sensor])
        for b, name in enumerate(mods[row.sensor].band_order):
            valid = (truth[b] != -99999) & (values[b] != -99999)
            diff = np.abs(truth[b] - values[b])[valid]
            if native[b] == 10:  # same grid, shifted by whole pixels: a window, values exact
                assert np.array_equal(truth[b] == -99999, values[b] == -99999), (row.path, name)
                assert diff.max() <= TOLERANCE[row.sensor] / 50, (row.path, name)
            else:  # resampled from the native grid
                assert np.mean((truth[b] == -99999) != (values[b] == -99999)) <= 0.2, (row.path, name)
                tolerance = max(0.35 * truth[b][valid].std(), TOLERANCE.get(name, TOLERANCE[row.sensor]))
                assert np.median(diff) <= tolerance, (row.path, name, np.median(diff), tolerance)
    maps = {m.key: m for m in store_modalities([], [])}
    for site_id in study.sites["site_id"]:
        world = fake.root / "world" / site_id
        classes, got, _ = _compare(world / "worldcover.tif", out / site_id / "worldcover.tif", maps["worldcover"])
        assert np.mean(classes == got) >= 0.9  # EPSG:4326 tiles and back, nearest
        elevation, got, _ = _compare(world / "srtm.tif", out / site_id / "srtm.tif", maps["srtm"])
        assert (got != -99999).all() and np.abs(elevation - got).max() <= 4  # two DEM tiles, bilinear on steep terrain
        with rasterio.open(out / site_id / "srtm.tif") as dem:
            assert dem.dtypes == ("int16",) and dem.nodata == -32768 and dem.descriptions == ("elevation",)
            assert dem.tags()["STAC_ITEM"].count("DEM") == 2


def test_scenes_are_the_least_cloudy_clear_scene_of_each_month(fetched, fake, inputs):
    out, searches = fetched
    scenes = pd.read_csv(out / "scenes.csv")
    assert list(scenes.columns) == ["site_id", "sensor", "date", "path", "scene_id", "source"]
    assert (scenes["source"] == "stac").all()
    for (site_id, sensor), expected in fake.expected.items():
        chosen = scenes[(scenes.site_id == site_id) & (scenes.sensor == sensor)]
        assert list(chosen["scene_id"]) == expected, (site_id, sensor)
        assert list(chosen["path"]) == [f"{site_id}/{sensor}/{d}.tif" for d in chosen["date"]]
    assert fake.overcast and not set(fake.overcast) & set(scenes["scene_id"])
    files = {str(p.relative_to(out)) for p in out.rglob("*.tif")}
    assert files == set(scenes["path"]) | {f"{s}/{m}.tif" for s in inputs[1].sites["site_id"] for m in MAPS}
    optical = [s for s in searches if s["collections"][0] in ("sentinel-2-l2a", "landsat-c2-l2")]
    assert optical and all(s["filter"] == {"op": "<", "args": [{"property": "eo:cloud_cover"}, 30.0]} for s in optical)
    assert any("token" in s for s in searches)  # results came in pages


def test_refetch_is_identical(fetched, fake, inputs, tmp_path):
    fetch_stac(stac_params(fake.url), inputs[1], tmp_path)
    assert tree_digest(tmp_path) == tree_digest(fetched[0])


def test_the_store_builds_from_fetched_chips(fetched, inputs, tmp_path):
    sites = inputs[1].sites
    split = dict(zip(sites["site_id"], ["train", "test"]))
    params = parse_params(RAW)
    stats = build_store(fetched[0], sites, split, SENSORS, params.sources.sentinel.s2_bands, 16, 3, 2.0, tmp_path)
    assert set(stats) == {"s2", "s1", "landsat", "worldcover", "srtm"}
    assert np.load(tmp_path / "s2.npy").shape == (2, 16, 16, 3, 12)


def test_transient_faults_are_retried_to_the_same_output(fetched, fake, inputs, tmp_path):
    s2, s1, landsat = (fake.expected[(inputs[1].sites["site_id"][0], s)][0] for s in SENSORS)
    faults = {fake.asset_path(s2, "B04"): ["status:503"] * 4, fake.asset_path(landsat, "B5"): ["drop:200"],
              fake.asset_path(s1, "vv"): ["truncate:300"]}
    for path, queue in faults.items():
        fake.server.faults.add(path, *queue)
    fake.fail_search(2)
    fetch_stac(stac_params(fake.url), inputs[1], tmp_path)
    assert tree_digest(tmp_path) == tree_digest(fetched[0])
    for path in [*faults, "/search"]:
        assert fake.server.faults.next(path, "GET") is None, f"fault on {path} never hit"


@pytest.mark.parametrize("target", ["search", "asset"])
def test_persistent_5xx_fails_after_the_budget_and_leaves_nothing(fake, inputs, tmp_path, target):
    if target == "search":
        fake.fail_search(1000, 502)
    else:
        item = fake.expected[(inputs[1].sites["site_id"][1], "landsat")][-1]
        fake.server.faults.add(fake.asset_path(item, "B10"), *["status:503"] * 1000)
    with pytest.raises(TerrapipeError, match="failed after 3 attempts.*re-run later"):
        fetch_stac(stac_params(fake.url), inputs[1], tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status, message", [(403, "access refused.*sources.sentinel.stac.api_url"),
                                             (404, "HTTP 404.*sources.sentinel.stac.collections.s2")])
def test_asset_refused_or_missing_stops_at_once(fake, inputs, tmp_path, status, message):
    path = fake.asset_path(fake.expected[(inputs[1].sites["site_id"][0], "s2")][0], "B8A")
    fake.server.faults.add(path, *[f"status:{status}"] * 10)
    before = len(fake.server.requests)
    with pytest.raises(PermanentError, match=message):
        fetch_stac(stac_params(fake.url), inputs[1], tmp_path)
    assert sum(p == path for _, p, _ in fake.server.requests[before:]) <= 3  # GDAL's open, not our retry budget
    assert list(tmp_path.iterdir()) == []


def test_api_refusing_access_stops_at_once(fake, inputs, tmp_path):
    fake.server.faults.add("/", "status:401")
    before = len(fake.server.requests)
    with pytest.raises(PermanentError, match="HTTP 401.*set sources.sentinel.stac.api_url to a public one"):
        fetch_stac(stac_params(fake.url), inputs[1], tmp_path)
    assert len(fake.server.requests) == before + 1


def test_unknown_collection_names_the_param_and_the_choices(fake, inputs, tmp_path):
    before = len(fake.server.requests)
    with pytest.raises(PermanentError, match=r"sentinel-1-typo.*sources\.sentinel\.stac\.collections\.s1.*"
                                             r"sentinel-1-grd"):
        fetch_stac(stac_params(fake.url, s1="sentinel-1-typo"), inputs[1], tmp_path)
    assert not any(p.startswith("/search") for _, p, _ in fake.server.requests[before:])


def test_query_extension_and_missing_assets(fetched, fake, inputs, tmp_path, caplog):
    """An API with the query extension only filters the same way; a band without an asset is nodata."""
    fake.extensions = ("query",)
    site = inputs[1].sites.iloc[:1]
    item = fake.items[fake.expected[(site["site_id"].iloc[0], "landsat")][0]]
    removed = item["assets"].pop("B9")
    fake.searches.clear()
    try:
        with caplog.at_level(logging.WARNING, "terrapipe.sources.sentinel"):
            fetch_stac(stac_params(fake.url), dataclasses.replace(inputs[1], sites=site), tmp_path)
    finally:
        item["assets"]["B9"] = removed
    optical = [s for s in fake.searches if s["collections"][0] != "sentinel-1-grd" and "datetime" in s]
    assert optical and all(s["query"] == {"eo:cloud_cover": {"lt": 30.0}} and "filter" not in s for s in optical)
    expected = pd.read_csv(fetched[0] / "scenes.csv")
    assert pd.read_csv(tmp_path / "scenes.csv").equals(expected[expected.site_id == site["site_id"].iloc[0]]
                                                       .reset_index(drop=True))
    path = expected[expected.scene_id == item["id"]]["path"].iloc[0]
    with rasterio.open(tmp_path / path) as src:
        assert (src.read(src.descriptions.index("B9") + 1) == 0).all()
        assert (src.read(1) > 0).any()
    assert f"landsat-c2-l2: 1 item(s) have no B9 asset (e.g. {item['id']})" in caplog.text


def test_fake_search_get_pages_like_post(fake):
    from pystac_client import Client

    client = Client.open(fake.url)
    query = {"collections": ["landsat-c2-l2"], "datetime": "2024-01/2024-03", "limit": 2,
             "query": {"eo:cloud_cover": {"lt": 30.0}}}
    by_get = [i["id"] for i in client.search(method="GET", **query).items_as_dicts()]
    by_post = [i["id"] for i in client.search(method="POST", **query).items_as_dicts()]
    assert by_get == by_post and len(by_get) > 2
    assert all(fake.items[i]["properties"]["eo:cloud_cover"] < 30 for i in by_get)


def test_pick_monthly_rules():
    months = pd.date_range("2024-01-01", periods=2, freq="MS")

    def item(id_, when, cloud=None):
        props = {"datetime": when} | ({} if cloud is None else {"eo:cloud_cover": cloud})
        return {"id": id_, "properties": props}

    items = [item("late-clear", "2024-01-20T10:00:00Z", 5), item("early-cloudier", "2024-01-02T10:00:00Z", 9),
             item("tie-later", "2024-01-20T10:01:00Z", 5), item("overcast", "2024-02-03T10:00:00Z", 80),
             item("outside", "2024-03-01T10:00:00Z", 1)]
    assert [i["id"] for i in pick_monthly(items, months, 30.0)] == ["late-clear"]
    radar = [item("b", "2024-02-09T06:00:00Z"), item("a", "2024-02-09T06:00:00Z"), item("c", "2024-01-30T06:00:00Z")]
    assert [i["id"] for i in pick_monthly(radar, months, None)] == ["c", "a"]
    # Earth Search v1 asset keys (checked against its sentinel-2-l2a and landsat-c2-l2 items)
    assert asset_key_of("s2", "B8A") == "nir08" and asset_key_of("s2", "B11") == "swir16"
    assert asset_key_of("landsat", "B10") == "lwir11" and asset_key_of("landsat", "B5") == "nir08"
    assert asset_key_of("landsat", "B9") == "B9"  # no Earth Search asset: the band name


def test_stage_fetches_from_stac_end_to_end(fetched, fake, inputs, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "inputs").symlink_to(inputs[0], target_is_directory=True)
    raw = yaml.safe_load(yaml.safe_dump(RAW))
    raw["sources"]["sentinel"]["stac"]["api_url"] = fake.url
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = run_stage("fetch_sentinel", cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert tree_digest(tmp_path / "data" / "raw" / "sentinel") == tree_digest(fetched[0])
