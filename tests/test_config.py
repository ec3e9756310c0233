"""params.yaml is validated before any work; every kind of mistake names the key's full path."""
import json

import pytest
import yaml
from conftest import REPO, deep_update

from terrapipe.config import Params, check_params_file, load_params, parse_params
from terrapipe.errors import ConfigError
from terrapipe.modalities import S2
from terrapipe.paths import TASKS


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    return str(info.value)


def test_shipped_params_are_the_documented_defaults():
    # pretrain holds the experiments (no defaults in code; terrapipe.train.experiments validates it); the
    # earth4d and deepearth sections spell out the defaults of their model code's configs
    from terrapipe.data.tasks import TasksParams, tasks_params
    from terrapipe.evals.downstream import EvaluateParams, evaluate_params
    from terrapipe.train.alphaearth import Earth4DExperimentParams, earth4d_params
    from terrapipe.train.deepearth import DeepEarthParams, deepearth_params

    params = load_params(REPO / "params.yaml")
    assert params.model_copy(update={"pretrain": {}, "earth4d": {}, "deepearth": {}, "tasks": {},
                                     "evaluate": {}}) == Params()
    assert tasks_params(params) == TasksParams()
    assert evaluate_params(params) == EvaluateParams()
    assert earth4d_params(params) == Earth4DExperimentParams()
    assert deepearth_params(params) == DeepEarthParams()


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


def _file_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        check_params_file(path)
    return str(info.value)


def test_repo_params_pass_check_params_file():
    resolved = check_params_file(REPO / "params.yaml")
    assert set(resolved.pop("pretrain")) == {"run", "base", "experiments"}
    assert set(resolved.pop("deepearth")) == {"store", "classifier", "autoencoder"}
    resolved.pop("earth4d")  # validated by its model code (test_shipped_params_are_the_documented_defaults)
    assert set(resolved.pop("tasks")) >= set(TASKS)
    assert set(resolved.pop("evaluate")["tasks"]) == set(TASKS)
    expected = json.loads(json.dumps(Params().model_dump(mode="json")))
    for section in ("pretrain", "earth4d", "deepearth", "tasks", "evaluate"):
        expected.pop(section)
    assert resolved == expected
    assert resolved["normalize"]["alphaearth"]["min_elevation_m"] == -500.0


def test_duplicate_top_level_key_names_both_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\nstudy: {months: 3}\nseed: 2\n")
    assert f"{path}: key seed appears twice (lines 1 and 3); keep one" in _file_error(path)


def test_duplicate_nested_key_names_full_path_and_lines(tmp_path):
    """The shipped file with a second normalize.std_multiplier after the normalize.alphaearth block."""
    lines = (REPO / "params.yaml").read_text().splitlines()
    first = next(n for n, line in enumerate(lines, 1) if line.startswith("  std_multiplier:"))
    second = next(n for n, line in enumerate(lines, 1) if line.startswith("split:")) - 1
    lines.insert(second - 1, "  std_multiplier: 3.0")
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    message = _file_error(path)
    assert f"params.yaml: key normalize.std_multiplier appears twice (lines {first} and {second}); keep one" in message


def test_duplicate_key_in_a_flow_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("sources:\n  era5:\n    cds:\n      retry: {attempts: 5,\n              attempts: 6}\n")
    assert "key sources.era5.cds.retry.attempts appears twice (lines 4 and 5)" in _file_error(path)


def test_misspelt_key_through_check_params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("normalize:\n  std_multipler: 3.0\n")
    message = _file_error(path)
    assert "normalize.std_multipler: unknown key" in message
    assert "std_multiplier" in message.split("Accepted keys here:")[1]


def test_elevation_limits_in_order():
    message = _error({"normalize": {"alphaearth": {"min_elevation_m": 10000, "max_elevation_m": 9000}}})
    assert "normalize.alphaearth: min_elevation_m 10000 is above max_elevation_m 9000" in message


def test_retry_base_delay_not_above_cap():
    message = _error({"sources": {"sentinel": {"stac": {"retry": {"base_delay_s": 90.0}}}}})
    assert "sources.sentinel.stac.retry: base_delay_s 90 is above max_delay_s 60" in message


def test_test_years_must_be_plausible_years():
    message = _error({"split": {"alphaearth": {"test_years": [24]}}})
    assert "split.alphaearth.test_years.0" in message and "1900" in message


def test_duplicated_test_year():
    assert "split.alphaearth.test_years: duplicated entries [2024]" in _error(
        {"split": {"alphaearth": {"test_years": [2024, 2024]}}})


def test_sites_split_has_no_time_axis():
    message = _error({"split": {"sites": {"test_years": [2024]}}})
    assert "split: sites.test_years is [2024] but the sites have no time axis" in message


def test_deepearth_test_years_outside_the_sample_years():
    message = _error({"sources": {"deepearth": {"sample": {"last_year": 2020}}}})  # test_years [2025]
    assert "split.deepearth.test_years [2025] lie outside sources.deepearth.sample.first_year..last_year " \
           "(2010..2020)" in message


def test_deepearth_test_years_holding_out_every_sample_year():
    message = _error({"sources": {"deepearth": {"sample": {"first_year": 2024}}},
                      "split": {"deepearth": {"test_years": [2024, 2025]}}})
    assert "split.deepearth.test_years [2024, 2025] hold out every year" in message


def test_deepearth_test_years_are_not_checked_against_the_hub():
    params = parse_params({"sources": {"deepearth": {"source": "huggingface", "sample": {"last_year": 2020}}}})
    assert params.split.deepearth.test_years == [2025]
