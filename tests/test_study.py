"""The study definition in data/inputs is validated on load; errors name the file and the column."""
import pandas as pd
import pytest

from terrapipe.errors import InputDataError
from terrapipe.study import load_study, site_months, utm_epsg, write_default_inputs


@pytest.fixture
def inputs(tmp_path):
    write_default_inputs(tmp_path / "inputs", sites_per_aoi=5)
    return tmp_path / "inputs"


def test_selects_first_sites_per_aoi(inputs):
    study = load_study(inputs, sites_per_aoi=2)
    assert len(study.sites) == 16 and study.sites.groupby("aoi_id").size().eq(2).all()
    assert study.sites["start_date"].dt.year.eq(2024).all()


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
