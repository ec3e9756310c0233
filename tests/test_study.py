"""The study definition in data/inputs is validated on load; errors name the file and the column."""
import pandas as pd
import pytest

from terrapipe.errors import InputDataError
from terrapipe.study import DEFAULT_AOIS, load_study, site_months, utm_epsg, write_default_inputs


@pytest.fixture
def inputs(tmp_path):
    write_default_inputs(tmp_path / "inputs", sites_per_aoi=5)
    return tmp_path / "inputs"


def test_selects_first_sites_per_aoi(inputs):
    study = load_study(inputs, sites_per_aoi=2)
    assert len(study.aois) == len(DEFAULT_AOIS) >= 24 and study.aois["aoi_id"].iloc[0] == "central-florida"
    assert len(study.sites) == 2 * len(DEFAULT_AOIS) and study.sites.groupby("aoi_id").size().eq(2).all()
    years = study.aois["start_date"].dt.year
    print(f"{len(study.aois)} AOIs, start years {sorted(years.unique().tolist())}")
    assert years.between(2017, 2024).all() and years.nunique() == 8
    assert (study.aois["end_date"] == study.aois["start_date"] + pd.DateOffset(years=1) - pd.Timedelta(days=1)).all()
    assert set(study.aois["koppen"].str[0]) == set("ABCDE") and study.aois["dominant_cover"].nunique() >= 6


def test_default_sites_fill_the_box(tmp_path):
    write_default_inputs(tmp_path / "inputs")
    sites = pd.read_csv(tmp_path / "inputs" / "sites.csv")
    assert sites.groupby("aoi_id").size().eq(50).all()
    lat_span = sites.groupby("aoi_id")["latitude"].agg(lambda v: v.head(16).max() - v.head(16).min())
    assert (lat_span > 0.5).all()                      # the first 16 sites spread over the 1-degree box


def test_ground_truth_columns_are_optional_and_checked(inputs):
    aois = pd.read_csv(inputs / "aois.csv")
    aois.drop(columns=["koppen", "dominant_cover"]).to_csv(inputs / "aois.csv", index=False)
    assert "koppen" not in load_study(inputs).aois.columns
    bad = aois.copy()
    bad.loc[2, "koppen"] = "Cx"
    bad.to_csv(inputs / "aois.csv", index=False)
    with pytest.raises(InputDataError, match=r"aois.csv: column 'koppen' = 'Cx' on line 4 .*Köppen-Geiger code"):
        load_study(inputs)
    bad = aois.copy()
    bad.loc[0, "dominant_cover"] = "forest"
    bad.to_csv(inputs / "aois.csv", index=False)
    with pytest.raises(InputDataError, match=r"column 'dominant_cover' = 'forest' on line 2 .*WorldCover names"):
        load_study(inputs)


def test_missing_column_is_named(inputs):
    sites = pd.read_csv(inputs / "sites.csv").drop(columns="latitude")
    sites.to_csv(inputs / "sites.csv", index=False)
    with pytest.raises(InputDataError, match=r"sites.csv: missing column\(s\) \['latitude'\]"):
        load_study(inputs)


def test_site_outside_its_aoi(inputs):
    sites = pd.read_csv(inputs / "sites.csv")
    sites.loc[0, "latitude"] = 45.0
    sites.to_csv(inputs / "sites.csv", index=False)
    with pytest.raises(InputDataError, match="outside its AOI"):
        load_study(inputs)


def test_bad_date_names_line(inputs):
    aois = pd.read_csv(inputs / "aois.csv")
    aois.loc[1, "start_date"] = "2024-13-01"
    aois.to_csv(inputs / "aois.csv", index=False)
    with pytest.raises(InputDataError, match="start_date.*line 3"):
        load_study(inputs)


def test_utm_zones_and_months():
    assert utm_epsg(28.5, -81.4) == 32617 and utm_epsg(-0.3, 36.1) == 32737
    months = site_months(pd.Timestamp("2024-11-15"), 3)
    assert [m.strftime("%Y-%m") for m in months] == ["2024-11", "2024-12", "2025-01"]
