"""The modality registry: OlmoEarth's names, band sets and band order, lookups and config validation."""
import pytest

from terrapipe.config import parse_params
from terrapipe.errors import ConfigError
from terrapipe.modalities import (
    ERA5,
    ERA5_VARIABLES,
    LANDSAT,
    MAPS,
    MODALITIES,
    S1,
    S2,
    SENSORS,
    SRTM,
    WORLDCOVER,
    era5_selected,
    era5_variable,
    modality,
    store_modalities,
)


def test_keys_and_olmoearth_names():
    assert {m.key: m.olmoearth_name for m in MODALITIES} == {
        "s2": "sentinel2_l2a", "s1": "sentinel1", "landsat": "landsat", "era5": "era5_10",
        "worldcover": "worldcover", "srtm": "srtm"}
    assert modality("sentinel2_l2a") is modality("s2") is S2
    assert SENSORS == ("s2", "s1", "landsat") and MAPS == ("worldcover", "srtm")


def test_olmoearth_band_sets_and_order():
    assert [[b.name for b in s.bands] for s in S2.band_sets] == [
        ["B02", "B03", "B04", "B08"], ["B05", "B06", "B07", "B8A", "B11", "B12"], ["B01", "B09"]]
    assert S2.band_order == ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09")
    assert [s.resolution_factor for s in S2.band_sets] == [16, 32, 64]          # 10, 20, 40 m
    assert [s.resolution_m for s in S2.band_sets] == [10, 20, 60]
    assert "B10" not in S2.band_order                                             # L2A has no cirrus band
    assert S1.band_order == ("vv", "vh") and len(S1.band_sets) == 1
    assert LANDSAT.band_order == ("B8", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11")
    assert [(s.resolution_m, s.olmoearth_m) for s in LANDSAT.band_sets] == [(15, 10), (30, 20)]
    assert ERA5.band_order == ("2m-temperature", "2m-dewpoint-temperature", "surface-pressure",
                               "10m-u-component-of-wind", "10m-v-component-of-wind", "total-precipitation")
    assert ERA5.is_time_only and ERA5.band_sets[0].resolution_factor is None
    for static in (WORLDCOVER, SRTM):
        assert static.decode_only and static.spatial and not static.multitemporal and len(static.bands) == 1
    assert not any(m.is_time_only for m in (S2, S1, LANDSAT, WORLDCOVER, SRTM))


def test_bandsets_as_indices_are_contiguous_into_band_order():
    assert S2.bandsets_as_indices() == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9], [10, 11]]
    assert LANDSAT.bandsets_as_indices() == [[0], list(range(1, 11))]
    assert ERA5.bandsets_as_indices() == [list(range(6))]
    assert S2.indices(["B08", "B04"]) == [3, 2]   # a tokenization group keeps its written order


def test_scalings_nodata_and_units():
    assert {(b.scale, b.offset) for b in S2.bands} == {(1e-4, -0.1)} and S2.dtype == "uint16" and S2.nodata == 0
    landsat = {b.name: (b.scale, b.offset) for b in LANDSAT.bands}
    assert landsat["B4"] == (2.75e-5, -0.2) and landsat["B10"] == landsat["B11"] == (0.00341802, 149.0)
    assert S1.dtype == "float32" and S1.nodata == -32768 and S1.scales is None and S1.units == "dB"
    assert SRTM.dtype == "int16" and SRTM.nodata == -32768 and WORLDCOVER.dtype == "uint8" and WORLDCOVER.nodata == 0
    assert LANDSAT.units == "reflectance (B8 B1 B2 B3 B4 B5 B6 B7 B9), K (B10 B11)"
    assert S2.band("B8A").wavelength_nm == 865 and S2.band("B01").native_m == 60


def test_unknown_band_error_names_it_and_lists_the_accepted_ones():
    with pytest.raises(ValueError, match="'B10'") as info:
        S2.band("B10")
    assert "sentinel2_l2a" in str(info.value) and all(b in str(info.value) for b in S2.band_order)
    with pytest.raises(ValueError, match="'B13'"):
        S2.select(["B02", "B13"])
    with pytest.raises(ValueError, match="unknown modality 'naip'") as info:
        modality("naip")
    assert "sentinel2_l2a" in str(info.value) and "era5_10" in str(info.value)
    with pytest.raises(ValueError, match="'2m_temp'") as info:
        era5_variable("2m_temp")
    assert "total_precipitation" in str(info.value)


def test_selection_comes_back_in_registry_order():
    assert [b.name for b in S2.select(["B01", "B12", "B02"])] == ["B02", "B12", "B01"]
    cut = S2.subset(["B09", "B04", "B02"])
    assert cut.band_order == ("B02", "B04", "B09") and cut.bandsets_as_indices() == [[0, 1], [2]]
    assert [s.resolution_factor for s in cut.band_sets] == [16, 64]     # the empty 20 m set is dropped
    assert [v.short for v in era5_selected(["total_precipitation", "2m_temperature"])] == ["t2m", "tp"]
    assert [m.key for m in store_modalities(["landsat", "s2"], ["B03"])] == ["landsat", "s2", "worldcover", "srtm"]
    assert store_modalities(["s2"], ["B03"])[0].band_order == ("B03",)


def test_era5_variables_carry_every_name():
    t2m = era5_variable("2m_temperature")
    assert (t2m.short, t2m.units, t2m.grib_short, t2m.param_id, t2m.band) == ("t2m", "K", "2t", 167, "2m-temperature")
    assert [v.band for v in ERA5_VARIABLES] == list(ERA5.band_order)
    assert [v.units for v in ERA5_VARIABLES] == [b.unit for b in ERA5.bands]


def test_config_rejects_an_unknown_s2_band_with_path_and_accepted_values():
    with pytest.raises(ConfigError) as info:
        parse_params({"sources": {"sentinel": {"s2_bands": ["B02", "B10"]}}})
    message = str(info.value)
    assert "sources.sentinel.s2_bands.1" in message and "'B10'" in message
    assert all(f"'{band}'" in message for band in S2.band_order)


def test_config_defaults_come_from_the_registry():
    sentinel = parse_params({}).sources.sentinel
    assert tuple(sentinel.s2_bands) == S2.band_order and tuple(sentinel.sensors) == SENSORS
    assert parse_params({}).sources.era5.variables == [v.cds for v in ERA5_VARIABLES]
    with pytest.raises(ConfigError, match="sources.sentinel.sensors.0"):
        parse_params({"sources": {"sentinel": {"sensors": ["era5"]}}})
