"""params.yaml is validated before any work; every kind of mistake names the key's full path."""
import pytest
import yaml
from conftest import REPO, deep_update

from terrapipe.config import Params, load_params, parse_params
from terrapipe.errors import ConfigError
from terrapipe.modalities import S2


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    return str(info.value)


def test_shipped_params_are_the_documented_defaults():
    assert load_params(REPO / "params.yaml") == Params()


def test_unknown_nested_key_names_path_and_accepted_keys():
    message = _error({"sources": {"sentinel": {"chipsize": 32}}})
    assert "sources.sentinel.chipsize: unknown key" in message
    assert "chip_size" in message  # the accepted keys are listed


def test_unknown_top_level_section():
    assert "trainnig: unknown key" in _error({"trainnig": {}})


def test_wrong_type_is_not_coerced():
    message = _error({"sources": {"sentinel": {"chip_size": "64"}}})
    assert "sources.sentinel.chip_size" in message and "'64'" in message


def test_wrong_type_list_expected():
    assert "split.deepearth.test_years" in _error({"split": {"deepearth": {"test_years": 2025}}})


def test_impossible_value_negative_distance():
    message = _error({"split": {"deepearth": {"min_distance_km": -1}}})
    assert "split.deepearth.min_distance_km" in message and "greater than or equal to 0" in message


def test_impossible_probability():
    assert "sources.sentinel.sample.s2_gap_prob" in _error({"sources": {"sentinel": {"sample": {"s2_gap_prob": 1.5}}}})


def test_unknown_s2_band_lists_accepted_bands():
    message = _error({"sources": {"sentinel": {"s2_bands": ["B02", "B10"]}}})
    assert "sources.sentinel.s2_bands.1" in message and "'B10'" in message
    assert all(band in message for band in S2.band_order)


def test_duplicated_band():
    assert "duplicated" in _error({"sources": {"sentinel": {"s2_bands": ["B02", "B02"]}}})


def test_unknown_source_lists_backends():
    message = _error({"sources": {"era5": {"source": "ecmwf"}}})
    assert "sources.era5.source" in message and "'sample'" in message and "'cds'" in message


def test_every_problem_is_reported_at_once():
    message = _error({"seed": "x", "study": {"sites_per_aoi": 0}})
    assert "seed" in message and "study.sites_per_aoi" in message and "2 invalid" in message


def test_yaml_syntax_error_names_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("split: [unclosed\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_params(path)


def test_partial_file_takes_defaults_for_the_rest(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(deep_update({}, {"split": {"deepearth": {"min_distance_km": 20.0}}})))
    params = load_params(path)
    assert params.split.deepearth.min_distance_km == 20.0
    assert params.split.deepearth.num_regions == 5


def test_cross_field_rule_names_the_section():
    message = _error({"sources": {"deepearth": {"sample": {"first_year": 2030, "last_year": 2025}}}})
    assert "sources.deepearth.sample" in message and "first_year 2030 is after last_year 2025" in message
